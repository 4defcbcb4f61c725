package server

import (
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coordinatord/coordinatord/api"
	"github.com/coordinatord/coordinatord/engine"
	"github.com/coordinatord/coordinatord/internal/pki"
)

// peerNode is an in-process node with a Raft TLS transport, so that two of
// them form a real cluster.
type peerNode struct {
	*testNode
	id string
}

// startPeer starts node id with the CA ca; bootstrap or join it afterwards.
func startPeer(t *testing.T, ca *pki.CA, id string, bootstrap bool) *peerNode {
	t.Helper()
	return startPeerWith(t, ca, id, bootstrap, nil)
}

// startPeerWith is startPeer with a change to the node's configuration.
func startPeerWith(t *testing.T, ca *pki.CA, id string, bootstrap bool, edit func(*Config)) *peerNode {
	t.Helper()
	n := &testNode{t: t, ca: ca, dir: t.TempDir(), cert: issue(t, ca, engine.RoleCoordinator, id, true)}
	cfg := DefaultConfig()
	cfg.NodeID = id
	cfg.DataDir = n.dir
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.RaftAddr = "127.0.0.1:0"
	cfg.Certificate = n.cert
	cfg.ClientCAs = ca.Pool()
	cfg.Identity = engine.IdentityConfig{Mapping: engine.MappingSPIFFE, TrustDomain: testTD}
	cfg.Bootstrap = bootstrap
	n.logs = &syncBuffer{}
	cfg.Logger = slog.New(slog.NewJSONHandler(n.logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	cfg.Raft.HeartbeatTimeout = 200 * time.Millisecond
	cfg.Raft.ElectionTimeout = 200 * time.Millisecond
	cfg.Raft.LeaderLeaseTimeout = 100 * time.Millisecond
	if edit != nil {
		edit(&cfg)
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
			t.Errorf("close %s: %v", id, err)
		}
	})
	return &peerNode{testNode: n, id: id}
}

// twoNodes is node-1 (bootstrapped, leading, registered) and node-2
// (joined through node-1's API), both ready.
func twoNodes(t *testing.T) (leader, follower *peerNode) {
	t.Helper()
	ca := newCA(t)
	leader = startPeer(t, ca, "node-1", true)
	waitFor(t, "node-1 leads and has registered itself", func() bool {
		_, err := leader.srv.Store().Member("node-1")
		return leader.srv.Store().IsLeader() && err == nil
	})
	follower = startPeer(t, ca, "node-2", false)
	if err := follower.srv.JoinCluster(ctx(t), []string{leader.srv.Addr()}); err != nil {
		t.Fatal(err)
	}
	if err := follower.srv.WaitReady(ctx(t)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "node-2 knows node-1's API address", func() bool {
		_, err := follower.srv.Store().Member("node-1")
		return err == nil
	})
	return leader, follower
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// do sends a request with cert and extra headers and returns the response
// with its body read.
func (n *peerNode) do(cert tls.Certificate, method, path string, header http.Header, body []byte) (*http.Response, []byte) {
	n.t.Helper()
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: n.tlsConfig(cert)}, Timeout: 10 * time.Second}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequest(method, "https://"+n.srv.Addr()+path, bytes.NewReader(body))
	if err != nil {
		n.t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
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
	return resp, out
}

func chainHeader(certs ...tls.Certificate) http.Header {
	var parts []string
	for _, c := range certs {
		for _, der := range c.Certificate {
			parts = append(parts, base64.StdEncoding.EncodeToString(der))
		}
	}
	return http.Header{headerClientChain: {strings.Join(parts, ",")}}
}

const allowAllRego = "package coordinatord.admission\n\nallow := true\n"

func TestAFollowerForwardsToTheLeaderWhichAnswersAsTheClient(t *testing.T) {
	leader, follower := twoNodes(t)
	admin := issue(t, leader.ca, engine.RoleAdmin, "admin-1", false)
	body, _ := json.Marshal(api.PutPolicyRequest{Rego: allowAllRego, Mode: "audit"})

	resp, out := follower.do(admin, http.MethodPut, "/v1/policies/fwd", http.Header{"Content-Type": {"application/json"}}, body)
	if resp.StatusCode != http.StatusOK || resp.Header.Get(headerLeader) != "node-1" {
		t.Fatalf("PUT through the follower: %d %s (leader header %q)", resp.StatusCode, out, resp.Header.Get(headerLeader))
	}
	d := leader.srv.Engine().Log().List(engine.DecisionFilter{Action: "policy.write", Limit: 10})
	if len(d) != 1 || d[0].Source.Node != "admin-1" {
		t.Fatalf("the leader's policy.write decisions %+v; want one, by admin-1", d)
	}
	if d := follower.srv.Engine().Log().List(engine.DecisionFilter{Action: "policy.write", Limit: 10}); len(d) != 0 {
		t.Fatalf("the follower decided a forwarded write itself: %+v", d)
	}

	t.Run("a read is forwarded unless it is stale", func(t *testing.T) {
		resp, out := follower.do(admin, http.MethodGet, "/v1/policies/fwd", nil, nil)
		if resp.StatusCode != http.StatusOK || resp.Header.Get(headerLeader) != "node-1" {
			t.Fatalf("GET: %d %s, leader header %q", resp.StatusCode, out, resp.Header.Get(headerLeader))
		}
		waitFor(t, "the follower applies the write", func() bool {
			_, err := follower.srv.Store().Policy("fwd")
			return err == nil
		})
		resp, out = follower.do(admin, http.MethodGet, "/v1/policies/fwd?stale=true", nil, nil)
		if resp.StatusCode != http.StatusOK || resp.Header.Get(headerLeader) != "" {
			t.Fatalf("stale GET: %d %s, leader header %q; want a local answer", resp.StatusCode, out, resp.Header.Get(headerLeader))
		}
	})

	t.Run("a denial on the leader reaches the client", func(t *testing.T) {
		worker := issue(t, leader.ca, engine.RoleWorker, "worker-1", false)
		resp, out := follower.do(worker, http.MethodPut, "/v1/policies/nope", http.Header{"Content-Type": {"application/json"}}, body)
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(apiErr(t, out).Message, "role/worker") {
			t.Fatalf("worker's PUT through the follower: %d %s", resp.StatusCode, out)
		}
	})

	t.Run("cluster status through the follower is the leader's", func(t *testing.T) {
		var st api.ClusterStatus
		resp, out := follower.do(admin, http.MethodGet, "/v1/cluster", nil, nil)
		if err := json.Unmarshal(out, &st); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("%d %s", resp.StatusCode, out)
		}
		if st.Node != "node-1" || st.LeaderID != "node-1" || len(st.Members) != 2 {
			t.Fatalf("status %+v", st)
		}
		for _, m := range st.Members {
			if !m.Registered || m.Suffrage != "voter" || m.HTTPAddr == "" {
				t.Errorf("member %+v", m)
			}
		}
	})
}

