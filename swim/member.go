package swim

import (
	"net"
	"strconv"
	"time"

	"github.com/hashicorp/memberlist"
)

// State is a member's state as SWIM sees it. The values are those of
// engine.MemberState, so engine.MemberState(s) converts.
type State string

// Member states.
const (
	// StateAlive: the member answers probes.
	StateAlive State = "alive"
	// StateSuspect: a probe failed; the member has until its suspicion
	// times out to refute it, then it is dead.
	StateSuspect State = "suspect"
	// StateDead: the suspicion timed out (the member crashed, or is cut
	// off from this node's part of the network).
	StateDead State = "dead"
	// StateLeft: the member left gracefully (Leave).
	StateLeft State = "left"
)

func stateOf(s memberlist.NodeStateType) State {
	switch s {
	case memberlist.StateSuspect:
		return StateSuspect
	case memberlist.StateDead:
		return StateDead
	case memberlist.StateLeft:
		return StateLeft
	}
	return StateAlive
}

// Member is one member of the gossip pool as this node sees it.
type Member struct {
	// Name is the member's unique memberlist name (Config.NodeName).
	Name string `json:"name"`
	// Addr is the host:port the member gossips on (its advertised address).
	Addr string `json:"addr"`
	// Meta is what the member says about itself.
	Meta Meta `json:"meta"`
	// State is the member's state in this node's view.
	State State `json:"state"`
}

func memberOf(n *memberlist.Node, meta Meta, s State) Member {
	return Member{
		Name:  n.Name,
		Addr:  net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port))),
		Meta:  meta,
		State: s,
	}
}

// Event is a change in a member's state (or metadata) in this node's view.
type Event struct {
	// Seq numbers the events of one Memberlist from 1, dropped ones
	// included: a gap means the consumer lost events to a full channel.
	Seq uint64
	// At is when this node noticed the change (Config.Clock).
	At time.Time
	// Member is the member after the change.
	Member Member
	// State is Member.State, for convenience.
	State State
	// Previous is the state before the change; "" when the member was not
	// known before (a join, or the first view of an existing member).
	// Previous == State reports a change of metadata only (a member
	// restarted under the same name with, say, another datacenter).
	Previous State
}

// RTTSample is the round-trip time of one of this node's direct UDP
// probes to a peer (memberlist's PingDelegate: indirect and TCP fallback
// probes give no sample).
type RTTSample struct {
	// At is when the ack arrived (Config.Clock).
	At time.Time
	// Node is the probed member's name.
	Node string
	// Datacenter is the probed member's datacenter.
	Datacenter string
	// RTT is the measured round-trip time.
	RTT time.Duration
}
