package swim

import (
	"errors"
	"io"
	"log"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/coordinatord/coordinatord/engine"
)

// The states are engine.MemberState's, so the server converts directly.
func TestStatesAreTheCorrelationEnginesMemberStates(t *testing.T) {
	for s, want := range map[State]engine.MemberState{
		StateAlive: engine.MemberAlive, StateSuspect: engine.MemberSuspect,
		StateDead: engine.MemberDead, StateLeft: engine.MemberLeft,
	} {
		if engine.MemberState(s) != want {
			t.Errorf("State %q converts to %q, want %q", s, engine.MemberState(s), want)
		}
	}
}

func TestFiveMembersInTwoDatacenters(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t)
	want := map[string]Meta{}
	var all []*recorder
	for _, n := range []struct {
		name, dc string
		role     Role
	}{
		{"a1", "dc-a", RoleCoordinator}, {"a2", "dc-a", RoleAgent},
		{"b1", "dc-b", RoleCoordinator}, {"b2", "dc-b", RoleAgent}, {"b3", "dc-b", RoleAgent},
	} {
		r := c.start(n.name, n.dc, n.role)
		all = append(all, r)
		want[n.name] = Meta{NodeID: n.name, Datacenter: n.dc, Role: n.role, Version: "test"}
	}
	a1, a2, b1, b2, b3 := all[0], all[1], all[2], all[3], all[4]
	for _, r := range all[1:] {
		if n, err := r.Join([]string{a1.addr()}); err != nil || n != 1 {
			t.Fatalf("%s joins a1: %d, %v", r.Name(), n, err)
		}
	}

	t.Run("every member lists all five alive with their metadata", func(t *testing.T) {
		for _, r := range all {
			waitFor(t, 10*time.Second, r.Name()+" lists five alive members", func() bool {
				ms := r.Members()
				if len(ms) != 5 {
					return false
				}
				for _, m := range ms {
					if m.State != StateAlive || m.Meta != want[m.Name] {
						return false
					}
				}
				return true
			})
			// Each was reported as new and alive, with its metadata (the
			// recorder may lag behind Members by a moment).
			for name, meta := range want {
				waitFor(t, 5*time.Second, r.Name()+" recorded an event about "+name, func() bool { return len(r.eventsAbout(name, 0)) > 0 })
				if ev := r.eventsAbout(name, 0)[0]; ev.State != StateAlive || ev.Previous != "" || ev.Member.Meta != meta {
					t.Errorf("%s: first event about %s = %+v, want a new alive member with %+v", r.Name(), name, ev, meta)
				}
			}
		}
	})

	t.Run("RTT samples carry the probed member's datacenter", func(t *testing.T) {
		for _, r := range all {
			waitFor(t, 10*time.Second, r.Name()+" has RTT samples of both datacenters", func() bool {
				seen := map[string]bool{}
				for _, s := range r.samples() {
					seen[s.Datacenter] = true
				}
				return seen["dc-a"] && seen["dc-b"]
			})
			for _, s := range r.samples() {
				if s.Datacenter != want[s.Node].Datacenter || s.Node == r.Name() || s.RTT <= 0 || s.At.IsZero() {
					t.Errorf("%s: bad sample %+v", r.Name(), s)
				}
			}
		}
	})

	t.Run("a member that stops is suspect then dead on every other member", func(t *testing.T) {
		others := []*recorder{a1, a2, b1, b2}
		base := baseline(t, others, "b3")
		if err := b3.Shutdown(); err != nil {
			t.Fatal(err)
		}
		for _, r := range others {
			waitFor(t, 10*time.Second, r.Name()+" sees b3 dead", func() bool { return r.state("b3") == StateDead })
			waitFor(t, 5*time.Second, r.Name()+" recorded b3's death", func() bool {
				evs := r.eventsAbout("b3", base[r])
				return len(evs) > 0 && evs[len(evs)-1].State == StateDead
			})
			// Normally exactly [suspect dead]; a late refutation of an
			// earlier (false) suspicion may insert alive, suspect.
			evs := r.eventsAbout("b3", base[r])
			st := states(evs)
			last := len(evs) - 1
			if len(evs) < 2 || st[0] != StateSuspect || evs[0].Previous != StateAlive ||
				st[last-1] != StateSuspect || evs[last].Previous != StateSuspect || slices.Index(st, StateDead) != last ||
				evs[last-1].Seq >= evs[last].Seq || evs[last].At.Before(evs[last-1].At) {
				t.Errorf("%s: events about b3 after it stopped: %+v, want suspect (from alive) then dead (from suspect)", r.Name(), evs)
			}
		}
	})

	t.Run("a member that leaves is left on every other member", func(t *testing.T) {
		others := []*recorder{a1, b1, b2}
		base := baseline(t, others, "a2")
		if err := a2.Leave(5 * time.Second); err != nil {
			t.Fatal(err)
		}
		if got := a2.state("a2"); got != StateLeft {
			t.Errorf("a2 sees itself %q after Leave, want left", got)
		}
		for _, r := range others {
			waitFor(t, 10*time.Second, r.Name()+" sees a2 left", func() bool { return r.state("a2") == StateLeft })
			waitFor(t, 5*time.Second, r.Name()+" recorded a2's leave", func() bool {
				evs := r.eventsAbout("a2", base[r])
				return len(evs) > 0 && evs[len(evs)-1].State == StateLeft
			})
			if evs := r.eventsAbout("a2", base[r]); slices.Contains(states(evs), StateDead) {
				t.Errorf("%s: events about a2 after it left: %+v, want it to end left, never dead", r.Name(), evs)
			}
		}
		if err := a2.Shutdown(); err != nil {
			t.Fatal(err)
		}
		if _, err := a2.Join([]string{a1.addr()}); !errors.Is(err, ErrShutdown) {
			t.Errorf("Join after Shutdown: %v, want ErrShutdown", err)
		}
		if err := a2.Leave(time.Second); !errors.Is(err, ErrShutdown) {
			t.Errorf("Leave after Shutdown: %v, want ErrShutdown", err)
		}
	})
}

