package wasm

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"time"
)

// Kind is what a module is for, chosen at upload: it decides the handlers
// the module must export and the events it receives (ABI.md, "Kinds and
// handlers").
type Kind string

// The module kinds.
const (
	// KindCorrelation modules receive correlation events and may change the
	// lease-hold decision.
	KindCorrelation Kind = "correlation"
	// KindReporter modules receive job results and lease events and emit
	// records to operator-configured sinks.
	KindReporter Kind = "reporter"
)

// Valid reports whether k is a known kind.
func (k Kind) Valid() bool { return k == KindCorrelation || k == KindReporter }

// Handler exports (ABI.md, "Exports").
const (
	HandlerCorrelation = "coordinatord_on_correlation"
	HandlerJobResult   = "coordinatord_on_job_result"
	HandlerLeaseEvent  = "coordinatord_on_lease_event"
)

// Other names of the ABI.
const (
	// ABIMarker is the export that says "this module speaks ABI v1".
	ABIMarker = "coordinatord_abi_v1"
	// ExportAlloc is the guest's allocator.
	ExportAlloc = "coordinatord_alloc"
	// ExportMemory is the guest's linear memory.
	ExportMemory = "memory"
	// ExportInitialize is the optional WASI reactor initialiser.
	ExportInitialize = "_initialize"
	// HostModule is the import module of the host functions.
	HostModule = "coordinatord"
)

// Event kinds: the "kind" field of every event, and Call.EventKind.
const (
	EventCorrelation = "correlation"
	EventJobResult   = "job_result"
	EventLeaseEvent  = "lease_event"
)

// HandlersOf returns the handlers a module of kind k may export, in ABI
// order; nil for an unknown kind. A reporter may also export
// coordinatord_on_correlation, to receive the correlation events that
// correlation modules receive (its output is a reporter's: records).
func HandlersOf(k Kind) []string {
	switch k {
	case KindCorrelation:
		return []string{HandlerCorrelation}
	case KindReporter:
		return []string{HandlerJobResult, HandlerLeaseEvent, HandlerCorrelation}
	}
	return nil
}

// MainHandlersOf returns the handlers of which a module of kind k must
// export at least one: HandlersOf without a reporter's optional
// coordinatord_on_correlation, so that a correlation module uploaded as a
// reporter by mistake is refused rather than run as a reporter.
func MainHandlersOf(k Kind) []string {
	if k == KindReporter {
		return []string{HandlerJobResult, HandlerLeaseEvent}
	}
	return HandlersOf(k)
}

// HandlerFor returns the handler that receives events of eventKind, or "".
func HandlerFor(eventKind string) string {
	switch eventKind {
	case EventCorrelation:
		return HandlerCorrelation
	case EventJobResult:
		return HandlerJobResult
	case EventLeaseEvent:
		return HandlerLeaseEvent
	}
	return ""
}

// Correlation event types (CorrelationEvent.Type).
const (
	PartitionDetected = "partition_detected"
	PartitionHealed   = "partition_healed"
	SeverityChanged   = "severity_changed"
)

// CorrelationEvent is the input of coordinatord_on_correlation.
type CorrelationEvent struct {
	// Kind is always "correlation" (set by MarshalJSON).
	Kind string `json:"kind"`
	// Type is partition_detected, partition_healed or severity_changed.
	Type    string `json:"type"`
	Episode string `json:"episode"`
	// Severity and PreviousSeverity are none, low, medium or high.
	Severity            string      `json:"severity"`
	PreviousSeverity    string      `json:"previous_severity"`
	AffectedDatacenters []string    `json:"affected_datacenters"`
	HealthyDatacenters  []string    `json:"healthy_datacenters"`
	HeldLeases          []HeldLease `json:"held_leases"`
	Time                time.Time   `json:"time"`
}

// HeldLease is a lease held because of a correlation episode.
type HeldLease struct {
	JobID   string `json:"job_id"`
	Owner   string `json:"owner"`
	OwnerDC string `json:"owner_dc"`
	Token   uint64 `json:"token"`
}

// MarshalJSON writes the event as ABI.md shows it: kind set, arrays never
// null, time in UTC.
func (e CorrelationEvent) MarshalJSON() ([]byte, error) {
	type plain CorrelationEvent
	e.Kind = EventCorrelation
	e.AffectedDatacenters = nonNil(e.AffectedDatacenters)
	e.HealthyDatacenters = nonNil(e.HealthyDatacenters)
	e.HeldLeases = nonNil(e.HeldLeases)
	e.Time = e.Time.UTC()
	return json.Marshal(plain(e))
}

