package server

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"time"

	"github.com/coordinatord/coordinatord/engine"
	"github.com/coordinatord/coordinatord/raftstore"
	"github.com/coordinatord/coordinatord/reporters"
	"github.com/coordinatord/coordinatord/swim"
	"github.com/coordinatord/coordinatord/wasm"
)

// The correlation engine on the leader.
//
// What is committed. After every input the leader derives the view it wants
// the cluster to see from the engine's status and the modules' decision:
// severity, the episode, each datacenter's state and since, the held set,
// its cap (HoldUntil) and who decided it. When that view differs from the
// last committed record, or the engine reported events, it commits one
// record with the new view and the events (raftstore.PutCorrelation). A
// record that releases held datacenters carries them in Grace, so that the
// same entry gives their leases one TTL. A commit that fails is retried on
// the next input or tick with the events accumulated meanwhile; module
// calls are never repeated for it.
//
// The held set. By default it is the episode's datacenters (every
// datacenter down while the episode lasted and not healthy again). On
// partition_detected and severity_changed the correlation modules may
// decide otherwise (correlation_modules.go); their decision stands until
// the next such event, and with no valid vote the built-in decision comes
// back. The cap is the episode's detection plus the maximum lease hold
// (raftstore.Config.MaxLeaseHold): no module moves it.
//
// A new leader reads the committed record (after a read barrier, so it has
// applied everything its predecessor committed), restores the episode into
// a fresh engine (engine.Correlator.Restore: no second partition_detected,
// the same datacenters held) and every datacenter's state with its since
// time (RestoreDatacenter), keeps a module decision it finds, seeds the
// engine with its own member list, and goes on from there.

// farFuture is HoldUntil when no cap is configured (MaxLeaseHold 0).
var farFuture = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)

// commitRetryPause spaces attempts to commit a record after a failure;
// invalidRecordPause after the store refused the record as invalid.
const (
	commitRetryPause   = time.Second
	invalidRecordPause = 30 * time.Second
	// notReadyWarnAfter is how long a leader may fail to confirm the
	// committed state before it says so at warn level.
	notReadyWarnAfter = 10 * time.Second
)

// moduleDecision is the correlation modules' decision for an episode.
type moduleDecision struct {
	decision raftstore.HoldDecision
	// held is the held set when decision.Hold (sorted).
	held []string
}

// leaderCorrelator is the engine while this node leads. Only the
// correlation loop's goroutine uses it.
type leaderCorrelator struct {
	s   *Server
	cor *engine.Correlator
	log *slog.Logger
	// committed is the last committed record, by this node or an earlier
	// leader; nil if none ever was.
	committed *raftstore.CorrelationRecord
	// pending are events decided and not committed yet.
	pending []engine.CorrelationEvent
	// mod is the modules' decision for the current episode; nil means the
	// built-in one.
	mod *moduleDecision
	// reports are the correlation events for reporters, submitted once
	// committed.
	reports []reporters.CorrelationEvent
	// capLogged is the episode whose cap this leader has logged.
	capLogged string
	// retryAt is when a failed commit may be tried again.
	retryAt time.Time
	// lost is set when a commit found this node no longer leads.
	lost bool
	// refused is the view of a record the store refused as invalid (it is
	// not proposed again before retryAt); unknown a record whose commit
	// had an unknown outcome.
	refused string
	unknown *unknownCommit
	// takeover is set until this leader's first record is committed: a new
	// leader commits one even when its view equals the committed one, so
	// that the record names the node that runs the engine.
	takeover bool
}

