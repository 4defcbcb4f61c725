package reporters

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// funcInvoker runs a Go function as a module, per module name.
type funcInvoker struct {
	mu  sync.Mutex
	fns map[string]func(ctx context.Context, inv Invocation) Outcome
}

func (f *funcInvoker) Invoke(ctx context.Context, r Reporter, inv Invocation) Outcome {
	module := r.Name
	f.mu.Lock()
	fn := f.fns[module]
	f.mu.Unlock()
	if fn == nil {
		return Outcome{Err: fmt.Errorf("module %q is not installed", module), ErrKind: "not_installed"}
	}
	return fn(ctx, inv)
}

// echoTo answers with one record per event, for sink, holding the event.
func echoTo(sink string) func(context.Context, Invocation) Outcome {
	return func(_ context.Context, inv Invocation) Outcome {
		data := append(json.RawMessage(nil), inv.Event...)
		return Outcome{Records: []Record{{Sink: sink, Data: data}}, Elapsed: time.Microsecond}
	}
}

func trap(context.Context, Invocation) Outcome {
	return Outcome{Err: errors.New("wasm error: unreachable"), ErrKind: "trap", Elapsed: time.Microsecond}
}

func testConfig(t *testing.T) Config {
	cfg := DefaultConfig()
	cfg.SinkDir = t.TempDir()
	cfg.FlushInterval = 10 * time.Millisecond
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	return cfg
}

func reporter(name string, handlers []string, sinks ...string) Reporter {
	specs, err := ParseSinkSpecs(sinks)
	if err != nil {
		panic(err)
	}
	return Reporter{Name: name, Digest: "sha256:" + name, Handlers: handlers, Sinks: specs}
}

var both = []string{HandlerJobResult, HandlerLeaseEvent}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func settled(p *Pipeline, jobID string, n int) func() bool {
	return func() bool {
		rs := p.Results(jobID)
		if len(rs) != n {
			return false
		}
		for _, r := range rs {
			if r.Status == StatusPending {
				return false
			}
		}
		return true
	}
}

