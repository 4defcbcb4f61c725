package raftstore

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coordinatord/coordinatord/engine"
)

func TestLeaseLifecycleThroughTheStore(t *testing.T) {
	clk := newFakeClock()
	s := openStore(t, leaseConfig(t, t.TempDir(), clk))
	ctx := tctx(t)

	l := acquire(t, s, "job-1", "a", 10*time.Second)
	if l.Token != 1 || l.State != engine.LeaseActive || !l.AcquiredAt.Equal(clk.Now()) || !l.ExpiresAt.Equal(clk.Now().Add(10*time.Second)) || l.Index == 0 {
		t.Fatalf("acquired %+v", l)
	}
	if got, err := s.Lease("job-1"); err != nil || got.Token != 1 || got.Index != l.Index || got.OwnerID != "spiffe://td/node/a" {
		t.Fatalf("Lease = %+v, %v", got, err)
	}

	clk.Advance(4 * time.Second)
	r, err := s.RenewLease(ctx, engine.RenewRequest{JobID: "job-1", Owner: "a", Token: 1, TTL: 20 * time.Second})
	if err != nil || r.Token != 1 || !r.ExpiresAt.Equal(clk.Now().Add(20*time.Second)) || r.Index <= l.Index {
		t.Fatalf("RenewLease = %+v, %v", r, err)
	}
	if c, err := s.CheckLease("job-1", 1); err != nil || !c.Current || c.Token != 1 || c.Owner != "a" {
		t.Errorf("CheckLease = %+v, %v", c, err)
	}
	if active, _ := s.LeaseStats(); active != 1 {
		t.Errorf("LeaseStats active %d, want 1", active)
	}

	acquire(t, s, "job-2", "b", 0)
	if got, err := s.Lease("job-2"); err != nil || got.TTL != testLeaseLimits.DefaultTTL {
		t.Errorf("an acquire without a ttl got %+v, %v; want the default %s", got, err, testLeaseLimits.DefaultTTL)
	}
	rel, err := s.ReleaseLease(ctx, engine.ReleaseRequest{JobID: "job-1", Owner: "a", Token: 1})
	if err != nil || rel.State != engine.LeaseReleased || !rel.EndedAt.Equal(clk.Now()) {
		t.Fatalf("ReleaseLease = %+v, %v", rel, err)
	}
	if active, _ := s.LeaseStats(); active != 1 {
		t.Errorf("LeaseStats active %d after a release, want 1", active)
	}
	if c, _ := s.CheckLease("job-1", 1); c.Current || c.Reason != "lease_not_active" {
		t.Errorf("CheckLease after release %+v", c)
	}
	if again := acquire(t, s, "job-1", "b", 0); again.Token != 2 {
		t.Errorf("re-acquire after release got token %d, want 2", again.Token)
	}

	tests := []struct {
		name   string
		filter LeaseFilter
		want   []string
	}{
		{"no filter lists every lease by job id", LeaseFilter{}, []string{"job-1", "job-2"}},
		{"an owner filter keeps that owner's leases", LeaseFilter{Owner: "b"}, []string{"job-1", "job-2"}},
		{"a datacenter filter matches the owner's dc", LeaseFilter{Datacenter: "dc-a"}, nil},
		{"a state filter matches the stored state", LeaseFilter{State: engine.LeaseReleased}, nil},
		{"a limit caps the list", LeaseFilter{Limit: 1}, []string{"job-1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			list, err := s.Leases(tt.filter)
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, l := range list {
				ids = append(ids, l.JobID)
			}
			if !slices.Equal(ids, tt.want) {
				t.Errorf("Leases(%+v) = %v, want %v", tt.filter, ids, tt.want)
			}
		})
	}
}