// startLeading builds the engine of a new leader, or returns nil when the
// committed state cannot be read yet (the loop tries again).
func (s *Server) startLeading(ctx context.Context) *leaderCorrelator {
	rctx, cancel := context.WithTimeout(ctx, s.cfg.Raft.ApplyTimeout)
	err := s.store.LinearizableRead(rctx)
	cancel()
	if err != nil {
		if ctx.Err() == nil {
			// Retried every poll: a warning once it lasts, debug otherwise.
			cs, now := s.corr, s.clock()
			if cs.notReadySince.IsZero() {
				cs.notReadySince = now
			}
			if waited := now.Sub(cs.notReadySince); waited >= notReadyWarnAfter && !cs.warned {
				cs.warned = true
				cs.log.Warn("correlation engine not started: this leader cannot confirm the committed state", "for", waited, "error", err)
			} else {
				cs.log.Debug("correlation engine not started yet: cannot confirm the committed state", "error", err)
			}
		}
		return nil
	}
	s.corr.notReadySince, s.corr.warned = time.Time{}, false
	cor, err := engine.NewCorrelator(s.cfg.Correlation)
	if err != nil { // validated by New
		s.corr.log.Error("correlation engine not started", "error", err)
		return nil
	}
	l := &leaderCorrelator{s: s, cor: cor, log: s.corr.log, committed: s.store.Correlation(), takeover: true}
	now := s.clock()
	restored := ""
	if rec := l.committed; rec != nil {
		if rec.Episode != nil {
			cor.Restore(now, *rec.Episode)
			restored = rec.Episode.ID
			if rec.Decision.Source == raftstore.DecisionModules {
				l.mod = &moduleDecision{decision: rec.Decision, held: slices.Clone(rec.Held)}
			}
		}
		// The datacenters' states and since times carry over too; this
		// node's own view moves them from there.
		for _, d := range rec.Datacenters {
			cor.RestoreDatacenter(now, d.Name, d.State, d.Since)
		}
	}
	evs := l.seed(now)
	dcs := 0
	if rec := l.committed; rec != nil {
		dcs = len(rec.Datacenters)
	}
	l.log.Info("leading: correlation engine started from the committed record",
		"restored_episode", restored, "held", heldNow(l.committed, now), "committed_datacenters", dcs)
	l.handle(ctx, evs)
	return l
}

// stop ends this leader's engine.
func (l *leaderCorrelator) stop(why string) {
	l.log.Info("correlation engine stopped on this node", "reason", why, "uncommitted_events", len(l.pending))
}

// seed loads the membership's whole current view and the health score
// into the engine at once (members it no longer lists are forgotten).
func (l *leaderCorrelator) seed(now time.Time) []engine.CorrelationEvent {
	ms := l.s.corr.ms
	members := ms.Members()
	list := make([]engine.MemberObservation, len(members))
	for i, m := range members {
		list[i] = engine.MemberObservation{Name: m.Name, Datacenter: m.Meta.Datacenter, State: engine.MemberState(m.State)}
	}
	return l.cor.SetMembers(now, ms.LocalHealth(), list)
}

// member feeds one member event.
func (l *leaderCorrelator) member(ctx context.Context, ev swim.Event) {
	l.handle(ctx, l.cor.MemberUpdate(ev.At, ev.Member.Name, ev.Member.Meta.Datacenter, engine.MemberState(ev.State)))
}

// resync loads the whole member list after events were lost. A member the
// list no longer has was forgotten (it left, or stayed dead past the
// gossip layer's retention): it no longer counts.
func (l *leaderCorrelator) resync(ctx context.Context) {
	l.handle(ctx, l.seed(l.s.clock()))
}

// forgetUnlisted drops the members the membership no longer lists: the
// gossip layer forgets members without an event, and every leader must
// count the same members (a new leader seeds from the list).
func (l *leaderCorrelator) forgetUnlisted(now time.Time) []engine.CorrelationEvent {
	listed := map[string]bool{}
	for _, m := range l.s.corr.ms.Members() {
		listed[m.Name] = true
	}
	var gone []string
	for _, name := range l.cor.MemberNames() {
		if !listed[name] {
			gone = append(gone, name)
		}
	}
	if len(gone) == 0 {
		return nil
	}
	l.log.Info("gossip members forgotten: they no longer count in their datacenters", "members", gone)
	return l.cor.Forget(now, gone)
}

