package tests

import (
	"context"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coordinatord/coordinatord/api"
	"github.com/coordinatord/coordinatord/client"
	"github.com/coordinatord/coordinatord/engine"
)

// TestLeasesSurviveKill9OfEveryNodeDuringABurst: many clients acquire and
// renew leases through every node; in the middle of the burst every node
// is killed with SIGKILL, at once. After all three restart, every
// acknowledged write is there: each job's lease has the acknowledged
// token, and its index and expiry are at least the acknowledged ones (a
// write whose answer was lost may have committed after it; a new leader
// may lengthen a lease). Each job has one owner, so no other token can
// appear.
func TestLeasesSurviveKill9OfEveryNodeDuringABurst(t *testing.T) {
	const (
		clients   = 24
		minAcked  = 1000
		leaseTTL  = time.Minute
		perJob    = 3 // an acquire and two renewals, then the next job
		burstTime = 20 * time.Second
	)
	c := startCluster(t, 3)
	log := &leaseLog{}
	ctx, stop := context.WithTimeout(context.Background(), burstTime)
	defer stop()
	var wg sync.WaitGroup
	for k := range clients {
		lc := c.leaseCallerOf(t, log, engine.RoleGate, fmt.Sprintf("gate-%d", k), k%3+1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ctx.Err() == nil; n++ {
				job := fmt.Sprintf("burst-%d-%d", k, n)
				l, err := lc.acquire(ctx, job, leaseTTL)
				for r := 1; err == nil && r < perJob && ctx.Err() == nil; r++ {
					_, err = lc.renew(ctx, job, l.Token)
				}
			}
		}()
	}
	eventually(t, fmt.Sprintf("%d writes acknowledged", minAcked), func() error {
		if n := len(log.acked()); n < minAcked {
			return fmt.Errorf("%d so far", n)
		}
		return nil
	})
	// Every node at once: the signals first, then the waits.
	for _, n := range c.nodes {
		n.signal(syscall.SIGKILL)
	}
	killed := time.Now()
	for _, n := range c.nodes {
		<-n.exited
		n.running = false
	}
	stop()
	wg.Wait()
	ops := log.all()
	acked := log.acked()
	t.Logf("killed every node after %d acknowledged writes of %d sent", len(acked), len(ops))

	for _, n := range c.nodes {
		c.run(n)
	}
	for _, n := range c.nodes {
		n.waitReady()
	}
	leader := c.WaitLeader()
	t.Logf("all three restarted; %s leads %s after the kill", c.node(leader).id, time.Since(killed).Round(time.Millisecond))

	// The newest acknowledged state of each job.
	want := map[string]api.Lease{}
	for _, op := range acked {
		if w, ok := want[op.job]; !ok || op.lease.Index > w.Index {
			want[op.job] = *op.lease
		}
	}
	list, err := c.leaseClient(t, engine.RoleAdmin, "admin-1").ListLeases(timeout(t, 10*time.Second), client.LeaseQuery{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]api.Lease{}
	for _, l := range list.Leases {
		got[l.JobID] = l
	}
	lost := 0
	for job, w := range want {
		g, ok := got[job]
		switch {
		case !ok:
			t.Errorf("%s: acknowledged at index %d with token %d, missing after the restart", job, w.Index, w.Token)
		case g.Token != w.Token || g.Owner != w.Owner || g.State != "active" || g.Index < w.Index || g.ExpiresAt.Before(w.ExpiresAt):
			t.Errorf("%s after the restart: %+v, want at least the acknowledged %+v", job, g, w)
		default:
			continue
		}
		if lost++; lost > 20 {
			t.Fatal("too many lost writes to list")
		}
	}
	t.Logf("%d jobs with acknowledged writes, all there; %d leases in all (the rest were written but their answers lost)", len(want), len(got))
	c.waitSameLeases(t)
}
