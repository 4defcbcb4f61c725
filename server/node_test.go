package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/coordinatord/coordinatord/api"
	"github.com/coordinatord/coordinatord/client"
	"github.com/coordinatord/coordinatord/engine"
	"github.com/coordinatord/coordinatord/internal/pki"
)

const (
	testCluster = "test"
	testEnv     = "test"
	testDC      = "dc1"
	testTD      = "coordinatord.local"
)

// testNode is one real node: real TLS with certificates made here, a real
// Raft store with bbolt files in a temporary folder.
type testNode struct {
	t    testing.TB
	srv  *Server
	ca   *pki.CA
	dir  string
	cert tls.Certificate
	logs *syncBuffer
	edit func(*Config)
}

func newCA(t testing.TB) *pki.CA {
	t.Helper()
	ca, err := pki.NewCA("test CA", time.Now().Add(-time.Hour), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func issue(t testing.TB, ca *pki.CA, role engine.Role, node string, server bool) tls.Certificate {
	t.Helper()
	req := pki.Request{
		Claims:      engine.Claims{Cluster: testCluster, Env: testEnv, Role: role, Datacenter: testDC, Node: node},
		Mapping:     engine.MappingSPIFFE,
		TrustDomain: testTD,
		NotBefore:   time.Now().Add(-time.Hour),
		NotAfter:    time.Now().Add(time.Hour),
		Server:      server,
	}
	if server {
		req.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	is, err := ca.Issue(req)
	if err != nil {
		t.Fatal(err)
	}
	c, err := is.TLSCertificate()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// startNode starts a bootstrap node and waits until it has loaded a policy.
func startNode(t testing.TB) *testNode { return startNodeWith(t, nil) }

// startNodeWith is startNode with a change to the node's configuration.
func startNodeWith(t testing.TB, edit func(*Config)) *testNode {
	t.Helper()
	ca := newCA(t)
	n := &testNode{t: t, ca: ca, dir: t.TempDir(), cert: issue(t, ca, engine.RoleCoordinator, "node-1", true), edit: edit}
	n.start()
	return n
}

func (n *testNode) start() {
	t := n.t
	t.Helper()
	cfg := DefaultConfig()
	cfg.NodeID = "node-1"
	cfg.DataDir = n.dir
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.Certificate = n.cert
	cfg.ClientCAs = n.ca.Pool()
	cfg.Identity = engine.IdentityConfig{Mapping: engine.MappingSPIFFE, TrustDomain: testTD}
	cfg.Bootstrap = true
	n.logs = &syncBuffer{}
	cfg.Logger = slog.New(slog.NewJSONHandler(n.logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	cfg.Raft.HeartbeatTimeout = 100 * time.Millisecond
	cfg.Raft.ElectionTimeout = 100 * time.Millisecond
	cfg.Raft.LeaderLeaseTimeout = 50 * time.Millisecond
	if n.edit != nil {
		n.edit(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	n.srv = srv
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for srv.Engine().Revision() == 0 || !srv.Store().IsLeader() {
		if time.Now().After(deadline) {
			t.Fatal("the node did not lead with a policy loaded within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (n *testNode) restart() {
	n.t.Helper()
	if err := n.srv.Close(); err != nil {
		n.t.Fatal(err)
	}
	n.start()
}

func (n *testNode) tlsConfig(cert tls.Certificate) *tls.Config {
	pool := x509.NewCertPool()
	pool.AddCert(n.ca.Cert)
	return &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool, Certificates: []tls.Certificate{cert}}
}

// client returns an API client identified as role.
func (n *testNode) client(role engine.Role) *client.Client {
	n.t.Helper()
	c, err := client.New(client.Config{Addr: n.srv.Addr(), TLS: n.tlsConfig(issue(n.t, n.ca, role, string(role)+"-1", false))})
	if err != nil {
		n.t.Fatal(err)
	}
	n.t.Cleanup(c.Close)
	return c
}

// raw sends a request as role and returns the status and body.
func (n *testNode) raw(role engine.Role, method, path, contentType string, body []byte) (int, []byte) {
	n.t.Helper()
	return n.rawWith(issue(n.t, n.ca, role, string(role)+"-1", false), method, path, contentType, body)
}

func (n *testNode) rawWith(cert tls.Certificate, method, path, contentType string, body []byte) (int, []byte) {
	n.t.Helper()
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: n.tlsConfig(cert)}, Timeout: 10 * time.Second}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequest(method, "https://"+n.srv.Addr()+path, bytes.NewReader(body))
	if err != nil {
		n.t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := hc.Do(req)
	if err != nil {
		n.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		n.t.Fatal(err)
	}
	return resp.StatusCode, out
}

// apiErr decodes an error body, failing the test if it is not one.
func apiErr(t testing.TB, body []byte) *api.Error {
	t.Helper()
	var eb api.ErrorBody
	if err := json.Unmarshal(body, &eb); err != nil || eb.Error == nil || eb.Error.Code == "" || eb.Error.Message == "" {
		t.Fatalf("not a JSON error body: %s", body)
	}
	return eb.Error
}

func spiffe(role engine.Role) string {
	return engine.SPIFFEID(testTD, engine.Claims{Cluster: testCluster, Env: testEnv, Role: role, Datacenter: testDC, Node: string(role) + "-1"})
}

func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

// syncBuffer is a log sink the test can read while the node writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func writeFile(t testing.TB, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