func TestOneFailingReporterDoesNotAffectTheOtherAndBothAreRecordedPerDatacenter(t *testing.T) {
	cfg := testConfig(t)
	inv := &funcInvoker{fns: map[string]func(context.Context, Invocation) Outcome{"good": echoTo("results"), "bad": trap}}
	reg := RegistryFunc(func() []Reporter {
		return []Reporter{
			reporter("bad", both, "results=file:bad.jsonl"),
			reporter("good", both, "results=file:good.jsonl"),
		}
	})
	p, err := New(cfg, inv, reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, dc := range []string{"dc1", "dc2"} {
		names, err := p.SubmitJobResult(JobResult{JobID: "job-7", Workflow: "etl", Datacenter: dc, Source: "manager-4", Stats: json.RawMessage(`{"rows": 1}`)})
		if err != nil {
			t.Fatal(err)
		}
		if strings.Join(names, ",") != "bad,good" {
			t.Fatalf("reporters %v", names)
		}
	}
	waitFor(t, "four results", settled(p, "job-7", 4))
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	rs := p.Results("job-7")
	want := []struct{ reporter, dc, status, kind string }{
		{"bad", "dc1", StatusError, "trap"}, {"bad", "dc2", StatusError, "trap"},
		{"good", "dc1", StatusOK, ""}, {"good", "dc2", StatusOK, ""},
	}
	for i, w := range want {
		r := rs[i]
		if r.Reporter != w.reporter || r.Datacenter != w.dc || r.Status != w.status || r.ErrorKind != w.kind || r.Event != KindJobResult {
			t.Errorf("result %d = %+v, want %+v", i, r, w)
		}
		if w.status == StatusOK && r.Records != 1 {
			t.Errorf("result %d wrote %d records", i, r.Records)
		}
		if w.status == StatusError && !strings.Contains(r.Error, "unreachable") {
			t.Errorf("result %d error %q", i, r.Error)
		}
	}
	lines := readLines(t, filepath.Join(cfg.SinkDir, "good.jsonl"))
	sort.Strings(lines) // workers run in parallel: no order between events
	if len(lines) != 2 || !strings.Contains(lines[0], `"datacenter":"dc1"`) || !strings.Contains(lines[1], `"datacenter":"dc2"`) {
		t.Fatalf("good sink holds %q", lines)
	}
	if got := metricValue(t, p.metrics.calls.WithLabelValues("bad", "trap")); got != 2 {
		t.Fatalf("bad trap calls %v", got)
	}
}

func TestAFullQueueRefusesJobResultsAndDropsLeaseEventsCountingThem(t *testing.T) {
	cfg := testConfig(t)
	cfg.QueueSize, cfg.Workers = 2, 1
	block := make(chan struct{})
	started := make(chan struct{}, 16)
	inv := &funcInvoker{fns: map[string]func(context.Context, Invocation) Outcome{
		"slow": func(ctx context.Context, inv Invocation) Outcome {
			started <- struct{}{}
			<-block
			return echoTo("out")(ctx, inv)
		},
	}}
	p, err := New(cfg, inv, RegistryFunc(func() []Reporter { return []Reporter{reporter("slow", both, "out=file:o.jsonl")} }))
	if err != nil {
		t.Fatal(err)
	}
	jr := JobResult{JobID: "j", Datacenter: "dc1", Stats: json.RawMessage(`{}`)}
	if _, err := p.SubmitJobResult(jr); err != nil {
		t.Fatal(err)
	}
	<-started // the worker holds one event; the queue has room for two more
	for i := range 2 {
		if _, err := p.SubmitJobResult(jr); err != nil {
			t.Fatalf("submit %d: %v", i, err)
		}
	}
	if _, err := p.SubmitJobResult(jr); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("submit on a full queue: %v", err)
	}
	le := LeaseEvent{Type: "expired", JobID: "j", Owner: "gate-1", OwnerDC: "dc1", Token: 3, Index: 9}
	for range 3 {
		if err := p.SubmitLeaseEvent(le); !errors.Is(err, ErrQueueFull) {
			t.Fatalf("lease event on a full queue: %v", err)
		}
	}
	if got := metricValue(t, p.metrics.dropped.WithLabelValues(DropLeaseEvent)); got != 3 {
		t.Fatalf("dropped lease events %v, want 3", got)
	}
	if got := metricValue(t, p.metrics.refused); got != 1 {
		t.Fatalf("refused job results %v, want 1", got)
	}
	if got := metricValue(t, p.metrics.queueDepth); got != 2 {
		t.Fatalf("queue depth %v, want 2", got)
	}
	close(block)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if n := len(readLines(t, filepath.Join(cfg.SinkDir, "o.jsonl"))); n != 3 {
		t.Fatalf("%d records written, want the 3 accepted", n)
	}
	if _, err := p.SubmitJobResult(jr); !errors.Is(err, ErrClosed) {
		t.Fatalf("submit after close: %v", err)
	}
}

