package wasm

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestHealthyReporterEmitsTheEventToItsSink(t *testing.T) {
	s, logs := newSandbox(t, Config{})
	install(t, s, "good", KindReporter, relaxed(), example(t, "reporter"))
	ctx := context.Background()

	c := jobResult(t, "dc2", "job-7")
	res := s.Call(ctx, "good", c)
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	recs, err := ParseReporterOutput(res.Output, []string{"results"})
	if err != nil {
		t.Fatalf("output %s: %v", res.Output, err)
	}
	if len(recs) != 1 || recs[0].Sink != "results" || string(recs[0].Data) != string(c.Event) {
		t.Fatalf("records = %+v, want the event for sink results", recs)
	}

	lc, err := NewLeaseEventCall(LeaseEventPayload{Type: LeaseExpired, JobID: "job-7", Owner: "gate-3", OwnerDC: "dc3", Token: 12, Index: 4711})
	if err != nil {
		t.Fatal(err)
	}
	res = s.Call(ctx, "good", lc)
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	if len(res.Logs) != 1 || res.Logs[0] != (LogLine{Level: slog.LevelInfo, Stream: "log", Text: "lease event handled"}) {
		t.Fatalf("logs = %+v", res.Logs)
	}
	lrecs := logs.records(t, "lease event handled")
	if len(lrecs) != 1 || lrecs[0]["module"] != "good" || lrecs[0]["stream"] != "log" || lrecs[0]["digest"] != res.Digest {
		t.Fatalf("guest log record = %v", lrecs)
	}
	if got := value(s.metrics.calls.WithLabelValues("good", "ok")); got != 2 {
		t.Fatalf("calls_total{ok} = %v, want 2", got)
	}
}

func TestHealthyCorrelationModuleHolds(t *testing.T) {
	s, _ := newSandbox(t, Config{})
	install(t, s, "corr", KindCorrelation, relaxed(), example(t, "correlation"))
	c, err := NewCorrelationCall(CorrelationEvent{
		Type: PartitionDetected, Episode: "ep-42", Severity: "medium", PreviousSeverity: "low",
		AffectedDatacenters: []string{"dc3", "dc4"}, HealthyDatacenters: []string{"dc1", "dc2"},
		HeldLeases: []HeldLease{{JobID: "job-7", Owner: "gate-3", OwnerDC: "dc3", Token: 12}},
	})
	if err != nil {
		t.Fatal(err)
	}
	res := s.Call(context.Background(), "corr", c)
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	out, err := ParseCorrelationOutput(res.Output, []string{"dc1", "dc2", "dc3", "dc4"})
	if err != nil {
		t.Fatal(err)
	}
	if out.Hold == nil || !*out.Hold || out.Datacenters != nil || len(out.Notes) != 1 {
		t.Fatalf("output = %+v", out)
	}
}

