package server

import (
	"context"
	"errors"
	"slices"
	"sort"

	"github.com/coordinatord/coordinatord/api"
	"github.com/coordinatord/coordinatord/engine"
	"github.com/coordinatord/coordinatord/raftstore"
	"github.com/coordinatord/coordinatord/wasm"
)

// Correlation modules on the leader.
//
// On partition_detected, severity_changed and partition_healed the leader
// calls every installed correlation module, one after the other in name
// order, with the same event (wasm/ABI.md). How their outputs combine:
//
//   - each valid output with "hold" set is a vote, for its "datacenters"
//     (or the event's affected datacenters when it names none);
//   - if any module votes to hold, the held set is the union of the
//     datacenters of the modules that voted to hold: holding is the cautious
//     answer during a suspected partition, and the cap bounds it;
//   - if every vote is not to hold, nothing is held;
//   - a module that traps, times out, returns an error or an invalid output,
//     or leaves "hold" out, has no vote; with no vote at all the built-in
//     decision (hold the episode's datacenters) stands.
//
// A failed call is reported by the sandbox (one error record with the
// module, the event's datacenters and held jobs, the trap and the guest
// stack; its error hook falls back to stderr), an invalid output by
// ReportBadOutput, and both are counted; the leader adds one line saying
// the built-in decision is used for it. Notes are logged with each answer.
// On partition_healed the episode is over: votes are ignored and every hold
// ends (with its grace).

// installedCorrelationModules lists the correlation modules this node
// runs, sorted by name.
func (mi *moduleInstaller) installedCorrelationModules() []string {
	mi.mu.Lock()
	defer mi.mu.Unlock()
	var names []string
	for name, st := range mi.states {
		if st.installed != nil && st.installed.manifest.Kind == api.ModuleKindCorrelation {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	return names
}

// vote is one module's valid decision.
type vote struct {
	module string
	hold   bool
	dcs    []string
}

// callCorrelationModules calls every correlation module on call and
// combines their outputs; nil means no module voted (the built-in
// decision).
func (s *Server) callCorrelationModules(ctx context.Context, call wasm.Call, ev engine.CorrelationEvent, known []string) *moduleDecision {
	if s.modules == nil || s.sandbox == nil {
		return nil
	}
	names := s.modules.installedCorrelationModules()
	if len(names) == 0 {
		return nil
	}
	log := s.corr.log.With("event", ev.Type, "episode", ev.Episode)
	var (
		votes []vote
		notes []string
	)
	for _, name := range names {
		res := s.sandbox.Call(ctx, name, call)
		if res.Err != nil {
			kind := "error"
			var ce *wasm.CallError
			if errors.As(res.Err, &ce) {
				kind = ce.Kind
			}
			s.corr.metrics.moduleCalls.WithLabelValues(name, kind).Inc()
			log.Warn("correlation module failed; the built-in decision is used for it", "module", name, "failure", kind,
				"datacenters", call.Datacenters, "job_ids", call.JobIDs, "error", res.Err)
			continue
		}
		out, err := wasm.ParseCorrelationOutput(res.Output, known)
		if err != nil {
			s.sandbox.ReportBadOutput(ctx, name, call, res, err)
			code := "invalid_output"
			var oe *wasm.OutputError
			if errors.As(err, &oe) {
				code = oe.Code()
			}
			s.corr.metrics.moduleCalls.WithLabelValues(name, code).Inc()
			log.Warn("correlation module answered invalidly; the built-in decision is used for it", "module", name,
				"datacenters", call.Datacenters, "job_ids", call.JobIDs, "error", err)
			continue
		}
		for _, n := range out.Notes {
			notes = append(notes, name+": "+n)
		}
		result := "no_vote"
		var v *vote
		if out.Hold != nil {
			dcs := out.Datacenters
			if dcs == nil {
				dcs = ev.Affected
			}
			v = &vote{module: name, hold: *out.Hold, dcs: dcs}
			votes = append(votes, *v)
			result = "no_hold"
			if *out.Hold {
				result = "hold"
			}
		}
		s.corr.metrics.moduleCalls.WithLabelValues(name, result).Inc()
		attrs := []any{"module", name, "notes", out.Notes}
		if v != nil {
			attrs = append(attrs, "hold", v.hold, "datacenters", v.dcs)
		} else {
			attrs = append(attrs, "hold", "(no vote: the built-in decision)")
		}
		if ev.Type == engine.EventPartitionHealed {
			attrs = append(attrs, "applied", false)
		}
		log.Info("correlation module answered", attrs...)
	}
	if len(votes) == 0 {
		return nil
	}
	d := &moduleDecision{decision: raftstore.HoldDecision{Source: raftstore.DecisionModules, Notes: notes, Event: ev.Type, At: ev.At}}
	for _, v := range votes {
		if v.hold {
			d.decision.Hold = true
		}
	}
	for _, v := range votes {
		if v.hold == d.decision.Hold {
			d.decision.Modules = append(d.decision.Modules, v.module)
			if v.hold {
				d.held = append(d.held, v.dcs...)
			}
		}
	}
	slices.Sort(d.held)
	d.held = slices.Compact(d.held)
	log.Info("correlation modules decided", "hold", d.decision.Hold, "datacenters", d.held, "modules", d.decision.Modules,
		"applied", ev.Type != engine.EventPartitionHealed)
	return d
}
