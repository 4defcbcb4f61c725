package wasm

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"
)

// Failure is the report of one failed call: what the error hook receives.
type Failure struct {
	// Time is when the failure was reported (Config.Clock).
	Time time.Time
	// Module and Digest name the module version ("" digest: none was
	// installed).
	Module, Digest string
	Handler        string
	// EventKind, Datacenters and JobIDs come from the Call.
	EventKind   string
	Datacenters []string
	JobIDs      []string
	// Kind is the CallError kind (trap, timeout, ...).
	Kind string
	// Message is the trap message, the limit broken or the guest's fail
	// text.
	Message string
	// Stack is the guest stack at a trap, innermost frame first.
	Stack []string
	// Duration is how long the call ran.
	Duration time.Duration
}

// failed counts and reports a failed call.
func (s *Sandbox) failed(ctx context.Context, c Call, ce *CallError, d time.Duration) {
	s.metrics.failures.WithLabelValues(ce.Module, ce.Kind).Inc()
	s.report(ctx, Failure{
		Time:        s.now(),
		Module:      ce.Module,
		Digest:      ce.Digest,
		Handler:     ce.Handler,
		EventKind:   c.EventKind,
		Datacenters: c.Datacenters,
		JobIDs:      c.JobIDs,
		Kind:        ce.Kind,
		Message:     ce.Message,
		Stack:       ce.Stack,
		Duration:    d,
	})
}

// ReportBadOutput reports a call whose output the caller found invalid
// for its kind (ParseCorrelationOutput or ParseReporterOutput failed, err
// is their error), the way the sandbox reports its own failures: one
// report through the error hook, kind bad_output, counted in
// coordinatord_wasm_failures_total. res is the call's Result. The caller
// still decides what to do (the built-in decision, no records).
func (s *Sandbox) ReportBadOutput(ctx context.Context, module string, c Call, res Result, err error) {
	if c.Handler == "" {
		c.Handler = HandlerFor(c.EventKind)
	}
	ce := &CallError{Kind: FailBadOutput, Module: module, Digest: res.Digest, Handler: c.Handler, Message: err.Error()}
	s.failed(ctx, c, ce, res.Duration)
}

// report hands f to the hook; if the hook fails or panics, a plain line
// goes to Stderr instead.
func (s *Sandbox) report(ctx context.Context, f Failure) {
	err := s.callHook(ctx, f)
	if err == nil {
		return
	}
	s.metrics.hookFailures.Inc()
	line := fmt.Sprintf("%s ERROR wasm call failed (report hook: %v): module=%s digest=%s handler=%s event_kind=%s kind=%s datacenters=%s job_ids=%s message=%q\n",
		f.Time.UTC().Format(time.RFC3339Nano), err, f.Module, shortDigest(f.Digest), f.Handler, f.EventKind, f.Kind,
		strings.Join(f.Datacenters, ","), strings.Join(f.JobIDs, ","), f.Message)
	s.stderrMu.Lock()
	defer s.stderrMu.Unlock()
	_, _ = io.WriteString(s.cfg.Stderr, line)
}

func (s *Sandbox) callHook(ctx context.Context, f Failure) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	return s.hook(ctx, f)
}

// logFailure is the default hook: one error-level record. The handler is
// called directly so that its error (a full disk, a closed pipe) reaches
// report and the fallback.
func (s *Sandbox) logFailure(ctx context.Context, f Failure) error {
	h := s.log.Handler()
	if !h.Enabled(ctx, slog.LevelError) {
		return nil
	}
	r := slog.NewRecord(f.Time, slog.LevelError, "wasm call failed", 0)
	r.AddAttrs(
		slog.String("module", f.Module),
		slog.String("digest", f.Digest),
		slog.String("handler", f.Handler),
		slog.String("event_kind", f.EventKind),
		slog.Any("datacenters", nonNil(f.Datacenters)),
		slog.Any("job_ids", nonNil(f.JobIDs)),
		slog.String("kind", f.Kind),
		slog.String("error", f.Message),
		slog.Any("stack", nonNil(f.Stack)),
		slog.Duration("duration", f.Duration),
	)
	if err := h.Handle(ctx, r); err != nil {
		return fmt.Errorf("log handler: %w", err)
	}
	return nil
}

// stackMarker separates wazero's error message from the guest stack.
const stackMarker = "\nwasm stack trace:\n"

// splitTrap splits wazero's error text into the message and the guest
// stack frames. A Go stack that wazero appends after a blank line (for a
// runtime error in a host function) is left out.
func splitTrap(err error) (string, []string) {
	text := err.Error()
	msg, rest, found := strings.Cut(text, stackMarker)
	msg = strings.Replace(msg, " (recovered by wazero)", "", 1)
	if !found {
		return msg, nil
	}
	var frames []string
	for _, line := range strings.Split(rest, "\n") {
		f := strings.TrimSpace(line)
		if f == "" {
			break
		}
		frames = append(frames, f)
	}
	return msg, frames
}
