package server

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/coordinatord/coordinatord/engine"
	"github.com/coordinatord/coordinatord/raftstore"
	"github.com/coordinatord/coordinatord/swim"
)

// Membership and correlation on a node.
//
// Every node that has a gossip membership (Config.Gossip, or an injected
// Config.Membership) runs one goroutine, runCorrelation, that always
// drains the membership's Events and RTTs, so that gossip never drops
// events for lack of a reader, and keeps this node's RTT window for the
// API. While the node is the Raft leader the same goroutine also runs the
// correlation engine (correlation_leader.go): it is built when leadership is
// gained, from the last committed correlation record and the membership's
// current view, fed every event, RTT sample and health score, ticked every
// CorrelationInterval, and dropped when leadership is lost.
//
// The engine's decisions are committed as correlation records
// (raftstore.PutCorrelation). Every node's lease expiry hook (holdLease)
// reads the committed record, so whichever node leads next holds the same
// leases from its first tick.

const (
	// gossipLeaveTimeout bounds how long Close waits for this node's leave
	// announcement to go out.
	gossipLeaveTimeout = 3 * time.Second
	// correlationLeadershipPoll is how often the loop checks whether this
	// node leads, to start or drop the engine.
	correlationLeadershipPoll = 50 * time.Millisecond
)

// correlationState is the node's membership and correlation machinery.
type correlationState struct {
	// ms is the node's gossip membership; nil when it has none.
	ms swim.Membership
	// own is set when the server started ms (Config.Gossip): Close leaves
	// the pool and shuts it down.
	own *swim.Memberlist
	// rtt is this node's RTT window per datacenter.
	rtt *rttWindow
	// leading is true while this node runs the engine.
	leading atomic.Bool
	// log is the correlation logger (component correlation).
	log     *slog.Logger
	metrics *correlationMetrics
	// notReadySince is when this leader began failing to confirm the
	// committed state (zero otherwise), warned whether that was logged at
	// warn level; only the correlation loop uses them.
	notReadySince time.Time
	warned        bool

	stop context.CancelFunc
	done chan struct{}
}

// storeRef is the node's store once New has opened it: the expiry hook may
// be called by the store before New has assigned s.store.
type storeRef struct {
	p atomic.Pointer[raftstore.Store]
}

// openCorrelation prepares the membership: the injected one, or a member
// started from Config.Gossip with this node's metadata. It runs in New
// after the store is open.
func (s *Server) openCorrelation() error {
	cs := &correlationState{rtt: newRTTWindow(s.cfg.Correlation), metrics: newCorrelationMetrics(s),
		log: s.cfg.Logger.With("component", "correlation", "node", s.cfg.NodeID)}
	s.corr = cs
	s.registry.MustRegister(cs.metrics.collectors()...)
	switch {
	case s.cfg.Membership != nil:
		cs.ms = s.cfg.Membership
	case s.cfg.Gossip != nil:
		gc := *s.cfg.Gossip
		gc.Meta = swim.Meta{NodeID: s.cfg.NodeID, Datacenter: s.self.Datacenter, Role: swim.RoleCoordinator, Version: gc.Meta.Version}
		if gc.Meta.Version == "" {
			gc.Meta.Version = "dev"
		}
		gc.NodeName = s.cfg.NodeID
		if gc.Clock == nil {
			gc.Clock = s.clock
		}
		if gc.Logger == nil {
			gc.Logger = s.cfg.Logger
		}
		m, err := swim.New(gc)
		if err != nil {
			return fmt.Errorf("node %s: gossip: %w", s.cfg.NodeID, err)
		}
		cs.ms, cs.own = m, m
		s.registry.MustRegister(m.Collectors()...)
	}
	if cs.ms == nil {
		cs.log.Info("no gossip membership (no gossip key configured): this node neither observes datacenters nor runs the correlation engine when it leads")
	}
	return nil
}

// startCorrelation starts the loop.
func (s *Server) startCorrelation() {
	cs := s.corr
	if cs == nil || cs.ms == nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	cs.stop, cs.done = cancel, make(chan struct{})
	go func() {
		defer close(cs.done)
		s.runCorrelation(ctx)
	}()
}

// closeCorrelation stops the loop, then leaves the gossip pool and shuts
// the member down if the server started it.
func (s *Server) closeCorrelation() error {
	cs := s.corr
	if cs == nil {
		return nil
	}
	if cs.stop != nil {
		cs.stop()
		<-cs.done
		cs.stop = nil
	}
	if cs.own == nil {
		return nil
	}
	if err := cs.own.Leave(gossipLeaveTimeout); err != nil {
		cs.log.Warn("gossip leave not confirmed; the others will see this node fail instead", "error", err)
	}
	err := cs.own.Shutdown()
	cs.own = nil
	return err
}

