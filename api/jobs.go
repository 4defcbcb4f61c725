package api

import (
	"encoding/json"
	"time"
)

// JobResultRequest is the body of POST /v1/jobs/{job_id}/results: a job's
// result as a gate or manager reports it. Datacenter is where the job ran;
// results of one job from several datacenters are kept apart. Stats is any
// JSON object; reporter modules receive it as is.
type JobResultRequest struct {
	Workflow   string          `json:"workflow"`
	Datacenter string          `json:"datacenter"`
	Source     string          `json:"source"`
	Stats      json.RawMessage `json:"stats"`
}

// JobResultAccepted answers POST /v1/jobs/{job_id}/results with 202: the
// result is queued for the named reporter modules (empty when no installed
// reporter handles job results). A full queue is a 429 with Retry-After
// instead: report again later.
type JobResultAccepted struct {
	JobID     string   `json:"job_id"`
	Accepted  bool     `json:"accepted"`
	Reporters []string `json:"reporters"`
}

// ReporterResult is the outcome of one reporter module for one job, one
// datacenter and one kind of event (the last such call, with counts of
// all of them).
type ReporterResult struct {
	Reporter string `json:"reporter"`
	Digest   string `json:"digest,omitempty"`
	// Datacenter is the job result's datacenter, or for a lease event the
	// lease owner's.
	Datacenter string `json:"datacenter"`
	// Event is "job_result" or "lease_event"; EventType is a lease event's
	// type (acquired, renewed, released, expired).
	Event     string `json:"event"`
	EventType string `json:"event_type,omitempty"`
	// Status is "pending" (queued), "ok" or "error".
	Status string `json:"status"`
	// ErrorKind is the failure's class: trap, timeout, guest_error,
	// bad_output, invalid_output, sink, not_installed, shutdown, ...
	ErrorKind string `json:"error_kind,omitempty"`
	Error     string `json:"error,omitempty"`
	// Elapsed is the module call's duration (a Go duration string), and
	// SinkElapsed the time its records took to write.
	Elapsed     string    `json:"elapsed,omitempty"`
	SinkElapsed string    `json:"sink_elapsed,omitempty"`
	At          time.Time `json:"at"`
	// Records is how many records the last call wrote to sinks.
	Records  int    `json:"records"`
	Calls    uint64 `json:"calls"`
	Failures uint64 `json:"failures"`
}

// JobReporters answers GET /v1/jobs/{job_id}/reporters. Results live in
// memory on the node that dispatches (the Raft leader), bounded by job
// count, and are not replicated: after a leader change they start empty.
// Node and Since say whose results these are and from when.
type JobReporters struct {
	JobID string `json:"job_id"`
	// Node is the node that answered; Since is when it became the leader,
	// since when its results are complete (absent when it does not lead).
	Node    string           `json:"node"`
	Since   time.Time        `json:"since,omitzero"`
	Results []ReporterResult `json:"results"`
}
