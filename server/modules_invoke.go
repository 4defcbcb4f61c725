package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"

	"github.com/coordinatord/coordinatord/api"
	"github.com/coordinatord/coordinatord/engine"
	"github.com/coordinatord/coordinatord/wasm"
)

// invokeModule runs the module installed on this node on the caller's
// sample event and answers with everything the call did. The call goes
// through the sandbox like any other: limits apply, and a trap or timeout
// is reported (log record, metric) as it would be for a real event, then
// comes back as a 200 whose error says what happened. Nothing is written to
// a sink: a reporter's records are parsed and returned.
func (s *Server) invokeModule(w http.ResponseWriter, r *http.Request, caller engine.Claims) error {
	name, err := s.moduleName(r, caller, "module.invoke")
	if err != nil {
		return err
	}
	if err := checkQuery(r); err != nil {
		return err
	}
	var req api.InvokeRequest
	if err := s.decodeJSON(w, r, &req); err != nil {
		return err
	}
	inst, ok := s.modules.installed(name)
	if !ok {
		return s.notInstalled(name)
	}
	handler, err := pickHandler(req.Handler, eventKindField(req.Event), inst.handlers)
	if err != nil {
		return err
	}
	call, err := invokeCall(handler, req.Event)
	if err != nil {
		return err
	}
	res := s.sandbox.Call(r.Context(), name, call)
	out := api.InvokeResponse{
		Module: name, Digest: inst.digest, Version: inst.version, Node: s.cfg.NodeID, Handler: handler,
		Logs: make([]api.ModuleLogLine, 0, len(res.Logs)), LogsDropped: res.LogsDropped,
		Duration: res.Duration.String(), DurationNanos: res.Duration.Nanoseconds(),
	}
	for _, l := range res.Logs {
		out.Logs = append(out.Logs, api.ModuleLogLine{Level: strings.ToLower(l.Level.String()), Stream: l.Stream, Text: l.Text})
	}
	if len(res.Output) > 0 {
		if json.Valid(res.Output) {
			out.Output = json.RawMessage(res.Output)
		} else {
			out.OutputText = string(res.Output)
		}
	}
	if res.Digest != "" {
		out.Digest = "sha256:" + res.Digest
	}
	var ce *wasm.CallError
	switch {
	case errors.As(res.Err, &ce):
		out.Error = &api.InvokeError{Kind: ce.Kind, Message: ce.Message, Stack: ce.Stack}
	case res.Err != nil:
		out.Error = &api.InvokeError{Kind: "error", Message: res.Err.Error()}
	default:
		if err := checkOutput(inst, call, res.Output, &out); err != nil {
			// Reported like a real event's bad output would be.
			s.sandbox.ReportBadOutput(r.Context(), name, call, res, err)
			out.Records = nil
			out.Error = &api.InvokeError{Kind: wasm.FailBadOutput, Message: err.Error()}
		}
	}
	s.writeJSON(w, r, http.StatusOK, out)
	return nil
}

// notInstalled explains why this node cannot run module name: it does not
// exist, or this node has not (or could not) install it.
func (s *Server) notInstalled(name string) error {
	m, err := s.store.Module(name)
	if err != nil {
		return storeError(err, "module", name)
	}
	st := s.modules.nodeState(m)
	if st.State == api.ModuleFailed {
		return errorf(http.StatusConflict, "not_installed", "name", "module %q version %d failed to install on node %s: %s", name, m.Version, s.cfg.NodeID, st.Error)
	}
	ae := errorf(http.StatusServiceUnavailable, "not_installed", "name", "module %q version %d is not installed on node %s yet; retry", name, m.Version, s.cfg.NodeID)
	ae.retryAfter = retryAfterNoLeader
	return ae
}

// pickHandler resolves the request's handler. When none is named it is
// the handler of the event's "kind", or else the module's only handler;
// a named one is an export name ("coordinatord_on_job_result") or an event
// kind ("job_result").
func pickHandler(want, eventKind string, handlers []string) (string, error) {
	if want == "" {
		want = eventKind
	}
	if want == "" {
		if len(handlers) == 1 {
			return handlers[0], nil
		}
		return "", errorf(http.StatusBadRequest, "handler_required", "handler",
			"the module exports %s; name the one to call, or give the event its \"kind\"", strings.Join(handlers, " and "))
	}
	h := want
	if byKind := wasm.HandlerFor(want); byKind != "" {
		h = byKind
	}
	if !slices.Contains(handlers, h) {
		return "", errorf(http.StatusBadRequest, "unknown_handler", "handler",
			"the module does not export %q; it exports %s", want, strings.Join(handlers, ", "))
	}
	return h, nil
}

