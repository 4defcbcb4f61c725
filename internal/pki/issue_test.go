package pki_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coordinatord/coordinatord/engine"
	"github.com/coordinatord/coordinatord/internal/pki"
)

const trustDomain = "coordinatord.test"

func testClaims() engine.Claims {
	return engine.Claims{Cluster: "prod-eu", Env: "staging", Role: engine.RoleWorker, Datacenter: "dc1", Node: "worker-3"}
}

// clientRequest is a valid spiffe client certificate request.
func clientRequest(t *testing.T) pki.Request {
	t.Helper()
	return pki.Request{
		Claims:      testClaims(),
		Mapping:     engine.MappingSPIFFE,
		TrustDomain: trustDomain,
		NotBefore:   t0.Add(-time.Minute),
		NotAfter:    t0.Add(24 * time.Hour),
	}
}

func TestIssueRoundTrip(t *testing.T) {
	ca := newCA(t)
	withRegion := testClaims()
	withRegion.Region = "eu-west"
	tests := []struct {
		name    string
		mapping engine.Mapping
		claims  engine.Claims
		server  bool
	}{
		{name: "a spiffe client certificate parses back to its claims", mapping: engine.MappingSPIFFE, claims: testClaims()},
		{name: "a subject client certificate parses back to its claims", mapping: engine.MappingSubject, claims: testClaims()},
		{name: "a subject certificate carries the optional region", mapping: engine.MappingSubject, claims: withRegion},
		{name: "a spiffe server certificate parses back to its claims", mapping: engine.MappingSPIFFE, claims: testClaims(), server: true},
		{name: "a subject server certificate keeps host names apart from claims", mapping: engine.MappingSubject, claims: withRegion, server: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := clientRequest(t)
			req.Mapping, req.Claims, req.Server = tt.mapping, tt.claims, tt.server
			if tt.server {
				req.DNSNames = []string{"node1.example", "localhost"}
				req.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
			}
			issued, err := ca.Issue(req)
			if err != nil {
				t.Fatal(err)
			}
			cfg := engine.IdentityConfig{Mapping: tt.mapping, TrustDomain: trustDomain}
			want := tt.claims
			want.SPIFFEID = engine.SPIFFEID(trustDomain, tt.claims)
			want.Serial = issued.Cert.SerialNumber.Text(16)
			want.NotAfter = req.NotAfter

			got, err := engine.ParseClaims(issued.Cert, cfg)
			if err != nil {
				t.Fatalf("ParseClaims: %v", err)
			}
			if got != want {
				t.Errorf("ParseClaims got %+v\nwant %+v", got, want)
			}
			v, err := engine.NewVerifier(ca.Pool(), cfg, func() time.Time { return t0 })
			if err != nil {
				t.Fatal(err)
			}
			if got, err = v.Verify([]*x509.Certificate{issued.Cert}); err != nil || got != want {
				t.Errorf("Verify got %+v, %v", got, err)
			}

			wantUsage := []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
			if tt.server {
				wantUsage = append(wantUsage, x509.ExtKeyUsageServerAuth)
				if err := issued.Cert.VerifyHostname("node1.example"); err != nil {
					t.Errorf("server host name: %v", err)
				}
				if err := issued.Cert.VerifyHostname("127.0.0.1"); err != nil {
					t.Errorf("server IP: %v", err)
				}
			}
			if !slices.Equal(issued.Cert.ExtKeyUsage, wantUsage) {
				t.Errorf("ExtKeyUsage %v, want %v", issued.Cert.ExtKeyUsage, wantUsage)
			}
			if issued.Cert.IsCA {
				t.Error("an issued certificate is a CA")
			}
		})
	}
}

