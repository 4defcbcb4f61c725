package wasm

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
)

// Info describes a module that passed validation.
type Info struct {
	// Digest is the hex sha256 of the module's bytes.
	Digest string `json:"digest"`
	// Size is its length in bytes.
	Size int `json:"size"`
	// Kind is the kind it was validated for.
	Kind Kind `json:"kind"`
	// Handlers are the handlers of its kind it exports, in ABI order. The
	// host calls only these.
	Handlers []string `json:"handlers"`
	// Imports are its imports as "module.name", sorted.
	Imports []string `json:"imports"`
	// MinMemoryPages is the size its memory starts with; Install refuses
	// limits with fewer MemoryPages (see CheckLimits).
	MinMemoryPages uint32 `json:"min_memory_pages"`
}

// HasHandler reports whether the module exports handler.
func (i Info) HasHandler(handler string) bool { return slices.Contains(i.Handlers, handler) }

// wasmHeader is the magic and version of a WebAssembly 1.0 binary.
var wasmHeader = []byte{0x00, 'a', 's', 'm', 0x01, 0x00, 0x00, 0x00}

// rawImport is one entry of the import section, read by scanSections.
type rawImport struct {
	module, name, kind string
}

// checkBytes runs the checks that need no compiler, in upload order: size
// cap, magic and version, section framing. It returns the imports when the
// import section could be read.
func checkBytes(b []byte, maxBytes int) ([]rawImport, *ModuleError) {
	if len(b) > maxBytes {
		return nil, moduleErr(ErrTooLarge, "%d bytes, the limit is %d", len(b), maxBytes)
	}
	if len(b) < 4 || !bytes.Equal(b[:4], wasmHeader[:4]) {
		return nil, moduleErr(ErrNotWasm, "the bytes do not start with the magic \\0asm (starts with %q)", head(b, 8))
	}
	if len(b) < 8 {
		return nil, moduleErr(ErrTruncated, "%d bytes, shorter than the 8-byte header", len(b))
	}
	if !bytes.Equal(b[4:8], wasmHeader[4:8]) {
		return nil, moduleErr(ErrNotWasm, "binary version % x, want 01 00 00 00 (a core module, not a component)", b[4:8])
	}
	return scanSections(b)
}

// scanSections walks the section headers: a section that runs past the end
// is ErrTruncated. It reads the import section on the way (best effort: a
// malformed one is left to the compiler to report).
func scanSections(b []byte) ([]rawImport, *ModuleError) {
	var imports []rawImport
	pos := 8
	for pos < len(b) {
		id := b[pos]
		start := pos
		pos++
		size, n := uleb(b[pos:])
		if n == 0 {
			return nil, moduleErr(ErrTruncated, "the header of section %d at offset %d is cut off", id, start)
		}
		if n < 0 {
			return nil, moduleErr(ErrCompile, "section %d at offset %d has a malformed size", id, start)
		}
		pos += n
		if size > uint64(len(b)-pos) {
			return nil, moduleErr(ErrTruncated, "section %d at offset %d declares %d bytes but only %d remain", id, start, size, len(b)-pos)
		}
		if id == 2 {
			imports, _ = parseImports(b[pos : pos+int(size)])
		}
		pos += int(size)
	}
	return imports, nil
}

// uleb reads an unsigned LEB128 of at most 64 bits. n is the bytes read, 0
// when b ends first, -1 when the encoding is too long.
func uleb(b []byte) (v uint64, n int) {
	var shift uint
	for i, c := range b {
		if i == 10 {
			return 0, -1
		}
		v |= uint64(c&0x7f) << shift
		if c&0x80 == 0 {
			return v, i + 1
		}
		shift += 7
	}
	return 0, 0
}

