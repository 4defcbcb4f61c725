package raftstore

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/coordinatord/coordinatord/engine"
)

// Job leases with fencing tokens (see engine's lease rules for the
// semantics). Writes go through Raft on the leader, stamped with the
// leader's Config.Clock; a follower answers them with a *NotLeaderError.
// Errors from the rules come back as engine's typed errors (errors.Is with
// engine.ErrLeaseHeld and the others, errors.As with *engine.LeaseHeldError
// and *engine.StaleTokenError), wrapped with the node and the job.

// Lease defaults, the rest of Config's lease fields' defaults.
const (
	// DefaultExpiryResolution is Config.ExpiryResolution's default.
	DefaultExpiryResolution = 10 * time.Millisecond
	// DefaultMaxLeaseHold is Config.MaxLeaseHold's default.
	DefaultMaxLeaseHold = 5 * time.Minute
)

// LeaseFilter selects leases for Store.Leases. Zero fields match all.
type LeaseFilter struct {
	// Owner matches Lease.Owner.
	Owner string
	// Datacenter matches Lease.OwnerDC.
	Datacenter string
	// State matches the stored state. A lease whose time ran out but whose
	// expiry is not committed yet is still "active" here; CheckLease
	// answers with the clock.
	State engine.LeaseState
	// Limit caps the number of leases returned; 0 means no cap.
	Limit int
}

// AcquireLease acquires r.JobID for r.Owner through Raft (see
// engine.LeaseLimits.Acquire for the rules) and returns the lease as
// stored. r.At is ignored: the store stamps the time with Config.Clock, and
// r.TTL 0 means Config.LeaseLimits.DefaultTTL. Errors: engine's
// *LeaseHeldError (ErrLeaseHeld), ErrInvalidTTL, ErrInvalidJobID,
// ErrInvalidLeaseRequest; this package's *NotLeaderError, ErrNoLeader,
// ErrLeadershipLost, ErrTimeout, ErrClosed.
func (s *Store) AcquireLease(ctx context.Context, r engine.AcquireRequest) (engine.Lease, error) {
	limits := s.cfg.LeaseLimits
	r.At = s.now()
	// Validate on the proposer too: a request that cannot succeed costs no
	// log entry.
	if _, _, err := limits.Acquire(nil, 0, r); err != nil {
		return engine.Lease{}, s.errorf("acquire lease %q: %w", r.JobID, err)
	}
	body := acquireBody{JobID: r.JobID, Owner: r.Owner, OwnerID: r.OwnerID, OwnerDC: r.OwnerDC, TTL: r.TTL, Force: r.Force, Limits: limits,
		Held: s.heldPastExpiry(r.JobID, r.At)}
	return s.leaseWrite(ctx, "acquire", r.JobID, opAcquireLease, r.At, body)
}

// RenewLease extends the lease r.Owner holds with r.Token to now+TTL
// (r.TTL 0 keeps the lease's TTL), never beyond now+MaxTTL. Errors:
// engine's ErrNoLease, *StaleTokenError (ErrStaleToken), ErrNotOwner,
// ErrLeaseNotActive, ErrLeaseExpired (also when the renew itself found the
// lease out of time and committed its expiry), ErrInvalidTTL, and the
// Raft errors of AcquireLease.
func (s *Store) RenewLease(ctx context.Context, r engine.RenewRequest) (engine.Lease, error) {
	limits := s.cfg.LeaseLimits
	r.At = s.now()
	if err := checkHolderRequest(r.JobID, r.Owner); err != nil {
		return engine.Lease{}, s.errorf("renew lease %q: %w", r.JobID, err)
	}
	if r.TTL != 0 {
		if err := limits.CheckTTL(r.TTL); err != nil {
			return engine.Lease{}, s.errorf("renew lease %q: %w", r.JobID, err)
		}
	}
	body := renewBody{JobID: r.JobID, Owner: r.Owner, Token: r.Token, TTL: r.TTL, Limits: limits, Held: s.heldPastExpiry(r.JobID, r.At)}
	return s.leaseWrite(ctx, "renew", r.JobID, opRenewLease, r.At, body)
}

