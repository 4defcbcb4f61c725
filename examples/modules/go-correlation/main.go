// Command go-correlation is a coordinatord correlation module written with
// the Go guest SDK (wasm/guest). It holds leases only when at least two
// datacenters fail together — a correlated failure, more likely a partition
// than independent outages — and lets a lone failed datacenter's leases
// expire as usual. Every decision carries a note, which coordinatord logs
// with it.
//
//	affected dc3, dc4  → {"hold":true,"datacenters":["dc3","dc4"],"notes":["2 datacenters dark (dc3, dc4): holding 5 leases"]}
//	affected dc3       → {"hold":false,"notes":["1 datacenter dark (dc3): independent failure, leases expire as usual"]}
//	partition_healed   → {"notes":["episode ep-42 healed"]} (the built-in decision)
//
// Build with examples/modules/build.sh.
package main

import (
	"strconv"
	"strings"

	"github.com/coordinatord/coordinatord/wasm/guest"
	"github.com/coordinatord/coordinatord/wasm/guest/correlation"
)

// minDatacenters is the number of failed datacenters from which leases are
// held.
const minDatacenters = 2

func init() {
	correlation.Handle(decide)
}

func decide(ev guest.CorrelationEvent) (guest.CorrelationOutput, error) {
	if ev.Type == guest.PartitionHealed {
		guest.Info("episode healed", "episode", ev.Episode)
		return guest.BuiltIn("episode " + ev.Episode + " healed"), nil
	}
	// Notes are built with strconv and + rather than fmt: fmt is
	// comparatively slow in a Wasm guest.
	n := strconv.Itoa(len(ev.AffectedDatacenters))
	dcs := strings.Join(ev.AffectedDatacenters, ", ")
	if len(ev.AffectedDatacenters) >= minDatacenters {
		note := n + " datacenters dark (" + dcs + "): holding " + strconv.Itoa(len(ev.HeldLeases)) + " leases"
		guest.Warn(note, "episode", ev.Episode, "severity", ev.Severity)
		return guest.Hold(ev.AffectedDatacenters, note), nil
	}
	note := n + " datacenter dark (" + dcs + "): independent failure, leases expire as usual"
	guest.Info(note, "episode", ev.Episode, "severity", ev.Severity)
	return guest.DontHold(note), nil
}

// main is never called: a module built with -buildmode=c-shared runs its
// init functions only.
func main() {}
