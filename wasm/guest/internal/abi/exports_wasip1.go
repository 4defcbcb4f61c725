//go:build wasip1

package abi

// abiV1 is the version marker: its presence says "this module speaks ABI v1".
// The host never calls it.
//
//go:wasmexport coordinatord_abi_v1
func abiV1() {}

// coordinatordAlloc returns the address of size bytes that stay untouched
// until the next handler call returns, or 0 if size is negative.
//
//go:wasmexport coordinatord_alloc
func coordinatordAlloc(size int32) uint32 {
	if alloc(size) == nil {
		return 0
	}
	return bufferAddress()
}
