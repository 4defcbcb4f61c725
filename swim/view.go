package swim

import (
	"bytes"
	"sort"
	"time"
)

// viewEntry is what this package last reported about a member.
type viewEntry struct {
	member  Member
	rawMeta []byte    // memberlist's meta bytes the member's Meta was decoded from
	gen     uint64    // the reading of the table that last saw the member
	since   time.Time // when the member entered its current state
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

// observeLocked reads one member's entry from an EventDelegate callback,
// which memberlist calls with the table locked for writing. During New,
// before the table is located, it does nothing; New's first refresh
// catches up.
func (m *Memberlist) observeLocked(name string) {
	t := m.table.Load()
	if t == nil {
		return
	}
	e, ok := t.readOneLocked(name)
	if !ok {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.applyLocked(&e, m.clock())
	m.publishCountsLocked()
}

// diffLocked compares the whole table (memberlist's lock held, for reading
// or writing, so that all readings are ordered) with the view and reports
// every change. A member the table no longer holds (memberlist forgets
// dead and left members after GossipToTheDeadTime) leaves the view
// without an event: at once if it left, DeadMemberRetention after its
// death if it died.
func (m *Memberlist) diffLocked(t *nodeTable) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.scratch = t.readLocked(m.scratch[:0])
	m.gen++
	now := m.clock()
	for i := range m.scratch {
		m.applyLocked(&m.scratch[i], now)
	}
	for name, v := range m.view {
		if v.gen != m.gen {
			if v.member.State == StateDead && now.Sub(v.since) < m.cfg.DeadMemberRetention {
				continue // still counted dead, though memberlist forgot it
			}
			m.counts[v.member.State]--
			delete(m.view, name)
		}
	}
	m.publishCountsLocked()
	clear(m.scratch) // drop references to memberlist's slices
}

// applyLocked brings one member's view up to date with its table entry
// and emits an event if it is new, changed state or changed metadata. mu
// is held.
func (m *Memberlist) applyLocked(e *tableEntry, now time.Time) {
	state := stateOf(e.state)
	old, known := m.view[e.node.Name]
	meta := old.member.Meta
	metaChanged := !known || !bytes.Equal(old.rawMeta, e.node.Meta)
	if metaChanged {
		md, err := DecodeMeta(e.node.Meta)
		if err != nil {
			// Cannot happen: the Alive delegate admits only members whose
			// metadata decodes.
			return
		}
		meta = md
	}
	member := memberOf(&e.node, meta, state)
	since := old.since
	if !known || old.member.State != state {
		since = now
	}
	m.view[member.Name] = viewEntry{member: member, rawMeta: e.node.Meta, gen: m.gen, since: since}
	switch {
	case !known:
		m.counts[state]++
		m.emitLocked(Event{At: now, Member: member, State: state})
	case old.member.State != state || metaChanged:
		m.counts[old.member.State]--
		m.counts[state]++
		m.emitLocked(Event{At: now, Member: member, State: state, Previous: old.member.State})
	}
}

// publishCountsLocked sets the members gauge; mu is held.
func (m *Memberlist) publishCountsLocked() {
	for _, s := range []State{StateAlive, StateSuspect, StateDead, StateLeft} {
		m.metrics.members.WithLabelValues(string(s)).Set(float64(m.counts[s]))
	}
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
