package modules_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/coordinatord/coordinatord/wasm"
)

// These tests and benchmarks run the committed example modules in
// coordinatord's own sandbox (package wasm), as the server runs them.

// cacheDir is the sandboxes' compilation cache, shared by the tests so that
// each Go module is compiled once per run.
var cacheDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "examples-modules-cache-")
	if err != nil {
		panic(err)
	}
	cacheDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func newSandbox(t testing.TB, modules map[string]wasm.Kind) *wasm.Sandbox {
	t.Helper()
	return newSandboxLimits(t, modules, wasm.DefaultLimits())
}

func newSandboxLimits(t testing.TB, modules map[string]wasm.Kind, limits wasm.Limits) *wasm.Sandbox {
	t.Helper()
	ctx := context.Background()
	sb, err := wasm.New(ctx, wasm.Config{CacheDir: cacheDir, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sb.Close(ctx) })
	for dir, kind := range modules {
		var ex example
		for _, e := range examples {
			if e.dir == dir {
				ex = e
			}
		}
		if _, err := sb.Install(ctx, dir, kind, limits, ex.read(t)); err != nil {
			t.Fatalf("install %s: %v", dir, err)
		}
	}
	return sb
}

var (
	sampleJobResult = wasm.JobResultEvent{JobID: "job-7", Workflow: "nightly-etl", Datacenter: "dc2", Source: "manager-4",
		Stats: json.RawMessage(`{"rows":1200,"seconds":3.5}`), Time: time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)}
	sampleLease = wasm.LeaseEventPayload{Type: wasm.LeaseExpired, JobID: "job-7", Owner: "gate-3", OwnerDC: "dc3", Token: 12,
		At: time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC), Index: 4711}
	knownDCs = []string{"dc1", "dc2", "dc3", "dc4", "dc5"}
)

