package engine

import (
	"errors"
	"fmt"
	"time"
)

// Lease errors. The rules return them wrapped with the job and the values
// involved; callers test with errors.Is (or errors.As for the two typed
// ones) and report LeaseErrorCode to clients and metrics.
var (
	// ErrLeaseHeld: another owner holds the job's active lease. The error is
	// a *LeaseHeldError naming the holder and the remaining time.
	ErrLeaseHeld = errors.New("lease is held by another owner")
	// ErrStaleToken: the token is not the job's current one; its holder has
	// been fenced by a newer lease. The error is a *StaleTokenError.
	ErrStaleToken = errors.New("stale fencing token")
	// ErrNotOwner: the token is current but the caller is not the holder.
	ErrNotOwner = errors.New("not the lease owner")
	// ErrNoLease: the job has never been leased.
	ErrNoLease = errors.New("no lease for job")
	// ErrLeaseNotActive: the job's lease was released.
	ErrLeaseNotActive = errors.New("lease is not active")
	// ErrLeaseExpired: the job's lease ran out (its expiry may have been
	// committed by this very request).
	ErrLeaseExpired = errors.New("lease has expired")
	// ErrInvalidTTL: the requested TTL is outside the configured bounds.
	ErrInvalidTTL = errors.New("invalid lease ttl")
	// ErrInvalidJobID: the job id is empty, too long, reserved or has a
	// character outside [A-Za-z0-9._:-].
	ErrInvalidJobID = errors.New("invalid job id")
	// ErrInvalidLeaseRequest: the request lacks its owner or its time. The
	// API fills both from the caller's certificate and the leader's clock,
	// so this is a bug in the caller rather than a client mistake.
	ErrInvalidLeaseRequest = errors.New("invalid lease request")
	// ErrNotExpirable: an expiry found the lease renewed, released,
	// re-acquired or already expired. The expiry loop skips such leases; it
	// never reaches API clients.
	ErrNotExpirable = errors.New("lease is not expirable")
)

// Stable codes, for API responses and metric labels. Never change one once
// released.
const (
	codeLeaseHeld           = "lease_held"
	codeStaleToken          = "stale_token"
	codeNotOwner            = "not_owner"
	codeNoLease             = "no_lease"
	codeLeaseNotActive      = "lease_not_active"
	codeLeaseExpired        = "lease_expired"
	codeInvalidTTL          = "invalid_ttl"
	codeInvalidJobID        = "invalid_job_id"
	codeInvalidLeaseRequest = "invalid_lease_request"
	codeNotExpirable        = "not_expirable"
)

// leaseCodes is in the order LeaseErrorCode tries them.
var leaseCodes = []struct {
	err  error
	code string
}{
	{ErrLeaseHeld, codeLeaseHeld},
	{ErrStaleToken, codeStaleToken},
	{ErrNotOwner, codeNotOwner},
	{ErrNoLease, codeNoLease},
	{ErrLeaseNotActive, codeLeaseNotActive},
	{ErrLeaseExpired, codeLeaseExpired},
	{ErrInvalidTTL, codeInvalidTTL},
	{ErrInvalidJobID, codeInvalidJobID},
	{ErrInvalidLeaseRequest, codeInvalidLeaseRequest},
	{ErrNotExpirable, codeNotExpirable},
}

// LeaseErrorCode returns the stable snake_case code of a lease error
// anywhere in err's chain: "lease_held", "stale_token", "not_owner",
// "no_lease", "lease_not_active", "lease_expired", "invalid_ttl",
// "invalid_job_id", "invalid_lease_request" or "not_expirable". It returns
// "" for nil and for errors that are not about a lease (a storage failure,
// not being the leader, ...).
func LeaseErrorCode(err error) string {
	if err == nil {
		return ""
	}
	for _, c := range leaseCodes {
		if errors.Is(err, c.err) {
			return c.code
		}
	}
	return ""
}

// LeaseHeldError is an acquire's conflict with another owner's active
// lease. It matches ErrLeaseHeld.
type LeaseHeldError struct {
	JobID string
	// Holder and HolderDC are the current owner and its datacenter.
	Holder   string
	HolderDC string
	// Remaining is how long the lease runs unless renewed, as of the
	// acquire's time.
	Remaining time.Duration
}

func (e *LeaseHeldError) Error() string {
	return fmt.Sprintf("lease of job %q is held by %q (dc %q) for another %s", e.JobID, e.Holder, e.HolderDC, e.Remaining)
}

// Unwrap lets errors.Is match ErrLeaseHeld.
func (e *LeaseHeldError) Unwrap() error { return ErrLeaseHeld }

// StaleTokenError is a renew, release or check with a token that is not the
// job's current one: its holder was fenced. It matches ErrStaleToken.
type StaleTokenError struct {
	JobID string
	// Given is the caller's token; Current the job's latest.
	Given   uint64
	Current uint64
}

func (e *StaleTokenError) Error() string {
	return fmt.Sprintf("job %q: token %d is fenced, the current token is %d", e.JobID, e.Given, e.Current)
}

// Unwrap lets errors.Is match ErrStaleToken.
func (e *StaleTokenError) Unwrap() error { return ErrStaleToken }
