package tests

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coordinatord/coordinatord/api"
	"github.com/coordinatord/coordinatord/client"
	"github.com/coordinatord/coordinatord/engine"
)

// What the lease tests share: clients that record every lease call with
// its times and answer, a watcher that consumes GET /v1/leases/watch from
// the first index, and a checker that replays the committed events and
// holds the recorded answers against them.
//
// The committed event stream is the order Raft chose. The checker verifies
// that it obeys the lease rules (one active owner per job, tokens 1, 2, 3,
// ... per job, renew and release only by the current holder, one expiry
// per token, none before its time), that every acknowledged call is the
// event at the index its answer names, and that those indexes respect real
// time (a call acknowledged before another began has the lower index).
// Together that is a linearizability check of the acknowledged calls with
// the log as the witness order.

// leaseOp is one lease call and what came back.
type leaseOp struct {
	kind  string // "acquire", "renew" or "release"
	owner string
	job   string
	// token is the token sent with a renew or release.
	token     uint64
	ttl       time.Duration
	call, ret time.Time
	// lease is the answer, nil when err is set.
	lease *api.Lease
	err   error
}

// leaseLog collects the calls of many goroutines.
type leaseLog struct {
	mu  sync.Mutex
	ops []leaseOp
}

func (l *leaseLog) add(op leaseOp) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ops = append(l.ops, op)
}

func (l *leaseLog) all() []leaseOp {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.ops)
}

// acked returns the acknowledged calls.
func (l *leaseLog) acked() []leaseOp {
	var out []leaseOp
	for _, op := range l.all() {
		if op.err == nil {
			out = append(out, op)
		}
	}
	return out
}

// leaseCaller makes lease calls as one owner and records them.
type leaseCaller struct {
	cl    *client.Client
	owner string
	log   *leaseLog
}

func (c *leaseCaller) record(kind, job string, token uint64, ttl time.Duration, call func() (*api.Lease, error)) (*api.Lease, error) {
	op := leaseOp{kind: kind, owner: c.owner, job: job, token: token, ttl: ttl, call: time.Now()}
	op.lease, op.err = call()
	op.ret = time.Now()
	if op.err == nil && op.ttl == 0 {
		op.ttl, _ = time.ParseDuration(op.lease.TTL)
	}
	c.log.add(op)
	return op.lease, op.err
}

func (c *leaseCaller) acquire(ctx context.Context, job string, ttl time.Duration) (*api.Lease, error) {
	return c.record("acquire", job, 0, ttl, func() (*api.Lease, error) { return c.cl.Acquire(ctx, job, ttl, false) })
}

func (c *leaseCaller) renew(ctx context.Context, job string, token uint64) (*api.Lease, error) {
	return c.record("renew", job, token, 0, func() (*api.Lease, error) { return c.cl.Renew(ctx, job, token, 0) })
}

func (c *leaseCaller) release(ctx context.Context, job string, token uint64) (*api.Lease, error) {
	return c.record("release", job, token, 0, func() (*api.Lease, error) { return c.cl.Release(ctx, job, token) })
}

// keepAlive renews l every TTL/3 until ctx ends or until, when hold is
// positive, hold has passed, as client.KeepAlive does, recording each
// renewal. A failure to get an answer is retried until the lease would
// have expired; an answer that refuses the renewal ends it. It reports
// whether the lease is still held (as far as the caller knows) when it
// returns.
func (c *leaseCaller) keepAlive(ctx context.Context, l api.Lease, hold time.Duration) bool {
	ttl, err := time.ParseDuration(l.TTL)
	if err != nil || ttl <= 0 {
		return false
	}
	var stop <-chan time.Time
	if hold > 0 {
		stop = time.After(hold)
	}
	expires := l.ExpiresAt
	wait := ttl / 3
	for {
		select {
		case <-ctx.Done():
			return true
		case <-stop:
			return true
		case <-time.After(wait):
		}
		left := time.Until(expires)
		if left <= 0 {
			return false
		}
		rctx, cancel := context.WithTimeout(ctx, left)
		renewed, err := c.renew(rctx, l.JobID, l.Token)
		cancel()
		var ae *api.Error
		switch {
		case err == nil:
			expires, wait = renewed.ExpiresAt, ttl/3
		case ctx.Err() != nil:
			return true
		case errors.As(err, &ae) && ae.Status/100 == 4:
			return false
		default:
			wait = 50 * time.Millisecond
		}
	}
}