func sampleCorrelation(affected ...string) wasm.CorrelationEvent {
	return wasm.CorrelationEvent{Type: wasm.PartitionDetected, Episode: "ep-42", Severity: "medium", PreviousSeverity: "low",
		AffectedDatacenters: affected, HealthyDatacenters: []string{"dc1", "dc2"},
		HeldLeases: []wasm.HeldLease{{JobID: "job-7", Owner: "gate-3", OwnerDC: "dc3", Token: 12}},
		Time:       time.Date(2026, 11, 27, 10, 0, 0, 123456789, time.UTC)}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestSandboxReporters(t *testing.T) {
	sb := newSandbox(t, map[string]wasm.Kind{"go-reporter": wasm.KindReporter, "c-reporter": wasm.KindReporter})
	ctx := context.Background()
	for _, name := range []string{"go-reporter", "c-reporter"} {
		for _, call := range []wasm.Call{must(wasm.NewJobResultCall(sampleJobResult)), must(wasm.NewLeaseEventCall(sampleLease))} {
			res := sb.Call(ctx, name, call)
			if res.Err != nil {
				t.Fatalf("%s %s: %v", name, call.EventKind, res.Err)
			}
			recs, err := wasm.ParseReporterOutput(res.Output, []string{"results"})
			if err != nil || len(recs) != 1 {
				t.Fatalf("%s %s: %v, output %s", name, call.EventKind, err, res.Output)
			}
			var data map[string]any
			if err := json.Unmarshal(recs[0].Data, &data); err != nil {
				t.Fatal(err)
			}
			kindKey := "event" // the Go reporter's records name the event in "event"
			if name == "c-reporter" {
				kindKey = "kind" // the C reporter's record is the event itself
			}
			if data[kindKey] != call.EventKind || data["job_id"] != "job-7" {
				t.Errorf("%s %s: record %s", name, call.EventKind, recs[0].Data)
			}
		}
	}
}

// The Go reporter also exports coordinatord_on_correlation: it gets the
// correlation modules' event and writes it to its sink.
func TestSandboxGoReporterRecordsCorrelationEvents(t *testing.T) {
	sb := newSandbox(t, map[string]wasm.Kind{"go-reporter": wasm.KindReporter})
	res := sb.Call(context.Background(), "go-reporter", must(wasm.NewCorrelationCall(sampleCorrelation("dc3", "dc4", "dc5"))))
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	recs, err := wasm.ParseReporterOutput(res.Output, []string{"results"})
	if err != nil || len(recs) != 1 {
		t.Fatalf("%v, output %s", err, res.Output)
	}
	want := `{"event":"correlation","type":"partition_detected","episode":"ep-42","severity":"medium","previous_severity":"low",` +
		`"affected_datacenters":["dc3","dc4","dc5"],"healthy_datacenters":["dc1","dc2"],"held_jobs":["job-7"],` +
		`"held_leases":[{"job_id":"job-7","owner":"gate-3","owner_dc":"dc3","token":12}],"time":"2026-11-27T10:00:00.123456789Z"}`
	if string(recs[0].Data) != want {
		t.Errorf("record\n%s\nwant\n%s", recs[0].Data, want)
	}
}

func TestSandboxGoCorrelation(t *testing.T) {
	sb := newSandbox(t, map[string]wasm.Kind{"go-correlation": wasm.KindCorrelation})
	ctx := context.Background()
	for _, tc := range []struct {
		affected []string
		hold     bool
	}{
		{[]string{"dc3", "dc4"}, true},
		{[]string{"dc3", "dc4", "dc5"}, true},
		{[]string{"dc3"}, false},
	} {
		res := sb.Call(ctx, "go-correlation", must(wasm.NewCorrelationCall(sampleCorrelation(tc.affected...))))
		if res.Err != nil {
			t.Fatalf("%v: %v", tc.affected, res.Err)
		}
		out, err := wasm.ParseCorrelationOutput(res.Output, knownDCs)
		if err != nil {
			t.Fatalf("%v: %v (output %s)", tc.affected, err, res.Output)
		}
		if out.Hold == nil || *out.Hold != tc.hold || len(out.Notes) != 1 {
			t.Errorf("%v: output %s, want hold %v with a note", tc.affected, res.Output, tc.hold)
		}
		if tc.hold && strings.Join(out.Datacenters, ",") != strings.Join(tc.affected, ",") {
			t.Errorf("%v: holds %v", tc.affected, out.Datacenters)
		}
		if len(res.Logs) != 1 || !strings.Contains(res.Logs[0].Text, "episode=ep-42") {
			t.Errorf("%v: logs %+v", tc.affected, res.Logs)
		}
	}
}

// A handler error and a malformed event are failed calls with the guest's
// reason, and the next call succeeds.
func TestSandboxGoGuestFailure(t *testing.T) {
	sb := newSandbox(t, map[string]wasm.Kind{"go-reporter": wasm.KindReporter})
	ctx := context.Background()
	res := sb.Call(ctx, "go-reporter", wasm.Call{EventKind: wasm.EventJobResult, Event: []byte(`{"kind":"job_result","job_id":5}`), JobIDs: []string{"j"}})
	var ce *wasm.CallError
	if !errors.As(res.Err, &ce) || !strings.Contains(ce.Message, "want a string") {
		t.Fatalf("malformed event: %v", res.Err)
	}
	if res := sb.Call(ctx, "go-reporter", must(wasm.NewJobResultCall(sampleJobResult))); res.Err != nil {
		t.Fatalf("after a failure: %v", res.Err)
	}
}

// BenchmarkSandboxCall is the cost of one call of each example module on a
// pooled instance, through the sandbox (event already encoded; the output
// is not parsed), with a small event.
//
//	go test -run '^$' -bench SandboxCall ./examples/modules
func BenchmarkSandboxCall(b *testing.B) {
	sb := newSandbox(b, map[string]wasm.Kind{"go-reporter": wasm.KindReporter, "c-reporter": wasm.KindReporter,
		"go-correlation": wasm.KindCorrelation})
	ctx := context.Background()
	for _, c := range []struct {
		name string
		call wasm.Call
	}{
		{"go-reporter", must(wasm.NewJobResultCall(sampleJobResult))},
		{"go-correlation", must(wasm.NewCorrelationCall(sampleCorrelation("dc3", "dc4")))},
		{"c-reporter", must(wasm.NewJobResultCall(sampleJobResult))},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if res := sb.Call(ctx, c.name, c.call); res.Err != nil {
					b.Fatal(res.Err)
				}
			}
		})
		b.Run(c.name+"/parallel", func(b *testing.B) {
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if res := sb.Call(ctx, c.name, c.call); res.Err != nil {
						b.Error(res.Err)
						return
					}
				}
			})
		})
	}
}