func TestIssuedTLSHandshake(t *testing.T) {
	// crypto/tls checks the server certificate against the wall clock.
	now := time.Now()
	ca, err := pki.NewCA("handshake CA", now.Add(-2*time.Hour), 4*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	req := clientRequest(t)
	req.Server, req.DNSNames = true, []string{"coordinator.test"}
	req.Claims.Role = engine.RoleCoordinator
	req.NotBefore, req.NotAfter = now.Add(-time.Hour), now.Add(time.Hour)
	server, err := ca.Issue(req)
	if err != nil {
		t.Fatal(err)
	}
	req = clientRequest(t)
	req.NotBefore, req.NotAfter = now.Add(-time.Hour), now.Add(time.Hour)
	client, err := ca.Issue(req)
	if err != nil {
		t.Fatal(err)
	}
	serverCert, err := server.TLSCertificate()
	if err != nil {
		t.Fatal(err)
	}
	clientCert, err := client.TLSCertificate()
	if err != nil {
		t.Fatal(err)
	}

	sc, cc := net.Pipe()
	srv := tls.Server(sc, &tls.Config{Certificates: []tls.Certificate{serverCert}, ClientAuth: tls.RequireAnyClientCert})
	cli := tls.Client(cc, &tls.Config{Certificates: []tls.Certificate{clientCert}, RootCAs: ca.Pool(), ServerName: "coordinator.test"})
	done := make(chan error, 1)
	go func() { done <- cli.Handshake() }()
	if err := srv.Handshake(); err != nil {
		t.Fatalf("server handshake: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	// Close the pipe, not the TLS connections: a close_notify on an
	// unbuffered pipe nobody reads would wait for its 5s deadline.
	defer sc.Close()
	defer cc.Close()

	v, err := engine.NewVerifier(ca.Pool(), engine.IdentityConfig{Mapping: engine.MappingSPIFFE, TrustDomain: trustDomain}, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	got, err := v.Verify(srv.ConnectionState().PeerCertificates)
	if err != nil {
		t.Fatalf("Verify the peer: %v", err)
	}
	if got.Node != "worker-3" || got.Role != engine.RoleWorker {
		t.Errorf("peer claims %+v", got)
	}
}

func TestRequestValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*pki.Request)
		field  string // the message must name it
		defect error  // checked with errors.Is when set
	}{
		{name: "a complete spiffe client request is valid", mutate: func(*pki.Request) {}},
		{name: "a subject request needs no trust domain", mutate: func(r *pki.Request) { r.Mapping, r.TrustDomain = engine.MappingSubject, "" }},
		{name: "a subject request may carry a region", mutate: func(r *pki.Request) { r.Mapping, r.Claims.Region = engine.MappingSubject, "eu" }},
		{name: "parse outputs in the claims are ignored", mutate: func(r *pki.Request) { r.Claims.SPIFFEID, r.Claims.Serial = "x", "y" }},
		{name: "an unknown mapping is refused", mutate: func(r *pki.Request) { r.Mapping = "ldap" }, field: "Mapping"},
		{name: "an empty mapping is refused, never defaulted", mutate: func(r *pki.Request) { r.Mapping = "" }, field: "Mapping"},
		{name: "a spiffe request needs a trust domain", mutate: func(r *pki.Request) { r.TrustDomain = "" }, field: "TrustDomain"},
		{name: "a trust domain with a port is refused", mutate: func(r *pki.Request) { r.TrustDomain = "example.org:443" }, field: "TrustDomain"},
		{name: "a bad trust domain is refused under the subject mapping too", mutate: func(r *pki.Request) { r.Mapping, r.TrustDomain = engine.MappingSubject, "Example.org" }, field: "TrustDomain"},
		{name: "a region cannot be written by the spiffe mapping", mutate: func(r *pki.Request) { r.Claims.Region = "eu" }, field: "Region"},
		{name: "an empty env is refused by the parser's rule", mutate: func(r *pki.Request) { r.Claims.Env = "" }, field: `"env"`, defect: engine.ErrEmptyClaim},
		{name: "a node with a slash is refused", mutate: func(r *pki.Request) { r.Claims.Node = "a/b" }, field: `"node"`, defect: engine.ErrInvalidClaim},
		{name: "an unknown role is refused", mutate: func(r *pki.Request) { r.Claims.Role = "root" }, field: `"role"`, defect: engine.ErrUnknownRole},
		{name: "an invalid region is refused", mutate: func(r *pki.Request) { r.Mapping, r.Claims.Region = engine.MappingSubject, "e=u" }, field: `"region"`, defect: engine.ErrInvalidClaim},
		{name: "a zero NotBefore is refused", mutate: func(r *pki.Request) { r.NotBefore = time.Time{} }, field: "NotBefore"},
		{name: "a zero NotAfter is refused", mutate: func(r *pki.Request) { r.NotAfter = time.Time{} }, field: "NotAfter"},
		{name: "NotAfter equal to NotBefore is refused", mutate: func(r *pki.Request) { r.NotAfter = r.NotBefore }, field: "NotAfter"},
		{name: "host names on a client certificate are refused", mutate: func(r *pki.Request) { r.DNSNames = []string{"a.example"} }, field: "DNSNames"},
		{name: "IP addresses on a client certificate are refused", mutate: func(r *pki.Request) { r.IPAddresses = []net.IP{net.IPv6loopback} }, field: "IPAddresses"},
		{name: "a server certificate needs a name", mutate: func(r *pki.Request) { r.Server = true }, field: "DNSNames"},
		{name: "a server name with an equals sign would read as a claim", mutate: func(r *pki.Request) { r.Server, r.DNSNames = true, []string{"node=evil"} }, field: "DNSNames[0]"},
		{name: "a server name with an empty label is refused", mutate: func(r *pki.Request) { r.Server, r.DNSNames = true, []string{"ok.example", "a..b"} }, field: "DNSNames[1]"},
		{name: "a wildcard server name is valid", mutate: func(r *pki.Request) { r.Server, r.DNSNames = true, []string{"*.nodes.example"} }},
		{name: "a malformed IP address is refused", mutate: func(r *pki.Request) { r.Server, r.IPAddresses = true, []net.IP{{1, 2, 3}} }, field: "IPAddresses[0]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := clientRequest(t)
			tt.mutate(&r)
			err := r.Validate()
			if tt.field == "" {
				if err != nil {
					t.Fatalf("got %v, want valid", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("got valid, want an error naming %s", tt.field)
			}
			if !strings.Contains(err.Error(), tt.field) {
				t.Errorf("message %q does not name %s", err, tt.field)
			}
			if tt.defect != nil && !errors.Is(err, tt.defect) {
				t.Errorf("got %v, want %v", err, tt.defect)
			}
		})
	}
}

func TestIssueRefusesToOutliveTheCA(t *testing.T) {
	ca := newCA(t)
	req := clientRequest(t)
	req.NotAfter = ca.Cert.NotAfter.Add(time.Second)
	if _, err := ca.Issue(req); err == nil || !strings.Contains(err.Error(), "CA's NotAfter") {
		t.Fatalf("got %v, want an error about the CA's NotAfter", err)
	}
}

func TestIssuedWriteFiles(t *testing.T) {
	ca := newCA(t)
	issued, err := ca.Issue(clientRequest(t))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "node.pem"), filepath.Join(dir, "node-key.pem")
	if err := issued.WriteFiles(certFile, keyFile, false); err != nil {
		t.Fatal(err)
	}
	if err := issued.WriteFiles(certFile, keyFile, false); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second write: got %v, want fs.ErrExist", err)
	}
	if err := issued.WriteFiles(certFile, keyFile, true); err != nil {
		t.Fatalf("forced write: %v", err)
	}
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if !pair.Leaf.Equal(issued.Cert) {
		t.Error("written certificate differs")
	}
	if st, err := os.Stat(keyFile); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v (%v), want 0600", st.Mode().Perm(), err)
	}
	if err := issued.WriteFiles(certFile, certFile, true); err == nil {
		t.Error("the same name for certificate and key was accepted")
	}
}