// Every misbehaving module ends its call with the right failure, one
// error-level report carrying the event's datacenters and job ids, no
// instance left behind, and a healthy module answering right after.
func TestMisbehavingModules(t *testing.T) {
	short := DefaultLimits()
	short.CallTimeout = 50 * time.Millisecond
	bomb := DefaultLimits()
	bomb.MemoryPages = 64
	bomb.CallTimeout = 10 * time.Second

	cases := []struct {
		name    string
		wasm    func(testing.TB) []byte
		limits  Limits
		kind    string
		message string
		stack   []string // frames that must appear, in order
		logs    []string // guest log lines expected in the result
	}{
		{name: "unreachable traps with its guest stack", wasm: ex("unreachable"),
			kind: FailTrap, message: "unreachable", stack: []string{"bad.check_fields", "bad.parse_event"}},
		{name: "an endless loop is stopped at its call timeout", wasm: ex("endless_loop"), limits: short,
			kind: FailTimeout, message: "call_timeout of 50ms"},
		{name: "a memory bomb stops growing at its page limit", wasm: ex("memory_bomb"), limits: bomb,
			kind: FailTrap, message: "unreachable", stack: []string{"bad.bomb"}, logs: []string{"memory.grow refused at 64 pages"}},
		{name: "an oversized output traps in output", wasm: ex("oversized_output"),
			kind: FailOutputTooLarge, message: "output of 1048576 bytes is over the module's limit of 65536 bytes", stack: []string{"coordinatord.output"}},
		{name: "invalid JSON output is bad output", wasm: ex("invalid_json"),
			kind: FailBadOutput, message: "not valid JSON"},
		{name: "a non-zero return reports the fail text", wasm: ex("guest_error"),
			kind: FailGuestError, message: "billing API unreachable: connection refused (returned 2)"},
		{name: "an allocator returning 0 is alloc_failed", wasm: ex("alloc_zero"),
			kind: FailAllocFailed, message: "returned 0"},
		{name: "an allocator returning an address past memory is alloc_failed", wasm: td("alloc_oob"),
			kind: FailAllocFailed, message: "outside memory"},
		{name: "a second output traps", wasm: td("output_twice"),
			kind: FailTrap, message: "output called a second time"},
		{name: "an output range outside memory traps", wasm: td("bad_pointer"),
			kind: FailTrap, message: "output: [65530, 65630) is outside memory"},
		{name: "proc_exit ends the call as a trap that quotes stderr", wasm: td("proc_exit"),
			kind: FailTrap, message: "proc_exit(3); stderr: panic: boom | goroutine 1 [running]:",
			logs: []string{"panic: boom", "goroutine 1 [running]:"}},
		{name: "an _initialize that never returns is stopped at the call timeout", wasm: td("init_loop"), limits: short,
			kind: FailTimeout, message: "call_timeout of 50ms"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, logs := newSandbox(t, Config{})
			install(t, s, "good", KindReporter, relaxed(), example(t, "reporter"))
			limits := tc.limits
			if limits == (Limits{}) {
				limits = relaxed()
			}
			info := install(t, s, "bad", KindReporter, limits, tc.wasm(t))
			c := jobResult(t, "dc3", "job-7")
			c.Datacenters = []string{"dc3", "dc4"}
			c.JobIDs = []string{"job-7", "job-9"}

			for round := range 2 { // the second call gets a fresh instance and fails the same way
				logs.reset()
				start := time.Now()
				res := s.Call(context.Background(), "bad", c)
				elapsed := time.Since(start)

				ce := asCallError(t, res.Err)
				if ce.Kind != tc.kind || ce.Code() != tc.kind || !strings.Contains(ce.Message, tc.message) {
					t.Fatalf("round %d: err = %q (kind %s), want kind %s with %q", round, ce.Error(), ce.Kind, tc.kind, tc.message)
				}
				if ce.Module != "bad" || ce.Digest != info.Digest || ce.Handler != HandlerJobResult {
					t.Fatalf("err names %q %q %q", ce.Module, ce.Digest, ce.Handler)
				}
				if res.Output != nil {
					t.Fatalf("a failed call has output %s", res.Output)
				}
				if !inOrder(ce.Stack, tc.stack) {
					t.Fatalf("stack = %q, want frames %q", ce.Stack, tc.stack)
				}
				if tc.kind == FailTimeout && elapsed > limits.CallTimeout+2*time.Second {
					t.Fatalf("a %v timeout returned after %v", limits.CallTimeout, elapsed)
				}
				var texts []string
				for _, l := range res.Logs {
					texts = append(texts, l.Text)
				}
				if !slices.Equal(texts, tc.logs) {
					t.Fatalf("logs = %q, want %q", texts, tc.logs)
				}

				reports := logs.failures(t, "bad")
				if len(reports) != 1 {
					t.Fatalf("%d failure records, want 1: %v", len(reports), reports)
				}
				r := reports[0]
				if r["level"] != "ERROR" || r["digest"] != info.Digest || r["handler"] != HandlerJobResult ||
					r["event_kind"] != EventJobResult || r["kind"] != tc.kind || !strings.Contains(r["error"].(string), tc.message) {
					t.Fatalf("failure record = %v", r)
				}
				if !slices.Equal(strs(r["datacenters"]), c.Datacenters) || !slices.Equal(strs(r["job_ids"]), c.JobIDs) {
					t.Fatalf("failure record datacenters %v job_ids %v, want %v %v", r["datacenters"], r["job_ids"], c.Datacenters, c.JobIDs)
				}
				if !slices.Equal(strs(r["stack"]), ce.Stack) {
					t.Fatalf("failure record stack %v, want %q", r["stack"], ce.Stack)
				}
				if g := gauge(s, "bad"); g != 0 {
					t.Fatalf("%v instances of the failing module left, want 0", g)
				}
				healthyCall(t, s)
			}
			if got := value(s.metrics.failures.WithLabelValues("bad", tc.kind)); got != 2 {
				t.Fatalf("failures_total{bad,%s} = %v, want 2", tc.kind, got)
			}
			if got := value(s.metrics.calls.WithLabelValues("bad", tc.kind)); got != 2 {
				t.Fatalf("calls_total{bad,%s} = %v, want 2", tc.kind, got)
			}
		})
	}
}

