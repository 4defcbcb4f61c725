package engine

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)

// world drives a Correlator with a fake clock: datacenters of a few members
// each, and helpers to darken and light them.
type world struct {
	t      *testing.T
	c      *Correlator
	now    time.Time
	events []CorrelationEvent
	size   map[string]int
}

func newWorld(t *testing.T, dcs map[string]int) *world {
	t.Helper()
	c, err := NewCorrelator(DefaultCorrelationConfig())
	if err != nil {
		t.Fatal(err)
	}
	w := &world{t: t, c: c, now: t0, size: dcs}
	for dc, n := range dcs {
		for i := 0; i < n; i++ {
			w.record(c.MemberUpdate(w.now, memberName(dc, i), dc, MemberAlive))
		}
	}
	w.events = nil
	return w
}

func memberName(dc string, i int) string { return fmt.Sprintf("%s-m%d", dc, i) }

func (w *world) record(evs []CorrelationEvent) { w.events = append(w.events, evs...) }

// at moves the clock to t0+d, ticking every second on the way, as the
// leader's loop does.
func (w *world) at(d time.Duration) {
	for target := t0.Add(d); w.now.Before(target); {
		w.now = minTime(w.now.Add(time.Second), target)
		w.record(w.c.Tick(w.now))
	}
}

func (w *world) setDC(dc string, s MemberState, members int) {
	for i := 0; i < members; i++ {
		w.record(w.c.MemberUpdate(w.now, memberName(dc, i), dc, s))
	}
}

func (w *world) dark(dcs ...string) {
	for _, dc := range dcs {
		w.setDC(dc, MemberDead, w.size[dc])
	}
}

func (w *world) light(dcs ...string) {
	for _, dc := range dcs {
		w.setDC(dc, MemberAlive, w.size[dc])
	}
}

func (w *world) state(dc string) DCState {
	for _, d := range w.c.Status().Datacenters {
		if d.Name == dc {
			return d.State
		}
	}
	w.t.Fatalf("unknown datacenter %s", dc)
	return ""
}

func (w *world) count(typ CorrelationEventType) int {
	n := 0
	for _, e := range w.events {
		if e.Type == typ {
			n++
		}
	}
	return n
}

func (w *world) expect(desc string, severity Severity, states map[string]DCState) {
	w.t.Helper()
	st := w.c.Status()
	if st.Severity != severity {
		w.t.Fatalf("%s: severity %s, want %s (%s)", desc, st.Severity, severity, st)
	}
	for dc, want := range states {
		if got := w.state(dc); got != want {
			w.t.Fatalf("%s: %s is %s, want %s (%s)", desc, dc, got, want, st)
		}
	}
}

func dcs(n, members int) map[string]int {
	m := map[string]int{}
	for i := 1; i <= n; i++ {
		m[fmt.Sprintf("dc%d", i)] = members
	}
	return m
}

func TestCorrelation(t *testing.T) {
	tests := []struct {
		name string
		run  func(w *world)
	}{
		{"a 500 ms latency spike is not a failure", func(w *world) {
			for s := 0; s < 60; s += 5 {
				w.at(time.Duration(s) * time.Second)
				rtt := time.Millisecond
				if s == 30 {
					rtt = 500 * time.Millisecond
				}
				w.record(w.c.RTT(w.now, "dc2", rtt))
			}
			w.at(90 * time.Second)
			w.expect("after the spike", SeverityNone, map[string]DCState{"dc2": DCHealthy})
			if len(w.events) != 0 {
				w.t.Fatalf("events %+v, want none", w.events)
			}
		}},
		{"one datacenter failing alone is handled normally", func(w *world) {
			w.dark("dc2")
			w.at(4 * time.Second)
			w.expect("before confirmation", SeverityNone, map[string]DCState{"dc2": DCFailing})
			w.at(6 * time.Second)
			w.expect("after confirmation", SeverityNone, map[string]DCState{"dc2": DCFailed})
			if st := w.c.Status(); st.DelayEviction || w.count(EventPartitionDetected) != 0 {
				w.t.Fatalf("a lone failure delays eviction: %s", st)
			}
		}},
		{"three dark datacenters within the window make a medium partition, detected once", func(w *world) {
			w.dark("dc2")
			w.at(10 * time.Second)
			w.dark("dc3")
			w.at(20 * time.Second)
			w.dark("dc4")
			w.at(26 * time.Second)
			w.expect("three down", SeverityMedium, map[string]DCState{"dc2": DCFailed, "dc3": DCFailed, "dc4": DCFailed, "dc1": DCHealthy})
			st := w.c.Status()
			if !st.DelayEviction || strings.Join(st.Held, ",") != "dc2,dc3,dc4" {
				w.t.Fatalf("holds %s", st)
			}
			w.at(5 * time.Minute)
			if w.count(EventPartitionDetected) != 1 || w.count(EventPartitionHealed) != 0 {
				w.t.Fatalf("detected %d, healed %d; want 1, 0", w.count(EventPartitionDetected), w.count(EventPartitionHealed))
			}
		}},
		{"a region going dark one datacenter at a time over minutes is not one episode", func(w *world) {
			for i, dc := range []string{"dc2", "dc3", "dc4", "dc5"} {
				w.at(time.Duration(i) * 2 * time.Minute)
				w.dark(dc)
			}
			w.at(8 * time.Minute)
			w.expect("all four down, apart", SeverityNone, map[string]DCState{"dc2": DCFailed, "dc5": DCFailed})
			if w.count(EventPartitionDetected) != 0 || w.c.Status().DelayEviction {
				w.t.Fatalf("independent failures became an episode: %s", w.c.Status())
			}
		}},
		{"flapping (3 transitions in 120 s) is damped", func(w *world) {
			w.dark("dc2")
			w.at(10 * time.Second)
			w.light("dc2")
			w.at(40 * time.Second)
			w.dark("dc2")
			w.at(41 * time.Second)
			w.expect("third transition", SeverityNone, map[string]DCState{"dc2": DCFlapping})
			before := len(w.events)
			for s := 45; s < 200; s += 15 {
				w.at(time.Duration(s) * time.Second)
				if (s/15)%2 == 0 {
					w.light("dc2")
				} else {
					w.dark("dc2")
				}
			}
			for _, e := range w.events[before:] {
				if e.Datacenter == "dc2" {
					w.t.Fatalf("a flapping datacenter changed state: %+v", e)
				}
			}
			w.light("dc2")
			last := w.now.Sub(t0)
			w.at(last + 299*time.Second)
			w.expect("within the cooldown", SeverityNone, map[string]DCState{"dc2": DCFlapping})
			w.at(last + 301*time.Second)
			w.expect("after the cooldown", SeverityNone, map[string]DCState{"dc2": DCHealthy})
		}},
		{"an isolated datacenter is detected and later rejoins", func(w *world) {
			w.dark("dc3")
			w.at(6 * time.Second)
			w.expect("isolated", SeverityNone, map[string]DCState{"dc3": DCFailed})
			w.at(60 * time.Second)
			w.light("dc3")
			w.at(61 * time.Second)
			w.expect("back", SeverityNone, map[string]DCState{"dc3": DCRecovering})
			w.at(91 * time.Second)
			w.expect("confirmed", SeverityNone, map[string]DCState{"dc3": DCHealthy})
		}},
		{"a burst of lost heartbeats evicts nothing", func(w *world) {
			for _, dc := range []string{"dc2", "dc3", "dc4", "dc5"} {
				w.setDC(dc, MemberSuspect, w.size[dc])
			}
			w.at(3 * time.Second)
			w.light("dc2", "dc3", "dc4", "dc5")
			w.at(60 * time.Second)
			w.expect("after the burst", SeverityNone, map[string]DCState{"dc2": DCHealthy, "dc5": DCHealthy})
			for _, e := range w.events {
				if e.To == DCFailed || e.Type == EventPartitionDetected {
					w.t.Fatalf("the burst caused %+v", e)
				}
			}
		}},
		{"recovery counts age out of their window", func(w *world) {
			for i := 0; i < 4; i++ {
				w.at(time.Duration(i) * 3 * time.Minute)
				w.dark("dc2")
				w.at(time.Duration(i)*3*time.Minute + 80*time.Second)
				w.light("dc2")
			}
			w.at(15 * time.Minute)
			w.expect("after four spaced outages", SeverityNone, map[string]DCState{"dc2": DCHealthy})
			for _, e := range w.events {
				if e.To == DCFlapping {
					w.t.Fatalf("old recoveries made it flapping: %+v", e)
				}
			}
		}},
		{"a partition can heal inside the backoff period", func(w *world) {
			w.dark("dc2", "dc3", "dc4")
			w.at(6 * time.Second)
			w.expect("detected", SeverityMedium, nil)
			w.light("dc2", "dc3", "dc4")
			w.at(20 * time.Second)
			if w.count(EventPartitionHealed) != 1 || w.c.Status().DelayEviction {
				w.t.Fatalf("not healed within the backoff: %s, events %+v", w.c.Status(), w.events)
			}
		}},
		{"a severity change within an episode is notified once the backoff has passed", func(w *world) {
			w.dark("dc2", "dc3", "dc4")
			w.at(6 * time.Second)
			w.dark("dc5", "dc6")
			w.at(20 * time.Second)
			w.expect("five of seven down", SeverityHigh, nil)
			if w.count(EventSeverityChanged) != 0 {
				w.t.Fatal("severity_changed inside the backoff")
			}
			w.at(70 * time.Second)
			if w.count(EventSeverityChanged) != 1 {
				w.t.Fatalf("severity_changed %d times after the backoff, want 1", w.count(EventSeverityChanged))
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.run(newWorld(t, dcs(7, 3)))
		})
	}
}

func TestHighSeverityIsReachableWithThreeDatacentersWhenAllThreeFail(t *testing.T) {
	w := newWorld(t, dcs(3, 2))
	w.dark("dc1", "dc2", "dc3")
	w.at(6 * time.Second)
	w.expect("all three down", SeverityHigh, nil)
	if w.count(EventPartitionDetected) != 1 {
		t.Fatalf("detected %d times", w.count(EventPartitionDetected))
	}
}

func TestANewLeaderContinuesTheEpisode(t *testing.T) {
	w := newWorld(t, dcs(5, 2))
	w.dark("dc2", "dc3", "dc4")
	w.at(6 * time.Second)
	ep := w.c.Status().Episode
	if ep == nil {
		t.Fatal("no episode")
	}
	// The new leader restores the committed episode, then learns the
	// members from its own gossip.
	c2, err := NewCorrelator(DefaultCorrelationConfig())
	if err != nil {
		t.Fatal(err)
	}
	c2.Restore(w.now, *ep)
	var evs []CorrelationEvent
	for dc, n := range w.size {
		for i := 0; i < n; i++ {
			s := MemberAlive
			if dc == "dc2" || dc == "dc3" || dc == "dc4" {
				s = MemberDead
			}
			evs = append(evs, c2.MemberUpdate(w.now, memberName(dc, i), dc, s)...)
		}
	}
	for s := 1; s < 30; s++ {
		evs = append(evs, c2.Tick(w.now.Add(time.Duration(s)*time.Second))...)
	}
	st := c2.Status()
	if st.Episode == nil || st.Episode.ID != ep.ID || !st.DelayEviction {
		t.Fatalf("the new leader did not continue episode %s: %s", ep.ID, st)
	}
	for _, e := range evs {
		if e.Type == EventPartitionDetected || e.Type == EventPartitionHealed {
			t.Fatalf("the new leader emitted %s", e.Type)
		}
	}
}

func TestALocalHealthProblemStopsConfirmations(t *testing.T) {
	w := newWorld(t, dcs(3, 2))
	w.record(w.c.LocalHealth(w.now, 6))
	w.dark("dc2")
	w.at(30 * time.Second)
	w.expect("while this node is unwell", SeverityNone, map[string]DCState{"dc2": DCFailing})
	w.record(w.c.LocalHealth(w.now, 0))
	w.at(31 * time.Second)
	w.expect("once healthy again", SeverityNone, map[string]DCState{"dc2": DCFailed})
}

func TestElevatedLatencyDoublesTheFailureConfirmation(t *testing.T) {
	w := newWorld(t, dcs(3, 2))
	for i := 0; i < 3; i++ {
		w.record(w.c.RTT(w.now, "dc2", 200*time.Millisecond))
	}
	w.dark("dc2")
	w.at(6 * time.Second)
	w.expect("5 s in, slow network", SeverityNone, map[string]DCState{"dc2": DCFailing})
	w.at(11 * time.Second)
	w.expect("10 s in", SeverityNone, map[string]DCState{"dc2": DCFailed})
}

func TestCorrelationConfigValidation(t *testing.T) {
	bad := []func(*CorrelationConfig){
		func(c *CorrelationConfig) { c.FailingShare = 1 },
		func(c *CorrelationConfig) { c.MediumThreshold = 1 },
		func(c *CorrelationConfig) { c.Window = 0 },
		func(c *CorrelationConfig) { c.FlapTransitions = 1 },
	}
	for i, edit := range bad {
		cfg := DefaultCorrelationConfig()
		edit(&cfg)
		if cfg.Validate() == nil {
			t.Errorf("case %d accepted", i)
		}
	}
	if err := DefaultCorrelationConfig().Validate(); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkCorrelationUpdate measures the engine's cost per input on the
// leader: a member update (one SWIM event), an RTT sample and a tick, in a
// 15-member, 5-datacenter world and in a 1,000-member, 50-datacenter one.
//
//	go test -run '^$' -bench BenchmarkCorrelationUpdate -benchmem ./engine
func BenchmarkCorrelationUpdate(b *testing.B) {
	for _, size := range []struct{ dcs, perDC int }{{5, 3}, {50, 20}} {
		world := func(b *testing.B) (*Correlator, time.Time) {
			c, err := NewCorrelator(DefaultCorrelationConfig())
			if err != nil {
				b.Fatal(err)
			}
			now := t0
			for dc := 1; dc <= size.dcs; dc++ {
				for i := 0; i < size.perDC; i++ {
					c.MemberUpdate(now, fmt.Sprintf("dc%d-m%d", dc, i), fmt.Sprintf("dc%d", dc), MemberAlive)
				}
			}
			return c, now
		}
		name := fmt.Sprintf("%dmembers-%ddcs", size.dcs*size.perDC, size.dcs)
		b.Run(name+"/member", func(b *testing.B) {
			c, now := world(b)
			states := []MemberState{MemberSuspect, MemberAlive}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				now = now.Add(time.Millisecond)
				c.MemberUpdate(now, "dc3-m1", "dc3", states[i%2])
				i++
			}
		})
		b.Run(name+"/rtt", func(b *testing.B) {
			c, now := world(b)
			b.ReportAllocs()
			for b.Loop() {
				now = now.Add(time.Millisecond)
				c.RTT(now, "dc3", 2*time.Millisecond)
			}
		})
		b.Run(name+"/tick", func(b *testing.B) {
			c, now := world(b)
			b.ReportAllocs()
			for b.Loop() {
				now = now.Add(time.Second)
				c.Tick(now)
			}
		})
	}
}

func TestMemberNamesListsTheCountedMembersSorted(t *testing.T) {
	w := newWorld(t, map[string]int{"dc2": 1, "dc1": 2})
	w.record(w.c.MemberUpdate(w.now, memberName("dc1", 1), "dc1", MemberLeft))
	if got := strings.Join(w.c.MemberNames(), ","); got != "dc1-m0,dc2-m0" {
		t.Fatalf("MemberNames = %s", got)
	}
}

func TestANewLeaderContinuesTheDatacenterStatesWithTheirSinceTimes(t *testing.T) {
	w := newWorld(t, dcs(4, 2))
	w.dark("dc2")
	w.at(6 * time.Second) // dc2 failed alone
	w.dark("dc3")
	w.at(7 * time.Second) // dc3 failing
	before := w.c.Status()

	c2, err := NewCorrelator(DefaultCorrelationConfig())
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range before.Datacenters {
		c2.RestoreDatacenter(w.now, d.Name, d.State, d.Since)
	}
	var evs []CorrelationEvent
	for dc, n := range w.size {
		for i := 0; i < n; i++ {
			s := MemberAlive
			if dc == "dc2" || dc == "dc3" {
				s = MemberDead
			}
			evs = append(evs, c2.MemberUpdate(w.now, memberName(dc, i), dc, s)...)
		}
	}
	if len(evs) != 0 {
		t.Fatalf("restoring and seeding the same view emitted %v", evs)
	}
	after := c2.Status()
	for i, d := range after.Datacenters {
		if b := before.Datacenters[i]; d.Name != b.Name || d.State != b.State || !d.Since.Equal(b.Since) {
			t.Errorf("%s: %s since %s, want %s since %s", d.Name, d.State, d.Since, b.State, b.Since)
		}
	}
	// dc3's confirmation goes on from when it began failing (6s), not from
	// the leader change (7s): failed at 11s.
	if evs := c2.Tick(w.now.Add(3 * time.Second)); len(evs) != 0 {
		t.Fatalf("at 10s: %v, want nothing yet", evs)
	}
	evs = c2.Tick(w.now.Add(4 * time.Second))
	if len(evs) == 0 || evs[0].Datacenter != "dc3" || evs[0].To != DCFailed {
		t.Fatalf("at 11s: %v, want dc3 failed", evs)
	}
	if after.Severity != before.Severity {
		t.Errorf("severity %s, want %s", after.Severity, before.Severity)
	}
}

// The per-datacenter member counts are kept as members change; after any
// sequence of updates (moves between datacenters, leaving, coming back)
// they must equal a recount of the members, and known() the datacenters
// that have members.
func TestMemberCountsFollowEveryUpdate(t *testing.T) {
	c, err := NewCorrelator(DefaultCorrelationConfig())
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	states := []MemberState{MemberAlive, MemberSuspect, MemberDead, MemberLeft}
	now := t0
	for step := range 5000 {
		now = now.Add(10 * time.Millisecond)
		node := fmt.Sprintf("m%d", rng.IntN(12))
		dc := fmt.Sprintf("dc%d", rng.IntN(4))
		c.MemberUpdate(now, node, dc, states[rng.IntN(len(states))])

		want := map[string][3]int{}
		for _, m := range c.members {
			n := want[m.dc]
			switch m.state {
			case MemberAlive:
				n[0]++
			case MemberSuspect:
				n[1]++
			case MemberDead:
				n[2]++
			}
			want[m.dc] = n
		}
		for dc := range c.dcs {
			a, s, d := c.counts(dc)
			if got := [3]int{a, s, d}; got != want[dc] {
				t.Fatalf("step %d: %s counts alive/suspect/dead %v, recount %v", step, dc, got, want[dc])
			}
		}
		if c.episode == nil && c.known() != len(want) {
			t.Fatalf("step %d: known() = %d, %d datacenters have members", step, c.known(), len(want))
		}
	}
}

// A member forgotten without its datacenter (a resync that no longer
// lists it) leaves the datacenter it was counted in; no datacenter named
// "" appears.
func TestAForgottenMemberLeavesItsDatacenter(t *testing.T) {
	w := newWorld(t, dcs(3, 2))
	w.record(w.c.MemberUpdate(w.now, "dc1-m0", "", MemberLeft))
	w.record(w.c.Forget(w.now, []string{"dc2-m0", "nobody"}))
	for _, d := range w.c.Status().Datacenters {
		if d.Name == "" {
			t.Fatalf("a datacenter named \"\": %s", w.c.Status())
		}
		if want := map[string]int{"dc1": 1, "dc2": 1, "dc3": 2}[d.Name]; d.Alive != want {
			t.Errorf("%s has %d alive members, want %d", d.Name, d.Alive, want)
		}
	}
}

// A new leader restores the episode and the states, then loads its whole
// membership at once: the held datacenters (alive member sorted before
// their dead majority) stay failed and the episode goes on, without a
// heal and a second detection.
func TestANewLeaderLoadingItsMembersContinuesTheEpisode(t *testing.T) {
	w := newWorld(t, dcs(5, 3))
	for _, dc := range []string{"dc3", "dc4", "dc5"} {
		w.record(w.c.MemberUpdate(w.now, memberName(dc, 1), dc, MemberDead))
		w.record(w.c.MemberUpdate(w.now, memberName(dc, 2), dc, MemberDead))
	}
	w.at(10 * time.Second)
	st := w.c.Status()
	if st.Episode == nil {
		t.Fatalf("no episode: %s", st)
	}
	next, err := NewCorrelator(DefaultCorrelationConfig())
	if err != nil {
		t.Fatal(err)
	}
	now := w.now.Add(time.Second)
	next.Restore(now, *st.Episode)
	for _, d := range st.Datacenters {
		next.RestoreDatacenter(now, d.Name, d.State, d.Since)
	}
	var list []MemberObservation
	for _, dc := range []string{"dc1", "dc2", "dc3", "dc4", "dc5"} {
		for i := range 3 {
			s := MemberAlive
			if dc >= "dc3" && i > 0 {
				s = MemberDead
			}
			list = append(list, MemberObservation{Name: memberName(dc, i), Datacenter: dc, State: s})
		}
	}
	if evs := next.SetMembers(now, 0, list); len(evs) != 0 {
		t.Errorf("loading the same view decided %+v, want nothing", evs)
	}
	if got := next.Status(); got.Episode == nil || got.Episode.ID != st.Episode.ID || !slicesEqual(got.Held, st.Held) {
		t.Fatalf("after loading the members: %s, want episode %s holding %v", got, st.Episode.ID, st.Held)
	}
	// Members the list no longer has are forgotten.
	if evs := next.SetMembers(now, 0, list[1:]); len(evs) != 0 {
		t.Errorf("dropping one alive member of dc1 decided %+v", evs)
	}
	if d := next.Status().Datacenters[0]; d.Name != "dc1" || d.Alive != 2 {
		t.Errorf("dc1 after the shorter list: %+v", d)
	}
}

func slicesEqual(a, b []string) bool { return strings.Join(a, ",") == strings.Join(b, ",") }

// While this node's health score says its own view is not trusted, blips
// that make datacenters flapping start no episode.
func TestAnUntrustedViewStartsNoEpisodeThroughFlapping(t *testing.T) {
	w := newWorld(t, dcs(3, 2))
	w.record(w.c.LocalHealth(w.now, 6))
	for k := range 3 {
		w.dark("dc1", "dc2", "dc3")
		w.at(time.Duration(2*k+1) * time.Second)
		w.light("dc1", "dc2", "dc3")
		w.at(time.Duration(2*k+2) * time.Second)
	}
	w.dark("dc1", "dc2", "dc3")
	w.at(400 * time.Second) // past the flapping cooldown
	if n := w.count(EventPartitionDetected); n != 0 {
		t.Fatalf("partition detected %d times from an untrusted view (%s)", n, w.c.Status())
	}
	if st := w.c.Status(); st.Datacenters[0].State != DCFlapping {
		t.Fatalf("dc1 is %s; with an untrusted view its failure is not confirmed (%s)", st.Datacenters[0].State, st)
	}
	// Trusted again: the view is taken at face value.
	w.record(w.c.LocalHealth(w.now, 0))
	w.at(401 * time.Second)
	if n := w.count(EventPartitionDetected); n != 1 {
		t.Fatalf("partition detected %d times once the view is trusted, want 1 (%s)", n, w.c.Status())
	}
}

// A datacenter that fails again while recovering from an old outage
// correlates with the others failing now.
func TestADatacenterFailingAgainWhileRecoveringCorrelatesFromNow(t *testing.T) {
	w := newWorld(t, dcs(3, 2))
	w.dark("dc1")
	w.at(600 * time.Second)
	w.light("dc1")
	w.at(610 * time.Second)
	w.expect("dc1 back", SeverityNone, map[string]DCState{"dc1": DCRecovering})
	w.dark("dc1", "dc2", "dc3")
	w.at(620 * time.Second)
	w.expect("three dark together", SeverityHigh, map[string]DCState{"dc1": DCFailed, "dc2": DCFailed, "dc3": DCFailed})
	if n := w.count(EventPartitionDetected); n != 1 {
		t.Fatalf("partition detected %d times, want 1", n)
	}
}

// Episode ids never repeat, even for detections in the same instant
// (late inputs are stamped with the engine's time), nor after a new
// leader restores an episode with a suffixed id.
func TestEpisodeIDsNeverRepeat(t *testing.T) {
	w := newWorld(t, dcs(4, 1))
	w.dark("dc1", "dc2", "dc3")
	w.at(10 * time.Second)
	for range 3 { // heal and detect again, all at the same instant
		for _, dc := range []string{"dc1", "dc2"} {
			w.record(w.c.MemberUpdate(w.now, memberName(dc, 0), dc, MemberAlive))
			w.record(w.c.MemberUpdate(w.now, memberName(dc, 0), dc, MemberDead))
		}
	}
	var ids []string
	for _, e := range w.events {
		if e.Type == EventPartitionDetected {
			ids = append(ids, e.Episode)
		}
	}
	if len(ids) < 3 {
		t.Fatalf("want several detections in one instant, got %v", ids)
	}
	// A new leader restores the last one and detects again in the same
	// instant.
	next, err := NewCorrelator(DefaultCorrelationConfig())
	if err != nil {
		t.Fatal(err)
	}
	next.Restore(w.now, *w.c.Status().Episode)
	for _, dc := range []string{"dc1", "dc2", "dc3", "dc4"} {
		s := MemberDead
		if dc == "dc4" {
			s = MemberAlive
		}
		next.MemberUpdate(w.now, memberName(dc, 0), dc, s)
	}
	next.MemberUpdate(w.now, memberName("dc1", 0), "dc1", MemberAlive)
	next.MemberUpdate(w.now, memberName("dc2", 0), "dc2", MemberAlive)
	for _, dc := range []string{"dc1", "dc2"} {
		for _, e := range next.MemberUpdate(w.now, memberName(dc, 0), dc, MemberDead) {
			if e.Type == EventPartitionDetected {
				ids = append(ids, e.Episode)
			}
		}
	}
	seen := map[string]bool{}
	for _, id := range ids {
		if seen[id] {
			t.Fatalf("episode id %s repeated: %v", id, ids)
		}
		seen[id] = true
	}
}

// A recovering datacenter that becomes flapping starts a new outage: when
// two others fail with it, it is a partition.
func TestADatacenterFlappingAfterRecoveringCorrelatesFromNow(t *testing.T) {
	w := newWorld(t, dcs(3, 2))
	w.dark("dc1")
	w.at(60 * time.Second)
	w.light("dc1")
	w.at(70 * time.Second)
	w.expect("dc1 back", SeverityNone, map[string]DCState{"dc1": DCRecovering})
	w.dark("dc1", "dc2", "dc3") // dc1's third flip within 120s: flapping
	w.at(80 * time.Second)
	w.expect("three dark together", SeverityHigh, map[string]DCState{"dc1": DCFlapping, "dc2": DCFailed, "dc3": DCFailed})
	if n := w.count(EventPartitionDetected); n != 1 {
		t.Fatalf("partition detected %d times, want 1 (%s)", n, w.c.Status())
	}
}

// A new leader whose own view is untrusted loads datacenters an earlier
// untrusted leader left failing for minutes: it confirms nothing and
// starts no episode.
func TestAnUntrustedNewLeaderSeedsWithoutConfirming(t *testing.T) {
	c, err := NewCorrelator(DefaultCorrelationConfig())
	if err != nil {
		t.Fatal(err)
	}
	now := t0.Add(10 * time.Minute)
	var list []MemberObservation
	for _, dc := range []string{"dc1", "dc2", "dc3", "dc4", "dc5"} {
		st, ms := DCHealthy, MemberAlive
		if dc >= "dc3" {
			st, ms = DCFailing, MemberDead
		}
		c.RestoreDatacenter(now, dc, st, t0)
		for i := range 2 {
			list = append(list, MemberObservation{Name: memberName(dc, i), Datacenter: dc, State: ms})
		}
	}
	for _, e := range c.SetMembers(now, 6, list) {
		if e.Type == EventPartitionDetected || e.To == DCFailed {
			t.Fatalf("an untrusted new leader decided %+v while seeding", e)
		}
	}
	// Trusted again: the outages are confirmed.
	evs := c.LocalHealth(now.Add(time.Second), 0)
	if st := c.Status(); st.Episode == nil {
		t.Fatalf("trusted again, no episode: %s (%+v)", st, evs)
	}
}
