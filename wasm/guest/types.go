package guest

import (
	"encoding/json"
	"time"
)

// Event kinds (the "kind" field of every event).
const (
	KindCorrelation = "correlation"
	KindJobResult   = "job_result"
	KindLeaseEvent  = "lease_event"
)

// Correlation event types (CorrelationEvent.Type).
const (
	PartitionDetected = "partition_detected"
	PartitionHealed   = "partition_healed"
	SeverityChanged   = "severity_changed"
)

// Severities (CorrelationEvent.Severity and PreviousSeverity).
const (
	SeverityNone   = "none"
	SeverityLow    = "low"
	SeverityMedium = "medium"
	SeverityHigh   = "high"
)

// Lease event types (LeaseEvent.Type).
const (
	LeaseAcquired = "acquired"
	LeaseRenewed  = "renewed"
	LeaseReleased = "released"
	LeaseExpired  = "expired"
)

// CorrelationEvent is the input of a correlation handler: datacenters failed
// together (partition_detected), recovered (partition_healed), or the
// episode's severity changed (severity_changed).
type CorrelationEvent struct {
	Kind                string      `json:"kind"` // "correlation"
	Type                string      `json:"type"` // PartitionDetected, PartitionHealed or SeverityChanged
	Episode             string      `json:"episode"`
	Severity            string      `json:"severity"` // SeverityNone … SeverityHigh
	PreviousSeverity    string      `json:"previous_severity"`
	AffectedDatacenters []string    `json:"affected_datacenters"`
	HealthyDatacenters  []string    `json:"healthy_datacenters"`
	HeldLeases          []HeldLease `json:"held_leases"`
	Time                time.Time   `json:"time"`
}

// HeldLease is a job lease held during a correlation episode.
type HeldLease struct {
	JobID   string `json:"job_id"`
	Owner   string `json:"owner"`
	OwnerDC string `json:"owner_dc"`
	Token   uint64 `json:"token"`
}

// JobResult is the input of a job result handler: a job's result, as one
// datacenter's peer reported it.
type JobResult struct {
	Kind       string `json:"kind"` // "job_result"
	JobID      string `json:"job_id"`
	Workflow   string `json:"workflow"`
	Datacenter string `json:"datacenter"`
	Source     string `json:"source"`
	// Stats is the JSON object the reporting peer sent, as is.
	Stats json.RawMessage `json:"stats,omitempty"`
	Time  time.Time       `json:"time"`
}

// LeaseEvent is the input of a lease event handler.
type LeaseEvent struct {
	Kind    string    `json:"kind"` // "lease_event"
	Type    string    `json:"type"` // LeaseAcquired, LeaseRenewed, LeaseReleased or LeaseExpired
	JobID   string    `json:"job_id"`
	Owner   string    `json:"owner"`
	OwnerDC string    `json:"owner_dc"`
	Token   uint64    `json:"token"`
	At      time.Time `json:"at"`
	Index   uint64    `json:"index"` // the Raft index of the entry that caused the event
}

// CorrelationOutput is the answer of a correlation handler. Its zero value
// (encoded as {}) keeps the built-in decision.
type CorrelationOutput struct {
	// Hold says whether to hold (not expire) the leases owned in
	// Datacenters; nil keeps the built-in decision.
	Hold *bool `json:"hold,omitempty"`
	// Datacenters narrows or widens the held set; nil means the event's
	// AffectedDatacenters. A non-nil empty slice is sent as [] (no
	// datacenter).
	Datacenters []string `json:"datacenters,omitzero"`
	// Notes are logged with the decision: at most 16, of at most 512 bytes.
	Notes []string `json:"notes,omitempty"`
}

// Hold returns an output that holds the leases owned in datacenters (nil:
// the event's affected datacenters), with notes.
func Hold(datacenters []string, notes ...string) CorrelationOutput {
	t := true
	return CorrelationOutput{Hold: &t, Datacenters: datacenters, Notes: notes}
}

// DontHold returns an output that lets the leases of the affected
// datacenters expire as usual, with notes.
func DontHold(notes ...string) CorrelationOutput {
	f := false
	return CorrelationOutput{Hold: &f, Notes: notes}
}

// BuiltIn returns an output that keeps the built-in decision, with notes.
func BuiltIn(notes ...string) CorrelationOutput {
	return CorrelationOutput{Notes: notes}
}

// ReporterOutput is the answer of a job result or lease event handler: the
// records to emit. Its zero value emits nothing (encoded as {"records":[]}).
type ReporterOutput struct {
	Records []Record `json:"records"`
}

// Record is one record for one of the sinks the operator configured for the
// module.
type Record struct {
	Sink string `json:"sink"`
	// Data is any value encoding/json can encode (a struct, a map, a
	// json.RawMessage…); the sink writes it as one JSON line or POSTs it.
	Data any `json:"data"`
}

// Emit returns an output with one record.
func Emit(sink string, data any) ReporterOutput {
	return ReporterOutput{Records: []Record{{Sink: sink, Data: data}}}
}

// Add appends a record to o.
func (o *ReporterOutput) Add(sink string, data any) {
	o.Records = append(o.Records, Record{Sink: sink, Data: data})
}
