package tests

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coordinatord/coordinatord/api"
	"github.com/coordinatord/coordinatord/client"
	"github.com/coordinatord/coordinatord/engine"
)

// End-to-end tests of membership, correlation and partition-aware leases:
// 3 `coordinatord server` nodes in dc1, dc2 and dc3 and 2 `coordinatord
// agent` processes in each of dc1..dc5 (13 gossip members), gossip
// encrypted with a key from `coordinatord keygen`, on the fast timing of
// gossipTiming. The correlation engine runs with its reference defaults
// (failure confirmation 5s, window 30s, thresholds low 2 / medium 3 / high
// 4, failing share "more than half"), so a datacenter whose agents are
// killed goes failing as soon as gossip suspects them and failed 5s later;
// three such datacenters within the window are a partition (medium).
//
// Agents are stopped with SIGKILL, so they do not leave gracefully: the
// others must find out through SWIM that they are dead.

// e2eTopology is the 3 servers + 10 agents of these tests.
func e2eTopology() gossipClusterSpec {
	return gossipClusterSpec{
		serverDCs:   []string{"dc1", "dc2", "dc3"},
		agentDCs:    []string{"dc1", "dc2", "dc3", "dc4", "dc5"},
		agentsPerDC: 2,
	}
}

// --- observing the committed correlation state ---------------------------------

// corrObserver polls GET /v1/datacenters on every node (the committed
// record is on each; the highest revision wins) every 100ms for the whole
// test and keeps every distinct committed event and the worst severity,
// so that nothing is missed between the test's own checks, across leader
// changes, or past the record's last 100 events.
type corrObserver struct {
	t *testing.T

	mu       sync.Mutex
	events   []api.CorrelationEvent
	keys     map[string]bool
	worst    string
	episodes map[string]bool
	everHeld map[string]bool // datacenters ever held
	last     *api.Datacenters
	polls    int

	cancel context.CancelFunc
	done   chan struct{}
}

// observe starts an observer of gc's nodes; it stops at the end of the
// test.
func (gc *gossipCluster) observe(t *testing.T) *corrObserver {
	t.Helper()
	o := &corrObserver{t: t, keys: map[string]bool{}, worst: string(engine.SeverityNone), episodes: map[string]bool{}, everHeld: map[string]bool{}}
	// Clients of their own: the test's goroutine uses the nodes' clients.
	var clients []*client.Client
	for _, n := range gc.nodes {
		cl, err := client.New(client.Config{Addr: n.httpBind, TLS: n.tlsConfig(gc.pki.tlsCert("observer", request(engine.MappingSPIFFE, engine.RoleAdmin, "observer"))), Timeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cl.Close)
		clients = append(clients, cl)
	}
	ctx, cancel := context.WithCancel(context.Background())
	o.cancel, o.done = cancel, make(chan struct{})
	go func() {
		defer close(o.done)
		for ctx.Err() == nil {
			var best *api.Datacenters
			for _, cl := range clients {
				rctx, rcancel := context.WithTimeout(ctx, time.Second)
				d, err := cl.Datacenters(rctx)
				rcancel()
				if err == nil && (best == nil || d.Committed.Revision > best.Committed.Revision) {
					best = d
				}
			}
			if best != nil {
				o.record(best)
			}
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(o.stop)
	return o
}

func (o *corrObserver) stop() {
	o.cancel()
	<-o.done
}

var severityRank = map[string]int{"none": 0, "low": 1, "medium": 2, "high": 3}

func (o *corrObserver) record(d *api.Datacenters) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.polls++
	o.last = d
	c := d.Committed
	if severityRank[c.Severity] > severityRank[o.worst] {
		o.worst = c.Severity
	}
	if c.Episode != nil {
		o.episodes[c.Episode.ID] = true
	}
	for _, dc := range c.HeldDatacenters {
		o.everHeld[dc] = true
	}
	for _, ev := range c.Events {
		key := fmt.Sprintf("%s|%d|%s|%s|%s|%s", ev.Type, ev.At.UnixNano(), ev.Datacenter, ev.To, ev.Episode, ev.Severity)
		if !o.keys[key] {
			o.keys[key] = true
			o.events = append(o.events, ev)
		}
	}
}

// sync waits until the observer has seen a revision at least as recent as
// d's, so that its events include d's.
func (o *corrObserver) sync(t *testing.T, rev uint64) {
	t.Helper()
	eventually(t, fmt.Sprintf("the observer reaches revision %d", rev), func() error {
		o.mu.Lock()
		defer o.mu.Unlock()
		if o.last == nil || o.last.Committed.Revision < rev {
			return fmt.Errorf("observer at %v", o.last != nil)
		}
		return nil
	})
}

// eventsOf returns the observed events of type typ (all types for "").
func (o *corrObserver) eventsOf(typ string) []api.CorrelationEvent {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []api.CorrelationEvent
	for _, ev := range o.events {
		if typ == "" || ev.Type == typ {
			out = append(out, ev)
		}
	}
	return out
}

// stateChanges returns dc's observed state changes, oldest first.
func (o *corrObserver) stateChanges(dc string) []api.CorrelationEvent {
	var out []api.CorrelationEvent
	for _, ev := range o.eventsOf("dc_state_changed") {
		if ev.Datacenter == dc {
			out = append(out, ev)
		}
	}
	return out
}

func (o *corrObserver) summary() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "%d polls, worst severity %s, episodes %d, held ever %v; events:", o.polls, o.worst, len(o.episodes), mapKeys(o.everHeld))
	for _, ev := range o.events {
		fmt.Fprintf(&b, "\n  %s %s", ev.At.Format("15:04:05.000"), describeEvent(ev))
	}
	return b.String()
}

