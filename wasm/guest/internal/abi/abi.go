// Package abi is the guest side of the coordinatord Wasm ABI v1 (wasm/ABI.md):
// the input buffer handed out by coordinatord_alloc, the host imports (output,
// log, fail) and the generic handler runner used by the handler packages
// (wasm/guest/jobresult, wasm/guest/leaseevent, wasm/guest/correlation).
//
// On wasip1 the files abi_wasip1.go and exports_wasip1.go bind it to the host;
// on any other platform it compiles to stubs, so that modules and the SDK
// build, vet and test on the developer's machine.
package abi

import (
	"fmt"
	"runtime/debug"
)

// Log levels of the host function log.
const (
	LevelDebug int32 = 0
	LevelInfo  int32 = 1
	LevelWarn  int32 = 2
	LevelError int32 = 3
)

// Result codes returned by handler exports. The host treats any non-zero
// value as an error and reports the text given to fail.
const (
	OK          int32 = 0
	ErrHandler  int32 = 1 // the author's handler returned an error
	ErrDecode   int32 = 2 // the event was not valid JSON for its type
	ErrEncode   int32 = 3 // the output could not be encoded
	ErrPanic    int32 = 4 // the handler panicked
	ErrNoBuffer int32 = 5 // the host passed memory coordinatord_alloc did not hand out
	ErrNoHandle int32 = 6 // the module exports the handler but registered no function
)

// inputBuffer is the one buffer coordinatord_alloc hands out. It is reused
// from call to call (grown when an event is larger); holding it in a
// package variable keeps it reachable, and Go's collector does not move
// objects, so its address stays valid until the next coordinatord_alloc.
var inputBuffer []byte

// shrinkAbove is the capacity beyond which a buffer is dropped (left to the
// collector) as soon as a smaller event arrives, so that one huge event does
// not pin its memory for the life of the instance.
const shrinkAbove = 1 << 20

// minBuffer is the smallest buffer allocated, so that small events of
// different sizes share one allocation.
const minBuffer = 4096

// alloc returns the buffer for an event of size bytes (at least one byte, so
// its address is never 0).
func alloc(size int32) []byte {
	if size < 0 {
		return nil
	}
	n := int(size)
	if c := cap(inputBuffer); c < n || (c > shrinkAbove && n <= c/4) {
		inputBuffer = make([]byte, max(n, minBuffer))
	}
	inputBuffer = inputBuffer[:cap(inputBuffer)]
	return inputBuffer
}

// input returns the event the host wrote at ptr, n bytes long, or nil if that
// range is not inside the buffer coordinatord_alloc handed out.
func input(ptr, n uint32, base uint32) []byte {
	if len(inputBuffer) == 0 || ptr != base || int(n) > len(inputBuffer) {
		return nil
	}
	return inputBuffer[:n]
}

// Handler is the plumbing of one handler export, for events of type E
// and outputs of type O.
type Handler[E, O any] struct {
	// Name is the export's name, for error messages.
	Name string
	// Decode decodes an event (the event types' UnmarshalJSON).
	Decode func(*E, []byte) error
	// Encode appends an output as JSON (the output types' AppendJSON).
	Encode func(O, []byte) ([]byte, error)

	event E // decoded into: a package variable is not allocated per call
}

// outputBuffer is reused for the output of every call.
var outputBuffer []byte

// Call is the body of the handler export: it decodes the event at (ptr, n),
// runs fn, encodes its result and passes it to the host's output. A nil
// fn, a decode error, an error from fn, an encoding error or a panic is
// reported with fail and a non-zero return.
func (h *Handler[E, O]) Call(ptr, n uint32, fn func(E) (O, error)) (code int32) {
	var zero E
	defer func() {
		h.event = zero // do not keep the event alive until the next call
		if r := recover(); r != nil {
			Log(LevelError, fmt.Sprintf("%s: panic: %v\n%s", h.Name, r, debug.Stack()))
			Fail(fmt.Sprintf("%s: panic: %v", h.Name, r))
			code = ErrPanic
		}
	}()
	if fn == nil {
		Fail(h.Name + ": the module exports this handler but registered no function for it")
		return ErrNoHandle
	}
	in := input(ptr, n, bufferAddress())
	if in == nil {
		Fail(fmt.Sprintf("%s: event at (%d, %d) is not in the buffer coordinatord_alloc returned", h.Name, ptr, n))
		return ErrNoBuffer
	}
	h.event = zero
	if err := h.Decode(&h.event, in); err != nil {
		Fail(fmt.Sprintf("%s: decode event: %v", h.Name, err))
		return ErrDecode
	}
	out, err := fn(h.event)
	if err != nil {
		Fail(err.Error())
		return ErrHandler
	}
	b, err := h.Encode(out, outputBuffer[:0])
	if err != nil {
		Fail(fmt.Sprintf("%s: encode output: %v", h.Name, err))
		return ErrEncode
	}
	Output(b) // the host copies it
	outputBuffer = b
	if cap(outputBuffer) > shrinkAbove {
		outputBuffer = nil
	}
	return OK
}
