package wasm

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// Every malformed upload gets its typed error, naming the defect, and the
// node keeps answering.
func TestMalformedUploads(t *testing.T) {
	reporter := func(t testing.TB) []byte { return example(t, "reporter") }
	bytesOf := func(b []byte) func(testing.TB) []byte { return func(testing.TB) []byte { return b } }
	cut := func(name string, n int) func(testing.TB) []byte {
		return func(t testing.TB) []byte {
			b := example(t, name)
			if n < 0 {
				n = len(b) / 2
			}
			return b[:n]
		}
	}
	// The reporter with a custom section that takes it past 16 MiB.
	padded := func(t testing.TB) []byte {
		b := example(t, "reporter")
		payload := DefaultMaxModuleBytes
		size := uint32(payload + 2)
		b = append(b, 0)
		for {
			c := byte(size & 0x7f)
			size >>= 7
			if size != 0 {
				b = append(b, c|0x80)
				continue
			}
			b = append(b, c)
			break
		}
		b = append(b, 1, 'x')
		return append(b, make([]byte, payload)...)
	}
	// A header and a type section whose one entry is not a function type.
	badTypes := []byte{0, 'a', 's', 'm', 1, 0, 0, 0, 1, 3, 1, 0x61, 0}

	cases := []struct {
		name     string
		kind     Kind
		wasm     func(testing.TB) []byte
		maxBytes int
		defect   error
		code     string
		detail   string
	}{
		{"text is not wasm", KindReporter, bytesOf([]byte("(module) is text, not a binary")), 0, ErrNotWasm, "not_wasm", "magic"},
		{"no bytes at all", KindReporter, bytesOf(nil), 0, ErrNotWasm, "not_wasm", "magic"},
		{"a component is not a core module", KindReporter, bytesOf([]byte{0, 'a', 's', 'm', 0x0d, 0, 1, 0}), 0, ErrNotWasm, "not_wasm", "0d 00 01 00"},
		{"a cut-off header", KindReporter, cut("reporter", 6), 0, ErrTruncated, "module_truncated", "8-byte header"},
		{"half a module", KindReporter, cut("reporter", -1), 0, ErrTruncated, "module_truncated", "remain"},
		{"a malformed section", KindReporter, bytesOf(badTypes), 0, ErrCompile, "compile_error", ""},
		{"over the default size cap", KindReporter, padded, 0, ErrTooLarge, "module_too_large", "the limit is 16777216"},
		{"over a configured size cap", KindReporter, padded, 1 << 20, ErrTooLarge, "module_too_large", "the limit is 1048576"},
		{"no ABI marker", KindReporter, td("no_marker"), 0, ErrNoABIMarker, "no_abi_marker", "coordinatord_abi_v1"},
		{"a wrong ABI version", KindReporter, ex("wrong_abi_version"), 0, ErrWrongABIVersion, "wrong_abi_version", "exports coordinatord_abi_v2"},
		{"no exported memory", KindReporter, td("no_memory"), 0, ErrNoMemory, "no_memory", `"memory"`},
		{"no allocator", KindReporter, td("no_alloc"), 0, ErrNoAlloc, "no_alloc", "coordinatord_alloc"},
		{"no handler of its kind", KindReporter, td("correlation_only"), 0, ErrNoHandler, "no_handler",
			"must export coordinatord_on_job_result or coordinatord_on_lease_event; it exports coordinatord_on_correlation"},
		{"a reporter uploaded as correlation", KindCorrelation, reporter, 0, ErrNoHandler, "no_handler", "must export coordinatord_on_correlation"},
		{"an import the host does not offer", KindReporter, ex("unknown_import"), 0, ErrUnknownImport, "unknown_import", "env.http_get"},
		{"an imported global", KindReporter, td("import_global"), 0, ErrUnknownImport, "unknown_import", "env.counter (a global import)"},
		{"a host function with the wrong signature", KindReporter, td("bad_import_type"), 0, ErrBadImportType, "bad_import_type",
			"coordinatord.output is imported as func(i64), the host's is func(i32, i32)"},
		{"a _start export", KindReporter, ex("start_export"), 0, ErrStartFunction, "start_function", "reactor"},
		{"a handler with the wrong signature", KindReporter, ex("bad_export_type"), 0, ErrBadExportType, "bad_export_type",
			"coordinatord_on_job_result is func(i32) -> i32, want func(i32, i32) -> i32"},
		{"an unknown kind", "transformer", reporter, 0, ErrUnknownKind, "unknown_kind", `"transformer"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, logs := newSandbox(t, Config{MaxModuleBytes: tc.maxBytes})
			install(t, s, "good", KindReporter, relaxed(), example(t, "reporter"))
			for _, op := range []string{"Validate", "Install"} {
				var err error
				if op == "Validate" {
					_, err = s.Validate(context.Background(), tc.kind, tc.wasm(t))
				} else {
					_, err = s.Install(context.Background(), "upload", tc.kind, Limits{}, tc.wasm(t))
				}
				var me *ModuleError
				if !errors.Is(err, tc.defect) || !errors.As(err, &me) {
					t.Fatalf("%s: err = %v, want %v", op, err, tc.defect)
				}
				if me.Code() != tc.code || !strings.Contains(err.Error(), tc.detail) {
					t.Fatalf("%s: err = %q (code %s), want code %s naming %q", op, err, me.Code(), tc.code, tc.detail)
				}
			}
			if _, ok := s.Lookup("upload"); ok {
				t.Fatal("a refused module was installed")
			}
			if n := len(logs.records(t, "wasm call failed")); n != 0 {
				t.Fatalf("%d failure records for a refused upload", n)
			}
			healthyCall(t, s)
		})
	}
}

func TestInstallChecks(t *testing.T) {
	s, _ := newSandbox(t, Config{})
	ctx := context.Background()
	small := DefaultLimits()
	small.MemoryPages = 50
	badLimits := DefaultLimits()
	badLimits.CallTimeout = time.Minute

	_, err := s.Install(ctx, "big", KindReporter, small, testModule(t, "big_memory"))
	var me *ModuleError
	if !errors.Is(err, ErrMemoryOverLimit) || !errors.As(err, &me) || me.Code() != "memory_over_limit" ||
		!strings.Contains(err.Error(), "starts with 100 pages, its memory_pages limit is 50") {
		t.Fatalf("memory over limit: %v", err)
	}
	info, err := s.Validate(ctx, KindReporter, testModule(t, "big_memory"))
	if err != nil || info.MinMemoryPages != 100 {
		t.Fatalf("Validate: %+v %v", info, err)
	}
	if err := CheckLimits(info, small); !errors.Is(err, ErrMemoryOverLimit) {
		t.Fatalf("CheckLimits = %v", err)
	}
	if err := CheckLimits(info, DefaultLimits()); err != nil {
		t.Fatalf("CheckLimits = %v", err)
	}

	for _, name := range []string{"", "has space", "slash/y", strings.Repeat("x", 65)} {
		if _, err := s.Install(ctx, name, KindReporter, Limits{}, example(t, "reporter")); !errors.Is(err, ErrInvalidName) {
			t.Errorf("name %q: %v", name, err)
		}
	}
	_, err = s.Install(ctx, "m", KindReporter, badLimits, example(t, "reporter"))
	var le *LimitsError
	if !errors.As(err, &le) || le.Field != "call_timeout" || le.Code() != "invalid_limits" {
		t.Fatalf("bad limits: %v", err)
	}
}

func TestValidateDescribesTheModule(t *testing.T) {
	s, _ := newSandbox(t, Config{})
	b := example(t, "reporter")
	info, err := s.Validate(context.Background(), KindReporter, b)
	if err != nil {
		t.Fatal(err)
	}
	if len(info.Digest) != 64 || info.Size != len(b) || info.Kind != KindReporter || info.MinMemoryPages != 1 ||
		strings.Join(info.Handlers, ",") != HandlerJobResult+","+HandlerLeaseEvent ||
		strings.Join(info.Imports, ",") != "coordinatord.log,coordinatord.output" {
		t.Fatalf("info = %+v", info)
	}
	if len(s.Installed()) != 0 {
		t.Fatal("Validate installed something")
	}
	// The same module under another name is the same digest.
	got := install(t, s, "x", KindReporter, relaxed(), b)
	if got.Digest != info.Digest {
		t.Fatalf("digest %s != %s", got.Digest, info.Digest)
	}
}

func TestSectionScanner(t *testing.T) {
	// uleb: a value, a cut-off value, an over-long one.
	if v, n := uleb([]byte{0xe5, 0x8e, 0x26}); v != 624485 || n != 3 {
		t.Fatalf("uleb = %d, %d", v, n)
	}
	if _, n := uleb([]byte{0x80, 0x80}); n != 0 {
		t.Fatalf("cut-off uleb n = %d", n)
	}
	if _, n := uleb([]byte{0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01}); n != -1 {
		t.Fatalf("over-long uleb n = %d", n)
	}
	imports, merr := checkBytes(example(t, "unknown_import"), DefaultMaxModuleBytes)
	if merr != nil || len(imports) != 2 || imports[1] != (rawImport{"env", "http_get", "function"}) {
		t.Fatalf("imports = %+v, %v", imports, merr)
	}
}
