package raftstore

import (
	"errors"
	"fmt"
)

// Sentinel errors. Every error returned by this package wraps at most a few
// of them with context (node id, operation, policy id); callers test with
// errors.Is and never compare messages.
var (
	// ErrNotLeader is returned by writes and LinearizableRead on a node that
	// is not the Raft leader. The returned error is a *NotLeaderError naming
	// the leader when one is known, so that the caller can forward.
	ErrNotLeader = errors.New("not the leader")

	// ErrNoLeader is returned when the cluster has no known leader: during
	// an election, before a new node has been joined, or when WaitForLeader
	// gives up. Retrying later may succeed.
	ErrNoLeader = errors.New("no leader")

	// ErrLeadershipLost is returned when this node was deposed while a write
	// was in flight. The write may or may not have been committed; only an
	// idempotent or revision-guarded write may be retried blindly.
	ErrLeadershipLost = errors.New("leadership lost while committing")

	// ErrNotFound is returned when the requested item does not exist.
	ErrNotFound = errors.New("not found")

	// ErrConflict is returned when a write's expected revision differs from
	// the current one. The error is a *ConflictError carrying both values.
	ErrConflict = errors.New("revision conflict")

	// ErrLastEnforcingPolicy is returned when a delete or a mode change
	// would leave no policy in enforce mode. Admission fails closed without
	// one, so such a write would lock every client out, including the
	// operators who could repair it.
	ErrLastEnforcingPolicy = errors.New("would leave no policy in enforce mode")

	// ErrInvalid is returned when a write's arguments are malformed, for
	// example an empty policy id or an unstamped time.
	ErrInvalid = errors.New("invalid argument")

	// ErrUnsupportedCommand is returned when a log entry carries an
	// envelope version or an op this node does not know. It means a newer
	// node wrote it: upgrade every node before using new operations.
	ErrUnsupportedCommand = errors.New("unsupported command")

	// ErrClosed is returned by every method once Close has been called, and
	// by writes that were in flight when it was.
	ErrClosed = errors.New("store closed")

	// ErrTimeout is returned when a write or a read barrier was not
	// confirmed within Config.ApplyTimeout or the context deadline. A write
	// that timed out may still be committed later.
	ErrTimeout = errors.New("timed out")

	// ErrInvalidConfig is wrapped by every error of Config.Validate.
	ErrInvalidConfig = errors.New("invalid config")

	// ErrStateFailed is returned after the state machine failed to persist a
	// committed entry (a storage error, not a rejected command). The node
	// stops applying and serving reads so that it never diverges silently;
	// restarting it replays the log from the last persisted index.
	ErrStateFailed = errors.New("state machine failed")

	// ErrCompacted is returned by WatchLeases when events at or after the
	// requested index were already dropped from the retained history. The
	// error is a *CompactedError naming the oldest index a watch can start
	// from.
	ErrCompacted = errors.New("lease events compacted")

	// ErrWatchLagged ends a lease watch whose consumer fell too far behind
	// the commits, or whose node's state was replaced by a snapshot. The
	// consumer resumes with a new watch from the index after the last event
	// it received.
	ErrWatchLagged = errors.New("lease watch fell behind")
)

// NotLeaderError is returned on a follower or candidate. It names the
// leader this node currently knows, if any, so that the caller (a later
// forwarding layer, or an HTTP handler answering with a redirect) can retry
// there. It always matches ErrNotLeader, and also ErrNoLeader when LeaderID
// is empty.
type NotLeaderError struct {
	// LeaderID is the Raft server id of the known leader, or "".
	LeaderID string
	// LeaderAddr is the leader's transport address, or "".
	LeaderAddr string
}

func (e *NotLeaderError) Error() string {
	if e.LeaderID == "" {
		return "not the leader (no leader known)"
	}
	return fmt.Sprintf("not the leader (leader is %s at %s)", e.LeaderID, e.LeaderAddr)
}

// Unwrap lets errors.Is match ErrNotLeader, and ErrNoLeader when no leader
// is known.
func (e *NotLeaderError) Unwrap() []error {
	if e.LeaderID == "" {
		return []error{ErrNotLeader, ErrNoLeader}
	}
	return []error{ErrNotLeader}
}

// ConflictError is returned when a write's expected revision does not match.
// It matches ErrConflict.
type ConflictError struct {
	// Expected is the revision the caller expected.
	Expected uint64
	// Current is the revision at the time the write was applied.
	Current uint64
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("revision conflict: expected %d, current %d", e.Expected, e.Current)
}

// Unwrap lets errors.Is match ErrConflict.
func (e *ConflictError) Unwrap() error { return ErrConflict }

// CompactedError is returned when a lease watch asks for events older than
// the retained history. It matches ErrCompacted.
type CompactedError struct {
	// Oldest is the oldest index a watch can start from now.
	Oldest uint64
}

func (e *CompactedError) Error() string {
	return fmt.Sprintf("lease events compacted: the history starts at index %d", e.Oldest)
}

// Unwrap lets errors.Is match ErrCompacted.
func (e *CompactedError) Unwrap() error { return ErrCompacted }
