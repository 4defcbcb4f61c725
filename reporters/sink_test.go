package reporters

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestParseSinkSpec(t *testing.T) {
	cases := []struct {
		name    string
		spec    string
		want    SinkSpec
		wantErr string // a part of the error; "" means success
	}{
		{"a stdout sink takes no target", "audit=stdout", SinkSpec{Name: "audit", Type: SinkStdout}, ""},
		{"a file sink takes a relative path", "results=file:results.jsonl", SinkSpec{Name: "results", Type: SinkFile, Target: "results.jsonl"}, ""},
		{"a file path in a subdirectory is cleaned", "r=file:a/./b//c.jsonl", SinkSpec{Name: "r", Type: SinkFile, Target: "a/b/c.jsonl"}, ""},
		{"a webhook sink takes an https URL with its colons", "hook=webhook:https://host:8443/path?q=1", SinkSpec{Name: "hook", Type: SinkWebhook, Target: "https://host:8443/path?q=1"}, ""},
		{"a spec without '=' is refused", "results", SinkSpec{}, "no '='"},
		{"an empty name is refused and named", "=stdout", SinkSpec{}, "name: empty"},
		{"a name with a dot is refused and the byte named", "a.b=stdout", SinkSpec{}, `name: "a.b" has '.' at byte 1`},
		{"a name longer than 64 bytes is refused", strings.Repeat("n", 65) + "=stdout", SinkSpec{}, "name: longer than 64"},
		{"a missing type is refused", "x=", SinkSpec{}, "type: missing"},
		{"an unknown type is refused and named", "x=kafka:topic", SinkSpec{}, `type: unknown type "kafka"`},
		{"stdout with a target is refused", "x=stdout:file.txt", SinkSpec{}, "target: a stdout sink takes no target"},
		{"a file sink without a path is refused", "x=file:", SinkSpec{}, "target: a file sink needs a path"},
		{"an absolute file path is refused", "x=file:/etc/passwd", SinkSpec{}, "is absolute"},
		{"a path that climbs out with .. is refused", "x=file:../outside.jsonl", SinkSpec{}, "leaves the sink directory"},
		{"a path that climbs out in the middle is refused", "x=file:a/../../b", SinkSpec{}, "leaves the sink directory"},
		{"a backslash .. is refused too", `x=file:a\..\..\b`, SinkSpec{}, "leaves the sink directory"},
		{"the sink directory itself is refused", "x=file:.", SinkSpec{}, "names the sink directory itself"},
		{"a webhook without a URL is refused", "x=webhook:", SinkSpec{}, "needs a URL"},
		{"a webhook with another scheme is refused", "x=webhook:ftp://host/x", SinkSpec{}, "scheme must be https or http"},
		{"a webhook without a host is refused", "x=webhook:https:///path", SinkSpec{}, "has no host"},
		{"a webhook URL with credentials is refused", "x=webhook:https://u:p@host/x", SinkSpec{}, "carries credentials"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := ParseSinkSpec(c.spec)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("ParseSinkSpec(%q) = %v, want an error containing %q", c.spec, err, c.wantErr)
				}
				if !errors.Is(err, ErrInvalidSinkSpec) {
					t.Fatalf("error %v does not wrap ErrInvalidSinkSpec", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseSinkSpec(%q): %v", c.spec, err)
			}
			if got != c.want {
				t.Fatalf("ParseSinkSpec(%q) = %+v, want %+v", c.spec, got, c.want)
			}
			again, err := ParseSinkSpec(got.String())
			if err != nil || again != got {
				t.Fatalf("String() %q does not parse back: %+v, %v", got.String(), again, err)
			}
		})
	}
}

func TestParseSinkSpecsRefusesARepeatedName(t *testing.T) {
	_, err := ParseSinkSpecs([]string{"a=stdout", "a=file:x.jsonl"})
	if err == nil || !strings.Contains(err.Error(), `sink "a" is given twice`) {
		t.Fatalf("got %v", err)
	}
}

func readLines(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return lines
}

func TestFileSinkConcurrentWritersProduceWholeLines(t *testing.T) {
	dir := t.TempDir()
	s, err := openFileSink(dir, "sub/out.jsonl", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	const writers, each = 8, 500
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				// A long record, so that lines straddle buffer flushes.
				rec := fmt.Sprintf(`{"w":%d,"i":%d,"pad":%q}`, w, i, strings.Repeat("x", 200))
				if err := s.Write(context.Background(), []byte(rec)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	lines := readLines(t, filepath.Join(dir, "sub", "out.jsonl"))
	if len(lines) != writers*each {
		t.Fatalf("%d lines, want %d", len(lines), writers*each)
	}
	seen := map[string]bool{}
	for _, l := range lines {
		var v struct{ W, I int }
		if err := json.Unmarshal([]byte(l), &v); err != nil {
			t.Fatalf("line %q is not JSON: %v", l, err)
		}
		seen[fmt.Sprint(v.W, v.I)] = true
	}
	if len(seen) != writers*each {
		t.Fatalf("%d distinct records, want %d", len(seen), writers*each)
	}
}

func TestFileSinkFlushesWithinItsIntervalAndOnClose(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "out.jsonl")
	s, err := openFileSink(dir, "out.jsonl", 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Write(context.Background(), []byte(`{"n":1}`)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, _ := os.ReadFile(path)
		if string(b) == "{\"n\":1}\n" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the record was not flushed: file holds %q", b)
		}
		time.Sleep(5 * time.Millisecond)
	}

	// A long interval: only Close writes the second record out.
	s2, err := openFileSink(dir, "out.jsonl", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := s2.Write(context.Background(), []byte("{\n  \"n\": 2\n}")); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); strings.Contains(string(b), `"n":2`) {
		t.Fatal("written before a flush")
	}
	if err := s2.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	lines := readLines(t, path)
	if len(lines) != 2 || lines[1] != `{"n":2}` {
		t.Fatalf("lines %q: want the pretty-printed record compacted to one line", lines)
	}
	if err := s2.Write(context.Background(), []byte(`{}`)); !errors.Is(err, ErrClosed) {
		t.Fatalf("write after close: %v", err)
	}
}

func TestFileSinkRefusesPathsOutsideItsDirectory(t *testing.T) {
	dir := t.TempDir()
	for _, p := range []string{"../x.jsonl", "/tmp/x.jsonl", "a/../../x.jsonl", ""} {
		if _, err := openFileSink(dir, p, time.Second); err == nil {
			t.Errorf("openFileSink(%q) succeeded", p)
		}
	}
	if _, err := openFileSink("", "x.jsonl", time.Second); err == nil || !strings.Contains(err.Error(), "no sink directory") {
		t.Errorf("no sink dir: %v", err)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(dir), "x.jsonl")); err == nil {
		t.Fatal("a file was created outside the sink directory")
	}
}

