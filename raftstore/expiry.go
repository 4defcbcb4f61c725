package raftstore

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/coordinatord/coordinatord/engine"
)

// The lease expiry loop. Like etcd's lessor, only the leader drives expiry,
// and it does so by proposing lease.expire entries through Raft rather than
// by deleting anything locally: the expiry is committed exactly once, in
// log order, on every node.
//
// Leadership comes from Raft's NotifyCh. On gaining it the loop first
// commits leader.promoted, which extends every active lease by at most the
// election timeout (the time a leader change may have cost its holder), then
// rebuilds its queue from the file, and only then starts expiring. On losing
// it the loop stops and the queue is emptied.

const (
	// expiryLoopName is the loop context every log line of the loop
	// carries.
	expiryLoopName = "lease expiry loop"
	// maxExpireBatch bounds the leases one lease.expire entry names.
	maxExpireBatch = 512
	// maxSleepTicks bounds the loop's sleep to this many resolutions, so
	// that a clock step (NTP, a resumed VM) is noticed within half a second
	// at the default resolution, etcd's revoke interval.
	maxSleepTicks = 50
	// maxRetryWait caps the backoff after failures.
	maxRetryWait = time.Second
)

// expiryFailure is one failure of the loop, handed to its error handler.
type expiryFailure struct {
	// Op is what failed: "promote", "rebuild queue", "hold check",
	// "commit expiry", "resync" or "tick" (a recovered panic).
	Op string
	// Leases are the leases concerned; empty when none is.
	Leases []expiryItem
	Err    error
}

func (f expiryFailure) jobIDs() string {
	ids := make([]string, len(f.Leases))
	for i, l := range f.Leases {
		ids[i] = l.job
	}
	return strings.Join(ids, ",")
}

func (f expiryFailure) owners() string {
	owners := make([]string, len(f.Leases))
	for i, l := range f.Leases {
		owners[i] = l.owner + "@" + l.ownerDC
	}
	return strings.Join(owners, ",")
}

// heldLease is a lease the loop keeps past its expiry because Hold says its
// owner's datacenter is cut off rather than dead.
type heldLease struct {
	token uint64
	since time.Time
}

// expirer owns the leadership watcher and, while this node leads, the
// expiry loop.
type expirer struct {
	s          *Store
	queue      *expiryQueue
	clock      func() time.Time
	hold       func(ownerDC string) bool
	resolution time.Duration
	maxHold    time.Duration
	grace      time.Duration
	logger     *slog.Logger

	// hooksMu guards report and stderr, which tests replace.
	hooksMu sync.Mutex
	// report handles a failure; the default logs it at error level. If it
	// fails or panics, fallback writes a plain line to stderr.
	report func(expiryFailure) error
	stderr io.Writer

	// notify is Raft's NotifyCh: true on gaining leadership, false on
	// losing it.
	notify   chan bool
	quit     chan struct{}
	done     chan struct{}
	started  atomic.Bool
	stopOnce sync.Once

	// ticks counts the loop's completed ticks, so that a test can wait
	// for the loop to have looked at a clock it moved.
	ticks atomic.Uint64
}

func newExpirer(s *Store) *expirer {
	e := &expirer{
		s:          s,
		queue:      &s.fsm.lease.queue,
		clock:      s.now,
		hold:       s.cfg.Hold,
		resolution: s.cfg.ExpiryResolution,
		maxHold:    s.cfg.MaxLeaseHold,
		grace:      s.cfg.ElectionTimeout,
		logger:     s.logger.With("loop", expiryLoopName),
		stderr:     os.Stderr,
		// Raft blocks its leader loop on this channel; the buffer and a
		// watcher that never blocks keep that from happening.
		notify: make(chan bool, 16),
		quit:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	e.report = e.logFailure
	return e
}

// start runs the leadership watcher; stop ends it and the loop, and waits
// for both. Open calls start once Raft runs, Close calls stop.
func (e *expirer) start() {
	if e.started.CompareAndSwap(false, true) {
		go e.watchLeadership()
	}
}

func (e *expirer) stop() {
	e.stopOnce.Do(func() { close(e.quit) })
	if e.started.Load() {
		<-e.done
	}
}

// watchLeadership starts the loop on gaining leadership and stops it on
// losing it.
func (e *expirer) watchLeadership() {
	defer close(e.done)
	var stopTerm func() // nil while not leading
	defer func() {
		if stopTerm != nil {
			stopTerm()
		}
	}()
	for {
		select {
		case leader := <-e.notify:
			switch {
			case leader && stopTerm == nil:
				stopTerm = e.startTerm()
			case !leader && stopTerm != nil:
				stopTerm()
				stopTerm = nil
			}
		case <-e.quit:
			return
		}
	}
}

// startTerm runs lead for one term of leadership and returns what ends it:
// a call that stops the loop, waits for it and empties the queue.
func (e *expirer) startTerm() (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.lead(ctx)
	}()
	return func() {
		cancel()
		<-done
		e.queue.deactivate()
		e.logger.Info("lease expiry loop stopped")
	}
}

