package engine_test

import (
	"crypto/ecdsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coordinatord/coordinatord/engine"
	"github.com/coordinatord/coordinatord/internal/pki"
)

// idT0 is "now" in the identity tests.
var idT0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

const (
	idTrustDomain = "coordinatord.test"
	idSPIFFEID    = "spiffe://coordinatord.test/cluster/prod-eu/env/staging/role/gate/dc/dc1/node/gate-7"
)

var (
	idSPIFFECfg  = engine.IdentityConfig{Mapping: engine.MappingSPIFFE, TrustDomain: idTrustDomain}
	idSubjectCfg = engine.IdentityConfig{Mapping: engine.MappingSubject, TrustDomain: idTrustDomain}
	idOIDCN      = asn1.ObjectIdentifier{2, 5, 4, 3}
	idOIDOU      = asn1.ObjectIdentifier{2, 5, 4, 11}
	idOIDSAN     = asn1.ObjectIdentifier{2, 5, 29, 17}
)

// idClaims are the claims of idSPIFFEID.
func idClaims() engine.Claims {
	return engine.Claims{Cluster: "prod-eu", Env: "staging", Role: engine.RoleGate, Datacenter: "dc1", Node: "gate-7"}
}

// idFixture is a CA and one leaf key shared by every certificate of a test:
// P-256 key generation is cheap, but not free under -race and fuzzing.
type idFixture struct {
	ca  *pki.CA
	key *ecdsa.PrivateKey
}

var (
	idFixtureOnce sync.Once
	idFixtureVal  *idFixture
	idFixtureErr  error
)

func newIDFixture(t testing.TB) *idFixture {
	t.Helper()
	idFixtureOnce.Do(func() {
		ca, err := pki.NewCA("identity test CA", idT0.Add(-365*24*time.Hour), 2*365*24*time.Hour)
		if err != nil {
			idFixtureErr = err
			return
		}
		key, err := pki.NewKey()
		if err != nil {
			idFixtureErr = err
			return
		}
		idFixtureVal = &idFixture{ca: ca, key: key}
	})
	if idFixtureErr != nil {
		t.Fatal(idFixtureErr)
	}
	return idFixtureVal
}

// sign signs tmpl and returns the certificate as a TLS peer would see it.
func (f *idFixture) sign(t testing.TB, tmpl *x509.Certificate) *x509.Certificate {
	t.Helper()
	cert, _, err := f.ca.Sign(tmpl, f.key.Public())
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	return cert
}

// idLeafTemplate is a valid client certificate template without claims.
func idLeafTemplate() *x509.Certificate {
	return &x509.Certificate{
		NotBefore:             idT0.Add(-time.Hour),
		NotAfter:              idT0.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
}

// idSPIFFETemplate carries uris verbatim in a hand-made SAN extension, so
// tests control the exact bytes rather than url.URL.String's rendering.
func idSPIFFETemplate(t testing.TB, uris ...string) *x509.Certificate {
	t.Helper()
	tmpl := idLeafTemplate()
	if len(uris) == 0 {
		return tmpl
	}
	names := make([]asn1.RawValue, len(uris))
	for i, u := range uris {
		names[i] = asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 6, Bytes: []byte(u)}
	}
	der, err := asn1.Marshal(names)
	if err != nil {
		t.Fatal(err)
	}
	tmpl.ExtraExtensions = []pkix.Extension{{Id: idOIDSAN, Critical: true, Value: der}}
	return tmpl
}

