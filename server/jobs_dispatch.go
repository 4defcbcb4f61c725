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
// the Raft leader feeds it: job results are leader-only requests, and the
// lease watch that turns committed lease events into reporter events runs
// only while this node leads (started on gaining leadership, stopped on
// losing it). Followers therefore never write to sinks.

const (
	// leadershipPoll is how often the node checks whether it leads, to start
	// or stop its lease watch. Raft's state is an atomic read; a change is
	// noticed within this delay.
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

// dispatchingSince is when this node started dispatching: when it last
// became the leader, or the pipeline's start when it does not lead.
func (rs *reporterState) dispatchingSince() time.Time {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if !rs.since.IsZero() {
		return rs.since
	}
	return rs.pipeline.Since()
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

// startReporters starts the loop that runs the lease watch while this
// node leads.
func (s *Server) startReporters() {
	if s.reporters == nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.reporters.stop, s.reporters.done = cancel, make(chan struct{})
	go func() {
		defer close(s.reporters.done)
		s.followLeadership(ctx)
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

// followLeadership runs leaseWatchTerm for each term this node leads.
func (s *Server) followLeadership(ctx context.Context) {
	tick := time.NewTicker(leadershipPoll)
	defer tick.Stop()
	for {
		if s.store.IsLeader() {
			s.reporters.mu.Lock()
			s.reporters.since = s.clock()
			s.reporters.mu.Unlock()
			s.log.Info("leading: dispatching lease events to reporters")
			s.leaseWatchTerm(ctx)
			s.reporters.mu.Lock()
			s.reporters.since = time.Time{}
			s.reporters.mu.Unlock()
			if ctx.Err() == nil {
				s.log.Info("no longer leading: lease events are no longer dispatched here")
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// leaseWatchTerm feeds committed lease events to the pipeline from now on,
// until this node stops leading or ctx ends. A watch that ends early
// (lagged, compacted) is reopened where it stopped.
func (s *Server) leaseWatchTerm(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Stop the watch as soon as leadership goes.
	go func() {
		tick := time.NewTicker(leadershipPoll)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				if !s.store.IsLeader() {
					cancel()
					return
				}
			}
		}
	}()
	var (
		from    uint64 // 0: from now on
		lastIdx uint64 // index of the last event submitted
		seen    int    // events of lastIdx submitted
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
			// A node that just lost leadership may apply the new leader's
			// entries before it notices; those are the new leader's to
			// dispatch.
			if !s.store.IsLeader() {
				cancel()
				continue
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
