package raftstore

import (
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/hashicorp/raft"

	"github.com/coordinatord/coordinatord/engine"
	"github.com/coordinatord/coordinatord/policies"
)

// Config configures a Store. Start from DefaultConfig and set NodeID and
// DataDir; the zero value is not valid. A Config is a value: Open copies it
// and never modifies the caller's copy.
type Config struct {
	// NodeID is this node's Raft server id: unique in the cluster and stable
	// for the node's lifetime (it is stored in the Raft configuration). It
	// must not contain whitespace.
	NodeID string

	// DataDir holds raft.db (Raft log and stable store), state.db (the state
	// machine) and snapshots/. It is created with mode 0700 if missing. Two
	// processes must not share it; the second Open fails fast on the file
	// lock.
	DataDir string

	// Bootstrap makes Open create a new cluster with this node as its only
	// voter when DataDir holds no Raft state yet. It is ignored when state
	// exists, so it is safe to leave on across restarts. A node opened
	// without it and without state waits to be added by a leader.
	Bootstrap bool

	// Transport carries Raft RPCs. Nil selects an in-memory transport whose
	// address is NodeID, which is enough for a single node and for tests.
	// A cluster supplies NewTLSTransport's transport (TCP with mutual TLS
	// 1.3, peers checked by identity). A supplied transport stays owned by
	// the caller: Close does not close it.
	Transport raft.Transport

	// Logger receives this package's and Raft's logs. Nil means
	// slog.Default().
	Logger *slog.Logger

	// HeartbeatTimeout is how long a follower goes without contact from a
	// leader before it starts an election. It bounds how long a crashed
	// leader stays undetected.
	HeartbeatTimeout time.Duration

	// ElectionTimeout is how long a candidate waits for an election to
	// finish before starting another. Lease TTLs must stay well above it: a
	// leader change may lengthen a lease by up to this much.
	ElectionTimeout time.Duration

	// LeaderLeaseTimeout is how long a leader keeps its role without
	// hearing from a quorum before it steps down. It must not exceed
	// HeartbeatTimeout, or a partitioned old leader could still believe it
	// leads after the others elected a new one.
	LeaderLeaseTimeout time.Duration

	// CommitTimeout is how long the leader waits without new writes before
	// it sends an empty AppendEntries so followers learn the commit index.
	CommitTimeout time.Duration

	// SnapshotThreshold is how many log entries must accumulate since the
	// last snapshot before Raft takes a new one.
	SnapshotThreshold uint64

	// SnapshotInterval is how often Raft checks SnapshotThreshold (staggered
	// randomly up to twice this value so nodes do not snapshot together).
	SnapshotInterval time.Duration

	// TrailingLogs is how many entries are kept after a snapshot, so that a
	// slightly lagging follower catches up from the log instead of receiving
	// a whole snapshot.
	TrailingLogs uint64

	// SnapshotRetain is how many snapshots are kept in DataDir/snapshots.
	// Keeping more than one lets an operator fall back when the newest is
	// damaged.
	SnapshotRetain int

	// ApplyTimeout bounds every write and read barrier, on top of the
	// caller's context: after it the call returns ErrTimeout. Keep it above
	// ElectionTimeout so that a write survives a quick leader change
	// instead of failing while the cluster recovers.
	ApplyTimeout time.Duration

	// OnPoliciesChanged, if set, receives the whole policy set (sorted by
	// id) and its revision: once during Open before Raft starts (also when
	// the set is empty, revision 0), after every committed policy write, and
	// after a snapshot is restored. Calls are never concurrent and come in
	// commit order, from Open's goroutine and then from Raft's state machine
	// goroutine. Because a write returns only after the state machine has
	// applied it, the node's admission engine is re-prepared by the time
	// PutPolicy or DeletePolicy returns on the leader; followers see the
	// change when they apply the entry.
	//
	// It blocks the state machine while it runs, so it must be quick. It may
	// call the read methods, but it must not call a write method or
	// LinearizableRead: those wait for the state machine, which waits for
	// the callback, which is a deadlock. It may keep the slice.
	OnPoliciesChanged func(revision uint64, ps []policies.Policy)

	// OnModulesChanged, if set, receives the whole Wasm module set (sorted
	// by name) and its revision, on the same terms as OnPoliciesChanged:
	// once during Open before Raft starts (also when the set is empty),
	// after every committed module write, and after a snapshot is
	// restored; never concurrently, in commit order. It blocks the state
	// machine, so it must not compile anything itself: hand the set to
	// another goroutine. It may call the read methods (ModuleBytes too)
	// from that goroutine, and may keep the slice.
	OnModulesChanged func(revision uint64, ms []Module)

	// Clock is the node's time source: the leader stamps it into every
	// lease command (the state machine itself never reads a clock), and
	// CheckLease and the expiry loop read it. Nil means time.Now. Tests
	// inject a fake one.
	Clock func() time.Time

	// LeaseLimits bound lease TTLs. The leader stamps its limits into each
	// acquire and renew command, so a change takes effect cluster-wide with
	// the leader's configuration. MinTTL must not be below ElectionTimeout.
	LeaseLimits engine.LeaseLimits

	// LeaseEventRetention is how many lease events the state keeps for
	// WatchLeases to replay; older ones are dropped, whole Raft entries at a
	// time, in the transaction that goes past the bound. Unlike the rest of
	// the state it is node-local configuration: give every node the same
	// value, or their histories (and CompactedError answers) differ.
	LeaseEventRetention int

	// ExpiryResolution is the expiry loop's tick: a lease is expired at most
	// about this long after its ExpiresAt (plus one commit), and a Hold is
	// re-checked this often. It must not exceed LeaseLimits.MinTTL.
	ExpiryResolution time.Duration

	// Hold, if set, is asked by the leader's expiry loop for each lease
	// that is due, with the owner's datacenter; while it returns true the
	// lease is held, not expired (the correlation engine's "delay eviction"
	// during a partition). Hold start and end are logged once per lease.
	// The leader also asks it before proposing an acquire, renew or release
	// of a lease that is out of time, so that such a command does not
	// expire a held lease either: its owner may renew or release it, and
	// another owner's acquire is refused as for a lease in time. It runs on
	// the expiry loop and request goroutines, concurrently, and must be
	// quick; a panic is logged and counts as false. Nil never holds.
	Hold func(ownerDC string) bool

	// MaxLeaseHold caps how long a held lease is kept past the expiry its
	// owner last set (acquire or renew; a grace or a leader promotion does
	// not move it): after that it is expired whatever Hold says, and a
	// grace never extends it past that point plus its TTL. The leader
	// stamps it into each correlation record it commits, so every node
	// applies the same bound. 0 means no cap.
	MaxLeaseHold time.Duration
}

