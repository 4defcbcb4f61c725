package raftstore

import (
	"encoding/json"
	"errors"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/coordinatord/coordinatord/engine"
)

func leaseState(t *testing.T, s *Store, job string) engine.LeaseState {
	t.Helper()
	l, err := s.Lease(job)
	if err != nil {
		t.Fatalf("Lease(%s): %v", job, err)
	}
	return l.State
}

func waitExpired(t *testing.T, s *Store, job string) {
	t.Helper()
	eventually(t, job+" expires", func() bool { return leaseState(t, s, job) == engine.LeaseExpired })
}

func TestExpiryFiresExactlyOnceAndTheLeaseLeavesTheActiveSet(t *testing.T) {
	clk := newFakeClock()
	s := openStore(t, leaseConfig(t, t.TempDir(), clk))
	waitExpiryRunning(t, s)
	w := collect(t, s, 0)
	jobs := []string{"a", "b", "c"}
	for _, j := range jobs {
		acquire(t, s, j, "owner", 100*time.Millisecond)
	}
	if _, queued := s.LeaseStats(); queued != 3 {
		t.Errorf("expiry queue %d, want 3", queued)
	}
	clk.Advance(200 * time.Millisecond)
	w.waitFor(t, "three expiries", func(evs []engine.LeaseEvent) bool { return countEvents(evs, engine.LeaseEventExpired, "") >= 3 })
	// Give the loop more ticks to expire something twice, then mark the
	// stream with a write of our own: everything before it has arrived.
	waitTicks(t, s, 5)
	acquire(t, s, "marker", "owner", time.Minute)
	evs := w.waitFor(t, "the marker", func(evs []engine.LeaseEvent) bool { return countEvents(evs, engine.LeaseEventAcquired, "marker") == 1 })
	for _, j := range jobs {
		if n := countEvents(evs, engine.LeaseEventExpired, j); n != 1 {
			t.Errorf("%s: %d expired events, want exactly 1", j, n)
		}
		if l, _ := s.Lease(j); l.State != engine.LeaseExpired || !l.EndedAt.Equal(clk.Now()) {
			t.Errorf("%s after expiry: %+v", j, l)
		}
	}
	active, err := s.Leases(LeaseFilter{State: engine.LeaseActive})
	if err != nil || len(active) != 1 || active[0].JobID != "marker" {
		t.Errorf("active set %+v, %v; want only the marker", active, err)
	}
	if n, queued := s.LeaseStats(); n != 1 || queued != 1 {
		t.Errorf("LeaseStats = %d active, %d queued; want 1, 1", n, queued)
	}
}

func TestNoExpiryBeforeExpiresAtByTheStoreClock(t *testing.T) {
	clk := newFakeClock()
	s := openStore(t, leaseConfig(t, t.TempDir(), clk))
	waitExpiryRunning(t, s)
	l := acquire(t, s, "j", "a", time.Second)
	clk.Advance(time.Second - time.Millisecond)
	waitTicks(t, s, 5)
	if st := leaseState(t, s, "j"); st != engine.LeaseActive {
		t.Fatalf("lease %s a millisecond before ExpiresAt", st)
	}
	if c, _ := s.CheckLease("j", l.Token); !c.Current {
		t.Errorf("CheckLease a millisecond before ExpiresAt: %+v", c)
	}
	clk.Advance(time.Millisecond)
	waitExpired(t, s, "j")
	if got, _ := s.Lease("j"); got.EndedAt.Before(got.ExpiresAt) {
		t.Errorf("expired at %s, before ExpiresAt %s", got.EndedAt, got.ExpiresAt)
	}
}

func TestHoldKeepsALeasePastExpiryUntilItIsLifted(t *testing.T) {
	tests := []struct {
		name    string
		maxHold time.Duration
		// lift ends the hold: by clearing it, or by moving past the cap.
		lift    func(clk *fakeClock, holding *atomic.Bool)
		endsLog string
	}{
		{"lifting the hold expires the lease", 0,
			func(_ *fakeClock, holding *atomic.Bool) { holding.Store(false) }, "lease hold ended: expiring"},
		{"reaching the hold cap expires the lease", 5 * time.Second,
			func(clk *fakeClock, _ *atomic.Bool) { clk.Advance(5 * time.Second) }, "held for the maximum"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newFakeClock()
			var logs logBuffer
			var holding atomic.Bool
			holding.Store(true)
			cfg := leaseConfig(t, t.TempDir(), clk)
			cfg.Logger = logs.logger()
			cfg.MaxLeaseHold = tt.maxHold
			cfg.Hold = func(dc string) bool { return dc == "dc-cut" && holding.Load() }
			s := openStore(t, cfg)
			waitExpiryRunning(t, s)
			acquire(t, s, "cut-job", "cut", 100*time.Millisecond)
			acquire(t, s, "ok-job", "ok", 100*time.Millisecond)
			clk.Advance(200 * time.Millisecond)
			waitExpired(t, s, "ok-job")
			waitTicks(t, s, 5)
			if st := leaseState(t, s, "cut-job"); st != engine.LeaseActive {
				t.Fatalf("held lease is %s", st)
			}
			if n := strings.Count(logs.String(), "lease expiry held"); n != 1 {
				t.Errorf("hold start logged %d times, want once:\n%s", n, logs.String())
			}
			if line := logLine(logs.String(), "lease expiry held"); !strings.Contains(line, "job_id=cut-job") || !strings.Contains(line, "owner=cut") || !strings.Contains(line, "owner_dc=dc-cut") {
				t.Errorf("hold start line lacks the job, owner or dc: %s", line)
			}
			tt.lift(clk, &holding)
			waitExpired(t, s, "cut-job")
			if n := strings.Count(logs.String(), tt.endsLog); n != 1 {
				t.Errorf("hold end (%q) logged %d times, want once:\n%s", tt.endsLog, n, logs.String())
			}
		})
	}
}

