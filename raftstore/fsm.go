package raftstore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"

	"github.com/coordinatord/coordinatord/engine"
	"github.com/coordinatord/coordinatord/policies"
)

// Layout of state.db. Each kind of record gets its own bucket; leases,
// modules and correlation records will add theirs beside these.
var (
	// bucketMeta holds the keys below.
	bucketMeta = []byte("meta")
	// keySchema is the layout version, checked at open so that an older
	// binary never misreads a newer file.
	keySchema = []byte("schema")
	// keyAppliedIndex is the Raft index of the last command whose effects
	// are in this file. It is written in the same transaction as those
	// effects, which is what makes skipping replayed entries exact.
	keyAppliedIndex = []byte("applied_index")
	// keyPolicyRevision is the policy-set revision.
	keyPolicyRevision = []byte("policy_revision")

	// bucketPolicies maps policy id to the policy's JSON.
	bucketPolicies = []byte("policies")
	// bucketPolicyVersions maps policy id to the last version ever given to
	// it. It outlives a delete, so a re-created id continues counting and a
	// (id, version) pair never names two different texts.
	bucketPolicyVersions = []byte("policy_versions")
)

const stateSchema = 1

// stateFile is the state machine's file name inside the data directory.
const stateFile = "state.db"

// boltOpenTimeout makes a second process on the same data directory fail
// fast on bbolt's file lock instead of hanging.
const boltOpenTimeout = time.Second

// stateMmapSize is state.db's initial memory map. bbolt must re-map the file
// to grow it, and a re-map waits for every read transaction to end, so a
// write that grows the file would stall Apply for as long as a snapshot is
// being persisted. Mapping generously up front (address space, not memory;
// the file itself stays small) avoids that until the state outgrows it.
// etcd maps 10 GiB for the same reason.
const stateMmapSize = 512 << 20

// fsm is the replicated state machine: a bbolt file whose contents are a
// deterministic function of the committed log. It implements
// raft.BatchingFSM:
//
//   - ApplyBatch is called by Raft's state machine goroutine with runs of
//     committed entries (up to MaxAppendEntries), in log order; Apply is the
//     same for one entry. It must be deterministic: it reads no clock
//     (times come stamped in the command), no randomness and no node-local
//     configuration (the one exception, the lease event retention, is
//     documented on Config.LeaseEventRetention), so every node that applies
//     the same log holds the same state. A command it cannot apply (unknown
//     op or version, failed precondition) yields an error result and
//     changes nothing but the recorded index; it never panics. A whole
//     batch is one bbolt transaction, so one fsync, which also records the
//     index of its last command.
//   - Because a batch shares its transaction, a rejected command cannot be
//     rolled back on its own. Every op handler therefore checks everything
//     first and writes only once the command is known to succeed: a handler
//     that returns a rejection must not have written anything. A storage
//     error (any other error) fails the whole batch and the state machine.
//     The effects outside the file (OnPoliciesChanged, lease watchers, the
//     expiry queue) run after the commit, in commit order, before the
//     applied index moves.
//   - Snapshot is called on the same goroutine as Apply, so Apply waits for
//     it: it only opens a bbolt read transaction, which pins a consistent
//     view in O(1), and leaves all I/O to Persist.
//   - fsmSnapshot.Persist runs on Raft's snapshot goroutine concurrently with
//     Apply; bbolt's MVCC lets it stream the pinned view while writes go on.
//     Release rolls the read transaction back, and Raft always calls it.
//   - Restore is never concurrent with Apply or Snapshot, but is with
//     readers; it replaces the whole file atomically.
type fsm struct {
	dir        string
	logger     *slog.Logger
	onPolicies func(revision uint64, ps []policies.Policy)
	// onModules is Config.OnModulesChanged (modules.go).
	onModules func(revision uint64, ms []Module)

	// mu guards the db handle, not the data (bbolt serialises writers and
	// isolates readers itself). Everyone using db holds it shared for the
	// whole transaction, so that Restore, the only exclusive holder, never
	// swaps the file under a reader.
	mu sync.RWMutex
	db *bolt.DB

	// idxMu guards applied and appliedCh.
	idxMu sync.Mutex
	// applied is the index of the last command entry this state machine
	// has processed, applied or rejected. It mirrors keyAppliedIndex.
	applied uint64
	// appliedCh is closed and replaced whenever applied moves or the state
	// machine stops, which wakes waitApplied.
	appliedCh chan struct{}

	// revision caches keyPolicyRevision for lock-free reads.
	revision atomic.Uint64

	// failure is set once a committed entry could not be persisted; from
	// then on nothing is applied or served. See ErrStateFailed.
	failure atomic.Pointer[error]

	// lease feeds lease watchers and the expiry queue (lease_fsm.go).
	lease leaseFeed

	// corr caches the last committed correlation record (correlation.go);
	// nil when none was ever committed.
	corr atomic.Pointer[CorrelationRecord]
}

