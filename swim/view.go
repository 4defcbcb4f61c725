package swim

import (
	"bytes"
	"sort"
)

// viewEntry is what this package last reported about a member.
type viewEntry struct {
	member  Member
	rawMeta []byte // memberlist's meta bytes the member's Meta was decoded from
	gen     uint64 // the reading of the table that last saw the member
}

// Members returns every member this node knows, itself included, sorted
// by name (see Membership). It reads memberlist's table first, so that
// the answer is current and every state in it has been emitted.
func (m *Memberlist) Members() []Member {
	if !m.shutdown.Load() {
		m.refresh()
	}
	m.mu.Lock()
	out := make([]Member, 0, len(m.view))
	for _, v := range m.view {
		out = append(out, v.member)
	}
	m.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// refresh reads the node table under memberlist's read lock and reports
// what changed. It must not be called from a memberlist callback.
func (m *Memberlist) refresh() {
	t := m.table.Load()
	t.mu.RLock()
	defer t.mu.RUnlock()
	m.diffLocked(t)
}

// observeLocked reads the node table from an EventDelegate callback, which
// memberlist calls with the table locked for writing. During New, before
// the table is located, it does nothing; New's first refresh catches up.
func (m *Memberlist) observeLocked() {
	if t := m.table.Load(); t != nil {
		m.diffLocked(t)
	}
}

// diffLocked compares the table (memberlist's lock held, for reading or
// writing, so all readings are ordered) with the view and emits an event
// per change: a new member, a new state, or new metadata. A member the
// table no longer holds (memberlist forgets dead and left members after
// GossipToTheDeadTime) leaves the view without an event.
func (m *Memberlist) diffLocked(t *nodeTable) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.scratch = t.readLocked(m.scratch[:0])
	m.gen++
	now := m.clock()
	for i := range m.scratch {
		e := &m.scratch[i]
		state := stateOf(e.state)
		old, known := m.view[e.node.Name]
		meta := old.member.Meta
		metaChanged := !known || !bytes.Equal(old.rawMeta, e.node.Meta)
		if metaChanged {
			md, err := DecodeMeta(e.node.Meta)
			if err != nil {
				// Cannot happen: the Alive delegate admits only members
				// whose metadata decodes.
				continue
			}
			meta = md
		}
		member := memberOf(&e.node, meta, state)
		m.view[member.Name] = viewEntry{member: member, rawMeta: e.node.Meta, gen: m.gen}
		switch {
		case !known:
			m.emitLocked(Event{At: now, Member: member, State: state})
		case old.member.State != state || metaChanged:
			m.emitLocked(Event{At: now, Member: member, State: state, Previous: old.member.State})
		}
	}
	counts := map[State]int{StateAlive: 0, StateSuspect: 0, StateDead: 0, StateLeft: 0}
	for name, v := range m.view {
		if v.gen != m.gen {
			delete(m.view, name)
			continue
		}
		counts[v.member.State]++
	}
	for s, n := range counts {
		m.metrics.members.WithLabelValues(string(s)).Set(float64(n))
	}
	clear(m.scratch) // drop references to memberlist's slices
}

// emitLocked numbers ev and sends it without blocking; mu is held.
func (m *Memberlist) emitLocked(ev Event) {
	m.seq++
	ev.Seq = m.seq
	m.metrics.events.WithLabelValues(string(ev.State)).Inc()
	if m.closed {
		return
	}
	select {
	case m.events <- ev:
		m.counters.events.Add(1)
	default:
		m.counters.eventsDropped.Add(1)
	}
}
