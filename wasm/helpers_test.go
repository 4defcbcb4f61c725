package wasm

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// example reads a committed module of examples/modules/wat.
func example(t testing.TB, name string) []byte {
	t.Helper()
	return readWasm(t, filepath.Join("..", "examples", "modules", "wat", name+".wasm"))
}

// testModule reads a committed module of testdata.
func testModule(t testing.TB, name string) []byte {
	t.Helper()
	return readWasm(t, filepath.Join("testdata", name+".wasm"))
}

func readWasm(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run examples/modules/build.sh)", err)
	}
	return b
}

// logCapture collects JSON slog records.
type logCapture struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (c *logCapture) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.Write(p)
}

// records returns the records logged so far whose msg is msg ("" for all).
func (c *logCapture) records(t testing.TB, msg string) []map[string]any {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(c.buf.Bytes()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var r map[string]any
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("log line %q: %v", sc.Text(), err)
		}
		if msg == "" || r["msg"] == msg {
			out = append(out, r)
		}
	}
	return out
}

// failures returns the failure reports logged for module.
func (c *logCapture) failures(t testing.TB, module string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, r := range c.records(t, "wasm call failed") {
		if r["module"] == module {
			out = append(out, r)
		}
	}
	return out
}

func (c *logCapture) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.buf.Reset()
}

// fakeClock is a settable clock.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// newSandbox returns a sandbox logging JSON to the returned capture, closed
// when the test ends. cfg's Logger is replaced.
func newSandbox(t testing.TB, cfg Config) (*Sandbox, *logCapture) {
	t.Helper()
	logs := &logCapture{}
	cfg.Logger = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(context.Background()); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s, logs
}

func install(t testing.TB, s *Sandbox, name string, kind Kind, limits Limits, wasm []byte) Info {
	t.Helper()
	info, err := s.Install(context.Background(), name, kind, limits, wasm)
	if err != nil {
		t.Fatalf("Install %s: %v", name, err)
	}
	return info
}

// relaxed is DefaultLimits with a call timeout long enough for a test
// machine under any load: for modules whose calls must not time out.
func relaxed() Limits {
	l := DefaultLimits()
	l.CallTimeout = 10 * time.Second
	return l
}

// jobResult is a small job result event for dc and job.
func jobResult(t testing.TB, dc, job string) Call {
	t.Helper()
	c, err := NewJobResultCall(JobResultEvent{
		JobID: job, Workflow: "nightly-etl", Datacenter: dc, Source: "manager-4",
		Stats: json.RawMessage(`{"rows":1200,"seconds":3.5}`),
		Time:  time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC),
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// healthyCall checks that the healthy reporter installed as "good" answers.
func healthyCall(t testing.TB, s *Sandbox) {
	t.Helper()
	c := jobResult(t, "dc1", "job-healthy")
	res := s.Call(context.Background(), "good", c)
	if res.Err != nil {
		t.Fatalf("healthy module after a failure: %v", res.Err)
	}
	recs, err := ParseReporterOutput(res.Output, []string{"results"})
	if err != nil || len(recs) != 1 {
		t.Fatalf("healthy module output %s: %v", res.Output, err)
	}
}

// value reads a counter or gauge.
func value(m prometheus.Metric) float64 {
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		panic(err)
	}
	switch {
	case d.Counter != nil:
		return d.Counter.GetValue()
	case d.Gauge != nil:
		return d.Gauge.GetValue()
	}
	panic("not a counter or gauge")
}

func gauge(s *Sandbox, module string) float64 {
	return value(s.metrics.instances.WithLabelValues(module))
}

func asCallError(t testing.TB, err error) *CallError {
	t.Helper()
	ce, ok := err.(*CallError)
	if !ok {
		t.Fatalf("err = %T %v, want *CallError", err, err)
	}
	return ce
}

func strs(v any) []string {
	items, _ := v.([]any)
	out := make([]string, 0, len(items))
	for _, i := range items {
		s, _ := i.(string)
		out = append(out, s)
	}
	return out
}
