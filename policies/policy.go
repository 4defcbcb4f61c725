// Package policies handles coordinatord's Rego admission policies: strict
// compilation and validation, the built-in default policy, and the policy
// unit-test runner. It knows nothing of storage or transport.
package policies

import "time"

// Mode says what a policy's denial does.
type Mode string

const (
	// ModeEnforce denies the request when the policy denies.
	ModeEnforce Mode = "enforce"
	// ModeAudit records and logs the would-be denial but allows.
	ModeAudit Mode = "audit"
)

// Package is the Rego package every admission policy must declare, and Query
// the document it must define (with at least the boolean rule "allow").
const (
	Package = "coordinatord.admission"
	Query   = "data.coordinatord.admission"
)

// DefaultID is the id under which the built-in default policy is installed.
const DefaultID = "default"

// Policy is one stored admission policy: a single Rego module. Policies are
// evaluated independently; a request is denied when any enforce-mode policy
// denies it.
type Policy struct {
	ID   string `json:"id"`
	Rego string `json:"rego"`
	Mode Mode   `json:"mode"`
	// Revision is the policy-set revision at which this policy was last
	// written. The policy-set revision increases by one on every write or
	// delete of any policy.
	Revision uint64 `json:"revision"`
	// Version counts the writes of this id, from 1.
	Version   uint64    `json:"version"`
	UpdatedAt time.Time `json:"updated_at"`
	// UpdatedBy is the SPIFFE ID of the writer.
	UpdatedBy string `json:"updated_by"`
}
