package tests

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coordinatord/coordinatord/api"
	"github.com/coordinatord/coordinatord/client"
	"github.com/coordinatord/coordinatord/engine"
	"github.com/coordinatord/coordinatord/internal/pki"
)

// auditRego is a valid policy that changes no decision: audit mode only
// records denials, and it denies nothing. The cluster tests write it under
// many ids to make log entries.
const auditRego = "package coordinatord.admission\n\nallow := true\n"

func putAudit(ctx context.Context, c *client.Client, id string) (*api.Policy, error) {
	return c.PutPolicy(ctx, id, auditRego, "audit", nil)
}

func timeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

// staleGet reads path from node n's own state (?stale=true) as the admin.
// The Go client has no stale policy reads; the raw call is what proves
// that the node itself, not the leader it would forward to, has the data.
func (n *clusterNode) staleGet(path string, out any) (int, error) {
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: n.tlsConfig(n.pki.tlsCert("admin", request(engine.MappingSPIFFE, engine.RoleAdmin, "admin-1")))}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Get("https://" + n.httpBind + path + "?stale=true")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	if resp.StatusCode == http.StatusOK && out != nil {
		return resp.StatusCode, json.Unmarshal(raw, out)
	}
	return resp.StatusCode, nil
}

// policyState is a node's policy set, from its own state.
func (n *clusterNode) policyState() (map[string]uint64, uint64, error) {
	var list api.PolicyList
	code, err := n.staleGet("/v1/policies", &list)
	if err != nil || code != http.StatusOK {
		return nil, 0, fmt.Errorf("%s: GET /v1/policies?stale=true: %d %v", n.id, code, err)
	}
	out := map[string]uint64{}
	for _, p := range list.Policies {
		out[p.ID] = p.Version
	}
	return out, list.Revision, nil
}

