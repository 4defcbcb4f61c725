package raftstore

import (
	"bytes"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/coordinatord/coordinatord/engine"
)

// fakeClock is a store clock that moves only when a test says so.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: t0} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// testLeaseLimits allow TTLs down to the tests' 50ms election timeout.
var testLeaseLimits = engine.LeaseLimits{MinTTL: 50 * time.Millisecond, MaxTTL: time.Minute, DefaultTTL: time.Second}

// leaseConfig is testConfig with the fake clock, the test limits and a
// fine expiry resolution.
func leaseConfig(t *testing.T, dir string, clk *fakeClock) Config {
	cfg := testConfig(t, dir)
	cfg.Clock = clk.Now
	cfg.LeaseLimits = testLeaseLimits
	cfg.ExpiryResolution = 2 * time.Millisecond
	return cfg
}

// logBuffer collects a store's log lines for assertions.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

func acquire(t *testing.T, s *Store, job, owner string, ttl time.Duration) engine.Lease {
	t.Helper()
	l, err := s.AcquireLease(tctx(t), engine.AcquireRequest{JobID: job, Owner: owner, OwnerID: "spiffe://td/node/" + owner, OwnerDC: "dc-" + owner, TTL: ttl})
	if err != nil {
		t.Fatalf("AcquireLease(%s, %s): %v", job, owner, err)
	}
	return l
}

// waitTicks waits until the expiry loop has completed n more ticks, which
// means it has looked at the clock as it is now at least n-1 times.
func waitTicks(t *testing.T, s *Store, n uint64) {
	t.Helper()
	from := s.expiry.ticks.Load()
	eventually(t, "the expiry loop ticks", func() bool { return s.expiry.ticks.Load() >= from+n })
}

// waitExpiryRunning waits until the leader's expiry loop has committed its
// promotion and filled its queue.
func waitExpiryRunning(t *testing.T, s *Store) {
	t.Helper()
	waitTicks(t, s, 1)
}

// collector drains a watch into a slice.
type collector struct {
	mu     sync.Mutex
	events []engine.LeaseEvent
	done   chan struct{}
	w      *LeaseWatch
}

func collect(t *testing.T, s *Store, from uint64) *collector {
	t.Helper()
	w, err := s.WatchLeases(t.Context(), from)
	if err != nil {
		t.Fatalf("WatchLeases(%d): %v", from, err)
	}
	c := &collector{done: make(chan struct{}), w: w}
	go func() {
		defer close(c.done)
		for ev := range w.Events() {
			c.mu.Lock()
			c.events = append(c.events, ev)
			c.mu.Unlock()
		}
	}()
	return c
}

func (c *collector) snapshot() []engine.LeaseEvent {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.events)
}

// waitFor waits until the collected events satisfy cond.
func (c *collector) waitFor(t *testing.T, what string, cond func([]engine.LeaseEvent) bool) []engine.LeaseEvent {
	t.Helper()
	var evs []engine.LeaseEvent
	eventually(t, what, func() bool {
		evs = c.snapshot()
		return cond(evs)
	})
	return evs
}

func countEvents(evs []engine.LeaseEvent, typ engine.LeaseEventType, job string) int {
	n := 0
	for _, ev := range evs {
		if ev.Type == typ && (job == "" || ev.Lease.JobID == job) {
			n++
		}
	}
	return n
}

// eventIDs renders events as "type:job@index#token" for comparisons.
func eventIDs(evs []engine.LeaseEvent) []string {
	out := make([]string, len(evs))
	for i, ev := range evs {
		out[i] = fmt.Sprintf("%s:%s@%d#%d", ev.Type, ev.Lease.JobID, ev.Index, ev.Lease.Token)
	}
	return out
}