// JobResultEvent is the input of coordinatord_on_job_result.
type JobResultEvent struct {
	// Kind is always "job_result" (set by MarshalJSON).
	Kind       string `json:"kind"`
	JobID      string `json:"job_id"`
	Workflow   string `json:"workflow"`
	Datacenter string `json:"datacenter"`
	Source     string `json:"source"`
	// Stats is the JSON object the reporting peer sent ({} when empty).
	Stats json.RawMessage `json:"stats"`
	Time  time.Time       `json:"time"`
}

// MarshalJSON writes the event as ABI.md shows it.
func (e JobResultEvent) MarshalJSON() ([]byte, error) {
	type plain JobResultEvent
	e.Kind = EventJobResult
	if len(e.Stats) == 0 {
		e.Stats = json.RawMessage("{}")
	}
	e.Time = e.Time.UTC()
	return json.Marshal(plain(e))
}

// Lease event types (LeaseEventPayload.Type).
const (
	LeaseAcquired = "acquired"
	LeaseRenewed  = "renewed"
	LeaseReleased = "released"
	LeaseExpired  = "expired"
)

// LeaseEventPayload is the input of coordinatord_on_lease_event.
type LeaseEventPayload struct {
	// Kind is always "lease_event" (set by MarshalJSON).
	Kind    string    `json:"kind"`
	Type    string    `json:"type"`
	JobID   string    `json:"job_id"`
	Owner   string    `json:"owner"`
	OwnerDC string    `json:"owner_dc"`
	Token   uint64    `json:"token"`
	At      time.Time `json:"at"`
	// Index is the Raft index of the entry that caused the event.
	Index uint64 `json:"index"`
}

// MarshalJSON writes the event as ABI.md shows it.
func (e LeaseEventPayload) MarshalJSON() ([]byte, error) {
	type plain LeaseEventPayload
	e.Kind = EventLeaseEvent
	e.At = e.At.UTC()
	return json.Marshal(plain(e))
}

// NewCorrelationCall encodes ev into a Call of coordinatord_on_correlation
// whose Datacenters are the affected ones and JobIDs those of the held
// leases (what a failure report names).
func NewCorrelationCall(ev CorrelationEvent) (Call, error) {
	b, err := json.Marshal(ev)
	if err != nil {
		return Call{}, fmt.Errorf("encode correlation event: %w", err)
	}
	dcs := slices.Clone(ev.AffectedDatacenters)
	jobs := make([]string, 0, len(ev.HeldLeases))
	for _, l := range ev.HeldLeases {
		if l.OwnerDC != "" && !slices.Contains(dcs, l.OwnerDC) {
			dcs = append(dcs, l.OwnerDC)
		}
		jobs = append(jobs, l.JobID)
	}
	return Call{Handler: HandlerCorrelation, EventKind: EventCorrelation, Event: b, Datacenters: dcs, JobIDs: jobs}, nil
}

// NewJobResultCall encodes ev into a Call of coordinatord_on_job_result.
func NewJobResultCall(ev JobResultEvent) (Call, error) {
	b, err := json.Marshal(ev)
	if err != nil {
		return Call{}, fmt.Errorf("encode job result event for job %s: %w", ev.JobID, err)
	}
	return Call{Handler: HandlerJobResult, EventKind: EventJobResult, Event: b,
		Datacenters: []string{ev.Datacenter}, JobIDs: []string{ev.JobID}}, nil
}

// NewLeaseEventCall encodes ev into a Call of coordinatord_on_lease_event.
func NewLeaseEventCall(ev LeaseEventPayload) (Call, error) {
	b, err := json.Marshal(ev)
	if err != nil {
		return Call{}, fmt.Errorf("encode lease event for job %s: %w", ev.JobID, err)
	}
	return Call{Handler: HandlerLeaseEvent, EventKind: EventLeaseEvent, Event: b,
		Datacenters: []string{ev.OwnerDC}, JobIDs: []string{ev.JobID}}, nil
}

// Output limits of a correlation module (ABI.md).
const (
	MaxNotes     = 16
	MaxNoteBytes = 512
)

