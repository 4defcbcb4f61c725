package reporters

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

var (
	// ErrQueueFull is returned by SubmitJobResult (and SubmitLeaseEvent,
	// which has then already counted the drop) when the queue is full. The
	// API answers it with 429 and Retry-After.
	ErrQueueFull = errors.New("reporter queue full")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("reporter pipeline closed")
)

// dropLogEvery spaces the warnings about dropped lease events; every drop
// is counted in the metric regardless.
const dropLogEvery = time.Second

// event is one queued event and the reporters it goes to.
type event struct {
	seq        uint64
	kind       string // KindJobResult, KindLeaseEvent or KindCorrelation
	handler    string
	jobID      string
	datacenter string
	eventType  string // a lease event's type
	body       []byte
	targets    []Reporter
	// jobIDs and datacenters are the Invocation's, built once per event
	// (from jobID and datacenter unless the submitter set them).
	jobIDs, datacenters []string
}

// Pipeline queues events and dispatches them to reporter modules; see the
// package documentation. It is safe for concurrent use.
type Pipeline struct {
	cfg      Config
	log      *slog.Logger
	invoker  Invoker
	registry Registry
	sinks    *sinkSet
	// results keeps job results' outcomes and lease events' apart, so
	// that lease renewals of many jobs never evict job results' outcomes.
	results map[string]*Results // by event kind
	metrics *metrics
	since   time.Time

	// closeMu guards queue against a send after close: Submit holds it for
	// reading, Close for writing.
	closeMu sync.RWMutex
	closed  bool
	queue   chan *event
	seq     atomic.Uint64

	// ctx is the context of module calls and sink writes; cancel ends them
	// when Close stops waiting.
	ctx     context.Context
	cancel  context.CancelFunc
	workers sync.WaitGroup

	lastDropLog atomic.Int64 // unix nanos of the last drop warning
}

