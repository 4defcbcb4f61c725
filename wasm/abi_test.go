package wasm

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestHandlersOf(t *testing.T) {
	if got := HandlersOf(KindCorrelation); !slices.Equal(got, []string{HandlerCorrelation}) {
		t.Fatal(got)
	}
	if got := HandlersOf(KindReporter); !slices.Equal(got, []string{HandlerJobResult, HandlerLeaseEvent, HandlerCorrelation}) {
		t.Fatal(got)
	}
	if got := MainHandlersOf(KindReporter); !slices.Equal(got, []string{HandlerJobResult, HandlerLeaseEvent}) {
		t.Fatal(got)
	}
	if got := MainHandlersOf(KindCorrelation); !slices.Equal(got, []string{HandlerCorrelation}) {
		t.Fatal(got)
	}
	if HandlersOf("x") != nil || HandlerFor("x") != "" || HandlerFor(EventLeaseEvent) != HandlerLeaseEvent {
		t.Fatal("unknown kinds")
	}
}

func TestParseCorrelationOutput(t *testing.T) {
	known := []string{"dc1", "dc2", "dc3"}
	yes := true
	cases := []struct {
		name  string
		out   string
		want  CorrelationOutput
		code  string // "" when valid
		field string
	}{
		{"an empty object leaves the built-in decision", `{}`, CorrelationOutput{}, "", ""},
		{"an empty output is not JSON", ``, CorrelationOutput{}, "invalid_output", ""},
		{"hold with the affected datacenters", `{"hold":true}`, CorrelationOutput{Hold: &yes}, "", ""},
		{"hold narrowed, duplicates folded, notes", `{"hold":true,"datacenters":["dc3","dc1","dc3"],"notes":["n"]}`,
			CorrelationOutput{Hold: &yes, Datacenters: []string{"dc3", "dc1"}, Notes: []string{"n"}}, "", ""},
		{"an empty datacenter list is not an absent one", `{"datacenters":[]}`, CorrelationOutput{Datacenters: []string{}}, "", ""},
		{"not JSON", `{"hold":`, CorrelationOutput{}, "invalid_output", ""},
		{"not an object", `[true]`, CorrelationOutput{}, "invalid_output", ""},
		{"hold of the wrong type", `{"hold":"yes"}`, CorrelationOutput{}, "invalid_output", "hold"},
		{"hold null", `{"hold":null}`, CorrelationOutput{}, "invalid_output", "hold"},
		{"datacenters not strings", `{"datacenters":["dc1",2]}`, CorrelationOutput{}, "invalid_output", "datacenters[1]"},
		{"an unknown datacenter", `{"hold":true,"datacenters":["dc9"]}`, CorrelationOutput{}, "unknown_datacenter", "datacenters[0]"},
		{"an unknown field", `{"hold":true,"evict":false}`, CorrelationOutput{}, "invalid_output", "evict"},
		{"too many notes", `{"notes":["1","2","3","4","5","6","7","8","9","10","11","12","13","14","15","16","17"]}`, CorrelationOutput{}, "invalid_output", "notes"},
		{"a note too long", `{"notes":["` + strings.Repeat("x", 513) + `"]}`, CorrelationOutput{}, "invalid_output", "notes[0]"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseCorrelationOutput([]byte(tc.out), known)
			if tc.code == "" {
				if err != nil {
					t.Fatal(err)
				}
				gj, _ := json.Marshal(got)
				wj, _ := json.Marshal(tc.want)
				if string(gj) != string(wj) || (got.Datacenters == nil) != (tc.want.Datacenters == nil) {
					t.Fatalf("got %s, want %s", gj, wj)
				}
				return
			}
			var oe *OutputError
			if !errors.As(err, &oe) || oe.Code() != tc.code || oe.Field != tc.field {
				t.Fatalf("err = %v (%#v), want code %s field %q", err, oe, tc.code, tc.field)
			}
		})
	}
}

func TestParseReporterOutput(t *testing.T) {
	sinks := []string{"results", "audit"}
	cases := []struct {
		name  string
		out   string
		want  []Record
		code  string
		field string
	}{
		{"no records", `{"records":[]}`, []Record{}, "", ""},
		{"an empty output is not JSON", ``, nil, "invalid_output", ""},
		{"records, data compacted to one line", "{\"records\":[{\"sink\":\"results\",\"data\":{\n \"a\": 1}},{\"data\":\"x\",\"sink\":\"audit\"}]}",
			[]Record{{"results", json.RawMessage(`{"a":1}`)}, {"audit", json.RawMessage(`"x"`)}}, "", ""},
		{"records missing", `{}`, nil, "invalid_output", "records"},
		{"records not an array", `{"records":{}}`, nil, "invalid_output", "records"},
		{"a record not an object", `{"records":[1]}`, nil, "invalid_output", "records[0]"},
		{"a record without sink", `{"records":[{"data":1}]}`, nil, "invalid_output", "records[0].sink"},
		{"a record without data", `{"records":[{"sink":"audit"}]}`, nil, "invalid_output", "records[0].data"},
		{"a sink of the wrong type", `{"records":[{"sink":1,"data":1}]}`, nil, "invalid_output", "records[0].sink"},
		{"an unknown record field", `{"records":[{"sink":"audit","data":1,"extra":2}]}`, nil, "invalid_output", "records[0].extra"},
		{"an unknown top-level field", `{"records":[],"more":1}`, nil, "invalid_output", "more"},
		{"a sink the module was not given refuses every record", `{"records":[{"sink":"audit","data":1},{"sink":"webhook","data":2}]}`, nil, "unknown_sink", "records[1].sink"},
		{"not JSON", `{"records":[`, nil, "invalid_output", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseReporterOutput([]byte(tc.out), sinks)
			if tc.code == "" {
				if err != nil {
					t.Fatal(err)
				}
				if len(got) != len(tc.want) {
					t.Fatalf("got %+v", got)
				}
				for i := range got {
					if got[i].Sink != tc.want[i].Sink || string(got[i].Data) != string(tc.want[i].Data) {
						t.Fatalf("got %+v, want %+v", got, tc.want)
					}
				}
				return
			}
			var oe *OutputError
			if got != nil || !errors.As(err, &oe) || oe.Code() != tc.code || oe.Field != tc.field {
				t.Fatalf("got %v, err = %v, want code %s field %q", got, err, tc.code, tc.field)
			}
		})
	}
}

