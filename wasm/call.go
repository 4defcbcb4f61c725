package wasm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/sys"
)

// Call is one event for a module.
type Call struct {
	// Handler is the export to call; "" means the handler of EventKind.
	Handler string
	// Event is the event as JSON (ABI.md, "Events"). The sandbox copies it
	// into the guest and does not keep it.
	Event []byte
	// EventKind is "correlation", "job_result" or "lease_event".
	EventKind string
	// Datacenters and JobIDs are what the event is about; a failure report
	// names them. NewCorrelationCall and friends fill them in.
	Datacenters []string
	JobIDs      []string
}

// Result is what a call produced.
type Result struct {
	// Output is the JSON the guest passed to output: valid JSON, or nil if
	// it did not call output or the call failed.
	Output []byte
	// Logs are the lines the guest logged during the call (within its rate
	// limit), in order.
	Logs []LogLine
	// LogsDropped counts lines dropped by the rate limit.
	LogsDropped int
	// Digest is the digest of the module version that answered ("" if none
	// did).
	Digest string
	// Duration is the call's wall time, instantiation included.
	Duration time.Duration
	// Err is nil or a *CallError, already reported.
	Err error
}

// Call runs one handler of the module called name on c.Event, on an idle
// instance or a fresh one, within the module's time limit and ctx. It
// never panics and never returns an error outside Result.Err. On failure
// the instance is thrown away and the failure is reported once (error hook,
// metrics).
func (s *Sandbox) Call(ctx context.Context, name string, c Call) Result {
	start := time.Now()
	if c.Handler == "" {
		c.Handler = HandlerFor(c.EventKind)
	}
	m, inst := s.acquire(name)
	if m == nil {
		err := &CallError{Kind: FailNotInstalled, Module: name, Handler: c.Handler,
			Message: fmt.Sprintf("no module %q is installed", name)}
		if s.isClosed() {
			err.Message = "the sandbox is closed"
		}
		res := Result{Duration: time.Since(start), Err: err}
		s.metrics.calls.WithLabelValues(name, FailNotInstalled).Inc()
		s.failed(ctx, c, err, res.Duration)
		return res
	}
	defer s.calls.Done()

	res := Result{Digest: m.info.Digest}
	st := &callState{m: m}
	inst, keep, cerr := s.run(ctx, m, inst, st, c, start)
	m.end(inst, keep)
	res.Logs, res.LogsDropped = st.logs, st.dropped
	res.Duration = time.Since(start)
	m.metrics.duration.Observe(res.Duration.Seconds())
	if cerr != nil {
		res.Err = cerr
		m.metrics.fail(cerr.Kind)
		s.failed(ctx, c, cerr, res.Duration)
		return res
	}
	res.Output = st.output
	m.metrics.ok.Inc()
	return res
}