func ex(name string) func(testing.TB) []byte {
	return func(t testing.TB) []byte { return example(t, name) }
}

func td(name string) func(testing.TB) []byte {
	return func(t testing.TB) []byte { return testModule(t, name) }
}

// inOrder reports whether each of want is the prefix of a frame of stack,
// in order.
func inOrder(stack, want []string) bool {
	i := 0
	for _, f := range stack {
		if i < len(want) && strings.HasPrefix(f, want[i]) {
			i++
		}
	}
	return i == len(want)
}

func TestCallerFailures(t *testing.T) {
	s, logs := newSandbox(t, Config{})
	install(t, s, "good", KindReporter, relaxed(), example(t, "reporter"))
	install(t, s, "corr", KindCorrelation, relaxed(), example(t, "correlation"))
	ctx := context.Background()

	cases := []struct {
		name   string
		module string
		call   Call
		kind   string
	}{
		{"a module that is not installed", "nope", jobResult(t, "dc1", "job-1"), FailNotInstalled},
		{"a handler the module does not export", "corr", jobResult(t, "dc1", "job-1"), FailNoHandler},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			logs.reset()
			res := s.Call(ctx, tc.module, tc.call)
			if ce := asCallError(t, res.Err); ce.Kind != tc.kind {
				t.Fatalf("kind = %s, want %s", ce.Kind, tc.kind)
			}
			if n := len(logs.failures(t, tc.module)); n != 1 {
				t.Fatalf("%d failure records, want 1", n)
			}
			healthyCall(t, s)
		})
	}
}

func TestCallerCancellation(t *testing.T) {
	s, _ := newSandbox(t, Config{})
	limits := DefaultLimits()
	limits.CallTimeout = 10 * time.Second
	install(t, s, "loop", KindReporter, limits, example(t, "endless_loop"))

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	res := s.Call(ctx, "loop", jobResult(t, "dc1", "job-1"))
	if ce := asCallError(t, res.Err); ce.Kind != FailTimeout || !strings.Contains(ce.Message, "caller's deadline") {
		t.Fatalf("err = %v, want a timeout by the caller's deadline", res.Err)
	}

	ctx, cancel = context.WithCancel(context.Background())
	done := make(chan Result)
	go func() { done <- s.Call(ctx, "loop", jobResult(t, "dc1", "job-1")) }()
	waitFor(t, func() bool { return gauge(s, "loop") == 1 })
	cancel()
	res = <-done
	if ce := asCallError(t, res.Err); ce.Kind != FailCanceled {
		t.Fatalf("err = %v, want canceled", res.Err)
	}
}

func TestInstancesArePooledAndInitializedOnce(t *testing.T) {
	s, _ := newSandbox(t, Config{})
	install(t, s, "ver", KindReporter, relaxed(), testModule(t, "version"))
	ctx := context.Background()
	var all [][]string
	for range 3 {
		res := s.Call(ctx, "ver", jobResult(t, "dc1", "job-1"))
		if res.Err != nil || string(res.Output) != `{"version":1}` {
			t.Fatalf("call: %s %v", res.Output, res.Err)
		}
		var texts []string
		for _, l := range res.Logs {
			texts = append(texts, l.Text)
		}
		all = append(all, texts)
	}
	want := [][]string{{"initialized", "version 1"}, {"version 1"}, {"version 1"}}
	for i := range want {
		if !slices.Equal(all[i], want[i]) {
			t.Fatalf("logs of the calls = %q, want %q", all, want)
		}
	}
	if g := gauge(s, "ver"); g != 1 {
		t.Fatalf("%v instances, want 1", g)
	}
}

func TestIdleInstancesAreBounded(t *testing.T) {
	s, _ := newSandbox(t, Config{MaxIdle: 2})
	install(t, s, "good", KindReporter, relaxed(), example(t, "reporter"))
	m, _ := s.acquire("good")
	defer s.calls.Done()
	// Five calls in flight at once (taken by hand), then all end.
	insts := make([]*instance, 5)
	for i := range insts {
		st := &callState{m: m, Context: context.Background()}
		inst, err := m.instantiate(st)
		if err != nil {
			t.Fatal(err)
		}
		m.begin()
		insts[i] = inst
	}
	for _, inst := range insts {
		m.end(inst, true)
	}
	m.end(nil, true)
	if len(m.idle) != 2 || gauge(s, "good") != 2 {
		t.Fatalf("%d idle, %v live instances; want 2 and 2", len(m.idle), gauge(s, "good"))
	}
}