// rtt feeds one RTT sample.
func (l *leaderCorrelator) rtt(ctx context.Context, smp swim.RTTSample) {
	l.handle(ctx, l.cor.RTT(smp.At, smp.Datacenter, smp.RTT))
}

// tick lets time pass in the engine (with the current health score),
// retries a failed commit, and notices the hold cap.
func (l *leaderCorrelator) tick(ctx context.Context) {
	now := l.s.clock()
	evs := l.forgetUnlisted(now)
	l.handle(ctx, append(evs, l.cor.LocalHealth(now, l.s.corr.ms.LocalHealth())...))
	l.checkCap(now)
}

// handle consults the modules on the events that call for it and commits
// what changed.
func (l *leaderCorrelator) handle(ctx context.Context, evs []engine.CorrelationEvent) {
	l.pending = append(l.pending, evs...)
	if len(evs) > 0 {
		st := l.cor.Status()
		for _, ev := range evs {
			switch ev.Type {
			case engine.EventPartitionDetected, engine.EventSeverityChanged, engine.EventPartitionHealed:
				l.consult(ctx, ev, st)
			}
		}
	}
	// Without events the view can still differ from the committed one: the
	// severity moves within the backoff, and a new leader has its own view.
	l.commit(ctx)
}

// holdUntil is the cap of an episode detected at detected.
func (l *leaderCorrelator) holdUntil(detected time.Time) time.Time {
	if max := l.s.cfg.Raft.MaxLeaseHold; max > 0 {
		return detected.Add(max)
	}
	return farFuture
}

// view is the record the engine's status and the modules' decision call
// for (without events, grace and leader).
func (l *leaderCorrelator) view(st engine.CorrelationStatus) raftstore.CorrelationUpdate {
	u := raftstore.CorrelationUpdate{Severity: st.Severity, Episode: st.Episode, Datacenters: []raftstore.DatacenterState{}}
	for _, d := range st.Datacenters {
		u.Datacenters = append(u.Datacenters, raftstore.DatacenterState{Name: d.Name, State: d.State, Since: d.Since})
	}
	if ep := st.Episode; ep != nil {
		u.HoldUntil = l.holdUntil(ep.DetectedAt)
		if l.mod != nil {
			u.Decision = l.mod.decision
			if l.mod.decision.Hold {
				u.Held = l.mod.held
			}
		} else {
			u.Held = ep.Datacenters
			u.Decision = raftstore.HoldDecision{Source: raftstore.DecisionBuiltIn, Hold: true, Event: engine.EventPartitionDetected, At: ep.DetectedAt}
		}
	}
	return u
}

// viewKey is a canonical form of a view, for comparisons.
func viewKey(u raftstore.CorrelationUpdate) string {
	u.Events, u.Grace, u.Leader = nil, nil, ""
	if len(u.Held) == 0 {
		u.Held = nil
	}
	b, _ := json.Marshal(u)
	return string(b)
}

func recordView(r *raftstore.CorrelationRecord) raftstore.CorrelationUpdate {
	return raftstore.CorrelationUpdate{Severity: r.Severity, Episode: r.Episode, Held: r.Held, HoldUntil: r.HoldUntil,
		Decision: r.Decision, Datacenters: r.Datacenters}
}

