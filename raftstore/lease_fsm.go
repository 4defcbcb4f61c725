package raftstore

import (
	"encoding/json"
	"fmt"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/coordinatord/coordinatord/engine"
)

// The state machine's lease side: buckets, command bodies and handlers. The
// rules themselves are engine's; the handlers load a job's lease, call the
// rule with the command's stamped time and store what it returns.

var (
	// bucketLeases maps job id to its lease's JSON (storedLease: an
	// engine.Lease and its owner's expiry). A job's lease stays after it was
	// released or expired, until the next acquire replaces it.
	bucketLeases = []byte("leases")
	// bucketLeaseTokens maps job id to the last fencing token ever granted
	// for it (8 bytes big-endian). It is never deleted, so a token is never
	// granted twice, whatever happens to the lease.
	bucketLeaseTokens = []byte("lease_tokens")
	// keyActiveLeases counts the leases in state active, for LeaseStats.
	keyActiveLeases = []byte("active_leases")
	// keyLastPromotion holds the JSON of the last leader.promoted entry
	// (promotionRecord), for operators.
	keyLastPromotion = []byte("last_promotion")
)

// storedLease is a lease as bucketLeases keeps it: engine's lease and what
// only the store tracks about it.
type storedLease struct {
	engine.Lease
	// OwnerExpiresAt is the expiry the lease's owner last set: an acquire
	// (its own re-acquire included) or a renew sets it to the new
	// ExpiresAt. Nothing else moves it, neither a leader promotion nor a
	// grace, so it anchors the hold cap whatever the number of partition
	// episodes: the lease is held past ExpiresAt only before
	// OwnerExpiresAt+MaxLeaseHold, and a grace never sets ExpiresAt past
	// OwnerExpiresAt+MaxLeaseHold+TTL (graceTarget). Zero in a lease stored
	// before the field existed: ownerExpiry falls back to ExpiresAt, and the
	// first promotion or grace that extends the lease pins the field to the
	// ExpiresAt it had before.
	OwnerExpiresAt time.Time `json:"owner_expires_at,omitzero"`
}

// ownerExpiry is the expiry the owner last set; see OwnerExpiresAt.
func (l *storedLease) ownerExpiry() time.Time {
	if l.OwnerExpiresAt.IsZero() {
		return l.ExpiresAt
	}
	return l.OwnerExpiresAt
}

// extended is l with ExpiresAt moved to expiresAt at index by something
// else than its owner (a leader promotion or a grace): the owner's expiry
// stays, pinned from the old ExpiresAt in a lease stored without it.
func (l storedLease) extended(expiresAt time.Time, index uint64) storedLease {
	l.OwnerExpiresAt = l.ownerExpiry()
	l.ExpiresAt, l.Index = expiresAt, index
	return l
}

// engineLease is the *engine.Lease of l, nil for nil.
func engineLease(l *storedLease) *engine.Lease {
	if l == nil {
		return nil
	}
	return &l.Lease
}

// leaseBuckets are created by openStateDB beside the policy buckets.
var leaseBuckets = [][]byte{bucketLeases, bucketLeaseTokens, bucketLeaseEvents}

// Bodies of the lease commands. The leader resolves everything node-local
// before proposing (its limits, its time in the envelope), so that the state
// machine applies the same values on every node.
type acquireBody struct {
	JobID   string             `json:"job_id"`
	Owner   string             `json:"owner"`
	OwnerID string             `json:"owner_id,omitempty"`
	OwnerDC string             `json:"owner_dc,omitempty"`
	TTL     time.Duration      `json:"ttl,omitempty"`
	Force   bool               `json:"force,omitempty"`
	Limits  engine.LeaseLimits `json:"limits"`
	// Held is set by a leader whose expiry hook holds the job's lease past
	// its expiry (see heldView).
	Held bool `json:"held,omitempty"`
}

type renewBody struct {
	JobID  string             `json:"job_id"`
	Owner  string             `json:"owner"`
	Token  uint64             `json:"token"`
	TTL    time.Duration      `json:"ttl,omitempty"`
	Limits engine.LeaseLimits `json:"limits"`
	Held   bool               `json:"held,omitempty"`
}

type releaseBody struct {
	JobID string `json:"job_id"`
	Owner string `json:"owner"`
	Token uint64 `json:"token"`
	Held  bool   `json:"held,omitempty"`
}

// expireBody is one batch of the expiry loop: the leases it found out of
// time, each named by the token it saw.
type expireBody struct {
	Leases []expireItem `json:"leases"`
}

type expireItem struct {
	JobID string `json:"job_id"`
	Token uint64 `json:"token"`
}

// expireResult answers a lease.expire entry.
type expireResult struct {
	// Expired are the leases this entry expired.
	Expired []engine.Lease
	// Skipped are the jobs whose lease was no longer expirable (renewed,
	// released, re-acquired or already expired since the loop looked).
	Skipped []string
}

