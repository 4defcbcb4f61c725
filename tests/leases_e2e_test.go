package tests

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coordinatord/coordinatord/api"
	"github.com/coordinatord/coordinatord/engine"
)

// electionTimeout is the cluster nodes' --raft-election-timeout
// (clusterTiming): a new leader extends every active lease by at most this.
const electionTimeout = 300 * time.Millisecond

// TestLeasesSurviveKill9OfTheLeader: leases acquired through a follower
// (forwarded to the leader); the leader is killed with SIGKILL. It logs the
// time from the kill to the first lease write a survivor acknowledges, and
// shows that every acknowledged lease is there with its token, that leases
// renewed every TTL/3 live through the failover, that leases left alone
// expire once and never before their TTL from their last acknowledged
// renewal (the extension a new leader grants is at most an election
// timeout), and that the killed node, restarted, holds the leader's leases.
func TestLeasesSurviveKill9OfTheLeader(t *testing.T) {
	c := startCluster(t, 3)
	old := c.Leader()
	follower := c.others(old)[0]
	w := c.watchLeases(t, follower)
	log := &leaseLog{}
	// Acquired through a follower, which forwards to the leader.
	gate := c.leaseCallerOf(t, log, engine.RoleGate, "gate-1", follower)
	if st, err := c.node(follower).status(true); err != nil || st.RaftState != "Follower" {
		t.Fatalf("%s: %+v %v, want a follower", c.node(follower).id, st, err)
	}

	// Kept leases are renewed every TTL/3 across the failover; short ones
	// are never renewed and run out before, during or after it.
	const keptTTL = 4 * time.Second
	shortTTLs := []time.Duration{time.Second, 1500 * time.Millisecond, 2 * time.Second, 2500 * time.Millisecond}
	kept := map[string]*api.Lease{}
	for k := range 3 {
		job := fmt.Sprintf("kept-%d", k)
		l, err := gate.acquire(timeout(t, 10*time.Second), job, keptTTL)
		if err != nil {
			t.Fatalf("acquire %s through follower %s: %v", job, c.node(follower).id, err)
		}
		if l.Owner != "gate-1" || l.Token != 1 || l.State != "active" {
			t.Fatalf("acquired %+v", l)
		}
		kept[job] = l
	}
	// The renewals go to any node, the killed one included (the client
	// moves on from it).
	renewer := c.leaseCallerOf(t, log, engine.RoleGate, "gate-1")
	kctx, stopKeeping := context.WithCancel(context.Background())
	defer stopKeeping()
	var keeping sync.WaitGroup
	stillHeld := map[string]bool{}
	var heldMu sync.Mutex
	for job, l := range kept {
		keeping.Add(1)
		go func() {
			defer keeping.Done()
			ok := renewer.keepAlive(kctx, *l, 0)
			heldMu.Lock()
			stillHeld[job] = ok
			heldMu.Unlock()
		}()
	}
	short := map[string]*api.Lease{}
	for k, ttl := range shortTTLs {
		job := fmt.Sprintf("short-%d", k)
		l, err := gate.acquire(timeout(t, 10*time.Second), job, ttl)
		if err != nil {
			t.Fatalf("acquire %s through follower %s: %v", job, c.node(follower).id, err)
		}
		short[job] = l
	}
	eventually(t, "every kept lease has been renewed", func() error {
		for job := range kept {
			if !hasAcked(log, "renew", job) {
				return fmt.Errorf("%s not renewed yet", job)
			}
		}
		return nil
	})

	c.Kill9(old)
	killed := time.Now()
	// Probe the survivors with single attempts (no client retries and
	// their back-off) until one acknowledges a lease write.
	survivors := c.others(old)
	probeCert := c.pki.tlsCert("gate-probe", request(engine.MappingSPIFFE, engine.RoleGate, "gate-probe"))
	var failover time.Duration
	var last error
	for k := 0; failover == 0; k++ {
		if time.Since(killed) > 30*time.Second {
			t.Fatalf("no lease write acknowledged within 30s of killing the leader: %v", last)
		}
		n := c.node(survivors[k%len(survivors)])
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		a, err := rawPost(ctx, n, probeCert, "/v1/leases/after-the-kill/acquire", `{"ttl":"30s"}`)
		cancel()
		switch {
		case err != nil:
			last = err
		case a.status != http.StatusOK:
			last = fmt.Errorf("%s: %d %s", n.id, a.status, strings.TrimSpace(string(a.body)))
		default:
			failover = time.Since(killed)
			continue
		}
		time.Sleep(20 * time.Millisecond) // the polling period
	}
	newLeader := c.WaitLeader(old)
	t.Logf("kill -9 of leader %s: a lease write was acknowledged through a survivor %s later (new leader %s, election timeout %s)",
		c.node(old).id, failover.Round(time.Millisecond), c.node(newLeader).id, electionTimeout)
	if failover > 10*time.Second {
		t.Errorf("failover took %s, want a few election timeouts", failover)
	}

	// Every acknowledged lease is there with its token: the kept ones
	// active, the short ones active or expired, none with another token.
	reader := c.leaseClient(t, engine.RoleGate, "gate-reader", survivors...)
	for job, l := range mergeLeases(kept, short) {
		got, err := reader.GetLease(timeout(t, 10*time.Second), job, false)
		if err != nil {
			t.Fatalf("read %s after the failover: %v", job, err)
		}
		if got.Token != l.Token || got.Owner != l.Owner || got.ExpiresAt.Before(l.ExpiresAt) {
			t.Errorf("%s after the failover: %+v, want token %d of %s expiring no earlier than %s", job, got, l.Token, l.Owner, l.ExpiresAt)
		}
		if _, isKept := kept[job]; isKept && got.State != "active" {
			t.Errorf("kept lease %s is %s after the failover: renewing every TTL/3 must carry it over a leader change", job, got.State)
		}
	}
	// Every short lease runs out, once.
	evs := waitEvents(t, w, "every short lease expired", func(evs []seenEvent) error {
		for job := range short {
			if countEvents(evs, job, "expired") == 0 {
				return fmt.Errorf("%s has not expired yet", job)
			}
		}
		return nil
	})

	// The kept leases are released; the stream shows it.
	stopKeeping()
	keeping.Wait()
	for job, l := range kept {
		if !stillHeld[job] {
			t.Errorf("the renewals of %s stopped: the lease was lost", job)
			continue
		}
		if _, err := renewer.release(timeout(t, 10*time.Second), job, l.Token); err != nil {
			t.Errorf("release %s: %v", job, err)
		}
	}
	marker, err := renewer.acquire(timeout(t, 10*time.Second), "marker", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	evs = w.waitIndex(t, marker.Index)
	st := checkLeaseHistory(t, evs, log.all())
	t.Logf("history: %s", st)
	for job := range mergeLeases(kept, short) {
		if n := countEvents(evs, job, "expired"); n > 1 {
			t.Errorf("%s expired %d times", job, n)
		}
	}
	for job := range kept {
		if n := countEvents(evs, job, "expired"); n != 0 {
			t.Errorf("kept lease %s expired", job)
		}
	}
	// A new leader may lengthen a lease by one election timeout, never
	// more: the short leases were never renewed, so their expiry is their
	// acquisition's plus at most that per promotion since.
	promotions := 0
	for _, i := range survivors {
		promotions += strings.Count(c.node(i).stderr.String(), "leader promotion committed")
	}
	for _, ev := range evs {
		l, ok := short[ev.Lease.JobID]
		if !ok || ev.Type != "expired" {
			continue
		}
		ext := ev.Lease.ExpiresAt.Sub(l.ExpiresAt)
		t.Logf("%s (ttl %s): expiry committed %s after its acknowledged expiry time; extended by %s",
			l.JobID, l.TTL, ev.Lease.EndedAt.Sub(l.ExpiresAt).Round(time.Millisecond), ext)
		if ext < 0 || ext > time.Duration(promotions)*electionTimeout {
			t.Errorf("%s: extended by %s over %d leader promotions of %s each", l.JobID, ext, promotions, electionTimeout)
		}
	}

	// The killed node comes back and catches up.
	c.Restart(old)
	leases := c.waitSameLeases(t)
	t.Logf("restarted %s holds the same %d leases as the leader", c.node(old).id, len(leases))
}

// TestLeasesPartitionedLeaderAcknowledgesNoLeaseWrite: the leader is cut
// off from the two others. Its clients' lease writes (acquire, renew,
// release) all fail, before and after it steps down, and so does a
// linearizable read there; the majority elects a leader that serves lease
// writes; after the heal the old leader follows, every node holds the same
// leases, and none of the refused writes appears.
func TestLeasesPartitionedLeaderAcknowledgesNoLeaseWrite(t *testing.T) {
	c := startCluster(t, 3)
	old := c.Leader()
	log := &leaseLog{}
	isolated := c.leaseCallerOf(t, log, engine.RoleGate, "gate-1", old)
	held, err := isolated.acquire(timeout(t, 10*time.Second), "held", 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}

	c.Partition(old)
	cut := time.Now()
	// Lease writes sent straight to the isolated old leader, while it may
	// still believe it leads (its leader lease is 150ms) and after it has
	// stepped down: none may succeed.
	acquire := func(job string) func(context.Context) (*api.Lease, error) {
		return func(ctx context.Context) (*api.Lease, error) { return isolated.acquire(ctx, job, 30*time.Second) }
	}
	writes := []struct {
		name string
		call func(context.Context) (*api.Lease, error)
	}{
		{"acquire isolated-0", acquire("isolated-0")},
		{"renew held", func(ctx context.Context) (*api.Lease, error) { return isolated.renew(ctx, "held", held.Token) }},
		{"acquire isolated-1", acquire("isolated-1")},
		{"release held", func(ctx context.Context) (*api.Lease, error) { return isolated.release(ctx, "held", held.Token) }},
	}
	errs := make([]error, len(writes))
	var wg sync.WaitGroup
	for k, wr := range writes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(k) * 150 * time.Millisecond) // spread over the step-down
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			_, errs[k] = wr.call(ctx)
		}()
	}
	newLeader := c.WaitLeader(old)
	t.Logf("partitioned leader %s; the majority elected %s within %s", c.node(old).id, c.node(newLeader).id, time.Since(cut).Round(time.Millisecond))
	majority := c.leaseCallerOf(t, log, engine.RoleGate, "gate-1", c.others(old)...)
	if _, err := majority.acquire(timeout(t, 10*time.Second), "majority", 30*time.Second); err != nil {
		t.Fatalf("the majority does not serve lease writes: %v", err)
	}
	renewed, err := majority.renew(timeout(t, 10*time.Second), "held", held.Token)
	if err != nil || renewed.Token != held.Token {
		t.Fatalf("renew through the majority: %+v %v", renewed, err)
	}
	wg.Wait()
	for k, err := range errs {
		if err == nil {
			t.Errorf("%s on the isolated old leader was acknowledged", writes[k].name)
			continue
		}
		t.Logf("%s on the isolated old leader: %v", writes[k].name, err)
	}
	// A linearizable lease read there fails too.
	if _, err := isolated.cl.GetLease(timeout(t, 2*time.Second), "majority", false); err == nil {
		t.Error("the isolated node answered a linearizable lease read")
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
	leases := c.waitSameLeases(t)
	got := map[string]api.Lease{}
	for _, l := range leases {
		got[l.JobID] = l
	}
	if l, ok := got["held"]; !ok || l.Token != held.Token || l.State != "active" || !l.ExpiresAt.Equal(renewed.ExpiresAt) {
		t.Errorf("held after the heal: %+v, want token %d active until %s (the majority's renewal)", l, held.Token, renewed.ExpiresAt)
	}
	if _, ok := got["majority"]; !ok {
		t.Error("the majority's lease is missing after the heal")
	}
	for job := range got {
		if strings.HasPrefix(job, "isolated-") {
			t.Errorf("a lease write refused by the isolated leader appeared after the heal: %s", job)
		}
	}
}

