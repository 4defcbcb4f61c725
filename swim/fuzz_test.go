package swim

import (
	"errors"
	"strings"
	"testing"
)

// A peer's metadata and an operator's key are untrusted input: refused
// with the package's errors, never a panic, and what is accepted holds.

func FuzzDecodeMeta(f *testing.F) {
	for _, s := range []string{
		`{"id":"n1","dc":"dc1","role":"agent","v":"1.0"}`, `{"id":"n1","dc":"dc1","role":"future-role","v":"1","x":1}`,
		`{"id":"","dc":"dc1","role":"agent","v":"1"}`, `{"id":"a b","dc":"dc1","role":"agent","v":"1"}`, `{}`, `null`, ``, `[`, `{"id":1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeMeta(b)
		if err != nil {
			if !errors.Is(err, ErrInvalidMeta) {
				t.Fatalf("error %v does not wrap ErrInvalidMeta", err)
			}
			return
		}
		if err := m.validateFields(); err != nil {
			t.Fatalf("accepted %q: %v", b, err)
		}
		// What a peer gossips must round-trip.
		enc, err := m.Encode()
		if err != nil {
			t.Fatal(err)
		}
		if back, err := DecodeMeta(enc); err != nil || back != m {
			t.Fatalf("round trip of %+v: %+v, %v", m, back, err)
		}
	})
}

func FuzzParseKey(f *testing.F) {
	for _, s := range []string{
		"MDEyMzQ1Njc4OWFiY2RlZg==", "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n", "", " ", "not base64", "MDEy", "MDEyMzQ1Njc4OWFiY2RlZg",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		k, err := ParseKey(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidKey) {
				t.Fatalf("error %v does not wrap ErrInvalidKey", err)
			}
			if trimmed := strings.TrimSpace(s); len(trimmed) >= 8 && strings.Contains(err.Error(), trimmed) {
				t.Fatalf("the error shows the key: %v", err)
			}
			return
		}
		if n := len(k); n != 16 && n != 24 && n != 32 {
			t.Fatalf("accepted a key of %d bytes", n)
		}
		if back, err := ParseKey(EncodeKey(k)); err != nil || string(back) != string(k) {
			t.Fatalf("round trip: %v", err)
		}
	})
}
