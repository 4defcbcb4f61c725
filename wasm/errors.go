package wasm

import (
	"errors"
	"fmt"
	"strings"
)

// Upload defects. Validate and Install return them inside a *ModuleError;
// callers test with errors.Is (any defect) or errors.As (*ModuleError, for
// Code and Detail).
var (
	// ErrNotWasm: the bytes do not start with the WebAssembly 1.0 magic and
	// version ("\0asm", 1).
	ErrNotWasm = errors.New("not a WebAssembly 1.0 module")
	// ErrTooLarge: the module is over Config.MaxModuleBytes.
	ErrTooLarge = errors.New("module too large")
	// ErrTruncated: a section runs past the end of the bytes.
	ErrTruncated = errors.New("module truncated")
	// ErrCompile: the binary is malformed or invalid and does not compile.
	ErrCompile = errors.New("module does not compile")
	// ErrNoABIMarker: the module exports no coordinatord_abi_vN marker.
	ErrNoABIMarker = errors.New("no ABI version marker (export coordinatord_abi_v1)")
	// ErrWrongABIVersion: the module exports a marker of a version this host
	// does not speak; the detail names the marker found.
	ErrWrongABIVersion = errors.New("wrong ABI version")
	// ErrNoMemory: the module exports no memory named "memory".
	ErrNoMemory = errors.New(`no exported memory "memory"`)
	// ErrNoAlloc: the module exports no coordinatord_alloc.
	ErrNoAlloc = errors.New("no coordinatord_alloc export")
	// ErrNoHandler: the module exports none of its kind's handlers; the
	// message names them.
	ErrNoHandler = errors.New("no handler for the module's kind")
	// ErrUnknownImport: the module imports something the host does not
	// offer; the detail names module.name.
	ErrUnknownImport = errors.New("unknown import")
	// ErrBadImportType: the module imports a host function with another
	// signature than the host's.
	ErrBadImportType = errors.New("import with the wrong signature")
	// ErrStartFunction: the module exports _start (it is a WASI command,
	// not a reactor).
	ErrStartFunction = errors.New("module exports _start")
	// ErrBadExportType: an ABI export has the wrong type or signature.
	ErrBadExportType = errors.New("ABI export with the wrong signature")
	// ErrMemoryOverLimit: the module's initial memory is larger than the
	// memory_pages limit it is installed with.
	ErrMemoryOverLimit = errors.New("initial memory over the module's page limit")
	// ErrUnknownKind: the kind is neither "correlation" nor "reporter".
	ErrUnknownKind = errors.New("unknown module kind")
	// ErrInvalidName: the module name is empty, longer than 64 bytes or has
	// a character outside [A-Za-z0-9._-].
	ErrInvalidName = errors.New("invalid module name")
)

// moduleCodes maps each defect to its stable API code. Never change a code
// once released.
var moduleCodes = []struct {
	err  error
	code string
}{
	{ErrNotWasm, "not_wasm"},
	{ErrTooLarge, "module_too_large"},
	{ErrTruncated, "module_truncated"},
	{ErrCompile, "compile_error"},
	{ErrNoABIMarker, "no_abi_marker"},
	{ErrWrongABIVersion, "wrong_abi_version"},
	{ErrNoMemory, "no_memory"},
	{ErrNoAlloc, "no_alloc"},
	{ErrNoHandler, "no_handler"},
	{ErrUnknownImport, "unknown_import"},
	{ErrBadImportType, "bad_import_type"},
	{ErrStartFunction, "start_function"},
	{ErrBadExportType, "bad_export_type"},
	{ErrMemoryOverLimit, "memory_over_limit"},
	{ErrUnknownKind, "unknown_kind"},
	{ErrInvalidName, "invalid_module_name"},
}

// ModuleError is an upload defect: the module is refused and nothing is
// installed. Defect is one of the Err* sentinels above; Detail names what
// was found (the import, the marker, the compiler's message).
type ModuleError struct {
	Defect error
	Detail string
}

