package modules_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/tetratelabs/wazero"
)

// Sample events, as in wasm/ABI.md.
const (
	jobResultEvent = `{"kind":"job_result","job_id":"job-7","workflow":"nightly-etl","datacenter":"dc2",` +
		`"source":"manager-4","stats":{"rows":1200,"seconds":3.5},"time":"2026-11-27T10:00:00Z"}`
	leaseEvent = `{"kind":"lease_event","type":"expired","job_id":"job-7","owner":"gate-3","owner_dc":"dc3",` +
		`"token":12,"at":"2026-11-27T10:00:00Z","index":4711}`
)

func correlationEvent(typ string, affected ...string) string {
	b, _ := json.Marshal(map[string]any{
		"kind": "correlation", "type": typ, "episode": "ep-42",
		"severity": "medium", "previous_severity": "low",
		"affected_datacenters": affected,
		"healthy_datacenters":  []string{"dc1", "dc2"},
		"held_leases": []map[string]any{
			{"job_id": "job-7", "owner": "gate-3", "owner_dc": "dc3", "token": 12},
		},
		"time": "2026-11-27T10:00:00.123456789Z",
	})
	return string(b)
}

// TestSourcesUpToDate fails when a source of an example module (or of the Go
// SDK) changed without examples/modules/build.sh being run again: build.sh
// records the hash of every source next to each .wasm.
func TestSourcesUpToDate(t *testing.T) {
	for _, e := range examples {
		t.Run(e.dir, func(t *testing.T) {
			want, err := sourceManifest(e)
			if err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(e.dir + "/sources.sha256")
			if err != nil {
				t.Fatalf("%v (run examples/modules/build.sh)", err)
			}
			if string(got) != want {
				t.Errorf("%s/%s.wasm is out of date with its sources: run examples/modules/build.sh and commit the result\nrecorded:\n%scurrent:\n%s",
					e.dir, e.dir, got, want)
			}
		})
	}
}

// TestExports checks that each module exports exactly the ABI names it
// should (memory, marker, alloc, its handlers, and _initialize for a
// reactor) and imports only what the host offers.
func TestExports(t *testing.T) {
	ctx := context.Background()
	r := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfig().WithCloseOnContextDone(true).WithCompilationCache(compilationCache()))
	t.Cleanup(func() { r.Close(ctx) })
	for _, e := range examples {
		t.Run(e.dir, func(t *testing.T) {
			t.Parallel() // compiling a Go module takes a while
			cm, err := r.CompileModule(ctx, e.read(t))
			if err != nil {
				t.Fatal(err)
			}
			want := append([]string{"coordinatord_abi_v1", "coordinatord_alloc"}, e.handlers...)
			if strings.HasPrefix(e.dir, "go-") {
				want = append(want, "_initialize")
			}
			slices.Sort(want)
			got := slices.Sorted(maps.Keys(cm.ExportedFunctions()))
			if !slices.Equal(got, want) {
				t.Errorf("function exports %v, want %v", got, want)
			}
			if mems := slices.Sorted(maps.Keys(cm.ExportedMemories())); !slices.Equal(mems, []string{"memory"}) {
				t.Errorf("memory exports %v, want [memory]", mems)
			}
			for _, f := range cm.ImportedFunctions() {
				mod, name, _ := f.Import()
				switch {
				case mod == "wasi_snapshot_preview1":
				case mod == "coordinatord" && (name == "output" || name == "log" || name == "fail"):
				default:
					t.Errorf("imports %s.%s", mod, name)
				}
			}
			if sig := cm.ExportedFunctions()["coordinatord_alloc"]; !reflect.DeepEqual(sig.ParamTypes(), []byte{0x7f}) ||
				!reflect.DeepEqual(sig.ResultTypes(), []byte{0x7f}) {
				t.Errorf("coordinatord_alloc has type %v -> %v", sig.ParamTypes(), sig.ResultTypes())
			}
			for _, h := range e.handlers {
				sig := cm.ExportedFunctions()[h]
				if !reflect.DeepEqual(sig.ParamTypes(), []byte{0x7f, 0x7f}) || !reflect.DeepEqual(sig.ResultTypes(), []byte{0x7f}) {
					t.Errorf("%s has type %v -> %v, want (i32, i32) -> i32", h, sig.ParamTypes(), sig.ResultTypes())
				}
			}
		})
	}
}

