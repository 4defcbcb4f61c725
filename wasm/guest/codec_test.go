package guest

import (
	"encoding/json"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"
)

// The plain types have the same fields and tags as the event types but not
// their UnmarshalJSON: encoding/json decodes them by reflection, the
// reference the SDK's decoders are checked against.
type (
	plainCorrelation CorrelationEvent
	plainJobResult   JobResult
	plainLeaseEvent  LeaseEvent
)

var decodeCorpus = []string{
	// The samples of wasm/ABI.md.
	`{"kind":"correlation","type":"partition_detected","episode":"ep-42","severity":"medium","previous_severity":"low",
	  "affected_datacenters":["dc3","dc4","dc5"],"healthy_datacenters":["dc1","dc2"],
	  "held_leases":[{"job_id":"job-7","owner":"gate-3","owner_dc":"dc3","token":12}],"time":"2026-11-27T10:00:00.123456789Z"}`,
	`{"kind":"job_result","job_id":"job-7","workflow":"nightly-etl","datacenter":"dc2","source":"manager-4",
	  "stats":{"rows":1200,"seconds":3.5},"time":"2026-11-27T10:00:00Z"}`,
	`{"kind":"lease_event","type":"expired","job_id":"job-7","owner":"gate-3","owner_dc":"dc3","token":12,
	  "at":"2026-11-27T10:00:00Z","index":4711}`,
	// Whitespace, unknown fields of every type, nulls, empty arrays.
	" \t\n{ \"job_id\" : \"j\" , \"future\" : [ 1 , -2.5e+3 , true , false , null , \"x\" , { \"a\" : [ ] } , [ ] ] } \r\n",
	`{"job_id":null,"stats":null,"time":null,"token":null,"affected_datacenters":null,"held_leases":null}`,
	`{"affected_datacenters":[],"held_leases":[],"healthy_datacenters":["a"]}`,
	`{"held_leases":[{},{"token":0},{"job_id":"x","extra":{"deep":[[[]]]}}]}`,
	`{"stats":[1,2,{"a":"b"}]}`, `{"stats":"text"}`, `{"stats":12.5}`, `{"stats":  {"x" : 1 }  }`,
	`{}`, `null`, ` null `,
	// Duplicate keys: the last wins.
	`{"job_id":"a","job_id":"b","affected_datacenters":["x","y"],"affected_datacenters":["z"]}`,
	// Escapes and Unicode.
	`{"job_id":"a\"b\\c\/d\b\f\n\r\t","workflow":"\u00e9\u4e2d\uD83D\uDE00","source":"é中😀"}`,
	`{"job_id":"\uD83D","workflow":"\uDE00x","source":"\uD83D\u0041","datacenter":"\uD83Dabc"}`,
	"{\"job_id\":\"bad \xff utf8 \xe4\xb8\",\"source\":\"\xed\xa0\x80\"}",
	`{"job_id":"0123456789abcdefghijklmnopqrstuvwxyz"}`,
	// Numbers.
	`{"token":0,"index":18446744073709551615}`,
	`{"time":"2026-11-27T10:00:00+02:00","at":"2026-11-27T10:00:00.5-07:30"}`,
	`{"time":"2026-11-27T10:00:00.1Z","at":"2024-02-29T23:59:59.000000001Z"}`,
	`{"time":"0000-01-01T00:00:00Z","at":"9999-12-31T23:59:59.999999999Z"}`,
	`{"time":"2026-11-27T10:00:00.1234567891Z"}`, `{"time":"2026-11-27T10:00:00.Z"}`,
	`{"time":"2023-02-29T10:00:00Z"}`, `{"time":"2026-13-01T10:00:00Z"}`, `{"time":"2026-00-01T10:00:00Z"}`,
	`{"time":"2026-11-31T10:00:00Z"}`, `{"time":"2026-11-27T10:60:00Z"}`, `{"time":"2026-11-27T10:00:60Z"}`,
	`{"time":"2026-11-27t10:00:00z"}`, `{"time":"2026-11-27 10:00:00Z"}`, `{"time":"+026-11-27T10:00:00Z"}`,
	`{"time":"2026-11-27T10:00:0xZ"}`, `{"time":"2026-11-27T10:00:00.x1Z"}`,
	// Invalid: each must fail in both decoders.
	``, ` `, `{`, `}`, `[]`, `5`, `"x"`, `true`, `{"job_id"}`, `{"job_id":}`, `{"job_id":"x",}`, `{,}`,
	`{"job_id":"x"}}`, `{"job_id":"x"} x`, `{"job_id":"x" "source":"y"}`, `{"a":[1,]}`, `{"a":[,1]}`,
	`{"a":01}`, `{"a":1.}`, `{"a":.5}`, `{"a":1e}`, `{"a":-}`, `{"a":+1}`, `{"a":tru}`, `{"a":nul}`,
	`{"a":"x`, "{\"a\":\"\x01\"}", `{"a":"\x"}`, `{"a":"\u12"}`, `{"a":"\u12g4"}`, `{job_id:"x"}`,
	`{"token":-1}`, `{"token":1.5}`, `{"token":1e2}`, `{"token":18446744073709551616}`, `{"token":"1"}`,
	`{"job_id":5}`, `{"job_id":["x"]}`, `{"affected_datacenters":"dc1"}`, `{"affected_datacenters":[1]}`,
	`{"held_leases":[1]}`, `{"held_leases":{}}`, `{"time":"yesterday"}`, `{"time":5}`,
	`{"time":"2026-11-27T10:00:00"}`, `{"time":"2026-11-27T24:00:00Z"}`, `{"time":"2026\u002d11-27T10:00:00Z"}`,
	`{"stats":}`, `{"stats":[}`, `{"a":{"b":}}`,
}