func TestStdoutAndStderrGoToTheLog(t *testing.T) {
	s, logs := newSandbox(t, Config{})
	info := install(t, s, "stdio", KindReporter, relaxed(), testModule(t, "stdio"))
	res := s.Call(context.Background(), "stdio", jobResult(t, "dc1", "job-1"))
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	want := []LogLine{
		{slog.LevelInfo, "stdout", "hello from stdout"},
		{slog.LevelWarn, "stderr", "oops on stderr"},
		{slog.LevelInfo, "stdout", "partial"},
	}
	if !slices.Equal(res.Logs, want) {
		t.Fatalf("logs = %+v, want %+v", res.Logs, want)
	}
	for _, l := range want {
		recs := logs.records(t, l.Text)
		if len(recs) != 1 || recs[0]["module"] != "stdio" || recs[0]["digest"] != info.Digest || recs[0]["stream"] != l.Stream {
			t.Fatalf("record of %q = %v", l.Text, recs)
		}
	}
}

func TestLogRateLimit(t *testing.T) {
	clock := newFakeClock()
	s, _ := newSandbox(t, Config{Clock: clock.Now})
	limits := DefaultLimits()
	limits.LogLinesPerSecond = 10
	install(t, s, "flood", KindReporter, limits, testModule(t, "log_flood"))
	ctx := context.Background()

	res := s.Call(ctx, "flood", jobResult(t, "dc1", "job-1"))
	if res.Err != nil || len(res.Logs) != 10 || res.LogsDropped != 990 {
		t.Fatalf("first call: %d lines, %d dropped, err %v; want 10, 990", len(res.Logs), res.LogsDropped, res.Err)
	}
	clock.Advance(500 * time.Millisecond)
	res = s.Call(ctx, "flood", jobResult(t, "dc1", "job-1"))
	if res.Err != nil || len(res.Logs) != 5 || res.LogsDropped != 995 {
		t.Fatalf("half a second later: %d lines, %d dropped; want 5, 995", len(res.Logs), res.LogsDropped)
	}
	if got := value(s.metrics.dropped.WithLabelValues("flood")); got != 1985 {
		t.Fatalf("log_lines_dropped_total = %v, want 1985", got)
	}
}

// A replacement while a call runs: the call finishes on the old version,
// calls after the Install answer from the new one, and the old instances
// are closed once the old call ends.
func TestInstallReplacesWhileACallRuns(t *testing.T) {
	s, _ := newSandbox(t, Config{})
	limits := DefaultLimits()
	limits.CallTimeout = 300 * time.Millisecond
	old := install(t, s, "mod", KindReporter, limits, example(t, "endless_loop"))

	done := make(chan Result)
	go func() { done <- s.Call(context.Background(), "mod", jobResult(t, "dc1", "job-1")) }()
	waitFor(t, func() bool { return gauge(s, "mod") == 1 })

	fixed := install(t, s, "mod", KindReporter, relaxed(), example(t, "reporter"))
	res := s.Call(context.Background(), "mod", jobResult(t, "dc1", "job-2"))
	if res.Err != nil || res.Digest != fixed.Digest {
		t.Fatalf("call after the replacement: digest %s err %v, want the new version %s", res.Digest, res.Err, fixed.Digest)
	}
	res = <-done
	if ce := asCallError(t, res.Err); ce.Kind != FailTimeout || res.Digest != old.Digest || ce.Digest != old.Digest {
		t.Fatalf("the call in flight: %v on %s, want a timeout on the old version", res.Err, res.Digest)
	}
	if g := gauge(s, "mod"); g != 1 {
		t.Fatalf("%v instances, want the new version's 1", g)
	}
	if got, _ := s.Lookup("mod"); got.Info.Digest != fixed.Digest {
		t.Fatalf("Lookup = %s", got.Info.Digest)
	}
}