// New checks cfg and starts the pipeline's workers. Close stops them.
func New(cfg Config, invoker Invoker, registry Registry) (*Pipeline, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if invoker == nil || registry == nil {
		return nil, errors.New("reporters: an Invoker and a Registry are required")
	}
	cfg = cfg.withDefaults()
	p := &Pipeline{
		cfg:      cfg,
		log:      cfg.Logger.With("component", "reporters"),
		invoker:  invoker,
		registry: registry,
		queue:    make(chan *event, cfg.QueueSize),
		since:    cfg.Clock(),
	}
	p.sinks = newSinkSet(&p.cfg)
	p.metrics = newMetrics(func() float64 { return float64(len(p.queue)) }, cfg.QueueSize)
	p.results = make(map[string]*Results, 3)
	for _, kind := range []string{KindJobResult, KindLeaseEvent, KindCorrelation} {
		p.results[kind] = newResults(cfg.ResultJobs, cfg.ResultsPerJob,
			func() { p.metrics.dropped.WithLabelValues(DropResultsEvicted).Inc() },
			func() { p.metrics.dropped.WithLabelValues(DropResultsOverflow).Inc() })
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.workers.Add(cfg.Workers)
	for range cfg.Workers {
		go p.work()
	}
	return p, nil
}

// Collectors are the pipeline's Prometheus metrics.
func (p *Pipeline) Collectors() []prometheus.Collector { return p.metrics.collectors() }

// Since is when the pipeline started: results before it (on another
// leader, say) are not known here.
func (p *Pipeline) Since() time.Time { return p.since }

// QueueLen is how many events wait for a worker.
func (p *Pipeline) QueueLen() int { return len(p.queue) }

// QueueCap is the queue's bound, Config.QueueSize.
func (p *Pipeline) QueueCap() int { return cap(p.queue) }

// Results returns the recorded results of jobID (nil if none).
// They are sorted by reporter, datacenter and event kind.
func (p *Pipeline) Results(jobID string) []Result {
	out := append(p.results[KindJobResult].Job(jobID), p.results[KindLeaseEvent].Job(jobID)...)
	sortResults(out)
	return out
}

// targets are the installed reporters that export handler.
func (p *Pipeline) targets(handler string) []Reporter {
	all := p.registry.Reporters()
	var out []Reporter
	for _, r := range all {
		if r.Exports(handler) {
			if out == nil {
				out = make([]Reporter, 0, len(all))
			}
			out = append(out, r)
		}
	}
	return out
}

// SubmitJobResult queues a job's result for every reporter that exports
// coordinatord_on_job_result, and returns their names. It never blocks: a
// full queue is ErrQueueFull (nothing is queued, and the caller should
// answer "retry later"). With no such reporter it queues nothing and
// returns an empty list.
func (p *Pipeline) SubmitJobResult(jr JobResult) ([]string, error) {
	if jr.Time.IsZero() {
		jr.Time = p.cfg.Clock()
	}
	body, err := encodeJobResult(jr)
	if err != nil {
		return nil, err
	}
	ev := &event{
		kind: KindJobResult, handler: HandlerJobResult, jobID: jr.JobID, datacenter: jr.Datacenter,
		body: body, targets: p.targets(HandlerJobResult),
	}
	names := make([]string, len(ev.targets))
	for i, r := range ev.targets {
		names[i] = r.Name
	}
	if len(ev.targets) == 0 {
		return names, p.checkOpen()
	}
	if err := p.enqueue(ev); err != nil {
		if errors.Is(err, ErrQueueFull) {
			p.metrics.refused.Inc()
		}
		return nil, err
	}
	return names, nil
}

// SubmitLeaseEvent queues a lease event for every reporter that exports
// coordinatord_on_lease_event. It never blocks: an event that finds the
// queue full is dropped, counted in
// coordinatord_reporter_dropped_total{source="lease_event"}, and
// ErrQueueFull is returned for the caller's information.
func (p *Pipeline) SubmitLeaseEvent(le LeaseEvent) error {
	targets := p.targets(HandlerLeaseEvent)
	if len(targets) == 0 {
		return p.checkOpen()
	}
	body, err := encodeLeaseEvent(le)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidEvent, err)
	}
	ev := &event{
		kind: KindLeaseEvent, handler: HandlerLeaseEvent, jobID: le.JobID, datacenter: le.OwnerDC,
		eventType: le.Type, body: body, targets: targets,
	}
	err = p.enqueue(ev)
	if errors.Is(err, ErrQueueFull) {
		p.metrics.dropped.WithLabelValues(DropLeaseEvent).Inc()
		p.warnDrop(le)
	}
	return err
}

// SubmitCorrelationEvent queues a correlation event for every reporter
// that exports coordinatord_on_correlation. Like a lease event it cannot be
// refused: one that finds the queue full is dropped, counted in
// coordinatord_reporter_dropped_total{source="correlation"}, and
// ErrQueueFull is returned for the caller's information. Results are kept
// by episode (CorrelationResults).
func (p *Pipeline) SubmitCorrelationEvent(ce CorrelationEvent) error {
	targets := p.targets(HandlerCorrelation)
	if len(targets) == 0 {
		return p.checkOpen()
	}
	if len(ce.Event) == 0 || ce.Episode == "" {
		return fmt.Errorf("%w: a correlation event needs its episode and its JSON", ErrInvalidEvent)
	}
	ev := &event{
		kind: KindCorrelation, handler: HandlerCorrelation, jobID: ce.Episode, eventType: ce.Type,
		body: ce.Event, targets: targets, datacenters: ce.Datacenters, jobIDs: ce.JobIDs,
	}
	if ev.jobIDs == nil {
		ev.jobIDs = []string{}
	}
	err := p.enqueue(ev)
	if errors.Is(err, ErrQueueFull) {
		p.metrics.dropped.WithLabelValues(DropCorrelation).Inc()
		p.log.Warn("reporter queue full: a correlation event was dropped (see coordinatord_reporter_dropped_total)",
			"event", ce.Type, "episode", ce.Episode, "datacenters", ce.Datacenters, "queue_size", cap(p.queue))
	}
	return err
}

