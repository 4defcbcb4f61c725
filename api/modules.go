package api

import (
	"encoding/json"
	"time"
)

// Wasm callback modules (wasm/ABI.md): PUT /v1/modules/{name} takes the
// module's bytes as the body (Content-Type: application/wasm) and its
// manifest as query parameters:
//
//	kind=reporter|correlation            required
//	memory_pages=N                       optional, default 512
//	call_timeout=DURATION                optional, default 100ms
//	max_output_bytes=N                   optional, default 65536
//	log_lines_per_second=N               optional, default 100
//	sink=NAME=TYPE[:TARGET]              repeatable, reporters only
//
// An optional If-Match header makes the write conditional on the module's
// current version (0: no module of that name exists).

// Module kinds.
const (
	ModuleKindCorrelation = "correlation"
	ModuleKindReporter    = "reporter"
)

// ModuleLimits are a module's limits as the API shows them. CallTimeout is
// a Go duration string such as "100ms".
type ModuleLimits struct {
	MemoryPages       uint32 `json:"memory_pages"`
	CallTimeout       string `json:"call_timeout"`
	MaxOutputBytes    int    `json:"max_output_bytes"`
	LogLinesPerSecond int    `json:"log_lines_per_second"`
}

// ModuleManifest is what the uploader chose for a module, with every limit
// resolved at upload (defaults filled in), so that every node runs it with
// the same limits.
type ModuleManifest struct {
	Kind   string       `json:"kind"`
	Limits ModuleLimits `json:"limits"`
	// Sinks are a reporter's sink specs, "name=type[:target]":
	// "results=file:results.jsonl", "audit=stdout",
	// "hook=webhook:https://host/path". A reporter's records may name only
	// these sinks. File targets are relative to each node's sink directory.
	Sinks []string `json:"sinks,omitempty"`
}

// Module is a stored module's metadata, and its state on the node that
// answered.
type Module struct {
	Name string `json:"name"`
	// Digest is "sha256:" and the hex SHA-256 of the module's bytes.
	Digest   string         `json:"digest"`
	Size     int64          `json:"size"`
	Manifest ModuleManifest `json:"manifest"`
	// Version counts the writes of this name; it never repeats, not even
	// after a delete.
	Version uint64 `json:"version"`
	// Revision is the module-set revision of the module's last write.
	Revision  uint64    `json:"revision"`
	UpdatedAt time.Time `json:"updated_at"`
	UpdatedBy string    `json:"updated_by"`
	// Node is the answering node's install state of this module.
	Node ModuleNodeState `json:"node"`
}

// ModuleNodeState is one node's install state of one module.
type ModuleNodeState struct {
	// Node is the node's id.
	Node string `json:"node"`
	// State is "installed" (Digest and Version run here), "installing"
	// (the node has not got to this version yet) or "failed" (Error says
	// why; the node keeps running the version it had, if any).
	State string `json:"state"`
	// Digest and Version are what the node runs now ("" and 0: nothing).
	Digest  string `json:"digest,omitempty"`
	Version uint64 `json:"version,omitempty"`
	// Handlers are the handlers the installed module exports.
	Handlers    []string  `json:"handlers,omitempty"`
	InstalledAt time.Time `json:"installed_at,omitzero"`
	// Error is why the current version failed to install here, and
	// ErrorCode its stable code (e.g. "compile_error").
	Error     string `json:"error,omitempty"`
	ErrorCode string `json:"error_code,omitempty"`
}

// Module install states.
const (
	ModuleInstalled  = "installed"
	ModuleInstalling = "installing"
	ModuleFailed     = "failed"
)

// ModuleList answers GET /v1/modules.
type ModuleList struct {
	// Revision is the module-set revision the list was read at.
	Revision uint64 `json:"revision"`
	// Node is the node that answered: each module's "node" is its state.
	Node    string   `json:"node"`
	Modules []Module `json:"modules"`
}

// DeleteModuleResponse answers DELETE /v1/modules/{name}.
type DeleteModuleResponse struct {
	Name     string `json:"name"`
	Deleted  bool   `json:"deleted"`
	Revision uint64 `json:"revision"`
}

// InvokeRequest is the body of POST /v1/modules/{name}/invoke: run the
// module installed on the node that receives the request on a sample
// event. Handler may be omitted when the module exports only one; Event is
// the event's JSON object as the ABI describes it (its "kind" may be
// omitted: the handler implies it).
type InvokeRequest struct {
	Handler string          `json:"handler,omitempty"`
	Event   json.RawMessage `json:"event"`
}

// InvokeResponse answers an invoke. A call that trapped, timed out or
// returned an error is still a 200: the call worked, the module failed, and
// Error says how.
type InvokeResponse struct {
	Module  string `json:"module"`
	Digest  string `json:"digest"`
	Version uint64 `json:"version"`
	Node    string `json:"node"`
	Handler string `json:"handler"`
	// Output is the module's output when it is JSON; OutputText holds it
	// otherwise.
	Output     json.RawMessage `json:"output,omitempty"`
	OutputText string          `json:"output_text,omitempty"`
	// Records are a reporter's records, parsed from its output (nothing is
	// written to any sink by an invoke).
	Records []ReporterRecord `json:"records,omitempty"`
	Logs    []ModuleLogLine  `json:"logs"`
	// LogsDropped counts lines dropped by the module's log rate limit.
	LogsDropped int `json:"logs_dropped,omitempty"`
	// Duration is the call's duration as a Go duration string, and
	// DurationNanos the same in nanoseconds.
	Duration      string       `json:"duration"`
	DurationNanos int64        `json:"duration_ns"`
	Error         *InvokeError `json:"error,omitempty"`
}

// ReporterRecord is one record a reporter asked to emit.
type ReporterRecord struct {
	Sink string          `json:"sink"`
	Data json.RawMessage `json:"data"`
}

// ModuleLogLine is one line a module logged during a call. Stream is "log"
// (the log host function), "stdout" or "stderr".
type ModuleLogLine struct {
	Level  string `json:"level"`
	Stream string `json:"stream"`
	Text   string `json:"text"`
}

// InvokeError is why a call failed: Kind is "trap", "timeout",
// "guest_error", "bad_output" (the output is not JSON, or does not fit the
// kind's schema: Message names the field), "output_too_large", ...; Stack
// is the guest's stack at a trap, innermost frame first.
type InvokeError struct {
	Kind    string   `json:"kind"`
	Message string   `json:"message"`
	Stack   []string `json:"stack,omitempty"`
}
