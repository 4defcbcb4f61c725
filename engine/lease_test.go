package engine

import (
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// lt0 is the fake time every lease test starts from; no test reads a clock.
var lt0 = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

var testLimits = LeaseLimits{MinTTL: time.Second, MaxTTL: time.Minute, DefaultTTL: 10 * time.Second}

// leaseBook is what the store keeps, reduced to the rules' inputs: each
// job's lease, its last token ever, and the events in order.
type leaseBook struct {
	leases map[string]Lease
	last   map[string]uint64
	events []LeaseEvent
}

func newBook() *leaseBook {
	return &leaseBook{leases: map[string]Lease{}, last: map[string]uint64{}}
}

func (b *leaseBook) cur(job string) *Lease {
	l, ok := b.leases[job]
	if !ok {
		return nil
	}
	return &l
}

// keep stores a rule's result the way the store does: the lease and the
// events whenever there are events, error or not.
func (b *leaseBook) keep(l Lease, evs []LeaseEvent, err error) (Lease, error) {
	if len(evs) > 0 {
		b.leases[l.JobID] = l
		b.last[l.JobID] = max(b.last[l.JobID], l.Token)
		b.events = append(b.events, evs...)
	}
	return l, err
}

func (b *leaseBook) acquire(job, owner string, ttl time.Duration, force bool, at time.Time) (Lease, error) {
	return b.keep(testLimits.Acquire(b.cur(job), b.last[job], AcquireRequest{JobID: job, Owner: owner, OwnerDC: "dc-" + owner, TTL: ttl, Force: force, At: at}))
}

func (b *leaseBook) renew(job, owner string, token uint64, ttl time.Duration, at time.Time) (Lease, error) {
	return b.keep(testLimits.Renew(b.cur(job), RenewRequest{JobID: job, Owner: owner, Token: token, TTL: ttl, At: at}))
}

func (b *leaseBook) release(job, owner string, token uint64, at time.Time) (Lease, error) {
	return b.keep(Release(b.cur(job), ReleaseRequest{JobID: job, Owner: owner, Token: token, At: at}))
}

func (b *leaseBook) expire(job string, token uint64, at time.Time) (Lease, error) {
	return b.keep(Expire(b.cur(job), ExpireRequest{JobID: job, Token: token, At: at}))
}

func (b *leaseBook) count(typ LeaseEventType) int {
	n := 0
	for _, e := range b.events {
		if e.Type == typ {
			n++
		}
	}
	return n
}

// must fails the test on a rule's error: must(t)(b.acquire(...)).
func must(t *testing.T) func(Lease, error) Lease {
	return func(l Lease, err error) Lease {
		t.Helper()
		if err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
		return l
	}
}

func TestAcquireRenewReleaseRules(t *testing.T) {
	sec := func(n int) time.Time { return lt0.Add(time.Duration(n) * time.Second) }
	tests := []struct {
		name string
		// run acts on a fresh book and checks the outcome.
		run func(t *testing.T, b *leaseBook)
	}{
		{"a first acquire grants token 1 with the default ttl", func(t *testing.T, b *leaseBook) {
			l := must(t)(b.acquire("j", "a", 0, false, lt0))
			if l.Token != 1 || l.State != LeaseActive || l.TTL != testLimits.DefaultTTL || !l.ExpiresAt.Equal(sec(10)) ||
				!l.AcquiredAt.Equal(lt0) || !l.RenewedAt.Equal(lt0) || !l.EndedAt.IsZero() || l.OwnerDC != "dc-a" {
				t.Errorf("granted %+v", l)
			}
			if len(b.events) != 1 || b.events[0].Type != LeaseEventAcquired {
				t.Errorf("events %+v, want one acquired", b.events)
			}
		}},
		{"a renew before expiry moves the expiry to the renew time plus ttl", func(t *testing.T, b *leaseBook) {
			l := must(t)(b.acquire("j", "a", 5*time.Second, false, lt0))
			r := must(t)(b.renew("j", "a", l.Token, 0, sec(4)))
			if r.Token != 1 || !r.ExpiresAt.Equal(sec(9)) || !r.RenewedAt.Equal(sec(4)) || r.TTL != 5*time.Second {
				t.Errorf("renewed %+v", r)
			}
			r = must(t)(b.renew("j", "a", l.Token, 2*time.Second, sec(5)))
			if !r.ExpiresAt.Equal(sec(7)) || r.TTL != 2*time.Second {
				t.Errorf("a renew with a shorter ttl: %+v, want expiry at +7s", r)
			}
			if got := b.events[len(b.events)-1].Type; got != LeaseEventRenewed {
				t.Errorf("last event %s, want renewed", got)
			}
		}},
		{"a re-acquire by the owner extends the lease and keeps the token", func(t *testing.T, b *leaseBook) {
			must(t)(b.acquire("j", "a", 5*time.Second, false, lt0))
			l := must(t)(b.acquire("j", "a", 8*time.Second, false, sec(3)))
			if l.Token != 1 || !l.ExpiresAt.Equal(sec(11)) || !l.AcquiredAt.Equal(lt0) || !l.RenewedAt.Equal(sec(3)) {
				t.Errorf("re-acquired %+v", l)
			}
			if got := b.events[1].Type; got != LeaseEventRenewed {
				t.Errorf("re-acquire event %s, want renewed", got)
			}
		}},
		{"an acquire of another owner's active lease names the holder and the remaining time", func(t *testing.T, b *leaseBook) {
			must(t)(b.acquire("j", "a", 10*time.Second, false, lt0))
			_, err := b.acquire("j", "b", 0, false, sec(4))
			var held *LeaseHeldError
			if !errors.As(err, &held) || !errors.Is(err, ErrLeaseHeld) {
				t.Fatalf("error %v, want a *LeaseHeldError", err)
			}
			if held.Holder != "a" || held.HolderDC != "dc-a" || held.Remaining != 6*time.Second {
				t.Errorf("conflict %+v", held)
			}
			if msg := err.Error(); !strings.Contains(msg, `"a"`) || !strings.Contains(msg, "6s") {
				t.Errorf("message %q does not name the holder and the remaining time", msg)
			}
			if len(b.events) != 1 {
				t.Errorf("a refused acquire produced events: %+v", b.events[1:])
			}
		}},
		{"a released lease is taken by anyone with a new token", func(t *testing.T, b *leaseBook) {
			l := must(t)(b.acquire("j", "a", 0, false, lt0))
			rel := must(t)(b.release("j", "a", l.Token, sec(1)))
			if rel.State != LeaseReleased || !rel.EndedAt.Equal(sec(1)) {
				t.Errorf("released %+v", rel)
			}
			n := must(t)(b.acquire("j", "b", 0, false, sec(2)))
			if n.Token != 2 || n.Owner != "b" {
				t.Errorf("after release %+v, want token 2 for b", n)
			}
		}},
		{"a renew or release of a released lease fails naming when it was released", func(t *testing.T, b *leaseBook) {
			l := must(t)(b.acquire("j", "a", 0, false, lt0))
			must(t)(b.release("j", "a", l.Token, sec(1)))
			for _, err := range []error{second(b.renew("j", "a", l.Token, 0, sec(2))), second(b.release("j", "a", l.Token, sec(2)))} {
				if !errors.Is(err, ErrLeaseNotActive) || !strings.Contains(err.Error(), stamp(sec(1))) {
					t.Errorf("error %v, want ErrLeaseNotActive naming %s", err, stamp(sec(1)))
				}
			}
		}},
		{"a renew by someone else with the current token fails naming the holder", func(t *testing.T, b *leaseBook) {
			l := must(t)(b.acquire("j", "a", 0, false, lt0))
			_, err := b.renew("j", "mallory", l.Token, 0, sec(1))
			if !errors.Is(err, ErrNotOwner) || !strings.Contains(err.Error(), `"a"`) {
				t.Errorf("error %v, want ErrNotOwner naming a", err)
			}
		}},
		{"a renew of an unknown job fails with ErrNoLease", func(t *testing.T, b *leaseBook) {
			if _, err := b.renew("nope", "a", 1, 0, lt0); !errors.Is(err, ErrNoLease) {
				t.Errorf("error %v, want ErrNoLease", err)
			}
			if _, err := b.release("nope", "a", 1, lt0); !errors.Is(err, ErrNoLease) {
				t.Errorf("error %v, want ErrNoLease", err)
			}
		}},
		{"ttls outside the limits are refused naming the bounds", func(t *testing.T, b *leaseBook) {
			for _, ttl := range []time.Duration{time.Millisecond, -time.Second, 2 * time.Minute} {
				_, err := b.acquire("j", "a", ttl, false, lt0)
				if !errors.Is(err, ErrInvalidTTL) || !strings.Contains(err.Error(), "[1s, 1m0s]") {
					t.Errorf("acquire with ttl %s: %v, want ErrInvalidTTL naming [1s, 1m0s]", ttl, err)
				}
			}
			l := must(t)(b.acquire("j", "a", 0, false, lt0))
			if _, err := b.renew("j", "a", l.Token, time.Hour, lt0); !errors.Is(err, ErrInvalidTTL) {
				t.Errorf("renew with ttl 1h: %v, want ErrInvalidTTL", err)
			}
		}},
		{"requests without an owner or a time are refused", func(t *testing.T, b *leaseBook) {
			if _, err := b.acquire("j", "", 0, false, lt0); !errors.Is(err, ErrInvalidLeaseRequest) {
				t.Errorf("no owner: %v", err)
			}
			if _, err := b.acquire("j", "a", 0, false, time.Time{}); !errors.Is(err, ErrInvalidLeaseRequest) {
				t.Errorf("no time: %v", err)
			}
			if _, err := b.acquire("a/b", "a", 0, false, lt0); !errors.Is(err, ErrInvalidJobID) {
				t.Errorf("bad job id: %v", err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.run(t, newBook()) })
	}
}

func second[T any](_ T, err error) error { return err }

func TestExpiryFiresOnceAndTheLeaseLeavesTheActiveSet(t *testing.T) {
	tests := []struct {
		name string
		// end expires the lease some way at lt0+11s (ttl 10s).
		end func(b *leaseBook, token uint64) error
	}{
		{"the expiry loop commits it", func(b *leaseBook, token uint64) error {
			_, err := b.expire("j", token, lt0.Add(11*time.Second))
			return err
		}},
		{"another owner's acquire finds it out of time", func(b *leaseBook, _ uint64) error {
			_, err := b.acquire("j", "b", 0, false, lt0.Add(11*time.Second))
			return err
		}},
		{"the holder's late renew finds it out of time", func(b *leaseBook, token uint64) error {
			_, err := b.renew("j", "a", token, 0, lt0.Add(11*time.Second))
			if !errors.Is(err, ErrLeaseExpired) {
				return errors.New("a late renew did not fail with ErrLeaseExpired: " + errString(err))
			}
			return nil
		}},
		{"the holder's late release finds it out of time", func(b *leaseBook, token uint64) error {
			_, err := b.release("j", "a", token, lt0.Add(10*time.Second))
			if !errors.Is(err, ErrLeaseExpired) {
				return errors.New("a late release did not fail with ErrLeaseExpired: " + errString(err))
			}
			return nil
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newBook()
			l := must(t)(b.acquire("j", "a", 10*time.Second, false, lt0))
			if err := tt.end(b, l.Token); err != nil {
				t.Fatal(err)
			}
			// Everything after sees an expired lease and expires nothing.
			later := lt0.Add(20 * time.Second)
			if _, err := b.expire("j", l.Token, later); err != nil && !errors.Is(err, ErrNotExpirable) {
				t.Errorf("second expiry: %v, want ErrNotExpirable", err)
			}
			if _, err := b.renew("j", "a", l.Token, 0, later); err == nil {
				t.Error("renew after expiry succeeded")
			}
			if n := b.count(LeaseEventExpired); n != 1 {
				t.Errorf("%d expired events, want exactly 1: %+v", n, b.events)
			}
			if got := Check(b.cur("j"), l.Token, later); got.Current || got.Token == l.Token && got.State == LeaseActive {
				t.Errorf("check after expiry %+v", got)
			}
			if cur := b.cur("j"); cur.Token == l.Token && cur.State == LeaseActive {
				t.Errorf("the expired lease is still active: %+v", cur)
			}
		})
	}
}

func errString(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

func TestExpireRefusesLeasesThatAreNotDue(t *testing.T) {
	b := newBook()
	l := must(t)(b.acquire("j", "a", 10*time.Second, false, lt0))
	tests := []struct {
		name  string
		job   string
		token uint64
		at    time.Time
	}{
		{"an expiry before the lease's time is refused", "j", l.Token, lt0.Add(9 * time.Second)},
		{"an expiry with another token is refused", "j", l.Token + 1, lt0.Add(time.Minute)},
		{"an expiry of an unknown job is refused", "other", 1, lt0.Add(time.Minute)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, evs, err := Expire(b.cur(tt.job), ExpireRequest{JobID: tt.job, Token: tt.token, At: tt.at}); !errors.Is(err, ErrNotExpirable) || len(evs) != 0 {
				t.Errorf("Expire: %v with %d events, want ErrNotExpirable and none", err, len(evs))
			}
		})
	}
	if _, err := b.expire("j", l.Token, lt0.Add(10*time.Second)); err != nil {
		t.Errorf("an expiry exactly at ExpiresAt: %v", err)
	}
}

func TestStaleTokensAreRejectedEverywhere(t *testing.T) {
	tests := []struct {
		name string
		// setup leaves job j with a newer token than the returned old one.
		setup func(t *testing.T, b *leaseBook) (old uint64, holder string)
	}{
		{"a token from before a release and re-acquire is stale", func(t *testing.T, b *leaseBook) (uint64, string) {
			l := must(t)(b.acquire("j", "a", 0, false, lt0))
			must(t)(b.release("j", "a", l.Token, lt0.Add(time.Second)))
			must(t)(b.acquire("j", "a", 0, false, lt0.Add(2*time.Second)))
			return l.Token, "a"
		}},
		{"a force takeover fences the old holder", func(t *testing.T, b *leaseBook) (uint64, string) {
			l := must(t)(b.acquire("j", "a", 0, false, lt0))
			n := must(t)(b.acquire("j", "b", 0, true, lt0.Add(time.Second)))
			if n.Token != l.Token+1 || n.Owner != "b" || b.events[len(b.events)-1].Type != LeaseEventAcquired {
				t.Fatalf("forced %+v, events %+v", n, b.events)
			}
			return l.Token, "a"
		}},
		{"a force by the holder itself also issues a new token", func(t *testing.T, b *leaseBook) (uint64, string) {
			l := must(t)(b.acquire("j", "a", 0, false, lt0))
			must(t)(b.acquire("j", "a", 0, true, lt0.Add(time.Second)))
			return l.Token, "a"
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newBook()
			old, holder := tt.setup(t, b)
			at := lt0.Add(3 * time.Second)
			cur := b.cur("j")
			for op, err := range map[string]error{
				"renew":   second(b.renew("j", holder, old, 0, at)),
				"release": second(b.release("j", holder, old, at)),
			} {
				var stale *StaleTokenError
				if !errors.As(err, &stale) || stale.Given != old || stale.Current != cur.Token || !strings.Contains(err.Error(), "fenced") {
					t.Errorf("%s with the old token: %v, want a *StaleTokenError %d→%d", op, err, old, cur.Token)
				}
			}
			if c := Check(b.cur("j"), old, at); c.Current || c.Reason != "stale_token" || c.Token != cur.Token {
				t.Errorf("check of the old token %+v, want not current, stale_token, token %d", c, cur.Token)
			}
			if c := Check(b.cur("j"), cur.Token, at); !c.Current {
				t.Errorf("check of the current token %+v, want current", c)
			}
		})
	}
}

func TestHigherTokenWinsAfterAPartitionHeals(t *testing.T) {
	// a holds token 1 and is cut off; its lease runs out and b takes the
	// job. When the partition heals both believe they hold it: storage
	// asking Check accepts only b's token.
	b := newBook()
	la := must(t)(b.acquire("j", "a", 5*time.Second, false, lt0))
	lb := must(t)(b.acquire("j", "b", 5*time.Second, false, lt0.Add(6*time.Second)))
	if lb.Token <= la.Token {
		t.Fatalf("tokens a=%d b=%d", la.Token, lb.Token)
	}
	healed := lt0.Add(7 * time.Second)
	if c := Check(b.cur("j"), la.Token, healed); c.Current || c.Token != lb.Token || c.Owner != "b" {
		t.Errorf("check of a's token %+v, want fenced by b's %d", c, lb.Token)
	}
	if c := Check(b.cur("j"), lb.Token, healed); !c.Current || c.Owner != "b" {
		t.Errorf("check of b's token %+v, want current", c)
	}
	if _, err := b.renew("j", "a", la.Token, 0, healed); !errors.Is(err, ErrStaleToken) {
		t.Errorf("a's renew after the heal: %v, want ErrStaleToken", err)
	}
}

func TestCheckReasons(t *testing.T) {
	active := Lease{JobID: "j", Owner: "a", Token: 3, State: LeaseActive, ExpiresAt: lt0.Add(time.Second)}
	released := active
	released.State = LeaseReleased
	tests := []struct {
		name   string
		cur    *Lease
		token  uint64
		now    time.Time
		want   bool
		reason string
	}{
		{"the current token of an active lease is current", &active, 3, lt0, true, ""},
		{"an older token is stale", &active, 2, lt0, false, "stale_token"},
		{"a token never issued is not current either", &active, 4, lt0, false, "stale_token"},
		{"an active lease out of time reads as expired", &active, 3, lt0.Add(time.Second), false, "lease_expired"},
		{"a released lease has no current token", &released, 3, lt0, false, "lease_not_active"},
		{"a job without a lease has no current token", nil, 1, lt0, false, "no_lease"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Check(tt.cur, tt.token, tt.now)
			if c.Current != tt.want || c.Reason != tt.reason {
				t.Errorf("Check = %+v, want current=%v reason %q", c, tt.want, tt.reason)
			}
			if !c.Current && c.Reason != "stale_token" && c.Token != 0 {
				t.Errorf("Token %d without an active lease, want 0", c.Token)
			}
		})
	}
}

func TestRepeatedRenewsNeverExtendPastMaxTTLFromTheRenewTime(t *testing.T) {
	lim := LeaseLimits{MinTTL: time.Second, MaxTTL: 30 * time.Second, DefaultTTL: 10 * time.Second}
	// A lease granted under wider limits keeps a TTL beyond today's max.
	cur := Lease{JobID: "j", Owner: "a", Token: 1, TTL: time.Hour, State: LeaseActive, ExpiresAt: lt0.Add(time.Second)}
	at := lt0
	for i := range 1000 {
		ttl := time.Duration(0)
		if i%3 == 1 {
			ttl = lim.MaxTTL
		}
		n, _, err := lim.Renew(&cur, RenewRequest{JobID: "j", Owner: "a", Token: 1, TTL: ttl, At: at})
		if err != nil {
			t.Fatalf("renew %d: %v", i, err)
		}
		if n.ExpiresAt.After(at.Add(lim.MaxTTL)) {
			t.Fatalf("renew %d at %s set expiry %s, past MaxTTL", i, at, n.ExpiresAt)
		}
		cur = n
		at = at.Add(100 * time.Millisecond)
	}
}

func TestRenewingInTheLastThirdOfTheTTLNeverExpires(t *testing.T) {
	// A client renews at a random point of the last third of its TTL (the
	// usual jitter). Whatever the draws, the lease must never run out: the
	// rules must not lose time between renewals.
	rng := rand.New(rand.NewPCG(1, 2))
	b := newBook()
	ttl := 3 * time.Second
	l := must(t)(b.acquire("j", "a", ttl, false, lt0))
	at := lt0
	for round := range 5000 {
		// Renew somewhere in [2/3 ttl, ttl) after the last renewal.
		at = at.Add(2*ttl/3 + time.Duration(rng.Int64N(int64(ttl/3))))
		// The expiry loop tries to expire at the same instant; it must find
		// nothing due.
		if _, err := b.expire("j", l.Token, at); !errors.Is(err, ErrNotExpirable) {
			t.Fatalf("round %d: the lease was expirable at %s (expires %s): %v", round, at, b.cur("j").ExpiresAt, err)
		}
		var err error
		if l, err = b.renew("j", "a", l.Token, 0, at); err != nil {
			t.Fatalf("round %d: renew at %s: %v", round, at, err)
		}
	}
	if n := b.count(LeaseEventExpired); n != 0 {
		t.Errorf("%d expiries", n)
	}
}

func TestTokensNeverRepeatAcrossReleaseExpiryAndReacquire(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	b := newBook()
	seen := map[uint64]bool{}
	at := lt0
	owners := []string{"a", "b", "c"}
	for cycle := range 2000 {
		owner := owners[rng.IntN(len(owners))]
		at = at.Add(time.Duration(rng.IntN(3000)) * time.Millisecond)
		l, err := b.acquire("j", owner, 2*time.Second, rng.IntN(5) == 0, at)
		if err != nil {
			if !errors.Is(err, ErrLeaseHeld) {
				t.Fatalf("cycle %d: %v", cycle, err)
			}
			continue
		}
		if b.events[len(b.events)-1].Type == LeaseEventAcquired {
			if seen[l.Token] {
				t.Fatalf("cycle %d: token %d granted twice", cycle, l.Token)
			}
			seen[l.Token] = true
		}
		switch rng.IntN(3) {
		case 0:
			must(t)(b.release("j", owner, l.Token, at.Add(time.Second)))
		case 1:
			at = at.Add(2 * time.Second)
			must(t)(b.expire("j", l.Token, at))
		}
	}
	if len(seen) < 100 {
		t.Fatalf("only %d tokens granted; the test exercises too little", len(seen))
	}
	for tok := uint64(1); tok <= uint64(len(seen)); tok++ {
		if !seen[tok] {
			t.Errorf("token %d skipped: tokens must count up from 1 by 1", tok)
		}
	}
}

func TestExtendForLeaderChange(t *testing.T) {
	grace := 2 * time.Second
	at := lt0
	active := func(exp time.Duration) Lease {
		return Lease{JobID: "j", State: LeaseActive, ExpiresAt: at.Add(exp)}
	}
	tests := []struct {
		name    string
		lease   Lease
		want    time.Duration // new expiry relative to at
		changed bool
	}{
		{"a lease running past at+grace is left alone", active(5 * time.Second), 5 * time.Second, false},
		{"a lease ending exactly at at+grace is left alone", active(grace), grace, false},
		{"a lease ending soon is extended to at+grace", active(time.Second), grace, true},
		{"a lease already out of time gains at most grace", active(-5 * time.Second), -3 * time.Second, true},
		{"a lease just out of time is extended by grace", active(-time.Second), time.Second, true},
		{"a released lease is left alone", Lease{State: LeaseReleased, ExpiresAt: at}, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, changed := ExtendForLeaderChange(tt.lease, at, grace)
			if changed != tt.changed || !got.ExpiresAt.Equal(at.Add(tt.want)) {
				t.Errorf("got expiry %s changed=%v, want %s changed=%v", got.ExpiresAt.Sub(at), changed, tt.want, tt.changed)
			}
		})
	}
	// And as a property over random leases and graces.
	rng := rand.New(rand.NewPCG(5, 6))
	for i := range 10000 {
		exp := time.Duration(rng.Int64N(int64(20*time.Second))) - 10*time.Second
		g := time.Duration(rng.Int64N(int64(5 * time.Second)))
		l := active(exp)
		got, _ := ExtendForLeaderChange(l, at, g)
		if got.ExpiresAt.Before(l.ExpiresAt) || got.ExpiresAt.Sub(l.ExpiresAt) > g {
			t.Fatalf("case %d: expiry %s with grace %s became %s", i, exp, g, got.ExpiresAt.Sub(at))
		}
	}
}

func TestValidateJobID(t *testing.T) {
	tests := []struct {
		name string
		id   string
		ok   bool
	}{
		{"letters, digits and . _ : - are accepted", "Job-1_a.b:c", true},
		{"128 bytes are accepted", strings.Repeat("j", 128), true},
		{"an empty id is refused", "", false},
		{"129 bytes are refused", strings.Repeat("j", 129), false},
		{"a slash is refused", "a/b", false},
		{"a space is refused", "a b", false},
		{"non-ASCII is refused", "jöb", false},
		{"the API's watch path is refused", "watch", false},
		{"a dot segment is refused", "..", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateJobID(tt.id)
			if tt.ok != (err == nil) {
				t.Fatalf("ValidateJobID(%q) = %v", tt.id, err)
			}
			if err != nil && (!errors.Is(err, ErrInvalidJobID) || !strings.Contains(err.Error(), "job_id")) {
				t.Errorf("error %v does not wrap ErrInvalidJobID or name job_id", err)
			}
		})
	}
}