func describeEvent(ev api.CorrelationEvent) string {
	if ev.Type == "dc_state_changed" {
		return fmt.Sprintf("%s %s → %s", ev.Datacenter, ev.From, ev.To)
	}
	return fmt.Sprintf("%s %s severity %s (from %s) affected %v", ev.Type, ev.Episode, ev.Severity, ev.Previous, ev.Affected)
}

func mapKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// --- sinks and modules ------------------------------------------------------------

// installCorrelationModules uploads the Go correlation example (kind
// correlation) and the Go reporter example (kind reporter, its sink
// "results" to the file sinks/results.jsonl under each node's data
// directory) and waits until every node runs both.
func (gc *gossipCluster) installCorrelationModules(t *testing.T) {
	t.Helper()
	admin := gc.node(gc.Leader()).admin()
	corr, err := admin.PutModule(timeout(t, 60*time.Second), "go-correlation", readModule(t, "go-correlation/go-correlation.wasm"),
		client.ModuleOptions{Kind: api.ModuleKindCorrelation})
	if err != nil {
		t.Fatalf("upload go-correlation: %v", err)
	}
	rep, err := admin.PutModule(timeout(t, 60*time.Second), "go-reporter", readModule(t, "go-reporter/go-reporter.wasm"),
		client.ModuleOptions{Kind: api.ModuleKindReporter, Sinks: []string{"results=file:results.jsonl"}})
	if err != nil {
		t.Fatalf("upload go-reporter: %v", err)
	}
	gc.waitInstalledEverywhere(t, "go-correlation", corr.Digest)
	gc.waitInstalledEverywhere(t, "go-reporter", rep.Digest)
}

// sinkRecord is a correlation event as the Go reporter writes it.
type sinkRecord struct {
	Event     string   `json:"event"`
	Type      string   `json:"type"`
	Episode   string   `json:"episode"`
	Severity  string   `json:"severity"`
	Previous  string   `json:"previous_severity"`
	Affected  []string `json:"affected_datacenters"`
	Healthy   []string `json:"healthy_datacenters"`
	HeldJobs  []string `json:"held_jobs"`
	node      string
	rawRecord string
}

// correlationRecords reads the correlation records of every node's
// results sink (a node writes those of the events it dispatched as
// leader).
func (gc *gossipCluster) correlationRecords(t *testing.T) []sinkRecord {
	t.Helper()
	var out []sinkRecord
	for _, n := range gc.nodes {
		f, err := os.Open(filepath.Join(n.dataDir, "sinks", "results.jsonl"))
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
		for sc.Scan() {
			var r sinkRecord
			line := sc.Text()
			if err := json.Unmarshal([]byte(line), &r); err != nil {
				t.Errorf("%s: sink line %q: %v", n.id, line, err)
				continue
			}
			if r.Event == "correlation" {
				r.node, r.rawRecord = n.id, line
				out = append(out, r)
			}
		}
		_ = f.Close()
	}
	return out
}