// CorrelationOutput is a correlation module's answer.
type CorrelationOutput struct {
	// Hold is nil when the module leaves the decision to the built-in one.
	Hold *bool `json:"hold,omitempty"`
	// Datacenters is nil when absent (the event's affected datacenters
	// apply) and non-nil, possibly empty, when the module named them.
	// Names are known datacenters, without duplicates.
	Datacenters []string `json:"datacenters,omitempty"`
	// Notes are logged with the decision.
	Notes []string `json:"notes,omitempty"`
}

// ReporterOutput is a reporter module's answer.
type ReporterOutput struct {
	Records []Record `json:"records"`
}

// Record is one thing a reporter emits.
type Record struct {
	// Sink is the name of one of the sinks the operator gave the module.
	Sink string `json:"sink"`
	// Data is compact JSON (one line), written to the sink as is.
	Data json.RawMessage `json:"data"`
}

// Output defects, inside an *OutputError.
var (
	// ErrInvalidOutput: the output is not valid JSON, has a field of the
	// wrong type, an unknown field, or breaks a bound.
	ErrInvalidOutput = errors.New("invalid output")
	// ErrUnknownDatacenter: a correlation output names a datacenter that is
	// not known.
	ErrUnknownDatacenter = errors.New("unknown datacenter")
	// ErrUnknownSink: a reporter record names a sink the module was not
	// given.
	ErrUnknownSink = errors.New("unknown sink")
)

// OutputError is an output that does not fit its kind's schema. Field is
// a JSON path such as "records[2].sink" ("" for the whole document).
type OutputError struct {
	Defect  error
	Field   string
	Message string
}

// Error names the field and the defect.
func (e *OutputError) Error() string {
	if e.Field == "" {
		return e.Defect.Error() + ": " + e.Message
	}
	return e.Defect.Error() + ": " + e.Field + ": " + e.Message
}

// Unwrap returns the defect.
func (e *OutputError) Unwrap() error { return e.Defect }

// Code returns "invalid_output", "unknown_datacenter" or "unknown_sink".
func (e *OutputError) Code() string {
	switch e.Defect {
	case ErrUnknownDatacenter:
		return "unknown_datacenter"
	case ErrUnknownSink:
		return "unknown_sink"
	}
	return "invalid_output"
}

func outErr(field, format string, args ...any) *OutputError {
	return &OutputError{Defect: ErrInvalidOutput, Field: field, Message: fmt.Sprintf(format, args...)}
}

// ParseCorrelationOutput checks out against the correlation output schema
// strictly: an object with only hold (boolean), datacenters (strings, each
// one of knownDCs) and notes (at most MaxNotes strings of at most
// MaxNoteBytes); null is the wrong type. It returns an *OutputError naming
// the first defect. A nil out (the handler did not call output) is the zero
// CorrelationOutput: the built-in decision.
func ParseCorrelationOutput(out []byte, knownDCs []string) (CorrelationOutput, error) {
	var o CorrelationOutput
	if out == nil {
		return o, nil // no output: the built-in decision
	}
	fields, err := object(out, "")
	if err != nil {
		return o, err
	}
	for _, name := range slices.Sorted(maps.Keys(fields)) {
		raw := fields[name]
		switch name {
		case "hold":
			var b bool
			if t := jsonType(raw); t != "boolean" {
				return o, outErr("hold", "want a boolean, got %s", t)
			}
			_ = json.Unmarshal(raw, &b)
			o.Hold = &b
		case "datacenters":
			dcs, err := stringArray(raw, "datacenters")
			if err != nil {
				return o, err
			}
			o.Datacenters = make([]string, 0, len(dcs))
			for i, dc := range dcs {
				if !slices.Contains(knownDCs, dc) {
					return o, &OutputError{Defect: ErrUnknownDatacenter, Field: fmt.Sprintf("datacenters[%d]", i),
						Message: fmt.Sprintf("%q is not a known datacenter (known: %v)", dc, knownDCs)}
				}
				if !slices.Contains(o.Datacenters, dc) {
					o.Datacenters = append(o.Datacenters, dc)
				}
			}
		case "notes":
			notes, err := stringArray(raw, "notes")
			if err != nil {
				return o, err
			}
			if len(notes) > MaxNotes {
				return o, outErr("notes", "%d notes, at most %d allowed", len(notes), MaxNotes)
			}
			for i, n := range notes {
				if len(n) > MaxNoteBytes {
					return o, outErr(fmt.Sprintf("notes[%d]", i), "%d bytes, at most %d allowed", len(n), MaxNoteBytes)
				}
			}
			o.Notes = notes
		default:
			return o, outErr(name, "unknown field (want hold, datacenters, notes)")
		}
	}
	return o, nil
}