// Error returns the defect and its detail.
func (e *ModuleError) Error() string {
	if e.Detail == "" {
		return "wasm module: " + e.Defect.Error()
	}
	return "wasm module: " + e.Defect.Error() + ": " + e.Detail
}

// Unwrap returns the defect, for errors.Is.
func (e *ModuleError) Unwrap() error { return e.Defect }

// Code returns the defect's stable snake_case code, such as "not_wasm" or
// "unknown_import" ("invalid_module" for a defect this package does not
// define).
func (e *ModuleError) Code() string {
	for _, c := range moduleCodes {
		if errors.Is(e.Defect, c.err) {
			return c.code
		}
	}
	return "invalid_module"
}

func moduleErr(defect error, format string, args ...any) *ModuleError {
	return &ModuleError{Defect: defect, Detail: fmt.Sprintf(format, args...)}
}

// Call failure kinds: CallError.Kind, the "kind" label of
// coordinatord_wasm_failures_total and the "result" label of
// coordinatord_wasm_calls_total. Stable; never change one once released.
const (
	// FailTrap: the guest trapped (unreachable, out-of-bounds access, stack
	// overflow, a second output, proc_exit, ...).
	FailTrap = "trap"
	// FailTimeout: the call ran past its time limit (or the caller's
	// deadline) and was stopped.
	FailTimeout = "timeout"
	// FailCanceled: the caller cancelled the call's context.
	FailCanceled = "canceled"
	// FailGuestError: the handler returned non-zero; Message is the text it
	// gave to fail, if any.
	FailGuestError = "guest_error"
	// FailBadOutput: the output is not valid JSON, or (reported by the
	// caller through ReportBadOutput) does not fit the kind's schema.
	FailBadOutput = "bad_output"
	// FailOutputTooLarge: the guest passed more than its output limit.
	FailOutputTooLarge = "output_too_large"
	// FailNoHandler: the module does not export the handler called.
	FailNoHandler = "no_handler"
	// FailNotInstalled: no module of that name is installed (or the sandbox
	// is closed).
	FailNotInstalled = "not_installed"
	// FailAllocFailed: coordinatord_alloc returned 0 or an address whose
	// range is outside memory.
	FailAllocFailed = "alloc_failed"
)

// CallError is why a Call failed. Every CallError a Call returns has been
// reported once (log record, metric) by the sandbox.
type CallError struct {
	// Kind is one of the Fail* constants.
	Kind string
	// Module is the module's name, Digest its hex sha256.
	Module, Digest string
	// Handler is the export that was called.
	Handler string
	// Message names what went wrong: the trap, the limit, the guest's fail
	// text.
	Message string
	// Stack is the guest's stack at the trap, innermost frame first (empty
	// when the failure is not a trap).
	Stack []string
}

// Error returns the module, handler, kind and message.
func (e *CallError) Error() string {
	var b strings.Builder
	b.WriteString("wasm module ")
	b.WriteString(fmt.Sprintf("%q", e.Module))
	if e.Digest != "" {
		b.WriteString(" (")
		b.WriteString(shortDigest(e.Digest))
		b.WriteString(")")
	}
	if e.Handler != "" {
		b.WriteString(" ")
		b.WriteString(e.Handler)
	}
	b.WriteString(": ")
	b.WriteString(e.Kind)
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	return b.String()
}

// Code returns Kind, the stable snake_case code of the failure.
func (e *CallError) Code() string { return e.Kind }

// LimitsError is an invalid Limits value; Field is its JSON name.
type LimitsError struct {
	Field   string
	Message string
}

// Error names the field and the bound it breaks.
func (e *LimitsError) Error() string { return "wasm limits: " + e.Field + ": " + e.Message }

// Code returns "invalid_limits".
func (e *LimitsError) Code() string { return "invalid_limits" }

func shortDigest(d string) string {
	if len(d) > 12 {
		return d[:12]
	}
	return d
}