func checkAll(t *testing.T, in string) {
	t.Helper()
	checkDecodeAs[CorrelationEvent, plainCorrelation](t, in)
	checkDecodeAs[JobResult, plainJobResult](t, in)
	checkDecodeAs[LeaseEvent, plainLeaseEvent](t, in)
}

func checkDecodeAs[T any, P any](t *testing.T, in string) {
	t.Helper()
	var got T
	errGot := any(&got).(json.Unmarshaler).UnmarshalJSON([]byte(in))
	var want T
	errWant := json.Unmarshal([]byte(in), reflect.ValueOf(&want).Convert(reflect.TypeFor[*P]()).Interface())
	if (errGot == nil) != (errWant == nil) {
		t.Errorf("%T %q: error %v, encoding/json: %v", got, in, errGot, errWant)
		return
	}
	if errGot == nil && !reflect.DeepEqual(got, want) {
		t.Errorf("%T %q:\n got %#v\nwant %#v", got, in, got, want)
	}
}

func TestDecodeMatchesEncodingJSON(t *testing.T) {
	for _, in := range decodeCorpus {
		checkAll(t, in)
	}
}

func FuzzDecode(f *testing.F) {
	for _, in := range decodeCorpus {
		f.Add(in)
	}
	f.Fuzz(func(t *testing.T, in string) {
		checkAll(t, in)
		Lookup(json.RawMessage(in), "a")
	})
}

func TestDecodeSample(t *testing.T) {
	var ev CorrelationEvent
	if err := json.Unmarshal([]byte(decodeCorpus[0]), &ev); err != nil {
		t.Fatal(err)
	}
	want := CorrelationEvent{
		Kind: KindCorrelation, Type: PartitionDetected, Episode: "ep-42", Severity: SeverityMedium, PreviousSeverity: SeverityLow,
		AffectedDatacenters: []string{"dc3", "dc4", "dc5"}, HealthyDatacenters: []string{"dc1", "dc2"},
		HeldLeases: []HeldLease{{JobID: "job-7", Owner: "gate-3", OwnerDC: "dc3", Token: 12}},
		Time:       time.Date(2026, 11, 27, 10, 0, 0, 123456789, time.UTC),
	}
	if !reflect.DeepEqual(ev, want) {
		t.Errorf("got %#v", ev)
	}
	var hl HeldLease
	if err := hl.UnmarshalJSON([]byte(`{"job_id":"j","token":3}`)); err != nil || hl != (HeldLease{JobID: "j", Token: 3}) {
		t.Errorf("held lease %#v, %v", hl, err)
	}
}

// The decoder's strings must not alias its input: the SDK reuses the input
// buffer for the next event.
func TestDecodeCopies(t *testing.T) {
	in := []byte(`{"job_id":"job-7","workflow":"w\n","stats":{"a":1},"time":"2026-11-27T10:00:00Z"}`)
	var ev JobResult
	if err := ev.UnmarshalJSON(in); err != nil {
		t.Fatal(err)
	}
	for i := range in {
		in[i] = 'X'
	}
	if ev.JobID != "job-7" || ev.Workflow != "w\n" || string(ev.Stats) != `{"a":1}` {
		t.Errorf("decoded values changed with the input: %#v", ev)
	}
}

