package wasm

import (
	"encoding/json"
	"fmt"
	"time"
)

// Bounds of Limits, checked by Limits.Validate.
const (
	// MaxMemoryPages is the largest MemoryPages (256 MiB).
	MaxMemoryPages = 4096
	// MinCallTimeout and MaxCallTimeout bound CallTimeout.
	MinCallTimeout = time.Millisecond
	MaxCallTimeout = 30 * time.Second
	// MaxOutputBytes is the largest MaxOutputBytes (16 MiB).
	MaxOutputBytes = 16 << 20
	// MaxLogLinesPerSecond is the largest LogLinesPerSecond.
	MaxLogLinesPerSecond = 10000
)

// Limits bound what one module may use. Every module has its own; the
// defaults (DefaultLimits) are those of ABI.md. Limits is a value: the
// sandbox keeps a copy and never modifies the caller's.
//
// As JSON: {"memory_pages": 512, "call_timeout": "100ms",
// "max_output_bytes": 65536, "log_lines_per_second": 100}. Fields absent
// from the JSON keep the value they had, so unmarshalling into
// DefaultLimits() gives per-field overrides of the defaults.
type Limits struct {
	// MemoryPages is the most 64 KiB pages the module's memory may grow to;
	// beyond it memory.grow returns -1. 1..MaxMemoryPages.
	MemoryPages uint32
	// CallTimeout bounds one call, instantiation and _initialize included
	// when the call needs a fresh instance. MinCallTimeout..MaxCallTimeout.
	CallTimeout time.Duration
	// MaxOutputBytes is the most bytes one output may carry.
	// 1..MaxOutputBytes.
	MaxOutputBytes int
	// LogLinesPerSecond is the module's log rate, over all its instances:
	// log lines and stdout/stderr lines beyond it are dropped and counted.
	// 0 drops them all. 0..MaxLogLinesPerSecond.
	LogLinesPerSecond int
}

// DefaultLimits returns the defaults of ABI.md: 512 pages (32 MiB), 100 ms
// per call, 64 KiB of output, 100 log lines per second.
func DefaultLimits() Limits {
	return Limits{
		MemoryPages:       512,
		CallTimeout:       100 * time.Millisecond,
		MaxOutputBytes:    64 << 10,
		LogLinesPerSecond: 100,
	}
}

// Validate returns a *LimitsError naming the first field out of bounds, or
// nil.
func (l Limits) Validate() error {
	switch {
	case l.MemoryPages < 1 || l.MemoryPages > MaxMemoryPages:
		return &LimitsError{Field: "memory_pages", Message: fmt.Sprintf("%d is outside 1..%d", l.MemoryPages, MaxMemoryPages)}
	case l.CallTimeout < MinCallTimeout || l.CallTimeout > MaxCallTimeout:
		return &LimitsError{Field: "call_timeout", Message: fmt.Sprintf("%v is outside %v..%v", l.CallTimeout, MinCallTimeout, MaxCallTimeout)}
	case l.MaxOutputBytes < 1 || l.MaxOutputBytes > MaxOutputBytes:
		return &LimitsError{Field: "max_output_bytes", Message: fmt.Sprintf("%d is outside 1..%d", l.MaxOutputBytes, MaxOutputBytes)}
	case l.LogLinesPerSecond < 0 || l.LogLinesPerSecond > MaxLogLinesPerSecond:
		return &LimitsError{Field: "log_lines_per_second", Message: fmt.Sprintf("%d is outside 0..%d", l.LogLinesPerSecond, MaxLogLinesPerSecond)}
	}
	return nil
}

// CheckLimits returns the error Install would return for a module
// described by info (from Validate) and limits: a *LimitsError, a
// *ModuleError with ErrMemoryOverLimit, or nil. Management code calls it
// before committing an upload, so that Install cannot refuse it later.
func CheckLimits(info Info, limits Limits) error {
	if err := limits.Validate(); err != nil {
		return err
	}
	if info.MinMemoryPages > limits.MemoryPages {
		return moduleErr(ErrMemoryOverLimit, "the module starts with %d pages, its memory_pages limit is %d", info.MinMemoryPages, limits.MemoryPages)
	}
	return nil
}

type limitsJSON struct {
	MemoryPages       *uint32 `json:"memory_pages,omitempty"`
	CallTimeout       *string `json:"call_timeout,omitempty"`
	MaxOutputBytes    *int    `json:"max_output_bytes,omitempty"`
	LogLinesPerSecond *int    `json:"log_lines_per_second,omitempty"`
}

// MarshalJSON writes every field, the timeout as a Go duration string.
func (l Limits) MarshalJSON() ([]byte, error) {
	d := l.CallTimeout.String()
	return json.Marshal(limitsJSON{&l.MemoryPages, &d, &l.MaxOutputBytes, &l.LogLinesPerSecond})
}

// UnmarshalJSON sets the fields present in b and leaves the others alone.
// Unknown fields are an error; so is a call_timeout that is not a Go
// duration string such as "250ms". It does not Validate.
func (l *Limits) UnmarshalJSON(b []byte) error {
	var j limitsJSON
	if err := strictUnmarshal(b, &j); err != nil {
		return &LimitsError{Field: "limits", Message: err.Error()}
	}
	if j.CallTimeout != nil {
		d, err := time.ParseDuration(*j.CallTimeout)
		if err != nil {
			return &LimitsError{Field: "call_timeout", Message: fmt.Sprintf("%q is not a duration such as \"100ms\"", *j.CallTimeout)}
		}
		l.CallTimeout = d
	}
	if j.MemoryPages != nil {
		l.MemoryPages = *j.MemoryPages
	}
	if j.MaxOutputBytes != nil {
		l.MaxOutputBytes = *j.MaxOutputBytes
	}
	if j.LogLinesPerSecond != nil {
		l.LogLinesPerSecond = *j.LogLinesPerSecond
	}
	return nil
}
