// Package raftstore is coordinatord's replicated store: a hashicorp/raft
// node whose finite-state machine is a bbolt file. Every write is a command
// committed through Raft and applied by every node in log order, and returns
// once the proposing node has applied it. Reads are served from the local
// file and may trail the leader on a follower; LinearizableRead, on the
// leader, makes the next read reflect every acknowledged write.
//
// A data directory holds raft.db (the Raft log and stable store,
// raft-boltdb), snapshots/ (Raft's file snapshot store) and state.db (the
// state machine). state.db records, in the same transaction as each
// command's effects, the index of that command, so a restart neither
// restores a snapshot over newer state nor applies a replayed entry twice.
//
// The state machine holds admission policies today, and will hold leases,
// Wasm modules and correlation records. The API is already the cluster's:
// writes on a follower fail with a *NotLeaderError naming the leader.
// NewTLSTransport (transport.go) is the network transport of a cluster, and
// membership.go keeps the members registry and changes the configuration.
package raftstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	bolt "go.etcd.io/bbolt"

	"github.com/coordinatord/coordinatord/policies"
)

const (
	// raftFile is the Raft log and stable store inside the data directory.
	raftFile = "raft.db"
	// logCacheSize keeps the newest entries in memory, so that replication
	// and LinearizableRead's log lookups rarely touch raft.db.
	logCacheSize = 512
	// leaderPollInterval is how often WaitForLeader looks. Elections take
	// hundreds of milliseconds, so a finer grain buys nothing.
	leaderPollInterval = 10 * time.Millisecond
)

// Store is one node of the replicated store. Its methods are safe for
// concurrent use. Writes must go to the leader; reads are local.
type Store struct {
	cfg    Config
	nodeID string
	logger *slog.Logger

	raft      *raft.Raft
	fsm       *fsm
	logs      raft.LogStore // cache in front of boltStore
	boltStore *raftboltdb.BoltStore
	// ownTrans is the in-memory transport Open created, closed by Close;
	// nil when the caller supplied one.
	ownTrans *raft.InmemTransport
	// membership is the cluster-membership state (membership.go).
	membership membership
	// expiry drives lease expiry while this node leads (expiry.go).
	expiry *expirer

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

// Open opens or creates the store in cfg.DataDir and starts its Raft node.
// With cfg.Bootstrap and an empty directory, the node becomes the single
// voter of a new cluster and elects itself shortly after; use WaitForLeader
// before writing. OnPoliciesChanged is called once before Open returns.
func Open(cfg Config) (st *Store, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	logger = logger.With("component", "raftstore", "node", cfg.NodeID)
	s := &Store{cfg: cfg, nodeID: cfg.NodeID, logger: logger}
	defer func() {
		if err != nil {
			_ = s.closeFiles()
			err = s.errorf("open %s: %w", cfg.DataDir, err)
		}
	}()

	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, err
	}
	s.boltStore, err = raftboltdb.New(raftboltdb.Options{
		Path:        filepath.Join(cfg.DataDir, raftFile),
		BoltOptions: &bolt.Options{Timeout: boltOpenTimeout},
	})
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", raftFile, err)
	}
	if s.logs, err = raft.NewLogCache(logCacheSize, s.boltStore); err != nil {
		return nil, err
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, cfg.SnapshotRetain, newHCLogger(logger, "raft.snapshots"))
	if err != nil {
		return nil, err
	}
	if s.fsm, err = openFSM(cfg.DataDir, logger, cfg.OnPoliciesChanged); err != nil {
		return nil, err
	}
	s.fsm.lease.retention = cfg.LeaseEventRetention
	s.fsm.onModules = cfg.OnModulesChanged
	hasState, err := raft.HasExistingState(s.logs, s.boltStore, snaps)
	if err != nil {
		return nil, err
	}
	if err := s.reconcile(hasState, snaps); err != nil {
		return nil, err
	}
	// Prepare the caller's engine from the file before Raft may apply
	// anything newer, so that callbacks arrive in revision order.
	var (
		list []policies.Policy
		rev  uint64
	)
	err = s.fsm.view(func(tx *bolt.Tx) error {
		var rerr error
		list, rev, rerr = readPolicies(tx)
		return rerr
	})
	if err != nil {
		return nil, fmt.Errorf("read policies: %w", err)
	}
	if cfg.OnPoliciesChanged != nil {
		cfg.OnPoliciesChanged(rev, list)
	}
	if err := s.fsm.reportModules(); err != nil {
		return nil, err
	}

	trans := cfg.Transport
	if trans == nil {
		_, s.ownTrans = raft.NewInmemTransport(raft.ServerAddress(cfg.NodeID))
		trans = s.ownTrans
	}
	rc := cfg.raftConfig(logger)
	s.expiry = newExpirer(s)
	rc.NotifyCh = s.expiry.notify
	bootstrapped := false
	if cfg.Bootstrap && !hasState {
		servers := raft.Configuration{Servers: []raft.Server{{
			Suffrage: raft.Voter,
			ID:       rc.LocalID,
			Address:  trans.LocalAddr(),
		}}}
		if err := raft.BootstrapCluster(rc, s.logs, s.boltStore, snaps, trans, servers); err != nil {
			return nil, fmt.Errorf("bootstrap: %w", err)
		}
		bootstrapped = true
	}
	if s.raft, err = raft.NewRaft(rc, s.fsm, s.logs, s.boltStore, snaps, trans); err != nil {
		return nil, fmt.Errorf("start raft: %w", err)
	}
	s.membership.hadState = hasState
	s.watchPeers()
	s.expiry.start()
	logger.Info("raft store open", "data_dir", cfg.DataDir, "bootstrapped", bootstrapped,
		"applied_index", s.fsm.appliedIndex(), "policy_revision", rev)
	return s, nil
}

