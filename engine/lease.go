package engine

import (
	"fmt"
	"time"
)

// This file holds the lease rules: pure functions from the current lease, a
// request and the request's time to the next lease and the events that
// change produced. They read no clock: every request carries the time the
// Raft leader stamped into its command, so that every node applying the same
// log computes the same leases. The replicated store (package raftstore)
// keeps the leases, the last token of every job and the events; these
// functions only decide.

// LeaseState is where a lease is in its life. A job's lease goes from
// active to released (by its holder) or expired (by the leader's expiry
// loop, or found out of time by the next command on the job); a released or
// expired lease stays visible until the job is acquired again.
type LeaseState string

// The lease states.
const (
	LeaseActive   LeaseState = "active"
	LeaseReleased LeaseState = "released"
	LeaseExpired  LeaseState = "expired"
)

// Lease is one job's lease. The store keeps one per job id; acquiring a job
// whose lease ended replaces it with a new lease and a new token.
type Lease struct {
	JobID string `json:"job_id"`
	// Owner is the holder's node claim; renew and release must come from it.
	Owner string `json:"owner"`
	// OwnerID is the holder's SPIFFE ID, for logs and audits.
	OwnerID string `json:"owner_id"`
	// OwnerDC is the holder's datacenter claim. Expiry may be held while the
	// correlation engine says that datacenter is cut off rather than dead.
	OwnerDC string `json:"owner_dc"`
	// Token is the fencing token: per job strictly increasing from 1 and
	// never reused, not after release, expiry or a snapshot restore. Storage
	// guarded by a lease accepts a write only with the highest token it saw.
	Token uint64 `json:"token"`
	// TTL is how long an acquire or renew keeps the lease alive.
	TTL time.Duration `json:"ttl"`
	// State is active, released or expired. An active lease whose ExpiresAt
	// has passed is expired in all but name: every rule treats it so, and
	// the next command on the job (or the expiry loop) commits its expiry.
	State LeaseState `json:"state"`
	// AcquiredAt is when this token was granted.
	AcquiredAt time.Time `json:"acquired_at"`
	// RenewedAt is the last acquire or renew by the holder.
	RenewedAt time.Time `json:"renewed_at"`
	// ExpiresAt is when the lease runs out unless renewed.
	ExpiresAt time.Time `json:"expires_at"`
	// EndedAt is when the lease was released or its expiry was committed;
	// zero while active.
	EndedAt time.Time `json:"ended_at,omitzero"`
	// Index is the Raft index of the lease's last change. The rules leave it
	// alone; the store sets it.
	Index uint64 `json:"index"`
}

// LeaseLimits bound lease TTLs. The store stamps the leader's limits into
// every acquire and renew command, so every node applies the same ones.
type LeaseLimits struct {
	// MinTTL is the shortest TTL a caller may ask for. Keep it at or above
	// the Raft election timeout: a lease shorter than an election can run
	// out while no leader is there to renew it.
	MinTTL time.Duration `json:"min_ttl"`
	// MaxTTL is the longest TTL, and the furthest past a renew's time that
	// any renew sets the expiry.
	MaxTTL time.Duration `json:"max_ttl"`
	// DefaultTTL is the TTL of an acquire that asks for none.
	DefaultTTL time.Duration `json:"default_ttl"`
}

// DefaultLeaseLimits returns the limits of a node that sets none: 1s to 1h,
// 10s by default.
func DefaultLeaseLimits() LeaseLimits {
	return LeaseLimits{
		// One second matches Raft's default election timeout; a lease
		// shorter than that may run out during an election.
		MinTTL: time.Second,
		// An hour bounds how long a vanished holder can block a job.
		MaxTTL: time.Hour,
		// Ten seconds lets a holder miss a renewal or two (renewing every
		// third of the TTL) and still fails a job over quickly.
		DefaultTTL: 10 * time.Second,
	}
}

