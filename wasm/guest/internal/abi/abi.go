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
	"encoding/json"
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

// Call is the body of one handler export: it decodes the event at (ptr, n)
// into E, runs h, encodes its result (see unmarshal and marshal) and passes
// it to the host's output. A nil h, a decode error, an error from h, an encoding error
// or a panic is reported with fail and a non-zero return.
func Call[E, O any](ptr, n uint32, name string, h func(E) (O, error)) (code int32) {
	defer func() {
		if r := recover(); r != nil {
			Log(LevelError, fmt.Sprintf("%s: panic: %v\n%s", name, r, debug.Stack()))
			Fail(fmt.Sprintf("%s: panic: %v", name, r))
			code = ErrPanic
		}
	}()
	if h == nil {
		Fail(name + ": the module exports this handler but registered no function for it")
		return ErrNoHandle
	}
	in := input(ptr, n, bufferAddress())
	if in == nil {
		Fail(fmt.Sprintf("%s: event at (%d, %d) is not in the buffer coordinatord_alloc returned", name, ptr, n))
		return ErrNoBuffer
	}
	var ev E
	if err := unmarshal(in, &ev); err != nil {
		Fail(fmt.Sprintf("%s: decode event: %v", name, err))
		return ErrDecode
	}
	out, err := h(ev)
	if err != nil {
		Fail(err.Error())
		return ErrHandler
	}
	b, err := marshal(outputBuffer[:0], out)
	if err != nil {
		Fail(fmt.Sprintf("%s: encode output: %v", name, err))
		return ErrEncode
	}
	Output(b) // the host copies it
	outputBuffer = b
	if cap(outputBuffer) > shrinkAbove {
		outputBuffer = nil
	}
	return OK
}

// unmarshal decodes b into v with v's own UnmarshalJSON if it has one (the
// SDK's event types do: that skips encoding/json's validating pass, which
// the decoders make themselves), with encoding/json otherwise.
func unmarshal(b []byte, v any) error {
	if u, ok := v.(json.Unmarshaler); ok {
		return u.UnmarshalJSON(b)
	}
	return json.Unmarshal(b, v)
}

// outputBuffer is reused for the output of every call.
var outputBuffer []byte

// appender is implemented by the SDK's output types.
type appender interface {
	AppendJSON([]byte) ([]byte, error)
}

// marshal appends v, encoded with its own AppendJSON or MarshalJSON if it
// has one (the SDK's output types do), with encoding/json otherwise, to b.
func marshal(b []byte, v any) ([]byte, error) {
	var j []byte
	var err error
	switch v := v.(type) {
	case appender:
		return v.AppendJSON(b)
	case json.Marshaler:
		j, err = v.MarshalJSON()
	default:
		j, err = json.Marshal(v)
	}
	return append(b, j...), err
}
