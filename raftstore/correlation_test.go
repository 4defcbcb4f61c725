package raftstore

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/coordinatord/coordinatord/engine"
)

func episodeAt(at time.Time, dcs ...string) *engine.Episode {
	return &engine.Episode{ID: "ep-1", DetectedAt: at, Severity: engine.SeverityMedium, Datacenters: dcs, NotifiedAt: at, Notified: engine.SeverityMedium}
}

func putCorrelation(t *testing.T, s *Store, u CorrelationUpdate) CorrelationResult {
	t.Helper()
	res, err := s.PutCorrelation(tctx(t), u)
	if err != nil {
		t.Fatalf("PutCorrelation: %v", err)
	}
	return res
}

func TestTheLastCorrelationRecordWinsAndKeepsAShortHistory(t *testing.T) {
	clk := newFakeClock()
	dir := t.TempDir()
	s := openStore(t, leaseConfig(t, dir, clk))
	if s.Correlation() != nil {
		t.Fatal("a fresh store has a correlation record")
	}
	for i := range MaxCorrelationEvents + 10 {
		ev := engine.CorrelationEvent{Type: engine.EventDCStateChanged, At: clk.Now(), Datacenter: fmt.Sprintf("dc%d", i), From: engine.DCHealthy, To: engine.DCFailing}
		putCorrelation(t, s, CorrelationUpdate{Severity: engine.SeverityNone, Events: []engine.CorrelationEvent{ev},
			Datacenters: []DatacenterState{{Name: ev.Datacenter, State: engine.DCFailing, Since: clk.Now()}}})
	}
	rec := s.Correlation()
	if rec == nil || rec.Revision != MaxCorrelationEvents+10 || rec.Leader != "n1" || len(rec.Events) != MaxCorrelationEvents {
		t.Fatalf("record %+v", rec)
	}
	if first := rec.Events[0].Datacenter; first != "dc10" {
		t.Errorf("oldest kept event is about %s, want dc10 (the 10 oldest dropped)", first)
	}
	if len(rec.Datacenters) != 1 || rec.Datacenters[0].Name != fmt.Sprintf("dc%d", MaxCorrelationEvents+9) {
		t.Errorf("datacenters %+v: the last record's, not merged", rec.Datacenters)
	}

	// The record survives a restart and a snapshot restore.
	if err := s.Snapshot(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := openStore(t, leaseConfig(t, dir, clk))
	if got := s2.Correlation(); got == nil || got.Revision != rec.Revision || got.Index != rec.Index {
		t.Fatalf("after restart: %+v, want revision %d", got, rec.Revision)
	}
}

func TestInvalidCorrelationRecordsAreRefused(t *testing.T) {
	clk := newFakeClock()
	s := openStore(t, leaseConfig(t, t.TempDir(), clk))
	for _, tt := range []struct {
		name string
		u    CorrelationUpdate
	}{
		{"an unknown severity", CorrelationUpdate{Severity: "dire"}},
		{"datacenters held without an episode", CorrelationUpdate{Severity: engine.SeverityNone, Held: []string{"dc1"}}},
		{"an episode without a cap", CorrelationUpdate{Severity: engine.SeverityMedium, Episode: episodeAt(clk.Now(), "dc1")}},
		{"a datacenter listed twice", CorrelationUpdate{Severity: engine.SeverityNone, Datacenters: []DatacenterState{{Name: "a"}, {Name: "a"}}}},
		{"a datacenter name with a space", CorrelationUpdate{Severity: engine.SeverityNone, Grace: []string{"dc 1"}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := s.PutCorrelation(tctx(t), tt.u); !errors.Is(err, ErrInvalid) {
				t.Fatalf("PutCorrelation: %v, want ErrInvalid", err)
			}
		})
	}
	if s.Correlation() != nil {
		t.Fatal("a refused record was stored")
	}
}

func TestAGraceGivesTheReleasedDatacentersLeasesOneTTL(t *testing.T) {
	clk := newFakeClock()
	cfg := leaseConfig(t, t.TempDir(), clk)
	var rec atomic.Pointer[CorrelationRecord]
	cfg.Hold = func(dc string) bool { return rec.Load().Holds(dc, clk.Now()) }
	s := openStore(t, cfg)
	waitExpiryRunning(t, s)
	w := collect(t, s, 0)
	held := acquire(t, s, "held-job", "cut", 100*time.Millisecond) // dc-cut
	acquire(t, s, "other-job", "fine", 100*time.Millisecond)       // dc-fine
	fine := acquire(t, s, "fine-job", "fine", 10*time.Second)      // dc-fine, in time
	later := acquire(t, s, "long-job", "cut", 10*time.Second)      // dc-cut, in time
	ep := episodeAt(clk.Now(), "dc-cut")
	r := putCorrelation(t, s, CorrelationUpdate{Severity: engine.SeverityMedium, Episode: ep, Held: []string{"dc-cut"}, HoldUntil: clk.Now().Add(time.Hour)})
	rec.Store(&r.Record)
	if !s.Correlation().Holds("dc-cut", clk.Now()) || s.Correlation().Holds("dc-fine", clk.Now()) {
		t.Fatalf("committed record %+v", s.Correlation())
	}

	clk.Advance(200 * time.Millisecond)
	waitExpired(t, s, "other-job")
	waitTicks(t, s, 5)
	if st := leaseState(t, s, "held-job"); st != engine.LeaseActive {
		t.Fatalf("held lease is %s during the episode", st)
	}

	// The episode ends: the record releases dc-cut with a grace.
	res := putCorrelation(t, s, CorrelationUpdate{Severity: engine.SeverityNone, Grace: []string{"dc-cut"}})
	rec.Store(&res.Record)
	var graced []string
	for _, l := range res.Graced {
		graced = append(graced, l.JobID)
	}
	if !slices.Equal(graced, []string{"held-job", "long-job"}) {
		t.Fatalf("graced %v, want the active leases of dc-cut", graced)
	}
	g, _ := s.Lease("held-job")
	if want := clk.Now().Add(held.TTL); !g.ExpiresAt.Equal(want) || g.Token != held.Token || g.State != engine.LeaseActive {
		t.Fatalf("after the grace: %+v, want active until %s", g, want)
	}
	if l, _ := s.Lease("long-job"); !l.ExpiresAt.Equal(clk.Now().Add(later.TTL)) {
		t.Errorf("long-job expires at %s, want a TTL from the grace", l.ExpiresAt)
	}
	if l, _ := s.Lease("fine-job"); !l.ExpiresAt.Equal(fine.ExpiresAt) {
		t.Errorf("fine-job (not released) was moved: %s, want %s", l.ExpiresAt, fine.ExpiresAt)
	}
	// The grace is not a lease event, and the expiry queue knows it: the
	// lease stays active until the grace ends, then expires once.
	waitTicks(t, s, 5)
	if st := leaseState(t, s, "held-job"); st != engine.LeaseActive {
		t.Fatalf("graced lease is %s before its grace ended", st)
	}
	clk.Advance(held.TTL)
	waitExpired(t, s, "held-job")
	acquire(t, s, "marker", "fine", time.Minute)
	evs := w.waitFor(t, "the marker", func(evs []engine.LeaseEvent) bool { return countEvents(evs, engine.LeaseEventAcquired, "marker") == 1 })
	if n := countEvents(evs, engine.LeaseEventExpired, "held-job"); n != 1 {
		t.Errorf("held-job expired %d times", n)
	}
	if n := countEvents(evs, engine.LeaseEventRenewed, ""); n != 0 {
		t.Errorf("%d renewed events: the grace must not look like a renewal (%v)", n, eventIDs(evs))
	}
}

func TestAHeldLeaseCanBeRenewedButNotTakenOver(t *testing.T) {
	clk := newFakeClock()
	cfg := leaseConfig(t, t.TempDir(), clk)
	var holding atomic.Bool
	holding.Store(true)
	cfg.Hold = func(dc string) bool { return dc == "dc-cut" && holding.Load() }
	s := openStore(t, cfg)
	waitExpiryRunning(t, s)
	l := acquire(t, s, "j", "cut", 100*time.Millisecond)
	acquire(t, s, "k", "cut", 100*time.Millisecond)
	clk.Advance(time.Second)
	waitTicks(t, s, 5)

	// Another owner's acquire is refused as for a lease in time.
	_, err := s.AcquireLease(tctx(t), engine.AcquireRequest{JobID: "j", Owner: "thief", OwnerDC: "dc-fine", TTL: time.Second})
	if !errors.Is(err, engine.ErrLeaseHeld) {
		t.Fatalf("acquire of a held lease by another owner: %v, want ErrLeaseHeld", err)
	}
	// Its owner renews it: same token, in time again.
	r, err := s.RenewLease(tctx(t), engine.RenewRequest{JobID: "j", Owner: "cut", Token: l.Token})
	if err != nil || r.Token != l.Token || !r.ExpiresAt.Equal(clk.Now().Add(l.TTL)) {
		t.Fatalf("renew of a held lease: %+v, %v", r, err)
	}
	// And releases the other one: released, not expired.
	rel, err := s.ReleaseLease(tctx(t), engine.ReleaseRequest{JobID: "k", Owner: "cut", Token: 1})
	if err != nil || rel.State != engine.LeaseReleased {
		t.Fatalf("release of a held lease: %+v, %v", rel, err)
	}
	// Without the hold, a command finds the lease out of time as before.
	holding.Store(false)
	clk.Advance(time.Second)
	if _, err := s.RenewLease(tctx(t), engine.RenewRequest{JobID: "j", Owner: "cut", Token: l.Token}); !errors.Is(err, engine.ErrLeaseExpired) {
		t.Fatalf("renew after the hold: %v, want ErrLeaseExpired", err)
	}
	if got, _ := s.Leases(LeaseFilter{State: engine.LeaseActive}); len(got) != 0 {
		t.Errorf("active leases left: %+v", got)
	}
}

// The hold cap across episodes. A partition that blips (heals for a moment,
// fails again: a new episode) must not keep a lease its owner abandoned
// alive forever: it is held for at most MaxLeaseHold past the expiry its
// owner last set, and a grace never takes it past that plus one TTL.

// capMaxHold and capTTL are the cap tests' MaxLeaseHold and lease TTL.
const (
	capMaxHold = time.Second
	capTTL     = 100 * time.Millisecond
)

// capAction is one step of a blipping partition, seen from one lease
// (job "cap-job", owner "cut" in dc-cut).
type capAction int

const (
	// capHold commits a new episode holding dc-cut, with HoldUntil its
	// detection plus MaxLeaseHold, as the server sets it.
	capHold capAction = iota
	// capHeal ends the episode: dc-cut is released with a grace.
	capHeal
	// capRenew is the owner's renew.
	capRenew
	// capActive checks that the lease is still active once the expiry
	// loop has looked at the clock.
	capActive
	// capExpired checks that the expiry loop expires the lease now.
	capExpired
	// capRestart closes the store and opens it again.
	capRestart
	// capFromSnapshot snapshots, closes, removes state.db and opens the
	// store again: the state comes back from the snapshot.
	capFromSnapshot
	// capOldFormat closes the store, strips owner_expires_at from the
	// stored lease (as a node before the field wrote it) and opens it
	// again.
	capOldFormat
)

// capStep is an action at a time counted from the lease's acquisition.
// expiresAt, when set, is the ExpiresAt the lease must have after it
// (from the acquisition too).
type capStep struct {
	at        time.Duration
	do        capAction
	expiresAt time.Duration
}

// capHarness runs capSteps against a store with the fake clock, the
// correlation record as the expiry hook reads it, and MaxLeaseHold
// capMaxHold.
type capHarness struct {
	t        *testing.T
	cfg      Config
	dir      string
	s        *Store
	clk      *fakeClock
	rec      atomic.Pointer[CorrelationRecord]
	start    time.Time
	lease    engine.Lease
	episodes int
}

func newCapHarness(t *testing.T) *capHarness {
	h := &capHarness{t: t, clk: newFakeClock(), dir: t.TempDir()}
	h.cfg = leaseConfig(t, h.dir, h.clk)
	h.cfg.MaxLeaseHold = capMaxHold
	h.cfg.TrailingLogs = 0
	h.cfg.Hold = func(dc string) bool { return h.rec.Load().Holds(dc, h.clk.Now()) }
	h.s = openStore(t, h.cfg)
	waitExpiryRunning(t, h.s)
	h.start = h.clk.Now()
	h.lease = acquire(t, h.s, "cap-job", "cut", capTTL)
	return h
}

func (h *capHarness) run(steps []capStep) {
	t := h.t
	t.Helper()
	for i, st := range steps {
		at := h.start.Add(st.at)
		if at.Before(h.clk.Now()) {
			t.Fatalf("step %d at %s goes back in time", i, st.at)
		}
		h.clk.Advance(at.Sub(h.clk.Now()))
		switch st.do {
		case capHold:
			h.episodes++
			ep := &engine.Episode{ID: fmt.Sprintf("ep-%d", h.episodes), DetectedAt: at, Severity: engine.SeverityMedium,
				Datacenters: []string{"dc-cut"}, NotifiedAt: at, Notified: engine.SeverityMedium}
			r := putCorrelation(t, h.s, CorrelationUpdate{Severity: engine.SeverityMedium, Episode: ep, Held: []string{"dc-cut"}, HoldUntil: at.Add(capMaxHold)})
			h.rec.Store(&r.Record)
		case capHeal:
			r := putCorrelation(t, h.s, CorrelationUpdate{Severity: engine.SeverityNone, Grace: []string{"dc-cut"}})
			h.rec.Store(&r.Record)
		case capRenew:
			if _, err := h.s.RenewLease(tctx(t), engine.RenewRequest{JobID: "cap-job", Owner: "cut", Token: h.lease.Token}); err != nil {
				t.Fatalf("step %d: renew at %s: %v", i, st.at, err)
			}
		case capActive:
			waitTicks(t, h.s, 5)
			if l, _ := h.s.Lease("cap-job"); l.State != engine.LeaseActive {
				t.Fatalf("step %d: the lease is %s at %s (expires at %s), want active", i, l.State, st.at, l.ExpiresAt.Sub(h.start))
			}
		case capExpired:
			waitExpired(t, h.s, "cap-job")
			if l, _ := h.s.Lease("cap-job"); !l.EndedAt.Equal(at) {
				t.Fatalf("step %d: expired at %s, want %s", i, l.EndedAt.Sub(h.start), st.at)
			}
		case capRestart, capFromSnapshot, capOldFormat:
			h.reopen(st.do)
		}
		if st.expiresAt != 0 {
			if l, _ := h.s.Lease("cap-job"); !l.ExpiresAt.Equal(h.start.Add(st.expiresAt)) {
				t.Fatalf("step %d at %s: expires at %s, want %s", i, st.at, l.ExpiresAt.Sub(h.start), st.expiresAt)
			}
		}
	}
	// Whatever the episodes, the lease expired at most once.
	expired := 0
	for _, ev := range readFSMState(t, h.s.fsm).events {
		if ev.Type == engine.LeaseEventExpired && ev.Lease.JobID == "cap-job" {
			expired++
		}
	}
	if want := 0; steps[len(steps)-1].do == capExpired {
		want = 1
		if expired != want {
			t.Errorf("cap-job expired %d times, want once", expired)
		}
	} else if expired != want {
		t.Errorf("cap-job expired %d times, want never", expired)
	}
}

func (h *capHarness) reopen(how capAction) {
	t := h.t
	t.Helper()
	if how == capFromSnapshot {
		if err := h.s.Snapshot(); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.s.Close(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(h.dir, stateFile)
	switch how {
	case capFromSnapshot:
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
	case capOldFormat:
		stripOwnerExpiry(t, path, "cap-job")
	}
	h.s = openStore(t, h.cfg)
	waitExpiryRunning(t, h.s)
}

// stripOwnerExpiry rewrites job's stored lease in the closed state file at
// path as a node before owner_expires_at wrote it.
func stripOwnerExpiry(t *testing.T, path, job string) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		lb := tx.Bucket(bucketLeases)
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(lb.Get([]byte(job)), &fields); err != nil {
			return err
		}
		delete(fields, "owner_expires_at")
		raw, err := json.Marshal(fields)
		if err != nil {
			return err
		}
		return lb.Put([]byte(job), raw)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// storedOwnerExpiry is job's stored OwnerExpiresAt (zero when absent).
func storedOwnerExpiry(t *testing.T, s *Store, job string) time.Time {
	t.Helper()
	var l *storedLease
	err := s.fsm.view(func(tx *bolt.Tx) error {
		var err error
		l, err = getStoredLease(tx.Bucket(bucketLeases), job)
		return err
	})
	if err != nil || l == nil {
		t.Fatalf("stored lease %s: %v, %v", job, l, err)
	}
	return l.OwnerExpiresAt
}

// In every case the lease was acquired at 0 with a 100ms TTL: its owner's
// expiry is 100ms, the hold cap ends at 1.1s, and no grace goes past 1.2s.
func TestBlippingPartitionsDoNotKeepALeasePastItsOwnersExpiryPlusTheCap(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		name  string
		steps []capStep
	}{
		{"an unrenewed lease held and graced by episode after episode expires when the cap ends", []capStep{
			{at: 0, do: capHold},
			{at: 300 * ms, do: capActive},
			{at: 300 * ms, do: capHeal, expiresAt: 400 * ms},
			{at: 350 * ms, do: capHold},
			{at: 700 * ms, do: capActive},
			{at: 700 * ms, do: capHeal, expiresAt: 800 * ms},
			{at: 750 * ms, do: capHold},
			{at: 900 * ms, do: capHeal, expiresAt: 1000 * ms},
			{at: 950 * ms, do: capHold},
			// Past its ExpiresAt, held by an episode whose own cap is
			// 1.95s: only the owner's expiry plus the cap ends it.
			{at: 1099 * ms, do: capActive},
			{at: 1100 * ms, do: capExpired},
		}},
		{"a grace near the cap stops one TTL after it", []capStep{
			{at: 0, do: capHold},
			{at: 1050 * ms, do: capHeal, expiresAt: 1150 * ms},
			{at: 1060 * ms, do: capHold},
			// One TTL from now would be 1.22s.
			{at: 1120 * ms, do: capHeal, expiresAt: 1200 * ms},
			// An episode after the cap does not hold it any more.
			{at: 1130 * ms, do: capHold},
			{at: 1199 * ms, do: capActive},
			{at: 1200 * ms, do: capExpired},
		}},
		{"a grace after the cap gives no more than the bound", []capStep{
			{at: 0, do: capHold},
			{at: 1090 * ms, do: capHeal, expiresAt: 1190 * ms},
			{at: 1150 * ms, do: capHold},
			{at: 1180 * ms, do: capHeal, expiresAt: 1200 * ms},
			{at: 1200 * ms, do: capExpired},
		}},
		{"a renew by the owner during the episodes moves the bound with it", []capStep{
			{at: 0, do: capHold},
			{at: 300 * ms, do: capHeal, expiresAt: 400 * ms},
			{at: 350 * ms, do: capHold},
			// Held past 400ms; the owner gets through and renews: its
			// expiry is now 1s, the cap ends at 2s.
			{at: 900 * ms, do: capRenew, expiresAt: 1000 * ms},
			{at: 950 * ms, do: capHeal, expiresAt: 1050 * ms},
			{at: 1000 * ms, do: capHold},
			// Held past 1.05s and past the first cap (1.1s).
			{at: 1500 * ms, do: capActive},
			{at: 1500 * ms, do: capHeal, expiresAt: 1600 * ms},
			{at: 1550 * ms, do: capHold},
			{at: 1999 * ms, do: capActive},
			{at: 2000 * ms, do: capExpired},
		}},
		{"a lease its owner keeps renewing lives through every episode", []capStep{
			{at: 0, do: capHold},
			{at: 900 * ms, do: capRenew, expiresAt: 1000 * ms},
			{at: 950 * ms, do: capHeal, expiresAt: 1050 * ms},
			{at: 1000 * ms, do: capHold},
			{at: 1700 * ms, do: capActive},
			{at: 1800 * ms, do: capRenew, expiresAt: 1900 * ms},
			{at: 1850 * ms, do: capHeal, expiresAt: 1950 * ms},
			{at: 1900 * ms, do: capHold},
			{at: 2700 * ms, do: capRenew, expiresAt: 2800 * ms},
			{at: 2890 * ms, do: capActive},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			newCapHarness(t).run(tt.steps)
		})
	}
}

func TestTheOwnersExpirySurvivesRestartsAndSnapshots(t *testing.T) {
	ms := time.Millisecond
	for _, how := range []struct {
		name string
		do   capAction
	}{
		{"a restart", capRestart},
		{"a lost state.db rebuilt from a snapshot", capFromSnapshot},
	} {
		t.Run(how.name, func(t *testing.T) {
			h := newCapHarness(t)
			h.run([]capStep{
				{at: 0, do: capHold},
				{at: 900 * ms, do: capHeal, expiresAt: 1000 * ms},
				// In time at the restart (1s is past the new leader's
				// promotion grace), so the promotion leaves it alone.
				{at: 900 * ms, do: how.do, expiresAt: 1000 * ms},
			})
			// The cap still counts from the owner's 100ms, not from the
			// graced 1s.
			h.run([]capStep{
				{at: 950 * ms, do: capHold},
				{at: 1099 * ms, do: capActive},
				{at: 1100 * ms, do: capExpired},
			})
			if got := storedOwnerExpiry(t, h.s, "cap-job"); !got.Equal(h.start.Add(capTTL)) {
				t.Errorf("owner's expiry after %s: %s, want %s", how.name, got.Sub(h.start), capTTL)
			}
		})
	}
}

func TestALeaseStoredWithoutTheOwnersExpiryIsCappedFromItsExpiresAt(t *testing.T) {
	ms := time.Millisecond
	h := newCapHarness(t)
	h.run([]capStep{
		{at: 0, do: capHold},
		{at: 600 * ms, do: capHeal, expiresAt: 700 * ms},
		// As a node before the field left it: graced to 700ms, its
		// owner's 100ms forgotten.
		{at: 600 * ms, do: capOldFormat, expiresAt: 700 * ms},
	})
	if got := storedOwnerExpiry(t, h.s, "cap-job"); !got.IsZero() {
		t.Fatalf("the old-format lease has an owner's expiry %s", got)
	}
	// As before, the cap counts from its ExpiresAt, 700ms: held to 1.7s
	// (this episode's own cap is 1.65s). The next grace pins the owner's
	// expiry there, so the episodes after it do not move the cap again.
	h.run([]capStep{
		{at: 650 * ms, do: capHold},
		{at: 1200 * ms, do: capActive},
		{at: 1600 * ms, do: capHeal, expiresAt: 1700 * ms},
	})
	h.run([]capStep{
		{at: 1650 * ms, do: capHold},
		{at: 1699 * ms, do: capActive},
		{at: 1700 * ms, do: capExpired},
	})
	if got := storedOwnerExpiry(t, h.s, "cap-job"); !got.Equal(h.start.Add(700 * ms)) {
		t.Errorf("owner's expiry after the grace: %s, want 700ms (the ExpiresAt it was stored with)", got.Sub(h.start))
	}
}
