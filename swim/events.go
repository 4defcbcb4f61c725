package swim

import "github.com/hashicorp/memberlist"

// eventDelegate is our memberlist.EventDelegate. memberlist calls it after
// a member joined (or came back), died, left or changed its metadata, with
// its node table locked for writing, from several goroutines but never
// concurrently. The callbacks read the whole table right there (their
// *Locked names say so) and report every change since the last reading,
// so joins, deaths and leaves are reported at once, in memberlist's order.
// They must not block and must not call memberlist, whose lock they hold;
// they keep no *Node.
type eventDelegate struct{ m *Memberlist }

var _ memberlist.EventDelegate = eventDelegate{}

func (d eventDelegate) NotifyJoin(*memberlist.Node)   { d.m.observeLocked() }
func (d eventDelegate) NotifyLeave(*memberlist.Node)  { d.m.observeLocked() }
func (d eventDelegate) NotifyUpdate(*memberlist.Node) { d.m.observeLocked() }
