package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coordinatord/coordinatord/api"
	"github.com/coordinatord/coordinatord/engine"
	"github.com/coordinatord/coordinatord/raftstore"
	"github.com/coordinatord/coordinatord/swim"
)

// Tests of the correlation engine in the server: in-process nodes whose
// gossip membership is a fake the test drives, and whose clock is a fake
// the test moves. Raft runs on real time; the engine, the expiry loop and
// the leases run on the fake clock.

// testClock is a node clock that moves only when the test says so.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func newTestClock() *testClock { return &testClock{now: time.Now()} }

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// fakeMembership is a swim.Membership the test drives: set changes a
// member's state and emits its event, as swim does.
type fakeMembership struct {
	clock  func() time.Time
	mu     sync.Mutex
	byName map[string]swim.Member
	seq    uint64
	events chan swim.Event
	rtts   chan swim.RTTSample
}

var _ swim.Membership = (*fakeMembership)(nil)

func newFakeMembership(clock func() time.Time) *fakeMembership {
	return &fakeMembership{clock: clock, byName: map[string]swim.Member{},
		events: make(chan swim.Event, 1024), rtts: make(chan swim.RTTSample, 1024)}
}

func (f *fakeMembership) set(name, dc string, role swim.Role, state swim.State) {
	f.mu.Lock()
	defer f.mu.Unlock()
	prev := f.byName[name]
	m := swim.Member{Name: name, Addr: "127.0.0.1:7946", Meta: swim.Meta{NodeID: name, Datacenter: dc, Role: role, Version: "test"}, State: state}
	f.byName[name] = m
	f.seq++
	f.events <- swim.Event{Seq: f.seq, At: f.clock(), Member: m, State: state, Previous: prev.State}
}

