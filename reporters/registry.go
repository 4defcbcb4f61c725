package reporters

import (
	"context"
	"slices"
	"time"
)

// The ABI v1 reporter handlers (wasm/ABI.md). A reporter may export
// HandlerCorrelation too, to receive the correlation events.
const (
	HandlerJobResult   = "coordinatord_on_job_result"
	HandlerLeaseEvent  = "coordinatord_on_lease_event"
	HandlerCorrelation = "coordinatord_on_correlation"
)

// Event kinds, as in the ABI's "kind" field.
const (
	KindJobResult   = "job_result"
	KindLeaseEvent  = "lease_event"
	KindCorrelation = "correlation"
)

// Reporter is one installed reporter module as the pipeline sees it.
type Reporter struct {
	// Name is the module's name.
	Name string
	// Digest identifies the module's bytes ("sha256:<hex>").
	Digest string
	// Handlers are the ABI handlers the module exports.
	Handlers []string
	// Sinks are the sinks the operator gave the module; its records may
	// name only these.
	Sinks []SinkSpec
}

// Exports reports whether r exports handler.
func (r Reporter) Exports(handler string) bool { return slices.Contains(r.Handlers, handler) }

// sink returns r's sink named name.
func (r Reporter) sink(name string) (SinkSpec, bool) {
	for _, s := range r.Sinks {
		if s.Name == name {
			return s, true
		}
	}
	return SinkSpec{}, false
}

// Registry lists the node's installed reporter modules. It must be safe
// for concurrent use and cheap: the pipeline calls it for every event. The
// pipeline does not modify the returned slice or its elements, and the
// implementation must not modify them after returning them either (return
// a fresh slice, or an immutable snapshot, when the set changes).
type Registry interface {
	Reporters() []Reporter
}

// RegistryFunc adapts a function to Registry.
type RegistryFunc func() []Reporter

// Reporters calls f.
func (f RegistryFunc) Reporters() []Reporter { return f() }

// Invocation is one handler call the pipeline asks for.
type Invocation struct {
	// Handler is HandlerJobResult, HandlerLeaseEvent or
	// HandlerCorrelation.
	Handler string
	// Kind is the event's kind (KindJobResult, KindLeaseEvent,
	// KindCorrelation), for the sandbox's trap reports.
	Kind string
	// Event is the event's ABI JSON. The invoker must not keep it.
	Event []byte
	// Datacenters and JobIDs are what the event touches, for trap reports.
	Datacenters []string
	JobIDs      []string
}

// Outcome is what one call did.
type Outcome struct {
	// Records are the records of the call's output, checked against the
	// ABI's reporter schema and the reporter's sinks (each names one of
	// them). Nil when Err is set.
	Records []Record
	// Elapsed is the call's duration as the sandbox measured it.
	Elapsed time.Duration
	// Err is the call's failure: a trap, a timeout, a non-zero return, an
	// output that does not fit the schema or names a sink the module was
	// not given (then no record of the call is emitted), an unknown
	// module. Nil on success.
	Err error
	// ErrKind names Err's class for results and metrics: "trap",
	// "timeout", "guest_error", "invalid_output", "not_installed", ...
	ErrKind string
}

// Invoker runs one handler of one installed reporter module and checks its
// output: the Wasm sandbox (see SandboxInvoker). It must be safe for
// concurrent use, may block for up to the module's time limit (less if ctx
// ends first), and reports every failure in the Outcome (after its own
// trap report) rather than panicking.
type Invoker interface {
	Invoke(ctx context.Context, r Reporter, inv Invocation) Outcome
}
