package tests

import (
	"fmt"
	"math"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// The cost of gossip per member, from the members' own metrics: the swim
// byte and packet counters (UDP packets and TCP streams, both directions,
// encrypted payload without IP/UDP/TCP headers) and process_cpu_seconds_total,
// read at the start and the end of a measured interval. These are long
// runs (a minute of measurement per profile by default):
//
//	COORDINATORD_LONG=1 go test ./tests -run TestGossipCost -v -timeout 20m
//
// COORDINATORD_GOSSIP_INTERVAL (a Go duration) changes the measured
// interval.

// longRun skips t unless COORDINATORD_LONG is set: the long runs are not
// part of the normal suite.
func longRun(t *testing.T) {
	t.Helper()
	if os.Getenv("COORDINATORD_LONG") == "" {
		t.Skip("a long run: set COORDINATORD_LONG=1 to run it (see README)")
	}
}

// measuredInterval is COORDINATORD_GOSSIP_INTERVAL, or def.
func measuredInterval(t *testing.T, def time.Duration) time.Duration {
	t.Helper()
	s := os.Getenv("COORDINATORD_GOSSIP_INTERVAL")
	if s == "" {
		return def
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		t.Fatalf("COORDINATORD_GOSSIP_INTERVAL %q: want a positive Go duration", s)
	}
	return d
}

// lanTiming is memberlist's LAN profile, the agents' and servers' default:
// only the join retry is shortened, which costs nothing once joined.
var lanTiming = []string{"--retry-join-interval", "200ms"}

const lanTimingSummary = "memberlist's LAN profile: probe interval 1s, probe timeout 500ms, gossip interval 200ms, gossip nodes 3, push/pull 30s, " +
	"indirect checks 3, suspicion mult 4, retransmit mult 4"

// meteredMember is a gossip member whose metrics the test reads.
type meteredMember struct {
	name, role string
	scrape     func() (promSample, error)
}

// gossipCost is one member's gossip over the measured interval.
type gossipCost struct {
	member                 meteredMember
	bytesPerSec, pktPerSec float64 // sent + received
	sentPerSec             float64
	cpuPercent             float64 // of one core, the whole process
}

// waitMembersAlive waits until every member sees want members alive.
func waitMembersAlive(t *testing.T, members []meteredMember, want int) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		var lagging []string
		for _, m := range members {
			s, err := m.scrape()
			if err != nil {
				lagging = append(lagging, fmt.Sprintf("%s: %v", m.name, err))
				continue
			}
			if got := s.get("coordinatord_swim_members", "state", "alive"); int(got) != want {
				lagging = append(lagging, fmt.Sprintf("%s sees %v alive", m.name, got))
			}
		}
		if len(lagging) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the pool has not converged to %d alive members within 60s: %s", want, strings.Join(lagging, "; "))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// measureGossip reads every member's counters, waits interval, reads
// them again, and returns each member's rates.
func measureGossip(t *testing.T, members []meteredMember, interval time.Duration) []gossipCost {
	t.Helper()
	type reading struct {
		at   time.Time
		prom promSample
	}
	read := func() []reading {
		out := make([]reading, len(members))
		for k, m := range members {
			s, err := m.scrape()
			if err != nil {
				t.Fatalf("scrape %s: %v", m.name, err)
			}
			out[k] = reading{time.Now(), s}
		}
		return out
	}
	before := read()
	time.Sleep(interval)
	after := read()
	costs := make([]gossipCost, len(members))
	for k, m := range members {
		b, a := before[k], after[k]
		secs := a.at.Sub(b.at).Seconds()
		rate := func(f func(promSample) float64) float64 { return (f(a.prom) - f(b.prom)) / secs }
		costs[k] = gossipCost{
			member:      m,
			bytesPerSec: rate(promSample.gossipBytes),
			pktPerSec:   rate(func(s promSample) float64 { return s.sum("coordinatord_swim_packets_total") }),
			sentPerSec: rate(func(s promSample) float64 {
				return s.get("coordinatord_swim_packet_bytes_total", "direction", "sent") + s.get("coordinatord_swim_stream_bytes_total", "direction", "sent")
			}),
			cpuPercent: 100 * rate(func(s promSample) float64 { return s.get("process_cpu_seconds_total") }),
		}
	}
	return costs
}

// logGossipCost logs the per-member figures, of all members and of each
// role.
func logGossipCost(t *testing.T, label string, costs []gossipCost) {
	t.Helper()
	roles := map[string][]gossipCost{}
	for _, c := range costs {
		roles[c.member.role] = append(roles[c.member.role], c)
	}
	names := make([]string, 0, len(roles))
	for r := range roles {
		names = append(names, r)
	}
	slices.Sort(names)
	all := names
	if len(names) > 1 {
		all = append([]string{"all"}, names...)
		roles["all"] = costs
	}
	for _, r := range all {
		cs := roles[r]
		var bytes, sent, pkts, cpu []float64
		for _, c := range cs {
			bytes = append(bytes, c.bytesPerSec)
			sent = append(sent, c.sentPerSec)
			pkts = append(pkts, c.pktPerSec)
			cpu = append(cpu, c.cpuPercent)
		}
		t.Logf("%s, %s (%d members): gossip %s B/s per member (sent+received; sent %s), %s packets/s, CPU %s %% of a core per process",
			label, r, len(cs), stats(bytes, "%.0f"), stats(sent, "%.0f"), stats(pkts, "%.1f"), stats(cpu, "%.2f"))
	}
}

// stats formats mean [min–max].
func stats(v []float64, f string) string {
	if len(v) == 0 {
		return "-"
	}
	lo, hi, sum := math.Inf(1), math.Inf(-1), 0.0
	for _, x := range v {
		lo, hi, sum = min(lo, x), max(hi, x), sum+x
	}
	return fmt.Sprintf("mean "+f+" ["+f+"–"+f+"]", sum/float64(len(v)), lo, hi)
}

// TestGossipCostAgentsOnly: 15 agents (3 in each of 5 datacenters), no
// server: the cost of gossip alone, for the LAN profile and for the fast
// timing of the e2e tests.
func TestGossipCostAgentsOnly(t *testing.T) {
	longRun(t)
	interval := measuredInterval(t, time.Minute)
	for _, profile := range []struct {
		name, summary string
		timing        []string
	}{
		{"lan", lanTimingSummary, lanTiming},
		{"e2e-fast", gossipTimingSummary, gossipTiming},
	} {
		t.Run(profile.name, func(t *testing.T) {
			g := newGossipPool(t)
			g.timing = profile.timing
			var members []meteredMember
			var seeds []string
			for k := range 15 {
				dc := fmt.Sprintf("dc%d", k%5+1)
				a := g.startAgent(fmt.Sprintf("agent-%s-%d", dc, k/5+1), dc, seeds)
				if len(seeds) < 3 {
					seeds = append(seeds, a.bind)
				}
				members = append(members, meteredMember{name: a.name, role: "agent", scrape: func() (promSample, error) { return scrapeAgent(a.metricsAddr) }})
			}
			waitMembersAlive(t, members, 15)
			time.Sleep(5 * time.Second) // past the joins' burst of gossip
			costs := measureGossip(t, members, interval)
			t.Logf("15 agents, %s over %s", profile.summary, interval)
			logGossipCost(t, profile.name, costs)
		})
	}
}

// TestGossipCost15Members: 3 servers (dc1, dc2, dc3) and 12 agents (2 in
// each of dc1..dc6), 15 gossip members, for the LAN profile and for the
// fast timing of the e2e tests. The agents' figures are gossip alone (an
// agent does nothing else); a server's CPU also counts Raft heartbeats,
// the correlation engine and the test's metric scrapes.
func TestGossipCost15Members(t *testing.T) {
	longRun(t)
	interval := measuredInterval(t, time.Minute)
	for _, profile := range []struct {
		name, summary string
		timing        []string
	}{
		{"lan", lanTimingSummary, lanTiming},
		{"e2e-fast", gossipTimingSummary, gossipTiming},
	} {
		t.Run(profile.name, func(t *testing.T) {
			gc := startGossipCluster(t, gossipClusterSpec{
				serverDCs:   []string{"dc1", "dc2", "dc3"},
				agentDCs:    []string{"dc1", "dc2", "dc3", "dc4", "dc5", "dc6"},
				agentsPerDC: 2,
				timing:      profile.timing,
			})
			var members []meteredMember
			for _, n := range gc.nodes {
				members = append(members, meteredMember{name: n.id, role: "server", scrape: func() (promSample, error) { return scrapeNode(n) }})
			}
			for _, a := range gc.g.agents {
				members = append(members, meteredMember{name: a.name, role: "agent", scrape: func() (promSample, error) { return scrapeAgent(a.metricsAddr) }})
			}
			if len(members) != 15 {
				t.Fatalf("%d members, want 15", len(members))
			}
			waitMembersAlive(t, members, 15)
			time.Sleep(5 * time.Second) // past the joins' burst of gossip
			costs := measureGossip(t, members, interval)
			t.Logf("3 servers + 12 agents, %s, measured over %s", profile.summary, interval)
			logGossipCost(t, profile.name, costs)
		})
	}
}