// promotedBody is committed by a new leader before its expiry loop starts.
type promotedBody struct {
	Node string `json:"node"`
	// Grace is the new leader's election timeout: every active lease may
	// gain up to that much (engine.ExtendForLeaderChange).
	Grace time.Duration `json:"grace"`
}

// promotionRecord is stored under keyLastPromotion.
type promotionRecord struct {
	Node     string        `json:"node"`
	Index    uint64        `json:"index"`
	At       time.Time     `json:"at"`
	Grace    time.Duration `json:"grace"`
	Extended int           `json:"extended"`
}

// leaseOutcome is a lease handler's result; see sideEffects.
type leaseOutcome struct {
	value  any
	err    error
	events []engine.LeaseEvent
	delta  int
}

var _ sideEffects = leaseOutcome{}

func (o leaseOutcome) result() (any, error)             { return o.value, o.err }
func (o leaseOutcome) leaseEvents() []engine.LeaseEvent { return o.events }
func (o leaseOutcome) activeDelta() int                 { return o.delta }

// leaseFeed is the lease side of the state machine that lives outside the
// file: what committed lease events feed (watchers and, on the leader, the
// expiry queue) and the active count's mirror.
type leaseFeed struct {
	// retention is how many events the file keeps; 0 means
	// DefaultLeaseEventRetention. Open sets it before Raft starts.
	retention int
	hub       eventHub
	queue     expiryQueue
	// active mirrors keyActiveLeases.
	active atomic.Int64
}

func (lf *leaseFeed) eventRetention() uint64 {
	if lf.retention <= 0 {
		return DefaultLeaseEventRetention
	}
	return uint64(lf.retention)
}

// loadLeases reads the lease counters of a freshly opened file.
func (f *fsm) loadLeases(db *bolt.DB) error {
	return db.View(func(tx *bolt.Tx) error {
		f.lease.active.Store(int64(getUint64(tx.Bucket(bucketMeta), keyActiveLeases)))
		return nil
	})
}

// leasesCommitted hands a committed batch's lease effects on. It runs on
// the state machine goroutine after the commit and before applied moves, in
// commit order; nothing it calls may block.
func (f *fsm) leasesCommitted(b *batchEffects) {
	if b.activeDelta != 0 {
		f.lease.active.Add(int64(b.activeDelta))
	}
	if len(b.leaseEvents) == 0 {
		return
	}
	f.lease.queue.observe(b.leaseEvents)
	f.lease.hub.publish(b.leaseEvents)
}

// leasesRestored follows a snapshot restore: the event history and the
// leases changed wholesale, so watchers end (they resume from their last
// index) and the expiry queue is rebuilt.
func (f *fsm) leasesRestored(db *bolt.DB) error {
	f.lease.hub.dropAll(fmt.Errorf("%w: state was replaced by a snapshot", ErrWatchLagged))
	f.lease.queue.invalidate()
	return f.loadLeases(db)
}

// finishLeaseBatch runs once per batch, inside its transaction, after every
// entry: it trims the event history and stores the active count.
func finishLeaseBatch(tx *bolt.Tx, retention uint64, b *batchEffects) error {
	meta := tx.Bucket(bucketMeta)
	if n := len(b.leaseEvents); n > 0 {
		count := getUint64(meta, keyLeaseEventCount) + uint64(n)
		count, err := compactLeaseEvents(tx, count, retention)
		if err != nil {
			return err
		}
		if err := putUint64(meta, keyLeaseEventCount, count); err != nil {
			return err
		}
	}
	if b.activeDelta != 0 {
		active := int64(getUint64(meta, keyActiveLeases)) + int64(b.activeDelta)
		if err := putUint64(meta, keyActiveLeases, uint64(max(active, 0))); err != nil {
			return err
		}
	}
	return nil
}

// Every lease handler follows the state machine's rule (see fsm): decide
// everything first, write only once the command is known to succeed. A
// rule error without events is a rejection and writes nothing; a rule error
// with events (the lease was out of time and is expired on the way) writes
// the expiry and returns the error to the proposer as the entry's result.

func applyAcquireLease(tx *bolt.Tx, c command) (any, error) {
	body, err := decodeBody[acquireBody](c)
	if err != nil {
		return nil, reject(err)
	}
	if err := checkLeaseCommand(c, body.Limits); err != nil {
		return nil, reject(err)
	}
	cur, err := getStoredLease(tx.Bucket(bucketLeases), body.JobID)
	if err != nil {
		return nil, err
	}
	last := getUint64(tx.Bucket(bucketLeaseTokens), []byte(body.JobID))
	view := heldView(engineLease(cur), body.Held, c.At)
	l, evs, err := body.Limits.Acquire(view, last, engine.AcquireRequest{
		JobID: body.JobID, Owner: body.Owner, OwnerID: body.OwnerID, OwnerDC: body.OwnerDC,
		TTL: body.TTL, Force: body.Force, At: c.At,
	})
	return storeLeaseChange(tx, c.index, cur, l, evs, err, true)
}

