// Package swim is coordinatord's SWIM membership: every coordinatord server
// and every `coordinatord agent` is a member of one gossip pool
// (hashicorp/memberlist, with Lifeguard), tagged with its node id,
// datacenter, role and version. The package hands the correlation engine
// what it consumes, shaped for engine.Correlator's inputs:
//
//   - Events: member state changes (alive, suspect, dead, left), suspicions
//     included, each stamped by Config.Clock. engine.MemberState uses the
//     same strings, so ev.State converts directly.
//   - RTTs: round-trip samples of this node's direct probes, with the
//     datacenter of the probed peer.
//   - LocalHealth: Lifeguard's local health score (0 healthy, up to 8).
//
// # How suspicions are seen
//
// memberlist reports joins, deaths and leaves through its EventDelegate but
// has no callback for suspicions, and it does not show them in its member
// list either: the state lives in its unexported node table
// (nodeState.State), which shadows the State field of the embedded Node, so
// the nodes that Members() returns and that delegates receive always say
// StateAlive (TestMemberlistOwnListHidesSuspicions pins this down). Nor can
// a NotifyLeave callback tell a death from a graceful leave.
//
// So this package reads memberlist's node table itself, under memberlist's
// own lock, located once by reflection when New runs (New fails with
// ErrUnsupportedMemberlist if the layout ever changes, so an upgrade that
// breaks this breaks loudly in the tests). It compares the table with the
// previous reading and emits one Event per change:
//
//   - from each EventDelegate callback, for the member it concerns:
//     memberlist calls them while it holds the table's write lock, so
//     joins, deaths and leaves are reported at once and in memberlist's
//     own order;
//   - every Config.PollInterval, and on each Members call, to catch
//     suspicions (and anything else that changed without a callback).
//
// Every reading happens under memberlist's lock, so readings and events are
// totally ordered: a member is never reported dead and then suspect. A
// suspicion shorter than PollInterval that no callback happened to observe
// goes unreported (a refuted blip), and a member whose suspicion reaches
// this node only with the death may go from alive to dead directly; with
// the defaults (PollInterval a fifth of ProbeInterval, the shortest
// suspicion SuspicionMult probe intervals) a member that dies is seen
// suspect first.
//
// The alternatives were worse: polling Members() cannot see suspicions at
// all (see above); decrypting and decoding gossip packets in the transport
// would reimplement memberlist's wire protocol; and the Alive, Conflict and
// Ping delegates are not called on suspicions.
//
// # Bounded channels
//
// Events and RTTs are buffered channels (Config.EventBuffer,
// Config.RTTBuffer). They are filled with non-blocking sends: a consumer
// that falls behind loses the newest items, never stalls gossip. Each loss
// is counted (Stats, and the coordinatord_swim_*_dropped_total metrics), and
// Event.Seq numbers every event emitted, dropped ones included, so a gap
// tells the consumer it lost events; it then resynchronises from Members,
// which returns the state that every event so far describes. Both channels
// are closed by Shutdown.
//
// # Encryption
//
// Gossip is encrypted and authenticated with Config.SecretKey (AES-GCM via
// memberlist's keyring; 16, 24 or 32 bytes, GenerateKey makes one).
// memberlist rejects anything it cannot decrypt, so a node without the key
// cannot join, and a member that never validated its metadata is rejected
// too (see Meta).
package swim