// Validate reports the first bad field: MinTTL must be positive and
// MinTTL ≤ DefaultTTL ≤ MaxTTL.
func (l LeaseLimits) Validate() error {
	switch {
	case l.MinTTL <= 0:
		return fmt.Errorf("lease limits: MinTTL %s must be positive", l.MinTTL)
	case l.DefaultTTL < l.MinTTL:
		return fmt.Errorf("lease limits: DefaultTTL %s is below MinTTL %s", l.DefaultTTL, l.MinTTL)
	case l.MaxTTL < l.DefaultTTL:
		return fmt.Errorf("lease limits: MaxTTL %s is below DefaultTTL %s", l.MaxTTL, l.DefaultTTL)
	}
	return nil
}

// CheckTTL rejects a TTL outside [MinTTL, MaxTTL] with an error wrapping
// ErrInvalidTTL that names the bounds. A proposer uses it to fail fast.
func (l LeaseLimits) CheckTTL(ttl time.Duration) error {
	if ttl < l.MinTTL || ttl > l.MaxTTL {
		return fmt.Errorf("%w: ttl %s is outside [%s, %s]", ErrInvalidTTL, ttl, l.MinTTL, l.MaxTTL)
	}
	return nil
}

// AcquireRequest asks for a job's lease.
type AcquireRequest struct {
	JobID   string
	Owner   string
	OwnerID string
	OwnerDC string
	// TTL is the lease's TTL; 0 means LeaseLimits.DefaultTTL.
	TTL time.Duration
	// Force takes the lease over from another owner with a new token, which
	// fences the old holder. Policy decides who may.
	Force bool
	// At is the leader's time for the command.
	At time.Time
}

// RenewRequest extends the lease the caller holds.
type RenewRequest struct {
	JobID string
	Owner string
	Token uint64
	// TTL is the new TTL; 0 keeps the lease's.
	TTL time.Duration
	At  time.Time
}

// ReleaseRequest gives a held lease up.
type ReleaseRequest struct {
	JobID string
	Owner string
	Token uint64
	At    time.Time
}

// ExpireRequest is the leader's expiry loop ending a lease whose time ran
// out. Token names the lease the loop saw, so that an expiry that raced
// with a renew or a new acquire changes nothing.
type ExpireRequest struct {
	JobID string
	Token uint64
	At    time.Time
}

// LeaseEventType names a change of a lease.
type LeaseEventType string

// The lease event types.
const (
	// LeaseEventAcquired: a new token was granted (first acquire, acquire
	// after release or expiry, or a forced takeover).
	LeaseEventAcquired LeaseEventType = "acquired"
	// LeaseEventRenewed: the holder extended its lease (renew, or acquire of
	// its own active lease); the token is unchanged.
	LeaseEventRenewed LeaseEventType = "renewed"
	// LeaseEventReleased: the holder gave the lease up.
	LeaseEventReleased LeaseEventType = "released"
	// LeaseEventExpired: the lease ran out. It fires exactly once per token.
	LeaseEventExpired LeaseEventType = "expired"
)

// LeaseEvent is one change of a lease: the lease as it is after the change,
// and the Raft index of the entry that made it (set by the store, like
// Lease.Index). One entry can produce several events, for example the
// expiry of an out-of-time lease followed by its acquisition by another
// owner; they share the index and keep their order.
type LeaseEvent struct {
	Type  LeaseEventType `json:"type"`
	Lease Lease          `json:"lease"`
	Index uint64         `json:"index"`
}

// maxJobIDLen keeps job ids usable as URL path segments and log fields.
const maxJobIDLen = 128

// reservedJobID is the API path segment /v1/leases/watch.
const reservedJobID = "watch"

// ValidateJobID checks that id is 1 to 128 bytes of [A-Za-z0-9._:-], is
// not "." or ".." (path segments a URL cleaner removes) and is not "watch"
// (the API's /v1/leases/watch). The error wraps ErrInvalidJobID and names
// the field job_id.
func ValidateJobID(id string) error {
	bad := func(why string) error {
		return fmt.Errorf("%w: job_id %q %s", ErrInvalidJobID, id, why)
	}
	switch {
	case id == "":
		return fmt.Errorf("%w: job_id is empty", ErrInvalidJobID)
	case len(id) > maxJobIDLen:
		return fmt.Errorf("%w: job_id is longer than %d bytes", ErrInvalidJobID, maxJobIDLen)
	case id == "." || id == "..":
		return bad("is a relative path segment")
	case id == reservedJobID:
		return bad("is reserved by the API")
	}
	for i := 0; i < len(id); i++ {
		if !jobIDByte(id[i]) {
			return bad(fmt.Sprintf("has %q at byte %d; allowed are A-Z a-z 0-9 . _ : -", id[i], i))
		}
	}
	return nil
}

func jobIDByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '.' || c == '_' || c == ':' || c == '-'
}

// checkRequest validates what every holder's request needs.
func checkRequest(jobID, owner string, at time.Time) error {
	if err := ValidateJobID(jobID); err != nil {
		return err
	}
	if owner == "" {
		return fmt.Errorf("%w: owner is empty", ErrInvalidLeaseRequest)
	}
	if at.IsZero() {
		return fmt.Errorf("%w: time is not stamped", ErrInvalidLeaseRequest)
	}
	return nil
}

// Results of the rules. Every rule returns the lease as it must now be
// stored, the events the change produced, and an error for the caller:
//
//   - no error: store the lease and the events.
//   - an error and no events: nothing changed; the returned lease is zero.
//   - an error and events: the job's lease was active but out of time, so
//     the rule committed its expiry (one "expired" event) before failing the
//     request with ErrLeaseExpired. Store the returned (expired) lease and
//     the event, and return the error to the caller.
//
// cur is the job's stored lease or nil. The rules never modify *cur.

// Acquire grants r.JobID's lease to r.Owner.
//
//   - No lease, or a released or expired one: a new lease with token
//     max(lastToken, cur.Token)+1; event "acquired".
//   - The owner's own active lease: extended to At+TTL with the same token;
//     event "renewed". With Force it is replaced by a new token instead.
//   - Another owner's active lease: a *LeaseHeldError naming the holder and
//     the remaining time, unless Force, which takes it over with a new
//     token (event "acquired"); the old holder's token is then stale.
//
// An active lease whose ExpiresAt ≤ At is expired first (event "expired"),
// so another owner's acquire succeeds. lastToken is the job's last token
// ever granted, which the store keeps after the lease itself is gone. l
// must be valid (see Validate).
func (l LeaseLimits) Acquire(cur *Lease, lastToken uint64, r AcquireRequest) (Lease, []LeaseEvent, error) {
	if err := checkRequest(r.JobID, r.Owner, r.At); err != nil {
		return Lease{}, nil, err
	}
	ttl := r.TTL
	if ttl == 0 {
		ttl = l.DefaultTTL
	}
	if err := l.CheckTTL(ttl); err != nil {
		return Lease{}, nil, err
	}
	events, cur := expireIfOverdue(cur, r.At)
	if cur != nil && cur.State == LeaseActive && !r.Force {
		if cur.Owner != r.Owner {
			return Lease{}, nil, &LeaseHeldError{JobID: r.JobID, Holder: cur.Owner, HolderDC: cur.OwnerDC, Remaining: cur.ExpiresAt.Sub(r.At)}
		}
		n := *cur
		n.OwnerID, n.OwnerDC = r.OwnerID, r.OwnerDC
		n.TTL, n.RenewedAt, n.ExpiresAt = ttl, r.At, r.At.Add(ttl)
		return n, append(events, LeaseEvent{Type: LeaseEventRenewed, Lease: n}), nil
	}
	token := lastToken
	if cur != nil {
		token = max(token, cur.Token)
	}
	n := Lease{
		JobID:      r.JobID,
		Owner:      r.Owner,
		OwnerID:    r.OwnerID,
		OwnerDC:    r.OwnerDC,
		Token:      token + 1,
		TTL:        ttl,
		State:      LeaseActive,
		AcquiredAt: r.At,
		RenewedAt:  r.At,
		ExpiresAt:  r.At.Add(ttl),
	}
	return n, append(events, LeaseEvent{Type: LeaseEventAcquired, Lease: n}), nil
}