func TestAMemberWithoutTheKeyCannotJoin(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t)
	a := c.start("a", "dc-a", RoleCoordinator)
	b := c.start("b", "dc-b", RoleAgent)
	if _, err := b.Join([]string{a.addr()}); err != nil {
		t.Fatal(err)
	}

	// A member with another key.
	cfg := c.config("intruder", "dc-a", RoleAgent)
	other, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	cfg.SecretKey = other
	intruder := c.startConfig(cfg)
	// Its join fails on the key (the intruder cannot read the answers),
	// not on anything else.
	if n, err := intruder.Join([]string{a.addr(), b.addr()}); err == nil || n != 0 || !strings.Contains(err.Error(), "decrypt") {
		t.Errorf("a member with another key joined %d members (err %v), want none, for want of the key", n, err)
	}

	// A plain memberlist without encryption, with valid metadata.
	pc := memberlist.DefaultLocalConfig()
	pc.Name, pc.BindAddr, pc.BindPort = "plain", "127.0.0.1", 0
	pc.Logger = log.New(io.Discard, "", 0)
	meta, _ := Meta{NodeID: "plain", Datacenter: "dc-a", Role: RoleAgent, Version: "test"}.Encode()
	pc.Delegate = fixedMeta(meta)
	plain, err := memberlist.Create(pc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = plain.Shutdown() })
	if n, err := plain.Join([]string{a.addr()}); err == nil || n != 0 || !strings.Contains(err.Error(), "encrypt") {
		t.Errorf("an unencrypted member joined %d members (err %v), want none", n, err)
	}

	// A member with the key joining afterwards is seen by everyone: by
	// then, anything the intruders had slipped in would be visible too.
	d := c.start("d", "dc-b", RoleAgent)
	if _, err := d.Join([]string{b.addr()}); err != nil {
		t.Fatal(err)
	}
	for _, r := range []*recorder{a, b, d} {
		waitFor(t, 10*time.Second, r.Name()+" lists a, b and d", func() bool { return len(r.Members()) == 3 })
		for _, m := range r.Members() {
			if m.Name == "intruder" || m.Name == "plain" {
				t.Errorf("%s lists %s", r.Name(), m.Name)
			}
		}
		if evs := append(r.eventsAbout("intruder", 0), r.eventsAbout("plain", 0)...); len(evs) > 0 {
			t.Errorf("%s has events about the intruders: %+v", r.Name(), evs)
		}
	}
	if ms := intruder.Members(); len(ms) != 1 || ms[0].Name != "intruder" {
		t.Errorf("the intruder lists %+v, want only itself", ms)
	}
	if n := plain.NumMembers(); n != 1 {
		t.Errorf("the unencrypted member knows %d members, want only itself", n)
	}
}

// baseline waits until every observer lists node alive and has recorded
// that, and returns how many events about node each has recorded so far.
func baseline(t *testing.T, observers []*recorder, node string) map[*recorder]int {
	t.Helper()
	base := map[*recorder]int{}
	for _, r := range observers {
		waitFor(t, 10*time.Second, r.Name()+" lists "+node+" alive", func() bool {
			evs := r.eventsAbout(node, 0)
			return r.state(node) == StateAlive && len(evs) > 0 && evs[len(evs)-1].State == StateAlive
		})
		base[r] = len(r.eventsAbout(node, 0))
	}
	return base
}

