//go:build wasip1

package jobresult

import "github.com/coordinatord/coordinatord/wasm/guest/internal/abi"

//go:wasmexport coordinatord_on_job_result
func onJobResult(ptr, n uint32) int32 {
	return abi.Call(ptr, n, "coordinatord_on_job_result", handler)
}