// parseImports reads an import section's entries (names and kinds).
func parseImports(b []byte) ([]rawImport, bool) {
	pos := 0
	next := func() (uint64, bool) {
		v, n := uleb(b[pos:])
		if n <= 0 {
			return 0, false
		}
		pos += n
		return v, true
	}
	name := func() (string, bool) {
		l, ok := next()
		if !ok || l > uint64(len(b)-pos) {
			return "", false
		}
		s := string(b[pos : pos+int(l)])
		pos += int(l)
		return s, true
	}
	byteAt := func() (byte, bool) {
		if pos >= len(b) {
			return 0, false
		}
		pos++
		return b[pos-1], true
	}
	limits := func() bool {
		flags, ok := byteAt()
		if !ok {
			return false
		}
		if _, ok := next(); !ok {
			return false
		}
		if flags&1 != 0 {
			_, ok = next()
		}
		return ok
	}
	count, ok := next()
	if !ok {
		return nil, false
	}
	var out []rawImport
	for i := uint64(0); i < count; i++ {
		mod, ok1 := name()
		field, ok2 := name()
		kind, ok3 := byteAt()
		if !ok1 || !ok2 || !ok3 {
			return out, false
		}
		var k string
		switch kind {
		case 0:
			k, ok = "function", skip(next)
		case 1:
			_, ok = byteAt()
			k, ok = "table", ok && limits()
		case 2:
			k, ok = "memory", limits()
		case 3:
			_, ok = byteAt()
			_, ok2 := byteAt()
			k, ok = "global", ok && ok2
		case 4:
			_, ok = byteAt()
			k, ok = "tag", ok && skip(next)
		default:
			return out, false
		}
		if !ok {
			return out, false
		}
		out = append(out, rawImport{mod, field, k})
	}
	return out, true
}

func skip(next func() (uint64, bool)) bool { _, ok := next(); return ok }