// ParseReporterOutput checks out against the reporter output schema
// strictly: an object with only records, an array (possibly empty) of
// objects with only sink (a string, one of sinks) and data (any JSON
// value). Any defect refuses the whole output: it returns nil and an
// *OutputError naming the first defect. Data comes back compacted to one
// line. A nil out (the handler did not call output) is no records.
func ParseReporterOutput(out []byte, sinks []string) ([]Record, error) {
	if out == nil {
		return nil, nil // no output: nothing to emit
	}
	fields, err := object(out, "")
	if err != nil {
		return nil, err
	}
	var rawRecords json.RawMessage
	for _, name := range slices.Sorted(maps.Keys(fields)) {
		raw := fields[name]
		if name != "records" {
			return nil, outErr(name, "unknown field (want records)")
		}
		rawRecords = raw
	}
	if rawRecords == nil {
		return nil, outErr("records", "required field missing")
	}
	if t := jsonType(rawRecords); t != "array" {
		return nil, outErr("records", "want an array, got %s", t)
	}
	var items []json.RawMessage
	_ = json.Unmarshal(rawRecords, &items)
	records := make([]Record, 0, len(items))
	for i, item := range items {
		path := fmt.Sprintf("records[%d]", i)
		f, err := object(item, path)
		if err != nil {
			return nil, err
		}
		var r Record
		var hasSink, hasData bool
		for _, name := range slices.Sorted(maps.Keys(f)) {
			raw := f[name]
			switch name {
			case "sink":
				if t := jsonType(raw); t != "string" {
					return nil, outErr(path+".sink", "want a string, got %s", t)
				}
				_ = json.Unmarshal(raw, &r.Sink)
				hasSink = true
			case "data":
				var buf bytes.Buffer
				_ = json.Compact(&buf, raw)
				r.Data = buf.Bytes()
				hasData = true
			default:
				return nil, outErr(path+"."+name, "unknown field (want sink, data)")
			}
		}
		if !hasSink {
			return nil, outErr(path+".sink", "required field missing")
		}
		if !hasData {
			return nil, outErr(path+".data", "required field missing")
		}
		if !slices.Contains(sinks, r.Sink) {
			return nil, &OutputError{Defect: ErrUnknownSink, Field: path + ".sink",
				Message: fmt.Sprintf("%q is not one of the module's sinks %v", r.Sink, sinks)}
		}
		records = append(records, r)
	}
	return records, nil
}

// object decodes a JSON object into its fields.
func object(b []byte, path string) (map[string]json.RawMessage, error) {
	if !json.Valid(b) {
		return nil, outErr(path, "not valid JSON")
	}
	if t := jsonType(b); t != "object" {
		return nil, outErr(path, "want an object, got %s", t)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, outErr(path, "%v", err)
	}
	return m, nil
}

// stringArray decodes an array whose elements are all strings.
func stringArray(raw json.RawMessage, path string) ([]string, error) {
	if t := jsonType(raw); t != "array" {
		return nil, outErr(path, "want an array of strings, got %s", t)
	}
	var items []json.RawMessage
	_ = json.Unmarshal(raw, &items)
	out := make([]string, len(items))
	for i, item := range items {
		if t := jsonType(item); t != "string" {
			return nil, outErr(fmt.Sprintf("%s[%d]", path, i), "want a string, got %s", t)
		}
		_ = json.Unmarshal(item, &out[i])
	}
	return out, nil
}

// jsonType names the type of a valid JSON value by its first byte.
func jsonType(raw []byte) string {
	raw = bytes.TrimLeft(raw, " \t\r\n")
	if len(raw) == 0 {
		return "nothing"
	}
	switch raw[0] {
	case '{':
		return "object"
	case '[':
		return "array"
	case '"':
		return "string"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	}
	return "number"
}

// strictUnmarshal decodes one JSON value into v, refusing unknown fields
// and trailing data.
func strictUnmarshal(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("trailing data after the JSON value")
	}
	return nil
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