// idUTF8Env is the DER UTF8String of s, as the env extension holds it.
func idUTF8Env(t testing.TB, s string) []byte {
	t.Helper()
	der, err := asn1.MarshalWithParams(s, "utf8")
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// idSubjectTemplate is a valid subject-mapping template for idClaims.
func idSubjectTemplate(t testing.TB) *x509.Certificate {
	tmpl := idLeafTemplate()
	tmpl.Subject = pkix.Name{CommonName: "prod-eu", OrganizationalUnit: []string{"gate"}}
	tmpl.DNSNames = []string{"node=gate-7", "dc=dc1"}
	tmpl.ExtraExtensions = []pkix.Extension{{Id: engine.OIDEnv, Value: idUTF8Env(t, "staging")}}
	return tmpl
}

// checkIdentityError asserts that err is an *IdentityError with the defect
// and claim, and that its message names the claim and contains each of msg.
func checkIdentityError(t *testing.T, err, defect error, claim string, msg ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %v", defect)
	}
	if !errors.Is(err, defect) {
		t.Fatalf("got %v, want defect %v", err, defect)
	}
	var ie *engine.IdentityError
	if !errors.As(err, &ie) {
		t.Fatalf("got %T (%v), want *engine.IdentityError", err, err)
	}
	if ie.Claim != claim {
		t.Errorf("Claim = %q, want %q (error: %v)", ie.Claim, claim, err)
	}
	if claim != "" && !strings.Contains(err.Error(), `claim "`+claim+`"`) {
		t.Errorf("message %q does not name claim %q", err, claim)
	}
	for _, m := range msg {
		if !strings.Contains(err.Error(), m) {
			t.Errorf("message %q does not contain %q", err, m)
		}
	}
}

