package raftstore

import (
	"bytes"
	"context"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/coordinatord/coordinatord/policies"
)

// t0 is the fixed time the tests stamp into writes; the store never reads
// a clock, so no test needs a real one.
var t0 = time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)

const testRego = "package coordinatord.admission\n\nallow := true\n"

// waitTimeout bounds every wait in the tests. It is generous because it is
// only reached when a test is about to fail.
const waitTimeout = 10 * time.Second

// testLogger shows warnings and errors in the test's output and drops the
// rest, so that a failing test shows what Raft complained about.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// testConfig returns a single-voter config with Raft's timeouts cut to
// 50ms (from 1s): a lone voter then elects itself in 50–100ms, which keeps
// the package's tests fast. With one voter and an in-memory transport there
// is no network jitter for short timeouts to trip over.
func testConfig(t *testing.T, dir string) Config {
	c := DefaultConfig()
	c.NodeID = "n1"
	c.DataDir = dir
	c.Bootstrap = true
	c.Logger = testLogger(t)
	c.HeartbeatTimeout = 50 * time.Millisecond
	c.ElectionTimeout = 50 * time.Millisecond
	c.LeaderLeaseTimeout = 50 * time.Millisecond
	c.CommitTimeout = 5 * time.Millisecond
	c.ApplyTimeout = 5 * time.Second
	return c
}

// openStore opens cfg, closes it at the end of the test, and, if cfg
// bootstraps, waits until the node leads.
func openStore(t *testing.T, cfg Config) *Store {
	t.Helper()
	s, err := Open(cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if cfg.Bootstrap {
		waitLeader(t, s)
	}
	return s
}

func waitLeader(t *testing.T, s *Store) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	if err := s.WaitForLeader(ctx); err != nil {
		t.Fatalf("WaitForLeader: %v", err)
	}
	eventually(t, "node leads", s.IsLeader)
}

// eventually polls cond until it holds or waitTimeout passes. It is for
// conditions reached by another process or goroutine with no event to wait
// on.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		<-tick.C
	}
}

func tctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(t.Context(), waitTimeout)
	t.Cleanup(cancel)
	return c
}

func pol(id string, mode policies.Mode) policies.Policy {
	return policies.Policy{ID: id, Rego: testRego, Mode: mode, UpdatedAt: t0, UpdatedBy: "spiffe://test/cluster/c/env/e/role/admin/dc/d/node/op"}
}

func mustPut(t *testing.T, s *Store, p policies.Policy) policies.Policy {
	t.Helper()
	got, err := s.PutPolicy(tctx(t), p, nil)
	if err != nil {
		t.Fatalf("PutPolicy(%s): %v", p.ID, err)
	}
	return got
}

// change is one OnPoliciesChanged call.
type change struct {
	revision uint64
	ids      []string
}

// recorder collects OnPoliciesChanged calls.
type recorder struct {
	mu    sync.Mutex
	calls []change
	last  []policies.Policy
}

func (r *recorder) record(rev uint64, ps []policies.Policy) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ids := make([]string, len(ps))
	for i, p := range ps {
		ids[i] = p.ID
	}
	r.calls = append(r.calls, change{rev, ids})
	r.last = ps
}

func (r *recorder) revisions() []uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]uint64, len(r.calls))
	for i, c := range r.calls {
		out[i] = c.revision
	}
	return out
}

func (r *recorder) lastSet() []policies.Policy {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.last)
}

// memSink is a raft.SnapshotSink into memory.
type memSink struct {
	bytes.Buffer
	closed, cancelled bool
}

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Cancel() error { s.cancelled = true; return nil }
func (s *memSink) Close() error  { s.closed = true; return nil }

var _ raft.SnapshotSink = (*memSink)(nil)

// cmdLog builds the log entry the leader would append for one command.
func cmdLog(t *testing.T, index uint64, op string, body any) *raft.Log {
	t.Helper()
	data, err := encodeCommand(op, t0, body)
	if err != nil {
		t.Fatal(err)
	}
	return &raft.Log{Index: index, Term: 1, Type: raft.LogCommand, Data: data}
}

// samePolicies compares the stored fields, using time equality rather than
// struct equality, which a JSON round trip does not preserve.
func samePolicies(a, b []policies.Policy) bool {
	return slices.EqualFunc(a, b, func(x, y policies.Policy) bool {
		return x.ID == y.ID && x.Rego == y.Rego && x.Mode == y.Mode && x.Revision == y.Revision &&
			x.Version == y.Version && x.UpdatedAt.Equal(y.UpdatedAt) && x.UpdatedBy == y.UpdatedBy
	})
}
