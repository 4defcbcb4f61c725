package api

import "time"

// JoinRequest is the body of POST /v1/cluster/join, sent by a new node with
// its own coordinator certificate. NodeID must equal the node claim of that
// certificate.
type JoinRequest struct {
	NodeID string `json:"node_id"`
	// RaftAddr is the address the other nodes reach the new node's Raft
	// transport at (its --raft-advertise).
	RaftAddr string `json:"raft_addr"`
	// HTTPAddr is the address the other nodes reach its API at (its
	// --http-advertise); followers forward requests there when it leads.
	HTTPAddr string `json:"http_addr"`
	// Datacenter defaults to the certificate's datacenter claim and must
	// equal it when given.
	Datacenter string `json:"datacenter,omitempty"`
}

// JoinResponse answers POST /v1/cluster/join.
type JoinResponse struct {
	Member Member `json:"member"`
	// AlreadyMember is true when the node was already a voter with the same
	// addresses: a repeated join is answered the same way and changes
	// nothing.
	AlreadyMember bool `json:"already_member"`
	// Leader is the id of the node that added it.
	Leader string `json:"leader"`
}

// Member is one node of the cluster as the members registry and the Raft
// configuration describe it.
type Member struct {
	ID         string    `json:"id"`
	RaftAddr   string    `json:"raft_addr"`
	HTTPAddr   string    `json:"http_addr,omitempty"`
	Datacenter string    `json:"datacenter,omitempty"`
	JoinedAt   time.Time `json:"joined_at,omitzero"`
	// Suffrage is "voter", "nonvoter" or "staging" for a server of the Raft
	// configuration, and "none" for a registered node that is not in it
	// (a removal or a join that stopped half way).
	Suffrage string `json:"suffrage,omitempty"`
	// Leader is true for the node the answering node follows (or is).
	Leader bool `json:"leader,omitempty"`
	// Registered is false for a server of the Raft configuration that has no
	// registry entry yet (its API address is then unknown).
	Registered bool `json:"registered"`
	// LastContact is when the answering node last heard from this node, when
	// it knows: a follower knows it for the leader, the leader knows it for
	// followers whose heartbeats fail.
	LastContact time.Time `json:"last_contact,omitzero"`
	// HeartbeatFailing is set by the leader for a follower it cannot reach.
	HeartbeatFailing bool `json:"heartbeat_failing,omitempty"`
}

// ClusterStatus answers GET /v1/cluster.
type ClusterStatus struct {
	// Node is the node that answered (the leader, unless ?stale=true).
	Node      string `json:"node"`
	RaftState string `json:"raft_state"`
	// LeaderID is "" when the answering node knows no leader.
	LeaderID     string   `json:"leader_id"`
	Term         uint64   `json:"term"`
	CommitIndex  uint64   `json:"commit_index"`
	AppliedIndex uint64   `json:"applied_index"`
	LastIndex    uint64   `json:"last_index"`
	Members      []Member `json:"members"`
}

// RemoveMemberResponse answers DELETE /v1/cluster/members/{id}.
type RemoveMemberResponse struct {
	ID      string `json:"id"`
	Removed bool   `json:"removed"`
}
