package tests

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/json"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coordinatord/coordinatord/api"
	"github.com/coordinatord/coordinatord/engine"
	"github.com/coordinatord/coordinatord/internal/pki"
)

const evilPolicy = "package coordinatord.admission\n\nallow := true\n"

// badCert is one defective client certificate and what the node must say.
type badCert struct {
	name string
	// make returns the certificate to present.
	make func(t *testing.T, p *pkiDir) tls.Certificate
	code string
	// mention must appear in the message: the defect or claim named.
	mention string
}

// sign makes a leaf certificate from tmpl, signed by ca (or by p's CA).
func sign(t *testing.T, ca *pki.CA, tmpl *x509.Certificate) tls.Certificate {
	t.Helper()
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	_, der, err := ca.Sign(tmpl, key.Public())
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

var serial = big.NewInt(1000)

// leaf is a valid client-certificate template with the given URI SANs.
func leaf(uris ...string) *x509.Certificate {
	serial = new(big.Int).Add(serial, big.NewInt(1))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "e2e"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	for _, u := range uris {
		parsed, err := url.Parse(u)
		if err != nil {
			panic(err)
		}
		tmpl.URIs = append(tmpl.URIs, parsed)
	}
	return tmpl
}

const goodPath = "/cluster/e2e/env/e2e/role/worker/dc/dc1/node/w-1"

func spiffeLeaf(path string) func(t *testing.T, p *pkiDir) tls.Certificate {
	return func(t *testing.T, p *pkiDir) tls.Certificate {
		return sign(t, p.ca, leaf("spiffe://"+e2eTD+path))
	}
}

// subjectLeaf is a valid subject-mapping template changed by edit.
func subjectLeaf(edit func(*x509.Certificate)) func(t *testing.T, p *pkiDir) tls.Certificate {
	return func(t *testing.T, p *pkiDir) tls.Certificate {
		tmpl := leaf()
		tmpl.Subject = pkix.Name{CommonName: e2eCluster, OrganizationalUnit: []string{"worker"}}
		tmpl.DNSNames = []string{"node=w-1", "dc=dc1", "region=eu"}
		env, err := asn1.MarshalWithParams(e2eEnv, "utf8")
		if err != nil {
			t.Fatal(err)
		}
		tmpl.ExtraExtensions = []pkix.Extension{{Id: engine.OIDEnv, Value: env}}
		edit(tmpl)
		return sign(t, p.ca, tmpl)
	}
}

func withoutClaim(claim string) string {
	segs := strings.Split(strings.TrimPrefix(goodPath, "/"), "/")
	var out []string
	for i := 0; i < len(segs); i += 2 {
		if segs[i] != claim {
			out = append(out, segs[i], segs[i+1])
		}
	}
	return "/" + strings.Join(out, "/")
}

func emptyClaim(claim string) string {
	segs := strings.Split(strings.TrimPrefix(goodPath, "/"), "/")
	for i := 0; i < len(segs); i += 2 {
		if segs[i] == claim {
			segs[i+1] = ""
		}
	}
	return "/" + strings.Join(segs, "/")
}

var spiffeMatrix = []badCert{
	{"not signed by the cluster's CA", func(t *testing.T, p *pkiDir) tls.Certificate {
		other, err := pki.NewCA("stranger", time.Now().Add(-time.Hour), time.Hour*48)
		if err != nil {
			t.Fatal(err)
		}
		return sign(t, other, leaf("spiffe://"+e2eTD+goodPath))
	}, "identity_untrusted", "authority"},
	{"expired", func(t *testing.T, p *pkiDir) tls.Certificate {
		tmpl := leaf("spiffe://" + e2eTD + goodPath)
		tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-3*time.Hour), time.Now().Add(-2*time.Hour)
		return sign(t, p.ca, tmpl)
	}, "identity_expired", "expired"},
	{"not yet valid", func(t *testing.T, p *pkiDir) tls.Certificate {
		tmpl := leaf("spiffe://" + e2eTD + goodPath)
		tmpl.NotBefore = time.Now().Add(2 * time.Hour)
		tmpl.NotAfter = time.Now().Add(3 * time.Hour)
		return sign(t, p.ca, tmpl)
	}, "identity_not_yet_valid", "valid from"},
	{"only valid for servers (no client auth usage)", func(t *testing.T, p *pkiDir) tls.Certificate {
		tmpl := leaf("spiffe://" + e2eTD + goodPath)
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		return sign(t, p.ca, tmpl)
	}, "identity_wrong_key_usage", "usage"},
	{"no URI SAN", func(t *testing.T, p *pkiDir) tls.Certificate { return sign(t, p.ca, leaf()) }, "identity_no_uri_san", "URI SAN"},
	{"two URI SANs", func(t *testing.T, p *pkiDir) tls.Certificate {
		return sign(t, p.ca, leaf("spiffe://"+e2eTD+goodPath, "spiffe://"+e2eTD+strings.Replace(goodPath, "w-1", "w-2", 1)))
	}, "identity_multiple_uri_sans", "more than one URI SAN"},
	{"a URI SAN that is not a SPIFFE ID", func(t *testing.T, p *pkiDir) tls.Certificate {
		return sign(t, p.ca, leaf("https://"+e2eTD+goodPath))
	}, "identity_malformed_spiffe_id", "spiffe"},
	{"a SPIFFE ID with a port", spiffeLeaf(":8080" + goodPath), "identity_malformed_spiffe_id", "port"},
	{"a wrong trust domain", func(t *testing.T, p *pkiDir) tls.Certificate {
		return sign(t, p.ca, leaf("spiffe://evil.example"+goodPath))
	}, "identity_wrong_trust_domain", "evil.example"},
	{"missing cluster", spiffeLeaf(withoutClaim("cluster")), "identity_missing_claim", `"cluster"`},
	{"missing env", spiffeLeaf(withoutClaim("env")), "identity_missing_claim", `"env"`},
	{"missing role", spiffeLeaf(withoutClaim("role")), "identity_missing_claim", `"role"`},
	{"missing datacenter", spiffeLeaf(withoutClaim("dc")), "identity_missing_claim", `"datacenter"`},
	{"missing node", spiffeLeaf(withoutClaim("node")), "identity_missing_claim", `"node"`},
	{"empty cluster", spiffeLeaf(emptyClaim("cluster")), "identity_empty_claim", `"cluster"`},
	{"empty env", spiffeLeaf(emptyClaim("env")), "identity_empty_claim", `"env"`},
	{"empty role", spiffeLeaf(emptyClaim("role")), "identity_empty_claim", `"role"`},
	{"empty datacenter", spiffeLeaf(emptyClaim("dc")), "identity_empty_claim", `"datacenter"`},
	{"empty node", spiffeLeaf(emptyClaim("node") + "/"), "identity_empty_claim", `"node"`},
	{"an unknown role", spiffeLeaf(strings.Replace(goodPath, "worker", "janitor", 1)), "identity_unknown_role", "janitor"},
	{"path segments out of order", spiffeLeaf("/env/e2e/cluster/e2e/role/worker/dc/dc1/node/w-1"), "identity_claim_order", "order"},
	{"a claim given twice", spiffeLeaf(goodPath + "/node/w-2"), "identity_", "node"},
	{"a claim with characters outside the allowed set", spiffeLeaf(strings.Replace(goodPath, "w-1", "w%201", 1)), "identity_", "node"},
}