func logLine(logs, substr string) string {
	for line := range strings.Lines(logs) {
		if strings.Contains(line, substr) {
			return line
		}
	}
	return ""
}

func TestTheExpiryLoopSurvivesAFailingErrorHandler(t *testing.T) {
	tests := []struct {
		name    string
		handler func(expiryFailure) error
	}{
		{"a handler that panics", func(expiryFailure) error { panic("the log pipeline exploded") }},
		{"a handler that fails", func(expiryFailure) error { return errors.New("disk full") }},
	}
	stamp := regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d`)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newFakeClock()
			cfg := leaseConfig(t, t.TempDir(), clk)
			// The failure to report: a Hold that panics (it counts as false).
			cfg.Hold = func(dc string) bool {
				if dc == "dc-boom" {
					panic("correlation state is corrupt")
				}
				return false
			}
			s := openStore(t, cfg)
			var stderr logBuffer
			s.expiry.setHooks(tt.handler, &stderr)
			waitExpiryRunning(t, s)
			acquire(t, s, "boom-job", "boom", 100*time.Millisecond)
			clk.Advance(200 * time.Millisecond)
			waitExpired(t, s, "boom-job")
			line := stderr.String()
			if !stamp.MatchString(line) || !strings.Contains(line, "boom-job") || !strings.Contains(line, "boom@dc-boom") ||
				!strings.Contains(line, expiryLoopName) || !strings.Contains(line, "correlation state is corrupt") {
				t.Errorf("stderr fallback %q lacks the timestamp, job, owner, loop or cause", line)
			}
			// The loop is still running: a later lease expires too.
			acquire(t, s, "after", "x", 100*time.Millisecond)
			clk.Advance(200 * time.Millisecond)
			waitExpired(t, s, "after")
		})
	}
}

func TestExpiryLoopFailuresAreLoggedWithJobOwnerAndLoop(t *testing.T) {
	clk := newFakeClock()
	var logs logBuffer
	cfg := leaseConfig(t, t.TempDir(), clk)
	cfg.Logger = logs.logger()
	cfg.Hold = func(string) bool { panic("no correlation engine") }
	s := openStore(t, cfg)
	var stderr logBuffer
	s.expiry.setHooks(nil, &stderr)
	waitExpiryRunning(t, s)
	acquire(t, s, "j1", "a", 100*time.Millisecond)
	clk.Advance(200 * time.Millisecond)
	waitExpired(t, s, "j1")
	line := logLine(logs.String(), "lease expiry loop failed")
	for _, want := range []string{`loop="lease expiry loop"`, `op="hold check"`, "job_ids=j1", "owners=a@dc-a", "no correlation engine", "level=ERROR"} {
		if !strings.Contains(line, want) {
			t.Errorf("failure log line lacks %s: %s", want, line)
		}
	}
	if stderr.String() != "" {
		t.Errorf("a working logger fell back to stderr: %s", stderr.String())
	}
}

func TestExpiryLoopStopsOnDemotionAndPromotesAgainOnLeadership(t *testing.T) {
	clk := newFakeClock()
	s := openStore(t, leaseConfig(t, t.TempDir(), clk))
	waitExpiryRunning(t, s)
	first := lastPromotion(t, s)
	acquire(t, s, "j", "a", 100*time.Millisecond)
	// Raft's notifications, as on losing and regaining leadership.
	s.expiry.notify <- false
	eventually(t, "the queue is emptied", func() bool { _, q := s.LeaseStats(); return q == 0 })
	clk.Advance(time.Second)
	s.expiry.notify <- true
	waitExpired(t, s, "j")
	if again := lastPromotion(t, s); again.Index <= first.Index || again.Node != "n1" {
		t.Errorf("promotion after regaining leadership %+v, first %+v", again, first)
	}
}

func lastPromotion(t *testing.T, s *Store) promotionRecord {
	t.Helper()
	var rec promotionRecord
	err := s.fsm.view(func(tx *bolt.Tx) error {
		return json.Unmarshal(tx.Bucket(bucketMeta).Get(keyLastPromotion), &rec)
	})
	if err != nil {
		t.Fatal(err)
	}
	return rec
}
