package wasm

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
)

// benchModules are the reporters the call benchmarks run: the WAT one
// always, the C and Go guests when their builds are present.
func benchModules(b *testing.B) map[string][]byte {
	mods := map[string][]byte{"wat-reporter": example(b, "reporter")}
	for name, path := range map[string]string{
		"c-reporter":  filepath.Join("..", "examples", "modules", "c-reporter", "c-reporter.wasm"),
		"go-reporter": goReporterPath,
	} {
		if wasm, err := os.ReadFile(path); err == nil {
			mods[name] = wasm
		}
	}
	return mods
}

func benchSandbox(b *testing.B, cfg Config) *Sandbox {
	b.Helper()
	cfg.Logger = slog.New(slog.NewJSONHandler(io.Discard, nil))
	s, err := New(context.Background(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close(context.Background()) })
	return s
}

func benchInstall(b *testing.B, s *Sandbox, name string, wasm []byte) {
	b.Helper()
	if _, err := s.Install(context.Background(), name, KindReporter, relaxed(), wasm); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkCallPooled is the overhead of a call on a pooled instance for a
// small job result event (~190 bytes): alloc, copy, handler, output.
func BenchmarkCallPooled(b *testing.B) {
	for name, wasm := range benchModules(b) {
		b.Run(name, func(b *testing.B) {
			s := benchSandbox(b, Config{})
			benchInstall(b, s, "m", wasm)
			c := jobResult(b, "dc2", "job-7")
			ctx := context.Background()
			if res := s.Call(ctx, "m", c); res.Err != nil { // warm the pool
				b.Fatal(res.Err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if res := s.Call(ctx, "m", c); res.Err != nil {
					b.Fatal(res.Err)
				}
			}
		})
	}
}

// BenchmarkCallPooledParallel is the same from GOMAXPROCS goroutines.
func BenchmarkCallPooledParallel(b *testing.B) {
	s := benchSandbox(b, Config{})
	benchInstall(b, s, "m", example(b, "reporter"))
	c := jobResult(b, "dc2", "job-7")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		for pb.Next() {
			if res := s.Call(ctx, "m", c); res.Err != nil {
				b.Error(res.Err)
				return
			}
		}
	})
}

// BenchmarkTrapAndReplace is a call that traps: the trap, its report (one
// JSON log record, to io.Discard) and the fresh instance the next call
// needs. Minus BenchmarkCallPooled/wat-reporter it is the cost of
// replacing an instance after a trap.
func BenchmarkTrapAndReplace(b *testing.B) {
	s := benchSandbox(b, Config{})
	benchInstall(b, s, "bad", example(b, "unreachable"))
	c := jobResult(b, "dc2", "job-7")
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if res := s.Call(ctx, "bad", c); res.Err == nil {
			b.Fatal("no trap")
		}
	}
}

// BenchmarkFreshInstance is instantiation plus _initialize, what replacing
// an instance costs for each guest (for Go, the Go runtime's start).
func BenchmarkFreshInstance(b *testing.B) {
	for name, wasm := range benchModules(b) {
		b.Run(name, func(b *testing.B) {
			s := benchSandbox(b, Config{})
			benchInstall(b, s, "m", wasm)
			m, _ := s.acquire("m")
			defer s.calls.Done()
			defer m.end(nil, false)
			st := &callState{m: m, Context: context.Background()}
			b.ReportAllocs()
			for b.Loop() {
				inst, err := m.instantiate(st)
				if err != nil {
					b.Fatal(err)
				}
				m.closeInstance(inst)
			}
		})
	}
}

// BenchmarkColdStart is a node start for one module: New, Install, the
// first Call, Close; compiling ("no-cache") or reading the compiled code
// from a CacheDir filled beforehand ("disk-cache").
func BenchmarkColdStart(b *testing.B) {
	for name, wasm := range benchModules(b) {
		for _, cached := range []bool{false, true} {
			mode := "no-cache"
			if cached {
				mode = "disk-cache"
			}
			b.Run(mode+"/"+name, func(b *testing.B) {
				dir := ""
				if cached {
					dir = b.TempDir()
					s := benchSandbox(b, Config{CacheDir: dir})
					benchInstall(b, s, "m", wasm)
				}
				c := jobResult(b, "dc2", "job-7")
				ctx := context.Background()
				b.ReportAllocs()
				for b.Loop() {
					s, err := New(ctx, Config{CacheDir: dir, Logger: slog.New(slog.NewJSONHandler(io.Discard, nil))})
					if err != nil {
						b.Fatal(err)
					}
					if _, err := s.Install(ctx, "m", KindReporter, relaxed(), wasm); err != nil {
						b.Fatal(err)
					}
					if res := s.Call(ctx, "m", c); res.Err != nil {
						b.Fatal(res.Err)
					}
					if err := s.Close(ctx); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