// eventKindField returns the event's "kind" when it is a string.
func eventKindField(event json.RawMessage) string {
	var ev struct {
		Kind string `json:"kind"`
	}
	_ = json.Unmarshal(event, &ev)
	return ev.Kind
}

// eventKindOf is the event kind a handler receives.
func eventKindOf(handler string) string {
	for _, k := range []string{wasm.EventCorrelation, wasm.EventJobResult, wasm.EventLeaseEvent} {
		if wasm.HandlerFor(k) == handler {
			return k
		}
	}
	return ""
}

// sampleEvent holds the fields of any ABI event that a failure report
// names: datacenters and job ids.
type sampleEvent struct {
	Kind                *string  `json:"kind"`
	JobID               string   `json:"job_id"`
	Datacenter          string   `json:"datacenter"`
	OwnerDC             string   `json:"owner_dc"`
	AffectedDatacenters []string `json:"affected_datacenters"`
	HealthyDatacenters  []string `json:"healthy_datacenters"`
	HeldLeases          []struct {
		JobID   string `json:"job_id"`
		OwnerDC string `json:"owner_dc"`
	} `json:"held_leases"`
}

// invokeCall builds the sandbox call for a sample event. The event must be
// a JSON object; its "kind" is added when missing and must match the
// handler when present. Fields of unexpected types are passed to the
// module as they are (it is the author's test), but then do not name
// datacenters or jobs in failure reports.
func invokeCall(handler string, event json.RawMessage) (wasm.Call, error) {
	kind := eventKindOf(handler)
	raw := bytes.TrimSpace(event)
	if len(raw) == 0 || raw[0] != '{' {
		return wasm.Call{}, errorf(http.StatusBadRequest, "invalid_event", "event", "event is required and must be a JSON object (the event as wasm/ABI.md describes it)")
	}
	var ev sampleEvent
	_ = json.Unmarshal(raw, &ev) // best effort: see above
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return wasm.Call{}, errorf(http.StatusBadRequest, "invalid_event", "event", "event: %v", err)
	}
	if k, ok := fields["kind"]; ok {
		var got string
		if json.Unmarshal(k, &got) != nil || got != kind {
			return wasm.Call{}, errorf(http.StatusBadRequest, "wrong_event_kind", "event.kind",
				"handler %s receives events of kind %q, the event says %s", handler, kind, k)
		}
	} else {
		raw = withKind(raw, kind)
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, raw); err != nil {
		return wasm.Call{}, errorf(http.StatusBadRequest, "invalid_event", "event", "event: %v", err)
	}
	call := wasm.Call{Handler: handler, EventKind: kind, Event: compact.Bytes()}
	addDC := func(dc string) {
		if dc != "" && !slices.Contains(call.Datacenters, dc) {
			call.Datacenters = append(call.Datacenters, dc)
		}
	}
	addDC(ev.Datacenter)
	addDC(ev.OwnerDC)
	for _, dc := range ev.AffectedDatacenters {
		addDC(dc)
	}
	if ev.JobID != "" {
		call.JobIDs = append(call.JobIDs, ev.JobID)
	}
	for _, l := range ev.HeldLeases {
		addDC(l.OwnerDC)
		if l.JobID != "" {
			call.JobIDs = append(call.JobIDs, l.JobID)
		}
	}
	return call, nil
}

// withKind inserts "kind" as the first member of the JSON object raw.
func withKind(raw []byte, kind string) []byte {
	k, _ := json.Marshal(kind)
	rest := bytes.TrimSpace(raw[1:])
	out := append([]byte(`{"kind":`), k...)
	if len(rest) > 0 && rest[0] != '}' {
		out = append(out, ',')
	}
	return append(out, rest...)
}

// checkOutput checks a successful call's output against its kind's schema,
// as the reporter pipeline and the correlation engine would, and adds a
// reporter's records to out. A correlation output may name the
// datacenters of the sample event.
func checkOutput(inst installedModule, call wasm.Call, output []byte, out *api.InvokeResponse) error {
	switch inst.manifest.Kind {
	case api.ModuleKindReporter:
		names := make([]string, len(inst.sinks))
		for i, s := range inst.sinks {
			names[i] = s.Name
		}
		recs, err := wasm.ParseReporterOutput(output, names)
		if err != nil {
			return err
		}
		for _, rec := range recs {
			out.Records = append(out.Records, api.ReporterRecord{Sink: rec.Sink, Data: rec.Data})
		}
	case api.ModuleKindCorrelation:
		if len(output) == 0 {
			return nil // no output: the built-in decision stands
		}
		var ev sampleEvent
		_ = json.Unmarshal(call.Event, &ev)
		known := append(slices.Clone(ev.AffectedDatacenters), ev.HealthyDatacenters...)
		if _, err := wasm.ParseCorrelationOutput(output, known); err != nil {
			return err
		}
	}
	return nil
}