func TestStdoutSinkWritesLinesToItsWriterNotTheLog(t *testing.T) {
	var out syncBuffer
	cfg := DefaultConfig()
	cfg.Stdout = &out
	cfg = cfg.withDefaults()
	ss := newSinkSet(&cfg)
	a, err := ss.get(SinkSpec{Name: "a", Type: SinkStdout})
	if err != nil {
		t.Fatal(err)
	}
	b, err := ss.get(SinkSpec{Name: "b", Type: SinkStdout})
	if err != nil {
		t.Fatal(err)
	}
	if a != b {
		t.Fatal("two stdout sinks do not share one writer")
	}
	_ = a.Write(context.Background(), []byte(`{"x":1}`))
	if err := ss.close(); err != nil {
		t.Fatal(err)
	}
	if out.String() != "{\"x\":1}\n" {
		t.Fatalf("stdout got %q", out.String())
	}
	if _, err := ss.get(SinkSpec{Name: "a", Type: SinkStdout}); !errors.Is(err, ErrClosed) {
		t.Fatalf("get after close: %v", err)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestWebhookRetriesA5xxThenSucceeds(t *testing.T) {
	var calls atomic.Int32
	var got atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Content-Type") != "application/json" || r.Method != http.MethodPost {
			t.Errorf("got %s with Content-Type %q", r.Method, r.Header.Get("Content-Type"))
		}
		if calls.Add(1) <= 2 {
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		b, _ := io.ReadAll(r.Body)
		got.Store(string(b))
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	s := newWebhookSink(srv.URL, srv.Client(), time.Second, 3, time.Millisecond)
	if err := s.Write(context.Background(), []byte(`{"job":"j1"}`)); err != nil {
		t.Fatal(err)
	}
	if calls.Load() != 3 || got.Load() != `{"job":"j1"}` {
		t.Fatalf("%d calls, body %v", calls.Load(), got.Load())
	}
}

func TestWebhookGivesUpAfterItsRetries(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		http.Error(w, "down", http.StatusBadGateway)
	}))
	defer srv.Close()
	s := newWebhookSink(srv.URL, srv.Client(), time.Second, 2, time.Millisecond)
	err := s.Write(context.Background(), []byte(`{}`))
	if err == nil || !strings.Contains(err.Error(), "HTTP 502") || !strings.Contains(err.Error(), "after 3 attempts") {
		t.Fatalf("got %v", err)
	}
	if calls.Load() != 3 {
		t.Fatalf("%d calls, want 1 + 2 retries", calls.Load())
	}
}

func TestWebhookDoesNotRetryA4xx(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		http.Error(w, "bad record", http.StatusBadRequest)
	}))
	defer srv.Close()
	s := newWebhookSink(srv.URL, srv.Client(), time.Second, 5, time.Millisecond)
	err := s.Write(context.Background(), []byte(`{}`))
	if err == nil || !strings.Contains(err.Error(), "HTTP 400: bad record") || !strings.Contains(err.Error(), "not retried") {
		t.Fatalf("got %v", err)
	}
	if calls.Load() != 1 {
		t.Fatalf("%d calls, want 1", calls.Load())
	}
}

func TestWebhookTimesOutEachAttemptAndRetries(t *testing.T) {
	var calls atomic.Int32
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			select { // hang until the client gives up
			case <-r.Context().Done():
			case <-release:
			}
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	defer close(release)
	s := newWebhookSink(srv.URL, srv.Client(), 50*time.Millisecond, 1, time.Millisecond)
	start := time.Now()
	if err := s.Write(context.Background(), []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if calls.Load() != 2 {
		t.Fatalf("%d calls, want a timed-out attempt and a retry", calls.Load())
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Fatalf("took %s: the attempt's timeout did not apply", el)
	}
}

func TestWebhookStopsWhenTheContextEnds(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down", http.StatusInternalServerError)
	}))
	defer srv.Close()
	s := newWebhookSink(srv.URL, srv.Client(), time.Second, 100, 50*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := s.Write(ctx, []byte(`{}`))
	if err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v", err)
	}
	if time.Since(start) > 2*time.Second {
		t.Fatal("retries went on after the context ended")
	}
}
