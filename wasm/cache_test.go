package wasm

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// cacheEntry is a file of the compilation cache directory.
type cacheEntry struct {
	size    int64
	modTime time.Time
}

func listCache(t testing.TB, dir string) map[string]cacheEntry {
	t.Helper()
	out := map[string]cacheEntry{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		out[p] = cacheEntry{fi.Size(), fi.ModTime()}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// A second sandbox on the same CacheDir finds the code the first compiled:
// the directory has entries after the first, and the second adds or
// rewrites none while validating, installing and calling the same modules.
func TestCompilationCacheOnDiskIsReused(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	modules := map[string][]byte{
		"reporter": example(t, "reporter"),
		"bomb":     example(t, "memory_bomb"),
	}
	if b, err := os.ReadFile(goReporterPath); err == nil && !raceEnabled {
		modules["go-reporter"] = b
	}
	use := func(s *Sandbox) time.Duration {
		start := time.Now()
		for name, b := range modules {
			if _, err := s.Validate(ctx, KindReporter, b); err != nil {
				t.Fatal(err)
			}
			small := DefaultLimits()
			small.MemoryPages = 1024 // another runtime than validation's
			install(t, s, name, KindReporter, small, b)
		}
		elapsed := time.Since(start)
		if res := s.Call(ctx, "reporter", jobResult(t, "dc1", "job-1")); res.Err != nil {
			t.Fatal(res.Err)
		}
		return elapsed
	}

	first, _ := newSandbox(t, Config{CacheDir: dir})
	cold := use(first)
	if err := first.Close(ctx); err != nil {
		t.Fatal(err)
	}
	entries := listCache(t, dir)
	if len(entries) < len(modules) {
		t.Fatalf("cache dir has %d entries after compiling %d modules: %v", len(entries), len(modules), entries)
	}

	second, _ := newSandbox(t, Config{CacheDir: dir})
	warm := use(second)
	after := listCache(t, dir)
	if len(after) != len(entries) {
		t.Fatalf("the second sandbox added cache entries: %d → %d", len(entries), len(after))
	}
	for p, e := range entries {
		if after[p] != e {
			t.Fatalf("the second sandbox rewrote %s", p)
		}
	}
	t.Logf("validate+install of %d modules: %v compiling, %v from the disk cache", len(modules), cold, warm)
}

// goReporterPath is the Go guest example, when the SDK's build has made it.
var goReporterPath = filepath.Join("..", "examples", "modules", "go-reporter", "go-reporter.wasm")
