package raftstore

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"
)

// restorePattern names the temporary file a restore streams into. It lives
// in the data directory so that the final rename stays on one file system
// and is atomic.
const restorePattern = stateFile + ".restore-*"

// fsmSnapshot pins one consistent view of state.db: a bbolt read
// transaction. The snapshot format is therefore simply a bbolt file.
type fsmSnapshot struct {
	tx *bolt.Tx
}

var _ raft.FSMSnapshot = (*fsmSnapshot)(nil)

// Snapshot implements raft.FSM. It runs on the Apply goroutine and only
// begins a read transaction; Persist does the I/O.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	// A failed state machine is missing committed entries. Snapshotting it
	// would let Raft compact away exactly the entries a restart needs.
	if err := f.failed(); err != nil {
		return nil, err
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.db == nil {
		return nil, ErrClosed
	}
	tx, err := f.db.Begin(false)
	if err != nil {
		return nil, fmt.Errorf("begin snapshot transaction: %w", err)
	}
	return &fsmSnapshot{tx: tx}, nil
}

// Persist streams the pinned view into sink. It runs concurrently with
// Apply, which bbolt's MVCC allows: writers never touch pages a reader
// holds. A Restore waiting to close the file waits for it to finish.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := s.tx.WriteTo(sink); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("persist snapshot %s: %w", sink.ID(), err)
	}
	if err := sink.Close(); err != nil {
		return fmt.Errorf("close snapshot %s: %w", sink.ID(), err)
	}
	return nil
}

// Release ends the read transaction. Raft calls it whether or not Persist
// ran, and only after Persist returned.
func (s *fsmSnapshot) Release() {
	_ = s.tx.Rollback()
}

// Restore implements raft.FSM: it replaces all state with the snapshot's,
// then reports the new policy set.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	set, err := f.restore(rc)
	if err != nil {
		return err
	}
	if f.onPolicies != nil {
		f.onPolicies(set.revision, set.list)
	}
	return f.reportModules()
}

// restore streams r into a temporary file, checks it is a state file this
// binary can read, and only then swaps it in with a rename. A truncated or
// foreign stream therefore never replaces good state, and a crash at any
// point leaves either the old or the new file complete.
func (f *fsm) restore(r io.Reader) (*policySet, error) {
	tmp, err := os.CreateTemp(f.dir, restorePattern)
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	tmpPath := tmp.Name()
	defer os.Remove(tmpPath) // fails harmlessly once renamed
	_, err = io.Copy(tmp, r)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("restore: write %s: %w", tmpPath, err)
	}
	if err := checkStateFile(tmpPath); err != nil {
		return nil, fmt.Errorf("restore: snapshot is not a usable state file: %w", err)
	}

	path := filepath.Join(f.dir, stateFile)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.db != nil {
		// bbolt's Close waits for open read transactions, including a
		// snapshot being persisted, so the old file is quiescent after it.
		if err := f.db.Close(); err != nil {
			f.logger.Warn("closing state file before restore", "error", err)
		}
		f.db = nil
	}
	renameErr := os.Rename(tmpPath, path)
	if renameErr == nil {
		renameErr = syncDir(f.dir)
	}
	// Reopen whichever file is now in place: the new one, or the old one if
	// the rename failed.
	db, applied, rev, err := openStateDB(path)
	if err != nil {
		err = fmt.Errorf("restore: reopen %s: %w", path, errors.Join(renameErr, err))
		f.fail(err)
		return nil, err
	}
	f.db = db
	if renameErr != nil {
		return nil, fmt.Errorf("restore: replace %s: %w", path, renameErr)
	}
	var set policySet
	err = db.View(func(tx *bolt.Tx) error {
		var rerr error
		set.list, set.revision, rerr = readPolicies(tx)
		return rerr
	})
	if err != nil {
		err = fmt.Errorf("restore: read policies: %w", err)
		f.fail(err)
		return nil, err
	}
	if err := f.leasesRestored(db); err != nil {
		err = fmt.Errorf("restore: read leases: %w", err)
		f.fail(err)
		return nil, err
	}
	if err := f.loadCorrelation(db); err != nil {
		err = fmt.Errorf("restore: read correlation record: %w", err)
		f.fail(err)
		return nil, err
	}
	f.revision.Store(rev)
	f.setApplied(applied)
	f.logger.Info("state restored from snapshot", "applied_index", applied, "policy_revision", rev)
	return &set, nil
}