// commit commits the current view when it differs from the committed one
// or events are pending.
func (l *leaderCorrelator) commit(ctx context.Context) {
	now := l.s.clock()
	u := l.view(l.cor.Status())
	key := viewKey(u)
	if now.Before(l.retryAt) && (l.refused == "" || l.refused == key) {
		return // a record refused as invalid is retried early only for a new view
	}
	if len(l.pending) == 0 && !l.takeover && l.committed != nil && key == viewKey(recordView(l.committed)) {
		return
	}
	if l.unknown != nil {
		// Whether the last record went through must be known before the
		// next one is proposed, or its events would be committed twice.
		bctx, cancel := context.WithTimeout(ctx, l.s.cfg.Raft.ApplyTimeout)
		err := l.s.store.Barrier(bctx)
		cancel()
		if err != nil {
			l.retryLater(ctx, now, err, commitRetryPause, "step", "barrier after a record of unknown outcome")
			return
		}
		if l.adoptLateCommit(l.s.store.Correlation(), now) {
			return
		}
		l.unknown = nil // it never committed: its events are proposed again
	}
	if cur := l.s.store.Correlation(); cur != nil && (l.committed == nil || cur.Revision != l.committed.Revision) {
		// Another leader committed since this one read the record (this
		// node lost and regained leadership between two polls): its view
		// of the record is stale, so it starts over from the committed one.
		l.log.Warn("correlation record committed by another leader meanwhile; restarting the engine from it",
			"revision", cur.Revision, "by", cur.Leader)
		l.lost = true
		return
	}
	base := uint64(0)
	if l.committed != nil {
		base = l.committed.Revision
	}
	newHeld := u.Held
	if u.Episode == nil || !now.Before(u.HoldUntil) {
		newHeld = nil
	}
	for _, dc := range heldNow(l.committed, now) {
		if !slices.Contains(newHeld, dc) {
			u.Grace = append(u.Grace, dc)
		}
	}
	u.Events = l.pending
	cctx, cancel := context.WithTimeout(ctx, l.s.cfg.Raft.ApplyTimeout)
	res, err := l.s.store.PutCorrelation(cctx, u)
	cancel()
	if err != nil {
		pause := commitRetryPause
		l.refused, l.unknown = "", nil
		switch {
		case errors.Is(err, raftstore.ErrInvalid):
			// The same view would be refused again: a bug, not a hiccup.
			// Try again when the view changes, or after a while.
			pause, l.refused = invalidRecordPause, key
		default:
			// The outcome is unknown (e.g. the apply timed out): the entry
			// may still commit; the next attempt first finds out.
			l.unknown = &unknownCommit{after: base, events: len(l.pending), reports: len(l.reports), grace: u.Grace}
		}
		l.retryLater(ctx, now, err, pause, "severity", u.Severity, "held", u.Held)
		return
	}
	prev := l.committed
	l.committed, l.retryAt, l.refused, l.unknown = &res.Record, time.Time{}, "", nil
	l.committedWith(prev, &res.Record, len(l.pending), len(l.reports), u.Grace, res.Graced, now)
}

// retryLater handles a failed commit or barrier: lost leadership drops the
// engine (the loop starts a new one if this node leads again); anything
// else is logged and retried after pause.
func (l *leaderCorrelator) retryLater(ctx context.Context, now time.Time, err error, pause time.Duration, attrs ...any) {
	if errors.Is(err, raftstore.ErrNotLeader) || errors.Is(err, raftstore.ErrLeadershipLost) || errors.Is(err, raftstore.ErrClosed) {
		l.lost = true
		return
	}
	if ctx.Err() == nil {
		attrs = append([]any{"events", len(l.pending), "retry_in", pause}, attrs...)
		l.log.Error("correlation record not committed; retrying", append(attrs, "error", err)...)
	}
	l.retryAt = now.Add(pause)
}

// unknownCommit is a record whose commit failed with an unknown outcome.
type unknownCommit struct {
	// after is the revision it was proposed after; events and reports are
	// how many of the pending events and reports it carried; grace the
	// datacenters it released.
	after           uint64
	events, reports int
	grace           []string
}

// adoptLateCommit recognises cur (read after a barrier, so complete) as
// this leader's own record whose commit timed out but went through: the
// next revision after the one it was proposed on, naming this node. It takes it as committed (logging its
// events and handing its reports on) and reports whether it did.
func (l *leaderCorrelator) adoptLateCommit(cur *raftstore.CorrelationRecord, now time.Time) bool {
	u := l.unknown
	if u == nil || cur == nil || cur.Revision != u.after+1 || cur.Leader != l.s.cfg.NodeID {
		return false
	}
	l.log.Info("a correlation record whose commit timed out was committed after all", "revision", cur.Revision)
	prev := l.committed
	l.committed, l.unknown, l.retryAt, l.refused = cur, nil, time.Time{}, ""
	l.committedWith(prev, cur, u.events, u.reports, u.grace, nil, now)
	return true
}

