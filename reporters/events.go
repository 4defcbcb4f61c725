package reporters

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// JobResult is a job's result as a reporting peer sends it.
type JobResult struct {
	JobID      string
	Workflow   string
	Datacenter string
	Source     string
	// Stats is a JSON object (checked by Submit).
	Stats json.RawMessage
	// Time is when the node accepted the result; zero means the
	// pipeline's clock.
	Time time.Time
}

// LeaseEvent is one committed lease change.
type LeaseEvent struct {
	// Type is acquired, renewed, released or expired.
	Type    string
	JobID   string
	Owner   string
	OwnerDC string
	Token   uint64
	At      time.Time
	// Index is the Raft index of the entry that caused it.
	Index uint64
}

// CorrelationEvent is one correlation event the Raft leader decided
// (partition_detected, partition_healed, severity_changed), already encoded:
// reporters receive the same bytes the correlation modules received.
type CorrelationEvent struct {
	// Type is the event's type and Episode its episode id; results of
	// correlation events are kept by episode.
	Type    string
	Episode string
	// Datacenters (the affected ones) and JobIDs (of the held leases) are
	// what a failure report names.
	Datacenters []string
	JobIDs      []string
	// Event is the ABI JSON (wasm.NewCorrelationCall's Event).
	Event []byte
}

// The ABI JSON of the two events; field order follows wasm/ABI.md.
type jobResultJSON struct {
	Kind       string          `json:"kind"`
	JobID      string          `json:"job_id"`
	Workflow   string          `json:"workflow"`
	Datacenter string          `json:"datacenter"`
	Source     string          `json:"source"`
	Stats      json.RawMessage `json:"stats"`
	Time       time.Time       `json:"time"`
}

type leaseEventJSON struct {
	Kind    string    `json:"kind"`
	Type    string    `json:"type"`
	JobID   string    `json:"job_id"`
	Owner   string    `json:"owner"`
	OwnerDC string    `json:"owner_dc"`
	Token   uint64    `json:"token"`
	At      time.Time `json:"at"`
	Index   uint64    `json:"index"`
}

// ErrInvalidEvent is wrapped by Submit's errors for an event that cannot
// be handed to a module.
var ErrInvalidEvent = errors.New("invalid event")

func encodeJobResult(jr JobResult) ([]byte, error) {
	if jr.JobID == "" || jr.Datacenter == "" {
		return nil, fmt.Errorf("%w: a job result needs a job id and a datacenter", ErrInvalidEvent)
	}
	stats := bytes.TrimSpace(jr.Stats)
	if len(stats) == 0 || stats[0] != '{' || !json.Valid(stats) {
		return nil, fmt.Errorf("%w: stats must be a JSON object", ErrInvalidEvent)
	}
	b, err := json.Marshal(jobResultJSON{
		Kind: KindJobResult, JobID: jr.JobID, Workflow: jr.Workflow, Datacenter: jr.Datacenter,
		Source: jr.Source, Stats: stats, Time: jr.Time.UTC(),
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidEvent, err)
	}
	if len(b) > MaxEventBytes {
		return nil, fmt.Errorf("%w: the event is %d bytes, more than %d", ErrInvalidEvent, len(b), MaxEventBytes)
	}
	return b, nil
}

func encodeLeaseEvent(ev LeaseEvent) ([]byte, error) {
	return json.Marshal(leaseEventJSON{
		Kind: KindLeaseEvent, Type: ev.Type, JobID: ev.JobID, Owner: ev.Owner, OwnerDC: ev.OwnerDC,
		Token: ev.Token, At: ev.At.UTC(), Index: ev.Index,
	})
}

// Record is one thing a reporter asked to emit: Data goes to its sink named
// Sink.
type Record struct {
	Sink string
	Data json.RawMessage
}