// reconcile checks state.db against the Raft log before Raft starts.
func (s *Store) reconcile(hasState bool, snaps raft.SnapshotStore) error {
	applied := s.fsm.appliedIndex()
	if !hasState {
		if applied > 0 {
			return fmt.Errorf("%s has applied index %d but there is no Raft state: raft.db and snapshots/ are missing; restore them or remove %s", stateFile, applied, stateFile)
		}
		return nil
	}
	last, err := s.logs.LastIndex()
	if err != nil {
		return err
	}
	if list, err := snaps.List(); err != nil {
		return err
	} else if len(list) > 0 && list[0].Index > last {
		last = list[0].Index
	}
	// Entries up to state.db's index would be skipped as already applied,
	// so a log that ends before it would silently lose every write between.
	if applied > last {
		return fmt.Errorf("%s has applied index %d beyond the Raft log's last index %d: raft.db does not belong to it", stateFile, applied, last)
	}
	return s.fsm.catchUp(s.logs, snaps)
}

// Close shuts the Raft node down and closes the files. In-flight writes
// fail with ErrClosed; later calls of any method too. It is idempotent and
// returns the first call's result.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		var errs []error
		if s.raft != nil {
			s.stopLeases()
			s.stopWatchingPeers()
			if err := s.raft.Shutdown().Error(); err != nil {
				errs = append(errs, fmt.Errorf("shutdown raft: %w", err))
			}
		}
		errs = append(errs, s.closeFiles())
		if err := errors.Join(errs...); err != nil {
			s.closeErr = s.errorf("close: %w", err)
		}
		s.logger.Info("raft store closed")
	})
	return s.closeErr
}

// closeFiles releases everything but the Raft node, which must be stopped
// (or never started) first.
func (s *Store) closeFiles() error {
	var errs []error
	if s.ownTrans != nil {
		errs = append(errs, s.ownTrans.Close())
	}
	if s.fsm != nil {
		errs = append(errs, s.fsm.close())
	}
	if s.boltStore != nil {
		errs = append(errs, s.boltStore.Close())
	}
	return errors.Join(errs...)
}