// eventually polls cond every 50ms until it returns nil or 30s pass.
func eventually(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 30s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitSameState waits until every running node holds the same policy set.
func (c *cluster) waitSameState(t *testing.T) map[string]uint64 {
	t.Helper()
	var want map[string]uint64
	eventually(t, "every node holds the same policies", func() error {
		var wantRev uint64
		for k, n := range c.runningNodes() {
			got, rev, err := n.policyState()
			if err != nil {
				return err
			}
			if k == 0 {
				want, wantRev = got, rev
				continue
			}
			if rev != wantRev || !mapsEqual(got, want) {
				return fmt.Errorf("%s has revision %d %v, %s has %d %v", n.id, rev, got, c.runningNodes()[0].id, wantRev, want)
			}
		}
		return nil
	})
	return want
}

func mapsEqual(a, b map[string]uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func (c *cluster) runningNodes() []*clusterNode {
	var out []*clusterNode
	for _, n := range c.nodes {
		if n.running {
			out = append(out, n)
		}
	}
	return out
}

// multiClient is an admin client of every running node but except.
func (c *cluster) multiClient(t *testing.T, except ...int) *client.Client {
	t.Helper()
	var addrs []string
	for _, n := range c.runningNodes() {
		if !slices.Contains(except, n.i) {
			addrs = append(addrs, n.httpBind)
		}
	}
	n := c.nodes[0]
	cl, err := client.New(client.Config{Addrs: addrs, TLS: n.tlsConfig(c.pki.tlsCert("admin", request(engine.MappingSPIFFE, engine.RoleAdmin, "admin-1"))), Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func TestClusterBootstrapsJoinsAndForwardsWritesFromAFollower(t *testing.T) {
	c := startCluster(t, 3)
	l := c.node(c.Leader())
	st, err := l.status(false)
	if err != nil {
		t.Fatal(err)
	}
	if st.LeaderID != l.id || len(st.Members) != 3 {
		t.Fatalf("status %+v", st)
	}
	for _, m := range st.Members {
		n := c.nodes[slices.IndexFunc(c.nodes, func(n *clusterNode) bool { return n.id == m.ID })]
		if m.Suffrage != "voter" || !m.Registered || m.HTTPAddr != n.httpProxy.addr() || m.RaftAddr != n.raftProxy.addr() || m.Datacenter != e2eDC {
			t.Errorf("member %+v: want a registered voter at the advertised addresses %s, %s", m, n.httpProxy.addr(), n.raftProxy.addr())
		}
	}

	follower := c.node(l.i%3 + 1)
	p, err := putAudit(timeout(t, 10*time.Second), follower.admin(), "through-a-follower")
	if err != nil {
		t.Fatalf("write through follower %s: %v", follower.id, err)
	}
	t.Logf("policy written through follower %s (leader %s): revision %d", follower.id, l.id, p.Revision)
	// The leader authorised it as the admin, not as the follower.
	dl, err := l.admin().Decisions(timeout(t, 5*time.Second), client.DecisionQuery{Action: "policy.write"})
	if err != nil {
		t.Fatal(err)
	}
	if len(dl.Decisions) == 0 || dl.Decisions[len(dl.Decisions)-1].Source.Node != "admin-1" {
		t.Fatalf("the leader's policy.write decisions %+v do not show the admin as the caller", dl.Decisions)
	}
	for _, n := range c.nodes {
		eventually(t, n.id+" holds the policy in its own state", func() error {
			var got api.Policy
			code, err := n.staleGet("/v1/policies/through-a-follower", &got)
			if err != nil || code != http.StatusOK || got.Revision != p.Revision {
				return fmt.Errorf("%d %v %+v", code, err, got)
			}
			return nil
		})
	}
	// Reads without ?stale are the leader's, from any node.
	if _, err := follower.admin().GetPolicy(timeout(t, 5*time.Second), "through-a-follower"); err != nil {
		t.Fatalf("linearizable read through %s: %v", follower.id, err)
	}

	t.Run("a client may not pass a forwarded chain itself", func(t *testing.T) {
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: l.tlsConfig(c.pki.tlsCert("admin", request(engine.MappingSPIFFE, engine.RoleAdmin, "admin-1")))}}
		defer hc.CloseIdleConnections()
		req, _ := http.NewRequest(http.MethodGet, "https://"+l.httpBind+"/v1/policies", nil)
		req.Header.Set("X-Coordinatord-Client-Chain", "AAAA")
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("status %d, want 403", resp.StatusCode)
		}
	})

	t.Run("the CLI shows the cluster from a list of addresses", func(t *testing.T) {
		adminCert, adminKey := c.pki.issue("admin", request(engine.MappingSPIFFE, engine.RoleAdmin, "admin-1"))
		addrs := "127.0.0.1:1," + follower.httpBind // the first is down
		env := []string{"COORDINATORD_CA=" + c.pki.caFile(), "COORDINATORD_CERT=" + adminCert, "COORDINATORD_KEY=" + adminKey}
		out, _ := mustCLI(t, env, 0, "cluster", "status", "--addr", addrs)
		for _, want := range []string{"leader:        " + l.id, "term:", "NODE", "node-1", "node-2", "node-3", "voter"} {
			if !strings.Contains(out, want) {
				t.Errorf("cluster status output lacks %q:\n%s", want, out)
			}
		}
		out, _ = mustCLI(t, env, 0, "cluster", "members", "--addr", addrs, "-o", "json")
		var ms []api.Member
		if err := json.Unmarshal([]byte(out), &ms); err != nil || len(ms) != 3 {
			t.Fatalf("cluster members -o json: %v\n%s", err, out)
		}
	})
}

func TestClusterSurvivesKill9OfTheLeaderAndTheNodeCatchesUp(t *testing.T) {
	c := startCluster(t, 3)
	old := c.Leader()
	if _, err := putAudit(timeout(t, 10*time.Second), c.node(old).admin(), "before-the-kill"); err != nil {
		t.Fatal(err)
	}
	others := c.multiClient(t, old)

	c.Kill9(old)
	killed := time.Now()
	// The client moves between the two survivors and retries their 503s
	// until one has become the leader and commits the write.
	p, err := putAudit(timeout(t, 30*time.Second), others, "after-the-kill")
	if err != nil {
		t.Fatalf("no write succeeded after killing the leader: %v", err)
	}
	failover := time.Since(killed)
	newLeader := c.WaitLeader(old)
	t.Logf("kill -9 of leader %s: new leader %s acknowledged a write %s later (election timeout 300ms)", c.node(old).id, c.node(newLeader).id, failover.Round(time.Millisecond))
	if failover > 15*time.Second {
		t.Errorf("failover took %s", failover)
	}

	c.Restart(old)
	eventually(t, "the restarted node has the write made while it was down", func() error {
		var got api.Policy
		code, err := c.node(old).staleGet("/v1/policies/after-the-kill", &got)
		if err != nil || code != http.StatusOK || got.Revision != p.Revision {
			return fmt.Errorf("%d %v", code, err)
		}
		return nil
	})
	if got := c.node(old).stderr.String(); !strings.Contains(got, "ignoring --join") && !strings.Contains(got, "bootstrap") {
		t.Logf("restart log does not mention --join or --bootstrap")
	}
	c.waitSameState(t)
}

func TestClusterNodeJoiningLateCatchesUpBySnapshot(t *testing.T) {
	c := startCluster(t, 3)
	cl := c.multiClient(t)
	// More than the snapshot threshold (64) plus the trailing logs (16):
	// the entries the joiner needs are compacted away.
	const writes = 100
	for k := range writes {
		if _, err := putAudit(timeout(t, 10*time.Second), cl, fmt.Sprintf("bulk-%d", k%10)); err != nil {
			t.Fatalf("write %d: %v", k, err)
		}
	}
	l := c.node(c.Leader())
	eventually(t, "the leader has taken a snapshot and compacted its log", func() error {
		if !strings.Contains(l.stderr.String(), "compacting logs") {
			return errors.New("no compaction logged yet")
		}
		return nil
	})
	before, err := l.status(false)
	if err != nil {
		t.Fatal(err)
	}
	j := c.node(c.Join())
	logs := j.stderr.String()
	if !strings.Contains(logs, "state restored from snapshot") {
		t.Fatalf("the joiner did not install a snapshot; its log:\n%s", tail(logs, 4000))
	}
	m := regexp.MustCompile(`"msg":"state restored from snapshot"[^\n]*"applied_index":(\d+)`).FindStringSubmatch(logs)
	if m == nil {
		t.Fatal("no applied index in the restore log line")
	}
	restored, _ := strconv.ParseUint(m[1], 10, 64)
	t.Logf("joiner %s installed a snapshot at applied index %d (leader's applied index before the join %d)", j.id, restored, before.AppliedIndex)
	if restored < 64 {
		t.Errorf("snapshot at applied index %d, want one past the threshold", restored)
	}
	state := c.waitSameState(t)
	if len(state) < 11 {
		t.Errorf("policy set %v, want default plus bulk-0..9", state)
	}
}

func TestClusterRemoveTakesANodeOut(t *testing.T) {
	c := startCluster(t, 3)
	l := c.Leader()
	victim := l%3 + 1
	adminCert, adminKey := c.pki.issue("admin", request(engine.MappingSPIFFE, engine.RoleAdmin, "admin-1"))
	env := []string{"COORDINATORD_CA=" + c.pki.caFile(), "COORDINATORD_CERT=" + adminCert, "COORDINATORD_KEY=" + adminKey}
	var addrs []string
	for _, n := range c.nodes {
		addrs = append(addrs, n.httpBind)
	}
	out, _ := mustCLI(t, env, 0, "cluster", "remove", c.node(victim).id, "--addr", strings.Join(addrs, ","))
	if !strings.Contains(out, "removed") {
		t.Fatalf("cluster remove said: %s", out)
	}
	c.Stop(victim)
	st, err := c.node(l).status(false)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Members) != 2 || slices.ContainsFunc(st.Members, func(m api.Member) bool { return m.ID == c.node(victim).id }) {
		t.Fatalf("members after removal: %+v", st.Members)
	}
	if _, err := putAudit(timeout(t, 10*time.Second), c.multiClient(t), "after-removal"); err != nil {
		t.Fatalf("the two remaining nodes do not accept writes: %v", err)
	}
	_, errOut, code := cli(t, env, "cluster", "remove", c.node(victim).id, "--addr", c.node(l).httpBind)
	if code == 0 || !strings.Contains(errOut, "not a member") {
		t.Fatalf("removing a removed node: exit %d, %s", code, errOut)
	}
}

func TestClusterPartitionedLeaderAcknowledgesNoWrite(t *testing.T) {
	c := startCluster(t, 3)
	old := c.Leader()
	if _, err := putAudit(timeout(t, 10*time.Second), c.node(old).admin(), "before-the-partition"); err != nil {
		t.Fatal(err)
	}

	c.Partition(old)
	cut := time.Now()
	// Writes sent straight to the isolated old leader: whether it still
	// believes it leads (its lease runs 150ms) or has stepped down, none may
	// succeed.
	var wg sync.WaitGroup
	isolatedErrs := make([]error, 3)
	for k := range isolatedErrs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(k) * 200 * time.Millisecond)
			_, isolatedErrs[k] = putAudit(timeout(t, 3*time.Second), c.node(old).admin(), fmt.Sprintf("isolated-%d", k))
		}()
	}
	newLeader := c.WaitLeader(old)
	t.Logf("partitioned leader %s; the majority elected %s within %s", c.node(old).id, c.node(newLeader).id, time.Since(cut).Round(time.Millisecond))
	p, err := putAudit(timeout(t, 10*time.Second), c.multiClient(t, old), "majority-write")
	if err != nil {
		t.Fatalf("the majority does not serve writes: %v", err)
	}
	wg.Wait()
	for k, err := range isolatedErrs {
		if err == nil {
			t.Errorf("write %d to the isolated old leader was acknowledged", k)
			continue
		}
		t.Logf("write %d to the isolated old leader: %v", k, err)
	}
	// A linearizable read on the isolated node cannot be served either.
	if _, err := c.node(old).admin().GetPolicy(timeout(t, 2*time.Second), "majority-write"); err == nil {
		t.Error("the isolated node answered a linearizable read")
	}

	c.Heal()
	eventually(t, "the old leader follows the new one", func() error {
		st, err := c.node(old).status(true)
		if err != nil {
			return err
		}
		if st.LeaderID != c.node(newLeader).id || st.RaftState != "Follower" {
			return fmt.Errorf("%s: state %s, leader %q", c.node(old).id, st.RaftState, st.LeaderID)
		}
		return nil
	})
	state := c.waitSameState(t)
	if _, ok := state["majority-write"]; !ok {
		t.Errorf("state after heal %v lacks the majority's write (revision %d)", state, p.Revision)
	}
	for id := range state {
		if strings.HasPrefix(id, "isolated-") {
			t.Errorf("a write refused by the isolated leader appeared after the heal: %s", id)
		}
	}
}