func TestTheForwardedChainHeader(t *testing.T) {
	leader, follower := twoNodes(t)
	admin := issue(t, leader.ca, engine.RoleAdmin, "admin-1", false)
	worker := issue(t, leader.ca, engine.RoleWorker, "worker-1", false)
	coordinator := issue(t, leader.ca, engine.RoleCoordinator, "node-2", true)
	otherCA := newCA(t)
	cases := []struct {
		name   string
		node   *peerNode
		cert   tls.Certificate
		header http.Header
		status int
		code   string
	}{
		{"a client that sets it is refused", leader, admin, chainHeader(worker), 403, "forwarding_refused"},
		{"a coordinator may pass a client's chain and the request is the client's", leader, coordinator, chainHeader(worker), 403, "forbidden"},
		{"a chain that does not decode is refused", leader, coordinator, http.Header{headerClientChain: {"not base64!"}}, 400, "invalid_forwarded_chain"},
		{"a chain of another CA is refused as the client would be", leader, coordinator, chainHeader(issue(t, otherCA, engine.RoleAdmin, "admin-1", false)), 401, "identity_untrusted"},
		{"a forwarded request reaching a follower is not forwarded again", follower, coordinator, chainHeader(admin), 503, "not_leader"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, out := tc.node.do(tc.cert, http.MethodGet, "/v1/policies", tc.header, nil)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d %s, want %d", resp.StatusCode, out, tc.status)
			}
			if e := apiErr(t, out); e.Code != tc.code {
				t.Fatalf("code %s (%s), want %s", e.Code, e.Message, tc.code)
			}
			if tc.status == 503 && resp.Header.Get("Retry-After") == "" {
				t.Error("a 503 without Retry-After")
			}
		})
	}
	t.Run("a coordinator passing an admin's chain acts as the admin", func(t *testing.T) {
		resp, out := leader.do(coordinator, http.MethodGet, "/v1/policies", chainHeader(admin), nil)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%d %s", resp.StatusCode, out)
		}
	})
}

func TestANodeWithoutALeaderAnswers503WithRetryAfter(t *testing.T) {
	n := startPeer(t, newCA(t), "node-1", false) // never bootstrapped nor joined
	admin := issue(t, n.ca, engine.RoleAdmin, "admin-1", false)
	resp, out := n.do(admin, http.MethodGet, "/v1/policies", nil, nil)
	e := apiErr(t, out)
	if resp.StatusCode != http.StatusServiceUnavailable || e.Code != "no_leader" || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("%d %s Retry-After %q", resp.StatusCode, out, resp.Header.Get("Retry-After"))
	}
	if !strings.Contains(e.Message, "no Raft leader is known to node node-1") {
		t.Errorf("message %q does not say what is known", e.Message)
	}
	// Health is served locally whatever the cluster's state.
	if resp, out := n.do(admin, http.MethodGet, "/v1/health", nil, nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("health: %d %s", resp.StatusCode, out)
	}
}

func TestRemoveAMemberOverTheAPI(t *testing.T) {
	leader, follower := twoNodes(t)
	admin := issue(t, leader.ca, engine.RoleAdmin, "admin-1", false)
	coordinator := issue(t, leader.ca, engine.RoleCoordinator, "node-2", true)
	if resp, out := follower.do(coordinator, http.MethodDelete, "/v1/cluster/members/node-2", nil, nil); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("a coordinator removing a member: %d %s, want 403", resp.StatusCode, out)
	}
	resp, out := follower.do(admin, http.MethodDelete, "/v1/cluster/members/node-2", nil, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("remove node-2 through node-2: %d %s", resp.StatusCode, out)
	}
	if resp, out := leader.do(admin, http.MethodDelete, "/v1/cluster/members/node-2", nil, nil); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("second removal: %d %s, want 404", resp.StatusCode, out)
	}
	resp, out = leader.do(admin, http.MethodDelete, "/v1/cluster/members/node-1", nil, nil)
	if resp.StatusCode != http.StatusConflict || apiErr(t, out).Code != "last_voter" {
		t.Fatalf("removing the last voter: %d %s, want 409 last_voter", resp.StatusCode, out)
	}
}