// run does the call on inst (nil: a fresh instance) and returns the
// instance used (nil if none), whether it may serve again, and the failure.
func (s *Sandbox) run(ctx context.Context, m *module, inst *instance, st *callState, c Call, start time.Time) (*instance, bool, *CallError) {
	callErr := func(kind, format string, args ...any) *CallError {
		return &CallError{Kind: kind, Module: m.name, Digest: m.info.Digest, Handler: c.Handler, Message: fmt.Sprintf(format, args...)}
	}
	if !m.info.HasHandler(c.Handler) {
		return inst, true, callErr(FailNoHandler, "the module does not export %q (it exports %v)", c.Handler, m.info.Handlers)
	}
	// A call slot; the time limit starts when the call has one.
	select {
	case s.slots <- struct{}{}:
	default:
		select {
		case s.slots <- struct{}{}:
		case <-ctx.Done():
			kind := FailCanceled
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				kind = FailTimeout
			}
			return inst, true, callErr(kind, "the caller's context ended after %v waiting for a free call slot (%d calls run at a time)",
				time.Since(start).Round(time.Microsecond), cap(s.slots))
		}
		start = time.Now()
	}
	defer func() { <-s.slots }()
	cctx, cancel := context.WithDeadline(ctx, start.Add(m.limits.CallTimeout))
	defer cancel()
	st.Context = cctx
	if inst == nil {
		var err error
		if inst, err = m.instantiate(st); err != nil {
			st.flush()
			return nil, false, s.classify(ctx, m, st, c, err, time.Since(start))
		}
	}
	inst.cur = st
	defer func() { inst.cur = nil }()

	// coordinatord_alloc(n) → p; the event goes to [p, p+n).
	n := uint32(len(c.Event))
	inst.stack[0] = api.EncodeU32(n)
	if err := inst.alloc.CallWithStack(st, inst.stack[:]); err != nil {
		st.flush()
		return inst, false, s.classify(ctx, m, st, c, err, time.Since(start))
	}
	p := api.DecodeU32(inst.stack[0])
	if p == 0 && n > 0 {
		return inst, false, callErr(FailAllocFailed, "coordinatord_alloc(%d) returned 0", n)
	}
	if !inst.mod.Memory().Write(p, c.Event) {
		return inst, false, callErr(FailAllocFailed, "coordinatord_alloc(%d) returned %d: the range is outside memory (%d bytes)", n, p, inst.mod.Memory().Size())
	}

	// The handler.
	inst.stack[0], inst.stack[1] = api.EncodeU32(p), api.EncodeU32(n)
	st.inHandler = true
	err := inst.handler[c.Handler].CallWithStack(st, inst.stack[:])
	st.inHandler = false
	st.flush()
	if err != nil {
		st.output = nil
		return inst, false, s.classify(ctx, m, st, c, err, time.Since(start))
	}
	if rc := int32(api.DecodeU32(inst.stack[0])); rc != 0 {
		st.output = nil
		if st.failText != "" {
			return inst, false, callErr(FailGuestError, "%s (returned %d)", st.failText, rc)
		}
		return inst, false, callErr(FailGuestError, "returned %d without calling fail", rc)
	}
	if st.outputCalled && !validJSON(st.output) {
		jerr := json.Unmarshal(st.output, new(json.RawMessage))
		out := st.output
		st.output = nil
		return inst, false, callErr(FailBadOutput, "output is not valid JSON (%v): %q", jerr, head(out, 64))
	}
	return inst, true, nil
}

// classify turns an error from wazero into a CallError.
func (s *Sandbox) classify(ctx context.Context, m *module, st *callState, c Call, err error, elapsed time.Duration) *CallError {
	ce := &CallError{Kind: FailTrap, Module: m.name, Digest: m.info.Digest, Handler: c.Handler}
	var exit *sys.ExitError
	var ht *hostTrap
	switch {
	case errors.As(err, &exit):
		switch exit.ExitCode() {
		case sys.ExitCodeDeadlineExceeded:
			ce.Kind = FailTimeout
			if ctx.Err() != nil {
				ce.Message = fmt.Sprintf("stopped by the caller's deadline after %v", elapsed.Round(time.Microsecond))
			} else {
				ce.Message = fmt.Sprintf("stopped after %v: over the module's call_timeout of %v", elapsed.Round(time.Microsecond), m.limits.CallTimeout)
			}
		case sys.ExitCodeContextCanceled:
			ce.Kind = FailCanceled
			ce.Message = fmt.Sprintf("cancelled by the caller after %v", elapsed.Round(time.Microsecond))
		default:
			ce.Message = fmt.Sprintf("the module exited with proc_exit(%d)", exit.ExitCode())
			if len(st.stderrHead) > 0 {
				ce.Message += "; stderr: " + strings.Join(st.stderrHead, " | ")
			}
		}
		return ce
	case errors.As(err, &ht):
		ce.Kind = ht.kind
	}
	ce.Message, ce.Stack = splitTrap(err)
	for i, f := range ce.Stack {
		// Instances are anonymous: wazero names their frames ".func".
		if strings.HasPrefix(f, ".") {
			ce.Stack[i] = m.name + f
		}
	}
	return ce
}