func TestNoOutputIsNoAnswer(t *testing.T) {
	if o, err := ParseCorrelationOutput(nil, nil); err != nil || o.Hold != nil || o.Datacenters != nil || o.Notes != nil {
		t.Fatalf("correlation: %+v %v", o, err)
	}
	if r, err := ParseReporterOutput(nil, nil); err != nil || r != nil {
		t.Fatalf("reporter: %+v %v", r, err)
	}
}

func TestLimits(t *testing.T) {
	if err := DefaultLimits().Validate(); err != nil {
		t.Fatal(err)
	}
	mod := func(f func(*Limits)) Limits { l := DefaultLimits(); f(&l); return l }
	bad := []struct {
		limits Limits
		field  string
	}{
		{mod(func(l *Limits) { l.MemoryPages = 0 }), "memory_pages"},
		{mod(func(l *Limits) { l.MemoryPages = 4097 }), "memory_pages"},
		{mod(func(l *Limits) { l.CallTimeout = time.Microsecond }), "call_timeout"},
		{mod(func(l *Limits) { l.CallTimeout = 31 * time.Second }), "call_timeout"},
		{mod(func(l *Limits) { l.MaxOutputBytes = 0 }), "max_output_bytes"},
		{mod(func(l *Limits) { l.MaxOutputBytes = 16<<20 + 1 }), "max_output_bytes"},
		{mod(func(l *Limits) { l.LogLinesPerSecond = -1 }), "log_lines_per_second"},
		{mod(func(l *Limits) { l.LogLinesPerSecond = 10001 }), "log_lines_per_second"},
	}
	for _, tc := range bad {
		var le *LimitsError
		if err := tc.limits.Validate(); !errors.As(err, &le) || le.Field != tc.field || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%+v: %v, want field %s", tc.limits, err, tc.field)
		}
	}
	if err := mod(func(l *Limits) { l.LogLinesPerSecond = 0 }).Validate(); err != nil {
		t.Errorf("no log lines at all is allowed: %v", err)
	}

	b, err := json.Marshal(DefaultLimits())
	if err != nil || string(b) != `{"memory_pages":512,"call_timeout":"100ms","max_output_bytes":65536,"log_lines_per_second":100}` {
		t.Fatalf("marshal: %s %v", b, err)
	}
	l := DefaultLimits()
	if err := json.Unmarshal([]byte(`{"call_timeout":"250ms","memory_pages":64}`), &l); err != nil {
		t.Fatal(err)
	}
	if l != mod(func(l *Limits) { l.CallTimeout = 250 * time.Millisecond; l.MemoryPages = 64 }) {
		t.Fatalf("overrides: %+v", l)
	}
	for _, in := range []string{`{"call_timeout":100}`, `{"call_timeout":"soon"}`, `{"pages":1}`} {
		var le *LimitsError
		if err := json.Unmarshal([]byte(in), &l); !errors.As(err, &le) {
			t.Errorf("%s: %v", in, err)
		}
	}
	// Using limits does not modify the caller's value.
	s, _ := newSandbox(t, Config{})
	mine := mod(func(l *Limits) { l.MemoryPages = 64 })
	copyOf := mine
	install(t, s, "m", KindReporter, mine, example(t, "reporter"))
	if mine != copyOf {
		t.Fatal("Install modified the limits")
	}
}

func TestErrorsNameTheirCodes(t *testing.T) {
	seen := map[string]bool{}
	for _, c := range moduleCodes {
		me := &ModuleError{Defect: c.err}
		if me.Code() != c.code || seen[c.code] || !errors.Is(me, c.err) {
			t.Errorf("%v: code %s", c.err, me.Code())
		}
		seen[c.code] = true
	}
	ce := &CallError{Kind: FailTrap, Module: "m", Digest: strings.Repeat("ab", 32), Handler: HandlerJobResult, Message: "wasm error: unreachable"}
	if ce.Code() != "trap" || ce.Error() != `wasm module "m" (abababababab) coordinatord_on_job_result: trap: wasm error: unreachable` {
		t.Fatalf("CallError = %q", ce.Error())
	}
}

func TestSplitTrap(t *testing.T) {
	msg, stack := splitTrap(errors.New("wasm error: unreachable\nwasm stack trace:\n\t.a()\n\t.b(i32) i32\n\n goroutine 1 [running]:\nmain.main()"))
	if msg != "wasm error: unreachable" || !slices.Equal(stack, []string{".a()", ".b(i32) i32"}) {
		t.Fatalf("%q %q", msg, stack)
	}
	msg, stack = splitTrap(errors.New("output called twice (recovered by wazero)\nwasm stack trace:\n\tcoordinatord.output(i32,i32)"))
	if msg != "output called twice" || len(stack) != 1 {
		t.Fatalf("%q %q", msg, stack)
	}
	if msg, stack = splitTrap(errors.New("plain")); msg != "plain" || stack != nil {
		t.Fatalf("%q %q", msg, stack)
	}
}
