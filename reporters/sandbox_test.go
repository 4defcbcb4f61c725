package reporters

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coordinatord/coordinatord/wasm"
)

// The example modules (examples/modules, built by its build.sh).
const (
	watReporter = "../examples/modules/wat/reporter.wasm"
	// watTrap is a reporter whose handlers trap (unreachable) every time.
	watTrap    = "../examples/modules/wat/unreachable.wasm"
	goReporter = "../examples/modules/go-reporter/go-reporter.wasm"
)

// wasmCacheDir is the compilation cache of every sandbox of the tests, so
// that the Go reporter is compiled once per run, not once per test.
var wasmCacheDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "reporters-wasm-cache-")
	if err != nil {
		panic(err)
	}
	wasmCacheDir = dir
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// failureLog collects the sandbox's failure reports.
type failureLog struct {
	mu sync.Mutex
	fs []wasm.Failure
}

func (l *failureLog) hook(_ context.Context, f wasm.Failure) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.fs = append(l.fs, f)
	return nil
}

func (l *failureLog) all() []wasm.Failure {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]wasm.Failure(nil), l.fs...)
}

// sandboxWith installs modules (name → bytes) as reporters in a new
// sandbox and returns it with a registry giving each module sinks[name].
func sandboxWith(t testing.TB, failures *failureLog, modules map[string][]byte, sinks map[string][]string) (*wasm.Sandbox, Registry) {
	t.Helper()
	cfg := wasm.Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Stderr: io.Discard, CacheDir: wasmCacheDir}
	if failures != nil {
		cfg.ErrorHook = failures.hook
	}
	sb, err := wasm.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sb.Close(context.Background()) })
	var list []Reporter
	for name, b := range modules {
		// A fresh Go instance starts its runtime on its first call, which
		// under -race on a busy machine can take longer than the default
		// 100 ms: these tests are about the pipeline, not the time limit.
		limits := wasm.DefaultLimits()
		limits.CallTimeout = 5 * time.Second
		info, err := sb.Install(context.Background(), name, wasm.KindReporter, limits, b)
		if err != nil {
			t.Fatalf("install %s: %v", name, err)
		}
		specs, err := ParseSinkSpecs(sinks[name])
		if err != nil {
			t.Fatal(err)
		}
		list = append(list, Reporter{Name: name, Digest: info.Digest, Handlers: info.Handlers, Sinks: specs})
	}
	sort.Slice(list, func(i, j int) bool { return list[i].Name < list[j].Name })
	return sb, RegistryFunc(func() []Reporter { return list })
}

func readModule(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) && path == goReporter {
		// The Go example is built with a Go toolchain targeting wasip1 and
		// committed by examples/modules/build.sh; the WAT cases still run.
		t.Skipf("%v: build the examples with examples/modules/build.sh", err)
	}
	if err != nil {
		t.Fatalf("%v (build the examples with examples/modules/build.sh)", err)
	}
	return b
}