var subjectMatrix = []badCert{
	{"subject mapping: no CN", subjectLeaf(func(c *x509.Certificate) { c.Subject.CommonName = "" }), "identity_missing_cn", "CN"},
	{"subject mapping: no OU", subjectLeaf(func(c *x509.Certificate) { c.Subject.OrganizationalUnit = nil }), "identity_missing_ou", "OU"},
	{"subject mapping: two OUs", subjectLeaf(func(c *x509.Certificate) { c.Subject.OrganizationalUnit = []string{"worker", "gate"} }), "identity_multiple_ou", "organizational unit"},
	{"subject mapping: an invalid OU", subjectLeaf(func(c *x509.Certificate) { c.Subject.OrganizationalUnit = []string{"janitor"} }), "identity_unknown_role", "janitor"},
	{"subject mapping: no env extension", subjectLeaf(func(c *x509.Certificate) { c.ExtraExtensions = nil }), "identity_missing_env_extension", "1.3.6.1.4.1.99999.1"},
	{"subject mapping: env extension not UTF-8", subjectLeaf(func(c *x509.Certificate) {
		// A DER UTF8String (tag 12) whose bytes are not UTF-8.
		c.ExtraExtensions = []pkix.Extension{{Id: engine.OIDEnv, Value: []byte{12, 3, 'e', 0xff, 0xfe}}}
	}), "identity_env_not_utf8", "UTF-8"},
	{"subject mapping: env extension of another ASN.1 type", subjectLeaf(func(c *x509.Certificate) {
		c.ExtraExtensions = []pkix.Extension{{Id: engine.OIDEnv, Value: []byte{4, 3, 'e', '2', 'e'}}}
	}), "identity_env_not_utf8", "UTF8String"},
	{"subject mapping: no node SAN", subjectLeaf(func(c *x509.Certificate) { c.DNSNames = []string{"dc=dc1"} }), "identity_missing_claim", `"node"`},
	{"subject mapping: no dc SAN", subjectLeaf(func(c *x509.Certificate) { c.DNSNames = []string{"node=w-1"} }), "identity_missing_claim", `"datacenter"`},
	{"subject mapping: empty node SAN", subjectLeaf(func(c *x509.Certificate) { c.DNSNames = []string{"node=", "dc=dc1"} }), "identity_empty_claim", `"node"`},
}

