// Package guest is the Go SDK for coordinatord callback modules: Go code
// built for wasip1 that coordinatord runs in its Wasm sandbox. It implements
// the guest side of the ABI v1 (wasm/ABI.md) — the version marker, the input
// buffer, JSON decoding of events, encoding of outputs, the host's output,
// log and fail functions — so that a module author writes one typed function
// per handler.
//
// # Writing a module
//
// A module is a main package. It registers one function per handler from an
// init function, through the handler's package:
//
//   - jobresult.Handle   (kind reporter, events of type JobResult)
//   - leaseevent.Handle  (kind reporter, events of type LeaseEvent)
//   - correlation.Handle (kind correlation, events of type CorrelationEvent)
//   - correlationreport.Handle (kind reporter, optional: the same
//     CorrelationEvent, answered with records like the other reporter
//     handlers)
//
// Importing a handler package is what exports its handler
// (coordinatord_on_job_result, coordinatord_on_lease_event,
// coordinatord_on_correlation) from the module; any module importing this
// package exports coordinatord_abi_v1 and coordinatord_alloc. Nothing else is
// needed: no //go:wasmexport in the module, no memory management.
//
// A complete reporter that writes one record per job result to the sink
// "results":
//
//	package main
//
//	import (
//		"github.com/coordinatord/coordinatord/wasm/guest"
//		"github.com/coordinatord/coordinatord/wasm/guest/jobresult"
//	)
//
//	func init() {
//		jobresult.Handle(func(ev guest.JobResult) (guest.ReporterOutput, error) {
//			guest.Debug("job result", "job", ev.JobID, "dc", ev.Datacenter)
//			return guest.Emit("results", new(guest.Object).
//				String("job_id", ev.JobID).
//				String("datacenter", ev.Datacenter).
//				Raw("stats", ev.Stats)), nil
//		})
//	}
//
//	// main is never called: a c-shared module runs init functions only.
//	func main() {}
//
// Build it as a WASI reactor:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -trimpath -o reporter.wasm .
//
// -buildmode=c-shared is required: without it Go builds a command (_start),
// which the host refuses.
//
// # Semantics
//
// The host decodes nothing for the module: the SDK decodes the event JSON
// into the handler's event type (unknown fields are ignored, as with
// encoding/json), calls the handler, encodes what it returns as JSON and
// passes it to the host's output. A handler that returns an error, or panics, makes the call
// fail: the error text goes to the host's fail and the handler export
// returns non-zero; the host logs it with the event's datacenters and job
// ids, and replaces the instance. The zero CorrelationOutput keeps the
// built-in decision; the zero ReporterOutput emits no record.
//
// An instance handles one call at a time, so handlers need no locking.
// Package variables survive from call to call on one instance, but the host
// discards instances at any time: do not rely on them.
//
// Log, Debug, Info, Warn and Error send lines to the coordinatord log;
// anything written to os.Stdout or os.Stderr is logged too. Clocks and
// crypto/rand work; there is no filesystem, network or environment.
//
// # Cost
//
// Go compiled to Wasm is slow where it branches or calls much: Go's Wasm
// code goes through its function's loop header at every taken branch, and
// the host checks for cancellation at every loop header (about 25 ns each),
// so a Go handler runs 4 to 5 times slower in the sandbox than on bare
// wazero. The SDK therefore decodes events and encodes
// outputs itself, without reflection. In handlers:
//
//   - build record data with Object (or map[string]any); a struct goes
//     through encoding/json's reflection, several times slower;
//   - read members of JobResult.Stats with Lookup rather than
//     json.Unmarshal;
//   - prefer strconv and string concatenation to fmt.
//
// # Memory
//
// coordinatord_alloc hands out one buffer, kept in a package variable and
// reused by every call (grown for a larger event, released after a large one
// once events are small again); the output is encoded into another reused
// buffer. The event is decoded out of the input buffer before the handler
// runs, so nothing the handler holds refers to it. A Go module has about
// 50 pages (3.2 MiB) of linear memory after _initialize; its heap then grows
// to about 125 pages (8 MiB) with small events, where the collector keeps
// it, and to about 200 after events of 1 MiB. The default limit of 512
// pages (32 MiB) is ample.
//
// # Off wasip1
//
// On other platforms this package and the handler packages compile without
// the host: Handle only records the function and Log writes to standard
// error. A module therefore builds, vets and unit-tests as ordinary Go code;
// test the handler function directly.
package guest