// DefaultConfig returns a Config with production defaults and no NodeID or
// DataDir. The timing values are hashicorp/raft's own defaults, which are
// tuned for a LAN; a cluster spanning datacenters should raise the three
// timeouts together.
func DefaultConfig() Config {
	return Config{
		HeartbeatTimeout:   1000 * time.Millisecond,
		ElectionTimeout:    1000 * time.Millisecond,
		LeaderLeaseTimeout: 500 * time.Millisecond,
		CommitTimeout:      50 * time.Millisecond,
		// Policies and leases are small: 8192 entries is a few MB of log,
		// and replaying that at start takes well under a second.
		SnapshotThreshold: 8192,
		SnapshotInterval:  120 * time.Second,
		TrailingLogs:      10240,
		SnapshotRetain:    2,
		ApplyTimeout:      10 * time.Second,
		// Leases: 1s to 1h, 10s by default; see engine.DefaultLeaseLimits.
		LeaseLimits:         engine.DefaultLeaseLimits(),
		LeaseEventRetention: DefaultLeaseEventRetention,
		ExpiryResolution:    DefaultExpiryResolution,
		// Long enough to ride out a partition the correlation engine
		// detects (30s window, 60s backoff), short enough that a dead
		// datacenter's jobs fail over within minutes.
		MaxLeaseHold: DefaultMaxLeaseHold,
	}
}

