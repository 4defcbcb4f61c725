package wasm

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"
	"testing"
)

// The modules' outputs are untrusted input: the parsers must refuse
// anything off the schema with an *OutputError, never panic, and what they
// accept must hold the invariants the host relies on.

var fuzzDCs = []string{"dc1", "dc2", "dc3"}

func FuzzParseCorrelationOutput(f *testing.F) {
	for _, s := range []string{
		`{"hold":true}`, `{"hold":false,"datacenters":[]}`, `{"hold":true,"datacenters":["dc1","dc1","dc3"],"notes":["a","b"]}`,
		`{"hold":"yes"}`, `{"datacenters":["dc9"]}`, `{"evict":true}`, `{"hold":null}`, `[]`, `null`, `{}`, `{"notes":[1]}`,
		`{"hold":true,"hold":false}`, `{"datacenters":"dc1"}`, ``, `{`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, out []byte) {
		o, err := ParseCorrelationOutput(out, fuzzDCs)
		if err != nil {
			var oe *OutputError
			if !errors.As(err, &oe) {
				t.Fatalf("error %v (%T) is not an *OutputError", err, err)
			}
			return
		}
		if !json.Valid(out) {
			t.Fatalf("accepted output that is not JSON: %q", out)
		}
		seen := map[string]bool{}
		for _, dc := range o.Datacenters {
			if !slices.Contains(fuzzDCs, dc) || seen[dc] {
				t.Fatalf("accepted datacenters %q (unknown or repeated) from %q", o.Datacenters, out)
			}
			seen[dc] = true
		}
		if len(o.Notes) > MaxNotes {
			t.Fatalf("accepted %d notes", len(o.Notes))
		}
		for _, n := range o.Notes {
			if len(n) > MaxNoteBytes {
				t.Fatalf("accepted a note of %d bytes", len(n))
			}
		}
	})
}

var fuzzSinks = []string{"results", "audit"}

func FuzzParseReporterOutput(f *testing.F) {
	for _, s := range []string{
		`{"records":[]}`, `{"records":[{"sink":"results","data":{"a":[1, 2]}}]}`, `{"records":[{"sink":"nope","data":1}]}`,
		`{"records":[{"sink":"audit"}]}`, `{"records":[{"sink":"audit","data":null,"x":1}]}`, `{"records":{}}`, `{}`, `null`, ``,
		`{"records":[{"sink":"results","data":"line\nbreak"}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, out []byte) {
		recs, err := ParseReporterOutput(out, fuzzSinks)
		if err != nil {
			var oe *OutputError
			if !errors.As(err, &oe) {
				t.Fatalf("error %v (%T) is not an *OutputError", err, err)
			}
			if recs != nil {
				t.Fatalf("refused output still gave %d records", len(recs))
			}
			return
		}
		for _, r := range recs {
			if !slices.Contains(fuzzSinks, r.Sink) {
				t.Fatalf("accepted a record for sink %q", r.Sink)
			}
			// A record is one line of a sink: compact JSON, no newline.
			if !json.Valid(r.Data) || bytes.ContainsAny(r.Data, "\n\r") {
				t.Fatalf("record data %q is not one line of JSON", r.Data)
			}
		}
	})
}
