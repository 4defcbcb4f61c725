package raftstore

import (
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

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