// ReleaseLease ends the lease r.Owner holds with r.Token. Errors as for
// RenewLease.
func (s *Store) ReleaseLease(ctx context.Context, r engine.ReleaseRequest) (engine.Lease, error) {
	r.At = s.now()
	if err := checkHolderRequest(r.JobID, r.Owner); err != nil {
		return engine.Lease{}, s.errorf("release lease %q: %w", r.JobID, err)
	}
	body := releaseBody{JobID: r.JobID, Owner: r.Owner, Token: r.Token, Held: s.heldPastExpiry(r.JobID, r.At)}
	return s.leaseWrite(ctx, "release", r.JobID, opReleaseLease, r.At, body)
}

// heldPastExpiry reports whether the job's lease, as this node's state
// has it, is active, out of time at at, and held by Config.Hold within
// MaxLeaseHold of the expiry its owner last set (holdCapReached): the
// expiry loop keeps such a lease, and a command on it must not expire it
// either (see heldView). A node that is not the leader gets its write
// refused anyway, so its answer does not matter.
func (s *Store) heldPastExpiry(jobID string, at time.Time) bool {
	if s.cfg.Hold == nil {
		return false
	}
	var l *storedLease
	err := s.fsm.view(func(tx *bolt.Tx) error {
		var err error
		l, err = getStoredLease(tx.Bucket(bucketLeases), jobID)
		return err
	})
	if err != nil || l == nil || l.State != engine.LeaseActive || at.Before(l.ExpiresAt) {
		return false
	}
	if holdCapReached(l.ownerExpiry(), s.cfg.MaxLeaseHold, at) {
		return false
	}
	held := false
	func() {
		defer func() {
			if r := recover(); r != nil {
				s.logger.Error("lease hold check panicked; the lease is not held", "job_id", jobID, "owner_dc", l.OwnerDC, "panic", r)
			}
		}()
		held = s.cfg.Hold(l.OwnerDC)
	}()
	return held
}

// holdCapReached reports whether a lease whose owner last set its expiry
// to ownerExpiry may no longer be held at now: MaxLeaseHold (maxHold) has
// passed since. The cap counts from the owner's expiry, not from
// ExpiresAt, which a grace moves: however many partition episodes come and
// go, a lease its owner does not renew is held for at most maxHold past
// the expiry the owner set. maxHold 0 means no cap.
func holdCapReached(ownerExpiry time.Time, maxHold time.Duration, now time.Time) bool {
	return maxHold > 0 && !now.Before(ownerExpiry.Add(maxHold))
}

// graceTarget is the ExpiresAt a grace at at gives a lease (see
// applyPutCorrelation): one TTL from at, but never past the end of the hold
// cap plus one TTL, ownerExpiry+maxHold+TTL (maxHold 0: no bound). So a
// lease its owner does not renew runs out by ownerExpiry+maxHold+TTL at the
// latest, whatever the number of episodes and graces.
func graceTarget(l *storedLease, at time.Time, maxHold time.Duration) time.Time {
	target := at.Add(l.TTL)
	if maxHold > 0 {
		if bound := l.ownerExpiry().Add(maxHold + l.TTL); bound.Before(target) {
			target = bound
		}
	}
	return target
}

func checkHolderRequest(jobID, owner string) error {
	if err := engine.ValidateJobID(jobID); err != nil {
		return err
	}
	if owner == "" {
		return fmt.Errorf("%w: owner is empty", engine.ErrInvalidLeaseRequest)
	}
	return nil
}

func (s *Store) leaseWrite(ctx context.Context, what, jobID, op string, at time.Time, body any) (engine.Lease, error) {
	resp, err := s.apply(ctx, op, at, body)
	var l engine.Lease
	if err == nil {
		l, err = resultAs[engine.Lease](resp)
	}
	if err != nil {
		return engine.Lease{}, s.errorf("%s lease %q: %w", what, jobID, err)
	}
	return l, nil
}

// Lease returns the job's lease from this node's state, which may trail the
// leader's; call LinearizableRead first when that matters. A job never
// leased fails with an error matching both ErrNotFound and
// engine.ErrNoLease.
func (s *Store) Lease(jobID string) (engine.Lease, error) {
	if err := engine.ValidateJobID(jobID); err != nil {
		return engine.Lease{}, s.errorf("lease %q: %w", jobID, err)
	}
	l, err := s.readLease(jobID)
	if err == nil && l == nil {
		err = fmt.Errorf("%w: %w", ErrNotFound, engine.ErrNoLease)
	}
	if err != nil {
		return engine.Lease{}, s.errorf("lease %q: %w", jobID, err)
	}
	return *l, nil
}