// GossipAddr is the address this node gossips on, when the server started
// its gossip member (Config.Gossip); "" otherwise.
func (s *Server) GossipAddr() string {
	if s.corr == nil || s.corr.own == nil {
		return ""
	}
	return s.corr.own.LocalMember().Addr
}

// holdLease is the store's expiry hook (raftstore.Config.Hold): a lease
// owned in dc is held while the committed correlation record holds dc and
// its cap has not passed. It runs on every node that leads, reading the
// committed record, so a new leader holds what the old one held.
func (s *Server) holdLease(dc string) bool {
	st := s.storeRef.p.Load()
	if st == nil {
		return false
	}
	return st.Correlation().Holds(dc, s.clock())
}

// runCorrelation drains the membership and, while this node leads, runs
// the engine. It returns when ctx ends.
func (s *Server) runCorrelation(ctx context.Context) {
	cs := s.corr
	events, rtts := cs.ms.Events(), cs.ms.RTTs()
	lead := time.NewTicker(correlationLeadershipPoll)
	defer lead.Stop()
	tick := time.NewTicker(s.cfg.CorrelationInterval)
	defer tick.Stop()
	var (
		l       *leaderCorrelator // nil while following
		lastSeq uint64
	)
	drop := func(why string) {
		if l != nil {
			l.stop(why)
			l = nil
			cs.leading.Store(false)
		}
	}
	defer drop("node shutting down")
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				cs.log.Info("gossip member events ended (the membership is closed); the engine gets no more member changes")
				events = nil
				continue
			}
			gap := lastSeq != 0 && ev.Seq > lastSeq+1
			if gap {
				cs.log.Warn("gossip member events were lost (the channel was full); resynchronising from the member list", "lost", ev.Seq-lastSeq-1)
			}
			lastSeq = ev.Seq
			if l == nil {
				continue
			}
			if gap {
				l.resync(ctx)
			} else {
				l.member(ctx, ev)
			}
		case smp, ok := <-rtts:
			if !ok {
				cs.log.Info("gossip RTT samples ended (the membership is closed)")
				rtts = nil
				continue
			}
			cs.rtt.add(smp)
			if l != nil {
				l.rtt(ctx, smp)
			}
		case <-lead.C:
			leading := s.store.IsLeader()
			switch {
			case leading && l == nil:
				if l = s.startLeading(ctx); l != nil {
					cs.leading.Store(true)
				}
			case !leading && l != nil:
				drop("leadership lost")
			}
		case <-tick.C:
			if l != nil {
				l.tick(ctx)
			}
		}
		if l != nil && l.lost {
			drop("leadership lost while committing")
		}
	}
}

// rttWindow keeps this node's RTT samples per datacenter within the
// engine's latency window, for the API's local view. Safe for concurrent
// use.
type rttWindow struct {
	cfg engine.CorrelationConfig
	mu  sync.Mutex
	dcs map[string][]swim.RTTSample
}

func newRTTWindow(cfg engine.CorrelationConfig) *rttWindow {
	return &rttWindow{cfg: cfg, dcs: map[string][]swim.RTTSample{}}
}

func (w *rttWindow) add(smp swim.RTTSample) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.dcs[smp.Datacenter] = w.pruneLocked(append(w.dcs[smp.Datacenter], smp), smp.At)
}

func (w *rttWindow) pruneLocked(list []swim.RTTSample, now time.Time) []swim.RTTSample {
	cut := 0
	for cut < len(list) && now.Sub(list[cut].At) > w.cfg.LatencyWindow {
		cut++
	}
	return list[cut:]
}

// mean returns dc's mean RTT at now, the number of samples, and whether
// latency is elevated by the engine's rule.
func (w *rttWindow) mean(dc string, now time.Time) (time.Duration, int, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	list := w.pruneLocked(w.dcs[dc], now)
	w.dcs[dc] = list
	if len(list) == 0 {
		return 0, 0, false
	}
	var sum time.Duration
	for _, smp := range list {
		sum += smp.RTT
	}
	m := sum / time.Duration(len(list))
	return m, len(list), len(list) >= w.cfg.LatencySamples && m >= w.cfg.LatencyElevated
}

// correlationMetrics are the node's correlation metrics. The gauges are
// read from the committed record at scrape time (collector below), so
// every node exports the same values.
type correlationMetrics struct {
	s           *Server
	moduleCalls *prometheus.CounterVec
	records     prometheus.Counter
}

