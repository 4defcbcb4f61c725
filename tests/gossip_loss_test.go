package tests

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/coordinatord/coordinatord/api"
	"github.com/coordinatord/coordinatord/engine"
)

// TestGossipPacketLoss: every member of the e2e topology (3 servers, 10
// agents) drops 10% of the gossip packets it sends (the hidden
// --gossip-loss 0.1, a lossy transport: UDP probes, acks and gossip are
// dropped, TCP streams pass), for 20 seconds in the normal suite and 2
// minutes as a long run:
//
//	COORDINATORD_LONG=1 go test ./tests -run TestGossipPacketLoss -v -timeout 10m
//
// No datacenter may be declared failed (nor any episode start, nor
// anything be held); in every datacenter a lease renewed every TTL/3 lives
// through it, and a lease left alone expires on time. The members'
// suspicions (swim metrics) are logged: they show the loss was there.
func TestGossipPacketLoss(t *testing.T) {
	run := 20 * time.Second
	if os.Getenv("COORDINATORD_LONG") != "" {
		run = 2 * time.Minute
	}
	spec := e2eTopology()
	spec.gossipFlags = []string{"--gossip-loss", "0.1"}
	gc := startGossipCluster(t, spec)
	obs := gc.observe(t)
	w := gc.watchLeases(t, gc.Leader())
	before := gc.suspicions(t)

	log := &leaseLog{}
	const keptTTL, leftTTL = 3 * time.Second, 2 * time.Second
	ctx, stopKeeping := context.WithCancel(context.Background())
	defer stopKeeping()
	var keeping sync.WaitGroup
	var heldMu sync.Mutex
	stillHeld := map[string]bool{}
	kept := map[string]*api.Lease{}
	callers := map[string]*leaseCaller{}
	for _, dc := range gc.dcs {
		c := gc.leaseCallerIn(t, log, engine.RoleGate, "gate-"+dc, dc)
		callers[dc] = c
		job := "kept-" + dc
		l, err := c.acquire(timeout(t, 10*time.Second), job, keptTTL)
		if err != nil {
			t.Fatal(err)
		}
		kept[job] = l
		keeping.Add(1)
		go func() {
			defer keeping.Done()
			ok := c.keepAlive(ctx, *l, 0)
			heldMu.Lock()
			stillHeld[job] = ok
			heldMu.Unlock()
		}()
	}
	// Leases left alone, acquired all along the lossy period, each must
	// expire on time.
	left := map[string]*api.Lease{}
	start := time.Now()
	for k := 0; time.Since(start) < run; k++ {
		dc := gc.dcs[k%len(gc.dcs)]
		job := fmt.Sprintf("left-%s-%d", dc, k)
		l, err := callers[dc].acquire(timeout(t, 10*time.Second), job, leftTTL)
		if err != nil {
			t.Fatalf("acquire %s: %v", job, err)
		}
		left[job] = l
		time.Sleep(time.Second)
	}
	// The last left leases run out.
	time.Sleep(leftTTL + time.Second)

	after := gc.suspicions(t)
	stopKeeping()
	keeping.Wait()
	for job := range kept {
		if !stillHeld[job] {
			t.Errorf("the renewals of %s stopped: the lease was lost", job)
		}
	}
	marker, err := callers["dc1"].acquire(timeout(t, 10*time.Second), "marker", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	evs := w.waitIndex(t, marker.Index)
	st := checkLeaseHistory(t, evs, log.all())
	var maxLate time.Duration
	for job, l := range left {
		ex := expiries(evs, job)
		if len(ex) != 1 {
			t.Errorf("%s (ttl %s) expired %d times, want once", job, leftTTL, len(ex))
			continue
		}
		late := ex[0].Lease.EndedAt.Sub(l.ExpiresAt)
		maxLate = max(maxLate, late)
		if !ex[0].Lease.ExpiresAt.Equal(l.ExpiresAt) || late < 0 || late > 2*time.Second {
			t.Errorf("%s: expired at %s with expiry %s, want its acquired expiry %s, on time", job, ex[0].Lease.EndedAt, ex[0].Lease.ExpiresAt, l.ExpiresAt)
		}
	}
	for job := range kept {
		if n := len(expiries(evs, job)); n > 0 {
			t.Errorf("kept lease %s expired", job)
		}
	}

	failed := 0
	failing := 0
	for _, ev := range obs.eventsOf("dc_state_changed") {
		switch ev.To {
		case string(engine.DCFailed), string(engine.DCFlapping):
			failed++
		case string(engine.DCFailing):
			failing++
		}
	}
	if failed > 0 || len(obs.eventsOf("partition_detected")) > 0 || len(obs.everHeld) > 0 || obs.worst != string(engine.SeverityNone) {
		t.Errorf("with 10%% gossip packet loss: a datacenter was declared failed or an episode started:\n%s", obs.summary())
	}
	dropped := after.dropped - before.dropped
	if dropped == 0 {
		t.Errorf("no gossip packet was dropped: the injected loss is not there")
	}
	perNode := map[string]int{}
	for n, v := range after.byNode {
		perNode[n] = v - before.byNode[n]
	}
	t.Logf("%s of 10%% gossip packet loss on all 13 members (%s): %d packets dropped, %d suspicions in the servers' views (%v), %d datacenter(s) briefly failing, none failed; "+
		"%d kept leases renewed throughout, %d left leases expired on time (at most %s late); history: %s",
		run, gossipTimingSummary, dropped, after.total-before.total, perNode, failing, len(kept), len(left), maxLate.Round(time.Millisecond), st)
	if t.Failed() {
		t.Log(obs.summary())
	}
}

// suspicionCount is how many suspicions the servers have seen, and how
// many gossip packets the members (servers and agents) dropped on purpose.
type suspicionCount struct {
	total   int
	byNode  map[string]int
	dropped int
}

// suspicions reads coordinatord_swim_member_events_total{state="suspect"}
// from every running node.
func (gc *gossipCluster) suspicions(t *testing.T) suspicionCount {
	t.Helper()
	out := suspicionCount{byNode: map[string]int{}}
	for _, n := range gc.runningNodes() {
		s, err := scrapeNode(n)
		if err != nil {
			t.Fatal(err)
		}
		v := int(s.get("coordinatord_swim_member_events_total", "state", "suspect"))
		out.byNode[n.id] = v
		out.total += v
		out.dropped += int(s.get("coordinatord_swim_injected_packet_drops_total"))
	}
	for _, a := range gc.g.agents {
		s, err := scrapeAgent(a.metricsAddr)
		if err != nil {
			t.Fatal(err)
		}
		out.dropped += int(s.get("coordinatord_swim_injected_packet_drops_total"))
	}
	return out
}
