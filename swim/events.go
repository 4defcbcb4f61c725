package swim

import "github.com/hashicorp/memberlist"

// eventDelegate is our memberlist.EventDelegate. memberlist calls it after
// a member joined (or came back), died, left or changed its metadata, with
// its node table locked for writing, from several goroutines but never
// concurrently. The callbacks read that member's entry right there (their
// *Locked callee says so) and report its change, so joins, deaths and
// leaves are reported at once, in memberlist's order. Reading one entry,
// not the table, keeps a push/pull merge of N members O(N) under
// memberlist's lock. They must not block and must not call memberlist,
// whose lock they hold; they keep no *Node.
type eventDelegate struct{ m *Memberlist }

var _ memberlist.EventDelegate = eventDelegate{}

func (d eventDelegate) NotifyJoin(n *memberlist.Node)   { d.m.observeLocked(n.Name) }
func (d eventDelegate) NotifyLeave(n *memberlist.Node)  { d.m.observeLocked(n.Name) }
func (d eventDelegate) NotifyUpdate(n *memberlist.Node) { d.m.observeLocked(n.Name) }
