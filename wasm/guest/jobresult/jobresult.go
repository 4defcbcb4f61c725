// Package jobresult exports the handler coordinatord_on_job_result (wasm/ABI.md) from a Go
// guest module: importing it and calling Handle is all a module needs to
// receive job results.
//
//	func init() {
//		jobresult.Handle(func(ev guest.JobResult) (guest.ReporterOutput, error) {
//			...
//		})
//	}
//
// A module that does not import this package does not export the handler,
// and the host never calls it for these events.
package jobresult

import "github.com/coordinatord/coordinatord/wasm/guest"

var handler func(guest.JobResult) (guest.ReporterOutput, error)

// Handle registers h as the module's handler of job results. Call it from an init
// function (a module built with -buildmode=c-shared never runs main). A
// later call replaces the handler.
//
// The event is decoded into a guest.JobResult, the result h returns is encoded as
// JSON and passed to the host's output; an error is passed to the host's fail
// and the call returns non-zero, so the host logs it and replaces the
// instance. A panic in h is recovered and reported the same way.
func Handle(h func(guest.JobResult) (guest.ReporterOutput, error)) {
	handler = h
}