func TestClusterJoinRefusals(t *testing.T) {
	c := startCluster(t, 2)
	l := c.node(c.Leader())
	before, err := l.status(false)
	if err != nil {
		t.Fatal(err)
	}
	join := func(t *testing.T, cert tls.Certificate, req api.JoinRequest) *api.Error {
		t.Helper()
		cl, err := client.New(client.Config{Addr: l.httpBind, TLS: l.tlsConfig(cert), Timeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		_, err = cl.Join(timeout(t, 5*time.Second), req)
		var ae *api.Error
		if !errors.As(err, &ae) {
			t.Fatalf("join = %v, want an API error", err)
		}
		return ae
	}
	coordinator := func(p *pki.CA, node string) tls.Certificate {
		is, err := p.Issue(request(engine.MappingSPIFFE, engine.RoleCoordinator, node))
		if err != nil {
			t.Fatal(err)
		}
		cert, err := is.TLSCertificate()
		if err != nil {
			t.Fatal(err)
		}
		return cert
	}
	wrongCA, err := pki.NewCA("another CA", time.Now().Add(-time.Hour), 48*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	n2 := c.node(2)
	cases := []struct {
		name   string
		cert   tls.Certificate
		req    api.JoinRequest
		status int
		code   string
	}{
		{"a certificate from another CA is refused as untrusted", coordinator(wrongCA, "node-9"),
			api.JoinRequest{NodeID: "node-9", RaftAddr: "127.0.0.1:1", HTTPAddr: "127.0.0.1:2"}, 401, "identity_untrusted"},
		{"a member's id at other addresses is a duplicate", coordinator(c.pki.ca, n2.id),
			api.JoinRequest{NodeID: n2.id, RaftAddr: "127.0.0.1:1", HTTPAddr: "127.0.0.1:2"}, 409, "duplicate_node"},
		{"a node may not join as another node", coordinator(c.pki.ca, "node-5"),
			api.JoinRequest{NodeID: "node-6", RaftAddr: "127.0.0.1:1", HTTPAddr: "127.0.0.1:2"}, 403, "node_mismatch"},
		{"a worker may not join", c.pki.tlsCert("worker", request(engine.MappingSPIFFE, engine.RoleWorker, "node-7")),
			api.JoinRequest{NodeID: "node-7", RaftAddr: "127.0.0.1:1", HTTPAddr: "127.0.0.1:2"}, 403, "forbidden"},
		{"an unspecified advertise address is refused", coordinator(c.pki.ca, "node-8"),
			api.JoinRequest{NodeID: "node-8", RaftAddr: "0.0.0.0:1", HTTPAddr: "127.0.0.1:2"}, 400, "invalid_address"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ae := join(t, tc.cert, tc.req)
			if ae.Status != tc.status || ae.Code != tc.code {
				t.Fatalf("join = %d %s (%s), want %d %s", ae.Status, ae.Code, ae.Message, tc.status, tc.code)
			}
		})
	}
	t.Run("a repeated join of a member is answered and changes nothing", func(t *testing.T) {
		cl, err := client.New(client.Config{Addr: l.httpBind, TLS: l.tlsConfig(coordinator(c.pki.ca, n2.id)), Timeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		resp, err := cl.Join(timeout(t, 5*time.Second), api.JoinRequest{NodeID: n2.id, RaftAddr: n2.raftProxy.addr(), HTTPAddr: n2.httpProxy.addr()})
		if err != nil || !resp.AlreadyMember {
			t.Fatalf("repeated join = %+v, %v", resp, err)
		}
	})
	t.Run("a node process started with a member's id exits naming the conflict", func(t *testing.T) {
		n := c.addNode(n2.id)
		n.args = append(n.args, "--join", l.httpProxy.addr())
		c.run(n)
		select {
		case <-n.exited:
		case <-time.After(30 * time.Second):
			t.Fatal("the node with a duplicate id still runs after 30s")
		}
		n.running = false
		if !strings.Contains(n.stderr.String(), "duplicate_node") {
			t.Fatalf("its error does not name the conflict:\n%s", tail(n.stderr.String(), 2000))
		}
	})

	after, err := l.status(false)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.EqualFunc(before.Members, after.Members, func(a, b api.Member) bool {
		return a.ID == b.ID && a.RaftAddr == b.RaftAddr && a.HTTPAddr == b.HTTPAddr && a.Suffrage == b.Suffrage
	}) || after.LastIndex != before.LastIndex {
		t.Fatalf("refused joins changed the cluster:\nbefore %+v\nafter  %+v", before, after)
	}
}
