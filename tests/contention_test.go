package tests

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coordinatord/coordinatord/api"
	"github.com/coordinatord/coordinatord/engine"
)

// TestLeasesContention has 32 clients, each its own owner (gates and
// managers with distinct node claims) pinned to one of the three nodes,
// compete for the same 4 jobs for 30 s: acquire, keep the lease alive by
// renewing every TTL/3 for a while, then release it or go silent and let
// it expire. The leader is killed with SIGKILL once, a third of the way in,
// and restarted. Every call is recorded with its times and answer, and the
// watch stream is consumed from index 1 on a node that stays up.
//
// checkLeaseHistory then shows, from the committed stream and the answers:
// never two active owners of a job (a new token is granted only after the
// previous one was released or expired); each job's tokens go 1, 2, 3, ...;
// every acknowledged acquire, renew and release is the event at the index
// its answer names (so no client saw an acquire succeed while the stream
// had another active owner there); no lease expired before its TTL from
// its last acknowledged renewal; and the indexes respect real time.
//
// A linearizability checker such as porcupine would have to model expiry,
// which the leader's clock drives, and writes whose answer was lost but
// which committed (a client retries them); the committed log already is
// the order to check against, so the test checks against it directly.
func TestLeasesContention(t *testing.T) {
	const (
		clients  = 32
		duration = 30 * time.Second
		killAt   = 10 * time.Second
		downFor  = 3 * time.Second
	)
	jobs := []string{"job-0", "job-1", "job-2", "job-3"}
	c := startCluster(t, 3)
	leader := c.Leader()
	watchNode := c.others(leader)[0]
	w := c.watchLeases(t, watchNode)
	log := &leaseLog{}
	callers := make([]*leaseCaller, clients)
	for k := range callers {
		role := engine.RoleGate
		if k%2 == 1 {
			role = engine.RoleManager
		}
		callers[k] = c.leaseCallerOf(t, log, role, fmt.Sprintf("%s-%d", role, k), k%3+1)
	}

	start := time.Now()
	ctx, stop := context.WithTimeout(context.Background(), duration)
	defer stop()
	var wg sync.WaitGroup
	for k, lc := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			contend(ctx, lc, jobs, rand.New(rand.NewPCG(uint64(k), uint64(start.UnixNano()))))
		}()
	}

	// The leader is killed once and restarted.
	select {
	case <-time.After(killAt):
	case <-ctx.Done():
	}
	victim := c.Leader()
	if victim == watchNode {
		w.moveTo(c.others(victim)[0])
	}
	c.Kill9(victim)
	killed := time.Now()
	newLeader := c.WaitLeader(victim)
	t.Logf("%s: killed leader %s; %s leads after %s", killed.Sub(start).Round(time.Millisecond), c.node(victim).id, c.node(newLeader).id, time.Since(killed).Round(time.Millisecond))
	select {
	case <-time.After(downFor):
	case <-ctx.Done():
	}
	c.Restart(victim)
	t.Logf("%s: restarted %s", time.Since(start).Round(time.Millisecond), c.node(victim).id)
	wg.Wait()

	// Every event up to a last write made after the clients stopped.
	marker, err := c.leaseClient(t, engine.RoleAdmin, "admin-1").Acquire(timeout(t, 10*time.Second), "marker", 10*time.Second, false)
	if err != nil {
		t.Fatal(err)
	}
	evs := w.waitIndex(t, marker.Index)
	ops := log.all()
	st := checkLeaseHistory(t, evs, ops)
	t.Logf("history: %s", st)
	logCallSummary(t, ops, killed)
	if st.acquired < 4*len(jobs) || st.released == 0 || st.expired == 0 {
		t.Errorf("too little contention to show anything: %s", st)
	}

	// The restarted node holds the same history and the same leases.
	replay := c.watchLeases(t, victim)
	again := upTo(replay.waitIndex(t, marker.Index), marker.Index)
	evs = upTo(evs, marker.Index)
	if len(again) != len(evs) {
		t.Errorf("%s replays %d events up to index %d, the live stream had %d", c.node(victim).id, len(again), marker.Index, len(evs))
	} else {
		for k := range evs {
			if evs[k].Type != again[k].Type || !sameLease(evs[k].Lease, again[k].Lease) {
				t.Errorf("event %d differs: live %s %+v, %s replays %s %+v", k, evs[k].Type, evs[k].Lease, c.node(victim).id, again[k].Type, again[k].Lease)
				break
			}
		}
	}
	c.waitSameLeases(t)
}