// decode unmarshals an output strictly (unknown fields are errors, as the
// host treats them).
func decode(t *testing.T, b []byte, v any) {
	t.Helper()
	d := json.NewDecoder(strings.NewReader(string(b)))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		t.Fatalf("output %s: %v", b, err)
	}
}

type reporterOutput struct {
	Records []struct {
		Sink string          `json:"sink"`
		Data json.RawMessage `json:"data"`
	} `json:"records"`
}

func TestGoReporter(t *testing.T) {
	e := examples[0]
	in := instantiate(t, e.read(t))

	res := in.call(t, "coordinatord_on_job_result", []byte(jobResultEvent))
	if res.code != 0 {
		t.Fatalf("job_result: code %d, fail %q", res.code, res.fail)
	}
	var out reporterOutput
	decode(t, res.output, &out)
	if len(out.Records) != 1 || out.Records[0].Sink != "results" {
		t.Fatalf("job_result output %s", res.output)
	}
	var rec map[string]any
	json.Unmarshal(out.Records[0].Data, &rec)
	want := map[string]any{
		"event": "job_result", "job_id": "job-7", "workflow": "nightly-etl", "datacenter": "dc2",
		"source": "manager-4", "ok": true, "stats": map[string]any{"rows": 1200.0, "seconds": 3.5},
		"time": "2026-11-27T10:00:00Z",
	}
	if !reflect.DeepEqual(rec, want) {
		t.Errorf("job_result record %v, want %v", rec, want)
	}

	failed := strings.Replace(jobResultEvent, `"stats":{`, `"stats":{"error":"disk full",`, 1)
	res = in.call(t, "coordinatord_on_job_result", []byte(failed))
	decode(t, res.output, &out)
	json.Unmarshal(out.Records[0].Data, &rec)
	if res.code != 0 || rec["ok"] != false {
		t.Errorf("failed job: code %d, record %s", res.code, res.output)
	}

	res = in.call(t, "coordinatord_on_lease_event", []byte(leaseEvent))
	if res.code != 0 {
		t.Fatalf("lease_event: code %d, fail %q", res.code, res.fail)
	}
	decode(t, res.output, &out)
	rec = nil
	json.Unmarshal(out.Records[0].Data, &rec)
	want = map[string]any{
		"event": "lease_event", "type": "expired", "job_id": "job-7", "owner": "gate-3", "owner_dc": "dc3",
		"token": 12.0, "at": "2026-11-27T10:00:00Z", "index": 4711.0,
	}
	if len(out.Records) != 1 || out.Records[0].Sink != "results" || !reflect.DeepEqual(rec, want) {
		t.Errorf("lease_event output %s", res.output)
	}

	// Unknown fields are ignored.
	res = in.call(t, "coordinatord_on_job_result", []byte(`{"kind":"job_result","job_id":"j","future":[1,2]}`))
	if res.code != 0 || res.output == nil {
		t.Errorf("unknown field: code %d, fail %q", res.code, res.fail)
	}

	// A malformed event is a failed call with a reason, and no output.
	res = in.call(t, "coordinatord_on_job_result", []byte(`{"kind":`))
	if res.code == 0 || res.output != nil || !strings.Contains(res.fail, "decode event") {
		t.Errorf("malformed event: code %d, output %s, fail %q", res.code, res.output, res.fail)
	}
	// And the instance keeps working afterwards.
	if res = in.call(t, "coordinatord_on_job_result", []byte(jobResultEvent)); res.code != 0 {
		t.Errorf("after a failed call: code %d, fail %q", res.code, res.fail)
	}
}

type correlationOutput struct {
	Hold        *bool     `json:"hold"`
	Datacenters *[]string `json:"datacenters"`
	Notes       []string  `json:"notes"`
}