// leaseClient is a client of the given nodes (all running ones when none
// is given) identified as owner, a node claim, with role.
func (c *cluster) leaseClient(t *testing.T, role engine.Role, owner string, nodes ...int) *client.Client {
	t.Helper()
	cl, err := client.New(client.Config{Addrs: c.addrs(nodes...), TLS: c.nodes[0].tlsConfig(c.pki.tlsCert(owner, request(engine.MappingSPIFFE, role, owner))), Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func (c *cluster) addrs(nodes ...int) []string {
	var out []string
	if len(nodes) == 0 {
		for _, n := range c.runningNodes() {
			out = append(out, n.httpBind)
		}
		return out
	}
	for _, i := range nodes {
		out = append(out, c.node(i).httpBind)
	}
	return out
}

// leaseCallerOf is a recording caller of the given nodes as owner.
func (c *cluster) leaseCallerOf(t *testing.T, log *leaseLog, role engine.Role, owner string, nodes ...int) *leaseCaller {
	t.Helper()
	return &leaseCaller{cl: c.leaseClient(t, role, owner, nodes...), owner: owner, log: log}
}

// others returns the indexes of the nodes but except.
func (c *cluster) others(except ...int) []int {
	var out []int
	for _, n := range c.nodes {
		if !slices.Contains(except, n.i) {
			out = append(out, n.i)
		}
	}
	return out
}

// staleLeases is node n's own lease table (GET /v1/leases?stale=true).
func (c *cluster) staleLeases(n *clusterNode) ([]api.Lease, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	list, err := n.admin().ListLeases(ctx, client.LeaseQuery{Stale: true})
	if err != nil {
		return nil, fmt.Errorf("%s: GET /v1/leases?stale=true: %w", n.id, err)
	}
	return list.Leases, nil
}

// waitSameLeases waits until every running node's own lease table is the
// leader's, and returns it.
func (c *cluster) waitSameLeases(t *testing.T) []api.Lease {
	t.Helper()
	var want []api.Lease
	eventually(t, "every node holds the leader's leases", func() error {
		l := c.node(c.Leader())
		var err error
		if want, err = c.staleLeases(l); err != nil {
			return err
		}
		for _, n := range c.runningNodes() {
			got, err := c.staleLeases(n)
			if err != nil {
				return err
			}
			if d := diffLeases(got, want); d != "" {
				return fmt.Errorf("%s differs from the leader %s: %s", n.id, l.id, d)
			}
		}
		return nil
	})
	return want
}

// diffLeases describes the first difference between two lease tables, or
// returns "".
func diffLeases(got, want []api.Lease) string {
	if len(got) != len(want) {
		return fmt.Sprintf("%d leases, want %d", len(got), len(want))
	}
	for i := range got {
		if !sameLease(got[i], want[i]) {
			return fmt.Sprintf("lease %+v, want %+v", got[i], want[i])
		}
	}
	return ""
}

// sameLease compares every field, times by instant.
func sameLease(a, b api.Lease) bool {
	return a.JobID == b.JobID && a.Owner == b.Owner && a.OwnerID == b.OwnerID && a.OwnerDC == b.OwnerDC &&
		a.Token == b.Token && a.TTL == b.TTL && a.State == b.State && a.Index == b.Index &&
		a.AcquiredAt.Equal(b.AcquiredAt) && a.RenewedAt.Equal(b.RenewedAt) && a.ExpiresAt.Equal(b.ExpiresAt) && a.EndedAt.Equal(b.EndedAt)
}

// --- the watch stream -----------------------------------------------------------

// seenEvent is a lease event and when the test received it.
type seenEvent struct {
	api.LeaseEvent
	seen time.Time
}

// leaseWatcher consumes GET /v1/leases/watch from index 1 on one node and
// can move to another, resuming after the last event it got.
type leaseWatcher struct {
	t *testing.T
	c *cluster

	mu     sync.Mutex
	events []seenEvent
	node   int
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

// watchLeases starts a watcher on node i.
func (c *cluster) watchLeases(t *testing.T, i int) *leaseWatcher {
	t.Helper()
	w := &leaseWatcher{t: t, c: c}
	w.start(i)
	t.Cleanup(w.stop)
	return w
}

func (w *leaseWatcher) start(i int) {
	w.t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	cl := w.c.node(i).admin()
	from, skip := uint64(1), 0
	if n := len(w.events); n > 0 {
		// Resume at the last entry, skipping its events already received.
		from = w.events[n-1].Index
		for k := n - 1; k >= 0 && w.events[k].Index == from; k-- {
			skip++
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	w.node, w.cancel, w.done, w.err = i, cancel, done, nil
	go func() {
		defer close(done)
		err := cl.WatchLeases(ctx, from, func(ev api.LeaseEvent) error {
			if ev.Index == from && skip > 0 {
				skip--
				return nil
			}
			w.mu.Lock()
			w.events = append(w.events, seenEvent{LeaseEvent: ev, seen: time.Now()})
			w.mu.Unlock()
			return nil
		})
		if ctx.Err() == nil {
			w.mu.Lock()
			w.err = err
			w.mu.Unlock()
		}
	}()
}

// moveTo ends the stream and resumes it on node i.
func (w *leaseWatcher) moveTo(i int) {
	w.t.Helper()
	w.stop()
	w.start(i)
}

func (w *leaseWatcher) stop() {
	w.mu.Lock()
	cancel, done := w.cancel, w.done
	w.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

// snapshot returns the events received so far, and the stream's error if
// it ended.
func (w *leaseWatcher) snapshot() ([]seenEvent, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.events), w.err
}

// waitIndex waits until the stream delivered an event at index ≥ idx (and
// so, in commit order, every event before it).
func (w *leaseWatcher) waitIndex(t *testing.T, idx uint64) []seenEvent {
	t.Helper()
	var evs []seenEvent
	eventually(t, fmt.Sprintf("the watch stream reaches index %d", idx), func() error {
		var err error
		evs, err = w.snapshot()
		if err != nil {
			t.Fatalf("the watch stream ended: %v", err)
		}
		if len(evs) == 0 || evs[len(evs)-1].Index < idx {
			last := uint64(0)
			if len(evs) > 0 {
				last = evs[len(evs)-1].Index
			}
			return fmt.Errorf("last event at index %d", last)
		}
		return nil
	})
	return evs
}

// --- the checker ----------------------------------------------------------------

// historyStats counts what a checked history held.
type historyStats struct {
	acquired, renewed, released, expired int
	// maxLate is the longest time between a lease's last acknowledged
	// expiry time and the committed expiry.
	maxLate time.Duration
}

func (s historyStats) String() string {
	return fmt.Sprintf("%d acquisitions, %d renewals, %d releases, %d expiries (committed at most %s after the acknowledged expiry time)",
		s.acquired, s.renewed, s.released, s.expired, s.maxLate.Round(time.Millisecond))
}

// checkLeaseHistory checks the committed events (all of them, from index
// 1) against the lease rules and the acknowledged calls (see the comment at
// the top of this file) and reports the violations with t.Errorf.
func checkLeaseHistory(t *testing.T, events []seenEvent, ops []leaseOp) historyStats {
	t.Helper()
	st, violations := leaseHistoryViolations(events, ops)
	for k, v := range violations {
		if k == 20 {
			t.Errorf("... and %d more violations", len(violations)-k)
			break
		}
		t.Error(v)
	}
	return st
}

// leaseHistoryViolations is checkLeaseHistory's check.
func leaseHistoryViolations(events []seenEvent, ops []leaseOp) (historyStats, []string) {
	var st historyStats
	var violations []string
	fail := func(format string, args ...any) {
		violations = append(violations, fmt.Sprintf(format, args...))
	}

	// The rules, replayed job by job in commit order.
	type jobState struct {
		active    bool
		owner     string
		token     uint64
		lastToken uint64
	}
	jobs := map[string]*jobState{}
	byIndex := map[uint64][]seenEvent{}
	var prev uint64
	for _, ev := range events {
		l := ev.Lease
		if ev.Index < prev {
			fail("event at index %d after index %d: the stream is out of order", ev.Index, prev)
		}
		prev = ev.Index
		if l.Index != ev.Index {
			fail("event %s of %s at index %d carries a lease of index %d", ev.Type, l.JobID, ev.Index, l.Index)
		}
		byIndex[ev.Index] = append(byIndex[ev.Index], ev)
		s := jobs[l.JobID]
		if s == nil {
			s = &jobState{}
			jobs[l.JobID] = s
		}
		holds := s.active && s.owner == l.Owner && s.token == l.Token
		switch ev.Type {
		case "acquired":
			st.acquired++
			if s.active {
				fail("job %s: %s acquired token %d at index %d while %s held token %d: two active owners", l.JobID, l.Owner, l.Token, ev.Index, s.owner, s.token)
			}
			if l.Token != s.lastToken+1 {
				fail("job %s: token %d acquired at index %d after token %d: tokens must go 1, 2, 3, ...", l.JobID, l.Token, ev.Index, s.lastToken)
			}
			*s = jobState{active: true, owner: l.Owner, token: l.Token, lastToken: max(s.lastToken, l.Token)}
		case "renewed":
			st.renewed++
			if !holds {
				fail("job %s: %s renewed token %d at index %d, but the holder is %q with token %d (active %v)", l.JobID, l.Owner, l.Token, ev.Index, s.owner, s.token, s.active)
			}
		case "released", "expired":
			if ev.Type == "released" {
				st.released++
			} else {
				st.expired++
			}
			if !holds {
				fail("job %s: %s of %s's token %d at index %d, but the holder is %q with token %d (active %v)", l.JobID, ev.Type, l.Owner, l.Token, ev.Index, s.owner, s.token, s.active)
			}
			s.active = false
		default:
			fail("unknown event type %q at index %d", ev.Type, ev.Index)
		}
		if l.State != map[string]string{"acquired": "active", "renewed": "active", "released": "released", "expired": "expired"}[ev.Type] {
			fail("job %s: %s event at index %d with a lease in state %s", l.JobID, ev.Type, ev.Index, l.State)
		}
	}

	// Every acknowledged call is the event its answer's index names.
	type jobToken struct {
		job   string
		token uint64
	}
	// keptUntil is, per lease, the latest expiry an acknowledged call set
	// and the latest time a call that set it was sent plus the TTL.
	type kept struct{ expires, sentPlusTTL time.Time }
	keptUntil := map[jobToken]kept{}
	var acked []leaseOp
	for _, op := range ops {
		if op.err != nil {
			continue
		}
		acked = append(acked, op)
		l := *op.lease
		var match *seenEvent
		for _, ev := range byIndex[l.Index] {
			if ev.Lease.JobID == l.JobID {
				match = &ev // the last event of the job in that entry
			}
		}
		if match == nil {
			fail("%s %s by %s acknowledged at index %d (token %d): no event of the job at that index", op.kind, op.job, op.owner, l.Index, l.Token)
			continue
		}
		want := map[string][]string{"acquire": {"acquired", "renewed"}, "renew": {"renewed"}, "release": {"released"}}[op.kind]
		if l.JobID != op.job || l.Owner != op.owner || !slices.Contains(want, match.Type) || !sameLease(match.Lease, l) {
			fail("%s %s by %s acknowledged %+v, but the event at index %d is %s %+v", op.kind, op.job, op.owner, l, l.Index, match.Type, match.Lease)
			continue
		}
		if op.kind != "release" {
			k := keptUntil[jobToken{l.JobID, l.Token}]
			if l.ExpiresAt.After(k.expires) {
				k.expires = l.ExpiresAt
			}
			if s := op.call.Add(op.ttl); s.After(k.sentPlusTTL) {
				k.sentPlusTTL = s
			}
			keptUntil[jobToken{l.JobID, l.Token}] = k
		}
	}

	// No lease expired before its TTL had run from its last acknowledged
	// renewal (acquire counts as one): not by the leader's stamp, and not by
	// the time the test saw the expiry.
	for _, ev := range events {
		if ev.Type != "expired" {
			continue
		}
		l := ev.Lease
		k, ok := keptUntil[jobToken{l.JobID, l.Token}]
		if !ok {
			continue // no acknowledged call set its expiry
		}
		if l.EndedAt.Before(k.expires) || l.ExpiresAt.Before(k.expires) {
			fail("job %s token %d expired at %s (expires_at %s), before %s, the expiry its last acknowledged renewal set",
				l.JobID, l.Token, l.EndedAt.Format(time.StampMicro), l.ExpiresAt.Format(time.StampMicro), k.expires.Format(time.StampMicro))
		}
		if ev.seen.Before(k.sentPlusTTL) {
			fail("job %s token %d: the expiry was seen at %s, before its last acknowledged renewal was sent plus its TTL (%s)",
				l.JobID, l.Token, ev.seen.Format(time.StampMicro), k.sentPlusTTL.Format(time.StampMicro))
		}
		st.maxLate = max(st.maxLate, l.EndedAt.Sub(k.expires))
	}

	// Real time: a call acknowledged before another was sent has the
	// lower index.
	byCall := slices.Clone(acked)
	sort.Slice(byCall, func(i, j int) bool { return byCall[i].call.Before(byCall[j].call) })
	byRet := slices.Clone(acked)
	sort.Slice(byRet, func(i, j int) bool { return byRet[i].ret.Before(byRet[j].ret) })
	k := 0
	var maxDone *leaseOp
	for _, b := range byCall {
		for ; k < len(byRet) && byRet[k].ret.Before(b.call); k++ {
			if maxDone == nil || byRet[k].lease.Index > maxDone.lease.Index {
				maxDone = &byRet[k]
			}
		}
		if maxDone != nil && maxDone.lease.Index >= b.lease.Index {
			fail("%s %s by %s was acknowledged at index %d before %s %s by %s was sent, which got index %d: not linearizable",
				maxDone.kind, maxDone.job, maxDone.owner, maxDone.lease.Index, b.kind, b.job, b.owner, b.lease.Index)
		}
	}
	return st, violations
}

// --- raw calls ------------------------------------------------------------------

// rawAnswer is an HTTP answer as received.
type rawAnswer struct {
	status int
	header http.Header
	body   []byte
}

// rawPost sends a POST with a JSON body to node n as the holder of cert,
// without the Go client's retries.
func rawPost(ctx context.Context, n *clusterNode, cert tls.Certificate, path, body string) (rawAnswer, error) {
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: n.tlsConfig(cert)}}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+n.httpBind+path, strings.NewReader(body))
	if err != nil {
		return rawAnswer{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return rawAnswer{}, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	return rawAnswer{status: resp.StatusCode, header: resp.Header, body: raw}, err
}

// apiErrorOf decodes an error answer's body.
func apiErrorOf(a rawAnswer) (api.Error, bool) {
	var eb api.ErrorBody
	if err := json.Unmarshal(a.body, &eb); err != nil || eb.Error == nil {
		return api.Error{}, false
	}
	return *eb.Error, true
}

// sameAnswer reports whether two answers have the same status, content type
// and body bytes.
func sameAnswer(a, b rawAnswer) bool {
	return a.status == b.status && a.header.Get("Content-Type") == b.header.Get("Content-Type") && bytes.Equal(a.body, b.body)
}

// TestLeaseHistoryCheckerFindsViolations shows that the checker the
// cluster tests rely on fails the histories it must fail.
func TestLeaseHistoryCheckerFindsViolations(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	ms := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }
	lease := func(owner string, token, index uint64, state string, expires int) api.Lease {
		return api.Lease{JobID: "j", Owner: owner, Token: token, TTL: "1s", State: state, Index: index, ExpiresAt: ms(expires)}
	}
	// a acquires, renews and releases token 1; b acquires token 2, which
	// expires.
	valid := func() ([]seenEvent, []leaseOp) {
		l1 := lease("a", 1, 5, "active", 1000)
		l2 := lease("a", 1, 6, "active", 1500)
		l3 := lease("a", 1, 7, "released", 1500)
		l4 := lease("b", 2, 8, "active", 1700)
		l5 := lease("b", 2, 9, "expired", 1700)
		l5.EndedAt = ms(1710)
		events := []seenEvent{
			{api.LeaseEvent{Type: "acquired", Lease: l1, Index: 5}, ms(5)},
			{api.LeaseEvent{Type: "renewed", Lease: l2, Index: 6}, ms(505)},
			{api.LeaseEvent{Type: "released", Lease: l3, Index: 7}, ms(605)},
			{api.LeaseEvent{Type: "acquired", Lease: l4, Index: 8}, ms(705)},
			{api.LeaseEvent{Type: "expired", Lease: l5, Index: 9}, ms(1715)},
		}
		ops := []leaseOp{
			{kind: "acquire", owner: "a", job: "j", ttl: time.Second, call: ms(0), ret: ms(6), lease: &l1},
			{kind: "renew", owner: "a", job: "j", token: 1, ttl: time.Second, call: ms(500), ret: ms(506), lease: &l2},
			{kind: "release", owner: "a", job: "j", token: 1, call: ms(600), ret: ms(606), lease: &l3},
			{kind: "acquire", owner: "b", job: "j", ttl: time.Second, call: ms(700), ret: ms(706), lease: &l4},
		}
		return events, ops
	}
	cases := []struct {
		name   string
		mutate func([]seenEvent, []leaseOp) ([]seenEvent, []leaseOp)
		want   string
	}{
		{"a valid history passes", nil, ""},
		{"a second owner acquiring while the first holds is two owners", func(evs []seenEvent, ops []leaseOp) ([]seenEvent, []leaseOp) {
			evs[2].Type, evs[2].Lease = "acquired", lease("c", 2, 7, "active", 1600)
			return evs, ops[:2]
		}, "two active owners"},
		{"a token granted twice is caught", func(evs []seenEvent, ops []leaseOp) ([]seenEvent, []leaseOp) {
			evs[3].Lease.Token, evs[4].Lease.Token = 1, 1
			return evs, ops[:3]
		}, "tokens must go 1, 2, 3"},
		{"an acknowledged acquire missing from the stream is caught", func(evs []seenEvent, ops []leaseOp) ([]seenEvent, []leaseOp) {
			return evs[:3], ops
		}, "no event of the job at that index"},
		{"an answer that differs from its event is caught", func(evs []seenEvent, ops []leaseOp) ([]seenEvent, []leaseOp) {
			l := *ops[1].lease
			l.ExpiresAt = ms(2000)
			ops[1].lease = &l
			return evs, ops
		}, "but the event at index 6"},
		{"an expiry before the acknowledged expiry time is caught", func(evs []seenEvent, ops []leaseOp) ([]seenEvent, []leaseOp) {
			evs[4].Lease.EndedAt = ms(1600)
			return evs, ops
		}, "the expiry its last acknowledged renewal set"},
		{"an expiry seen before the renewal was sent plus its TTL is caught", func(evs []seenEvent, ops []leaseOp) ([]seenEvent, []leaseOp) {
			evs[4].seen = ms(1690)
			return evs, ops
		}, "before its last acknowledged renewal was sent plus its TTL"},
		{"a renewal by someone who does not hold the lease is caught", func(evs []seenEvent, ops []leaseOp) ([]seenEvent, []leaseOp) {
			evs[1].Lease.Owner = "b"
			return evs, ops[:1]
		}, "renewed token 1 at index 6, but the holder is \"a\""},
		{"an order against real time is caught", func(evs []seenEvent, ops []leaseOp) ([]seenEvent, []leaseOp) {
			ops[1].call, ops[1].ret = ms(610), ms(620) // sent after the release (index 7) was acknowledged
			return evs, ops
		}, "not linearizable"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			evs, ops := valid()
			if tc.mutate != nil {
				evs, ops = tc.mutate(evs, ops)
			}
			_, got := leaseHistoryViolations(evs, ops)
			switch {
			case tc.want == "" && len(got) > 0:
				t.Fatalf("violations in a valid history: %q", got)
			case tc.want != "" && !slices.ContainsFunc(got, func(v string) bool { return strings.Contains(v, tc.want) }):
				t.Fatalf("violations %q, want one saying %q", got, tc.want)
			}
		})
	}
}
