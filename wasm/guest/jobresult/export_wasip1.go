//go:build wasip1

package jobresult

import (
	"github.com/coordinatord/coordinatord/wasm/guest"
	"github.com/coordinatord/coordinatord/wasm/guest/internal/abi"
)

var export = abi.Handler[guest.JobResult, guest.ReporterOutput]{
	Name:   "coordinatord_on_job_result",
	Decode: (*guest.JobResult).UnmarshalJSON,
	Encode: guest.ReporterOutput.AppendJSON,
}

//go:wasmexport coordinatord_on_job_result
func onJobResult(ptr, n uint32) int32 {
	return export.Call(ptr, n, handler)
}