// contend is one client's loop: acquire a random job; on success keep it
// for a while, then release it or (one time in five) go silent for longer
// than the TTL, as a crashed owner would; on failure try again soon.
func contend(ctx context.Context, lc *leaseCaller, jobs []string, rng *rand.Rand) {
	pause := func(d time.Duration) {
		select {
		case <-ctx.Done():
		case <-time.After(d):
		}
	}
	for ctx.Err() == nil {
		job := jobs[rng.IntN(len(jobs))]
		ttl := time.Second + time.Duration(rng.IntN(2))*time.Second
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		l, err := lc.acquire(actx, job, ttl)
		cancel()
		if err != nil {
			pause(time.Duration(20+rng.IntN(80)) * time.Millisecond)
			continue
		}
		hold := time.Duration(200+rng.IntN(1300)) * time.Millisecond
		if !lc.keepAlive(ctx, *l, hold) || ctx.Err() != nil {
			continue
		}
		if rng.IntN(5) == 0 {
			// Gone, as if crashed: back only after the lease ran out.
			pause(ttl + time.Duration(rng.IntN(500))*time.Millisecond)
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, _ = lc.release(rctx, job, l.Token) // recorded
		cancel()
	}
}

// logCallSummary logs how the calls went, by kind and outcome, and how
// long after the kill the first call was acknowledged.
func logCallSummary(t *testing.T, ops []leaseOp, killed time.Time) {
	t.Helper()
	counts := map[string]int{}
	// For the errors, the span of time (from the kill) they came in and
	// the first message, to tell a failover's errors from others.
	type span struct {
		from, to time.Duration
		first    string
	}
	spans := map[string]*span{}
	var firstAfter time.Duration
	for _, op := range ops {
		outcome := "ok"
		var ae *api.Error
		switch {
		case op.err == nil:
			if op.call.After(killed) && (firstAfter == 0 || op.ret.Sub(killed) < firstAfter) {
				firstAfter = op.ret.Sub(killed)
			}
		case errors.As(op.err, &ae):
			outcome = ae.Code
		case errors.Is(op.err, context.DeadlineExceeded) || errors.Is(op.err, context.Canceled):
			outcome = "no answer"
		default:
			outcome = "connection error"
		}
		key := op.kind + " " + outcome
		counts[key]++
		if op.err != nil {
			at := op.ret.Sub(killed)
			if sp := spans[key]; sp == nil {
				spans[key] = &span{from: at, to: at, first: op.err.Error()}
			} else {
				sp.from, sp.to = min(sp.from, at), max(sp.to, at)
			}
		}
	}
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, " %s: %d;", k, counts[k])
	}
	t.Logf("%d calls:%s first call acknowledged %s after the kill", len(ops), b.String(), firstAfter.Round(time.Millisecond))
	for _, k := range keys {
		if sp := spans[k]; sp != nil && !strings.HasSuffix(k, "lease_held") {
			t.Logf("%s: from %s to %s after the kill; first: %s", k, sp.from.Round(time.Millisecond), sp.to.Round(time.Millisecond), sp.first)
		}
	}
}

// upTo returns the events of index at most idx; the streams go on after it
// (leases still held at the end expire).
func upTo(evs []seenEvent, idx uint64) []seenEvent {
	for k, ev := range evs {
		if ev.Index > idx {
			return evs[:k]
		}
	}
	return evs
}