var _ raft.BatchingFSM = (*fsm)(nil)

// openFSM opens or creates state.db in dir.
func openFSM(dir string, logger *slog.Logger, onPolicies func(uint64, []policies.Policy)) (*fsm, error) {
	removeRestoreLeftovers(dir, logger)
	db, applied, rev, err := openStateDB(filepath.Join(dir, stateFile))
	if err != nil {
		return nil, err
	}
	f := &fsm{dir: dir, logger: logger, onPolicies: onPolicies, db: db, applied: applied, appliedCh: make(chan struct{})}
	f.revision.Store(rev)
	if err := f.loadLeases(db); err != nil {
		_ = db.Close()
		return nil, err
	}
	if err := f.loadCorrelation(db); err != nil {
		_ = db.Close()
		return nil, err
	}
	return f, nil
}

// openStateDB opens a state file, creates the layout if it is new, and
// returns its applied index and policy revision.
func openStateDB(path string) (db *bolt.DB, applied, rev uint64, err error) {
	db, err = bolt.Open(path, 0o600, &bolt.Options{Timeout: boltOpenTimeout, InitialMmapSize: stateMmapSize})
	if err != nil {
		return nil, 0, 0, fmt.Errorf("open %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		switch schema := getUint64(meta, keySchema); schema {
		case 0:
			if err := putUint64(meta, keySchema, stateSchema); err != nil {
				return err
			}
		case stateSchema:
		default:
			return fmt.Errorf("schema %d is newer than this binary's %d", schema, stateSchema)
		}
		buckets := slices.Concat([][]byte{bucketPolicies, bucketPolicyVersions}, leaseBuckets, moduleBuckets, correlationBuckets)
		for _, b := range buckets {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		applied = getUint64(meta, keyAppliedIndex)
		rev = getUint64(meta, keyPolicyRevision)
		return nil
	})
	if err != nil {
		_ = db.Close()
		return nil, 0, 0, fmt.Errorf("initialise %s: %w", path, err)
	}
	return db, applied, rev, nil
}

// handler applies one op inside the batch's write transaction. It returns
// a rejection (see reject) for a failed precondition, and then must not
// have written anything (see fsm); any other error means the storage
// failed. Its value may implement sideEffects.
type handler func(tx *bolt.Tx, c command) (any, error)

// sideEffects is implemented by handler results that carry more than the
// proposer's value.
type sideEffects interface {
	// result is what the proposer gets. A non-nil error with kept writes
	// is possible: a renew that finds its lease out of time commits the
	// expiry and fails.
	result() (any, error)
	// leaseEvents are the lease events the entry stored, for watchers and
	// the expiry queue.
	leaseEvents() []engine.LeaseEvent
	// activeDelta is the change in the number of active leases.
	activeDelta() int
}

// ops is the dispatch table. policies says whether the op changes the
// policy set, so that OnPoliciesChanged is called after it.
var ops = map[string]struct {
	apply    handler
	policies bool
}{
	opPutPolicy:    {applyPutPolicy, true},
	opDeletePolicy: {applyDeletePolicy, true},
	opPutMember:    {applyPutMember, false},
	opDeleteMember: {applyDeleteMember, false},

	opAcquireLease:   {applyAcquireLease, false},
	opRenewLease:     {applyRenewLease, false},
	opReleaseLease:   {applyReleaseLease, false},
	opExpireLeases:   {applyExpireLeases, false},
	opLeaderPromoted: {applyLeaderPromoted, false},

	// Module ops report through OnModulesChanged (moduleOps).
	opPutModule:    {applyPutModule, false},
	opDeleteModule: {applyDeleteModule, false},

	// The correlation record (correlation.go).
	opPutCorrelation: {applyPutCorrelation, false},
}