func TestCloseGivesUpAfterItsDrainTimeoutAndCountsWhatIsLeft(t *testing.T) {
	cfg := testConfig(t)
	cfg.QueueSize, cfg.Workers, cfg.DrainTimeout = 10, 1, 50*time.Millisecond
	inv := &funcInvoker{fns: map[string]func(context.Context, Invocation) Outcome{
		"hang": func(ctx context.Context, inv Invocation) Outcome {
			<-ctx.Done()
			return Outcome{Err: ctx.Err(), ErrKind: "timeout"}
		},
	}}
	p, err := New(cfg, inv, RegistryFunc(func() []Reporter { return []Reporter{reporter("hang", both)} }))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if _, err := p.SubmitJobResult(JobResult{JobID: fmt.Sprint("j", i), Datacenter: "dc1", Stats: json.RawMessage(`{}`)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if got := metricValue(t, p.metrics.dropped.WithLabelValues(DropShutdown)); got < 1 {
		t.Fatalf("dropped at shutdown %v", got)
	}
	r := p.Results("j4")
	if len(r) != 1 || r[0].ErrorKind != ErrKindShutdown {
		t.Fatalf("results of the last job %+v", r)
	}
}

func TestAJobResultNeedsAStatsObject(t *testing.T) {
	p, err := New(testConfig(t), &funcInvoker{}, RegistryFunc(func() []Reporter { return []Reporter{reporter("r", both)} }))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for _, stats := range []string{``, `[]`, `1`, `{"a":`} {
		if _, err := p.SubmitJobResult(JobResult{JobID: "j", Datacenter: "dc1", Stats: json.RawMessage(stats)}); !errors.Is(err, ErrInvalidEvent) {
			t.Errorf("stats %q: %v", stats, err)
		}
	}
}

func TestOnlyReportersExportingTheHandlerGetTheEvent(t *testing.T) {
	cfg := testConfig(t)
	var leaseCalls, jobCalls atomic.Int32
	inv := &funcInvoker{fns: map[string]func(context.Context, Invocation) Outcome{
		"jobs": func(ctx context.Context, inv Invocation) Outcome {
			jobCalls.Add(1)
			return echoTo("o")(ctx, inv)
		},
		"leases": func(ctx context.Context, inv Invocation) Outcome {
			leaseCalls.Add(1)
			if inv.Handler != HandlerLeaseEvent || inv.Kind != KindLeaseEvent || inv.JobIDs[0] != "j" || inv.Datacenters[0] != "dc3" {
				t.Errorf("invocation %+v", inv)
			}
			return echoTo("o")(ctx, inv)
		},
	}}
	p, err := New(cfg, inv, RegistryFunc(func() []Reporter {
		return []Reporter{
			reporter("jobs", []string{HandlerJobResult}, "o=file:jobs.jsonl"),
			reporter("leases", []string{HandlerLeaseEvent}, "o=file:leases.jsonl"),
		}
	}))
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	if err := p.SubmitLeaseEvent(LeaseEvent{Type: "expired", JobID: "j", Owner: "gate-3", OwnerDC: "dc3", Token: 12, At: at, Index: 4711}); err != nil {
		t.Fatal(err)
	}
	names, err := p.SubmitJobResult(JobResult{JobID: "j", Datacenter: "dc1", Stats: json.RawMessage(`{}`)})
	if err != nil || len(names) != 1 || names[0] != "jobs" {
		t.Fatalf("%v %v", names, err)
	}
	waitFor(t, "both results", settled(p, "j", 2))
	_ = p.Close()
	if jobCalls.Load() != 1 || leaseCalls.Load() != 1 {
		t.Fatalf("job calls %d, lease calls %d", jobCalls.Load(), leaseCalls.Load())
	}
	lines := readLines(t, filepath.Join(cfg.SinkDir, "leases.jsonl"))
	want := `{"kind":"lease_event","type":"expired","job_id":"j","owner":"gate-3","owner_dc":"dc3","token":12,"at":"2026-11-27T10:00:00Z","index":4711}`
	if len(lines) != 1 || lines[0] != want {
		t.Fatalf("lease sink %q, want %q", lines, want)
	}
	rs := p.Results("j")
	if rs[1].Reporter != "leases" || rs[1].Event != KindLeaseEvent || rs[1].EventType != "expired" || rs[1].Datacenter != "dc3" {
		t.Fatalf("lease result %+v", rs[1])
	}
}

func TestResultsAreBoundedByJobsEvictingTheLeastRecentlyUpdated(t *testing.T) {
	var evicted, overflow int
	r := newResults(2, 1, func() { evicted++ }, func() { overflow++ })
	set := func(job, dc string) {
		r.update(job, resultKey{"r", dc, KindJobResult}, func(res *Result) { res.Status = StatusOK })
	}
	set("a", "dc1")
	set("b", "dc1")
	set("a", "dc1") // a is now the most recent
	set("c", "dc1") // evicts b
	if r.Job("b") != nil || r.Job("a") == nil || r.Job("c") == nil || evicted != 1 {
		t.Fatalf("a=%v b=%v c=%v evicted=%d", r.Job("a"), r.Job("b"), r.Job("c"), evicted)
	}
	set("a", "dc2") // over the per-job bound
	if len(r.Job("a")) != 1 || overflow != 1 {
		t.Fatalf("a=%v overflow=%d", r.Job("a"), overflow)
	}
}

// TestConcurrentSubmitsAndReads is for -race: submits from many
// goroutines while results are read and the pipeline closes.
func TestConcurrentSubmitsAndReads(t *testing.T) {
	cfg := testConfig(t)
	cfg.QueueSize = 64
	inv := &funcInvoker{fns: map[string]func(context.Context, Invocation) Outcome{"a": echoTo("o"), "b": trap}}
	p, err := New(cfg, inv, RegistryFunc(func() []Reporter {
		return []Reporter{reporter("a", both, "o=file:a.jsonl"), reporter("b", both, "o=stdout")}
	}))
	if err != nil {
		t.Fatal(err)
	}
	var accepted, refused atomic.Int64
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 300 {
				job := fmt.Sprintf("job-%d", i%20)
				_, err := p.SubmitJobResult(JobResult{JobID: job, Datacenter: fmt.Sprint("dc", g%3), Stats: json.RawMessage(`{"i":1}`)})
				switch {
				case err == nil:
					accepted.Add(1)
				case errors.Is(err, ErrQueueFull):
					refused.Add(1)
				default:
					t.Error(err)
				}
				_ = p.SubmitLeaseEvent(LeaseEvent{Type: "renewed", JobID: job, OwnerDC: "dc1"})
				_ = p.Results(job)
			}
		}()
	}
	wg.Wait()
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	lines := readLines(t, filepath.Join(cfg.SinkDir, "a.jsonl"))
	jobLines := 0
	for _, l := range lines {
		if strings.Contains(l, `"kind":"job_result"`) {
			jobLines++
		}
	}
	if int64(jobLines) != accepted.Load() {
		t.Fatalf("%d job results in the sink, %d accepted (%d refused)", jobLines, accepted.Load(), refused.Load())
	}
}