// TestLeasesFollowerReturnsTheLeadersRefusalVerbatim: bad lease writes sent
// to a follower (an unknown job, a missing or fenced token, another owner,
// a TTL out of bounds, a bad job id) get the leader's 4xx byte for byte,
// with the leader named in X-Coordinatord-Leader, and change nothing.
func TestLeasesFollowerReturnsTheLeadersRefusalVerbatim(t *testing.T) {
	c := startCluster(t, 3)
	l := c.node(c.Leader())
	f := c.node(c.others(l.i)[0])
	gate := c.leaseClient(t, engine.RoleGate, "gate-1", l.i)
	// job-a goes to token 2 (acquire, release, acquire), job-b has token 1.
	a1, err := gate.Acquire(timeout(t, 10*time.Second), "job-a", 30*time.Second, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := gate.Release(timeout(t, 10*time.Second), "job-a", a1.Token); err != nil {
		t.Fatal(err)
	}
	a2, err := gate.Acquire(timeout(t, 10*time.Second), "job-a", 30*time.Second, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := gate.Acquire(timeout(t, 10*time.Second), "job-b", 30*time.Second, false); err != nil {
		t.Fatal(err)
	}
	before := c.waitSameLeases(t)

	gateCert := c.pki.tlsCert("gate-1", request(engine.MappingSPIFFE, engine.RoleGate, "gate-1"))
	managerCert := c.pki.tlsCert("manager-1", request(engine.MappingSPIFFE, engine.RoleManager, "manager-1"))
	cases := []struct {
		name       string
		cert       tls.Certificate
		path, body string
		status     int
		code       string
	}{
		{"renewing a job that was never leased is not found", gateCert, "/v1/leases/never-leased/renew", `{"token":1}`, 404, "no_lease"},
		{"releasing a job that was never leased is not found", gateCert, "/v1/leases/never-leased/release", `{"token":1}`, 404, "no_lease"},
		{"a renewal without a token is refused", gateCert, "/v1/leases/job-a/renew", `{}`, 400, "missing_field"},
		{"a renewal with the token of another job is fenced", gateCert, "/v1/leases/job-b/renew", fmt.Sprintf(`{"token":%d}`, a2.Token), 409, "stale_token"},
		{"a release with an old token of the job is fenced", gateCert, "/v1/leases/job-a/release", fmt.Sprintf(`{"token":%d}`, a1.Token), 409, "stale_token"},
		{"a release by another owner is forbidden", managerCert, "/v1/leases/job-a/release", fmt.Sprintf(`{"token":%d}`, a2.Token), 403, "not_owner"},
		{"a huge TTL is refused", gateCert, "/v1/leases/job-c/acquire", `{"ttl":"1000h"}`, 400, "invalid_ttl"},
		{"a negative TTL is refused", gateCert, "/v1/leases/job-c/acquire", `{"ttl":"-5s"}`, 400, "invalid_ttl"},
		{"a job id with a space is refused", gateCert, "/v1/leases/bad%20job/acquire", `{"ttl":"10s"}`, 400, "invalid_job_id"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fromFollower, err := rawPost(timeout(t, 10*time.Second), f, tc.cert, tc.path, tc.body)
			if err != nil {
				t.Fatal(err)
			}
			fromLeader, err := rawPost(timeout(t, 10*time.Second), l, tc.cert, tc.path, tc.body)
			if err != nil {
				t.Fatal(err)
			}
			ae, ok := apiErrorOf(fromFollower)
			if fromFollower.status != tc.status || !ok || ae.Code != tc.code {
				t.Fatalf("through follower %s: %d %s, want %d %s", f.id, fromFollower.status, fromFollower.body, tc.status, tc.code)
			}
			if by := fromFollower.header.Get("X-Coordinatord-Leader"); by != l.id {
				t.Errorf("the follower's answer names leader %q, want %s", by, l.id)
			}
			if !sameAnswer(fromFollower, fromLeader) {
				t.Errorf("the follower's answer differs from the leader's:\nfollower %d %s\nleader   %d %s", fromFollower.status, fromFollower.body, fromLeader.status, fromLeader.body)
			}
		})
	}
	after := c.waitSameLeases(t)
	if d := diffLeases(after, before); d != "" {
		t.Errorf("refused lease writes changed the leases: %s", d)
	}
}

// --- small helpers --------------------------------------------------------------

func hasAcked(log *leaseLog, kind, job string) bool {
	for _, op := range log.acked() {
		if op.kind == kind && op.job == job {
			return true
		}
	}
	return false
}

func mergeLeases(ms ...map[string]*api.Lease) map[string]*api.Lease {
	out := map[string]*api.Lease{}
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

func countEvents(evs []seenEvent, job, typ string) int {
	n := 0
	for _, ev := range evs {
		if ev.Lease.JobID == job && ev.Type == typ {
			n++
		}
	}
	return n
}

// waitEvents polls the watcher until cond accepts what it received.
func waitEvents(t *testing.T, w *leaseWatcher, what string, cond func([]seenEvent) error) []seenEvent {
	t.Helper()
	var evs []seenEvent
	eventually(t, what, func() error {
		var err error
		if evs, err = w.snapshot(); err != nil {
			t.Fatalf("the watch stream ended: %v", err)
		}
		return cond(evs)
	})
	return evs
}