func (s *Store) readLease(jobID string) (*engine.Lease, error) {
	var l *engine.Lease
	err := s.fsm.view(func(tx *bolt.Tx) error {
		var err error
		l, err = getLease(tx.Bucket(bucketLeases), jobID)
		return err
	})
	return l, err
}

// Leases returns the leases f selects from this node's state, sorted by
// job id, never nil.
func (s *Store) Leases(f LeaseFilter) ([]engine.Lease, error) {
	list := []engine.Lease{}
	err := s.fsm.view(func(tx *bolt.Tx) error {
		return scanLeases(tx, func(l engine.Lease) bool {
			if (f.Owner == "" || l.Owner == f.Owner) && (f.Datacenter == "" || l.OwnerDC == f.Datacenter) && (f.State == "" || l.State == f.State) {
				list = append(list, l)
			}
			return f.Limit <= 0 || len(list) < f.Limit
		})
	})
	if err != nil {
		return nil, s.errorf("leases: %w", err)
	}
	return list, nil
}

// CheckLease tells whether token is the job's current token, from this
// node's state and with Config.Clock as now (a read: nothing is written, so
// a lease whose time ran out reads as expired before its expiry commits).
// An unknown job is a result (Reason "no_lease"), not an error.
func (s *Store) CheckLease(jobID string, token uint64) (engine.CheckResult, error) {
	if err := engine.ValidateJobID(jobID); err != nil {
		return engine.CheckResult{}, s.errorf("check lease %q: %w", jobID, err)
	}
	l, err := s.readLease(jobID)
	if err != nil {
		return engine.CheckResult{}, s.errorf("check lease %q: %w", jobID, err)
	}
	return engine.Check(l, token, s.now()), nil
}

// LeaseStats returns the number of leases in state active on this node and
// the length of the expiry queue (0 unless this node leads), for metrics.
func (s *Store) LeaseStats() (active int, expiryQueue int) {
	return int(s.fsm.lease.active.Load()), s.fsm.lease.queue.len()
}

// now is the store's clock.
func (s *Store) now() time.Time {
	if s.cfg.Clock != nil {
		return s.cfg.Clock()
	}
	return time.Now()
}

// scanLeases calls fn with every lease in job id order until it returns
// false.
func scanLeases(tx *bolt.Tx, fn func(engine.Lease) bool) error {
	return scanStoredLeases(tx, func(l storedLease) bool { return fn(l.Lease) })
}

// scanStoredLeases is scanLeases with what only the store tracks.
func scanStoredLeases(tx *bolt.Tx, fn func(storedLease) bool) error {
	c := tx.Bucket(bucketLeases).Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		var l storedLease
		if err := json.Unmarshal(v, &l); err != nil {
			return fmt.Errorf("decode lease %q: %w", k, err)
		}
		if !fn(l) {
			return nil
		}
	}
	return nil
}

// validateLeases checks Config's lease fields; Validate calls it last.
func (c Config) validateLeases() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("raftstore: %w: "+format, append([]any{ErrInvalidConfig}, args...)...)
	}
	if err := c.LeaseLimits.Validate(); err != nil {
		return bad("LeaseLimits: %v", err)
	}
	switch {
	case c.LeaseLimits.MinTTL < c.ElectionTimeout:
		return bad("LeaseLimits.MinTTL %s is below ElectionTimeout %s: a lease could run out during an election", c.LeaseLimits.MinTTL, c.ElectionTimeout)
	case c.LeaseEventRetention < 1:
		return bad("LeaseEventRetention %d must be at least 1", c.LeaseEventRetention)
	case c.ExpiryResolution < time.Millisecond:
		return bad("ExpiryResolution %s is below 1ms", c.ExpiryResolution)
	case c.ExpiryResolution > c.LeaseLimits.MinTTL:
		return bad("ExpiryResolution %s exceeds LeaseLimits.MinTTL %s", c.ExpiryResolution, c.LeaseLimits.MinTTL)
	case c.MaxLeaseHold < 0:
		return bad("MaxLeaseHold %s is negative", c.MaxLeaseHold)
	}
	return nil
}

// stopLeases stops the expiry loop and ends every lease watch with
// ErrClosed. Close calls it before shutting Raft down.
func (s *Store) stopLeases() {
	s.expiry.stop()
	s.fsm.lease.hub.close()
}