func head(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

// sig is a function signature.
type sig struct {
	params, results []api.ValueType
}

func sigOf(d api.FunctionDefinition) sig { return sig{d.ParamTypes(), d.ResultTypes()} }

func (s sig) equal(o sig) bool {
	return slices.Equal(s.params, o.params) && slices.Equal(s.results, o.results)
}

func (s sig) String() string {
	names := func(ts []api.ValueType) string {
		out := make([]string, len(ts))
		for i, t := range ts {
			out[i] = api.ValueTypeName(t)
		}
		return strings.Join(out, ", ")
	}
	str := "func(" + names(s.params) + ")"
	if len(s.results) > 0 {
		str += " -> " + names(s.results)
	}
	return str
}

var (
	i32         = api.ValueTypeI32
	sigMarker   = sig{}
	sigAlloc    = sig{[]api.ValueType{i32}, []api.ValueType{i32}}
	sigHandler  = sig{[]api.ValueType{i32, i32}, []api.ValueType{i32}}
	sigInit     = sig{}
	abiPrefix   = "coordinatord_abi_"
	allHandlers = []string{HandlerCorrelation, HandlerJobResult, HandlerLeaseEvent}
)

// hostFuncs maps import module → function name → signature: what the host
// offers a guest.
type hostFuncs map[string]map[string]sig

// checkABI checks a compiled module's exports and imports against ABI v1
// for kind, and describes it.
func checkABI(kind Kind, cm wazero.CompiledModule, raw []rawImport, host hostFuncs, b []byte) (Info, *ModuleError) {
	funcs := cm.ExportedFunctions()
	if _, ok := funcs["_start"]; ok {
		return Info{}, moduleErr(ErrStartFunction, "it is a WASI command; build it as a reactor (library): Go -buildmode=c-shared, C -mexec-model=reactor")
	}

	// The version marker.
	var others []string
	for name := range funcs {
		if strings.HasPrefix(name, abiPrefix) && name != ABIMarker {
			others = append(others, name)
		}
	}
	slices.Sort(others)
	if len(others) > 0 {
		return Info{}, moduleErr(ErrWrongABIVersion, "exports %s; this host speaks only %s", strings.Join(others, ", "), ABIMarker)
	}
	marker, ok := funcs[ABIMarker]
	if !ok {
		return Info{}, moduleErr(ErrNoABIMarker, "exports no function %s", ABIMarker)
	}
	if s := sigOf(marker); !s.equal(sigMarker) {
		return Info{}, moduleErr(ErrBadExportType, "%s is %v, want %v", ABIMarker, s, sigMarker)
	}

	// Memory and allocator.
	mem, ok := cm.ExportedMemories()[ExportMemory]
	if !ok {
		detail := `exports no memory named "memory"`
		if len(cm.ImportedMemories()) > 0 {
			detail += " (it imports its memory; export it instead)"
		}
		return Info{}, moduleErr(ErrNoMemory, "%s", detail)
	}
	alloc, ok := funcs[ExportAlloc]
	if !ok {
		return Info{}, moduleErr(ErrNoAlloc, "exports no function %s", ExportAlloc)
	}
	if s := sigOf(alloc); !s.equal(sigAlloc) {
		return Info{}, moduleErr(ErrBadExportType, "%s is %v, want %v", ExportAlloc, s, sigAlloc)
	}
	if init, ok := funcs[ExportInitialize]; ok {
		if s := sigOf(init); !s.equal(sigInit) {
			return Info{}, moduleErr(ErrBadExportType, "%s is %v, want %v", ExportInitialize, s, sigInit)
		}
	}

	// Handlers.
	var handlers []string
	for _, h := range HandlersOf(kind) {
		d, ok := funcs[h]
		if !ok {
			continue
		}
		if s := sigOf(d); !s.equal(sigHandler) {
			return Info{}, moduleErr(ErrBadExportType, "%s is %v, want %v", h, s, sigHandler)
		}
		handlers = append(handlers, h)
	}
	if !slices.ContainsFunc(handlers, func(h string) bool { return slices.Contains(MainHandlersOf(kind), h) }) {
		detail := fmt.Sprintf("a %s module must export %s", kind, strings.Join(MainHandlersOf(kind), " or "))
		for _, h := range allHandlers {
			if _, ok := funcs[h]; ok {
				detail += fmt.Sprintf("; it exports %s: was it meant to be uploaded as another kind?", h)
				break
			}
		}
		return Info{}, moduleErr(ErrNoHandler, "%s", detail)
	}

	// Imports: functions against what the host offers, anything else refused.
	var imports []string
	for _, d := range cm.ImportedFunctions() {
		mod, name, _ := d.Import()
		imports = append(imports, mod+"."+name)
		offered, ok := host[mod][name]
		if !ok {
			return Info{}, moduleErr(ErrUnknownImport, "%s.%s: the host offers %s", mod, name, offeredModules(host, mod))
		}
		if s := sigOf(d); !s.equal(offered) {
			return Info{}, moduleErr(ErrBadImportType, "%s.%s is imported as %v, the host's is %v", mod, name, s, offered)
		}
	}
	for _, r := range raw {
		if r.kind != "function" {
			return Info{}, moduleErr(ErrUnknownImport, "%s.%s (a %s import): the host offers functions only", r.module, r.name, r.kind)
		}
	}
	slices.Sort(imports)
	imports = slices.Compact(imports) // Go imports fd_write twice

	sum := sha256.Sum256(b)
	return Info{
		Digest:         hex.EncodeToString(sum[:]),
		Size:           len(b),
		Kind:           kind,
		Handlers:       handlers,
		Imports:        imports,
		MinMemoryPages: mem.Min(),
	}, nil
}

// offeredModules says what the host offers, for an unknown-import message.
func offeredModules(host hostFuncs, mod string) string {
	if fns, ok := host[mod]; ok {
		names := make([]string, 0, len(fns))
		for n := range fns {
			names = append(names, n)
		}
		slices.Sort(names)
		if mod == HostModule {
			return mod + "." + strings.Join(names, ", "+mod+".")
		}
		return "the WASI preview1 functions (" + strings.Join(names, ", ") + ")"
	}
	return "only the modules " + HostModule + " and wasi_snapshot_preview1"
}