// Renew extends the lease r.Owner holds with r.Token to At+TTL (TTL 0
// keeps the lease's TTL), never beyond At+MaxTTL; event "renewed". It fails
// with ErrNoLease for an unknown job, a *StaleTokenError for any token but
// the job's current one, ErrNotOwner (naming the holder) when the token is
// right but the owner is not, ErrLeaseNotActive for a released lease, and
// ErrLeaseExpired for an expired one, including an active one whose time
// has run out (which it expires first; see the results above).
func (l LeaseLimits) Renew(cur *Lease, r RenewRequest) (Lease, []LeaseEvent, error) {
	if err := checkRequest(r.JobID, r.Owner, r.At); err != nil {
		return Lease{}, nil, err
	}
	if r.TTL != 0 {
		if err := l.CheckTTL(r.TTL); err != nil {
			return Lease{}, nil, err
		}
	}
	events, cur, err := checkHolder(cur, r.JobID, r.Owner, r.Token, r.At)
	if err != nil {
		return failed(cur, events, err)
	}
	ttl := r.TTL
	if ttl == 0 {
		// The limits may have changed since the lease was granted.
		ttl = min(max(cur.TTL, l.MinTTL), l.MaxTTL)
	}
	n := *cur
	n.TTL, n.RenewedAt, n.ExpiresAt = ttl, r.At, r.At.Add(min(ttl, l.MaxTTL))
	return n, []LeaseEvent{{Type: LeaseEventRenewed, Lease: n}}, nil
}

// Release ends the lease r.Owner holds with r.Token; event "released". Its
// errors are Renew's.
func Release(cur *Lease, r ReleaseRequest) (Lease, []LeaseEvent, error) {
	if err := checkRequest(r.JobID, r.Owner, r.At); err != nil {
		return Lease{}, nil, err
	}
	events, cur, err := checkHolder(cur, r.JobID, r.Owner, r.Token, r.At)
	if err != nil {
		return failed(cur, events, err)
	}
	n := *cur
	n.State, n.EndedAt = LeaseReleased, r.At
	return n, []LeaseEvent{{Type: LeaseEventReleased, Lease: n}}, nil
}

// Expire ends an active lease whose time has run out: it must be active,
// hold r.Token, and have ExpiresAt ≤ At. Anything else is an error wrapping
// ErrNotExpirable and changes nothing: the lease was renewed, released,
// re-acquired or already expired since the expiry loop looked, and the loop
// skips it. Event "expired".
func Expire(cur *Lease, r ExpireRequest) (Lease, []LeaseEvent, error) {
	switch {
	case cur == nil:
		return Lease{}, nil, fmt.Errorf("%w: job %q has no lease", ErrNotExpirable, r.JobID)
	case cur.State != LeaseActive:
		return Lease{}, nil, fmt.Errorf("%w: job %q lease token %d is already %s", ErrNotExpirable, r.JobID, cur.Token, cur.State)
	case cur.Token != r.Token:
		return Lease{}, nil, fmt.Errorf("%w: job %q has token %d, not %d", ErrNotExpirable, r.JobID, cur.Token, r.Token)
	case r.At.Before(cur.ExpiresAt):
		return Lease{}, nil, fmt.Errorf("%w: job %q expires at %s, after %s", ErrNotExpirable, r.JobID, stamp(cur.ExpiresAt), stamp(r.At))
	}
	n := expired(*cur, r.At)
	return n, []LeaseEvent{{Type: LeaseEventExpired, Lease: n}}, nil
}

// CheckResult answers whether a token is a job's current one, for storage
// that enforces fencing.
type CheckResult struct {
	// Current is true when the job has an active, unexpired lease with the
	// given token.
	Current bool `json:"current"`
	// Token is the job's current token, or 0 when no lease is active.
	Token uint64 `json:"token"`
	// State is the lease's state as of the check's time: an active lease
	// whose time has run out reads as expired. Empty when there is no lease.
	State LeaseState `json:"state,omitempty"`
	// Owner, OwnerDC and ExpiresAt describe the job's last lease, active or
	// not.
	Owner     string    `json:"owner,omitempty"`
	OwnerDC   string    `json:"owner_dc,omitempty"`
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	// Reason is empty when Current, else the LeaseErrorCode of why not:
	// "no_lease", "lease_expired", "lease_not_active" (released) or
	// "stale_token".
	Reason string `json:"reason,omitempty"`
}