type fixedMeta []byte

func (f fixedMeta) NodeMeta(int) []byte                  { return f }
func (fixedMeta) NotifyMsg([]byte)                       {}
func (fixedMeta) GetBroadcasts(int, int) [][]byte        { return nil }
func (fixedMeta) LocalState(bool) []byte                 { return nil }
func (fixedMeta) MergeRemoteState(buf []byte, join bool) {}

// memberlist's own member list says alive for a suspect member: the
// reason this package reads memberlist's node table (see the package
// documentation). If a memberlist upgrade makes this test fail, the state
// has become visible and the table reading can go.
func TestMemberlistOwnListHidesSuspicions(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t)
	long := func(cfg Config) Config { cfg.Timing.SuspicionMult = 30; return cfg } // suspicions of 3s and more
	a := c.startConfig(long(c.config("a", "dc-a", RoleCoordinator)))
	b := c.startConfig(long(c.config("b", "dc-a", RoleAgent)))
	x := c.startConfig(long(c.config("x", "dc-b", RoleAgent)))
	for _, r := range []*recorder{b, x} {
		if _, err := r.Join([]string{a.addr()}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "a lists x alive", func() bool { return a.state("x") == StateAlive })
	if err := x.Shutdown(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "a sees x suspect", func() bool { return a.state("x") == StateSuspect })
	found := false
	for _, n := range a.ml.Members() { // Node.State is never written, so reading it is race-free
		if n.Name == "x" {
			found = true
			if n.State != memberlist.StateAlive {
				t.Errorf("memberlist's Members() shows x %v: it now exposes states; simplify this package", n.State)
			}
		}
	}
	if !found {
		t.Errorf("memberlist's Members() does not list suspect x")
	}
}

func TestASlowConsumerLosesEventsButNotGossip(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t)
	cfg := c.config("slow", "dc-a", RoleCoordinator)
	cfg.EventBuffer = 1
	slow, err := New(cfg) // nobody reads its events
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = slow.Shutdown() })
	peers := []*recorder{c.start("p1", "dc-a", RoleAgent), c.start("p2", "dc-b", RoleAgent), c.start("p3", "dc-b", RoleAgent)}
	for _, p := range peers {
		if _, err := p.Join([]string{slow.LocalMember().Addr}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "the slow consumer's member lists everyone", func() bool { return len(slow.Members()) == 4 })
	for _, p := range peers {
		waitFor(t, 10*time.Second, p.Name()+" lists everyone", func() bool { return len(p.Members()) == 4 })
	}
	st := slow.Stats()
	if st.Events != 1 || st.EventsDropped < 3 {
		t.Errorf("stats %+v: want 1 event delivered (its own alive) and at least 3 (the joins) dropped", st)
	}
	if got := gather(t, slow.Collectors(), "coordinatord_swim_member_events_dropped_total", nil); got < 3 {
		t.Errorf("dropped-events metric = %v, want at least 3", got)
	}
	first := <-slow.Events()
	if first.Seq != 1 || first.Member.Name != "slow" {
		t.Errorf("first event %+v, want seq 1 about itself", first)
	}
	// The next one shows the gap.
	if err := peers[0].Leave(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	next := <-slow.Events()
	if next.Seq <= first.Seq+1 {
		t.Errorf("event after the drops has seq %d: no gap after %d", next.Seq, first.Seq)
	}
	if st := slow.Stats(); st.PacketsSent == 0 || st.PacketBytesReceived == 0 || st.StreamsAccepted == 0 || st.StreamBytesReceived == 0 {
		t.Errorf("transport counters not counting: %+v", st)
	}
}

func TestALossyPoolStillConverges(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t)
	var lossy []*LossyTransport
	var rs []*recorder
	for i, name := range []string{"l1", "l2", "l3"} {
		cfg := c.config(name, "dc-a", RoleAgent)
		cfg.WrapTransport = func(inner memberlist.NodeAwareTransport) memberlist.NodeAwareTransport {
			lt, err := NewLossyTransport(inner, LossyConfig{Loss: 0.2, Delay: time.Millisecond, Jitter: time.Millisecond, Seed: uint64(i + 1)})
			if err != nil {
				t.Fatal(err)
			}
			lossy = append(lossy, lt)
			return lt
		}
		rs = append(rs, c.startConfig(cfg))
	}
	for _, r := range rs[1:] {
		if _, err := r.Join([]string{rs[0].addr()}); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range rs {
		waitFor(t, 10*time.Second, r.Name()+" lists three members", func() bool { return len(r.Members()) == 3 })
	}
	waitFor(t, 10*time.Second, "packets dropped", func() bool {
		for _, lt := range lossy {
			if _, dropped := lt.Stats(); dropped == 0 {
				return false
			}
		}
		return true
	})
	for i, r := range rs {
		got := gather(t, r.Collectors(), "coordinatord_swim_injected_packet_drops_total", nil)
		if _, dropped := lossy[i].Stats(); got == 0 || got > float64(dropped) {
			t.Errorf("%s: injected drops metric = %v, transport counted %d", r.Name(), got, dropped)
		}
	}
}

func TestAForgottenMemberLeavesTheViewWithoutAnEvent(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t)
	quick := func(cfg Config) Config {
		cfg.Timing.GossipToTheDeadTime = 300 * time.Millisecond
		cfg.DeadMemberRetention = 0
		return cfg
	}
	a := c.startConfig(quick(c.config("a", "dc-a", RoleCoordinator)))
	b := c.startConfig(quick(c.config("b", "dc-a", RoleAgent)))
	x := c.startConfig(quick(c.config("x", "dc-b", RoleAgent)))
	for _, r := range []*recorder{b, x} {
		if _, err := r.Join([]string{a.addr()}); err != nil {
			t.Fatal(err)
		}
	}
	base := baseline(t, []*recorder{a}, "x")
	if err := x.Shutdown(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "a forgets x", func() bool { return a.state("x") == "" })
	evs := a.eventsAbout("x", base[a])
	if len(evs) == 0 || evs[len(evs)-1].State != StateDead {
		t.Errorf("events about x: %+v, want the last one dead (forgetting it emits none)", evs)
	}
	for s, want := range map[string]float64{"alive": 2, "suspect": 0, "dead": 0, "left": 0} {
		if got := gather(t, a.Collectors(), "coordinatord_swim_members", map[string]string{"state": s}); got != want {
			t.Errorf("members gauge %s = %v, want %v", s, got, want)
		}
	}
}