func TestLeaseLimitsValidate(t *testing.T) {
	tests := []struct {
		name   string
		limits LeaseLimits
		field  string
	}{
		{"the defaults are valid", DefaultLeaseLimits(), ""},
		{"equal bounds are valid", LeaseLimits{MinTTL: time.Second, MaxTTL: time.Second, DefaultTTL: time.Second}, ""},
		{"a zero minimum is refused", LeaseLimits{MaxTTL: time.Second, DefaultTTL: time.Second}, "MinTTL"},
		{"a default below the minimum is refused", LeaseLimits{MinTTL: time.Second, MaxTTL: time.Minute, DefaultTTL: time.Millisecond}, "DefaultTTL"},
		{"a maximum below the default is refused", LeaseLimits{MinTTL: time.Second, MaxTTL: time.Second, DefaultTTL: time.Minute}, "MaxTTL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.limits.Validate()
			if tt.field == "" && err != nil || tt.field != "" && (err == nil || !strings.Contains(err.Error(), tt.field)) {
				t.Errorf("Validate = %v, want an error naming %q", err, tt.field)
			}
		})
	}
}

func TestLeaseErrorCode(t *testing.T) {
	b := newBook()
	l := must(t)(b.acquire("j", "a", 0, false, lt0))
	tests := []struct {
		name string
		err  error
		code string
	}{
		{"a conflict is lease_held", second(b.acquire("j", "b", 0, false, lt0)), "lease_held"},
		{"a fenced token is stale_token", second(b.renew("j", "a", l.Token+7, 0, lt0)), "stale_token"},
		{"another owner is not_owner", second(b.release("j", "b", l.Token, lt0)), "not_owner"},
		{"an unknown job is no_lease", second(b.renew("k", "a", 1, 0, lt0)), "no_lease"},
		{"a bad ttl is invalid_ttl", second(b.acquire("k", "a", time.Hour, false, lt0)), "invalid_ttl"},
		{"a bad job id is invalid_job_id", ValidateJobID("watch"), "invalid_job_id"},
		{"a wrapped code is still found", errors.Join(errors.New("context"), ErrLeaseExpired), "lease_expired"},
		{"other errors have no code", errors.New("disk on fire"), ""},
		{"nil has no code", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := LeaseErrorCode(tt.err); got != tt.code {
				t.Errorf("LeaseErrorCode(%v) = %q, want %q", tt.err, got, tt.code)
			}
		})
	}
}

func TestRulesDoNotModifyTheStoredLease(t *testing.T) {
	cur := Lease{JobID: "j", Owner: "a", Token: 1, TTL: 10 * time.Second, State: LeaseActive, ExpiresAt: lt0}
	before := cur
	testLimits.Acquire(&cur, 1, AcquireRequest{JobID: "j", Owner: "b", At: lt0.Add(time.Second)})
	testLimits.Renew(&cur, RenewRequest{JobID: "j", Owner: "a", Token: 1, At: lt0.Add(time.Second)})
	Release(&cur, ReleaseRequest{JobID: "j", Owner: "a", Token: 1, At: lt0.Add(time.Second)})
	Expire(&cur, ExpireRequest{JobID: "j", Token: 1, At: lt0.Add(time.Second)})
	if cur != before {
		t.Errorf("a rule modified *cur: %+v, was %+v", cur, before)
	}
}
