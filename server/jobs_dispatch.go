package server

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"time"

	"github.com/coordinatord/coordinatord/engine"
	"github.com/coordinatord/coordinatord/raftstore"
	"github.com/coordinatord/coordinatord/reporters"
)

// Reporter dispatch on this node. The pipeline runs on every node, but only
// the Raft leader feeds it: job results are leader-only requests, and every
// node follows the committed lease events but submits one to the pipeline
// only if it leads when the event reaches it. A new leader thus dispatches
// every event committed in its term, from its first entry on (a watch
// started when leadership is noticed would miss the entries committed in
// between), and followers never write to sinks.

const (
	// leadershipPoll is how often the node checks whether it leads, to
	// keep the time since which it dispatches.
	leadershipPoll = 50 * time.Millisecond
	// watchRetryPause spaces attempts to reopen a lease watch that failed.
	watchRetryPause = 100 * time.Millisecond
)

// reporterState is the node's reporter pipeline and its lease watch.
type reporterState struct {
	pipeline *reporters.Pipeline
	// mu guards since.
	mu sync.Mutex
	// since is when this node last became the leader (zero: it does not
	// lead), i.e. since when its results are complete.
	since time.Time

	stop context.CancelFunc
	done chan struct{}
}

// dispatchingSince is when this node last became the leader, since when
// its results are complete; zero while it does not lead. leading and now
// are the store's leadership and the clock at the call: a leader whose
// leadership poll has not run yet answers from now (its results are
// complete since then at least) and keeps that time.
func (rs *reporterState) dispatchingSince(leading bool, now time.Time) time.Time {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if leading && rs.since.IsZero() {
		rs.since = now
	}
	return rs.since
}

// openReporters creates the node's reporter pipeline, with its sink
// directory under the data dir unless configured, and registers its
// metrics.
func (s *Server) openReporters(inv reporters.Invoker, reg reporters.Registry) error {
	cfg := s.cfg.Reporters
	if cfg.SinkDir == "" {
		cfg.SinkDir = filepath.Join(s.cfg.DataDir, "sinks")
	}
	if cfg.Clock == nil {
		cfg.Clock = s.clock
	}
	if cfg.Logger == nil {
		cfg.Logger = s.cfg.Logger.With("node", s.cfg.NodeID)
	}
	p, err := reporters.New(cfg, inv, reg)
	if err != nil {
		return err
	}
	s.reporters = &reporterState{pipeline: p}
	s.registry.MustRegister(p.Collectors()...)
	return nil
}

// startReporters starts following leadership and lease events.
func (s *Server) startReporters() {
	if s.reporters == nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.reporters.stop, s.reporters.done = cancel, make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		s.trackLeadership(ctx)
	}()
	go func() {
		defer wg.Done()
		s.watchLeasesForReporters(ctx)
	}()
	go func() {
		wg.Wait()
		close(s.reporters.done)
	}()
}

// closeReporters stops the lease watch, then drains and closes the
// pipeline.
func (s *Server) closeReporters() error {
	if s.reporters == nil {
		return nil
	}
	if s.reporters.stop != nil {
		s.reporters.stop()
		<-s.reporters.done
	}
	return s.reporters.pipeline.Close()
}

// trackLeadership keeps reporterState.since: when this node last became
// the leader, zero while it follows.
func (s *Server) trackLeadership(ctx context.Context) {
	tick := time.NewTicker(leadershipPoll)
	defer tick.Stop()
	leading := false
	for {
		if now := s.store.IsLeader(); now != leading {
			leading = now
			s.reporters.mu.Lock()
			if leading {
				if s.reporters.since.IsZero() { // unless an answer set it first
					s.reporters.since = s.clock()
				}
			} else {
				s.reporters.since = time.Time{}
			}
			s.reporters.mu.Unlock()
			if leading {
				s.log.Info("leading: dispatching lease events and job results to reporters")
			} else if ctx.Err() == nil {
				s.log.Info("no longer leading: reporters are fed by the new leader")
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// watchLeasesForReporters follows committed lease events from now on until
// ctx ends, and submits each one that reaches this node while it leads. A
// watch that ends early (lagged, compacted) is reopened where it stopped.
func (s *Server) watchLeasesForReporters(ctx context.Context) {
	var (
		from    uint64 // 0: from now on
		lastIdx uint64 // index of the last event received
		seen    int    // events of lastIdx received
	)
	for ctx.Err() == nil {
		watch, err := s.store.WatchLeases(ctx, from)
		var compacted *raftstore.CompactedError
		switch {
		case errors.As(err, &compacted):
			s.log.Warn("lease events were compacted before reporters saw them", "from_index", from, "resume_index", compacted.Oldest)
			from, lastIdx, seen = compacted.Oldest, 0, 0
			continue
		case err != nil:
			if ctx.Err() == nil {
				s.log.Error("lease watch for reporters did not open; retrying", "error", err)
				sleepCtx(ctx, watchRetryPause)
			}
			continue
		}
		skip := 0
		if from != 0 && from == lastIdx {
			skip = seen // the entry's events come again from the first
		}
		n, idx := 0, uint64(0)
		for ev := range watch.Events() {
			if ev.Index != idx {
				idx, n = ev.Index, 0
			} else {
				n++
			}
			if ev.Index == lastIdx && n < skip {
				continue
			}
			if ev.Index != lastIdx {
				lastIdx, seen = ev.Index, 0
			}
			seen++
			if !s.store.IsLeader() {
				continue // the leader dispatches it
			}
			// A full queue drops and counts the event; nothing to do here.
			_ = s.reporters.pipeline.SubmitLeaseEvent(leaseEventForReporters(ev))
		}
		werr := watch.Err()
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("lease watch for reporters ended; resuming", "error", werr, "resume_index", lastIdx)
		from = lastIdx
		if from == 0 {
			from = s.store.AppliedIndex() + 1
		}
		sleepCtx(ctx, watchRetryPause)
	}
}

func leaseEventForReporters(ev engine.LeaseEvent) reporters.LeaseEvent {
	at := ev.Lease.RenewedAt
	switch ev.Type {
	case engine.LeaseEventAcquired:
		at = ev.Lease.AcquiredAt
	case engine.LeaseEventReleased, engine.LeaseEventExpired:
		if !ev.Lease.EndedAt.IsZero() {
			at = ev.Lease.EndedAt
		}
	}
	return reporters.LeaseEvent{
		Type: string(ev.Type), JobID: ev.Lease.JobID, Owner: ev.Lease.Owner, OwnerDC: ev.Lease.OwnerDC,
		Token: ev.Lease.Token, At: at, Index: ev.Index,
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
