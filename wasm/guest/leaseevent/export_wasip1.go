//go:build wasip1

package leaseevent

import (
	"github.com/coordinatord/coordinatord/wasm/guest"
	"github.com/coordinatord/coordinatord/wasm/guest/internal/abi"
)

var export = abi.Handler[guest.LeaseEvent, guest.ReporterOutput]{
	Name:   "coordinatord_on_lease_event",
	Decode: (*guest.LeaseEvent).UnmarshalJSON,
	Encode: guest.ReporterOutput.AppendJSON,
}

//go:wasmexport coordinatord_on_lease_event
func onLeaseEvent(ptr, n uint32) int32 {
	return export.Call(ptr, n, handler)
}
