package raftstore

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/coordinatord/coordinatord/engine"
	"github.com/coordinatord/coordinatord/internal/pki"
)

const (
	tCluster = "blue"
	tEnv     = "prod"
	tTD      = "coordinatord.local"
)

// tPKI is a CA and a verifier trusting it.
type tPKI struct {
	ca       *pki.CA
	verifier *engine.Verifier
}

func newTPKI(t *testing.T) *tPKI {
	t.Helper()
	ca, err := pki.NewCA("raftstore test CA", time.Now().Add(-time.Hour), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	v, err := engine.NewVerifier(ca.Pool(), engine.IdentityConfig{Mapping: engine.MappingSPIFFE, TrustDomain: tTD}, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	return &tPKI{ca: ca, verifier: v}
}

func tClaims(role engine.Role, node string) engine.Claims {
	return engine.Claims{Cluster: tCluster, Env: tEnv, Role: role, Datacenter: "dc1", Node: node}
}

func (p *tPKI) cert(t *testing.T, c engine.Claims) tls.Certificate {
	t.Helper()
	is, err := p.ca.Issue(pki.Request{
		Claims: c, Mapping: engine.MappingSPIFFE, TrustDomain: tTD,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		Server: true, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := is.TLSCertificate()
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// syncBuf is a log sink the test reads while the transport writes.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// newTransport starts a TLS transport for claims c (a coordinator unless
// c says otherwise) on a free loopback port.
func (p *tPKI) newTransport(t *testing.T, c engine.Claims, bind string) (*TLSTransport, *syncBuf) {
	t.Helper()
	logs := &syncBuf{}
	tr, err := NewTLSTransport(TransportConfig{
		BindAddr:    bind,
		Certificate: p.cert(t, c),
		Verifier:    p.verifier,
		Self:        c,
		Logger:      slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo})),
		Timeout:     2 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	return tr, logs
}

// clusterNode is one store of an in-process cluster over TLS transports.
type clusterNode struct {
	store *Store
	trans *TLSTransport
}

func (p *tPKI) openNode(t *testing.T, id string, bootstrap bool) *clusterNode {
	t.Helper()
	tr, _ := p.newTransport(t, tClaims(engine.RoleCoordinator, id), "127.0.0.1:0")
	cfg := testConfig(t, t.TempDir())
	cfg.NodeID = id
	cfg.Bootstrap = bootstrap
	cfg.Transport = tr
	// Real sockets between three nodes: give elections more room than the
	// in-memory single-voter tests do.
	cfg.HeartbeatTimeout = 200 * time.Millisecond
	cfg.ElectionTimeout = 200 * time.Millisecond
	cfg.LeaderLeaseTimeout = 100 * time.Millisecond
	s := openStore(t, cfg)
	return &clusterNode{store: s, trans: tr}
}

func (n *clusterNode) member(id string) Member {
	return Member{ID: id, RaftAddr: string(n.trans.LocalAddr()), HTTPAddr: "api-" + id + ":8443", Datacenter: "dc1", JoinedAt: t0}
}

func TestTLSTransportReplicatesAcrossJoinedNodes(t *testing.T) {
	p := newTPKI(t)
	n1 := p.openNode(t, "n1", true)
	n2 := p.openNode(t, "n2", false)
	n3 := p.openNode(t, "n3", false)
	for _, n := range []*clusterNode{n2, n3} {
		id := n.store.nodeID
		if _, existing, err := n1.store.AddMember(tctx(t), n.member(id)); err != nil || existing {
			t.Fatalf("AddMember(%s) = existing %v, %v", id, existing, err)
		}
	}
	mustPut(t, n1.store, pol("replicated", "enforce"))
	for _, n := range []*clusterNode{n2, n3} {
		eventually(t, n.store.nodeID+" applies the policy", func() bool {
			_, err := n.store.Policy("replicated")
			return err == nil
		})
		eventually(t, n.store.nodeID+" knows the members", func() bool {
			ms, err := n.store.Members()
			return err == nil && len(ms) == 2 && ms[0].ID == "n2" && ms[1].ID == "n3"
		})
		if id, _ := n.store.Leader(); id != "n1" {
			t.Errorf("%s follows %q, want n1", n.store.nodeID, id)
		}
	}
	servers, err := n1.store.Configuration(tctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(servers) != 3 || countVoters(servers) != 3 {
		t.Fatalf("configuration %+v, want three voters", servers)
	}
}

func TestTLSTransportRefusesPeersThatAreNotCoordinatorsOfThisCluster(t *testing.T) {
	p := newTPKI(t)
	other := newTPKI(t)
	server, logs := p.newTransport(t, tClaims(engine.RoleCoordinator, "n1"), "127.0.0.1:0")
	addr := string(server.LocalAddr())
	cases := []struct {
		name   string
		pki    *tPKI
		claims engine.Claims
		want   string // in the server's log
	}{
		{"a gate of the same cluster is refused by role", p, tClaims(engine.RoleGate, "gate-1"), `peer_role=gate`},
		{"a coordinator of another cluster is refused by cluster", p, engine.Claims{Cluster: "green", Env: tEnv, Role: engine.RoleCoordinator, Datacenter: "dc1", Node: "x"}, `peer_cluster=green`},
		{"a coordinator of another env is refused by env", p, engine.Claims{Cluster: tCluster, Env: "dev", Role: engine.RoleCoordinator, Datacenter: "dc1", Node: "y"}, `peer_env=dev`},
		{"a coordinator signed by another CA is refused as untrusted", other, tClaims(engine.RoleCoordinator, "n9"), `defect=`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// The dialer accepts the server and presents tc's certificate,
			// so only the server refuses.
			dialer, _ := p.newTransport(t, tClaims(engine.RoleCoordinator, "dialer"), "127.0.0.1:0")
			dialer.layer.client.Certificates = []tls.Certificate{tc.pki.cert(t, tc.claims)}
			conn, err := dialer.layer.Dial(server.LocalAddr(), 2*time.Second)
			if err == nil {
				// TLS 1.3 completes the client's side before the server has
				// checked the client's certificate; the refusal arrives on
				// the first read.
				_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
				_, err = conn.Read(make([]byte, 1))
				conn.Close()
			}
			if err == nil {
				t.Fatal("the connection was accepted")
			}
			eventually(t, "the refusal is logged", func() bool {
				return strings.Contains(logs.String(), "raft connection refused") && strings.Contains(logs.String(), tc.want)
			})
		})
	}
	t.Run("a dialer refuses a server that is not a coordinator of its cluster", func(t *testing.T) {
		gate, _ := p.newTransport(t, tClaims(engine.RoleGate, "gate-2"), "127.0.0.1:0")
		dialer, _ := p.newTransport(t, tClaims(engine.RoleCoordinator, "n2"), "127.0.0.1:0")
		_, err := dialer.layer.Dial(gate.LocalAddr(), 2*time.Second)
		var pr *PeerRejectedError
		if !errors.As(err, &pr) || pr.Claims.Role != engine.RoleGate {
			t.Fatalf("Dial = %v, want a *PeerRejectedError naming role gate", err)
		}
	})
	t.Run("probe checks the node claim", func(t *testing.T) {
		dialer, _ := p.newTransport(t, tClaims(engine.RoleCoordinator, "n2"), "127.0.0.1:0")
		if err := dialer.Probe(context.Background(), addr, "n1"); err != nil {
			t.Fatalf("Probe(n1) = %v", err)
		}
		err := dialer.Probe(context.Background(), addr, "n7")
		if err == nil || !strings.Contains(err.Error(), `node "n1" answers there, not "n7"`) {
			t.Fatalf("Probe(n7) = %v, want the node mismatch named", err)
		}
	})
}

func TestTLSTransportDialsFromItsBindIP(t *testing.T) {
	// Linux routes all of 127/8 to the loopback interface.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	from := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			from <- err.Error()
			return
		}
		from <- c.RemoteAddr().(*net.TCPAddr).IP.String()
		c.Close()
	}()
	p := newTPKI(t)
	tr, _ := p.newTransport(t, tClaims(engine.RoleCoordinator, "n1"), "127.0.0.7:0")
	_, _ = tr.layer.Dial(raft.ServerAddress(ln.Addr().String()), time.Second)
	if got := <-from; got != "127.0.0.7" {
		t.Fatalf("connection came from %s, want the bind IP 127.0.0.7", got)
	}
}

func TestValidateHostPort(t *testing.T) {
	cases := []struct {
		addr      string
		advertise bool
		ok        bool
	}{
		{"127.0.0.1:8444", false, true},
		{"127.0.0.1:8444", true, true},
		{"0.0.0.0:8444", false, true},
		{"0.0.0.0:8444", true, false},
		{"[::]:8444", true, false},
		{":8444", false, true},
		{":8444", true, false},
		{"node-1.example:8444", true, true},
		{"127.0.0.1:0", true, false},
		{"127.0.0.1", false, false},
		{"127.0.0.1:http", false, false},
		{"127.0.0.1:70000", false, false},
	}
	for _, tc := range cases {
		err := ValidateHostPort(tc.addr, tc.advertise)
		if (err == nil) != tc.ok {
			t.Errorf("ValidateHostPort(%q, advertise %v) = %v, want ok %v", tc.addr, tc.advertise, err, tc.ok)
		}
	}
}

func TestNewTLSTransportRefusesAnUnadvertisableBind(t *testing.T) {
	p := newTPKI(t)
	_, err := NewTLSTransport(TransportConfig{
		BindAddr: "0.0.0.0:0", Certificate: p.cert(t, tClaims(engine.RoleCoordinator, "n1")),
		Verifier: p.verifier, Self: tClaims(engine.RoleCoordinator, "n1"),
	})
	if err == nil || !strings.Contains(err.Error(), "set an advertise address") {
		t.Fatalf("NewTLSTransport = %v, want a request for an advertise address", err)
	}
}
