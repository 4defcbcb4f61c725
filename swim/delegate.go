package swim

import "github.com/hashicorp/memberlist"

// metaDelegate is our memberlist.Delegate. It only supplies this member's
// encoded Meta; coordinatord sends no user messages and keeps no state of
// its own in push/pull.
//
// memberlist calls NodeMeta when it (re)announces this member, possibly
// with its node table locked, so it must not block or call back into
// memberlist; the returned slice is kept by memberlist and never modified,
// here or there.
type metaDelegate struct{ m *Memberlist }

var _ memberlist.Delegate = metaDelegate{}

func (d metaDelegate) NodeMeta(limit int) []byte {
	if len(d.m.meta) > limit { // Validate checked it against MetaMaxSize
		return nil
	}
	return d.m.meta
}

func (metaDelegate) NotifyMsg([]byte)                           {}
func (metaDelegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (metaDelegate) LocalState(join bool) []byte                { return nil }
func (metaDelegate) MergeRemoteState(buf []byte, join bool)     {}