// committedWith finishes a commit of rec that carried the first events
// pending events and the first reports reports: it logs them and the
// holds, and hands the reports to the reporters.
func (l *leaderCorrelator) committedWith(prev, rec *raftstore.CorrelationRecord, events, reports int, grace []string, graced []engine.Lease, now time.Time) {
	evs := l.pending[:events]
	l.pending = slices.Clone(l.pending[events:])
	l.takeover = false
	l.s.corr.metrics.records.Inc()
	for _, ev := range evs {
		l.logEvent(ev)
	}
	l.logHolds(prev, rec, grace, graced, now)
	l.submitReports(reports)
}

// logEvent logs one committed event.
func (l *leaderCorrelator) logEvent(ev engine.CorrelationEvent) {
	switch ev.Type {
	case engine.EventDCStateChanged:
		level := slog.LevelInfo
		if ev.To == engine.DCFailed || ev.To == engine.DCFlapping {
			level = slog.LevelWarn
		}
		l.log.Log(context.Background(), level, "datacenter state changed", "datacenter", ev.Datacenter, "from", ev.From, "to", ev.To, "at", ev.At)
	case engine.EventPartitionDetected:
		l.log.Warn("partition detected: datacenters failed together", "event", ev.Type, "episode", ev.Episode, "severity", ev.Severity,
			"affected", ev.Affected, "healthy", ev.Healthy, "at", ev.At)
	case engine.EventSeverityChanged:
		l.log.Warn("partition severity changed", "event", ev.Type, "episode", ev.Episode, "severity", ev.Severity,
			"previous", ev.Previous, "affected", ev.Affected, "at", ev.At)
	case engine.EventPartitionHealed:
		l.log.Info("partition healed", "event", ev.Type, "episode", ev.Episode, "severity", ev.Severity,
			"previous", ev.Previous, "affected", ev.Affected, "healthy", ev.Healthy, "at", ev.At)
	}
}

// logHolds logs, once per change, the episode-level hold decisions: which
// datacenters and jobs are held, and which are released with their grace.
// The expiry loop logs each lease's own hold and its end.
func (l *leaderCorrelator) logHolds(old, rec *raftstore.CorrelationRecord, released []string, graced []engine.Lease, now time.Time) {
	oldHeld, newHeld := heldNow(old, now), heldNow(rec, now)
	episode := ""
	if rec.Episode != nil {
		episode = rec.Episode.ID
	}
	added := false
	for _, dc := range newHeld {
		if !slices.Contains(oldHeld, dc) {
			added = true
		}
	}
	if added {
		leases, err := l.s.leasesIn(newHeld)
		if err != nil {
			l.log.Error("read the held leases", "error", err)
		}
		l.log.Warn("leases held: their datacenters may be cut off rather than dead; they are not expired until the cap",
			"episode", episode, "datacenters", newHeld, "job_ids", jobIDs(leases), "leases", len(leases),
			"hold_until", rec.HoldUntil, "decision", rec.Decision.Source, "modules", rec.Decision.Modules)
	}
	d := rec.Decision
	decided := old == nil || old.Episode == nil || old.Decision.Source != d.Source || old.Decision.Hold != d.Hold ||
		old.Decision.Event != d.Event || !old.Decision.At.Equal(d.At)
	if rec.Episode != nil && !d.Hold && decided {
		l.log.Warn("leases not held: the correlation modules decided against holding", "episode", episode,
			"affected", rec.Episode.Datacenters, "modules", rec.Decision.Modules, "notes", rec.Decision.Notes)
	}
	if len(released) > 0 {
		why := "the datacenters left the held set"
		if rec.Episode == nil {
			why = "the episode ended"
		}
		prev := ""
		if old != nil && old.Episode != nil {
			prev = old.Episode.ID
		}
		l.log.Info("lease holds released: each active lease of these datacenters gets one TTL to be renewed before it can expire",
			"episode", prev, "reason", why, "datacenters", released, "job_ids", jobIDs(graced), "graced", len(graced), "still_held", newHeld)
	}
}