func TestLeaseErrorsComeBackTyped(t *testing.T) {
	clk := newFakeClock()
	s := openStore(t, leaseConfig(t, t.TempDir(), clk))
	ctx := tctx(t)
	acquire(t, s, "j", "a", 10*time.Second)
	last := s.LastIndex()

	tests := []struct {
		name string
		call func() error
		want error
		// proposed says whether the call reaches the log.
		proposed bool
	}{
		{"another owner's acquire is a LeaseHeldError", func() error {
			_, err := s.AcquireLease(ctx, engine.AcquireRequest{JobID: "j", Owner: "b"})
			var held *engine.LeaseHeldError
			if errors.As(err, &held) && (held.Holder != "a" || held.Remaining != 10*time.Second) {
				t.Errorf("conflict %+v", held)
			}
			return err
		}, engine.ErrLeaseHeld, true},
		{"a renew with a wrong token is a StaleTokenError", func() error {
			_, err := s.RenewLease(ctx, engine.RenewRequest{JobID: "j", Owner: "a", Token: 7})
			var stale *engine.StaleTokenError
			if errors.As(err, &stale) && (stale.Given != 7 || stale.Current != 1) {
				t.Errorf("stale %+v", stale)
			}
			return err
		}, engine.ErrStaleToken, true},
		{"a release by another owner is ErrNotOwner", func() error {
			_, err := s.ReleaseLease(ctx, engine.ReleaseRequest{JobID: "j", Owner: "b", Token: 1})
			return err
		}, engine.ErrNotOwner, true},
		{"a renew of an unknown job is ErrNoLease", func() error {
			_, err := s.RenewLease(ctx, engine.RenewRequest{JobID: "nope", Owner: "a", Token: 1})
			return err
		}, engine.ErrNoLease, true},
		{"a ttl beyond the limits fails before proposing", func() error {
			_, err := s.AcquireLease(ctx, engine.AcquireRequest{JobID: "k", Owner: "a", TTL: time.Hour})
			return err
		}, engine.ErrInvalidTTL, false},
		{"a renew ttl beyond the limits fails before proposing", func() error {
			_, err := s.RenewLease(ctx, engine.RenewRequest{JobID: "j", Owner: "a", Token: 1, TTL: time.Millisecond})
			return err
		}, engine.ErrInvalidTTL, false},
		{"a bad job id fails before proposing", func() error {
			_, err := s.AcquireLease(ctx, engine.AcquireRequest{JobID: "watch", Owner: "a"})
			return err
		}, engine.ErrInvalidJobID, false},
		{"a missing owner fails before proposing", func() error {
			_, err := s.ReleaseLease(ctx, engine.ReleaseRequest{JobID: "j", Token: 1})
			return err
		}, engine.ErrInvalidLeaseRequest, false},
		{"reading an unknown lease is ErrNotFound and ErrNoLease", func() error {
			_, err := s.Lease("nope")
			if !errors.Is(err, ErrNotFound) {
				t.Errorf("Lease: %v, want ErrNotFound too", err)
			}
			return err
		}, engine.ErrNoLease, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if !errors.Is(err, tt.want) {
				t.Fatalf("error %v, want %v", err, tt.want)
			}
			if code := engine.LeaseErrorCode(err); code == "" {
				t.Errorf("no lease error code for %v", err)
			}
			if proposed := s.LastIndex() > last; proposed != tt.proposed {
				t.Errorf("proposed=%v, want %v", proposed, tt.proposed)
			}
			last = s.LastIndex()
		})
	}
	if l, _ := s.Lease("j"); l.Token != 1 || l.Owner != "a" || l.State != engine.LeaseActive {
		t.Errorf("refused writes changed the lease: %+v", l)
	}
}

func TestLeaseWritesOnAFollowerFailWithNotLeader(t *testing.T) {
	cfg := leaseConfig(t, t.TempDir(), newFakeClock())
	cfg.Bootstrap = false // no cluster: this node never leads
	s := openStore(t, cfg)
	_, err := s.AcquireLease(tctx(t), engine.AcquireRequest{JobID: "j", Owner: "a"})
	var nl *NotLeaderError
	if !errors.As(err, &nl) || !errors.Is(err, ErrNotLeader) {
		t.Fatalf("AcquireLease on a follower: %v, want a *NotLeaderError", err)
	}
	if _, err := s.RenewLease(tctx(t), engine.RenewRequest{JobID: "j", Owner: "a", Token: 1}); !errors.As(err, &nl) {
		t.Errorf("RenewLease on a follower: %v", err)
	}
	// Reads work anywhere.
	if c, err := s.CheckLease("j", 1); err != nil || c.Reason != "no_lease" {
		t.Errorf("CheckLease on a follower = %+v, %v", c, err)
	}
}