// lead is the loop of one term of leadership; it returns when ctx ends.
func (e *expirer) lead(ctx context.Context) {
	e.logger.Info("lease expiry loop starting", "grace", e.grace, "resolution", e.resolution)
	if !e.retry(ctx, "promote", e.promote) || !e.retry(ctx, "rebuild queue", e.rebuild) {
		return
	}
	e.logger.Info("lease expiry loop running", "queued", e.queue.len())
	held := map[string]heldLease{}
	failures := 0
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		if e.queue.needsRebuild() && !e.retry(ctx, "rebuild queue", e.rebuild) {
			return
		}
		failed := true // unless tick returns
		e.safely("tick", nil, func() error {
			failed = e.tick(ctx, held)
			return nil
		})
		if failed {
			failures++
		} else {
			failures = 0
		}
		e.ticks.Add(1)
		timer.Reset(e.nextWait(failures))
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-e.queue.wakeC():
		}
	}
}

// retry runs fn until it succeeds or ctx ends, reporting each failure and
// backing off. It reports whether fn succeeded.
func (e *expirer) retry(ctx context.Context, op string, fn func(context.Context) error) bool {
	wait := 10 * e.resolution
	for {
		if e.safely(op, nil, func() error { return fn(ctx) }) {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(wait):
		}
		wait = min(2*wait, maxRetryWait)
	}
}

// safely runs fn, turning an error or a panic into a reported failure
// (unless ctx ended, which is the normal way out of a term). It reports
// whether fn succeeded.
func (e *expirer) safely(op string, leases []expiryItem, fn func() error) (ok bool) {
	defer func() {
		if r := recover(); r != nil {
			e.fail(expiryFailure{Op: op, Leases: leases, Err: fmt.Errorf("panic: %v\n%s", r, debug.Stack())})
			ok = false
		}
	}()
	err := fn()
	if err != nil && err != context.Canceled {
		e.fail(expiryFailure{Op: op, Leases: leases, Err: err})
	}
	return err == nil
}

// promote commits leader.promoted; the state machine extends the active
// leases (see applyLeaderPromoted).
func (e *expirer) promote(ctx context.Context) error {
	resp, err := e.s.apply(ctx, opLeaderPromoted, e.clock(), promotedBody{Node: e.s.nodeID, Grace: e.grace})
	var extended int
	if err == nil {
		extended, err = resultAs[int](resp)
	}
	if err != nil {
		if ctx.Err() != nil {
			return context.Canceled
		}
		return err
	}
	e.logger.Info("leader promotion committed; leases extended by up to the election timeout", "extended", extended, "grace", e.grace)
	return nil
}

// rebuild fills the queue with the active leases.
func (e *expirer) rebuild(context.Context) error {
	return e.queue.rebuild(func() (leases []storedLease, applied uint64, err error) {
		err = e.s.fsm.view(func(tx *bolt.Tx) error {
			applied = getUint64(tx.Bucket(bucketMeta), keyAppliedIndex)
			return scanStoredLeases(tx, func(l storedLease) bool {
				if l.State == engine.LeaseActive {
					leases = append(leases, l)
				}
				return true
			})
		})
		return leases, applied, err
	})
}

// tick expires what is due and not held. A failure to commit is reported
// and makes it return true; the leases stay queued for the next tick.
func (e *expirer) tick(ctx context.Context, held map[string]heldLease) (failed bool) {
	now := e.clock()
	due := e.queue.due(now)
	dueJobs := make(map[string]bool, len(due))
	var expire []expiryItem
	for _, it := range due {
		dueJobs[it.job] = true
		if !e.isHeld(it, now, held) {
			expire = append(expire, it)
		}
	}
	for job, h := range held {
		if !dueJobs[job] {
			delete(held, job)
			e.logger.Info("lease hold ended: the lease is no longer due (renewed, released, taken over, or given a grace when its datacenter was released)", "job_id", job, "token", h.token, "held_for", now.Sub(h.since))
		}
	}
	for chunk := range slices.Chunk(expire, maxExpireBatch) {
		if err := e.expire(ctx, chunk, now); err != nil {
			if ctx.Err() != nil {
				return false // the term ended; nothing to report
			}
			e.fail(expiryFailure{Op: "commit expiry", Leases: chunk, Err: err})
			failed = true
		}
	}
	return failed
}