// rejection marks an error as the deterministic outcome of a command (the
// same on every node) rather than a storage failure.
type rejection struct{ err error }

func (r rejection) Error() string { return r.err.Error() }
func (r rejection) Unwrap() error { return r.err }

func reject(err error) error { return rejection{err} }

// policySet is the whole policy set at one revision, handed to
// OnPoliciesChanged.
type policySet struct {
	revision uint64
	list     []policies.Policy
}

// batchEffects collects what a batch's entries do outside the file, to
// run after the commit.
type batchEffects struct {
	// last is the index of the batch's last command.
	last        uint64
	policySets  []policySet
	moduleSets  []moduleSet
	leaseEvents []engine.LeaseEvent
	activeDelta int
	// queueItems are lease changes only the expiry queue sees (a grace
	// extends leases without a lease event).
	queueItems []expiryItem
	// correlation is the last correlation record the batch wrote.
	correlation *CorrelationRecord
}

// Apply implements raft.FSM for a single entry; see the type's comment for
// the contract.
func (f *fsm) Apply(l *raft.Log) any {
	return f.ApplyBatch([]*raft.Log{l})[0]
}

// ApplyBatch implements raft.BatchingFSM; see the type's comment for the
// contract. Raft sends command and configuration entries; configuration is
// Raft's own business and gets a nil response.
func (f *fsm) ApplyBatch(logs []*raft.Log) []any {
	out := make([]any, len(logs))
	if err := f.failed(); err != nil {
		for i := range out {
			out[i] = applyResult{err: err}
		}
		return out
	}
	// With NoSnapshotRestoreOnStart, Raft replays every entry after its
	// last snapshot at start; those up to keyAppliedIndex are already in
	// the file. Only the proposer waits for a response, and a replayed entry
	// has none, so this result is never seen.
	applied := f.appliedIndex()
	todo := false
	for i, l := range logs {
		if l.Type != raft.LogCommand {
			continue
		}
		if l.Index <= applied {
			out[i] = applyResult{err: fmt.Errorf("log index %d already applied", l.Index)}
			continue
		}
		todo = true
	}
	if !todo {
		return out
	}
	var b batchEffects
	err := f.update(func(tx *bolt.Tx) error {
		for i, l := range logs {
			if l.Type != raft.LogCommand || l.Index <= applied {
				continue
			}
			res, err := f.applyEntry(tx, l, &b)
			if err != nil {
				return fmt.Errorf("apply index %d: %w", l.Index, err)
			}
			out[i] = res
			b.last = l.Index
		}
		if err := finishLeaseBatch(tx, f.lease.eventRetention(), &b); err != nil {
			return err
		}
		// A rejected command's index is recorded too, so that
		// keyAppliedIndex is always the last entry processed. Open relies
		// on that to tell whether state.db is behind a snapshot.
		return putUint64(tx.Bucket(bucketMeta), keyAppliedIndex, b.last)
	})
	if err != nil {
		err = fmt.Errorf("%w: %v", ErrStateFailed, err)
		f.fail(err)
		for i, l := range logs {
			if l.Type == raft.LogCommand {
				out[i] = applyResult{err: err}
			}
		}
		return out
	}
	for _, set := range b.policySets {
		f.revision.Store(set.revision)
		if f.onPolicies != nil {
			f.onPolicies(set.revision, set.list)
		}
	}
	f.modulesCommitted(&b)
	f.leasesCommitted(&b)
	f.correlationCommitted(&b)
	// Advance only after the callbacks, so that LinearizableRead also
	// implies the engine has seen everything up to the read index.
	f.setApplied(b.last)
	return out
}

