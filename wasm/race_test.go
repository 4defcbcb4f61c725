//go:build race

package wasm

// raceEnabled: the race detector slows wazero's compiler (Go code) some
// twentyfold, so tests leave out the multi-megabyte Go guest.
const raceEnabled = true
