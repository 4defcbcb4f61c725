// Package correlationreport exports the handler coordinatord_on_correlation
// (wasm/ABI.md) from a Go reporter module: importing it and calling Handle
// makes a reporter receive the correlation events (partition_detected,
// partition_healed, severity_changed) that correlation modules receive, and
// answer them with records for its sinks.
//
//	func init() {
//		correlationreport.Handle(func(ev guest.CorrelationEvent) (guest.ReporterOutput, error) {
//			return guest.Emit("results", new(guest.Object).
//				String("event", ev.Type).
//				String("episode", ev.Episode)), nil
//		})
//	}
//
// It exports the same handler as package correlation, for the other kind
// of module: a module imports one of the two, never both (the link fails
// on the duplicate export). A reporter that imports it must still handle
// job results or lease events (jobresult, leaseevent): coordinatord refuses a
// reporter whose only handler is coordinatord_on_correlation.
package correlationreport

import "github.com/coordinatord/coordinatord/wasm/guest"

var handler func(guest.CorrelationEvent) (guest.ReporterOutput, error)

// Handle registers h as the reporter's handler of correlation events. Call
// it from an init function (a module built with -buildmode=c-shared never
// runs main). A later call replaces the handler.
//
// The event is decoded into a guest.CorrelationEvent, the result h returns
// is encoded as JSON and passed to the host's output; an error is passed to
// the host's fail and the call returns non-zero, so the host logs it and
// replaces the instance. A panic in h is recovered and reported the same
// way.
func Handle(h func(guest.CorrelationEvent) (guest.ReporterOutput, error)) {
	handler = h
}