// checkStateFile opens path read-only and checks that it has our layout.
// Opening read-only matters: openStateDB would happily initialise an empty
// bbolt file into a valid, empty state.
func checkStateFile(path string) error {
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: boltOpenTimeout})
	if err != nil {
		return err
	}
	defer db.Close()
	return db.View(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if meta == nil {
			return errors.New("no meta bucket")
		}
		if schema := getUint64(meta, keySchema); schema != stateSchema {
			return fmt.Errorf("schema %d, this binary reads %d", schema, stateSchema)
		}
		return nil
	})
}

// removeRestoreLeftovers deletes temporary files of a restore that crashed
// before its rename; they are never needed.
func removeRestoreLeftovers(dir string, logger *slog.Logger) {
	matches, _ := filepath.Glob(filepath.Join(dir, restorePattern))
	for _, m := range matches {
		if err := os.Remove(m); err != nil {
			logger.Warn("removing leftover restore file", "path", m, "error", err)
		}
	}
}

// catchUp restores the newest snapshot into f when state.db is behind it in
// a way the log cannot repair. Raft itself will not (we start it with
// NoSnapshotRestoreOnStart) and will replay only the entries after the
// snapshot, so commands between state.db's index and the snapshot's would
// otherwise be lost. This happens when a crash interrupts a follower
// installing a leader's snapshot, or when an operator removed state.db.
func (f *fsm) catchUp(logs raft.LogStore, snaps raft.SnapshotStore) error {
	list, err := snaps.List()
	if err != nil {
		return fmt.Errorf("list snapshots: %w", err)
	}
	if len(list) == 0 {
		return nil
	}
	newest := list[0]
	applied := f.appliedIndex()
	if applied >= newest.Index {
		return nil
	}
	// A gap made only of configuration, no-op and barrier entries needs no
	// restore; that is the normal case, since a snapshot's index is the last
	// entry of any kind.
	last, compacted, err := lastCommand(logs, applied, newest.Index)
	if err != nil {
		return err
	}
	if last == applied && !compacted {
		return nil
	}
	f.logger.Warn("state.db is behind the newest snapshot; restoring it",
		"applied_index", applied, "snapshot", newest.ID, "snapshot_index", newest.Index)
	_, rc, err := snaps.Open(newest.ID)
	if err != nil {
		return fmt.Errorf("open snapshot %s: %w", newest.ID, err)
	}
	defer rc.Close()
	if _, err := f.restore(rc); err != nil {
		return fmt.Errorf("restore snapshot %s: %w", newest.ID, err)
	}
	return nil
}

// lastCommand returns the index of the last command entry in (lo, hi], or
// lo if there is none. compacted reports that the scan reached an entry
// that was already compacted into a snapshot, before finding a command.
// The scan walks down from hi and normally stops at its first step.
func lastCommand(logs raft.LogStore, lo, hi uint64) (idx uint64, compacted bool, err error) {
	var l raft.Log
	for i := hi; i > lo; i-- {
		if err := logs.GetLog(i, &l); err != nil {
			if errors.Is(err, raft.ErrLogNotFound) {
				return lo, true, nil
			}
			return 0, false, fmt.Errorf("read log index %d: %w", i, err)
		}
		if l.Type == raft.LogCommand {
			return i, false, nil
		}
	}
	return lo, false, nil
}
