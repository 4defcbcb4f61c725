//go:build wasip1

package correlationreport

import (
	"github.com/coordinatord/coordinatord/wasm/guest"
	"github.com/coordinatord/coordinatord/wasm/guest/internal/abi"
)

var export = abi.Handler[guest.CorrelationEvent, guest.ReporterOutput]{
	Name:   "coordinatord_on_correlation",
	Decode: (*guest.CorrelationEvent).UnmarshalJSON,
	Encode: guest.ReporterOutput.AppendJSON,
}

//go:wasmexport coordinatord_on_correlation
func onCorrelation(ptr, n uint32) int32 {
	return export.Call(ptr, n, handler)
}
