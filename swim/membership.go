package swim

// Membership is what the rest of coordinatord consumes from the gossip
// pool: *Memberlist implements it, and a test of a consumer can fake it
// without sockets.
//
// All methods are safe for concurrent use and return quickly: none waits
// for the network. Members may be called at any time, also after the
// member shut down (it then returns the last view). The channels are
// bounded and filled without blocking: a consumer that falls behind loses
// items (see the package documentation) and should resynchronise from
// Members when Event.Seq skips. Both channels are closed when the member
// shuts down. A consumer must not keep a returned slice's elements
// expecting them to change: each call returns a fresh copy.
type Membership interface {
	// Members returns every member this node knows, itself included,
	// sorted by name, with its current state. Dead and left members stay
	// listed until memberlist forgets them (Timing.GossipToTheDeadTime);
	// forgetting one emits no event. Every state it shows has been emitted
	// on Events before it returns (unless dropped).
	Members() []Member
	// Events delivers member state changes, suspicions included, in the
	// order this node saw them.
	Events() <-chan Event
	// RTTs delivers round-trip samples of this node's direct probes.
	RTTs() <-chan RTTSample
	// LocalHealth is Lifeguard's local health score: 0 when this node
	// meets SWIM's soft real-time requirements, up to
	// Timing.AwarenessMaxMultiplier-1 when it misses probes itself and its
	// own view of the others should not be trusted.
	LocalHealth() int
}

var _ Membership = (*Memberlist)(nil)