// Check tells whether token is the current token of the job whose stored
// lease is cur (nil: none), as of now. It changes nothing, so it can run on
// any node's local state with that node's clock.
func Check(cur *Lease, token uint64, now time.Time) CheckResult {
	if cur == nil {
		return CheckResult{Reason: codeNoLease}
	}
	res := CheckResult{State: cur.State, Owner: cur.Owner, OwnerDC: cur.OwnerDC, ExpiresAt: cur.ExpiresAt}
	switch {
	case cur.State == LeaseReleased:
		res.Reason = codeLeaseNotActive
	case cur.State != LeaseActive || !now.Before(cur.ExpiresAt):
		res.State, res.Reason = LeaseExpired, codeLeaseExpired
	case token != cur.Token:
		res.Token, res.Reason = cur.Token, codeStaleToken
	default:
		res.Token, res.Current = cur.Token, true
	}
	return res
}

// ExtendForLeaderChange gives an active lease the time a leader change may
// have cost its holder: while no leader was there, renewals could not
// commit. A new leader applies it to every active lease with at its own
// time and grace its election timeout. If ExpiresAt < at+grace, ExpiresAt
// becomes min(at+grace, ExpiresAt+grace), so the lease is never shortened
// and lengthened by at most grace. It reports whether l changed.
func ExtendForLeaderChange(l Lease, at time.Time, grace time.Duration) (Lease, bool) {
	target := at.Add(grace)
	if l.State != LeaseActive || grace <= 0 || !l.ExpiresAt.Before(target) {
		return l, false
	}
	l.ExpiresAt = minTime(target, l.ExpiresAt.Add(grace))
	return l, true
}

// checkHolder expires cur if it is out of time at at, then checks that
// owner holds it with token and that it is active. On error the returned
// events are the expiry, if any, and cur is the lease to store.
func checkHolder(cur *Lease, jobID, owner string, token uint64, at time.Time) ([]LeaseEvent, *Lease, error) {
	if cur == nil {
		return nil, nil, fmt.Errorf("%w: job %q", ErrNoLease, jobID)
	}
	events, cur := expireIfOverdue(cur, at)
	switch {
	case token != cur.Token:
		return events, cur, &StaleTokenError{JobID: jobID, Given: token, Current: cur.Token}
	case owner != cur.Owner:
		return events, cur, fmt.Errorf("%w: job %q is held by %q, not %q", ErrNotOwner, jobID, cur.Owner, owner)
	case cur.State == LeaseReleased:
		return events, cur, fmt.Errorf("%w: job %q was released at %s", ErrLeaseNotActive, jobID, stamp(cur.EndedAt))
	case cur.State == LeaseExpired:
		return events, cur, fmt.Errorf("%w: job %q expired at %s", ErrLeaseExpired, jobID, stamp(cur.ExpiresAt))
	}
	return events, cur, nil
}

// failed shapes a rule's failure: the lease to store only when the rule
// expired it on the way.
func failed(cur *Lease, events []LeaseEvent, err error) (Lease, []LeaseEvent, error) {
	if len(events) == 0 {
		return Lease{}, nil, err
	}
	return *cur, events, err
}

// expireIfOverdue returns cur expired, with its event, if it is active but
// out of time at at; otherwise cur unchanged and no event.
func expireIfOverdue(cur *Lease, at time.Time) ([]LeaseEvent, *Lease) {
	if cur == nil || cur.State != LeaseActive || at.Before(cur.ExpiresAt) {
		return nil, cur
	}
	n := expired(*cur, at)
	return []LeaseEvent{{Type: LeaseEventExpired, Lease: n}}, &n
}

func expired(l Lease, at time.Time) Lease {
	l.State, l.EndedAt = LeaseExpired, at
	return l
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// stamp formats a time for error messages.
func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }
