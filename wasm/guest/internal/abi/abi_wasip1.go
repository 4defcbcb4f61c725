//go:build wasip1

package abi

import "unsafe"

//go:wasmimport coordinatord output
func hostOutput(ptr unsafe.Pointer, n uint32)

//go:wasmimport coordinatord log
func hostLog(level int32, ptr unsafe.Pointer, n uint32)

//go:wasmimport coordinatord fail
func hostFail(ptr unsafe.Pointer, n uint32)

// Output passes the handler's answer (JSON) to the host. The host accepts it
// at most once per call.
func Output(b []byte) {
	hostOutput(unsafe.Pointer(unsafe.SliceData(b)), uint32(len(b)))
}

// Log sends one log line to the host.
func Log(level int32, msg string) {
	hostLog(level, unsafe.Pointer(unsafe.StringData(msg)), uint32(len(msg)))
}

// Fail tells the host why the handler is about to return non-zero.
func Fail(msg string) {
	hostFail(unsafe.Pointer(unsafe.StringData(msg)), uint32(len(msg)))
}

// bufferAddress is the address of the input buffer in linear memory (0 if
// none was allocated yet).
func bufferAddress() uint32 {
	if len(inputBuffer) == 0 {
		return 0
	}
	return uint32(uintptr(unsafe.Pointer(unsafe.SliceData(inputBuffer))))
}
