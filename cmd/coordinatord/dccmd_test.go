package main

import (
	"strings"
	"testing"
	"time"

	"github.com/coordinatord/coordinatord/api"
)

func TestDCStatusTextShowsTheEpisodeTheHoldsAndWhichViewIsWhich(t *testing.T) {
	now := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	d := &api.Datacenters{
		Node: "node-2",
		Committed: api.CorrelationView{
			Revision: 7, Index: 42, At: now.Add(-time.Minute), Leader: "node-1", Severity: "medium", DelayEviction: true,
			Episode: &api.Episode{ID: "ep-1", DetectedAt: now.Add(-2 * time.Minute), Severity: "medium",
				Datacenters: []string{"dc3", "dc4", "dc5"}, HoldUntil: now.Add(3 * time.Minute)},
			HeldDatacenters: []string{"dc3", "dc4", "dc5"},
			HeldLeases:      []api.HeldLease{{JobID: "job-7", Owner: "gate-3", OwnerDC: "dc3", Token: 12, ExpiresAt: now.Add(-30 * time.Second), Overdue: true}},
			Decision:        &api.HoldDecision{Source: "modules", Modules: []string{"two-dc-hold"}, Hold: true, Notes: []string{"two-dc-hold: 3 datacenters dark"}},
			Events: []api.CorrelationEvent{
				{Type: "dc_state_changed", At: now.Add(-3 * time.Minute), Datacenter: "dc3", From: "healthy", To: "failing"},
				{Type: "partition_detected", At: now.Add(-2 * time.Minute), Episode: "ep-1", Severity: "medium", Affected: []string{"dc3", "dc4", "dc5"}},
			},
		},
		Local: api.LocalGossipView{Gossip: true, Members: 13},
		Datacenters: []api.DatacenterStatus{
			{Name: "dc1", State: "healthy", Since: now.Add(-time.Hour), Local: api.DatacenterLocal{Alive: 3, RTT: "1.2ms", RTTSamples: 5}},
			{Name: "dc3", State: "failed", Since: now.Add(-2 * time.Minute), Held: true, Local: api.DatacenterLocal{Alive: 1, Dead: 2}},
		},
	}
	var b strings.Builder
	if err := dcStatusText(&b, d, 10, now); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"severity:     medium",
		"episode:      ep-1, detected 2m0s ago, datacenters dc3, dc4, dc5; holds until",
		"held:         dc3, dc4, dc5 (decided by modules two-dc-hold)",
		"committed:    revision 7 at index 42 by node-1, 1m0s ago",
		"answered by:  node-2 (follower), 13 gossip members",
		"dc3         failed   2m0s ago    held  1      0        2",
		"ALIVE to LATENCY: node-2's own gossip view",
		"job-7  gate-3  dc3         12     overdue 30s (held)",
		"partition_detected  ep-1: severity medium, affected dc3, dc4, dc5",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}
