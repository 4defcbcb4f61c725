package reporters

import (
	"errors"
	"strings"
	"testing"
)

// Sink specs come from operators (module upload, CLI flags): refused with
// ErrInvalidSinkSpec, never a panic; an accepted spec prints back to
// itself and a file target never leaves the sink directory.
func FuzzParseSinkSpec(f *testing.F) {
	for _, s := range []string{
		"audit=stdout", "results=file:results.jsonl", "hook=webhook:https://example.com/path", "a=file:../x", "a=file:/etc/passwd",
		"=stdout", "a=", "a=stdout:x", "a=ftp:x", "a", "a=file:", "a=webhook:http://", "a b=stdout", "a=file:x/../../y",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		s, err := ParseSinkSpec(spec)
		if err != nil {
			if !errors.Is(err, ErrInvalidSinkSpec) {
				t.Fatalf("error %v does not wrap ErrInvalidSinkSpec", err)
			}
			return
		}
		if s.Type == SinkFile && (strings.HasPrefix(s.Target, "/") || s.Target == ".." || strings.HasPrefix(s.Target, "../")) {
			t.Fatalf("accepted file target %q leaves the sink directory", s.Target)
		}
		back, err := ParseSinkSpec(s.String())
		if err != nil || back != s {
			t.Fatalf("%q → %+v → %q → %+v, %v", spec, s, s.String(), back, err)
		}
	})
}