func newCorrelationMetrics(s *Server) *correlationMetrics {
	return &correlationMetrics{
		s: s,
		moduleCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coordinatord_correlation_module_calls_total",
			Help: "Calls of correlation modules by this node while it led, by module and result (hold, no_hold, no_vote, or the failure kind).",
		}, []string{"module", "result"}),
		records: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "coordinatord_correlation_records_committed_total",
			Help: "Correlation records this node committed while it led the engine.",
		}),
	}
}

func (m *correlationMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.moduleCalls, m.records, correlationCollector{m.s}}
}

var (
	dcStateDesc = prometheus.NewDesc("coordinatord_datacenter_state",
		"1 for each datacenter's current state as the committed correlation record has it, 0 for the other states.",
		[]string{"datacenter", "state"}, nil)
	severityDesc = prometheus.NewDesc("coordinatord_correlation_severity",
		"1 for the committed correlation severity, 0 for the others.", []string{"severity"}, nil)
	episodeDesc = prometheus.NewDesc("coordinatord_correlation_episode_active",
		"1 while a partition episode is in progress (committed record).", nil, nil)
	heldDCsDesc = prometheus.NewDesc("coordinatord_correlation_held_datacenters",
		"Datacenters whose leases are held now (episode in progress, hold in force, before its cap).", nil, nil)
	heldLeasesDesc = prometheus.NewDesc("coordinatord_leases_held",
		"Active leases owned in held datacenters (protected from expiry while the hold lasts).", nil, nil)
	overdueLeasesDesc = prometheus.NewDesc("coordinatord_leases_held_overdue",
		"Held leases past their expiry: alive only because they are held.", nil, nil)
)

var (
	allDCStates   = []engine.DCState{engine.DCHealthy, engine.DCFailing, engine.DCFailed, engine.DCRecovering, engine.DCFlapping}
	allSeverities = []engine.Severity{engine.SeverityNone, engine.SeverityLow, engine.SeverityMedium, engine.SeverityHigh}
)

// correlationCollector exports the committed record's state.
type correlationCollector struct{ s *Server }

func (c correlationCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{dcStateDesc, severityDesc, episodeDesc, heldDCsDesc, heldLeasesDesc, overdueLeasesDesc} {
		ch <- d
	}
}

func (c correlationCollector) Collect(ch chan<- prometheus.Metric) {
	rec := c.s.store.Correlation()
	sev := engine.SeverityNone
	episode := 0.0
	if rec != nil {
		sev = rec.Severity
		for _, d := range rec.Datacenters {
			for _, st := range allDCStates {
				ch <- prometheus.MustNewConstMetric(dcStateDesc, prometheus.GaugeValue, boolFloat(d.State == st), d.Name, string(st))
			}
		}
		if rec.Episode != nil {
			episode = 1
		}
	}
	for _, s := range allSeverities {
		ch <- prometheus.MustNewConstMetric(severityDesc, prometheus.GaugeValue, boolFloat(s == sev), string(s))
	}
	ch <- prometheus.MustNewConstMetric(episodeDesc, prometheus.GaugeValue, episode)
	now := c.s.clock()
	held := heldNow(rec, now)
	leases, err := c.s.leasesIn(held)
	if err != nil {
		c.s.cfg.Logger.Error("metrics: read the held leases; the held lease gauges count none", "component", "correlation",
			"datacenters", held, "error", err)
	}
	overdue := 0
	for _, l := range leases {
		if !now.Before(l.ExpiresAt) {
			overdue++
		}
	}
	ch <- prometheus.MustNewConstMetric(heldDCsDesc, prometheus.GaugeValue, float64(len(held)))
	ch <- prometheus.MustNewConstMetric(heldLeasesDesc, prometheus.GaugeValue, float64(len(leases)))
	ch <- prometheus.MustNewConstMetric(overdueLeasesDesc, prometheus.GaugeValue, float64(overdue))
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// heldNow is the record's held set while its hold is in force at now.
func heldNow(rec *raftstore.CorrelationRecord, now time.Time) []string {
	if rec == nil || rec.Episode == nil || !now.Before(rec.HoldUntil) {
		return nil
	}
	return rec.Held
}

// leasesIn returns the active leases owned in dcs, from this node's state,
// sorted by job id.
func (s *Server) leasesIn(dcs []string) ([]engine.Lease, error) {
	var out []engine.Lease
	for _, dc := range dcs {
		list, err := s.store.Leases(raftstore.LeaseFilter{Datacenter: dc, State: engine.LeaseActive})
		if err != nil {
			return out, err
		}
		out = append(out, list...)
	}
	slices.SortFunc(out, func(a, b engine.Lease) int { return strings.Compare(a.JobID, b.JobID) })
	return out, nil
}

func jobIDs(ls []engine.Lease) []string {
	out := make([]string, len(ls))
	for i, l := range ls {
		out[i] = l.JobID
	}
	return out
}
