package modules_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
)

// example is one committed example module.
type example struct {
	dir      string   // under examples/modules
	handlers []string // the handler exports it must have
	// sources are the paths (relative to the repository root) whose source
	// files went into the build, as build.sh hashes them.
	sources []string
}

var examples = []example{
	{"go-reporter", []string{"coordinatord_on_job_result", "coordinatord_on_lease_event", "coordinatord_on_correlation"},
		[]string{"examples/modules/go-reporter", "wasm/guest"}},
	{"go-correlation", []string{"coordinatord_on_correlation"},
		[]string{"examples/modules/go-correlation", "wasm/guest"}},
	{"c-reporter", []string{"coordinatord_on_job_result", "coordinatord_on_lease_event"},
		[]string{"examples/modules/c-reporter"}},
}

func (e example) wasm() string { return filepath.Join(e.dir, e.dir+".wasm") }

func (e example) read(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile(e.wasm())
	if err != nil {
		t.Fatalf("%v (run examples/modules/build.sh)", err)
	}
	return b
}

// repoRoot is the repository root, seen from this package's directory.
const repoRoot = "../.."

// sourceManifest returns what build.sh writes to <dir>/sources.sha256: one
// `sha256sum` line per source file (.go but not _test.go, .c, .h) under the
// example's source paths, sorted by path, paths relative to the repository
// root.
func sourceManifest(e example) (string, error) {
	var paths []string
	for _, root := range e.sources {
		err := filepath.WalkDir(filepath.Join(repoRoot, root), func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			name := d.Name()
			if (strings.HasSuffix(name, ".go") && !strings.HasSuffix(name, "_test.go")) ||
				strings.HasSuffix(name, ".c") || strings.HasSuffix(name, ".h") {
				rel, err := filepath.Rel(repoRoot, p)
				if err != nil {
					return err
				}
				paths = append(paths, filepath.ToSlash(rel))
			}
			return nil
		})
		if err != nil {
			return "", err
		}
	}
	slices.Sort(paths)
	var b strings.Builder
	for _, p := range paths {
		data, err := os.ReadFile(filepath.Join(repoRoot, p))
		if err != nil {
			return "", err
		}
		sum := sha256.Sum256(data)
		fmt.Fprintf(&b, "%s  %s\n", hex.EncodeToString(sum[:]), p)
	}
	return b.String(), nil
}

// instance is one instantiated module with the coordinatord host functions
// recording what the guest passes them.
type instance struct {
	mod     api.Module
	alloc   api.Function
	outputs [][]byte
	logs    []string
	fail    string
}

type callResult struct {
	code   uint32
	output []byte // nil if output was not called
	logs   []string
	fail   string
}

// compilationCache is shared by the tests' runtimes, and on disk in the
// directory the tests' sandboxes use, so that each module is compiled once
// per run (a Go module takes a second or more, over ten with -race).
var compilationCache = sync.OnceValue(func() wazero.CompilationCache {
	c, err := wazero.NewCompilationCacheWithDir(cacheDir)
	if err != nil {
		panic(err)
	}
	return c
})

// newRuntime returns a wazero runtime with WASI and the coordinatord host
// module; the host functions record into *cur.
func newRuntime(t testing.TB, cur **instance) wazero.Runtime {
	t.Helper()
	ctx := context.Background()
	r := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfig().WithCloseOnContextDone(true).WithCompilationCache(compilationCache()))
	t.Cleanup(func() { r.Close(ctx) })
	wasi_snapshot_preview1.MustInstantiate(ctx, r)
	read := func(m api.Module, ptr, n uint32) []byte {
		b, ok := m.Memory().Read(ptr, n)
		if !ok {
			panic(fmt.Sprintf("guest passed (%d, %d) outside its memory", ptr, n))
		}
		return append([]byte(nil), b...)
	}
	_, err := r.NewHostModuleBuilder("coordinatord").
		NewFunctionBuilder().WithFunc(func(_ context.Context, m api.Module, ptr, n uint32) {
		(*cur).outputs = append((*cur).outputs, read(m, ptr, n))
	}).Export("output").
		NewFunctionBuilder().WithFunc(func(_ context.Context, m api.Module, level, ptr, n uint32) {
		(*cur).logs = append((*cur).logs, fmt.Sprintf("%d %s", level, read(m, ptr, n)))
	}).Export("log").
		NewFunctionBuilder().WithFunc(func(_ context.Context, m api.Module, ptr, n uint32) {
		(*cur).fail = string(read(m, ptr, n))
	}).Export("fail").
		Instantiate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// instantiate compiles and instantiates bin (calling _initialize if exported).
func instantiate(t testing.TB, bin []byte) *instance {
	t.Helper()
	ctx := context.Background()
	in := &instance{}
	r := newRuntime(t, &in)
	cm, err := r.CompileModule(ctx, bin)
	if err != nil {
		t.Fatal(err)
	}
	cfg := wazero.NewModuleConfig().WithName("").WithStartFunctions()
	if _, ok := cm.ExportedFunctions()["_initialize"]; ok {
		cfg = cfg.WithStartFunctions("_initialize")
	}
	mod, err := r.InstantiateModule(ctx, cm, cfg)
	if err != nil {
		t.Fatal(err)
	}
	in.mod = mod
	in.alloc = mod.ExportedFunction("coordinatord_alloc")
	return in
}

// call runs one handler call the way the host does (wasm/ABI.md, "One call").
func (in *instance) call(t testing.TB, handler string, event []byte) callResult {
	t.Helper()
	ctx := context.Background()
	in.outputs, in.logs, in.fail = nil, nil, ""
	res, err := in.alloc.Call(ctx, uint64(len(event)))
	if err != nil {
		t.Fatalf("coordinatord_alloc(%d): %v", len(event), err)
	}
	p := uint32(res[0])
	if p == 0 || !in.mod.Memory().Write(p, event) {
		t.Fatalf("coordinatord_alloc(%d) = %d: not writable", len(event), p)
	}
	fn := in.mod.ExportedFunction(handler)
	if fn == nil {
		t.Fatalf("no export %s", handler)
	}
	res, err = fn.Call(ctx, uint64(p), uint64(len(event)))
	if err != nil {
		t.Fatalf("%s: %v", handler, err)
	}
	if len(in.outputs) > 1 {
		t.Fatalf("%s called output %d times", handler, len(in.outputs))
	}
	cr := callResult{code: uint32(res[0]), logs: in.logs, fail: in.fail}
	if len(in.outputs) == 1 {
		cr.output = in.outputs[0]
	}
	return cr
}