func TestLeaseTokensSurviveRestartAndSnapshotRestore(t *testing.T) {
	tests := []struct {
		name string
		// between runs with the store closed.
		between func(t *testing.T, dir string)
		// snapshot takes a snapshot (compacting the log) before closing.
		snapshot bool
	}{
		{"a restart keeps the last token of every job", func(*testing.T, string) {}, false},
		{"a lost state.db rebuilt from a snapshot keeps them", func(t *testing.T, dir string) {
			if err := os.Remove(filepath.Join(dir, stateFile)); err != nil {
				t.Fatal(err)
			}
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			clk := newFakeClock()
			cfg := leaseConfig(t, dir, clk)
			cfg.TrailingLogs = 0
			s := openStore(t, cfg)
			ctx := tctx(t)
			// j1: released after token 1; j2: expired after token 2; j3: active.
			l := acquire(t, s, "j1", "a", time.Second)
			if _, err := s.ReleaseLease(ctx, engine.ReleaseRequest{JobID: "j1", Owner: "a", Token: l.Token}); err != nil {
				t.Fatal(err)
			}
			acquire(t, s, "j2", "a", time.Second)
			clk.Advance(2 * time.Second) // j2 out of time: b's acquire expires it first
			acquire(t, s, "j2", "b", 100*time.Millisecond)
			clk.Advance(time.Second)
			eventually(t, "the expiry loop expires j2's second lease", func() bool {
				l, _ := s.Lease("j2")
				return l.State == engine.LeaseExpired && l.Token == 2
			})
			acquire(t, s, "j3", "c", time.Minute)
			if tt.snapshot {
				if err := s.Snapshot(); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			tt.between(t, dir)

			s = openStore(t, cfg)
			for job, want := range map[string]uint64{"j1": 2, "j2": 3} {
				if got := acquire(t, s, job, "d", time.Minute); got.Token != want {
					t.Errorf("%s: token after restart %d, want %d", job, got.Token, want)
				}
			}
			if l, err := s.Lease("j3"); err != nil || l.Token != 1 || l.State != engine.LeaseActive {
				t.Errorf("j3 after restart %+v, %v", l, err)
			}
			if active, _ := s.LeaseStats(); active != 3 {
				t.Errorf("active leases after restart %d, want 3", active)
			}
		})
	}
}

func TestLeaderPromotionExtendsLeasesAfterARestart(t *testing.T) {
	dir := t.TempDir()
	clk := newFakeClock()
	cfg := leaseConfig(t, dir, clk)
	s := openStore(t, cfg)
	waitExpiryRunning(t, s)
	soon := acquire(t, s, "soon", "a", time.Second)
	later := acquire(t, s, "later", "a", time.Minute)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// The node comes back 990ms later: "soon" has 10ms left, less than an
	// election timeout (50ms). The new leader gives it up to that much.
	clk.Advance(990 * time.Millisecond)
	promotedAt := clk.Now()
	s = openStore(t, cfg)
	waitExpiryRunning(t, s)
	got, _ := s.Lease("soon")
	want := promotedAt.Add(cfg.ElectionTimeout) // min(at+grace, expires+grace)
	if !got.ExpiresAt.Equal(want) || got.Token != soon.Token {
		t.Errorf("soon expires %s after promotion, want %s (was %s)", got.ExpiresAt, want, soon.ExpiresAt)
	}
	if got, _ := s.Lease("later"); !got.ExpiresAt.Equal(later.ExpiresAt) || got.Index != later.Index {
		t.Errorf("a lease with time to spare changed: %+v, was %+v", got, later)
	}
}

func TestLeaseConfigValidate(t *testing.T) {
	tests := []struct {
		name      string
		change    func(*Config)
		wantField string
	}{
		{"the lease defaults are valid", func(*Config) {}, ""},
		{"a minimum ttl equal to the election timeout is valid", func(c *Config) { c.LeaseLimits.MinTTL = c.ElectionTimeout }, ""},
		{"a minimum ttl below the election timeout is refused", func(c *Config) { c.LeaseLimits.MinTTL = c.ElectionTimeout / 2 }, "MinTTL"},
		{"inconsistent limits are refused", func(c *Config) { c.LeaseLimits.DefaultTTL = 2 * c.LeaseLimits.MaxTTL }, "LeaseLimits"},
		{"zero limits are refused", func(c *Config) { c.LeaseLimits = engine.LeaseLimits{} }, "LeaseLimits"},
		{"keeping no events is refused", func(c *Config) { c.LeaseEventRetention = 0 }, "LeaseEventRetention"},
		{"a sub-millisecond resolution is refused", func(c *Config) { c.ExpiryResolution = time.Microsecond }, "ExpiryResolution"},
		{"a resolution coarser than the minimum ttl is refused", func(c *Config) { c.ExpiryResolution = 2 * c.LeaseLimits.MinTTL }, "ExpiryResolution"},
		{"a negative hold cap is refused", func(c *Config) { c.MaxLeaseHold = -time.Second }, "MaxLeaseHold"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			c.NodeID, c.DataDir = "n1", "/var/lib/coordinatord"
			tt.change(&c)
			err := c.Validate()
			if tt.wantField == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tt.wantField) {
				t.Fatalf("Validate: %v, want ErrInvalidConfig naming %s", err, tt.wantField)
			}
		})
	}
}
