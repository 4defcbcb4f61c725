// Package reporters delivers job results and lease events to the reporter
// Wasm modules operators install, and writes what those modules emit to the
// sinks the operator configured for them (stdout, JSON-lines files,
// webhooks).
//
// It stands beside package engine rather than inside it because it is all
// side effects: a bounded queue, worker goroutines, files, HTTP. engine is
// the pure decision core (no sockets, no goroutines of its own, an injected
// clock); the pipeline here only moves events to modules and records to
// sinks, and decides nothing about jobs or leases.
//
// # Flow
//
// A reporting peer POSTs a job's result to the Raft leader, which submits it
// to its Pipeline; the leader also submits the committed lease events, and
// the correlation events its engine decides (partition_detected,
// partition_healed, severity_changed: the same bytes its correlation
// modules receive) to the reporters that export coordinatord_on_correlation.
// The
// Pipeline keeps a bounded queue (Config.QueueSize) served by
// Config.Workers goroutines. Each event goes to every installed reporter
// module (Registry) that exports the event's handler; each call's output is
// parsed with the ABI's reporter schema and its records are written to the
// module's sinks. A module that traps, times out, answers garbage or names a
// sink it was not given fails alone: the event, the job and the other
// modules are untouched, and the failure is recorded (Results) and counted.
//
// Workers run in parallel, so events reach modules and sinks in no
// particular order; a lease event carries the Raft index of its entry,
// and a job result its time, for consumers that need one.
//
// # Backpressure: nothing is dropped silently
//
// A job result that finds the queue full is refused with ErrQueueFull (the
// API answers 429 with Retry-After, and the reporting peer retries). A lease
// event cannot be refused — it has already happened — so one that finds the
// queue full is dropped and counted in
// coordinatord_reporter_dropped_total{source="lease_event"}.
//
// # Who dispatches, and what survives a leader change
//
// Only the Raft leader dispatches: job results are leader-only requests
// (followers forward them), and although every node follows the committed
// lease events, a node submits one only if it leads when the event reaches
// it. So followers never write to sinks, a sink sees each event once in
// steady state, and a new leader dispatches its term's events from its
// first entry on. Delivery is best effort: an event queued on a leader that
// then crashes is lost, and around a leader change a lease event may be
// missed or, rarely, delivered twice.
//
// The per-call results (Results) live in memory on the dispatching node,
// bounded by job count, like the decision log. They are not replicated: a
// reporter's outcome is diagnostic information about side effects that
// happened on that node, and replicating every outcome through Raft would
// put reporter traffic on the lease path's log for no gain in what the
// sinks received. After a leader change the new leader's results start
// empty; the API's answer names the node and since when it has dispatched.
package reporters
