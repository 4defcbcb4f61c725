// Command go-reporter is a coordinatord reporter module written with the Go
// guest SDK (wasm/guest): it writes one JSON record per job result, one per
// lease event, and one per correlation event (partition detected, healed,
// severity changed), to the sink "results".
//
// A job result record:
//
//	{"event":"job_result","job_id":"job-7","workflow":"nightly-etl","datacenter":"dc2",
//	 "source":"manager-4","ok":true,"stats":{"rows":1200},"time":"2026-11-27T10:00:00Z"}
//
// "ok" is the job's stats member "ok" when it is a boolean, otherwise false
// if the stats carry an "error" that is not null, false or "", and true if
// not.
//
// A lease event record:
//
//	{"event":"lease_event","type":"expired","job_id":"job-7","owner":"gate-3",
//	 "owner_dc":"dc3","token":12,"at":"2026-11-27T10:00:00Z","index":4711}
//
// A correlation event record (the event as the correlation modules get it):
//
//	{"event":"correlation","type":"partition_detected","episode":"ep-42","severity":"medium",
//	 "previous_severity":"low","affected_datacenters":["dc3","dc4","dc5"],
//	 "healthy_datacenters":["dc1","dc2"],"held_jobs":["job-7"],
//	 "held_leases":[{"job_id":"job-7","owner":"gate-3","owner_dc":"dc3","token":12}],
//	 "time":"2026-11-27T10:00:00Z"}
//
// Records are built with guest.Object, which encodes as it goes: several
// times cheaper in a Wasm guest than a map or a struct through
// encoding/json (which work too).
//
// Build with examples/modules/build.sh.
package main

import (
	"encoding/json"

	"github.com/coordinatord/coordinatord/wasm/guest"
	"github.com/coordinatord/coordinatord/wasm/guest/correlationreport"
	"github.com/coordinatord/coordinatord/wasm/guest/jobresult"
	"github.com/coordinatord/coordinatord/wasm/guest/leaseevent"
)

// sink is the name under which the operator configures this module's sink.
const sink = "results"

func init() {
	jobresult.Handle(onJobResult)
	leaseevent.Handle(onLeaseEvent)
	correlationreport.Handle(onCorrelation)
}

func onJobResult(ev guest.JobResult) (guest.ReporterOutput, error) {
	rec := new(guest.Object).
		String("event", guest.KindJobResult).
		String("job_id", ev.JobID).
		String("workflow", ev.Workflow).
		String("datacenter", ev.Datacenter).
		String("source", ev.Source).
		Bool("ok", ok(ev.Stats))
	if ev.Stats != nil {
		rec.Raw("stats", ev.Stats)
	}
	rec.Time("time", ev.Time)
	return guest.Emit(sink, rec), nil
}

func onLeaseEvent(ev guest.LeaseEvent) (guest.ReporterOutput, error) {
	return guest.Emit(sink, new(guest.Object).
		String("event", guest.KindLeaseEvent).
		String("type", ev.Type).
		String("job_id", ev.JobID).
		String("owner", ev.Owner).
		String("owner_dc", ev.OwnerDC).
		Uint64("token", ev.Token).
		Time("at", ev.At).
		Uint64("index", ev.Index)), nil
}

func onCorrelation(ev guest.CorrelationEvent) (guest.ReporterOutput, error) {
	jobs := make([]string, len(ev.HeldLeases))
	leases := make([]any, len(ev.HeldLeases))
	for i, l := range ev.HeldLeases {
		jobs[i] = l.JobID
		leases[i] = new(guest.Object).
			String("job_id", l.JobID).
			String("owner", l.Owner).
			String("owner_dc", l.OwnerDC).
			Uint64("token", l.Token)
	}
	return guest.Emit(sink, new(guest.Object).
		String("event", ev.Kind).
		String("type", ev.Type).
		String("episode", ev.Episode).
		String("severity", ev.Severity).
		String("previous_severity", ev.PreviousSeverity).
		Any("affected_datacenters", nonNil(ev.AffectedDatacenters)).
		Any("healthy_datacenters", nonNil(ev.HealthyDatacenters)).
		Any("held_jobs", jobs).
		Any("held_leases", leases).
		Time("time", ev.Time)), nil
}

// nonNil makes an absent list an empty one, so that records always have
// arrays where the ABI has them.
func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// ok tells a successful job from a failed one by its stats (see the package
// comment).
func ok(stats json.RawMessage) bool {
	switch string(guest.Lookup(stats, "ok")) {
	case "true":
		return true
	case "false":
		return false
	}
	switch string(guest.Lookup(stats, "error")) {
	case "", "null", "false", `""`:
		return true
	}
	return false
}

// main is never called: a module built with -buildmode=c-shared runs its
// init functions only.
func main() {}
