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

// Record is one thing a reporter asked to emit.
type Record struct {
	Sink string
	Data json.RawMessage
}

// reporterOutput is the ABI's reporter output.
type reporterOutput struct {
	Records *[]struct {
		Sink *string         `json:"sink"`
		Data json.RawMessage `json:"data"`
	} `json:"records"`
}

// ErrInvalidOutput is wrapped by ParseOutput's errors.
var ErrInvalidOutput = errors.New("invalid reporter output")

// ParseOutput reads a reporter's output per the ABI: an object whose
// "records" (required, may be empty) each name one of sinks and carry a
// JSON value. Unknown fields are errors. A record naming a sink the module
// was not given fails the whole output: no record of the call is emitted.
func ParseOutput(out []byte, sinks []SinkSpec) ([]Record, error) {
	if len(bytes.TrimSpace(out)) == 0 {
		return nil, fmt.Errorf("%w: no output; a reporter answers {\"records\": [...]}", ErrInvalidOutput)
	}
	dec := json.NewDecoder(bytes.NewReader(out))
	dec.DisallowUnknownFields()
	var o reporterOutput
	if err := dec.Decode(&o); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidOutput, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: data after the JSON object", ErrInvalidOutput)
	}
	if o.Records == nil {
		return nil, fmt.Errorf("%w: \"records\" is required (it may be empty)", ErrInvalidOutput)
	}
	recs := make([]Record, 0, len(*o.Records))
	for i, r := range *o.Records {
		switch {
		case r.Sink == nil:
			return nil, fmt.Errorf("%w: records[%d] has no \"sink\"", ErrInvalidOutput, i)
		case len(r.Data) == 0:
			return nil, fmt.Errorf("%w: records[%d] has no \"data\"", ErrInvalidOutput, i)
		}
		known := false
		for _, s := range sinks {
			if s.Name == *r.Sink {
				known = true
				break
			}
		}
		if !known {
			return nil, fmt.Errorf("%w: records[%d] names sink %q, which the module was not given (it has %s)", ErrInvalidOutput, i, *r.Sink, sinkNames(sinks))
		}
		recs = append(recs, Record{Sink: *r.Sink, Data: r.Data})
	}
	return recs, nil
}

func sinkNames(sinks []SinkSpec) string {
	if len(sinks) == 0 {
		return "none"
	}
	var b bytes.Buffer
	for i, s := range sinks {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%q", s.Name)
	}
	return b.String()
}