// applyEntry decodes and executes one command in the batch's transaction.
// Every failure that is the command's fault becomes its error result; a
// returned error means the storage failed.
func (f *fsm) applyEntry(tx *bolt.Tx, l *raft.Log, b *batchEffects) (applyResult, error) {
	c, err := decodeCommand(l.Data)
	if err != nil {
		f.logger.Error("rejecting log entry this node cannot decode; upgrade the node", "index", l.Index, "error", err)
		return applyResult{err: err}, nil
	}
	op, known := ops[c.Op]
	if !known {
		f.logger.Error("rejecting log entry with unknown op; upgrade the node", "index", l.Index, "op", c.Op)
		return applyResult{err: fmt.Errorf("%w: op %q", ErrUnsupportedCommand, c.Op)}, nil
	}
	c.index = l.Index
	v, err := op.apply(tx, c)
	var rej rejection
	if errors.As(err, &rej) {
		f.logger.Debug("command not applied", "index", l.Index, "op", c.Op, "error", rej.err)
		return applyResult{err: rej.err}, nil
	}
	if err != nil {
		return applyResult{}, fmt.Errorf("op %s: %w", c.Op, err)
	}
	res := applyResult{value: v}
	if se, ok := v.(sideEffects); ok {
		res.value, res.err = se.result()
		b.leaseEvents = append(b.leaseEvents, se.leaseEvents()...)
		b.activeDelta += se.activeDelta()
	}
	if co, ok := v.(correlationOutcome); ok {
		res.value = co.res
		co.collect(b)
	}
	if op.policies {
		// Read inside the transaction: it is the exact set this entry
		// produced, and it costs no second lock or transaction.
		list, rev, err := readPolicies(tx)
		if err != nil {
			return applyResult{}, err
		}
		b.policySets = append(b.policySets, policySet{revision: rev, list: list})
	}
	if err := collectModules(tx, c.Op, b); err != nil {
		return applyResult{}, err
	}
	return res, nil
}

// fail puts the state machine in the failed state; see ErrStateFailed.
func (f *fsm) fail(err error) {
	if f.failure.CompareAndSwap(nil, &err) {
		f.logger.Error("state machine failed; this node stops applying and serving reads until restarted", "error", err)
	}
	f.notify()
}

func (f *fsm) failed() error {
	if p := f.failure.Load(); p != nil {
		return *p
	}
	return nil
}

// update runs fn in a write transaction on the current file.
func (f *fsm) update(fn func(tx *bolt.Tx) error) error {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.db == nil {
		return ErrClosed
	}
	return f.db.Update(fn)
}

// view runs fn in a read transaction on the current file.
func (f *fsm) view(fn func(tx *bolt.Tx) error) error {
	if err := f.failed(); err != nil {
		return err
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.db == nil {
		return ErrClosed
	}
	return f.db.View(fn)
}

func (f *fsm) appliedIndex() uint64 {
	f.idxMu.Lock()
	defer f.idxMu.Unlock()
	return f.applied
}

// setApplied records idx and wakes waiters. Restore sets whatever the
// snapshot holds: the value mirrors the file, it is not a high-water mark.
func (f *fsm) setApplied(idx uint64) {
	f.idxMu.Lock()
	f.applied = idx
	close(f.appliedCh)
	f.appliedCh = make(chan struct{})
	f.idxMu.Unlock()
}

// notify wakes waiters without moving applied, so that they re-check for
// failure or close.
func (f *fsm) notify() {
	f.idxMu.Lock()
	close(f.appliedCh)
	f.appliedCh = make(chan struct{})
	f.idxMu.Unlock()
}

// waitApplied blocks until the state machine has processed idx.
func (f *fsm) waitApplied(ctx context.Context, idx uint64) error {
	for {
		f.idxMu.Lock()
		applied, ch := f.applied, f.appliedCh
		f.idxMu.Unlock()
		if applied >= idx {
			return nil
		}
		if err := f.failed(); err != nil {
			return err
		}
		if f.isClosed() {
			return ErrClosed
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (f *fsm) isClosed() bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.db == nil
}

// close closes the file. Raft must be shut down first, so that Apply is no
// longer called.
func (f *fsm) close() error {
	f.mu.Lock()
	var err error
	if f.db != nil {
		err = f.db.Close()
		f.db = nil
	}
	f.mu.Unlock()
	f.notify()
	return err
}

func getUint64(b *bolt.Bucket, key []byte) uint64 {
	v := b.Get(key)
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

func putUint64(b *bolt.Bucket, key []byte, v uint64) error {
	return b.Put(key, binary.BigEndian.AppendUint64(nil, v))
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