func TestParseClaimsSPIFFE(t *testing.T) {
	f := newIDFixture(t)
	const base = "spiffe://coordinatord.test"
	long := strings.Repeat("n", engine.MaxClaimLen)
	tests := []struct {
		name   string
		uris   []string
		want   engine.Claims // checked when defect is nil
		defect error
		claim  string
		msg    []string
	}{
		{name: "a well-formed SPIFFE ID yields every claim", uris: []string{idSPIFFEID}, want: idClaims()},
		{
			name: "values may use letters, digits, dots, underscores and dashes up to 128 bytes",
			uris: []string{base + "/cluster/A.b_c-9/env/e/role/coordinator/dc/d/node/" + long},
			want: engine.Claims{Cluster: "A.b_c-9", Env: "e", Role: engine.RoleCoordinator, Datacenter: "d", Node: long},
		},
		{name: "a certificate without a URI SAN is refused", defect: engine.ErrNoURISAN},
		{name: "two URI SANs are refused and both are named", uris: []string{idSPIFFEID, base + "/cluster/x"}, defect: engine.ErrMultipleURISANs, msg: []string{idSPIFFEID, base + "/cluster/x"}},
		{name: "an https URI is not a SPIFFE ID", uris: []string{"https://coordinatord.test/cluster/c"}, defect: engine.ErrMalformedSPIFFEID},
		{name: "an upper-case scheme is refused", uris: []string{"SPIFFE://coordinatord.test/cluster/prod-eu/env/staging/role/gate/dc/dc1/node/gate-7"}, defect: engine.ErrMalformedSPIFFEID},
		{name: "another trust domain is refused and both domains are named", uris: []string{"spiffe://evil.test/cluster/prod-eu/env/staging/role/gate/dc/dc1/node/gate-7"}, defect: engine.ErrWrongTrustDomain, msg: []string{`"evil.test"`, `"coordinatord.test"`}},
		{name: "a trust domain differing only in case is another trust domain", uris: []string{"spiffe://Coordinatord.test/cluster/prod-eu/env/staging/role/gate/dc/dc1/node/gate-7"}, defect: engine.ErrWrongTrustDomain},
		{name: "a port is refused", uris: []string{"spiffe://coordinatord.test:443/cluster/prod-eu/env/staging/role/gate/dc/dc1/node/gate-7"}, defect: engine.ErrMalformedSPIFFEID, msg: []string{"port"}},
		{name: "userinfo is refused", uris: []string{"spiffe://me@coordinatord.test/cluster/prod-eu/env/staging/role/gate/dc/dc1/node/gate-7"}, defect: engine.ErrMalformedSPIFFEID, msg: []string{"userinfo"}},
		{name: "a query is refused", uris: []string{idSPIFFEID + "?x=1"}, defect: engine.ErrMalformedSPIFFEID},
		{name: "an empty query is refused", uris: []string{idSPIFFEID + "?"}, defect: engine.ErrMalformedSPIFFEID},
		{name: "an empty fragment is refused although url.URL.String would drop it", uris: []string{idSPIFFEID + "#"}, defect: engine.ErrMalformedSPIFFEID},
		{name: "a SPIFFE ID without a path misses the cluster", uris: []string{base}, defect: engine.ErrMissingClaim, claim: "cluster"},
		{name: "a SPIFFE ID with the root path misses the cluster", uris: []string{base + "/"}, defect: engine.ErrMissingClaim, claim: "cluster"},
		{name: "a missing env is named as missing", uris: []string{base + "/cluster/prod-eu/role/gate/dc/dc1/node/gate-7"}, defect: engine.ErrMissingClaim, claim: "env"},
		{name: "a missing node at the end is named as missing", uris: []string{base + "/cluster/prod-eu/env/staging/role/gate/dc/dc1"}, defect: engine.ErrMissingClaim, claim: "node"},
		{name: "a missing datacenter names both the claim and its path key", uris: []string{base + "/cluster/prod-eu/env/staging/role/gate/node/gate-7"}, defect: engine.ErrMissingClaim, claim: "datacenter", msg: []string{`(key "dc")`}},
		{name: "an empty env between slashes is refused, never defaulted", uris: []string{base + "/cluster/prod-eu/env//role/gate/dc/dc1/node/gate-7"}, defect: engine.ErrEmptyClaim, claim: "env", msg: []string{`claim "env" is empty`}},
		{name: "a path ending after the node key has an empty node", uris: []string{base + "/cluster/prod-eu/env/staging/role/gate/dc/dc1/node"}, defect: engine.ErrEmptyClaim, claim: "node"},
		{name: "a path ending in a slash after the node key has an empty node", uris: []string{base + "/cluster/prod-eu/env/staging/role/gate/dc/dc1/node/"}, defect: engine.ErrEmptyClaim, claim: "node"},
		{name: "a second cluster is a duplicate", uris: []string{base + "/cluster/a/cluster/b/env/staging/role/gate/dc/dc1/node/gate-7"}, defect: engine.ErrDuplicateClaim, claim: "cluster"},
		{name: "a second node after a complete path is a duplicate", uris: []string{idSPIFFEID + "/node/other"}, defect: engine.ErrDuplicateClaim, claim: "node"},
		{name: "role before env is out of order and names the key found", uris: []string{base + "/cluster/prod-eu/role/gate/env/staging/dc/dc1/node/gate-7"}, defect: engine.ErrClaimOrder, claim: "role", msg: []string{`found path key "role" where "env" was expected`}},
		{name: "node before dc is out of order", uris: []string{base + "/cluster/prod-eu/env/staging/role/gate/node/gate-7/dc/dc1"}, defect: engine.ErrClaimOrder, claim: "node"},
		{name: "an unknown key is refused", uris: []string{base + "/cluster/prod-eu/zone/z/env/staging/role/gate/dc/dc1/node/gate-7"}, defect: engine.ErrUnknownClaimKey, msg: []string{`"zone"`}},
		{name: "region is not a key of the spiffe mapping", uris: []string{idSPIFFEID + "/region/eu"}, defect: engine.ErrUnknownClaimKey},
		{name: "the long key datacenter is not the path key dc", uris: []string{base + "/cluster/prod-eu/env/staging/role/gate/datacenter/dc1/node/gate-7"}, defect: engine.ErrUnknownClaimKey},
		{name: "a dollar sign in the cluster is invalid", uris: []string{base + "/cluster/pr$d/env/staging/role/gate/dc/dc1/node/gate-7"}, defect: engine.ErrInvalidClaim, claim: "cluster"},
		{name: "percent-encoding is invalid rather than decoded", uris: []string{base + "/cluster/prod%2Deu/env/staging/role/gate/dc/dc1/node/gate-7"}, defect: engine.ErrInvalidClaim, claim: "cluster"},
		{name: "a value of 129 bytes is invalid", uris: []string{base + "/cluster/prod-eu/env/staging/role/gate/dc/dc1/node/" + long + "n"}, defect: engine.ErrInvalidClaim, claim: "node", msg: []string{"129 bytes"}},
		{name: "a dot-dot value is invalid", uris: []string{base + "/cluster/prod-eu/env/../role/gate/dc/dc1/node/gate-7"}, defect: engine.ErrInvalidClaim, claim: "env"},
		{name: "an unknown role is refused", uris: []string{base + "/cluster/prod-eu/env/staging/role/boss/dc/dc1/node/gate-7"}, defect: engine.ErrUnknownRole, claim: "role", msg: []string{`"boss"`}},
		{name: "roles are case-sensitive", uris: []string{base + "/cluster/prod-eu/env/staging/role/Gate/dc/dc1/node/gate-7"}, defect: engine.ErrUnknownRole, claim: "role"},
		{name: "a doubled slash before the path is malformed", uris: []string{base + "//cluster/prod-eu/env/staging/role/gate/dc/dc1/node/gate-7"}, defect: engine.ErrMalformedSPIFFEID},
		{name: "a trailing slash after a complete path is malformed", uris: []string{idSPIFFEID + "/"}, defect: engine.ErrMalformedSPIFFEID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cert := f.sign(t, idSPIFFETemplate(t, tt.uris...))
			got, err := engine.ParseClaims(cert, idSPIFFECfg)
			if tt.defect != nil {
				checkIdentityError(t, err, tt.defect, tt.claim, tt.msg...)
				if got != (engine.Claims{}) {
					t.Errorf("claims %+v returned with an error", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseClaims: %v", err)
			}
			want := tt.want
			want.SPIFFEID = tt.uris[0]
			want.Serial = cert.SerialNumber.Text(16)
			want.NotAfter = cert.NotAfter
			if got != want {
				t.Errorf("got %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestParseClaimsGeneral(t *testing.T) {
	f := newIDFixture(t)
	cert := f.sign(t, idSPIFFETemplate(t, idSPIFFEID))

	t.Run("a nil certificate is no certificate", func(t *testing.T) {
		_, err := engine.ParseClaims(nil, idSPIFFECfg)
		checkIdentityError(t, err, engine.ErrNoCertificate, "")
	})
	t.Run("an invalid configuration is a configuration error, not an identity defect", func(t *testing.T) {
		_, err := engine.ParseClaims(cert, engine.IdentityConfig{Mapping: "ldap", TrustDomain: idTrustDomain})
		var ie *engine.IdentityError
		if err == nil || errors.As(err, &ie) {
			t.Fatalf("got %v, want a plain configuration error", err)
		}
	})
	t.Run("the serial is lower-case hex without colons", func(t *testing.T) {
		c, err := engine.ParseClaims(cert, idSPIFFECfg)
		if err != nil {
			t.Fatal(err)
		}
		if !regexp.MustCompile(`^[0-9a-f]+$`).MatchString(c.Serial) || c.Serial != cert.SerialNumber.Text(16) {
			t.Errorf("Serial = %q, want lower-case hex of %v", c.Serial, cert.SerialNumber)
		}
		if !c.NotAfter.Equal(cert.NotAfter) {
			t.Errorf("NotAfter = %v, want %v", c.NotAfter, cert.NotAfter)
		}
	})
	t.Run("the spiffe mapping ignores the subject", func(t *testing.T) {
		tmpl := idSPIFFETemplate(t, idSPIFFEID)
		tmpl.Subject = pkix.Name{CommonName: "other", OrganizationalUnit: []string{"admin"}}
		c, err := engine.ParseClaims(f.sign(t, tmpl), idSPIFFECfg)
		if err != nil || c.Cluster != "prod-eu" || c.Role != engine.RoleGate {
			t.Fatalf("got %+v, %v", c, err)
		}
	})
}

func TestIdentityErrorCodesAreStable(t *testing.T) {
	codes := map[error]string{
		engine.ErrNoCertificate:        "no_certificate",
		engine.ErrMalformedCertificate: "malformed_certificate",
		engine.ErrUntrusted:            "untrusted",
		engine.ErrExpired:              "expired",
		engine.ErrNotYetValid:          "not_yet_valid",
		engine.ErrWrongKeyUsage:        "wrong_key_usage",
		engine.ErrNoURISAN:             "no_uri_san",
		engine.ErrMultipleURISANs:      "multiple_uri_sans",
		engine.ErrMalformedSPIFFEID:    "malformed_spiffe_id",
		engine.ErrWrongTrustDomain:     "wrong_trust_domain",
		engine.ErrMissingClaim:         "missing_claim",
		engine.ErrEmptyClaim:           "empty_claim",
		engine.ErrDuplicateClaim:       "duplicate_claim",
		engine.ErrUnknownClaimKey:      "unknown_claim_key",
		engine.ErrInvalidClaim:         "invalid_claim",
		engine.ErrUnknownRole:          "unknown_role",
		engine.ErrClaimOrder:           "claim_order",
		engine.ErrMissingCN:            "missing_cn",
		engine.ErrMultipleCN:           "multiple_cn",
		engine.ErrMissingOU:            "missing_ou",
		engine.ErrMultipleOU:           "multiple_ou",
		engine.ErrMissingEnvExtension:  "missing_env_extension",
		engine.ErrEnvNotUTF8:           "env_not_utf8",
	}
	for defect, want := range codes {
		if got := (&engine.IdentityError{Defect: defect}).Code(); got != want {
			t.Errorf("Code of %v = %q, want %q", defect, got, want)
		}
	}
	if got := (&engine.IdentityError{Defect: errors.New("other")}).Code(); got != "invalid_identity" {
		t.Errorf("Code of a foreign defect = %q, want invalid_identity", got)
	}
}

func TestIdentityErrorMessage(t *testing.T) {
	tests := []struct {
		name string
		err  *engine.IdentityError
		want string
	}{
		{
			name: "a claim defect reads as a sentence about the claim",
			err:  &engine.IdentityError{Defect: engine.ErrEmptyClaim, Claim: "env", Detail: `in SPIFFE ID "spiffe://x"`},
			want: `identity: claim "env" is empty: in SPIFFE ID "spiffe://x"`,
		},
		{
			name: "the datacenter claim also names its key dc",
			err:  &engine.IdentityError{Defect: engine.ErrMissingClaim, Claim: "datacenter"},
			want: `identity: claim "datacenter" (key "dc") is missing`,
		},
		{
			name: "a defect that is not phrased as a claim follows the claim name",
			err:  &engine.IdentityError{Defect: engine.ErrUnknownRole, Claim: "role", Detail: `"boss"`},
			want: `identity: claim "role": unknown role: "boss"`,
		},
		{
			name: "a certificate defect has no claim",
			err:  &engine.IdentityError{Defect: engine.ErrExpired, Detail: "at noon"},
			want: "identity: certificate has expired: at noon",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.err.Error(); got != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}

func TestIdentityConfigValidateTrustDomain(t *testing.T) {
	tests := []struct {
		name, td string
		ok       bool
		msg      string
	}{
		{name: "a lower-case DNS name is a trust domain", td: "example.org", ok: true},
		{name: "digits, dashes and underscores are allowed", td: "a-1_b.example", ok: true},
		{name: "an empty trust domain is refused", td: "", msg: "empty"},
		{name: "a scheme is refused", td: "spiffe://example.org", msg: "scheme"},
		{name: "a port is refused", td: "example.org:8443", msg: "port"},
		{name: "upper case is refused", td: "Example.org", msg: "lower case"},
		{name: "a path is refused", td: "example.org/x", msg: "path"},
		{name: "other characters are refused", td: "exa mple.org", msg: "' '"},
		{name: "more than 255 bytes are refused", td: strings.Repeat("a", 256), msg: "255"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := engine.IdentityConfig{Mapping: engine.MappingSPIFFE, TrustDomain: tt.td}.Validate()
			if tt.ok {
				if err != nil {
					t.Fatalf("got %v, want valid", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("got %v, want an error mentioning %q", err, tt.msg)
			}
		})
	}
}

func TestValidateClaimValue(t *testing.T) {
	tests := []struct {
		name, claim, value string
		defect             error
	}{
		{name: "a plain value is valid", claim: "cluster", value: "prod-eu"},
		{name: "a known role is valid", claim: "role", value: "worker"},
		{name: "a region is a claim name", claim: "region", value: "eu-west"},
		{name: "an empty value is empty", claim: "node", value: "", defect: engine.ErrEmptyClaim},
		{name: "a slash is invalid", claim: "node", value: "a/b", defect: engine.ErrInvalidClaim},
		{name: "an equals sign is invalid", claim: "datacenter", value: "a=b", defect: engine.ErrInvalidClaim},
		{name: "non-ASCII letters are invalid", claim: "env", value: "prød", defect: engine.ErrInvalidClaim},
		{name: "a single dot is invalid", claim: "env", value: ".", defect: engine.ErrInvalidClaim},
		{name: "an unknown role is refused", claim: "role", value: "root", defect: engine.ErrUnknownRole},
		{name: "an unknown claim name is refused", claim: "zone", value: "z", defect: engine.ErrUnknownClaimKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := engine.ValidateClaimValue(tt.claim, tt.value)
			if tt.defect == nil {
				if err != nil {
					t.Fatalf("got %v, want valid", err)
				}
				return
			}
			claim := tt.claim
			if tt.defect == engine.ErrUnknownClaimKey {
				claim = ""
			}
			checkIdentityError(t, err, tt.defect, claim)
		})
	}
}

func TestValidateClaims(t *testing.T) {
	if err := engine.ValidateClaims(idClaims()); err != nil {
		t.Fatalf("valid claims: %v", err)
	}
	c := idClaims()
	c.Datacenter = ""
	checkIdentityError(t, engine.ValidateClaims(c), engine.ErrEmptyClaim, "datacenter")
	c = idClaims()
	c.Region = "e u"
	checkIdentityError(t, engine.ValidateClaims(c), engine.ErrInvalidClaim, "region")
}

func TestSPIFFEIDRoundTrip(t *testing.T) {
	if got := engine.SPIFFEID(idTrustDomain, idClaims()); got != idSPIFFEID {
		t.Fatalf("SPIFFEID = %q, want %q", got, idSPIFFEID)
	}
	c, err := engine.ParseSPIFFEID(idSPIFFEID, idTrustDomain)
	if err != nil {
		t.Fatal(err)
	}
	want := idClaims()
	want.SPIFFEID = idSPIFFEID
	if c != want {
		t.Errorf("got %+v, want %+v", c, want)
	}
	if _, err := engine.ParseSPIFFEID(idSPIFFEID, "Bad:1"); err == nil || errors.As(err, new(*engine.IdentityError)) {
		t.Errorf("a bad trust domain gave %v, want a plain error", err)
	}
	_, err = engine.ParseSPIFFEID("spiffe://coordinatord.test/"+strings.Repeat("x", 2048), idTrustDomain)
	checkIdentityError(t, err, engine.ErrMalformedSPIFFEID, "", "2048")
}
