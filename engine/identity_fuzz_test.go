package engine_test

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"strings"
	"testing"

	"github.com/coordinatord/coordinatord/engine"
)

// checkParseResult holds the invariants of every parse: an error is an
// *IdentityError with a known code and a message; a success has every
// required claim, a known role, and a SPIFFE ID that parses back to the
// same claims.
func checkParseResult(t *testing.T, c engine.Claims, err error) {
	t.Helper()
	if err != nil {
		var ie *engine.IdentityError
		if !errors.As(err, &ie) {
			t.Fatalf("error %v is a %T, not an *engine.IdentityError", err, err)
		}
		if ie.Code() == "invalid_identity" {
			t.Fatalf("error %v has no code of its own", err)
		}
		if !strings.HasPrefix(err.Error(), "identity: ") {
			t.Fatalf("message %q does not start with identity:", err)
		}
		if c != (engine.Claims{}) {
			t.Fatalf("claims %+v returned with error %v", c, err)
		}
		return
	}
	if c.Cluster == "" || c.Env == "" || c.Datacenter == "" || c.Node == "" || !c.Role.Valid() {
		t.Fatalf("accepted incomplete claims %+v", c)
	}
	if err := engine.ValidateClaims(c); err != nil {
		t.Fatalf("accepted claims %+v that ValidateClaims refuses: %v", c, err)
	}
	back, err := engine.ParseSPIFFEID(c.SPIFFEID, idTrustDomain)
	if err != nil {
		t.Fatalf("SPIFFE ID %q of accepted claims does not parse: %v", c.SPIFFEID, err)
	}
	if back.Cluster != c.Cluster || back.Env != c.Env || back.Role != c.Role || back.Datacenter != c.Datacenter || back.Node != c.Node {
		t.Fatalf("SPIFFE ID %q parses to %+v, not %+v", c.SPIFFEID, back, c)
	}
}

func FuzzParseClaims(f *testing.F) {
	fx := newIDFixture(f)
	add := func(tmpl *x509.Certificate) {
		_, der, err := fx.ca.Sign(tmpl, fx.key.Public())
		if err != nil {
			f.Fatal(err)
		}
		f.Add(der)
	}
	add(idSPIFFETemplate(f, idSPIFFEID))
	add(idSPIFFETemplate(f, idSPIFFEID, idSPIFFEID))
	add(idSPIFFETemplate(f, "spiffe://coordinatord.test/cluster/c/env//role/gate/dc/d/node/n"))
	sub := idSubjectTemplate(f)
	add(sub)
	sub = idSubjectTemplate(f)
	sub.DNSNames = append(sub.DNSNames, "region=eu", "host.example")
	add(sub)
	sub = idSubjectTemplate(f)
	sub.ExtraExtensions = []pkix.Extension{{Id: engine.OIDEnv, Value: []byte{0x0c, 0x00}}}
	add(sub)

	f.Fuzz(func(t *testing.T, der []byte) {
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			return
		}
		for _, cfg := range []engine.IdentityConfig{idSPIFFECfg, idSubjectCfg} {
			c, err := engine.ParseClaims(cert, cfg)
			checkParseResult(t, c, err)
			if err == nil && cfg.Mapping == engine.MappingSPIFFE && len(cert.URIs) != 1 {
				t.Fatalf("accepted a certificate with %d URIs", len(cert.URIs))
			}
		}
	})
}

func FuzzParseSPIFFEID(f *testing.F) {
	for _, s := range []string{
		idSPIFFEID,
		"spiffe://coordinatord.test/cluster/a/env/b/role/worker/dc/c/node/d",
		"spiffe://coordinatord.test/cluster/a/env//role/worker/dc/c/node/d",
		"spiffe://coordinatord.test/cluster/a/role/worker/env/b/dc/c/node/d",
		"spiffe://coordinatord.test/cluster/a/cluster/a",
		"spiffe://coordinatord.test:1/cluster/a?x#y",
		"spiffe://coordinatord.test/cluster/%41/env/..",
		"spiffe://coordinatord.test/",
		"spiffe://",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		c, err := engine.ParseSPIFFEID(id, idTrustDomain)
		checkParseResult(t, c, err)
		if err == nil && (c.SPIFFEID != id || engine.SPIFFEID(idTrustDomain, c) != id) {
			t.Fatalf("%q parsed to %+v, which is not its canonical form", id, c)
		}
	})
}

// FuzzParseSubjectFields drives the subject mapping through signed
// certificates built from fuzzed fields, which random DER rarely reaches.
func FuzzParseSubjectFields(f *testing.F) {
	fx := newIDFixture(f)
	f.Add("prod-eu", "gate", "node=gate-7,dc=dc1", []byte{0x0c, 0x07, 's', 't', 'a', 'g', 'i', 'n', 'g'})
	f.Add("prod-eu", "gate,admin", "node=n,dc=d,region=r,host", []byte{0x0c, 0x01, 'e'})
	f.Add("", "gate", "node=n,node=n", []byte{0x13, 0x01, 'e'})
	f.Add("c", "ops", "dc=,zone=z", []byte{0x0c, 0x02, 0xff, 0xfe})
	f.Fuzz(func(t *testing.T, cn, ous, sans string, env []byte) {
		tmpl := idLeafTemplate()
		tmpl.Subject = pkix.Name{CommonName: cn}
		if ous != "" {
			tmpl.Subject.OrganizationalUnit = strings.Split(ous, ",")
		}
		if sans != "" {
			tmpl.DNSNames = strings.Split(sans, ",")
		}
		if env != nil {
			tmpl.ExtraExtensions = []pkix.Extension{{Id: engine.OIDEnv, Value: env}}
		}
		cert, _, err := fx.ca.Sign(tmpl, fx.key.Public())
		if err != nil {
			return // crypto/x509 refuses to encode it (non-ASCII DNS name, ...)
		}
		c, err := engine.ParseClaims(cert, idSubjectCfg)
		checkParseResult(t, c, err)
		if err == nil && (c.Cluster != cn || string(c.Role) != ous) {
			t.Fatalf("claims %+v do not come from CN %q and OU %q", c, cn, ous)
		}
	})
}