// metricValue reads a counter or gauge.
func metricValue(t *testing.T, c prometheus.Metric) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	}
	t.Fatalf("metric %v is neither a counter nor a gauge", c.Desc())
	return 0
}

// A correlation event goes to the reporters that export its handler, with
// the affected datacenters and held jobs for failure reports, and its
// results are kept by episode.
func TestACorrelationEventReachesOnlyTheReportersThatExportItsHandler(t *testing.T) {
	cfg := testConfig(t)
	var seen atomic.Pointer[Invocation]
	inv := &funcInvoker{fns: map[string]func(context.Context, Invocation) Outcome{
		"partitions": func(ctx context.Context, in Invocation) Outcome {
			seen.Store(&in)
			return echoTo("results")(ctx, in)
		},
		"jobs-only": echoTo("results"),
	}}
	reg := RegistryFunc(func() []Reporter {
		return []Reporter{
			reporter("jobs-only", both, "results=file:jobs.jsonl"),
			reporter("partitions", append([]string{HandlerCorrelation}, both...), "results=file:partitions.jsonl"),
		}
	})
	p, err := New(cfg, inv, reg)
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(`{"kind":"correlation","type":"partition_detected","episode":"ep-1"}`)
	err = p.SubmitCorrelationEvent(CorrelationEvent{Type: "partition_detected", Episode: "ep-1",
		Datacenters: []string{"dc3", "dc4"}, JobIDs: []string{"job-7"}, Event: body})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the partitions reporter's result", func() bool {
		rs := p.CorrelationResults("ep-1")
		return len(rs) == 1 && rs[0].Status == StatusOK
	})
	rs := p.CorrelationResults("ep-1")
	if rs[0].Reporter != "partitions" || rs[0].Event != KindCorrelation || rs[0].EventType != "partition_detected" || rs[0].Records != 1 {
		t.Errorf("result %+v", rs[0])
	}
	in := seen.Load()
	if in.Handler != HandlerCorrelation || in.Kind != KindCorrelation || string(in.Event) != string(body) ||
		strings.Join(in.Datacenters, ",") != "dc3,dc4" || strings.Join(in.JobIDs, ",") != "job-7" {
		t.Errorf("invocation %+v", in)
	}
	if err := p.SubmitCorrelationEvent(CorrelationEvent{Type: "partition_healed"}); !errors.Is(err, ErrInvalidEvent) {
		t.Errorf("an event without its episode or JSON: %v", err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	lines := readLines(t, filepath.Join(cfg.SinkDir, "partitions.jsonl"))
	if len(lines) != 1 || lines[0] != string(body) {
		t.Errorf("partitions sink: %q", lines)
	}
	if _, err := os.Stat(filepath.Join(cfg.SinkDir, "jobs.jsonl")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a reporter without the handler wrote to its sink: %v", err)
	}
}