func TestRemoveAndClose(t *testing.T) {
	s, _ := newSandbox(t, Config{})
	install(t, s, "b", KindReporter, Limits{}, example(t, "reporter"))
	install(t, s, "a", KindCorrelation, Limits{}, example(t, "correlation"))
	got := s.Installed()
	if len(got) != 2 || got[0].Name != "a" || got[1].Name != "b" || got[1].Limits != DefaultLimits() || got[0].Info.Kind != KindCorrelation {
		t.Fatalf("Installed = %+v", got)
	}
	if !s.Remove("b") || s.Remove("b") {
		t.Fatal("Remove should report the module once")
	}
	if _, ok := s.Lookup("b"); ok {
		t.Fatal("removed module still found")
	}
	res := s.Call(context.Background(), "b", jobResult(t, "dc1", "job-1"))
	if ce := asCallError(t, res.Err); ce.Kind != FailNotInstalled {
		t.Fatalf("call of a removed module: %v", res.Err)
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Install(context.Background(), "c", KindReporter, Limits{}, example(t, "reporter")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Install after Close: %v", err)
	}
	res = s.Call(context.Background(), "a", Call{EventKind: EventCorrelation, Event: []byte(`{}`)})
	if ce := asCallError(t, res.Err); ce.Kind != FailNotInstalled || !strings.Contains(ce.Message, "closed") {
		t.Fatalf("call after Close: %v", res.Err)
	}
}

func TestReportBadOutput(t *testing.T) {
	s, logs := newSandbox(t, Config{})
	install(t, s, "good", KindReporter, relaxed(), example(t, "reporter"))
	c := jobResult(t, "dc2", "job-7")
	res := s.Call(context.Background(), "good", c)
	_, err := ParseReporterOutput(res.Output, []string{"audit"})
	var oe *OutputError
	if !errors.As(err, &oe) || oe.Code() != "unknown_sink" {
		t.Fatalf("err = %v", err)
	}
	s.ReportBadOutput(context.Background(), "good", c, res, err)
	recs := logs.failures(t, "good")
	if len(recs) != 1 || recs[0]["kind"] != FailBadOutput || !strings.Contains(recs[0]["error"].(string), `"results" is not one of the module's sinks`) ||
		!slices.Equal(strs(recs[0]["job_ids"]), []string{"job-7"}) || recs[0]["digest"] != res.Digest {
		t.Fatalf("records = %v", recs)
	}
	if got := value(s.metrics.failures.WithLabelValues("good", FailBadOutput)); got != 1 {
		t.Fatalf("failures_total = %v", got)
	}
}

// waitFor polls cond with a deadline (no sleeping as synchronisation: the
// condition is what the test waits for).
func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestEventsMarshalAsTheABIShowsThem(t *testing.T) {
	c, err := NewCorrelationCall(CorrelationEvent{Type: PartitionHealed, Episode: "ep-1", Severity: "none",
		Time: time.Date(2026, 11, 27, 11, 0, 0, 5, time.FixedZone("CET", 3600))})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"kind":"correlation","type":"partition_healed","episode":"ep-1","severity":"none","previous_severity":"","affected_datacenters":[],"healthy_datacenters":[],"held_leases":[],"time":"2026-11-27T10:00:00.000000005Z"}`
	if string(c.Event) != want {
		t.Fatalf("event = %s\nwant    %s", c.Event, want)
	}
	var back CorrelationEvent
	if err := json.Unmarshal(c.Event, &back); err != nil || back.Kind != EventCorrelation {
		t.Fatalf("round trip: %+v %v", back, err)
	}
	jc := jobResult(t, "dc2", "job-7")
	if jc.Handler != HandlerJobResult || !slices.Equal(jc.Datacenters, []string{"dc2"}) || !slices.Equal(jc.JobIDs, []string{"job-7"}) {
		t.Fatalf("job result call = %+v", jc)
	}
	held, _ := NewCorrelationCall(CorrelationEvent{AffectedDatacenters: []string{"dc3"},
		HeldLeases: []HeldLease{{JobID: "job-7", OwnerDC: "dc5"}, {JobID: "job-8", OwnerDC: "dc3"}}})
	if !slices.Equal(held.Datacenters, []string{"dc3", "dc5"}) || !slices.Equal(held.JobIDs, []string{"job-7", "job-8"}) {
		t.Fatalf("correlation call names %v %v", held.Datacenters, held.JobIDs)
	}
}

func TestWASIIsASandbox(t *testing.T) {
	s, _ := newSandbox(t, Config{})
	install(t, s, "probe", KindReporter, relaxed(), testModule(t, "wasi_probe"))
	if res := s.Call(context.Background(), "probe", jobResult(t, "dc1", "job-1")); res.Err != nil {
		t.Fatalf("the WASI probe found a hole (see testdata/wasi_probe.wat): %v", res.Err)
	}
}
