package raftstore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/coordinatord/coordinatord/policies"
)

// reopen closes s and opens its data directory again with cfg.
func reopen(t *testing.T, s *Store, cfg Config) *Store {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	return openStore(t, cfg)
}

// drainReplay waits until Raft has handed every entry of its log to the
// state machine, then writes one more policy: its response comes after the
// state machine has processed everything before it, replayed entries
// included. It returns the new policy.
func drainReplay(t *testing.T, s *Store) policies.Policy {
	t.Helper()
	eventually(t, "raft has applied its whole log", func() bool { return s.raft.AppliedIndex() >= s.raft.LastIndex() })
	return mustPut(t, s, pol("after-restart", policies.ModeAudit))
}

func TestRestartKeepsPoliciesAndDoesNotReapply(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	s := openStore(t, cfg)
	mustPut(t, s, pol("a", policies.ModeEnforce))
	mustPut(t, s, pol("b", policies.ModeAudit))
	mustPut(t, s, pol("a", policies.ModeEnforce))
	before, beforeRev, _ := s.Policies()

	rec := &recorder{}
	cfg.OnPoliciesChanged = rec.record
	s = reopen(t, s, cfg)
	if got := rec.revisions(); !slices.Equal(got, []uint64{beforeRev}) {
		t.Errorf("OnPoliciesChanged right after reopen: %v, want [%d]", got, beforeRev)
	}
	added := drainReplay(t, s)

	after, afterRev, _ := s.Policies()
	if afterRev != beforeRev+1 || added.Revision != beforeRev+1 {
		t.Errorf("revision after restart and one write: %d (write got %d), want %d", afterRev, added.Revision, beforeRev+1)
	}
	// A re-applied entry would have bumped versions and revisions.
	if kept := slices.DeleteFunc(after, func(p policies.Policy) bool { return p.ID == added.ID }); !samePolicies(kept, before) {
		t.Errorf("policies after restart %+v, want %+v", kept, before)
	}
	if got := rec.revisions(); !slices.Equal(got, []uint64{beforeRev, beforeRev + 1}) {
		t.Errorf("OnPoliciesChanged after restart: %v, want [%d %d] (no calls for replayed entries)", got, beforeRev, beforeRev+1)
	}
}

func TestSnapshotCompactionAndRestart(t *testing.T) {
	tests := []struct {
		name string
		// damage runs between close and reopen.
		damage func(t *testing.T, dir string)
	}{
		{"a restart after a snapshot and more writes keeps everything", func(*testing.T, string) {}},
		{"a lost state.db is rebuilt from the snapshot and the log after it", func(t *testing.T, dir string) {
			if err := os.Remove(filepath.Join(dir, stateFile)); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := testConfig(t, dir)
			// Keep no entries behind a snapshot, so the restart cannot
			// fall back on the compacted part of the log.
			cfg.TrailingLogs = 0
			s := openStore(t, cfg)
			for i := range 5 {
				mustPut(t, s, pol(fmt.Sprintf("p%d", i), policies.ModeEnforce))
			}
			if err := s.Snapshot(); err != nil {
				t.Fatalf("Snapshot: %v", err)
			}
			if err := s.logs.GetLog(1, new(raft.Log)); !errors.Is(err, raft.ErrLogNotFound) {
				t.Fatalf("log not compacted after snapshot: entry 1: %v", err)
			}
			mustPut(t, s, pol("p0", policies.ModeEnforce))
			mustPut(t, s, pol("p5", policies.ModeAudit))
			if _, err := s.DeletePolicy(tctx(t), "p1", t0); err != nil {
				t.Fatal(err)
			}
			before, beforeRev, _ := s.Policies()
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}

			tt.damage(t, dir)
			s = openStore(t, cfg)
			added := drainReplay(t, s)
			after, afterRev, _ := s.Policies()
			kept := slices.DeleteFunc(after, func(p policies.Policy) bool { return p.ID == added.ID })
			if afterRev != beforeRev+1 || !samePolicies(kept, before) {
				t.Errorf("after restart: revision %d, policies %+v\nwant revision %d, policies %+v", afterRev, kept, beforeRev+1, before)
			}
			if p, _ := s.Policy("p0"); p.Version != 2 {
				t.Errorf("p0 version %d, want 2", p.Version)
			}
		})
	}
}

func TestOpenRefusesStateAheadOfTheLog(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	s := openStore(t, cfg)
	mustPut(t, s, pol("a", policies.ModeEnforce))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Without raft.db, a bootstrap would start a new log at index 1 and
	// state.db would skip its first entries as already applied.
	if err := os.Remove(filepath.Join(dir, raftFile)); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(cfg); err == nil {
		t.Fatal("Open succeeded with state.db ahead of a missing raft.db")
	}
}