// Two reporters on one job, one of them trapping: the other's records
// reach its file sink, both outcomes are recorded per datacenter, and the
// trap report names the event's datacenter and job.
func TestSandboxReportersOneTrappingTheOtherWritesToItsSink(t *testing.T) {
	for _, good := range []struct{ name, path string }{{"wat", watReporter}, {"go", goReporter}} {
		t.Run(good.name, func(t *testing.T) {
			var failures failureLog
			sb, reg := sandboxWith(t, &failures,
				map[string][]byte{"good": readModule(t, good.path), "broken": readModule(t, watTrap)},
				map[string][]string{"good": {"results=file:good/results.jsonl"}, "broken": {"results=file:broken.jsonl"}})
			cfg := testConfig(t)
			p, err := New(cfg, SandboxInvoker(sb), reg)
			if err != nil {
				t.Fatal(err)
			}
			for _, dc := range []string{"dc1", "dc2"} {
				names, err := p.SubmitJobResult(JobResult{JobID: "job-7", Workflow: "nightly-etl", Datacenter: dc, Source: "manager-4", Stats: json.RawMessage(`{"rows": 1200}`)})
				if err != nil || strings.Join(names, ",") != "broken,good" {
					t.Fatalf("submit %s: %v %v", dc, names, err)
				}
			}
			waitFor(t, "four results", settled(p, "job-7", 4))
			if err := p.Close(); err != nil {
				t.Fatal(err)
			}
			rs := p.Results("job-7")
			for i, w := range []struct{ reporter, dc, status, kind string }{
				{"broken", "dc1", StatusError, wasm.FailTrap}, {"broken", "dc2", StatusError, wasm.FailTrap},
				{"good", "dc1", StatusOK, ""}, {"good", "dc2", StatusOK, ""},
			} {
				r := rs[i]
				if r.Reporter != w.reporter || r.Datacenter != w.dc || r.Status != w.status || r.ErrorKind != w.kind {
					t.Errorf("result %d: %+v, want %+v", i, r, w)
				}
				if r.Status == StatusOK && (r.Records != 1 || r.Elapsed <= 0) {
					t.Errorf("result %d: %d records in %s", i, r.Records, r.Elapsed)
				}
			}
			lines := readLines(t, filepath.Join(cfg.SinkDir, "good", "results.jsonl"))
			sort.Strings(lines)
			if len(lines) != 2 || !strings.Contains(lines[0], `"datacenter":"dc1"`) || !strings.Contains(lines[1], `"datacenter":"dc2"`) || !strings.Contains(lines[0], `"job_id":"job-7"`) {
				t.Fatalf("good sink: %q", lines)
			}
			if _, err := os.Stat(filepath.Join(cfg.SinkDir, "broken.jsonl")); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("the trapping reporter's sink was written: %v", err)
			}
			fs := failures.all()
			if len(fs) != 2 {
				t.Fatalf("%d failure reports, want 2: %+v", len(fs), fs)
			}
			for _, f := range fs {
				if f.Module != "broken" || f.Kind != wasm.FailTrap || len(f.JobIDs) != 1 || f.JobIDs[0] != "job-7" || len(f.Datacenters) != 1 {
					t.Errorf("failure report %+v", f)
				}
			}
		})
	}
}

// A record naming a sink the module was not given: nothing of the call is
// written, the outcome says why, and the sandbox reports it as bad output.
func TestSandboxReporterNamingAnUnknownSinkIsRecordedAndReported(t *testing.T) {
	var failures failureLog
	sb, reg := sandboxWith(t, &failures,
		map[string][]byte{"wat": readModule(t, watReporter)},
		map[string][]string{"wat": {"audit=file:audit.jsonl"}}) // it writes to "results"
	cfg := testConfig(t)
	p, err := New(cfg, SandboxInvoker(sb), reg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.SubmitJobResult(JobResult{JobID: "j", Workflow: "w", Datacenter: "dc1", Source: "s", Stats: json.RawMessage(`{}`)}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a result", settled(p, "j", 1))
	_ = p.Close()
	r := p.Results("j")[0]
	if r.Status != StatusError || r.ErrorKind != "unknown_sink" || !strings.Contains(r.Error, `"results"`) {
		t.Fatalf("result %+v", r)
	}
	if _, err := os.Stat(filepath.Join(cfg.SinkDir, "audit.jsonl")); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a record was written")
	}
	fs := failures.all()
	if len(fs) != 1 || fs[0].Kind != wasm.FailBadOutput || fs[0].JobIDs[0] != "j" {
		t.Fatalf("failure reports %+v", fs)
	}
}

func TestSandboxLeaseEventReachesTheGoReporter(t *testing.T) {
	sb, reg := sandboxWith(t, nil,
		map[string][]byte{"go": readModule(t, goReporter)},
		map[string][]string{"go": {"results=file:leases.jsonl"}})
	cfg := testConfig(t)
	p, err := New(cfg, SandboxInvoker(sb), reg)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.SubmitLeaseEvent(LeaseEvent{Type: "acquired", JobID: "job-9", Owner: "gate-1", OwnerDC: "dc3", Token: 4, Index: 77}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a result", settled(p, "job-9", 1))
	_ = p.Close()
	lines := readLines(t, filepath.Join(cfg.SinkDir, "leases.jsonl"))
	var rec struct {
		Event, Type, JobID, Owner, OwnerDC string
		Token, Index                       uint64
	}
	if len(lines) != 1 {
		t.Fatalf("lease sink %q", lines)
	}
	dec := json.NewDecoder(bytes.NewReader([]byte(strings.NewReplacer("job_id", "jobid", "owner_dc", "ownerdc").Replace(lines[0]))))
	if err := dec.Decode(&rec); err != nil {
		t.Fatal(err)
	}
	if rec.Event != "lease_event" || rec.Type != "acquired" || rec.JobID != "job-9" || rec.Owner != "gate-1" || rec.OwnerDC != "dc3" || rec.Token != 4 || rec.Index != 77 {
		t.Fatalf("lease record %+v from %q", rec, lines[0])
	}
}
