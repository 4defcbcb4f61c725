package api

import "time"

// Datacenters answers GET /v1/datacenters. It merges two sources, and says
// which is which:
//
//   - Committed: the correlation engine's decisions, committed through Raft
//     by the leader that runs the engine (the same on every node once it
//     has applied the entry): datacenter states, severity, the episode, the
//     held datacenters, the decision's source and the recent events. Held
//     leases are read from the answering node's replicated lease state.
//   - Local: the answering node's own gossip view: member counts per
//     datacenter, RTTs of its own probes, its Lifeguard health score.
type Datacenters struct {
	// Node is the node that answered; its local view is in Local and in
	// each datacenter's Local.
	Node string `json:"node"`
	// Committed is the last committed correlation record's view.
	Committed CorrelationView `json:"committed"`
	// Local is the answering node's own gossip view.
	Local LocalGossipView `json:"local"`
	// Datacenters are the datacenters known to the committed record or to
	// the local view, sorted by name.
	Datacenters []DatacenterStatus `json:"datacenters"`
}

// CorrelationView is the committed part of GET /v1/datacenters.
type CorrelationView struct {
	// Revision counts committed correlation records (0: none yet); Index
	// is the Raft index of the last one, At its leader's time, Leader the
	// node that committed it.
	Revision uint64    `json:"revision"`
	Index    uint64    `json:"index"`
	At       time.Time `json:"at,omitzero"`
	Leader   string    `json:"leader,omitempty"`
	// Severity is none, low, medium or high.
	Severity string `json:"severity"`
	// DelayEviction is true while leases owned in HeldDatacenters are held,
	// not expired (an episode with a hold in force, before its cap).
	DelayEviction bool `json:"delay_eviction"`
	// Episode is the partition episode in progress, if any.
	Episode *Episode `json:"episode,omitempty"`
	// HeldDatacenters are the datacenters whose leases are held.
	HeldDatacenters []string `json:"held_datacenters"`
	// HeldLeases are the active leases owned in HeldDatacenters, from the
	// answering node's lease state.
	HeldLeases []HeldLease `json:"held_leases"`
	// Decision says who decided HeldDatacenters.
	Decision *HoldDecision `json:"decision,omitempty"`
	// Events are the most recent correlation events, oldest first.
	Events []CorrelationEvent `json:"events"`
}

// Episode is a detected partition, from partition_detected to
// partition_healed.
type Episode struct {
	ID         string    `json:"id"`
	DetectedAt time.Time `json:"detected_at"`
	Severity   string    `json:"severity"`
	// Datacenters are the episode's datacenters (the built-in held set).
	Datacenters []string `json:"datacenters"`
	// HoldUntil is the cap: no lease is held at or after it.
	HoldUntil time.Time `json:"hold_until"`
	// CapReached is true once HoldUntil has passed (by the answering
	// node's clock): held leases then expire as usual.
	CapReached bool `json:"cap_reached"`
}

// HoldDecision is who decided the held set: "builtin" (the engine: hold the
// episode's datacenters) or "modules" (correlation modules' outputs).
type HoldDecision struct {
	Source  string    `json:"source"`
	Modules []string  `json:"modules,omitempty"`
	Hold    bool      `json:"hold"`
	Notes   []string  `json:"notes,omitempty"`
	Event   string    `json:"event,omitempty"`
	At      time.Time `json:"at,omitzero"`
}

// HeldLease is an active lease owned in a held datacenter.
type HeldLease struct {
	JobID     string    `json:"job_id"`
	Owner     string    `json:"owner"`
	OwnerDC   string    `json:"owner_dc"`
	Token     uint64    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
	// Overdue is true when ExpiresAt has passed: the lease is alive only
	// because it is held.
	Overdue bool `json:"overdue"`
}

// CorrelationEvent is one thing the correlation engine decided:
// dc_state_changed, severity_changed, partition_detected or
// partition_healed.
type CorrelationEvent struct {
	Type       string    `json:"type"`
	At         time.Time `json:"at"`
	Datacenter string    `json:"datacenter,omitempty"`
	From       string    `json:"from,omitempty"`
	To         string    `json:"to,omitempty"`
	Severity   string    `json:"severity,omitempty"`
	Previous   string    `json:"previous_severity,omitempty"`
	Episode    string    `json:"episode,omitempty"`
	Affected   []string  `json:"affected,omitempty"`
	Healthy    []string  `json:"healthy,omitempty"`
}

// LocalGossipView is the answering node's own gossip state.
type LocalGossipView struct {
	// Gossip is false when the node is not a gossip member (no gossip
	// key configured): it then has no local view.
	Gossip bool `json:"gossip"`
	// HealthScore is the node's Lifeguard local health score: 0 is
	// healthy, up to 7 when it misses probes itself.
	HealthScore int `json:"health_score"`
	// Members counts the members the node knows, itself included.
	Members int `json:"members"`
	// Leader is true when the answering node runs the correlation engine.
	Leader bool `json:"leader"`
}

// DatacenterStatus is one datacenter: its committed state, and the
// answering node's local view of its members.
type DatacenterStatus struct {
	Name string `json:"name"`
	// State (healthy, failing, failed, recovering, flapping) and Since are
	// committed; empty when only the local view knows the datacenter.
	State string    `json:"state,omitempty"`
	Since time.Time `json:"since,omitzero"`
	// Held is true when its leases are held (committed).
	Held bool `json:"held"`
	// Local is the answering node's gossip view of the datacenter.
	Local DatacenterLocal `json:"local"`
}

// DatacenterLocal is one datacenter in the answering node's gossip view.
type DatacenterLocal struct {
	Alive   int `json:"alive"`
	Suspect int `json:"suspect"`
	Dead    int `json:"dead"`
	Left    int `json:"left"`
	// RTT is the mean round-trip time of the node's direct probes of the
	// datacenter's members within the latency window ("" without samples);
	// RTTSamples how many samples it averages.
	RTT        string `json:"rtt,omitempty"`
	RTTNanos   int64  `json:"rtt_nanos,omitempty"`
	RTTSamples int    `json:"rtt_samples"`
	// LatencyElevated is true when the mean reaches the engine's limit
	// with enough samples.
	LatencyElevated bool `json:"latency_elevated"`
}

// GossipMembers answers GET /v1/members: the answering node's own view of
// the gossip pool.
type GossipMembers struct {
	Node    string         `json:"node"`
	Gossip  bool           `json:"gossip"`
	Members []GossipMember `json:"members"`
}

// GossipMember is one member of the gossip pool.
type GossipMember struct {
	Name       string `json:"name"`
	Address    string `json:"address"`
	Datacenter string `json:"datacenter"`
	// Role is "coordinator" (a server) or "agent".
	Role    string `json:"role"`
	NodeID  string `json:"node_id"`
	Version string `json:"version"`
	// State is alive, suspect, dead or left, as the answering node sees it.
	State string `json:"state"`
}