func TestDecodeErrors(t *testing.T) {
	for in, want := range map[string]string{
		`{"job_id":5}`:             "job_result event: offset 10: want a string",
		`{"job_id":"x"`:            "job_result event: unexpected end of JSON",
		`{"job_id":"x"} y`:         `job_result event: offset 15: unexpected 'y' after the top-level value`,
		`{"time":"yesterday"}`:     `job_result event: offset 8: parsing time "yesterday"`,
		`{"token":-1}`:             "want an unsigned 64-bit integer, got -1",
		`{"affected_datacenters"}`: "want ':'",
	} {
		var ev JobResult
		err := ev.UnmarshalJSON([]byte(in))
		if strings.Contains(in, "token") || strings.Contains(in, "affected") {
			var le CorrelationEvent
			err = le.UnmarshalJSON([]byte(in))
			if strings.Contains(in, "token") {
				var l LeaseEvent
				err = l.UnmarshalJSON([]byte(in))
			}
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want %q", in, err, want)
		}
	}
}

func TestLookup(t *testing.T) {
	stats := json.RawMessage(` {"rows": 1200, "error" : {"code":"x"}, "ok":false, "rows":7 } `)
	for key, want := range map[string]string{
		"rows": "7", "error": `{"code":"x"}`, "ok": "false", "code": "", "missing": "",
	} {
		if got := string(Lookup(stats, key)); got != want {
			t.Errorf("Lookup(%q) = %q, want %q", key, got, want)
		}
	}
	for _, obj := range []string{``, `null`, `[1]`, `"rows"`, `{"rows":1`, `{"rows":1} x`} {
		if got := Lookup(json.RawMessage(obj), "rows"); got != nil {
			t.Errorf("Lookup(%s) = %s, want nil", obj, got)
		}
	}
}

// sameJSON fails unless a and b are valid JSON encoding the same value.
func sameJSON(t *testing.T, what string, a, b []byte) {
	t.Helper()
	var va, vb any
	if err := json.Unmarshal(a, &va); err != nil {
		t.Errorf("%s: %s is not valid JSON: %v", what, a, err)
		return
	}
	if err := json.Unmarshal(b, &vb); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if !reflect.DeepEqual(va, vb) {
		t.Errorf("%s:\n got %s\nwant %s", what, a, b)
	}
}

func TestEncodeOutputs(t *testing.T) {
	for _, tc := range []struct {
		out  CorrelationOutput
		want string
	}{
		{CorrelationOutput{}, `{}`},
		{BuiltIn(), `{}`},
		{BuiltIn("n"), `{"notes":["n"]}`},
		{Hold(nil), `{"hold":true}`},
		{Hold([]string{}), `{"hold":true,"datacenters":[]}`},
		{Hold([]string{"dc3", "dc4"}, "a", "b"), `{"hold":true,"datacenters":["dc3","dc4"],"notes":["a","b"]}`},
		{DontHold("one dark"), `{"hold":false,"notes":["one dark"]}`},
	} {
		got, err := tc.out.MarshalJSON()
		if err != nil || string(got) != tc.want {
			t.Errorf("%+v: %s, %v; want %s", tc.out, got, err, tc.want)
		}
		type plain CorrelationOutput
		ref, _ := json.Marshal(plain(tc.out))
		sameJSON(t, tc.want, got, ref)
	}

	var r ReporterOutput
	if got, _ := r.MarshalJSON(); string(got) != `{"records":[]}` {
		t.Errorf("zero reporter output %s", got)
	}
	r.Add("a", 1)
	r.Add("b", json.RawMessage(`{"x":[1,2]}`))
	if got, _ := json.Marshal(r); string(got) != `{"records":[{"sink":"a","data":1},{"sink":"b","data":{"x":[1,2]}}]}` {
		t.Errorf("reporter output %s", got)
	}
	if got, _ := Emit("s", nil).MarshalJSON(); string(got) != `{"records":[{"sink":"s","data":null}]}` {
		t.Errorf("nil data %s", got)
	}
	if _, err := Emit("s", math.NaN()).MarshalJSON(); err == nil {
		t.Errorf("NaN data encoded")
	}
	if _, err := Emit("s", map[string]any{"a": []any{math.Inf(1)}}).MarshalJSON(); err == nil {
		t.Errorf("Inf data encoded")
	}
}

type point struct {
	X, Y int
	Tag  string `json:"tag,omitempty"`
}

type textish int

func (t textish) MarshalText() ([]byte, error) { return []byte("t" + string(rune('0'+int(t)))), nil }