// apply proposes one command and waits until this node has applied it. The
// wait is bounded by ApplyTimeout as well as ctx. Raft cannot withdraw an
// entry, so a timed-out or cancelled write may still commit later.
func (s *Store) apply(ctx context.Context, op string, at time.Time, body any) (any, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	data, err := encodeCommand(op, at, body)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ApplyTimeout)
	defer cancel()
	deadline, _ := ctx.Deadline()
	enqueue := time.Until(deadline)
	if enqueue <= 0 { // raft reads 0 as "no timeout"
		return nil, fmt.Errorf("%w: deadline passed before proposing", ErrTimeout)
	}
	f := s.raft.Apply(data, enqueue)
	if err := s.await(ctx, f); err != nil {
		return nil, err
	}
	return f.Response(), nil
}

// await waits for a Raft future or the context, and maps Raft's errors to
// ours. Raft's futures cannot be cancelled, so on ctx expiry the helper
// goroutine lingers until Raft resolves the future, which it always does
// (commit, lost leadership or shutdown).
func (s *Store) await(ctx context.Context, f raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return s.mapRaftErr(err)
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return fmt.Errorf("%w: %w", ErrTimeout, ctx.Err())
		}
		return ctx.Err()
	}
}

func (s *Store) mapRaftErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raft.ErrNotLeader):
		return s.notLeader()
	case errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return fmt.Errorf("%w: %w", ErrNoLeader, err)
	case errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrAbortedByRestore):
		return fmt.Errorf("%w: %w", ErrLeadershipLost, err)
	case errors.Is(err, raft.ErrEnqueueTimeout):
		return fmt.Errorf("%w: %w", ErrTimeout, err)
	case errors.Is(err, raft.ErrRaftShutdown):
		return fmt.Errorf("%w: %w", ErrClosed, err)
	}
	return err
}

func (s *Store) notLeader() *NotLeaderError {
	addr, id := s.raft.LeaderWithID()
	return &NotLeaderError{LeaderID: string(id), LeaderAddr: string(addr)}
}

// errorf prefixes errors with the package and node, which is what an
// operator reading one log line of a cluster needs.
func (s *Store) errorf(format string, args ...any) error {
	return fmt.Errorf("raftstore: node %s: "+format, append([]any{s.nodeID}, args...)...)
}

// IsLeader reports whether this node is currently the Raft leader. The
// answer can be stale by the time it is used; writes re-check.
func (s *Store) IsLeader() bool {
	return !s.closed.Load() && s.raft.State() == raft.Leader
}

// Leader returns the id and transport address of the leader this node
// knows, or empty strings.
func (s *Store) Leader() (id, addr string) {
	a, i := s.raft.LeaderWithID()
	return string(i), string(a)
}

// State returns the Raft state name: "Follower", "Candidate", "Leader" or
// "Shutdown".
func (s *Store) State() string {
	return s.raft.State().String()
}

// WaitForLeader returns once a leader is known (this node or another). On
// ctx expiry it fails with ErrNoLeader.
func (s *Store) WaitForLeader(ctx context.Context) error {
	t := time.NewTicker(leaderPollInterval)
	defer t.Stop()
	for {
		if s.closed.Load() {
			return s.errorf("wait for leader: %w", ErrClosed)
		}
		if _, id := s.raft.LeaderWithID(); id != "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return s.errorf("wait for leader: %w: %w", ErrNoLeader, ctx.Err())
		case <-t.C:
		}
	}
}

// LinearizableRead returns once this node's state reflects every write
// committed before the call, so that a following read cannot miss an
// acknowledged write. It follows Raft's read-index protocol: note the
// commit index, confirm leadership with a quorum heartbeat (no log write),
// then wait for the state machine to reach the index. Only the leader can
// do this; a follower gets a *NotLeaderError. Bounded by ApplyTimeout.
func (s *Store) LinearizableRead(ctx context.Context) error {
	if s.closed.Load() {
		return s.errorf("linearizable read: %w", ErrClosed)
	}
	if s.raft.State() != raft.Leader {
		return s.errorf("linearizable read: %w", s.notLeader())
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ApplyTimeout)
	defer cancel()
	if err := s.readIndex(ctx); err != nil {
		return s.errorf("linearizable read: %w", err)
	}
	return nil
}