func TestFollowerWithoutLeader(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.Bootstrap = false
	s := openStore(t, cfg)

	short, cancel := context.WithTimeout(t.Context(), 3*cfg.ElectionTimeout)
	defer cancel()
	if err := s.WaitForLeader(short); !errors.Is(err, ErrNoLeader) {
		t.Errorf("WaitForLeader: %v, want ErrNoLeader", err)
	}
	_, err := s.PutPolicy(tctx(t), pol("a", policies.ModeEnforce), nil)
	var nl *NotLeaderError
	if !errors.As(err, &nl) || nl.LeaderID != "" || !errors.Is(err, ErrNotLeader) || !errors.Is(err, ErrNoLeader) {
		t.Errorf("PutPolicy on a lone follower: %v, want *NotLeaderError matching ErrNotLeader and ErrNoLeader", err)
	}
	if err := s.LinearizableRead(tctx(t)); !errors.Is(err, ErrNotLeader) {
		t.Errorf("LinearizableRead: %v, want ErrNotLeader", err)
	}
	if err := s.Barrier(tctx(t)); !errors.Is(err, ErrNotLeader) {
		t.Errorf("Barrier: %v, want ErrNotLeader", err)
	}
	if s.IsLeader() || s.State() != "Follower" {
		t.Errorf("IsLeader %v, State %q; want false, Follower", s.IsLeader(), s.State())
	}
}

func TestFollowerNamesTheLeaderAndReceivesASnapshot(t *testing.T) {
	leaderCfg := testConfig(t, t.TempDir())
	leaderCfg.TrailingLogs = 0
	leader := openStore(t, leaderCfg)
	mustPut(t, leader, pol("a", policies.ModeEnforce))
	mustPut(t, leader, pol("b", policies.ModeAudit))
	// With the log compacted, the follower can only catch up by installing
	// a snapshot, which exercises Restore through Raft.
	if err := leader.Snapshot(); err != nil {
		t.Fatal(err)
	}

	rec := &recorder{}
	_, trans := raft.NewInmemTransport("n2")
	t.Cleanup(func() { _ = trans.Close() }) // cleanups run last-first: after follower.Close
	leader.ownTrans.Connect("n2", trans)
	trans.Connect("n1", leader.ownTrans)
	followerCfg := testConfig(t, t.TempDir())
	followerCfg.NodeID = "n2"
	followerCfg.Bootstrap = false
	followerCfg.Transport = trans
	followerCfg.OnPoliciesChanged = rec.record
	follower := openStore(t, followerCfg)

	// A non-voter never counts toward the quorum, so the leader's short
	// timeouts cannot make it step down when this machine is slow.
	if err := leader.raft.AddNonvoter("n2", "n2", 0, waitTimeout).Error(); err != nil {
		t.Fatal(err)
	}
	mustPut(t, leader, pol("c", policies.ModeAudit))
	want, wantRev, _ := leader.Policies()
	eventually(t, "the follower has the leader's policies", func() bool { return follower.PolicyRevision() == wantRev })
	got, _, _ := follower.Policies()
	if !samePolicies(got, want) {
		t.Errorf("follower policies %+v, want %+v", got, want)
	}
	if revs := rec.revisions(); !slices.Equal(revs, []uint64{0, 2, 3}) {
		t.Errorf("follower OnPoliciesChanged revisions %v, want [0 2 3] (open, snapshot, write)", revs)
	}

	_, err := follower.PutPolicy(tctx(t), pol("d", policies.ModeAudit), nil)
	var nl *NotLeaderError
	if !errors.As(err, &nl) || nl.LeaderID != "n1" || nl.LeaderAddr != "n1" || errors.Is(err, ErrNoLeader) {
		t.Errorf("write on follower: %v, want *NotLeaderError naming n1", err)
	}
	if id, addr := follower.Leader(); id != "n1" || addr != "n1" {
		t.Errorf("follower.Leader() = %q, %q", id, addr)
	}
	if err := follower.LinearizableRead(tctx(t)); !errors.As(err, &nl) {
		t.Errorf("LinearizableRead on follower: %v, want *NotLeaderError", err)
	}
}

func TestCloseIsIdempotentAndEndsEverything(t *testing.T) {
	s := openStore(t, testConfig(t, t.TempDir()))
	mustPut(t, s, pol("a", policies.ModeEnforce))
	for i := range 2 {
		if err := s.Close(); err != nil {
			t.Fatalf("Close #%d: %v", i+1, err)
		}
	}
	if _, err := s.PutPolicy(tctx(t), pol("b", policies.ModeAudit), nil); !errors.Is(err, ErrClosed) {
		t.Errorf("PutPolicy after Close: %v", err)
	}
	if _, err := s.DeletePolicy(tctx(t), "a", t0); !errors.Is(err, ErrClosed) {
		t.Errorf("DeletePolicy after Close: %v", err)
	}
	if _, _, err := s.Policies(); !errors.Is(err, ErrClosed) {
		t.Errorf("Policies after Close: %v", err)
	}
	if err := s.LinearizableRead(tctx(t)); !errors.Is(err, ErrClosed) {
		t.Errorf("LinearizableRead after Close: %v", err)
	}
	if err := s.Barrier(tctx(t)); !errors.Is(err, ErrClosed) {
		t.Errorf("Barrier after Close: %v", err)
	}
	if err := s.WaitForLeader(tctx(t)); !errors.Is(err, ErrClosed) {
		t.Errorf("WaitForLeader after Close: %v", err)
	}
	if err := s.Snapshot(); !errors.Is(err, ErrClosed) {
		t.Errorf("Snapshot after Close: %v", err)
	}
	if s.IsLeader() {
		t.Error("IsLeader after Close")
	}
}