// TestBadCertificatesAreRejectedWithTheirDefectAndChangeNothing presents
// each defective certificate over a real TLS connection to a running node,
// for a write (PUT a policy) and a read, and checks the 401 names the
// defect and that the policy set is unchanged.
func TestBadCertificatesAreRejectedWithTheirDefectAndChangeNothing(t *testing.T) {
	for _, mapping := range []struct {
		mapping engine.Mapping
		cases   []badCert
	}{{engine.MappingSPIFFE, spiffeMatrix}, {engine.MappingSubject, subjectMatrix}} {
		t.Run(string(mapping.mapping), func(t *testing.T) {
			p := newPKI(t)
			n := startServer(t, p, mapping.mapping, t.TempDir())
			admin := n.client(engine.RoleAdmin)
			before, err := admin.ListPolicies(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			for _, bc := range mapping.cases {
				t.Run(bc.name, func(t *testing.T) {
					cert := bc.make(t, p)
					for _, call := range []struct{ method, path, ct, body string }{
						{"PUT", "/v1/policies/evil", "text/plain", evilPolicy},
						{"POST", "/v1/admission", "application/json", `{"source":{"spiffe_id":"x"},"target":{"spiffe_id":"y"},"action":"connect"}`},
					} {
						status, e := callWith(t, n, cert, call.method, call.path, call.ct, call.body)
						if status != http.StatusUnauthorized || !strings.HasPrefix(e.Code, bc.code) || !strings.Contains(e.Message, bc.mention) {
							t.Fatalf("%s %s: %d %s %q, want 401 %s mentioning %q", call.method, call.path, status, e.Code, e.Message, bc.code, bc.mention)
						}
					}
				})
			}
			after, err := admin.ListPolicies(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if after.Revision != before.Revision || len(after.Policies) != len(before.Policies) {
				t.Fatalf("rejected certificates changed the policies: %+v -> %+v", before, after)
			}
			// And a healthy certificate still works afterwards.
			if _, err := admin.PutPolicy(context.Background(), "after", evilPolicy, "audit", nil); err != nil {
				t.Fatalf("a valid admin could not write after the matrix: %v", err)
			}
		})
	}
}

func TestAConnectionWithoutAClientCertificateIsRefused(t *testing.T) {
	p := newPKI(t)
	n := startServer(t, p, engine.MappingSPIFFE, t.TempDir())
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.ca.Pool(), MinVersion: tls.VersionTLS13}}}
	resp, err := hc.Get("https://" + n.addr + "/v1/health")
	if err == nil {
		resp.Body.Close()
		t.Fatalf("a request without a client certificate got %d", resp.StatusCode)
	}
	if !strings.Contains(err.Error(), "certificate required") {
		t.Fatalf("error %v does not say a certificate is required", err)
	}
	hc12 := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: p.ca.Pool(), MaxVersion: tls.VersionTLS12,
		Certificates: []tls.Certificate{p.tlsCert("admin", request(engine.MappingSPIFFE, engine.RoleAdmin, "a"))},
	}}}
	if resp, err := hc12.Get("https://" + n.addr + "/v1/health"); err == nil {
		resp.Body.Close()
		t.Fatal("a TLS 1.2 connection was accepted")
	}
}

func callWith(t *testing.T, n *node, cert tls.Certificate, method, path, contentType, body string) (int, *api.Error) {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: n.tlsConfig(cert)}, Timeout: 10 * time.Second}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequest(method, "https://"+n.addr+path, bytes.NewReader([]byte(body)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", contentType)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var eb api.ErrorBody
	if err := json.Unmarshal(raw, &eb); err != nil || eb.Error == nil {
		t.Fatalf("%s %s: %d, not a JSON error: %s", method, path, resp.StatusCode, raw)
	}
	return resp.StatusCode, eb.Error
}