// waitSinkRecords waits until the sinks hold n correlation records of
// type typ and returns them.
func (gc *gossipCluster) waitSinkRecords(t *testing.T, typ string, n int) []sinkRecord {
	t.Helper()
	var got []sinkRecord
	eventually(t, fmt.Sprintf("%d %s record(s) in the reporter's sinks", n, typ), func() error {
		got = got[:0]
		for _, r := range gc.correlationRecords(t) {
			if r.Type == typ {
				got = append(got, r)
			}
		}
		if len(got) < n {
			return fmt.Errorf("%d so far", len(got))
		}
		return nil
	})
	return got
}

// --- leases ------------------------------------------------------------------------

// expiries returns the expiry events of job.
func expiries(evs []seenEvent, job string) []seenEvent {
	var out []seenEvent
	for _, ev := range evs {
		if ev.Lease.JobID == job && ev.Type == "expired" {
			out = append(out, ev)
		}
	}
	return out
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// --- 1. one datacenter fails alone --------------------------------------------------

// TestCorrelationOneDatacenterFailsAlone kills the two agents of one
// datacenter at a time (SIGKILL), for each of the 5 datacenters in turn
// (a datacenter is used once: killing and restarting the same one within
// 120s would make it flapping). It measures the time from the kill to the
// moment GET /v1/datacenters on the leader shows the datacenter failed,
// and logs the median over the 5 runs with the gossip settings. A
// datacenter failing alone is an independent failure: no episode, nothing
// held, and the leases owned in dc4 (by a client whose certificate claims
// dc4), left without renewal from the kill on, expire on time.
func TestCorrelationOneDatacenterFailsAlone(t *testing.T) {
	gc := startGossipCluster(t, e2eTopology())
	obs := gc.observe(t)
	leader := gc.Leader()
	w := gc.watchLeases(t, gc.others(leader)[0])
	log := &leaseLog{}
	gate := gc.leaseCallerIn(t, log, engine.RoleGate, "gate-dc4", "dc4")
	const ttl = 10 * time.Second // past the datacenter's failure (about 6s)
	leases := map[string]*api.Lease{}
	for k := range 3 {
		job := fmt.Sprintf("dc4-job-%d", k)
		l, err := gate.acquire(timeout(t, 10*time.Second), job, ttl)
		if err != nil {
			t.Fatal(err)
		}
		if l.OwnerDC != "dc4" {
			t.Fatalf("%s is owned in %q, want dc4", job, l.OwnerDC)
		}
		leases[job] = l
	}

	var took, byEngine []time.Duration
	for run, dc := range []string{"dc4", "dc5", "dc1", "dc2", "dc3"} {
		killed := gc.g.kill9DCs(dc)
		d := gc.waitDatacenters(t, dc+" failed", 60*time.Second, func(d *api.Datacenters) error {
			if s := dcState(d, dc); s != string(engine.DCFailed) {
				return fmt.Errorf("%s is %q", dc, s)
			}
			return nil
		})
		seen := time.Since(killed)
		took = append(took, seen)
		obs.sync(t, d.Committed.Revision)
		var failing, failed time.Time
		for _, ev := range obs.stateChanges(dc) {
			if ev.At.Before(killed) {
				continue
			}
			if ev.To == string(engine.DCFailing) && failing.IsZero() {
				failing = ev.At
			}
			if ev.To == string(engine.DCFailed) && failed.IsZero() {
				failed = ev.At
			}
		}
		byEngine = append(byEngine, failed.Sub(killed))
		t.Logf("run %d: %s killed (2 agents, SIGKILL): failing after %s (gossip), failed after %s (engine), shown failed by GET /v1/datacenters after %s",
			run+1, dc, failing.Sub(killed).Round(time.Millisecond), failed.Sub(killed).Round(time.Millisecond), seen.Round(time.Millisecond))
		if d.Committed.Episode != nil || d.Committed.DelayEviction || len(d.Committed.HeldDatacenters) > 0 || severityRank[d.Committed.Severity] >= severityRank["medium"] {
			t.Errorf("%s failing alone: severity %s, episode %+v, held %v: want no episode and nothing held", dc, d.Committed.Severity, d.Committed.Episode, d.Committed.HeldDatacenters)
		}

		if run == 0 {
			// The dc4 leases expire on time: not held, not early.
			evs := waitEvents(t, w, "every dc4 lease expired", func(evs []seenEvent) error {
				for job := range leases {
					if len(expiries(evs, job)) == 0 {
						return fmt.Errorf("%s has not expired yet", job)
					}
				}
				return nil
			})
			for job, l := range leases {
				ex := expiries(evs, job)
				if len(ex) != 1 {
					t.Errorf("%s expired %d times", job, len(ex))
					continue
				}
				ev := ex[0]
				late := ev.Lease.EndedAt.Sub(l.ExpiresAt)
				t.Logf("%s (ttl %s, owned in dc4): expiry committed %s after its expiry time; dc4 failed %s before it", job, ttl, late.Round(time.Millisecond), ev.Lease.EndedAt.Sub(failed).Round(time.Millisecond))
				if !ev.Lease.ExpiresAt.Equal(l.ExpiresAt) || late < 0 || late > 2*time.Second {
					t.Errorf("%s: expired at %s with expiry %s, want its acquired expiry %s and no more than 2s late", job, ev.Lease.EndedAt, ev.Lease.ExpiresAt, l.ExpiresAt)
				}
				if !failed.Before(ev.Lease.EndedAt) {
					t.Logf("note: %s expired before dc4 was failed (%s): the check that a failed datacenter alone holds nothing is weaker", job, failed)
				}
			}
		}

		gc.g.restartDCs(dc)
		gc.waitDatacenters(t, dc+" back (recovering)", 60*time.Second, func(d *api.Datacenters) error {
			if s := dcState(d, dc); s != string(engine.DCRecovering) && s != string(engine.DCHealthy) {
				return fmt.Errorf("%s is %q", dc, s)
			}
			return nil
		})
	}
	t.Logf("time from SIGKILL of a datacenter's agents to failed in GET /v1/datacenters: median %s over %d runs %v (engine's decision: median %s %v); "+
		"gossip: %s, 13 members; correlation: reference defaults (failure confirmation 5s, failing share > 1/2, engine tick 1s)",
		median(took).Round(time.Millisecond), len(took), roundAll(took), median(byEngine).Round(time.Millisecond), roundAll(byEngine), gossipTimingSummary)

	if pd := obs.eventsOf("partition_detected"); len(pd) > 0 || obs.worst == "medium" || obs.worst == "high" || len(obs.everHeld) > 0 {
		t.Errorf("independent failures made an episode: %s", obs.summary())
	}
	if t.Failed() {
		t.Log(obs.summary())
	}
}

func roundAll(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for k, d := range ds {
		out[k] = d.Round(time.Millisecond)
	}
	return out
}

// --- 2 and 3. a partition of three datacenters ------------------------------------

// partitionScenario is three datacenters going dark at once while clients
// in them hold leases: in each dark datacenter one lease renewed all along
// (kept-DC: its owner is cut off from gossip, not from the servers) and one
// abandoned at the kill (abandoned-DC), and one abandoned lease in dc1 (a
// healthy datacenter, never held: it expires on time during the episode).
type partitionScenario struct {
	t    *testing.T
	gc   *gossipCluster
	obs  *corrObserver
	w    *leaseWatcher
	log  *leaseLog
	dark []string
	ttl  time.Duration

	kept, abandoned map[string]*api.Lease
	control         *api.Lease
	// callers are the lease owners of the dark datacenters, gate-DC.
	callers map[string]*leaseCaller

	stopKeeping context.CancelFunc
	keeping     sync.WaitGroup
	heldMu      sync.Mutex
	stillHeld   map[string]bool

	killed   time.Time
	detected *api.Datacenters // the first answer showing the episode
	episode  string
	// detectedBy is the node that led when the partition was detected.
	detectedBy int
}

// darkDCs are the datacenters whose agents the partition tests kill: dc3
// has a server, whose member stays alive, so 2 of its 3 members die (more
// than half: failing); dc4 and dc5 lose both of theirs.
var darkDCs = []string{"dc3", "dc4", "dc5"}

// partitionTTL is the TTL of the partition tests' leases: well over the
// time to detect the partition (6–7s here: suspicion, the 5s failure
// confirmation, the 1s tick), so that the leases are still active when the
// hold begins even on a loaded machine.
const partitionTTL = 15 * time.Second

// startPartition starts the cluster and modules, acquires the leases,
// kills the dark datacenters' agents and waits until the episode is
// committed.
func startPartition(t *testing.T) *partitionScenario {
	t.Helper()
	gc := startGossipCluster(t, e2eTopology())
	gc.installCorrelationModules(t)
	s := &partitionScenario{t: t, gc: gc, obs: gc.observe(t), log: &leaseLog{}, dark: darkDCs, ttl: partitionTTL,
		kept: map[string]*api.Lease{}, abandoned: map[string]*api.Lease{}, stillHeld: map[string]bool{}}
	leader := gc.Leader()
	// The watch runs on a follower: test 3 kills the leader.
	s.w = gc.watchLeases(t, gc.others(leader)[0])
	acquire := func(c *leaseCaller, job string) *api.Lease {
		l, err := c.acquire(timeout(t, 10*time.Second), job, s.ttl)
		if err != nil {
			t.Fatalf("acquire %s: %v", job, err)
		}
		return l
	}
	callers := map[string]*leaseCaller{}
	s.callers = callers
	for _, dc := range s.dark {
		callers[dc] = gc.leaseCallerIn(t, s.log, engine.RoleGate, "gate-"+dc, dc)
		s.kept["kept-"+dc] = acquire(callers[dc], "kept-"+dc)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.stopKeeping = cancel
	t.Cleanup(cancel)
	for job, l := range s.kept {
		c := callers[l.OwnerDC]
		s.keeping.Add(1)
		go func() {
			defer s.keeping.Done()
			ok := c.keepAlive(ctx, *l, 0)
			s.heldMu.Lock()
			s.stillHeld[job] = ok
			s.heldMu.Unlock()
		}()
	}
	for _, dc := range s.dark {
		s.abandoned["abandoned-"+dc] = acquire(callers[dc], "abandoned-"+dc)
	}
	s.control = acquire(gc.leaseCallerIn(t, s.log, engine.RoleGate, "gate-dc1", "dc1"), "control-dc1")

	s.killed = gc.g.kill9DCs(s.dark...)
	s.detected = gc.waitDatacenters(t, "the partition detected", 60*time.Second, func(d *api.Datacenters) error {
		c := d.Committed
		if c.Episode == nil || !c.DelayEviction || !slices.Equal(c.HeldDatacenters, s.dark) {
			return fmt.Errorf("severity %s, episode %v, held %v", c.Severity, c.Episode != nil, c.HeldDatacenters)
		}
		return nil
	})
	s.detectedBy = gc.Leader()
	s.episode = s.detected.Committed.Episode.ID
	for job, l := range s.abandoned {
		if at := s.detected.Committed.Episode.DetectedAt; !at.Before(l.ExpiresAt) {
			t.Fatalf("the partition was detected at %s, after %s's expiry %s: detection took %s, longer than this test's TTL allows",
				at.Format("15:04:05.000"), job, l.ExpiresAt.Format("15:04:05.000"), at.Sub(s.killed))
		}
	}
	t.Logf("partition of %v detected %s after the kill: episode %s, severity %s, held %v, decided by %s %v (%v)",
		s.dark, s.detected.Committed.Episode.DetectedAt.Sub(s.killed).Round(time.Millisecond), s.episode,
		s.detected.Committed.Severity, s.detected.Committed.HeldDatacenters, s.detected.Committed.Decision.Source,
		s.detected.Committed.Decision.Modules, s.detected.Committed.Decision.Notes)
	return s
}

// darkJobs returns the scenario's jobs in the dark datacenters, sorted.
func (s *partitionScenario) darkJobs() []string {
	var out []string
	for job := range s.kept {
		out = append(out, job)
	}
	for job := range s.abandoned {
		out = append(out, job)
	}
	slices.Sort(out)
	return out
}

// checkDetected checks the committed episode and the modules' part in it.
func (s *partitionScenario) checkDetected() {
	t := s.t
	t.Helper()
	c := s.detected.Committed
	if c.Severity != string(engine.SeverityMedium) {
		t.Errorf("severity %s with 3 of 5 datacenters dark, want medium", c.Severity)
	}
	if !slices.Equal(c.Episode.Datacenters, s.dark) {
		t.Errorf("episode datacenters %v, want %v", c.Episode.Datacenters, s.dark)
	}
	d := c.Decision
	if d == nil || d.Source != "modules" || !slices.Contains(d.Modules, "go-correlation") || !d.Hold {
		t.Errorf("hold decision %+v, want the go-correlation module's hold", d)
	}
	// The module's own log line, through the leader's log.
	want := fmt.Sprintf("3 datacenters dark (%s): holding %d leases", strings.Join(s.dark, ", "), len(s.darkJobs()))
	eventually(t, "the correlation module's log line", func() error {
		if !strings.Contains(s.gc.node(s.detectedBy).stderr.String(), want) {
			return fmt.Errorf("%s has not logged %q", s.gc.node(s.detectedBy).id, want)
		}
		return nil
	})
	// The Go reporter's record of the event: the datacenters and the held
	// jobs the modules were given.
	recs := s.gc.waitSinkRecords(t, "partition_detected", 1)
	r := recs[0]
	held := slices.Clone(r.HeldJobs)
	slices.Sort(held)
	if len(recs) != 1 || r.Episode != s.episode || !slices.Equal(r.Affected, s.dark) || !slices.Equal(held, s.darkJobs()) || r.Severity != "medium" {
		t.Errorf("the reporter's partition_detected records: %d, the first from %s: %s; want one of episode %s affecting %v holding %v",
			len(recs), r.node, r.rawRecord, s.episode, s.dark, s.darkJobs())
	}
	t.Logf("reporter sink of %s: %s", r.node, r.rawRecord)
}

// holdPastTTL waits until every abandoned lease is at least 3s past its
// TTL, checks that they are held (listed overdue, not expired) and that
// the dc1 lease expired on time meanwhile.
func (s *partitionScenario) holdPastTTL() {
	t := s.t
	t.Helper()
	var due time.Time
	for _, l := range s.abandoned {
		if l.ExpiresAt.After(due) {
			due = l.ExpiresAt
		}
	}
	time.Sleep(time.Until(due.Add(3 * time.Second)))
	d := s.gc.waitDatacenters(t, "the abandoned leases held overdue", 10*time.Second, func(d *api.Datacenters) error {
		overdue := map[string]bool{}
		for _, l := range d.Committed.HeldLeases {
			if l.Overdue {
				overdue[l.JobID] = true
			}
		}
		for job := range s.abandoned {
			if !overdue[job] {
				return fmt.Errorf("%s is not listed as held overdue: %+v", job, d.Committed.HeldLeases)
			}
		}
		return nil
	})
	if d.Committed.Episode.ID != s.episode {
		t.Errorf("episode %s, want %s", d.Committed.Episode.ID, s.episode)
	}
	evs, err := s.w.snapshot()
	if err != nil {
		t.Fatalf("the watch stream ended: %v", err)
	}
	for _, job := range s.darkJobs() {
		if ex := expiries(evs, job); len(ex) > 0 {
			t.Errorf("%s expired while its datacenter was held: %+v", job, ex[0].Lease)
		}
	}
	ex := expiries(evs, s.control.JobID)
	if len(ex) != 1 {
		t.Fatalf("%s (dc1, healthy) expired %d times by %s past its TTL, want once, on time", s.control.JobID, len(ex), time.Since(s.control.ExpiresAt).Round(time.Millisecond))
	}
	if late := ex[0].Lease.EndedAt.Sub(s.control.ExpiresAt); late < 0 || late > 2*time.Second || !ex[0].Lease.ExpiresAt.Equal(s.control.ExpiresAt) {
		t.Errorf("%s (dc1) expired %s after its expiry time (expiry %s, acquired %s): want on time", s.control.JobID, late, ex[0].Lease.ExpiresAt, s.control.ExpiresAt)
	}
	t.Logf("%d abandoned leases held %s past their TTL, listed overdue; %s in healthy dc1 expired on time meanwhile",
		len(s.abandoned), time.Since(due).Round(time.Millisecond), s.control.JobID)
}

// heal restarts the dark datacenters' agents, waits until the episode
// ends, and checks the heal, the grace and the kept leases.
func (s *partitionScenario) heal() {
	t := s.t
	t.Helper()
	restarted := time.Now()
	s.gc.g.restartDCs(s.dark...)
	d := s.gc.waitDatacenters(t, "the partition healed", 60*time.Second, func(d *api.Datacenters) error {
		if d.Committed.Episode != nil || d.Committed.DelayEviction || len(d.Committed.HeldDatacenters) > 0 {
			return fmt.Errorf("episode %v, held %v", d.Committed.Episode != nil, d.Committed.HeldDatacenters)
		}
		return nil
	})
	s.obs.sync(t, d.Committed.Revision)
	healed := s.obs.eventsOf("partition_healed")
	if len(healed) != 1 || healed[0].Episode != s.episode {
		t.Fatalf("partition_healed events %+v, want one of episode %s\n%s", healed, s.episode, s.obs.summary())
	}
	healedAt := healed[0].At
	t.Logf("agents restarted: partition_healed %s later (episode %s, severity %s)", healedAt.Sub(restarted).Round(time.Millisecond), healed[0].Episode, healed[0].Severity)
	if pd := s.obs.eventsOf("partition_detected"); len(pd) != 1 || pd[0].Episode != s.episode {
		t.Errorf("partition_detected events %+v, want exactly one, of episode %s", pd, s.episode)
	}
	recs := s.gc.waitSinkRecords(t, "partition_healed", 1)
	if len(recs) != 1 || recs[0].Episode != s.episode {
		t.Errorf("the reporter's partition_healed records: %+v, want one of episode %s", recs, s.episode)
	}
	var detected []sinkRecord
	for _, r := range s.gc.correlationRecords(t) {
		if r.Type == "partition_detected" {
			detected = append(detected, r)
		}
	}
	if len(detected) != 1 {
		t.Errorf("the reporter's sinks hold %d partition_detected records, want one: %+v", len(detected), detected)
	}
	t.Logf("reporter sink of %s: %s", recs[0].node, recs[0].rawRecord)

	// The abandoned leases get one TTL from the heal, then expire, once.
	evs := waitEvents(t, s.w, "every abandoned lease expired after its grace", func(evs []seenEvent) error {
		for job := range s.abandoned {
			if len(expiries(evs, job)) == 0 {
				return fmt.Errorf("%s has not expired yet", job)
			}
		}
		return nil
	})
	for job, l := range s.abandoned {
		ex := expiries(evs, job)
		if len(ex) != 1 {
			t.Errorf("%s expired %d times", job, len(ex))
			continue
		}
		ev := ex[0].Lease
		grace := ev.ExpiresAt.Sub(healedAt)
		t.Logf("%s (ttl %s): acquired expiry %s, held until the heal, expiry after the heal +%s, committed %s after it",
			job, s.ttl, l.ExpiresAt.Format("15:04:05.000"), grace.Round(time.Millisecond), ev.EndedAt.Sub(ev.ExpiresAt).Round(time.Millisecond))
		if grace < s.ttl-100*time.Millisecond || grace > s.ttl+3*time.Second {
			t.Errorf("%s: expiry %s is %s after the heal, want one TTL (%s)", job, ev.ExpiresAt, grace, s.ttl)
		}
		if ev.EndedAt.Before(ev.ExpiresAt) || ev.EndedAt.Sub(ev.ExpiresAt) > 2*time.Second || ev.Token != l.Token {
			t.Errorf("%s: ended %s, expiry %s, token %d (acquired %d): want expired on time after the grace", job, ev.EndedAt, ev.ExpiresAt, ev.Token, l.Token)
		}
	}

	// The kept leases went on through it all, with their token.
	s.stopKeeping()
	s.keeping.Wait()
	gate := s.callers
	for job, l := range s.kept {
		if !s.stillHeld[job] {
			t.Errorf("the renewals of %s stopped: the lease was lost", job)
			continue
		}
		if n := len(expiries(evs, job)); n != 0 {
			t.Errorf("kept lease %s expired", job)
		}
		if _, err := gate[l.OwnerDC].release(timeout(t, 10*time.Second), job, l.Token); err != nil {
			t.Errorf("release %s with its token %d: %v", job, l.Token, err)
		}
	}
	marker, err := gate[s.dark[0]].acquire(timeout(t, 10*time.Second), "marker", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	all := s.w.waitIndex(t, marker.Index)
	st := checkLeaseHistory(t, all, s.log.all())
	t.Logf("lease history: %s", st)
	if t.Failed() {
		t.Log(s.obs.summary())
	}
}

// TestCorrelationThreeDatacentersPartition: the agents of dc3, dc4 and
// dc5 are killed at once. Exactly one partition_detected (committed, and
// in the Go reporter's sink) names the three; the Go correlation example
// module is called with those datacenters and their six leases (its log
// line, and the reporter's record of the same event) and decides the
// hold; leases owned there are held past their TTL (the watch stream shows
// no expiry) while a lease in healthy dc1 expires on time. The agents
// restart: one partition_healed, the holds end, the leases renewed all
// along continue with their tokens, and the abandoned ones expire one TTL
// after the heal (their grace), once.
func TestCorrelationThreeDatacentersPartition(t *testing.T) {
	s := startPartition(t)
	s.checkDetected()
	s.holdPastTTL()
	s.heal()
}

// TestCorrelationEpisodeSurvivesLeaderKill: during the episode of the
// three dark datacenters, the Raft leader is killed with SIGKILL. The new
// leader commits records of the same episode (same id, no second
// partition_detected), keeps holding the same datacenters and their
// overdue leases (no expiry storm), and ends the episode when the agents
// come back, with the same grace.
func TestCorrelationEpisodeSurvivesLeaderKill(t *testing.T) {
	s := startPartition(t)
	s.checkDetected()
	s.holdPastTTL()

	old := s.gc.Leader()
	oldID := s.gc.node(old).id
	s.gc.Kill9(old)
	killed := time.Now()
	newLeader := s.gc.WaitLeader(old)
	newID := s.gc.node(newLeader).id
	d := s.gc.waitDatacenters(t, "a record committed by the new leader", 30*time.Second, func(d *api.Datacenters) error {
		if d.Committed.Leader != newID {
			return fmt.Errorf("the last record is %s's", d.Committed.Leader)
		}
		return nil
	})
	t.Logf("leader %s killed; %s leads and committed its first correlation record %s later", oldID, newID, d.Committed.At.Sub(killed).Round(time.Millisecond))
	c := d.Committed
	if c.Episode == nil || c.Episode.ID != s.episode || !c.DelayEviction || !slices.Equal(c.HeldDatacenters, s.dark) {
		t.Fatalf("after the leader change: episode %+v, held %v; want episode %s holding %v", c.Episode, c.HeldDatacenters, s.episode, s.dark)
	}
	// A few seconds under the new leader: the overdue leases stay held.
	time.Sleep(3 * time.Second)
	d = s.gc.waitDatacenters(t, "the abandoned leases still held", 10*time.Second, func(d *api.Datacenters) error {
		for _, l := range d.Committed.HeldLeases {
			if _, ok := s.abandoned[l.JobID]; ok && !l.Overdue {
				return fmt.Errorf("%s is not overdue", l.JobID)
			}
		}
		if n := len(d.Committed.HeldLeases); n != len(s.darkJobs()) {
			return fmt.Errorf("%d held leases, want %d", n, len(s.darkJobs()))
		}
		return nil
	})
	s.obs.sync(t, d.Committed.Revision)
	if pd := s.obs.eventsOf("partition_detected"); len(pd) != 1 {
		t.Errorf("partition_detected %d times across the leader change, want once:\n%s", len(pd), s.obs.summary())
	}
	evs, err := s.w.snapshot()
	if err != nil {
		t.Fatalf("the watch stream ended: %v", err)
	}
	for _, job := range s.darkJobs() {
		if ex := expiries(evs, job); len(ex) > 0 {
			t.Errorf("%s expired after the leader change while held: %+v", job, ex[0].Lease)
		}
	}
	t.Logf("under the new leader %s: episode %s continues, %d leases held (%d overdue), no expiry", newID, s.episode, len(d.Committed.HeldLeases), len(s.abandoned))

	s.heal()
}
