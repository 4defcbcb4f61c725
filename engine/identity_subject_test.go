package engine_test

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"testing"

	"github.com/coordinatord/coordinatord/engine"
)

func TestParseClaimsSubject(t *testing.T) {
	f := newIDFixture(t)
	env := func(der []byte) func(*x509.Certificate) {
		return func(c *x509.Certificate) {
			c.ExtraExtensions = []pkix.Extension{{Id: engine.OIDEnv, Value: der}}
		}
	}
	printable, err := asn1.MarshalWithParams("staging", "printable")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		mutate func(*x509.Certificate)
		want   engine.Claims // checked when defect is nil
		defect error
		claim  string
		msg    []string
	}{
		{name: "a complete subject certificate yields every claim", mutate: func(*x509.Certificate) {}, want: idClaims()},
		{
			name:   "an optional region DNS SAN yields the region",
			mutate: func(c *x509.Certificate) { c.DNSNames = append(c.DNSNames, "region=eu-west") },
			want:   func() engine.Claims { c := idClaims(); c.Region = "eu-west"; return c }(),
		},
		{
			name:   "plain host-name DNS SANs are ignored",
			mutate: func(c *x509.Certificate) { c.DNSNames = append(c.DNSNames, "gate-7.prod.example", "localhost") },
			want:   idClaims(),
		},
		{name: "a subject without a common name has no cluster", mutate: func(c *x509.Certificate) { c.Subject.CommonName = "" }, defect: engine.ErrMissingCN, claim: "cluster"},
		{
			name: "a subject with two common names is refused rather than picking one",
			mutate: func(c *x509.Certificate) {
				// ExtraNames would replace the CN, so write the subject raw.
				raw, err := asn1.Marshal(pkix.RDNSequence{
					{{Type: idOIDCN, Value: "prod-eu"}},
					{{Type: idOIDOU, Value: "gate"}},
					{{Type: idOIDCN, Value: "other"}},
				})
				if err != nil {
					t.Fatal(err)
				}
				c.RawSubject = raw
			},
			defect: engine.ErrMultipleCN, claim: "cluster", msg: []string{`"prod-eu"`, `"other"`},
		},
		{name: "a common name with a space is an invalid cluster", mutate: func(c *x509.Certificate) { c.Subject.CommonName = "prod eu" }, defect: engine.ErrInvalidClaim, claim: "cluster"},
		{name: "a subject without an organizational unit has no role", mutate: func(c *x509.Certificate) { c.Subject.OrganizationalUnit = nil }, defect: engine.ErrMissingOU, claim: "role"},
		{name: "two organizational units are refused", mutate: func(c *x509.Certificate) { c.Subject.OrganizationalUnit = []string{"gate", "admin"} }, defect: engine.ErrMultipleOU, claim: "role", msg: []string{`"admin"`}},
		{name: "an unknown organizational unit is an unknown role", mutate: func(c *x509.Certificate) { c.Subject.OrganizationalUnit = []string{"ops"} }, defect: engine.ErrUnknownRole, claim: "role"},
		{name: "an empty organizational unit is an empty role", mutate: func(c *x509.Certificate) { c.Subject.OrganizationalUnit = []string{""} }, defect: engine.ErrEmptyClaim, claim: "role"},
		{name: "a certificate without the env extension is refused", mutate: func(c *x509.Certificate) { c.ExtraExtensions = nil }, defect: engine.ErrMissingEnvExtension, claim: "env"},
		{name: "an env PrintableString is not a UTF8String", mutate: env(printable), defect: engine.ErrEnvNotUTF8, claim: "env"},
		{name: "an env UTF8String holding invalid UTF-8 is refused", mutate: env([]byte{0x0c, 0x02, 0xff, 0xfe}), defect: engine.ErrEnvNotUTF8, claim: "env"},
		{name: "an env extension with bytes after the string is refused", mutate: env([]byte{0x0c, 0x01, 'a', 0x00}), defect: engine.ErrEnvNotUTF8, claim: "env"},
		{name: "an env extension that is not DER is refused", mutate: env([]byte{0xff}), defect: engine.ErrEnvNotUTF8, claim: "env"},
		{name: "an empty env UTF8String is an empty claim", mutate: env([]byte{0x0c, 0x00}), defect: engine.ErrEmptyClaim, claim: "env"},
		{name: "an env of valid non-ASCII UTF-8 is an invalid claim", mutate: env(idUTF8Env(t, "prød")), defect: engine.ErrInvalidClaim, claim: "env"},
		{name: "a certificate without node= has no node", mutate: func(c *x509.Certificate) { c.DNSNames = []string{"dc=dc1"} }, defect: engine.ErrMissingClaim, claim: "node"},
		{name: "a certificate without dc= has no datacenter", mutate: func(c *x509.Certificate) { c.DNSNames = []string{"node=gate-7"} }, defect: engine.ErrMissingClaim, claim: "datacenter", msg: []string{`(key "dc")`}},
		{name: "two node SANs are a duplicate even when equal", mutate: func(c *x509.Certificate) { c.DNSNames = append(c.DNSNames, "node=gate-7") }, defect: engine.ErrDuplicateClaim, claim: "node"},
		{name: "two region SANs are a duplicate", mutate: func(c *x509.Certificate) { c.DNSNames = append(c.DNSNames, "region=a", "region=b") }, defect: engine.ErrDuplicateClaim, claim: "region"},
		{name: "an unknown key= SAN is refused", mutate: func(c *x509.Certificate) { c.DNSNames = append(c.DNSNames, "zone=z") }, defect: engine.ErrUnknownClaimKey, msg: []string{`"zone"`}},
		{name: "the long key datacenter= is not the SAN key dc=", mutate: func(c *x509.Certificate) { c.DNSNames = append(c.DNSNames, "datacenter=dc1") }, defect: engine.ErrUnknownClaimKey},
		{name: "an empty node= value is an empty claim", mutate: func(c *x509.Certificate) { c.DNSNames = []string{"node=", "dc=dc1"} }, defect: engine.ErrEmptyClaim, claim: "node"},
		{name: "a second equals sign makes the value invalid", mutate: func(c *x509.Certificate) { c.DNSNames = []string{"node=gate-7", "dc=a=b"} }, defect: engine.ErrInvalidClaim, claim: "datacenter"},
		{name: "a region with invalid characters is refused though optional", mutate: func(c *x509.Certificate) { c.DNSNames = append(c.DNSNames, "region=eu*") }, defect: engine.ErrInvalidClaim, claim: "region"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tmpl := idSubjectTemplate(t)
			tt.mutate(tmpl)
			cert := f.sign(t, tmpl)
			got, err := engine.ParseClaims(cert, idSubjectCfg)
			if tt.defect != nil {
				checkIdentityError(t, err, tt.defect, tt.claim, tt.msg...)
				return
			}
			if err != nil {
				t.Fatalf("ParseClaims: %v", err)
			}
			want := tt.want
			want.SPIFFEID = engine.SPIFFEID(idTrustDomain, want)
			want.Serial = cert.SerialNumber.Text(16)
			want.NotAfter = cert.NotAfter
			if got != want {
				t.Errorf("got %+v\nwant %+v", got, want)
			}
		})
	}
}

