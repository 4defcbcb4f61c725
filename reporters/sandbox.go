package reporters

import (
	"context"
	"errors"

	"github.com/coordinatord/coordinatord/wasm"
)

// SandboxInvoker is the Invoker of reporter modules installed in sb. It
// checks each output with wasm.ParseReporterOutput against the reporter's
// sinks; an output that fails the check is reported through the sandbox
// (ReportBadOutput: one error record with the event's datacenters and job
// ids, and a metric) and none of its records are emitted.
func SandboxInvoker(sb *wasm.Sandbox) Invoker { return sandboxInvoker{sb: sb} }

type sandboxInvoker struct{ sb *wasm.Sandbox }

var _ Invoker = sandboxInvoker{}

func (si sandboxInvoker) Invoke(ctx context.Context, r Reporter, inv Invocation) Outcome {
	c := wasm.Call{Handler: inv.Handler, Event: inv.Event, EventKind: inv.Kind, Datacenters: inv.Datacenters, JobIDs: inv.JobIDs}
	res := si.sb.Call(ctx, r.Name, c)
	out := Outcome{Elapsed: res.Duration}
	if res.Err != nil {
		out.Err, out.ErrKind = res.Err, "error"
		var ce *wasm.CallError
		if errors.As(res.Err, &ce) {
			out.ErrKind = ce.Kind
		}
		return out
	}
	names := make([]string, len(r.Sinks))
	for i, s := range r.Sinks {
		names[i] = s.Name
	}
	recs, err := wasm.ParseReporterOutput(res.Output, names)
	if err != nil {
		si.sb.ReportBadOutput(ctx, r.Name, c, res, err)
		out.Err, out.ErrKind = err, ErrKindInvalidOutput
		var oe *wasm.OutputError
		if errors.As(err, &oe) {
			out.ErrKind = oe.Code()
		}
		return out
	}
	out.Records = make([]Record, len(recs))
	for i, rec := range recs {
		out.Records[i] = Record(rec)
	}
	return out
}