// CorrelationResults returns the recorded results of the correlation
// events of an episode (nil if none), sorted by reporter.
func (p *Pipeline) CorrelationResults(episode string) []Result {
	return p.results[KindCorrelation].Job(episode)
}

func (p *Pipeline) warnDrop(le LeaseEvent) {
	now := time.Now().UnixNano()
	last := p.lastDropLog.Load()
	if now-last < int64(dropLogEvery) || !p.lastDropLog.CompareAndSwap(last, now) {
		return
	}
	p.log.Warn("reporter queue full: lease events are being dropped (see coordinatord_reporter_dropped_total)",
		"job_id", le.JobID, "event", le.Type, "owner_dc", le.OwnerDC, "index", le.Index, "queue_size", cap(p.queue))
}

func (p *Pipeline) checkOpen() error {
	p.closeMu.RLock()
	defer p.closeMu.RUnlock()
	if p.closed {
		return ErrClosed
	}
	return nil
}

// enqueue records ev as pending for its targets and queues it, or fails
// with ErrQueueFull or ErrClosed without recording anything.
func (p *Pipeline) enqueue(ev *event) error {
	ev.seq = p.seq.Add(1)
	if ev.jobIDs == nil {
		ev.jobIDs = []string{ev.jobID}
	}
	if ev.datacenters == nil && ev.datacenter != "" {
		ev.datacenters = []string{ev.datacenter}
	}
	p.closeMu.RLock()
	defer p.closeMu.RUnlock()
	if p.closed {
		return ErrClosed
	}
	select {
	case p.queue <- ev:
	default:
		return ErrQueueFull
	}
	p.metrics.submitted.WithLabelValues(ev.kind).Inc()
	now := p.cfg.Clock()
	for _, r := range ev.targets {
		p.results[ev.kind].update(ev.jobID, resultKey{r.Name, ev.datacenter, ev.kind}, func(res *Result) {
			// A worker may already have finished this event: only a newer
			// event makes a result pending again.
			if ev.seq > res.seq {
				res.seq = ev.seq
				res.Status, res.ErrorKind, res.Error = StatusPending, "", ""
				res.Digest, res.EventType, res.At = r.Digest, ev.eventType, now
				res.Elapsed, res.SinkElapsed, res.Records = 0, 0, 0
			}
		})
	}
	return nil
}

func (p *Pipeline) work() {
	defer p.workers.Done()
	for ev := range p.queue {
		if p.ctx.Err() != nil {
			// Close gave up waiting: count what is left instead of failing
			// every call on a cancelled context.
			p.metrics.dropped.WithLabelValues(DropShutdown).Inc()
			p.recordShutdown(ev)
			continue
		}
		for _, r := range ev.targets {
			p.call(ev, r)
		}
	}
}