func applyRenewLease(tx *bolt.Tx, c command) (any, error) {
	body, err := decodeBody[renewBody](c)
	if err != nil {
		return nil, reject(err)
	}
	if err := checkLeaseCommand(c, body.Limits); err != nil {
		return nil, reject(err)
	}
	cur, err := getStoredLease(tx.Bucket(bucketLeases), body.JobID)
	if err != nil {
		return nil, err
	}
	view := heldView(engineLease(cur), body.Held, c.At)
	l, evs, err := body.Limits.Renew(view, engine.RenewRequest{
		JobID: body.JobID, Owner: body.Owner, Token: body.Token, TTL: body.TTL, At: c.At,
	})
	return storeLeaseChange(tx, c.index, cur, l, evs, err, true)
}

func applyReleaseLease(tx *bolt.Tx, c command) (any, error) {
	body, err := decodeBody[releaseBody](c)
	if err != nil {
		return nil, reject(err)
	}
	if err := checkLeaseCommand(c, engine.DefaultLeaseLimits()); err != nil {
		return nil, reject(err)
	}
	cur, err := getStoredLease(tx.Bucket(bucketLeases), body.JobID)
	if err != nil {
		return nil, err
	}
	view := heldView(engineLease(cur), body.Held, c.At)
	l, evs, err := engine.Release(view, engine.ReleaseRequest{JobID: body.JobID, Owner: body.Owner, Token: body.Token, At: c.At})
	if view != engineLease(cur) && err == nil {
		l.ExpiresAt = cur.ExpiresAt // released, not extended
	}
	return storeLeaseChange(tx, c.index, cur, l, evs, err, false)
}

// heldView is the lease the rules see for a command whose proposer held
// the job's lease past its expiry (its owner's datacenter is held by the
// correlation engine, Config.Hold): the rules expire an active lease that
// is out of time before anything else, which would end a held lease the
// moment anyone touched it, and hand a job that must not fail over to
// another owner. Seen through heldView, such a lease is still in time: its
// owner can renew or release it, and another owner's acquire is refused
// (unless forced). The proposer decides, and says so in the command, so
// that every node applies the same thing.
func heldView(cur *engine.Lease, held bool, at time.Time) *engine.Lease {
	if !held || cur == nil || cur.State != engine.LeaseActive || at.Before(cur.ExpiresAt) {
		return cur
	}
	v := *cur
	v.ExpiresAt = at.Add(time.Nanosecond)
	return &v
}

// applyExpireLeases expires each listed lease that is still expirable and
// skips the others; skipping is not an error, so the entry as a whole is
// never rejected for it.
func applyExpireLeases(tx *bolt.Tx, c command) (any, error) {
	body, err := decodeBody[expireBody](c)
	if err != nil {
		return nil, reject(err)
	}
	if c.At.IsZero() {
		return nil, reject(fmt.Errorf("%w: time is not stamped", ErrInvalid))
	}
	if len(body.Leases) == 0 {
		return nil, reject(fmt.Errorf("%w: no leases to expire", ErrInvalid))
	}
	lb := tx.Bucket(bucketLeases)
	var (
		res    expireResult
		events []engine.LeaseEvent
	)
	for _, it := range body.Leases {
		cur, err := getStoredLease(lb, it.JobID)
		if err != nil {
			return nil, err
		}
		l, evs, err := engine.Expire(engineLease(cur), engine.ExpireRequest{JobID: it.JobID, Token: it.Token, At: c.At})
		if err != nil {
			// ErrNotExpirable is the only error Expire has.
			res.Skipped = append(res.Skipped, it.JobID)
			continue
		}
		l.Index = c.index
		if err := putLease(lb, storedLease{Lease: l, OwnerExpiresAt: cur.OwnerExpiresAt}); err != nil {
			return nil, err
		}
		res.Expired = append(res.Expired, l)
		events = append(events, stampEvents(evs, c.index)...)
	}
	if err := appendLeaseEvents(tx, c.index, events); err != nil {
		return nil, err
	}
	return leaseOutcome{value: res, events: events, delta: -len(res.Expired)}, nil
}