func TestGoCorrelation(t *testing.T) {
	in := instantiate(t, examples[1].read(t))
	for _, typ := range []string{"partition_detected", "severity_changed"} {
		// Two or more failed datacenters: hold them.
		for _, dcs := range [][]string{{"dc3", "dc4"}, {"dc3", "dc4", "dc5"}} {
			res := in.call(t, "coordinatord_on_correlation", []byte(correlationEvent(typ, dcs...)))
			var out correlationOutput
			decode(t, res.output, &out)
			if res.code != 0 || out.Hold == nil || !*out.Hold || out.Datacenters == nil ||
				!slices.Equal(*out.Datacenters, dcs) || len(out.Notes) != 1 {
				t.Errorf("%s %v: code %d, output %s", typ, dcs, res.code, res.output)
			}
			if want := fmt.Sprintf("%d datacenters dark", len(dcs)); len(out.Notes) == 1 && !strings.Contains(out.Notes[0], want) {
				t.Errorf("%s %v: note %q, want %q", typ, dcs, out.Notes[0], want)
			}
			if len(res.logs) != 1 || !strings.HasPrefix(res.logs[0], "2 ") {
				t.Errorf("%s %v: logs %q, want one warning", typ, dcs, res.logs)
			}
		}
		// One failed datacenter: an independent failure, no hold.
		for _, dcs := range [][]string{{"dc3"}, {}} {
			res := in.call(t, "coordinatord_on_correlation", []byte(correlationEvent(typ, dcs...)))
			var out correlationOutput
			decode(t, res.output, &out)
			if res.code != 0 || out.Hold == nil || *out.Hold || out.Datacenters != nil || len(out.Notes) != 1 {
				t.Errorf("%s %v: code %d, output %s", typ, dcs, res.code, res.output)
			}
		}
	}
	// Healed: the built-in decision, with a note.
	res := in.call(t, "coordinatord_on_correlation", []byte(correlationEvent("partition_healed", "dc3", "dc4")))
	var out correlationOutput
	decode(t, res.output, &out)
	if res.code != 0 || out.Hold != nil || out.Datacenters != nil || len(out.Notes) != 1 {
		t.Errorf("partition_healed: code %d, output %s", res.code, res.output)
	}
}

func TestCReporter(t *testing.T) {
	in := instantiate(t, examples[2].read(t))
	for handler, ev := range map[string]string{
		"coordinatord_on_job_result":  jobResultEvent,
		"coordinatord_on_lease_event": leaseEvent,
	} {
		res := in.call(t, handler, []byte(ev))
		var out reporterOutput
		decode(t, res.output, &out)
		if res.code != 0 || len(out.Records) != 1 || out.Records[0].Sink != "results" || string(out.Records[0].Data) != ev {
			t.Errorf("%s: code %d, output %s", handler, res.code, res.output)
		}
	}
	res := in.call(t, "coordinatord_on_job_result", []byte(`[1]`))
	if res.code == 0 || res.output != nil || res.fail != "event is not a JSON object" {
		t.Errorf("non-object event: code %d, output %s, fail %q", res.code, res.output, res.fail)
	}
}

// TestMemoryReused sends events of many sizes, up to 1 MiB, and checks that
// linear memory stops growing (the input buffer is reused and nothing leaks
// from call to call) and stays within the default limit of 512 pages.
func TestMemoryReused(t *testing.T) {
	for _, e := range []example{examples[0], examples[2]} {
		t.Run(e.dir, func(t *testing.T) {
			in := instantiate(t, e.read(t))
			initial := in.mod.Memory().Size() / 65536
			event := func(pad int) []byte {
				return []byte(strings.Replace(jobResultEvent, `"stats":{`, `"stats":{"pad":"`+strings.Repeat("x", pad)+`",`, 1))
			}
			sizes := []int{0, 10, 5000, 100_000, 1 << 20, 100, 300_000, 0}
			var pages []uint32
			for round := 0; round < 6; round++ {
				for _, s := range sizes {
					ev := event(s)
					res := in.call(t, "coordinatord_on_job_result", ev)
					if res.code != 0 {
						t.Fatalf("size %d: code %d, fail %q", len(ev), res.code, res.fail)
					}
					if !strings.Contains(string(res.output), `"pad":"`+strings.Repeat("x", s)+`"`) {
						t.Fatalf("size %d: output does not hold the event's stats", len(ev))
					}
				}
				pages = append(pages, in.mod.Memory().Size()/65536)
			}
			t.Logf("memory pages: %d after instantiation, %v after each round", initial, pages)
			if pages[len(pages)-1] > pages[1] {
				t.Errorf("memory keeps growing: pages after each round %v", pages)
			}
			if pages[len(pages)-1] > 512 {
				t.Errorf("%d pages: over the default limit of 512", pages[len(pages)-1])
			}
		})
	}
}