// TestEncodeValuesMatchEncodingJSON checks the fast paths of record data
// against encoding/json (compared as decoded values: the SDK does not
// escape HTML characters, encoding/json does).
func TestEncodeValuesMatchEncodingJSON(t *testing.T) {
	tm := time.Date(2026, 11, 27, 10, 0, 0, 5, time.FixedZone("x", 3600))
	for _, v := range []any{
		nil, "", "plain", "esc \" \\ \n \r \t \x00 \x1f \x7f <&> \u2028 \u2029 é 😀", "bad \xff \xe4\xb8 utf8",
		strings.Repeat("0123456789abcdef", 5) + "\"" + strings.Repeat("x", 9),
		true, false, 0, -1, int8(-8), int16(16), int32(-32), int64(math.MinInt64), uint(1), uint8(8), uint16(16),
		uint32(32), uint64(math.MaxUint64), 0.0, -0.0, 1.5, 1e20, 1e21, 1e-6, 1e-7, 123456789.125, math.MaxFloat64,
		math.SmallestNonzeroFloat64, float32(0.1), float32(1e21), float32(1e-7), json.Number("1.5e3"), json.Number(""),
		json.RawMessage(`{"a":[1,{"b":null}]}`), json.RawMessage(nil), tm,
		[]string{"a", "b\n"}, []string(nil), []string{}, []any{1, "a", nil, []any{true}}, []any(nil),
		map[string]any{"b": 1, "a": map[string]any{"z": []any{}, "y": nil}, "": "empty", "é": 1},
		map[string]any(nil), map[string]string{"k": "v", "a": "b"}, map[string]string(nil),
		point{1, 2, "t"}, &point{X: 3}, []point{{}}, []int{1, 2}, map[string]int{"a": 1}, map[textish]int{1: 2},
		new(Object).String("s", "v").Int64("i", -1).Uint64("u", 2).Float64("f", 0.5).Bool("b", true).
			Time("t", tm).Raw("r", json.RawMessage(`[1]`)).Raw("n", nil).Any("a", map[string]any{"x": 1}),
		new(Object), (*Object)(nil),
	} {
		got, err := appendValue(nil, v)
		if err != nil {
			t.Errorf("%#v: %v", v, err)
			continue
		}
		want, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("%#v: encoding/json: %v", v, err)
		}
		sameJSON(t, string(want), got, want)
		// Scalars and strings are byte-for-byte as encoding/json writes them,
		// but for HTML escaping.
		if s, ok := v.(string); ok && !strings.ContainsAny(s, "<>&") && string(got) != string(want) {
			t.Errorf("%q: %s, encoding/json %s", s, got, want)
		}
		if f, ok := v.(float64); ok && string(got) != string(want) {
			t.Errorf("%v: %s, encoding/json %s", f, got, want)
		}
	}
	if _, err := appendValue(nil, json.Number("1x")); err == nil {
		t.Errorf("invalid json.Number encoded")
	}
	if _, err := new(Object).Float64("f", math.NaN()).MarshalJSON(); err == nil {
		t.Errorf("Object with NaN encoded")
	}
	if _, err := new(Object).Any("c", make(chan int)).MarshalJSON(); err == nil {
		t.Errorf("Object with a channel encoded")
	}
}

func FuzzEncodeString(f *testing.F) {
	for _, s := range []string{"", "a", "\"", "\\", "\x00", "\xff", "\u2028", "é", "0123456789abcdef\"", "<>&"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := appendString(nil, s)
		want, _ := json.Marshal(s)
		sameJSON(t, s, got, want)
		// And the decoder reads it back as encoding/json does.
		d := decoder{b: got}
		raw, _, err := d.rawString()
		var ref string
		json.Unmarshal(want, &ref)
		if err != nil || string(raw) != ref || d.i != len(got) {
			t.Errorf("%q: read back %q, %v", s, raw, err)
		}
	})
}

func TestPlain8(t *testing.T) {
	for c := 0; c < 256; c++ {
		for pos := 0; pos < 8; pos++ {
			b := []byte("abcdefgh")
			b[pos] = byte(c)
			want := c >= 0x20 && c < 0x80 && c != '"' && c != '\\'
			if got := plain8(load64(string(b), 0)); got != want {
				t.Errorf("byte %#x at %d: plain8 %v", c, pos, got)
			}
		}
	}
}

func TestLogFormat(t *testing.T) {
	for _, tc := range []struct {
		msg  string
		args []any
		want string
	}{
		{"m", nil, "m"},
		{"m", []any{"k", "v"}, "m k=v"},
		{"m", []any{"k", "two words", "n", 3, "b", true, "e", "", "q", `a"b`, "eq", "a=b"}, `m k="two words" n=3 b=true e="" q="a\"b" eq="a=b"`},
		{"m", []any{"i64", int64(-4), "u64", uint64(5), "f", 1.5, "nil", nil}, "m i64=-4 u64=5 f=1.5 nil=<nil>"},
		{"m", []any{"odd"}, "m !BADKEY=odd"},
	} {
		if got := format(tc.msg, tc.args); got != tc.want {
			t.Errorf("format(%q, %v) = %q, want %q", tc.msg, tc.args, got, tc.want)
		}
	}
}
