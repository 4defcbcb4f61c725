// Command go-reporter is a coordinatord reporter module written with the Go
// guest SDK (wasm/guest): it writes one JSON record per job result, and one
// per lease event, to the sink "results".
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
// Records are built with guest.Object, which encodes as it goes: several
// times cheaper in a Wasm guest than a map or a struct through
// encoding/json (which work too).
//
// Build with examples/modules/build.sh.
package main

import (
	"encoding/json"

	"github.com/coordinatord/coordinatord/wasm/guest"
	"github.com/coordinatord/coordinatord/wasm/guest/jobresult"
	"github.com/coordinatord/coordinatord/wasm/guest/leaseevent"
)

// sink is the name under which the operator configures this module's sink.
const sink = "results"

func init() {
	jobresult.Handle(onJobResult)
	leaseevent.Handle(onLeaseEvent)
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
