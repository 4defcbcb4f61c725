package server

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/coordinatord/coordinatord/api"
	"github.com/coordinatord/coordinatord/reporters"
	"github.com/coordinatord/coordinatord/wasm"
)

// A module's manifest comes in PUT /v1/modules/{name}'s query (see
// api/modules.go), is stored as api.ModuleManifest JSON with every limit
// resolved, and is read back by each node's installer.

// manifestParams are the query parameters of a module upload.
var manifestParams = []string{"kind", "memory_pages", "call_timeout", "max_output_bytes", "log_lines_per_second", "sink"}

// parsedManifest is a manifest checked and resolved for the sandbox.
type parsedManifest struct {
	manifest api.ModuleManifest
	kind     wasm.Kind
	limits   wasm.Limits
	sinks    []reporters.SinkSpec
}

// manifestFromQuery reads and checks an upload's manifest. Each defect is
// a 400 naming its parameter.
func manifestFromQuery(q url.Values) (parsedManifest, error) {
	var p parsedManifest
	for _, single := range manifestParams[:5] {
		if len(q[single]) > 1 {
			return p, errorf(http.StatusBadRequest, "repeated_parameter", single, "%s is given %d times", single, len(q[single]))
		}
	}
	kind := q.Get("kind")
	switch {
	case kind == "":
		return p, errorf(http.StatusBadRequest, "missing_kind", "kind", "kind is required: %s or %s", api.ModuleKindReporter, api.ModuleKindCorrelation)
	case !wasm.Kind(kind).Valid():
		return p, errorf(http.StatusBadRequest, "unknown_kind", "kind", "kind %q is neither %s nor %s", kind, api.ModuleKindReporter, api.ModuleKindCorrelation)
	}
	p.kind = wasm.Kind(kind)
	p.limits = wasm.DefaultLimits()
	if err := limitsFromQuery(q, &p.limits); err != nil {
		return p, err
	}
	if err := p.limits.Validate(); err != nil {
		return p, limitsError(err)
	}
	specs := q["sink"]
	if len(specs) > 0 && p.kind != wasm.KindReporter {
		return p, errorf(http.StatusBadRequest, "sinks_not_allowed", "sink", "only reporter modules have sinks; a %s module takes none", kind)
	}
	sinks, err := reporters.ParseSinkSpecs(specs)
	if err != nil {
		return p, errorf(http.StatusBadRequest, "invalid_sink", "sink", "%v", err)
	}
	p.sinks = sinks
	p.manifest = manifestOf(p.kind, p.limits, sinks)
	return p, nil
}

func limitsFromQuery(q url.Values, l *wasm.Limits) error {
	bad := func(field, format string, args ...any) error {
		return errorf(http.StatusBadRequest, "invalid_limits", field, format, args...)
	}
	if v := q.Get("memory_pages"); v != "" {
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return bad("memory_pages", "memory_pages %q is not a number of 64 KiB pages", v)
		}
		l.MemoryPages = uint32(n)
	}
	if v := q.Get("call_timeout"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			return bad("call_timeout", "call_timeout %q is not a duration such as \"100ms\"", v)
		}
		l.CallTimeout = d
	}
	if v := q.Get("max_output_bytes"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return bad("max_output_bytes", "max_output_bytes %q is not a number of bytes", v)
		}
		l.MaxOutputBytes = n
	}
	if v := q.Get("log_lines_per_second"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return bad("log_lines_per_second", "log_lines_per_second %q is not a number", v)
		}
		l.LogLinesPerSecond = n
	}
	return nil
}

// limitsError turns a *wasm.LimitsError into a 400 naming its field.
func limitsError(err error) error {
	var le *wasm.LimitsError
	if errors.As(err, &le) {
		return errorf(http.StatusBadRequest, le.Code(), le.Field, "%s: %s", le.Field, le.Message)
	}
	return errorf(http.StatusBadRequest, "invalid_limits", "limits", "%v", err)
}

func manifestOf(kind wasm.Kind, l wasm.Limits, sinks []reporters.SinkSpec) api.ModuleManifest {
	m := api.ModuleManifest{
		Kind: string(kind),
		Limits: api.ModuleLimits{
			MemoryPages:       l.MemoryPages,
			CallTimeout:       l.CallTimeout.String(),
			MaxOutputBytes:    l.MaxOutputBytes,
			LogLinesPerSecond: l.LogLinesPerSecond,
		},
	}
	for _, s := range sinks {
		m.Sinks = append(m.Sinks, s.String())
	}
	return m
}

// resolveManifest reads a stored manifest back into what the sandbox and
// the reporter pipeline take. It checks everything again: a node must not
// trust the log's author.
func resolveManifest(m api.ModuleManifest) (wasm.Kind, wasm.Limits, []reporters.SinkSpec, error) {
	kind := wasm.Kind(m.Kind)
	if !kind.Valid() {
		return "", wasm.Limits{}, nil, fmt.Errorf("unknown kind %q", m.Kind)
	}
	d, err := time.ParseDuration(m.Limits.CallTimeout)
	if err != nil {
		return "", wasm.Limits{}, nil, fmt.Errorf("call_timeout %q: %w", m.Limits.CallTimeout, err)
	}
	l := wasm.Limits{MemoryPages: m.Limits.MemoryPages, CallTimeout: d, MaxOutputBytes: m.Limits.MaxOutputBytes, LogLinesPerSecond: m.Limits.LogLinesPerSecond}
	if err := l.Validate(); err != nil {
		return "", wasm.Limits{}, nil, err
	}
	sinks, err := reporters.ParseSinkSpecs(m.Sinks)
	if err != nil {
		return "", wasm.Limits{}, nil, err
	}
	return kind, l, sinks, nil
}