// isHeld decides whether a due lease is held, logging the start and end of
// each hold once.
func (e *expirer) isHeld(it expiryItem, now time.Time, held map[string]heldLease) bool {
	h, was := held[it.job]
	if was && h.token != it.token {
		// A new lease of the job; its predecessor's hold is over.
		delete(held, it.job)
		was = false
	}
	if e.hold == nil {
		return false
	}
	if holdCapReached(it.ownerExpiresAt, e.maxHold, now) {
		// The cap counts from the expiry the owner last set, which graces
		// do not move: a lease its owner stopped renewing is not held
		// again by a later episode.
		if was {
			delete(held, it.job)
			e.logger.Warn("lease hold ended: held for the maximum; expiring", "job_id", it.job, "owner", it.owner, "owner_dc", it.ownerDC,
				"token", it.token, "expires_at", it.expiresAt, "owner_expires_at", it.ownerExpiresAt, "held_for", now.Sub(h.since), "max_hold", e.maxHold)
		}
		return false
	}
	on := false
	e.safely("hold check", []expiryItem{it}, func() error {
		on = e.hold(it.ownerDC)
		return nil
	})
	switch {
	case on && !was:
		held[it.job] = heldLease{token: it.token, since: now}
		e.logger.Warn("lease expiry held: its owner's datacenter may be cut off rather than dead", "job_id", it.job, "owner", it.owner,
			"owner_dc", it.ownerDC, "token", it.token, "expires_at", it.expiresAt)
	case !on && was:
		delete(held, it.job)
		e.logger.Info("lease hold ended: expiring", "job_id", it.job, "owner", it.owner, "owner_dc", it.ownerDC,
			"token", it.token, "held_for", now.Sub(h.since))
	}
	return on
}

// expire commits one lease.expire entry stamped now and resynchronises the
// queue for the leases it skipped.
func (e *expirer) expire(ctx context.Context, items []expiryItem, now time.Time) error {
	body := expireBody{Leases: make([]expireItem, len(items))}
	for i, it := range items {
		body.Leases[i] = expireItem{JobID: it.job, Token: it.token}
	}
	resp, err := e.s.apply(ctx, opExpireLeases, now, body)
	var res expireResult
	if err == nil {
		res, err = resultAs[expireResult](resp)
	}
	if err != nil {
		return err
	}
	for _, l := range res.Expired {
		e.logger.Debug("lease expired", "job_id", l.JobID, "owner", l.Owner, "owner_dc", l.OwnerDC, "token", l.Token, "expires_at", l.ExpiresAt)
	}
	for _, job := range res.Skipped {
		// The queue disagreed with the file; normally the events that
		// changed the lease have updated it already.
		e.safely("resync", itemsFor(items, job), func() error {
			var (
				l       *storedLease
				applied uint64
			)
			err := e.s.fsm.view(func(tx *bolt.Tx) error {
				applied = getUint64(tx.Bucket(bucketMeta), keyAppliedIndex)
				var err error
				l, err = getStoredLease(tx.Bucket(bucketLeases), job)
				return err
			})
			if err == nil {
				e.queue.resync(job, l, applied)
			}
			return err
		})
	}
	return nil
}

func itemsFor(items []expiryItem, job string) []expiryItem {
	for _, it := range items {
		if it.job == job {
			return []expiryItem{it}
		}
	}
	return nil
}

// nextWait is how long the loop sleeps: until the earliest expiry, but at
// least one resolution and at most maxSleepTicks of them; after failures it
// backs off exponentially instead.
func (e *expirer) nextWait(failures int) time.Duration {
	if failures > 0 {
		return min(e.resolution<<min(failures, 16), maxRetryWait)
	}
	wait := maxSleepTicks * e.resolution
	if next, ok := e.queue.next(); ok {
		wait = min(wait, next.Sub(e.clock()))
	}
	return max(wait, e.resolution)
}

// fail hands a failure to the error handler. If the handler fails or
// panics, a plain line with the job ids and a timestamp goes to stderr:
// the loop's failures are never lost silently, and never stop it.
func (e *expirer) fail(f expiryFailure) {
	e.hooksMu.Lock()
	report, stderr := e.report, e.stderr
	e.hooksMu.Unlock()
	var herr error
	func() {
		defer func() {
			if r := recover(); r != nil {
				herr = fmt.Errorf("error handler panicked: %v", r)
			}
		}()
		herr = report(f)
	}()
	if herr != nil {
		fmt.Fprintf(stderr, "%s coordinatord raftstore node %s: %s: %s failed for jobs [%s] owners [%s]: %v (logging it failed: %v)\n",
			time.Now().UTC().Format(time.RFC3339Nano), e.s.nodeID, expiryLoopName, f.Op, f.jobIDs(), f.owners(), f.Err, herr)
	}
}

// setHooks replaces the error handler and the fallback writer; nil keeps
// the current one. For tests.
func (e *expirer) setHooks(report func(expiryFailure) error, stderr io.Writer) {
	e.hooksMu.Lock()
	defer e.hooksMu.Unlock()
	if report != nil {
		e.report = report
	}
	if stderr != nil {
		e.stderr = stderr
	}
}

// logFailure is the default error handler. It calls the slog handler
// directly so that a logging failure comes back as an error.
func (e *expirer) logFailure(f expiryFailure) error {
	ctx := context.Background()
	h := e.logger.Handler()
	if !h.Enabled(ctx, slog.LevelError) {
		return nil
	}
	r := slog.NewRecord(time.Now(), slog.LevelError, "lease expiry loop failed", 0)
	r.AddAttrs(slog.String("op", f.Op), slog.String("error", f.Err.Error()))
	if len(f.Leases) > 0 {
		r.AddAttrs(slog.String("job_ids", f.jobIDs()), slog.String("owners", f.owners()))
	}
	return h.Handle(ctx, r)
}
