//go:build wasip1

package correlation

import "github.com/coordinatord/coordinatord/wasm/guest/internal/abi"

//go:wasmexport coordinatord_on_correlation
func onCorrelation(ptr, n uint32) int32 {
	return abi.Call(ptr, n, "coordinatord_on_correlation", handler)
}
