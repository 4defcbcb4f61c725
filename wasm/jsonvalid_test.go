package wasm

import (
	"encoding/json"
	"strings"
	"testing"
)

var jsonCases = []string{
	``, ` `, `{}`, `[]`, `""`, `0`, `-0`, `-`, `01`, `1.`, `1.5`, `1e`, `1e+`, `1E-7`, `-1.5e10`, `.5`, `+1`,
	`true`, `tru`, `false`, `null`, `nul`, `nulll`, `{"a":1}`, `{"a":1,}`, `{"a"}`, `{"a":}`, `{a:1}`, `{"a":1 "b":2}`,
	`[1,2]`, `[1,]`, `[,1]`, `[1 2]`, ` [ 1 , { "x" : [ ] } ] `, `"\u00e9"`, `"\u00g9"`, `"\u00e"`, `"\x"`, `"\/\b\f\n\r\t\"\\"`,
	"\"tab\there\"", "\"\xff\xfe\"", `"unterminated`, `{"records":[{"sink":"results","data"`, `{}{}`, `{} x`, "\t\n\r{}\r\n",
	strings.Repeat("[", 10000) + strings.Repeat("]", 10000),
	strings.Repeat("[", 10001) + strings.Repeat("]", 10001),
	strings.Repeat(`{"a":`, 10000) + "1" + strings.Repeat("}", 10000),
}

func TestValidJSONAgreesWithEncodingJSON(t *testing.T) {
	for _, c := range jsonCases {
		if got, want := validJSON([]byte(c)), json.Valid([]byte(c)); got != want {
			t.Errorf("validJSON(%.40q) = %v, json.Valid says %v", c, got, want)
		}
	}
}

func FuzzValidJSON(f *testing.F) {
	for _, c := range jsonCases {
		f.Add([]byte(c))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if got, want := validJSON(b), json.Valid(b); got != want {
			t.Fatalf("validJSON(%q) = %v, json.Valid says %v", b, got, want)
		}
	})
}

func BenchmarkValidJSON(b *testing.B) {
	out := []byte(`{"records":[{"sink":"results","data":{"kind":"job_result","job_id":"job-7","workflow":"nightly-etl","datacenter":"dc2","source":"manager-4","stats":{"rows":1200,"seconds":3.5},"time":"2026-11-27T10:00:00Z"}}]}`)
	b.Run("validJSON", func(b *testing.B) {
		b.SetBytes(int64(len(out)))
		for b.Loop() {
			validJSON(out)
		}
	})
	b.Run("json.Valid", func(b *testing.B) {
		b.SetBytes(int64(len(out)))
		for b.Loop() {
			json.Valid(out)
		}
	})
}