// Barrier waits until every entry in the leader's log when it is called
// is committed and applied (or fails, e.g. when leadership is lost). After
// a write whose outcome was unknown (ErrTimeout), a successful Barrier
// means the state shows whether it went through.
func (s *Store) Barrier(ctx context.Context) error {
	if s.closed.Load() {
		return s.errorf("barrier: %w", ErrClosed)
	}
	if s.raft.State() != raft.Leader {
		return s.errorf("barrier: %w", s.notLeader())
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ApplyTimeout)
	defer cancel()
	deadline, _ := ctx.Deadline()
	if err := s.await(ctx, s.raft.Barrier(time.Until(deadline))); err != nil {
		return s.errorf("barrier: %w", err)
	}
	return nil
}

func (s *Store) readIndex(ctx context.Context) error {
	readIndex := s.raft.CommitIndex()
	var entry raft.Log
	err := s.logs.GetLog(readIndex, &entry)
	if err != nil && !errors.Is(err, raft.ErrLogNotFound) {
		return err
	}
	// The commit index is only known to be current once the leader has
	// committed an entry of its own term; right after an election it may
	// lag. A barrier commits such an entry and waits for the state machine,
	// which is also a complete answer, so this costs one write per term at
	// most.
	if err != nil || entry.Term != s.raft.CurrentTerm() {
		deadline, _ := ctx.Deadline()
		return s.await(ctx, s.raft.Barrier(time.Until(deadline)))
	}
	if err := s.await(ctx, s.raft.VerifyLeader()); err != nil {
		return err
	}
	// The state machine only sees command entries, so wait for the last
	// command at or below the read index rather than the index itself,
	// which may be a no-op or configuration entry.
	target := readIndex
	if entry.Type != raft.LogCommand {
		applied := s.fsm.appliedIndex()
		if target, _, err = lastCommand(s.logs, applied, readIndex); err != nil {
			return err
		}
	}
	return s.fsm.waitApplied(ctx, target)
}

// AppliedIndex returns the Raft index of the last command entry the state
// machine has processed. Configuration and no-op entries do not move it, so
// it can trail LastIndex even when nothing is pending.
func (s *Store) AppliedIndex() uint64 {
	return s.fsm.appliedIndex()
}

// LastIndex returns the index of the last entry in the Raft log or in the
// last snapshot, committed or not.
func (s *Store) LastIndex() uint64 {
	return s.raft.LastIndex()
}

// Snapshot takes a Raft snapshot now and compacts the log behind it, as
// Raft does by itself every SnapshotThreshold entries. It is for tests and
// operators (before a backup or an upgrade). Having nothing new to snapshot
// is not an error.
func (s *Store) Snapshot() error {
	if s.closed.Load() {
		return s.errorf("snapshot: %w", ErrClosed)
	}
	err := s.raft.Snapshot().Error()
	if err == nil || errors.Is(err, raft.ErrNothingNewToSnapshot) {
		return nil
	}
	return s.errorf("snapshot: %w", s.mapRaftErr(err))
}

// Stats returns Raft's statistics plus the state machine's, for /metrics
// and debugging. Keys and values are informational, not an API.
func (s *Store) Stats() map[string]string {
	m := s.raft.Stats()
	m["node_id"] = s.nodeID
	m["fsm_applied_index"] = strconv.FormatUint(s.fsm.appliedIndex(), 10)
	m["policy_revision"] = strconv.FormatUint(s.PolicyRevision(), 10)
	if err := s.fsm.failed(); err != nil {
		m["fsm_error"] = err.Error()
	}
	return m
}
