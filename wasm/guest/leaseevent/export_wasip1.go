//go:build wasip1

package leaseevent

import "github.com/coordinatord/coordinatord/wasm/guest/internal/abi"

//go:wasmexport coordinatord_on_lease_event
func onLeaseEvent(ptr, n uint32) int32 {
	return abi.Call(ptr, n, "coordinatord_on_lease_event", handler)
}