func TestSecondOpenOfADataDirFails(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	openStore(t, cfg)
	if s, err := Open(cfg); err == nil {
		_ = s.Close()
		t.Fatal("a second Open of the same data directory succeeded")
	}
}

func TestLinearizableReadSeesEveryAcknowledgedWrite(t *testing.T) {
	s := openStore(t, testConfig(t, t.TempDir()))
	for i := range 3 {
		mustPut(t, s, pol(fmt.Sprintf("p%d", i), policies.ModeEnforce))
		if err := s.LinearizableRead(tctx(t)); err != nil {
			t.Fatalf("LinearizableRead: %v", err)
		}
		last, _, err := lastCommand(s.logs, 0, s.LastIndex())
		if err != nil || s.AppliedIndex() < last {
			t.Fatalf("after LinearizableRead the state machine is at %d, the last command at %d (%v)", s.AppliedIndex(), last, err)
		}
	}
	if s.AppliedIndex() == 0 || s.LastIndex() < s.AppliedIndex() {
		t.Errorf("AppliedIndex %d, LastIndex %d", s.AppliedIndex(), s.LastIndex())
	}
	stats := s.Stats()
	if stats["state"] != "Leader" || stats["policy_revision"] != "3" || stats["node_id"] != "n1" {
		t.Errorf("Stats = %v", stats)
	}
}

func TestConcurrentWritersAndReaders(t *testing.T) {
	const writers, writes = 4, 10
	s := openStore(t, testConfig(t, t.TempDir()))
	mustPut(t, s, pol("base", policies.ModeEnforce))

	var wg sync.WaitGroup
	done := make(chan struct{})
	errs := make(chan error, 64)
	for w := range writers {
		wg.Go(func() {
			for i := range writes {
				// Two ids per writer, so versions grow under contention.
				p := pol(fmt.Sprintf("w%d-%d", w, i%2), policies.ModeAudit)
				if _, err := s.PutPolicy(tctx(t), p, nil); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	var readers sync.WaitGroup
	for range 3 {
		readers.Go(func() {
			var lastRev uint64
			for {
				select {
				case <-done:
					return
				default:
				}
				if err := s.LinearizableRead(tctx(t)); err != nil {
					errs <- err
					return
				}
				list, rev, err := s.Policies()
				if err != nil {
					errs <- err
					return
				}
				if rev < lastRev {
					errs <- fmt.Errorf("revision went back from %d to %d", lastRev, rev)
					return
				}
				lastRev = rev
				if !slices.IsSortedFunc(list, func(a, b policies.Policy) int { return strings.Compare(a.ID, b.ID) }) {
					errs <- errors.New("Policies not sorted by id")
					return
				}
				if _, err := s.Policy("base"); err != nil {
					errs <- err
					return
				}
				_ = s.PolicyRevision()
			}
		})
	}
	readers.Go(func() {
		// Snapshots run concurrently with writes (Persist beside Apply).
		for range 3 {
			if err := s.Snapshot(); err != nil {
				errs <- err
				return
			}
		}
	})
	wg.Wait()
	close(done)
	readers.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	if got, want := s.PolicyRevision(), uint64(1+writers*writes); got != want {
		t.Errorf("revision %d, want %d", got, want)
	}
	for w := range writers {
		for k := range 2 {
			if p, err := s.Policy(fmt.Sprintf("w%d-%d", w, k)); err != nil || p.Version != writes/2 {
				t.Errorf("w%d-%d: version %d, %v; want %d", w, k, p.Version, err, writes/2)
			}
		}
	}
}

func TestWriteTimesOutWithContext(t *testing.T) {
	s := openStore(t, testConfig(t, t.TempDir()))
	expired, cancel := context.WithDeadline(t.Context(), time.Now().Add(-time.Second))
	defer cancel()
	if _, err := s.PutPolicy(expired, pol("a", policies.ModeEnforce), nil); !errors.Is(err, ErrTimeout) {
		t.Errorf("PutPolicy with an expired context: %v, want ErrTimeout", err)
	}
}

func TestBarrierLeavesEveryEntryApplied(t *testing.T) {
	s := openStore(t, testConfig(t, t.TempDir()))
	for i := range 3 {
		mustPut(t, s, pol(fmt.Sprintf("p%d", i), policies.ModeEnforce))
		if err := s.Barrier(tctx(t)); err != nil {
			t.Fatalf("Barrier: %v", err)
		}
		last, _, err := lastCommand(s.logs, 0, s.LastIndex())
		if err != nil || s.AppliedIndex() < last {
			t.Fatalf("after Barrier the state machine is at %d, the last command at %d (%v)", s.AppliedIndex(), last, err)
		}
	}
}
