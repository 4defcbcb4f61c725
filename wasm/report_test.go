package wasm

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
)

// lockedBuffer is a bytes.Buffer safe for concurrent writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// failingWriter fails every write, like a closed pipe.
type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) {
	return 0, errors.New("write /dev/stdout: broken pipe")
}

// When the error hook fails or panics, a plain line on Stderr still names
// the time, the module, the datacenters and the job ids.
func TestErrorHookFallback(t *testing.T) {
	cases := []struct {
		name   string
		hook   func(context.Context, Failure) error
		logTo  func() *slog.Logger // for the default hook
		reason string
	}{
		{name: "a hook that panics", hook: func(context.Context, Failure) error { panic("hook exploded") }, reason: "panic: hook exploded"},
		{name: "a hook that returns an error", hook: func(context.Context, Failure) error { return errors.New("report queue full") }, reason: "report queue full"},
		{name: "the default hook whose log handler cannot write",
			logTo:  func() *slog.Logger { return slog.New(slog.NewJSONHandler(failingWriter{}, nil)) },
			reason: "log handler: write /dev/stdout: broken pipe"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			clock := newFakeClock()
			stderr := &lockedBuffer{}
			s, _ := newSandbox(t, Config{Clock: clock.Now, Stderr: stderr, ErrorHook: tc.hook})
			if tc.logTo != nil {
				s.log = tc.logTo()
			}
			info := install(t, s, "bad", KindReporter, relaxed(), example(t, "unreachable"))
			c := jobResult(t, "dc3", "job-7")
			c.Datacenters = []string{"dc3", "dc4"}
			c.JobIDs = []string{"job-7", "job-9"}

			res := s.Call(context.Background(), "bad", c)
			if ce := asCallError(t, res.Err); ce.Kind != FailTrap {
				t.Fatalf("err = %v", res.Err)
			}
			line := stderr.String()
			for _, want := range []string{"2026-11-27T10:00:00Z", "module=bad", "digest=" + info.Digest[:12],
				"datacenters=dc3,dc4", "job_ids=job-7,job-9", "kind=trap", tc.reason, "unreachable"} {
				if !strings.Contains(line, want) {
					t.Errorf("fallback line %q lacks %q", line, want)
				}
			}
			if strings.Count(line, "\n") != 1 {
				t.Errorf("want one line, got %q", line)
			}
			if got := value(s.metrics.hookFailures); got != 1 {
				t.Errorf("hook failures = %v", got)
			}
			// The sandbox keeps working.
			install(t, s, "good", KindReporter, relaxed(), example(t, "reporter"))
			healthyCall(t, s)
		})
	}
}

func TestErrorHookReceivesTheFailure(t *testing.T) {
	clock := newFakeClock()
	var got []Failure
	s, logs := newSandbox(t, Config{Clock: clock.Now, ErrorHook: func(_ context.Context, f Failure) error {
		got = append(got, f)
		return nil
	}})
	info := install(t, s, "bad", KindReporter, relaxed(), example(t, "unreachable"))
	c := jobResult(t, "dc3", "job-7")
	s.Call(context.Background(), "bad", c)
	if len(got) != 1 {
		t.Fatalf("%d reports", len(got))
	}
	f := got[0]
	if !f.Time.Equal(clock.Now()) || f.Module != "bad" || f.Digest != info.Digest || f.Handler != HandlerJobResult ||
		f.EventKind != EventJobResult || !slices.Equal(f.Datacenters, []string{"dc3"}) || !slices.Equal(f.JobIDs, []string{"job-7"}) ||
		f.Kind != FailTrap || f.Message != "wasm error: unreachable" || !inOrder(f.Stack, []string{"bad.check_fields", "bad.parse_event"}) || f.Duration <= 0 {
		t.Fatalf("failure = %+v", f)
	}
	if n := len(logs.records(t, "wasm call failed")); n != 0 {
		t.Fatalf("a replaced hook still logged %d records", n)
	}
}