// checkCap logs, once per episode on this leader, that the hold cap has
// passed: from then on the held leases expire as usual.
func (l *leaderCorrelator) checkCap(now time.Time) {
	rec := l.committed
	if rec == nil || rec.Episode == nil || len(rec.Held) == 0 || now.Before(rec.HoldUntil) || l.capLogged == rec.Episode.ID {
		return
	}
	l.capLogged = rec.Episode.ID
	leases, err := l.s.leasesIn(rec.Held)
	if err != nil {
		l.log.Error("read the held leases", "error", err)
	}
	l.log.Warn("lease hold cap reached: the held leases expire as usual from now on",
		"episode", rec.Episode.ID, "datacenters", rec.Held, "job_ids", jobIDs(leases), "hold_until", rec.HoldUntil,
		"max_hold", l.s.cfg.Raft.MaxLeaseHold)
}

// consult calls the correlation modules on ev and records their decision,
// and queues ev for the reporters.
func (l *leaderCorrelator) consult(ctx context.Context, ev engine.CorrelationEvent, st engine.CorrelationStatus) {
	var held []string
	switch {
	case ev.Type == engine.EventPartitionHealed:
		if l.committed != nil {
			held = l.committed.Held
		}
	case st.Episode != nil:
		held = st.Episode.Datacenters
	}
	leases, err := l.s.leasesIn(held)
	if err != nil {
		l.log.Error("read the leases to hold", "datacenters", held, "error", err)
	}
	prev := string(ev.Previous)
	if prev == "" {
		prev = string(engine.SeverityNone)
		if l.committed != nil {
			prev = string(l.committed.Severity)
		}
	}
	wev := wasm.CorrelationEvent{
		Type: string(ev.Type), Episode: ev.Episode, Severity: string(ev.Severity), PreviousSeverity: prev,
		AffectedDatacenters: ev.Affected, HealthyDatacenters: ev.Healthy, Time: ev.At,
		HeldLeases: make([]wasm.HeldLease, len(leases)),
	}
	for i, le := range leases {
		wev.HeldLeases[i] = wasm.HeldLease{JobID: le.JobID, Owner: le.Owner, OwnerDC: le.OwnerDC, Token: le.Token}
	}
	call, err := wasm.NewCorrelationCall(wev)
	if err != nil {
		l.log.Error("correlation event not encoded; modules and reporters not called", "event", ev.Type, "episode", ev.Episode, "error", err)
		return
	}
	known := make([]string, len(st.Datacenters))
	for i, d := range st.Datacenters {
		known[i] = d.Name
	}
	dec := l.s.callCorrelationModules(ctx, call, ev, known)
	if ev.Type == engine.EventPartitionHealed {
		l.mod = nil // the episode is over: its holds end whatever the modules say
	} else {
		l.mod = dec
	}
	l.reports = append(l.reports, reporters.CorrelationEvent{Type: string(ev.Type), Episode: ev.Episode,
		Datacenters: call.Datacenters, JobIDs: call.JobIDs, Event: call.Event})
}

// submitReports hands the committed events to the reporter pipeline.
func (l *leaderCorrelator) submitReports(n int) {
	reps := l.reports[:n]
	l.reports = slices.Clone(l.reports[n:])
	if l.s.reporters == nil {
		return
	}
	for _, r := range reps {
		// A full queue drops, counts and logs the event itself.
		if err := l.s.reporters.pipeline.SubmitCorrelationEvent(r); err != nil && !errors.Is(err, reporters.ErrQueueFull) {
			l.log.Error("correlation event not handed to the reporters", "event", r.Type, "episode", r.Episode,
				"datacenters", r.Datacenters, "job_ids", r.JobIDs, "error", err)
		}
	}
}