// call runs one reporter on one event, writes its records and records the
// outcome. Nothing here can fail the event for other reporters.
func (p *Pipeline) call(ev *event, r Reporter) {
	out := p.invoker.Invoke(p.ctx, r, Invocation{
		Handler: ev.handler, Kind: ev.kind, Event: ev.body, Datacenters: ev.datacenters, JobIDs: ev.jobIDs,
	})
	var (
		errKind, errMsg string
		written         int
		sinkElapsed     time.Duration
	)
	switch {
	case out.Err != nil:
		errKind, errMsg = out.ErrKind, out.Err.Error()
		if errKind == "" {
			errKind = "error"
		}
		// The sandbox has written the trap report; this is the pipeline's
		// side of it.
		p.log.Debug("reporter call failed", "reporter", r.Name, "digest", r.Digest, "event", ev.kind,
			"job_id", ev.jobID, "datacenter", ev.datacenter, "error_kind", errKind, "error", errMsg)
	default:
		start := time.Now()
		written, errMsg = p.write(ev, r, out.Records)
		sinkElapsed = time.Since(start)
		if errMsg != "" {
			errKind = ErrKindSink
		}
	}
	result := StatusOK
	label := "ok"
	if errKind != "" {
		result, label = StatusError, errKind
	}
	p.metrics.calls.WithLabelValues(r.Name, label).Inc()
	p.metrics.callTime.WithLabelValues(r.Name).Observe(out.Elapsed.Seconds())
	at := p.cfg.Clock()
	p.results[ev.kind].update(ev.jobID, resultKey{r.Name, ev.datacenter, ev.kind}, func(res *Result) {
		res.Calls++
		if errKind != "" {
			res.Failures++
		}
		if ev.seq < res.seq {
			return // a newer event of this key is pending; it will report
		}
		res.seq = ev.seq
		res.Digest, res.EventType, res.Status = r.Digest, ev.eventType, result
		res.ErrorKind, res.Error = errKind, errMsg
		res.Elapsed, res.SinkElapsed, res.At, res.Records = out.Elapsed, sinkElapsed, at, written
	})
}

// write sends recs to r's sinks, all of them even when one fails, and
// returns how many were written and the first failure's text.
func (p *Pipeline) write(ev *event, r Reporter, recs []Record) (written int, firstErr string) {
	for _, rec := range recs {
		spec, ok := r.sink(rec.Sink)
		var sink Sink
		err := fmt.Errorf("the module has no sink named %q", rec.Sink) // the invoker checks; this is a safety net
		if ok {
			sink, err = p.sinks.get(spec)
		}
		if err == nil {
			err = sink.Write(p.ctx, rec.Data)
		}
		if err != nil {
			if ok {
				p.metrics.sinkErrors.WithLabelValues(spec.Type).Inc()
			}
			p.log.Error("reporter record not written", "reporter", r.Name, "sink", spec.String(),
				"event", ev.kind, "job_id", ev.jobID, "datacenter", ev.datacenter, "error", err)
			if firstErr == "" {
				firstErr = fmt.Sprintf("sink %q: %v", rec.Sink, err)
			}
			continue
		}
		p.metrics.sinkWrites.WithLabelValues(spec.Type).Inc()
		written++
	}
	return written, firstErr
}

func (p *Pipeline) recordShutdown(ev *event) {
	at := p.cfg.Clock()
	for _, r := range ev.targets {
		p.results[ev.kind].update(ev.jobID, resultKey{r.Name, ev.datacenter, ev.kind}, func(res *Result) {
			if ev.seq < res.seq {
				return
			}
			res.seq = ev.seq
			res.Status, res.ErrorKind, res.Error, res.At = StatusError, ErrKindShutdown, "the node shut down before the event was delivered", at
		})
	}
}

// Close stops accepting events, lets the workers finish the queue for up
// to Config.DrainTimeout, then cancels calls in flight and counts the
// events left as dropped (source shutdown); finally it flushes and closes
// the sinks. It is safe to call more than once.
func (p *Pipeline) Close() error {
	p.closeMu.Lock()
	if p.closed {
		p.closeMu.Unlock()
		return nil
	}
	p.closed = true
	close(p.queue)
	p.closeMu.Unlock()

	done := make(chan struct{})
	go func() {
		p.workers.Wait()
		close(done)
	}()
	timer := time.NewTimer(p.cfg.DrainTimeout)
	defer timer.Stop()
	select {
	case <-done:
	case <-timer.C:
		p.log.Warn("reporter queue not drained in time; cancelling the calls in flight", "left", len(p.queue), "drain_timeout", p.cfg.DrainTimeout)
		p.cancel()
		<-done
	}
	p.cancel()
	return p.sinks.close()
}
