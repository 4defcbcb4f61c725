package api

import "time"

// Lease is a job's lease as the API shows it. TTL is a Go duration string
// such as "10s".
type Lease struct {
	JobID      string    `json:"job_id"`
	Owner      string    `json:"owner"`
	OwnerID    string    `json:"owner_id"`
	OwnerDC    string    `json:"owner_dc"`
	Token      uint64    `json:"token"`
	TTL        string    `json:"ttl"`
	State      string    `json:"state"`
	AcquiredAt time.Time `json:"acquired_at"`
	RenewedAt  time.Time `json:"renewed_at"`
	ExpiresAt  time.Time `json:"expires_at"`
	EndedAt    time.Time `json:"ended_at,omitzero"`
	// Index is the Raft index of the lease's last change.
	Index uint64 `json:"index"`
}

// AcquireRequest is the body of POST /v1/leases/{job_id}/acquire. An empty
// TTL takes the cluster's default; Force takes the lease over from another
// owner (a policy decision, action lease.force).
type AcquireRequest struct {
	TTL   string `json:"ttl,omitempty"`
	Force bool   `json:"force,omitempty"`
}

// RenewRequest is the body of POST /v1/leases/{job_id}/renew. An empty TTL
// keeps the lease's TTL.
type RenewRequest struct {
	Token *uint64 `json:"token"`
	TTL   string  `json:"ttl,omitempty"`
}

// TokenRequest is the body of .../release and .../check.
type TokenRequest struct {
	Token *uint64 `json:"token"`
}

// CheckResponse answers POST /v1/leases/{job_id}/check: is this token the
// job's current one? Storage systems that enforce fencing ask it.
type CheckResponse struct {
	JobID   string `json:"job_id"`
	Current bool   `json:"current"`
	// Token is the job's current token (0 when no lease is active).
	Token     uint64    `json:"token"`
	State     string    `json:"state,omitempty"`
	Owner     string    `json:"owner,omitempty"`
	OwnerDC   string    `json:"owner_dc,omitempty"`
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	Reason    string    `json:"reason,omitempty"`
}

// LeaseList answers GET /v1/leases.
type LeaseList struct {
	Leases []Lease `json:"leases"`
}

// LeaseEvent is one event of GET /v1/leases/watch: acquired, renewed,
// released or expired, with the Raft index of the entry that caused it.
type LeaseEvent struct {
	Type  string `json:"type"`
	Lease Lease  `json:"lease"`
	Index uint64 `json:"index"`
}
