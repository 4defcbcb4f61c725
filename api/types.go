// Package api holds the JSON types of coordinatord's HTTP API, shared by the
// server and the Go client. It imports nothing heavier than the standard
// library, so that a client does not pull in the policy engine or Raft.
package api

import (
	"fmt"
	"time"
)

// Claims is a peer's identity as the API shows it.
type Claims struct {
	Cluster    string    `json:"cluster"`
	Env        string    `json:"env"`
	Role       string    `json:"role"`
	Datacenter string    `json:"datacenter"`
	Node       string    `json:"node"`
	Region     string    `json:"region,omitempty"`
	SPIFFEID   string    `json:"spiffe_id"`
	Serial     string    `json:"serial,omitempty"`
	NotAfter   time.Time `json:"not_after,omitzero"`
}

// Peer names one side of an admission question by its claims, or by its
// SPIFFE ID alone (the server reads the claims from it).
type Peer struct {
	Cluster    string `json:"cluster,omitempty"`
	Env        string `json:"env,omitempty"`
	Role       string `json:"role,omitempty"`
	Datacenter string `json:"datacenter,omitempty"`
	Node       string `json:"node,omitempty"`
	Region     string `json:"region,omitempty"`
	SPIFFEID   string `json:"spiffe_id,omitempty"`
}

// AdmissionRequest is the body of POST /v1/admission: may Source do Action
// on Target? Each side is given either as a Peer or as a PEM certificate
// (verified against the cluster's CA, as a connecting peer's would be).
type AdmissionRequest struct {
	Source            *Peer          `json:"source,omitempty"`
	Target            *Peer          `json:"target,omitempty"`
	SourceCertificate string         `json:"source_certificate,omitempty"`
	TargetCertificate string         `json:"target_certificate,omitempty"`
	Action            string         `json:"action"`
	Resource          map[string]any `json:"resource,omitempty"`
}

// PolicyResult is one policy's answer within a decision.
type PolicyResult struct {
	Policy     string   `json:"policy"`
	Mode       string   `json:"mode"`
	Allowed    bool     `json:"allowed"`
	ReasonCode string   `json:"reason_code"`
	Reasons    []string `json:"reasons,omitempty"`
}

// AdmissionResponse answers POST /v1/admission.
type AdmissionResponse struct {
	Allowed bool `json:"allowed"`
	// Result is allow, deny, or audit_deny (allowed, but an audit-mode
	// policy would have denied).
	Result         string         `json:"result"`
	Reasons        []string       `json:"reasons,omitempty"`
	DecisionID     string         `json:"decision_id"`
	PolicyRevision uint64         `json:"policy_revision"`
	Source         Claims         `json:"source"`
	Target         Claims         `json:"target"`
	Policies       []PolicyResult `json:"policies,omitempty"`
}

// Decision is one record of the decision log.
type Decision struct {
	ID             string         `json:"decision_id"`
	Seq            uint64         `json:"seq"`
	Time           time.Time      `json:"time"`
	Source         Claims         `json:"source"`
	Target         Claims         `json:"target"`
	Action         string         `json:"action"`
	Resource       map[string]any `json:"resource,omitempty"`
	Allowed        bool           `json:"allowed"`
	Result         string         `json:"result"`
	ReasonCode     string         `json:"reason_code"`
	Reasons        []string       `json:"reasons,omitempty"`
	PolicyRevision uint64         `json:"policy_revision"`
	Policies       []PolicyResult `json:"policies,omitempty"`
	LatencyNanos   int64          `json:"latency_ns"`
	Cached         bool           `json:"cached"`
}

// DecisionList answers GET /v1/decisions.
type DecisionList struct {
	Decisions []Decision `json:"decisions"`
	// Dropped counts decisions this node could not write to its log;
	// Evicted counts those pushed out of its buffer by newer ones.
	Dropped uint64 `json:"dropped"`
	Evicted uint64 `json:"evicted"`
}

// Policy is a stored admission policy.
type Policy struct {
	ID        string    `json:"id"`
	Rego      string    `json:"rego,omitempty"`
	Mode      string    `json:"mode"`
	Revision  uint64    `json:"revision"`
	Version   uint64    `json:"version"`
	UpdatedAt time.Time `json:"updated_at"`
	UpdatedBy string    `json:"updated_by"`
}

// PolicyList answers GET /v1/policies; its policies carry no Rego source.
type PolicyList struct {
	Revision uint64   `json:"revision"`
	Policies []Policy `json:"policies"`
}

// PutPolicyRequest is the JSON form of PUT /v1/policies/{id}. The body may
// instead be the Rego text itself (Content-Type text/plain, ?mode=).
type PutPolicyRequest struct {
	Rego string `json:"rego"`
	Mode string `json:"mode,omitempty"`
}

// DeletePolicyResponse answers DELETE /v1/policies/{id}.
type DeletePolicyResponse struct {
	ID       string `json:"id"`
	Deleted  bool   `json:"deleted"`
	Revision uint64 `json:"revision"`
}

// Health answers GET /v1/health.
type Health struct {
	Status string `json:"status"`
	Node   string `json:"node"`
	Time   string `json:"time"`
}

// Ready answers GET /v1/ready.
type Ready struct {
	Ready          bool     `json:"ready"`
	Node           string   `json:"node"`
	RaftState      string   `json:"raft_state"`
	Leader         string   `json:"leader,omitempty"`
	PolicyRevision uint64   `json:"policy_revision"`
	Problems       []string `json:"problems,omitempty"`
}

// Error is the body of every error answer: {"error": {...}}.
type Error struct {
	// Status is the HTTP status; it is not part of the JSON body.
	Status int `json:"-"`
	// Code is a stable snake_case name of the error.
	Code    string `json:"code"`
	Message string `json:"message"`
	// Field names the bad field, header, query parameter or claim.
	Field      string   `json:"field,omitempty"`
	Reasons    []string `json:"reasons,omitempty"`
	DecisionID string   `json:"decision_id,omitempty"`
	Details    any      `json:"details,omitempty"`
}

func (e *Error) Error() string {
	s := fmt.Sprintf("%d %s: %s", e.Status, e.Code, e.Message)
	if e.Field != "" {
		s += " (field " + e.Field + ")"
	}
	return s
}

// ErrorBody wraps Error as it is sent.
type ErrorBody struct {
	Error *Error `json:"error"`
}