// minTimeout mirrors raft.ValidateConfig's floor for its timeouts, so that
// Validate rejects what NewRaft would reject, with our field names.
const minTimeout = 5 * time.Millisecond

// Validate reports the first invalid field, including the cross-field
// constraints Raft enforces. The error wraps ErrInvalidConfig.
func (c Config) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("raftstore: %w: "+format, append([]any{ErrInvalidConfig}, args...)...)
	}
	switch {
	case c.NodeID == "":
		return bad("NodeID is empty")
	case strings.ContainsAny(c.NodeID, " \t\r\n"):
		return bad("NodeID %q contains whitespace", c.NodeID)
	case c.DataDir == "":
		return bad("DataDir is empty")
	case c.HeartbeatTimeout < minTimeout:
		return bad("HeartbeatTimeout %s is below %s", c.HeartbeatTimeout, minTimeout)
	case c.ElectionTimeout < minTimeout:
		return bad("ElectionTimeout %s is below %s", c.ElectionTimeout, minTimeout)
	case c.LeaderLeaseTimeout < minTimeout:
		return bad("LeaderLeaseTimeout %s is below %s", c.LeaderLeaseTimeout, minTimeout)
	case c.CommitTimeout < time.Millisecond:
		return bad("CommitTimeout %s is below 1ms", c.CommitTimeout)
	case c.SnapshotInterval < minTimeout:
		return bad("SnapshotInterval %s is below %s", c.SnapshotInterval, minTimeout)
	case c.SnapshotRetain < 1:
		return bad("SnapshotRetain %d must be at least 1", c.SnapshotRetain)
	case c.ApplyTimeout <= 0:
		return bad("ApplyTimeout %s must be positive", c.ApplyTimeout)
	case c.LeaderLeaseTimeout > c.HeartbeatTimeout:
		return bad("LeaderLeaseTimeout %s exceeds HeartbeatTimeout %s", c.LeaderLeaseTimeout, c.HeartbeatTimeout)
	case c.HeartbeatTimeout > c.ElectionTimeout:
		return bad("HeartbeatTimeout %s exceeds ElectionTimeout %s", c.HeartbeatTimeout, c.ElectionTimeout)
	case c.ApplyTimeout < c.ElectionTimeout:
		return bad("ApplyTimeout %s is below ElectionTimeout %s", c.ApplyTimeout, c.ElectionTimeout)
	}
	return c.validateLeases()
}

// raftConfig derives hashicorp/raft's configuration. Fields we do not
// expose keep raft's defaults.
func (c Config) raftConfig(logger *slog.Logger) *raft.Config {
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(c.NodeID)
	rc.HeartbeatTimeout = c.HeartbeatTimeout
	rc.ElectionTimeout = c.ElectionTimeout
	rc.LeaderLeaseTimeout = c.LeaderLeaseTimeout
	rc.CommitTimeout = c.CommitTimeout
	rc.SnapshotThreshold = c.SnapshotThreshold
	rc.SnapshotInterval = c.SnapshotInterval
	rc.TrailingLogs = c.TrailingLogs
	rc.Logger = newHCLogger(logger, "raft")
	// state.db is durable and records the last applied index itself, so
	// restoring the newest snapshot at every start would only throw away
	// newer state and then skip the entries that rebuild it. Open catches
	// up from a snapshot only when state.db is actually behind it.
	rc.NoSnapshotRestoreOnStart = true
	// Group concurrent writes: the leader takes up to MaxAppendEntries
	// queued proposals into one log write, and the state machine applies
	// them in one bbolt transaction (fsm.ApplyBatch), so many lease renewals
	// share two fsyncs.
	rc.BatchApplyCh = true
	rc.MaxAppendEntries = maxAppendEntries
	return rc
}

// maxAppendEntries is the most entries per log write, replication message
// and state machine batch (raft's default is 64, its limit 1024).
const maxAppendEntries = 256