// A dead member stays in the view as dead for DeadMemberRetention after
// memberlist forgets it, then leaves without an event; a member that left
// gracefully is forgotten with memberlist.
func TestADeadMemberIsRetainedAfterMemberlistForgetsIt(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t)
	const retention = 2 * time.Second
	quick := func(cfg Config) Config {
		cfg.Timing.GossipToTheDeadTime = 300 * time.Millisecond
		cfg.DeadMemberRetention = retention
		return cfg
	}
	a := c.startConfig(quick(c.config("a", "dc-a", RoleCoordinator)))
	b := c.startConfig(quick(c.config("b", "dc-a", RoleAgent)))
	x := c.startConfig(quick(c.config("x", "dc-b", RoleAgent)))
	y := c.startConfig(quick(c.config("y", "dc-b", RoleAgent)))
	for _, r := range []*recorder{b, x, y} {
		if _, err := r.Join([]string{a.addr()}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "a lists x and y alive", func() bool { return a.state("x") == StateAlive && a.state("y") == StateAlive })
	if err := y.Leave(time.Second); err != nil {
		t.Fatal(err)
	}
	if err := y.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if err := x.Shutdown(); err != nil {
		t.Fatal(err)
	}
	var dead time.Time
	waitFor(t, 10*time.Second, "a sees x dead", func() bool {
		if a.state("x") == StateDead {
			dead = time.Now()
			return true
		}
		return false
	})
	inMemberlist := func(name string) bool {
		for _, n := range a.ml.Members() {
			if n.Name == name {
				return true
			}
		}
		return false
	}
	waitFor(t, 10*time.Second, "memberlist forgets x and y", func() bool { return !inMemberlist("x") && !inMemberlist("y") })
	if got := a.state("y"); got != "" {
		t.Errorf("y left gracefully and memberlist forgot it, yet a lists it %q", got)
	}
	if got := a.state("x"); got != StateDead && time.Since(dead) < retention {
		t.Fatalf("x is %q %s after its death, within the retention: want dead", got, time.Since(dead).Round(time.Millisecond))
	}
	if got := gather(t, a.Collectors(), "coordinatord_swim_members", map[string]string{"state": "dead"}); got != 1 && time.Since(dead) < retention {
		t.Errorf("members gauge dead = %v, want 1 while x is retained", got)
	}
	waitFor(t, 10*time.Second, "a forgets x after the retention", func() bool { return a.state("x") == "" })
	// dead is when this test saw x dead, at most a poll after the view did.
	if since := time.Since(dead); since < retention-250*time.Millisecond {
		t.Errorf("x forgotten %s after its death, before the retention of %s", since, retention)
	}
}