// applyLeaderPromoted extends every active lease by what the leader change
// may have cost its holder (engine.ExtendForLeaderChange) and records the
// promotion. It produces no lease event: the holder's view (token, owner,
// state) is unchanged; Lease.Index of an extended lease becomes this entry's.
// The owner's expiry stays (storedLease.OwnerExpiresAt): a leader change
// does not move the hold cap.
func applyLeaderPromoted(tx *bolt.Tx, c command) (any, error) {
	body, err := decodeBody[promotedBody](c)
	if err != nil {
		return nil, reject(err)
	}
	if c.At.IsZero() {
		return nil, reject(fmt.Errorf("%w: time is not stamped", ErrInvalid))
	}
	if body.Grace < 0 {
		return nil, reject(fmt.Errorf("%w: negative grace %s", ErrInvalid, body.Grace))
	}
	lb := tx.Bucket(bucketLeases)
	// Collect first: bbolt forbids writing a bucket while iterating it.
	var extended []storedLease
	err = lb.ForEach(func(k, v []byte) error {
		var l storedLease
		if err := json.Unmarshal(v, &l); err != nil {
			return fmt.Errorf("decode lease %q: %w", k, err)
		}
		if l.State != engine.LeaseActive || l.Index >= c.index {
			return nil
		}
		if n, changed := engine.ExtendForLeaderChange(l.Lease, c.At, body.Grace); changed {
			extended = append(extended, l.extended(n.ExpiresAt, c.index))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, l := range extended {
		if err := putLease(lb, l); err != nil {
			return nil, err
		}
	}
	rec, err := json.Marshal(promotionRecord{Node: body.Node, Index: c.index, At: c.At, Grace: body.Grace, Extended: len(extended)})
	if err != nil {
		return nil, err
	}
	if err := tx.Bucket(bucketMeta).Put(keyLastPromotion, rec); err != nil {
		return nil, err
	}
	return len(extended), nil
}

// checkLeaseCommand re-validates what the proposer resolved: the state
// machine does not trust the log's author.
func checkLeaseCommand(c command, limits engine.LeaseLimits) error {
	if c.At.IsZero() {
		return fmt.Errorf("%w: time is not stamped", ErrInvalid)
	}
	if err := limits.Validate(); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return nil
}

// storeLeaseChange stores a rule's result; see the comment above the
// handlers for the three shapes it can have. cur is the stored lease
// before the command. byOwner says the command is the owner's acquire or
// renew: when it succeeds, the new ExpiresAt is the owner's expiry
// (storedLease.OwnerExpiresAt); otherwise a lease with cur's token keeps
// cur's.
func storeLeaseChange(tx *bolt.Tx, index uint64, cur *storedLease, l engine.Lease, evs []engine.LeaseEvent, ruleErr error, byOwner bool) (any, error) {
	if len(evs) == 0 {
		if ruleErr == nil {
			return nil, fmt.Errorf("lease rule for job %q changed nothing and reported no error", l.JobID)
		}
		return nil, reject(ruleErr)
	}
	l.Index = index
	stored := storedLease{Lease: l}
	switch {
	case byOwner && ruleErr == nil:
		stored.OwnerExpiresAt = l.ExpiresAt
	case cur != nil && cur.Token == l.Token:
		stored.OwnerExpiresAt = cur.OwnerExpiresAt
	}
	if err := putLease(tx.Bucket(bucketLeases), stored); err != nil {
		return nil, err
	}
	tb := tx.Bucket(bucketLeaseTokens)
	if l.Token > getUint64(tb, []byte(l.JobID)) {
		if err := putUint64(tb, []byte(l.JobID), l.Token); err != nil {
			return nil, err
		}
	}
	evs = stampEvents(evs, index)
	if err := appendLeaseEvents(tx, index, evs); err != nil {
		return nil, err
	}
	return leaseOutcome{value: l, err: ruleErr, events: evs, delta: activeCount(&l) - activeCount(engineLease(cur))}, nil
}

// stampEvents sets the entry's index on the events and their leases.
func stampEvents(evs []engine.LeaseEvent, index uint64) []engine.LeaseEvent {
	for i := range evs {
		evs[i].Index = index
		evs[i].Lease.Index = index
	}
	return evs
}

func activeCount(l *engine.Lease) int {
	if l != nil && l.State == engine.LeaseActive {
		return 1
	}
	return 0
}

// getLease returns the job's stored lease, or nil.
func getLease(lb *bolt.Bucket, jobID string) (*engine.Lease, error) {
	l, err := getStoredLease(lb, jobID)
	return engineLease(l), err
}

// getStoredLease returns the job's stored lease with what only the store
// tracks, or nil.
func getStoredLease(lb *bolt.Bucket, jobID string) (*storedLease, error) {
	raw := lb.Get([]byte(jobID))
	if raw == nil {
		return nil, nil
	}
	var l storedLease
	if err := json.Unmarshal(raw, &l); err != nil {
		return nil, fmt.Errorf("decode lease %q: %w", jobID, err)
	}
	return &l, nil
}

func putLease(lb *bolt.Bucket, l storedLease) error {
	raw, err := json.Marshal(l)
	if err != nil {
		return err
	}
	return lb.Put([]byte(l.JobID), raw)
}