func (f *fakeMembership) Members() []swim.Member {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]swim.Member, 0, len(f.byName))
	for _, m := range f.byName {
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (f *fakeMembership) Events() <-chan swim.Event   { return f.events }
func (f *fakeMembership) RTTs() <-chan swim.RTTSample { return f.rtts }
func (f *fakeMembership) LocalHealth() int            { return 0 }
func (f *fakeMembership) rtt(dc string, d time.Duration) {
	f.rtts <- swim.RTTSample{At: f.clock(), Node: dc + "-a1", Datacenter: dc, RTT: d}
}

// pool is the gossip pool of a test: two agents in each of dc1..dc5, seen
// alike by every node's fake membership.
type pool struct {
	views []*fakeMembership
}

var poolDCs = []string{"dc1", "dc2", "dc3", "dc4", "dc5"}

func agentsOf(dc string) []string { return []string{dc + "-a1", dc + "-a2"} }

func (p *pool) add(v *fakeMembership) {
	for _, dc := range poolDCs {
		for _, a := range agentsOf(dc) {
			v.set(a, dc, swim.RoleAgent, swim.StateAlive)
		}
	}
	p.views = append(p.views, v)
}

func (p *pool) setDCs(state swim.State, dcs ...string) {
	for _, v := range p.views {
		for _, dc := range dcs {
			for _, a := range agentsOf(dc) {
				v.set(a, dc, swim.RoleAgent, state)
			}
		}
	}
}

func (p *pool) dark(dcs ...string)  { p.setDCs(swim.StateDead, dcs...) }
func (p *pool) light(dcs ...string) { p.setDCs(swim.StateAlive, dcs...) }

// testCorrelation is a fast engine: failures confirmed after 2s, recoveries
// after 5s (of the fake clock), ticking every 10ms of real time.
func testCorrelation(clk *testClock, ms swim.Membership) func(*Config) {
	return func(cfg *Config) {
		cfg.Clock = clk.Now
		cfg.Membership = ms
		cfg.Correlation.FailureConfirmation = 2 * time.Second
		cfg.Correlation.RecoveryConfirmation = 5 * time.Second
		cfg.CorrelationInterval = 10 * time.Millisecond
	}
}

// corrNode is a single node with the fake pool.
func corrNode(t *testing.T) (*testNode, *testClock, *pool) {
	t.Helper()
	clk := newTestClock()
	p := &pool{}
	ms := newFakeMembership(clk.Now)
	p.add(ms)
	n := startNodeWith(t, testCorrelation(clk, ms))
	waitRecord(t, n.srv, "the first record lists the datacenters", func(r *raftstore.CorrelationRecord) bool {
		return len(r.Datacenters) == len(poolDCs)
	})
	return n, clk, p
}

// waitRecord waits until the node's committed record satisfies cond.
func waitRecord(t *testing.T, s *Server, what string, cond func(*raftstore.CorrelationRecord) bool) *raftstore.CorrelationRecord {
	t.Helper()
	var rec *raftstore.CorrelationRecord
	waitFor(t, what, func() bool {
		rec = s.Store().Correlation()
		return rec != nil && cond(rec)
	})
	return rec
}

func dcState(r *raftstore.CorrelationRecord, dc string) engine.DCState {
	for _, d := range r.Datacenters {
		if d.Name == dc {
			return d.State
		}
	}
	return ""
}

func statesAre(state engine.DCState, dcs ...string) func(*raftstore.CorrelationRecord) bool {
	return func(r *raftstore.CorrelationRecord) bool {
		for _, dc := range dcs {
			if dcState(r, dc) != state {
				return false
			}
		}
		return true
	}
}

func countCorrEvents(r *raftstore.CorrelationRecord, typ engine.CorrelationEventType) int {
	n := 0
	for _, ev := range r.Events {
		if ev.Type == typ {
			n++
		}
	}
	return n
}

// startPartition darkens dcs and moves the clock past the failure
// confirmation, and returns the record with the episode.
func startPartition(t *testing.T, s *Server, clk *testClock, p *pool, dcs ...string) *raftstore.CorrelationRecord {
	t.Helper()
	p.dark(dcs...)
	// Wait until the engine has seen the members die before moving the
	// clock, so that the confirmation counts from their death.
	waitRecord(t, s, "the datacenters are failing", statesAre(engine.DCFailing, dcs...))
	clk.Advance(3 * time.Second)
	return waitRecord(t, s, "partition_detected", func(r *raftstore.CorrelationRecord) bool { return r.Episode != nil })
}

func leaseIn(t *testing.T, s *Server, job, dc string, ttl time.Duration) engine.Lease {
	t.Helper()
	l, err := s.Store().AcquireLease(ctx(t), engine.AcquireRequest{JobID: job, Owner: "gate-" + dc, OwnerID: "spiffe://x/" + dc, OwnerDC: dc, TTL: ttl})
	if err != nil {
		t.Fatalf("acquire %s in %s: %v", job, dc, err)
	}
	return l
}

func leaseNow(t *testing.T, s *Server, job string) engine.Lease {
	t.Helper()
	l, err := s.Store().Lease(job)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func waitLeaseState(t *testing.T, s *Server, job string, want engine.LeaseState) {
	t.Helper()
	waitFor(t, job+" is "+string(want), func() bool { return leaseNow(t, s, job).State == want })
}

// logged reports whether logs (JSON lines) have a record with message msg
// whose attributes include the given key/value pairs (values compared as
// their JSON).
func logged(logs, msg string, kv ...string) bool {
	for _, line := range strings.Split(logs, "\n") {
		var rec map[string]json.RawMessage
		if json.Unmarshal([]byte(line), &rec) != nil {
			continue
		}
		var m string
		if json.Unmarshal(rec["msg"], &m) != nil || m != msg {
			continue
		}
		ok := true
		for i := 0; i+1 < len(kv); i += 2 {
			if string(rec[kv[i]]) != kv[i+1] {
				ok = false
			}
		}
		if ok {
			return true
		}
	}
	return false
}

const msgHeld = "lease expiry held: its owner's datacenter may be cut off rather than dead"

// leaseTTL is the TTL of the tests' leases, in the fake clock's time.
const leaseTTL = 10 * time.Second

func TestAPartitionOfThreeDatacentersHoldsTheirLeasesUntilItHealsThenGivesThemAGrace(t *testing.T) {
	n, clk, p := corrNode(t)
	s := n.srv
	ttl := leaseTTL
	for _, dc := range []string{"dc3", "dc4", "dc5"} {
		leaseIn(t, s, "job-"+dc, dc, ttl)
	}
	keep := leaseIn(t, s, "job-keep", "dc3", ttl)
	leaseIn(t, s, "job-ok", "dc2", ttl) // a healthy datacenter: expires on time

	rec := startPartition(t, s, clk, p, "dc3", "dc4", "dc5")
	if !slices.Equal(rec.Held, []string{"dc3", "dc4", "dc5"}) || rec.Severity != engine.SeverityMedium || rec.Decision.Source != raftstore.DecisionBuiltIn {
		t.Fatalf("record at detection: %+v", rec)
	}
	if !rec.HoldUntil.Equal(rec.Episode.DetectedAt.Add(raftstore.DefaultMaxLeaseHold)) {
		t.Errorf("hold until %s, want the detection plus the maximum hold", rec.HoldUntil)
	}

	// Past every TTL: the healthy datacenter's lease expires, the held ones
	// do not.
	clk.Advance(2 * ttl)
	waitLeaseState(t, s, "job-ok", engine.LeaseExpired)
	waitFor(t, "the expiry loop holds the three leases", func() bool {
		logs := n.logs.String()
		for _, dc := range []string{"dc3", "dc4", "dc5"} {
			if !logged(logs, msgHeld, "job_id", `"job-`+dc+`"`) {
				return false
			}
		}
		return true
	})
	for _, job := range []string{"job-dc3", "job-dc4", "job-dc5", "job-keep"} {
		if l := leaseNow(t, s, job); l.State != engine.LeaseActive {
			t.Fatalf("%s is %s during the partition", job, l.State)
		}
	}
	if !logged(n.logs.String(), "leases held: their datacenters may be cut off rather than dead; they are not expired until the cap",
		"datacenters", `["dc3","dc4","dc5"]`, "job_ids", `["job-dc3","job-dc4","job-dc5","job-keep"]`) {
		t.Error("no episode-level log line of the hold")
	}

	// The API and the metrics show it.
	dcs, err := n.client(engine.RoleManager).Datacenters(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	c := dcs.Committed
	if c.Severity != "medium" || !c.DelayEviction || c.Episode == nil || c.Episode.ID != rec.Episode.ID ||
		strings.Join(c.HeldDatacenters, ",") != "dc3,dc4,dc5" || len(c.HeldLeases) != 4 || !c.HeldLeases[0].Overdue {
		t.Errorf("GET /v1/datacenters committed view: %+v", c)
	}
	for _, d := range dcs.Datacenters {
		wantDead := map[bool]int{true: 2, false: 0}[slices.Contains([]string{"dc3", "dc4", "dc5"}, d.Name)]
		if d.Local.Dead != wantDead || d.Held != (wantDead == 2) {
			t.Errorf("datacenter %+v", d)
		}
	}
	members, err := n.client(engine.RoleWorker).GossipMembers(ctx(t))
	if err != nil || !members.Gossip || len(members.Members) != 10 {
		t.Errorf("GET /v1/members: %+v, %v", members, err)
	}
	metrics := scrape(t, n)
	for _, line := range []string{
		"coordinatord_correlation_episode_active 1",
		`coordinatord_correlation_severity{severity="medium"} 1`,
		`coordinatord_datacenter_state{datacenter="dc3",state="failed"} 1`,
		`coordinatord_datacenter_state{datacenter="dc2",state="healthy"} 1`,
		"coordinatord_leases_held 4",
		"coordinatord_leases_held_overdue 4",
	} {
		if !strings.Contains(metrics, line+"\n") {
			t.Errorf("metrics lack %q", line)
		}
	}

	// The partition heals: the holds end with a grace of one TTL.
	p.light("dc3", "dc4", "dc5")
	healedAt := clk.Now()
	rec = waitRecord(t, s, "partition_healed", func(r *raftstore.CorrelationRecord) bool { return r.Episode == nil })
	if len(rec.Held) != 0 || countCorrEvents(rec, engine.EventPartitionDetected) != 1 || countCorrEvents(rec, engine.EventPartitionHealed) != 1 {
		t.Fatalf("record after the heal: %+v", rec)
	}
	for _, job := range []string{"job-dc3", "job-dc4", "job-dc5", "job-keep"} {
		if l := leaseNow(t, s, job); l.State != engine.LeaseActive || !l.ExpiresAt.Equal(healedAt.Add(ttl)) {
			t.Fatalf("%s after the heal: %s until %s, want active until %s", job, l.State, l.ExpiresAt, healedAt.Add(ttl))
		}
	}
	if !logged(n.logs.String(), "lease holds released: each active lease of these datacenters gets one TTL to be renewed before it can expire",
		"datacenters", `["dc3","dc4","dc5"]`, "job_ids", `["job-dc3","job-dc4","job-dc5","job-keep"]`) {
		t.Error("no log line of the release")
	}

	// The owner of job-keep renews it; the others are abandoned and expire
	// when their grace ends.
	clk.Advance(ttl / 2)
	if _, err := s.Store().RenewLease(ctx(t), engine.RenewRequest{JobID: "job-keep", Owner: keep.Owner, Token: keep.Token}); err != nil {
		t.Fatalf("renew after the heal: %v", err)
	}
	clk.Advance(ttl/2 + time.Second)
	for _, dc := range []string{"dc3", "dc4", "dc5"} {
		waitLeaseState(t, s, "job-"+dc, engine.LeaseExpired)
	}
	if l := leaseNow(t, s, "job-keep"); l.State != engine.LeaseActive || l.Token != keep.Token {
		t.Fatalf("the renewed lease: %+v", l)
	}
}

func TestOneDatacenterFailingAloneIsNotAPartitionAndItsLeasesExpireOnTime(t *testing.T) {
	n, clk, p := corrNode(t)
	s := n.srv
	leaseIn(t, s, "job-alone", "dc3", leaseTTL)
	p.dark("dc3")
	waitRecord(t, s, "dc3 failing", statesAre(engine.DCFailing, "dc3"))
	clk.Advance(3 * time.Second)
	rec := waitRecord(t, s, "dc3 failed", statesAre(engine.DCFailed, "dc3"))
	if rec.Episode != nil || len(rec.Held) != 0 || rec.Severity != engine.SeverityNone {
		t.Fatalf("one failed datacenter: %+v", rec)
	}
	// Exactly at its expiry, the lease expires: nothing holds it.
	l := leaseNow(t, s, "job-alone")
	clk.Advance(l.ExpiresAt.Sub(clk.Now()))
	waitLeaseState(t, s, "job-alone", engine.LeaseExpired)
	if got := leaseNow(t, s, "job-alone"); !got.EndedAt.Equal(got.ExpiresAt) {
		t.Errorf("expired at %s, want at its expiry %s", got.EndedAt, got.ExpiresAt)
	}
	if logged(n.logs.String(), msgHeld, "job_id", `"job-alone"`) {
		t.Error("the lease of a lone failed datacenter was held")
	}
}

// padNote builds a correlation output of exactly n bytes with a note.
func padNote(t *testing.T, prefix string, n int) string {
	t.Helper()
	const suffix = `"]}`
	note := n - len(prefix) - len(suffix)
	if note < 1 {
		t.Fatalf("output prefix %q too long for %d bytes", prefix, n)
	}
	return prefix + strings.Repeat(".", note) + suffix
}

// watCorrelationOutput is the answer compiled into wat/correlation.wasm.
const watCorrelationOutput = `{"hold":true,"notes":["wat-correlation: holding the affected datacenters"]}`

func TestACorrelationModuleThatNarrowsTheHeldSetIsObeyed(t *testing.T) {
	n, clk, p := corrNode(t)
	s := n.srv
	narrow := padNote(t, `{"hold":true,"datacenters":["dc3"],"notes":["only dc3 is cut off`, len(watCorrelationOutput))
	putModuleAs(t, n, "narrow", "correlation", patched(t, moduleFile(t, "wat/correlation.wasm"), watCorrelationOutput, narrow))
	for _, dc := range []string{"dc3", "dc4"} {
		leaseIn(t, s, "job-"+dc, dc, leaseTTL)
	}
	rec := startPartition(t, s, clk, p, "dc3", "dc4", "dc5")
	if !slices.Equal(rec.Held, []string{"dc3"}) || rec.Decision.Source != raftstore.DecisionModules ||
		!slices.Equal(rec.Decision.Modules, []string{"narrow"}) || len(rec.Decision.Notes) != 1 || !strings.HasPrefix(rec.Decision.Notes[0], "narrow: only dc3 is cut off") {
		t.Fatalf("record: held %v, decision %+v", rec.Held, rec.Decision)
	}
	clk.Advance(2 * leaseTTL)
	waitLeaseState(t, s, "job-dc4", engine.LeaseExpired)
	if l := leaseNow(t, s, "job-dc3"); l.State != engine.LeaseActive {
		t.Fatalf("job-dc3 is %s; the module held dc3", l.State)
	}
	if !logged(n.logs.String(), "correlation module answered", "module", `"narrow"`, "hold", "true", "datacenters", `["dc3"]`) {
		t.Error("the module's answer is not logged")
	}
}

// A module may hold more than the episode's datacenters (here dc2, which
// gossip still sees healthy): the held set is what it says, within the
// cap.
func TestACorrelationModuleThatWidensTheHeldSetIsObeyed(t *testing.T) {
	n, clk, p := corrNode(t)
	s := n.srv
	widen := padNote(t, `{"hold":true,"datacenters":["dc2","dc3","dc4","dc5"],"notes":["uplink`, len(watCorrelationOutput))
	putModuleAs(t, n, "widen", "correlation", patched(t, moduleFile(t, "wat/correlation.wasm"), watCorrelationOutput, widen))
	for _, dc := range []string{"dc1", "dc2", "dc4"} {
		leaseIn(t, s, "job-"+dc, dc, leaseTTL)
	}
	rec := startPartition(t, s, clk, p, "dc3", "dc4", "dc5")
	if !slices.Equal(rec.Held, []string{"dc2", "dc3", "dc4", "dc5"}) || rec.Decision.Source != raftstore.DecisionModules ||
		!slices.Equal(rec.Decision.Modules, []string{"widen"}) {
		t.Fatalf("record: held %v, decision %+v; want the module's four datacenters", rec.Held, rec.Decision)
	}
	clk.Advance(2 * leaseTTL)
	waitLeaseState(t, s, "job-dc1", engine.LeaseExpired)
	for _, job := range []string{"job-dc2", "job-dc4"} {
		waitFor(t, "the expiry loop holds "+job, func() bool {
			return logged(n.logs.String(), msgHeld, "job_id", `"`+job+`"`)
		})
		if l := leaseNow(t, s, job); l.State != engine.LeaseActive {
			t.Fatalf("%s is %s; the module held its datacenter", job, l.State)
		}
	}
}

// An output that breaks the schema is no vote: the built-in decision
// (hold the episode's datacenters) stands, and the defect is logged with
// the module, the field and the event's datacenters.
func TestACorrelationModuleWithAnInvalidOutputFallsBackToTheBuiltInDecision(t *testing.T) {
	const (
		invalid = "correlation module answered invalidly; the built-in decision is used for it"
		failed  = "correlation module failed; the built-in decision is used for it"
	)
	for _, tc := range []struct {
		name, output, msg, field string
	}{
		{"unknown datacenter", `{"hold":true,"datacenters":["dc9"],"notes":["`, invalid, `datacenters[0]`},
		{"hold not a boolean", `{"hold":"yes","notes":["`, invalid, `hold`},
		{"unknown field", `{"hold":false,"evict":true,"notes":["`, invalid, `evict`},
		// The sandbox refuses output that is not JSON at the host call.
		{"not JSON", `{"hold":false,,"notes":["`, failed, `not valid JSON`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, clk, p := corrNode(t)
			s := n.srv
			bad := padNote(t, tc.output, len(watCorrelationOutput))
			putModuleAs(t, n, "bad", "correlation", patched(t, moduleFile(t, "wat/correlation.wasm"), watCorrelationOutput, bad))
			leaseIn(t, s, "job-dc4", "dc4", leaseTTL)
			rec := startPartition(t, s, clk, p, "dc3", "dc4", "dc5")
			if !slices.Equal(rec.Held, []string{"dc3", "dc4", "dc5"}) || rec.Decision.Source != raftstore.DecisionBuiltIn {
				t.Fatalf("record: held %v, decision %+v; want the built-in decision", rec.Held, rec.Decision)
			}
			logs := n.logs.String()
			if !logged(logs, tc.msg, "module", `"bad"`,
				"datacenters", `["dc3","dc4","dc5"]`, "job_ids", `["job-dc4"]`) {
				t.Errorf("no log line of the invalid answer:\n%s", logs)
			}
			if tc.field != "" && !strings.Contains(logs, tc.field) {
				t.Errorf("the logs do not name the bad field %q:\n%s", tc.field, logs)
			}
			clk.Advance(2 * leaseTTL)
			waitFor(t, "the expiry loop holds job-dc4", func() bool {
				return logged(n.logs.String(), msgHeld, "job_id", `"job-dc4"`)
			})
		})
	}
}

func TestATrappingCorrelationModuleFallsBackToTheBuiltInDecision(t *testing.T) {
	n, clk, p := corrNode(t)
	s := n.srv
	// unreachable.wasm traps in every handler; exported as the correlation
	// handler it is a correlation module that always traps.
	trapping := patched(t, moduleFile(t, "wat/unreachable.wasm"), "coordinatord_on_lease_event", "coordinatord_on_correlation")
	putModuleAs(t, n, "trapping", "correlation", trapping)
	leaseIn(t, s, "job-dc4", "dc4", leaseTTL)
	rec := startPartition(t, s, clk, p, "dc3", "dc4", "dc5")
	if !slices.Equal(rec.Held, []string{"dc3", "dc4", "dc5"}) || rec.Decision.Source != raftstore.DecisionBuiltIn {
		t.Fatalf("record: held %v, decision %+v; want the built-in decision", rec.Held, rec.Decision)
	}
	logs := n.logs.String()
	if !logged(logs, "correlation module failed; the built-in decision is used for it", "module", `"trapping"`, "failure", `"trap"`,
		"datacenters", `["dc3","dc4","dc5"]`, "job_ids", `["job-dc4"]`) {
		t.Errorf("no log line of the module's failure:\n%s", logs)
	}
	// The sandbox's trap report names the datacenters and the jobs.
	if !strings.Contains(logs, `"handler":"coordinatord_on_correlation"`) || !strings.Contains(logs, `"datacenters":["dc3","dc4","dc5"]`) {
		t.Errorf("no trap report with the datacenters:\n%s", logs)
	}
	clk.Advance(2 * leaseTTL)
	waitFor(t, "the expiry loop holds job-dc4", func() bool {
		return logged(n.logs.String(), msgHeld, "job_id", `"job-dc4"`)
	})
	if l := leaseNow(t, s, "job-dc4"); l.State != engine.LeaseActive {
		t.Fatalf("job-dc4 is %s", l.State)
	}
}

// A reporter that exports the correlation handler gets the same event the
// correlation modules get.
func TestAReporterReceivesTheCorrelationEvents(t *testing.T) {
	n, clk, p := corrNode(t)
	s := n.srv
	putReporter(t, n.client(engine.RoleAdmin), "partitions", moduleFile(t, "go-reporter/go-reporter.wasm"), "results=file:partitions.jsonl")
	leaseIn(t, s, "job-dc4", "dc4", leaseTTL)
	rec := startPartition(t, s, clk, p, "dc3", "dc4", "dc5")
	var lines []string
	correlationLines := func() []string {
		var out []string
		for _, l := range sinkLines(t, n, "partitions.jsonl") {
			if strings.HasPrefix(l, `{"event":"correlation"`) { // the reporter records lease events too
				out = append(out, l)
			}
		}
		return out
	}
	deadline := time.Now().Add(10 * time.Second)
	for lines = correlationLines(); len(lines) == 0; lines = correlationLines() {
		if time.Now().After(deadline) {
			t.Fatalf("no record of the correlation event in the reporter's sink; logs:\n%s", n.logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	want := fmt.Sprintf(`{"event":"correlation","type":"partition_detected","episode":%q,"severity":"medium",`+
		`"previous_severity":"none","affected_datacenters":["dc3","dc4","dc5"],"healthy_datacenters":["dc1","dc2"],`+
		`"held_jobs":["job-dc4"],"held_leases":[{"job_id":"job-dc4","owner":"gate-dc4","owner_dc":"dc4","token":1}],`, rec.Episode.ID)
	if !strings.HasPrefix(lines[0], want) {
		t.Errorf("record\n%s\nwant prefix\n%s", lines[0], want)
	}
}

func putModuleAs(t *testing.T, n *testNode, name, kind string, wasm []byte) {
	t.Helper()
	if status, body := n.putModuleRaw(name, "kind="+kind, wasm); status != http.StatusOK && status != http.StatusCreated {
		t.Fatalf("upload %s: %d %s", name, status, body)
	}
}

func scrape(t *testing.T, n *testNode) string {
	t.Helper()
	status, body := n.raw(engine.RoleAdmin, http.MethodGet, "/metrics", "", nil)
	if status != http.StatusOK {
		t.Fatalf("GET /metrics: %d", status)
	}
	return string(body)
}

// threeCorrNodes is a three-node cluster, each node with its own fake view
// of one pool, on one fake clock.
func threeCorrNodes(t *testing.T) ([]*peerNode, *testClock, *pool) {
	t.Helper()
	clk := newTestClock()
	p := &pool{}
	ca := newCA(t)
	var nodes []*peerNode
	for i, id := range []string{"node-1", "node-2", "node-3"} {
		ms := newFakeMembership(clk.Now)
		p.add(ms)
		n := startPeerWith(t, ca, id, i == 0, testCorrelation(clk, ms))
		nodes = append(nodes, n)
		if i == 0 {
			waitFor(t, "node-1 leads and has registered itself", func() bool {
				_, err := n.srv.Store().Member("node-1")
				return n.srv.Store().IsLeader() && err == nil
			})
			continue
		}
		if err := n.srv.JoinCluster(ctx(t), []string{nodes[0].srv.Addr()}); err != nil {
			t.Fatal(err)
		}
		if err := n.srv.WaitReady(ctx(t)); err != nil {
			t.Fatal(err)
		}
	}
	return nodes, clk, p
}

func TestANewLeaderContinuesTheEpisodeAndItsHolds(t *testing.T) {
	nodes, clk, p := threeCorrNodes(t)
	leader := nodes[0].srv
	leaseIn(t, leader, "job-dc4", "dc4", leaseTTL)
	rec := startPartition(t, leader, clk, p, "dc3", "dc4", "dc5")
	episode := rec.Episode.ID
	for _, n := range nodes[1:] {
		waitRecord(t, n.srv, n.id+" has the episode", func(r *raftstore.CorrelationRecord) bool { return r.Episode != nil && r.Episode.ID == episode })
	}

	// The leader goes away during the episode.
	before := leader.Store().Correlation()
	if err := leader.Close(); err != nil {
		t.Fatal(err)
	}
	var next *peerNode
	waitFor(t, "a new leader", func() bool {
		for _, n := range nodes[1:] {
			if n.srv.Store().IsLeader() {
				next = n
				return true
			}
		}
		return false
	})
	waitFor(t, "the new leader runs the engine", func() bool {
		return strings.Contains(next.logs.String(), `"restored_episode":"`+episode+`"`)
	})
	// Past the lease's TTL, the new leader holds it too.
	clk.Advance(2 * leaseTTL)
	waitFor(t, "the new leader's expiry loop holds job-dc4", func() bool {
		return logged(next.logs.String(), msgHeld, "job_id", `"job-dc4"`)
	})
	if l := leaseNow(t, next.srv, "job-dc4"); l.State != engine.LeaseActive {
		t.Fatalf("job-dc4 is %s under the new leader", l.State)
	}
	rec = waitRecord(t, next.srv, "a record by the new leader", func(r *raftstore.CorrelationRecord) bool { return r.Leader == next.id })
	if rec.Episode == nil || rec.Episode.ID != episode || !slices.Equal(rec.Held, []string{"dc3", "dc4", "dc5"}) || countCorrEvents(rec, engine.EventPartitionDetected) != 1 {
		t.Fatalf("the new leader's record: episode %+v held %v, %d partition_detected", rec.Episode, rec.Held, countCorrEvents(rec, engine.EventPartitionDetected))
	}
	// The datacenters keep their states and since times: the new leader's
	// view is the same (the fake pool does not show node-1 going away).
	for i, d := range rec.Datacenters {
		if b := before.Datacenters[i]; d.Name != b.Name || d.State != b.State || !d.Since.Equal(b.Since) {
			t.Errorf("%s was %s since %s, is %s since %s after the leader change", d.Name, b.State, b.Since, d.State, d.Since)
		}
	}
	for _, ev := range rec.Events[len(before.Events):] {
		if ev.Type == engine.EventDCStateChanged {
			t.Errorf("the new leader reported %+v", ev)
		}
	}

	// It also ends the episode, once.
	p.light("dc3", "dc4", "dc5")
	rec = waitRecord(t, next.srv, "partition_healed", func(r *raftstore.CorrelationRecord) bool { return r.Episode == nil })
	if countCorrEvents(rec, engine.EventPartitionDetected) != 1 || countCorrEvents(rec, engine.EventPartitionHealed) != 1 {
		t.Fatalf("events after the heal: %+v", rec.Events)
	}
	if l := leaseNow(t, next.srv, "job-dc4"); l.State != engine.LeaseActive || !l.ExpiresAt.After(clk.Now()) {
		t.Fatalf("job-dc4 after the heal: %+v, want a grace", l)
	}
}

func TestANodeWithoutGossipAnswersWithAnEmptyView(t *testing.T) {
	n := startNode(t)
	dcs, err := n.client(engine.RoleAdmin).Datacenters(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if dcs.Local.Gossip || dcs.Committed.Revision != 0 || dcs.Committed.Severity != "none" || len(dcs.Datacenters) != 0 {
		t.Errorf("%+v", dcs)
	}
	var ae *api.Error
	// datacenter.read is for the job roles and admins, not for other
	// coordinators.
	_, err = n.client(engine.RoleCoordinator).GossipMembers(ctx(t))
	if !errors.As(err, &ae) || ae.Status != http.StatusForbidden {
		t.Errorf("a coordinator reading members: %v, want 403", err)
	}
}

func TestHeldLeasesExpireWhenTheCapIsReached(t *testing.T) {
	clk := newTestClock()
	p := &pool{}
	ms := newFakeMembership(clk.Now)
	p.add(ms)
	n := startNodeWith(t, func(cfg *Config) {
		testCorrelation(clk, ms)(cfg)
		cfg.Raft.MaxLeaseHold = time.Minute
	})
	s := n.srv
	waitRecord(t, s, "the first record", func(r *raftstore.CorrelationRecord) bool { return len(r.Datacenters) == len(poolDCs) })
	leaseIn(t, s, "job-dc4", "dc4", leaseTTL)
	rec := startPartition(t, s, clk, p, "dc3", "dc4", "dc5")
	if want := rec.Episode.DetectedAt.Add(time.Minute); !rec.HoldUntil.Equal(want) {
		t.Fatalf("hold until %s, want %s", rec.HoldUntil, want)
	}
	clk.Advance(2 * leaseTTL)
	waitFor(t, "job-dc4 held", func() bool { return logged(n.logs.String(), msgHeld, "job_id", `"job-dc4"`) })
	if l := leaseNow(t, s, "job-dc4"); l.State != engine.LeaseActive {
		t.Fatalf("job-dc4 is %s before the cap", l.State)
	}
	// The partition goes on past the cap: the lease expires, the episode
	// does not end.
	clk.Advance(time.Minute)
	waitLeaseState(t, s, "job-dc4", engine.LeaseExpired)
	// The job ids logged are the leases still active when the leader
	// notices the cap: job-dc4 may have expired first (it is capped on its
	// own too, from its owner's expiry).
	const capReached = "lease hold cap reached: the held leases expire as usual from now on"
	waitFor(t, "the cap logged", func() bool {
		logs := n.logs.String()
		return logged(logs, capReached, "datacenters", `["dc3","dc4","dc5"]`, "job_ids", `["job-dc4"]`) ||
			logged(logs, capReached, "datacenters", `["dc3","dc4","dc5"]`, "job_ids", `[]`)
	})
	if rec := s.Store().Correlation(); rec.Episode == nil {
		t.Fatal("the episode ended with the cap")
	}
	dcs, err := n.client(engine.RoleAdmin).Datacenters(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if c := dcs.Committed; c.DelayEviction || len(c.HeldDatacenters) != 0 || c.Episode == nil || !c.Episode.CapReached {
		t.Errorf("after the cap: %+v", c)
	}
}

// forget removes a member from the fake view without an event, as the
// gossip layer forgets a member (left, or dead past its retention).
func (f *fakeMembership) forget(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.byName, name)
}

// After lost gossip events the leader resynchronises from the member list;
// a member the list no longer has is forgotten from its datacenter, and
// the records go on being committed (a partition after it is detected).
func TestAResyncAfterLostEventsForgetsUnlistedMembersAndCommitsOn(t *testing.T) {
	n, clk, p := corrNode(t)
	s := n.srv
	ms := p.views[0]
	leaseIn(t, s, "job-dc4", "dc4", leaseTTL)
	ms.forget("dc1-a1")
	ms.mu.Lock()
	ms.seq += 5 // five events lost: the next one shows the gap
	ms.mu.Unlock()
	ms.set("dc1-a3", "dc1", swim.RoleAgent, swim.StateAlive)
	waitFor(t, "the leader resynchronises", func() bool {
		return strings.Contains(n.logs.String(), "resynchronising from the member list")
	})
	rec := startPartition(t, s, clk, p, "dc3", "dc4", "dc5")
	for _, d := range rec.Datacenters {
		if d.Name == "" {
			t.Fatalf("a datacenter named \"\" in the record: %+v", rec.Datacenters)
		}
	}
	if !slices.Equal(rec.Held, []string{"dc3", "dc4", "dc5"}) {
		t.Fatalf("held %v", rec.Held)
	}
	if logs := n.logs.String(); strings.Contains(logs, "correlation record not committed") {
		t.Errorf("a record was refused:\n%s", logs)
	}
}

// The gossip layer forgets members without an event; the leader drops
// them on its next tick, so that it counts what a new leader seeding from
// the list would: a failed datacenter whose dead members are forgotten and
// whose only listed member is alive recovers.
func TestForgottenMembersStopCountingOnTheLeader(t *testing.T) {
	n, clk, p := corrNode(t)
	s := n.srv
	ms := p.views[0]
	p.dark("dc2")
	waitRecord(t, s, "dc2 failing", statesAre(engine.DCFailing, "dc2"))
	clk.Advance(3 * time.Second)
	waitRecord(t, s, "dc2 failed", statesAre(engine.DCFailed, "dc2"))
	for _, a := range agentsOf("dc2") {
		ms.forget(a)
	}
	ms.set("dc2-b1", "dc2", swim.RoleAgent, swim.StateAlive)
	waitRecord(t, s, "dc2 recovering", statesAre(engine.DCRecovering, "dc2"))
	if !logged(n.logs.String(), "gossip members forgotten: they no longer count in their datacenters", "members", `["dc2-a1","dc2-a2"]`) {
		t.Errorf("the forgotten members are not logged:\n%s", n.logs.String())
	}
}

// A new leader loads its whole member list at once: a held datacenter
// whose alive member sorts before its dead ones stays failed, and the
// episode goes on under the same id with the same cap.
func TestANewLeaderSeedingItsMembersKeepsTheEpisode(t *testing.T) {
	nodes, clk, p := threeCorrNodes(t)
	for _, v := range p.views {
		for _, dc := range poolDCs {
			v.set(dc+"-a0", dc, swim.RoleAgent, swim.StateAlive) // sorts before dc-a1, dc-a2
		}
	}
	leader := nodes[0].srv
	waitRecord(t, leader, "the a0 agents counted", func(r *raftstore.CorrelationRecord) bool {
		return len(r.Datacenters) == len(poolDCs)
	})
	rec := startPartition(t, leader, clk, p, "dc3", "dc4", "dc5")
	episode, holdUntil := rec.Episode.ID, rec.HoldUntil
	for _, n := range nodes[1:] {
		waitRecord(t, n.srv, n.id+" has the episode", func(r *raftstore.CorrelationRecord) bool {
			return r.Episode != nil && r.Episode.ID == episode
		})
	}
	clk.Advance(time.Minute)
	if err := leader.Close(); err != nil {
		t.Fatal(err)
	}
	var next *peerNode
	waitFor(t, "a new leader", func() bool {
		for _, n := range nodes[1:] {
			if n.srv.Store().IsLeader() {
				next = n
				return true
			}
		}
		return false
	})
	rec = waitRecord(t, next.srv, "a record by the new leader", func(r *raftstore.CorrelationRecord) bool { return r.Leader == next.id })
	if rec.Episode == nil || rec.Episode.ID != episode || !rec.HoldUntil.Equal(holdUntil) ||
		countCorrEvents(rec, engine.EventPartitionDetected) != 1 || countCorrEvents(rec, engine.EventPartitionHealed) != 0 {
		t.Fatalf("under the new leader: episode %+v (want %s), hold until %s (want %s), %d partition_detected, %d partition_healed",
			rec.Episode, episode, rec.HoldUntil, holdUntil,
			countCorrEvents(rec, engine.EventPartitionDetected), countCorrEvents(rec, engine.EventPartitionHealed))
	}
}

// A partition that reconnects briefly now and then starts and heals one
// episode after another; each heal gives a grace and each new episode
// holds again. A lease its owner abandoned must still expire within the
// bound: its owner's expiry + the maximum hold + one TTL.
func TestABlippingPartitionDoesNotHoldAnAbandonedLeaseForever(t *testing.T) {
	clk := newTestClock()
	p := &pool{}
	ms := newFakeMembership(clk.Now)
	p.add(ms)
	// Episodes of 128s with 2s blips: shorter than the maximum hold (each
	// episode's own cap is never reached), and two flips per 120s (not
	// flapping, which would make it one long episode).
	const maxHold = 5 * time.Minute
	n := startNodeWith(t, func(cfg *Config) {
		testCorrelation(clk, ms)(cfg)
		cfg.Raft.MaxLeaseHold = maxHold
	})
	s := n.srv
	waitRecord(t, s, "the first record", func(r *raftstore.CorrelationRecord) bool { return len(r.Datacenters) == len(poolDCs) })
	l := leaseIn(t, s, "job-dc4", "dc4", leaseTTL)
	bound := l.ExpiresAt.Add(maxHold + leaseTTL)
	episodes := 0
	for clk.Now().Before(bound.Add(leaseTTL)) && leaseNow(t, s, "job-dc4").State == engine.LeaseActive {
		if episodes == 0 {
			startPartition(t, s, clk, p, "dc3", "dc4", "dc5")
		} else {
			// Recovering datacenters fail again at once: a new episode.
			p.dark("dc3", "dc4", "dc5")
			waitRecord(t, s, "a new episode", func(r *raftstore.CorrelationRecord) bool { return r.Episode != nil })
		}
		episodes++
		clk.Advance(128 * time.Second)
		p.light("dc3", "dc4", "dc5")
		waitRecord(t, s, "the heal", func(r *raftstore.CorrelationRecord) bool { return r.Episode == nil })
		clk.Advance(2 * time.Second)
	}
	waitLeaseState(t, s, "job-dc4", engine.LeaseExpired)
	got := leaseNow(t, s, "job-dc4")
	// The clock moves in jumps of 128s, so EndedAt is when the loop next
	// looked; the lease's last expiry is what the bound is about.
	if got.ExpiresAt.After(bound) || episodes < 3 {
		t.Fatalf("job-dc4 expired with expiry %s after %d episodes; its owner's expiry %s bounds it at %s",
			got.ExpiresAt, episodes, l.ExpiresAt, bound)
	}
	t.Logf("job-dc4 (owner expiry %s) expired with expiry %s (%s past the owner's), after %d episodes", l.ExpiresAt.Format("15:04:05"),
		got.ExpiresAt.Format("15:04:05"), got.ExpiresAt.Sub(l.ExpiresAt), episodes)
}

// A record committed by someone else while this leader's engine runs (it
// lost and regained leadership between two polls) makes it start over
// from the committed record instead of committing from a stale one.
func TestARecordCommittedMeanwhileRestartsTheLeadersEngine(t *testing.T) {
	n, clk, p := corrNode(t)
	s := n.srv
	rec := s.Store().Correlation()
	if _, err := s.Store().PutCorrelation(ctx(t), recordView(rec)); err != nil {
		t.Fatal(err)
	}
	p.dark("dc2")
	waitRecord(t, s, "dc2 failing", statesAre(engine.DCFailing, "dc2"))
	clk.Advance(3 * time.Second)
	waitRecord(t, s, "dc2 failed", statesAre(engine.DCFailed, "dc2"))
	logs := n.logs.String()
	if !strings.Contains(logs, "correlation record committed by another leader meanwhile; restarting the engine from it") ||
		strings.Count(logs, "leading: correlation engine started from the committed record") < 2 {
		t.Errorf("the engine did not restart from the newer record:\n%s", logs)
	}
}

// A commit whose outcome was unknown (the apply timed out) and that went
// through is adopted as this leader's own: its events are no longer
// pending, the ones decided after it still are, and it is not mistaken for
// another leader's.
func TestALateCommitOfThisLeadersRecordIsAdopted(t *testing.T) {
	n, _, _ := corrNode(t)
	s := n.srv
	rec := s.Store().Correlation()
	cor, err := engine.NewCorrelator(s.cfg.Correlation)
	if err != nil {
		t.Fatal(err)
	}
	sent := engine.CorrelationEvent{Type: engine.EventDCStateChanged, At: rec.At, Datacenter: "dc2", From: engine.DCHealthy, To: engine.DCFailing}
	later := engine.CorrelationEvent{Type: engine.EventDCStateChanged, At: rec.At, Datacenter: "dc3", From: engine.DCHealthy, To: engine.DCFailing}
	l := &leaderCorrelator{s: s, cor: cor, log: s.corr.log, committed: rec, pending: []engine.CorrelationEvent{sent, later},
		unknown: &unknownCommit{after: rec.Revision, events: 1}}
	// Someone else's record at the next revision is not adopted.
	other := *rec
	other.Revision, other.Leader = rec.Revision+1, "node-9"
	if l.adoptLateCommit(&other, s.clock()) {
		t.Fatal("another leader's record was adopted")
	}
	// This node's own, committed late, is.
	if _, err := s.Store().PutCorrelation(ctx(t), recordView(rec)); err != nil {
		t.Fatal(err)
	}
	cur := s.Store().Correlation()
	if !l.adoptLateCommit(cur, s.clock()) {
		t.Fatalf("this leader's record (revision %d after %d, by %s) was not adopted", cur.Revision, rec.Revision, cur.Leader)
	}
	if l.committed != cur || l.unknown != nil || len(l.pending) != 1 || l.pending[0].Datacenter != later.Datacenter {
		t.Fatalf("after adopting: committed %p (want %p), unknown %v, pending %+v", l.committed, cur, l.unknown, l.pending)
	}
}

// A record of unknown outcome that never committed: after the barrier the
// leader proposes its events again, and they are committed once.
func TestARecordOfUnknownOutcomeThatNeverCommittedIsProposedAgain(t *testing.T) {
	n, _, _ := corrNode(t)
	s := n.srv
	rec := s.Store().Correlation()
	cor, err := engine.NewCorrelator(s.cfg.Correlation)
	if err != nil {
		t.Fatal(err)
	}
	at := rec.At.Add(-time.Hour) // an instant no other event has
	sent := engine.CorrelationEvent{Type: engine.EventDCStateChanged, At: at, Datacenter: "dc2", From: engine.DCHealthy, To: engine.DCFailing}
	l := &leaderCorrelator{s: s, cor: cor, log: s.corr.log, committed: rec, pending: []engine.CorrelationEvent{sent},
		unknown: &unknownCommit{after: rec.Revision, events: 1}}
	l.commit(ctx(t))
	if l.lost || l.unknown != nil || len(l.pending) != 0 || l.committed.Revision != rec.Revision+1 {
		t.Fatalf("after the retry: lost %v, unknown %v, pending %d, revision %d (want %d)", l.lost, l.unknown, len(l.pending), l.committed.Revision, rec.Revision+1)
	}
	n2 := 0
	for _, ev := range s.Store().Correlation().Events {
		if ev.At.Equal(at) && ev.Datacenter == "dc2" {
			n2++
		}
	}
	if n2 != 1 {
		t.Fatalf("the event was committed %d times", n2)
	}
}