// Certificates built in memory (not parsed) keep claims in the template
// fields; the parser must hold them to the same rules.
func TestParseClaimsSubjectInMemory(t *testing.T) {
	base := func() *x509.Certificate {
		c := idSubjectTemplate(t)
		c.SerialNumber = big.NewInt(0xabc)
		return c
	}
	t.Run("an unparsed certificate yields its claims", func(t *testing.T) {
		got, err := engine.ParseClaims(base(), idSubjectCfg)
		if err != nil {
			t.Fatal(err)
		}
		if got.Serial != "abc" || got.Cluster != "prod-eu" || got.Env != "staging" {
			t.Errorf("got %+v", got)
		}
	})
	t.Run("two env extensions are a duplicate env", func(t *testing.T) {
		c := base()
		c.ExtraExtensions = append(c.ExtraExtensions, c.ExtraExtensions[0])
		_, err := engine.ParseClaims(c, idSubjectCfg)
		checkIdentityError(t, err, engine.ErrDuplicateClaim, "env")
	})
	t.Run("a certificate without a serial number is malformed", func(t *testing.T) {
		c := base()
		c.SerialNumber = nil
		_, err := engine.ParseClaims(c, idSubjectCfg)
		checkIdentityError(t, err, engine.ErrMalformedCertificate, "")
	})
}
