package swim

import (
	"fmt"
	"reflect"
	"sync"
	"unsafe"

	"github.com/hashicorp/memberlist"
)

// nodeTable reads memberlist's own node table, the only place where a
// member's suspect, dead and left states are kept (see the package
// documentation for why). It is located once, by reflection, and checked
// field by field; after that a reading is a loop over the table under
// memberlist's lock.
//
// memberlist v0.7.0 has, in *Memberlist:
//
//	nodeLock sync.RWMutex
//	nodes    []*nodeState
//	nodeMap  map[string]*nodeState
//
// and nodeState is {Node; Incarnation uint32; State NodeStateType; ...}.
// memberlist writes nodes and each nodeState only with nodeLock held for
// writing, and replaces (never modifies in place) a node's Addr and Meta
// slices, so a copy taken under the lock may be kept.
type nodeTable struct {
	mu       *sync.RWMutex // memberlist's nodeLock
	nodes    reflect.Value // memberlist's nodes field (addressable)
	nodeMap  reflect.Value // memberlist's nodeMap field, by name
	nodeIdx  int           // index of the embedded Node in nodeState
	stateIdx int           // index of nodeState's own State field
}

// tableEntry is one member as the table holds it.
type tableEntry struct {
	node  memberlist.Node // a copy; its State field is meaningless (always alive)
	state memberlist.NodeStateType
}

// openNodeTable locates ml's node table and checks its layout.
func openNodeTable(ml *memberlist.Memberlist) (*nodeTable, error) {
	v := reflect.ValueOf(ml).Elem()
	lock := v.FieldByName("nodeLock")
	if !lock.IsValid() || lock.Type() != reflect.TypeFor[sync.RWMutex]() {
		return nil, fmt.Errorf("%w: Memberlist has no nodeLock sync.RWMutex", ErrUnsupportedMemberlist)
	}
	nodes := v.FieldByName("nodes")
	if !nodes.IsValid() || nodes.Kind() != reflect.Slice ||
		nodes.Type().Elem().Kind() != reflect.Pointer || nodes.Type().Elem().Elem().Kind() != reflect.Struct {
		return nil, fmt.Errorf("%w: Memberlist has no nodes []*nodeState", ErrUnsupportedMemberlist)
	}
	nodeMap := v.FieldByName("nodeMap")
	if !nodeMap.IsValid() || nodeMap.Kind() != reflect.Map || nodeMap.Type().Key().Kind() != reflect.String ||
		nodeMap.Type().Elem() != nodes.Type().Elem() {
		return nil, fmt.Errorf("%w: Memberlist has no nodeMap map[string]*nodeState", ErrUnsupportedMemberlist)
	}
	st := nodes.Type().Elem().Elem()
	nf, ok := st.FieldByName("Node")
	if !ok || !nf.Anonymous || len(nf.Index) != 1 || nf.Type != reflect.TypeFor[memberlist.Node]() {
		return nil, fmt.Errorf("%w: %s does not embed Node", ErrUnsupportedMemberlist, st)
	}
	// FieldByName picks the shallowest State: nodeState's own, which
	// shadows Node.State.
	sf, ok := st.FieldByName("State")
	if !ok || len(sf.Index) != 1 || sf.Type != reflect.TypeFor[memberlist.NodeStateType]() {
		return nil, fmt.Errorf("%w: %s has no State field of its own", ErrUnsupportedMemberlist, st)
	}
	return &nodeTable{
		mu:       (*sync.RWMutex)(unsafe.Pointer(lock.UnsafeAddr())),
		nodes:    nodes,
		nodeMap:  nodeMap,
		nodeIdx:  nf.Index[0],
		stateIdx: sf.Index[0],
	}, nil
}

// read copies the table under memberlist's read lock.
func (t *nodeTable) read(dst []tableEntry) []tableEntry {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.readLocked(dst)
}

// readLocked copies the table; the caller holds memberlist's lock, for
// reading or (in an EventDelegate callback) for writing.
func (t *nodeTable) readLocked(dst []tableEntry) []tableEntry {
	n := t.nodes.Len()
	for i := range n {
		dst = append(dst, t.entry(t.nodes.Index(i).Elem()))
	}
	return dst
}

// readOneLocked copies the entry of the named member; the caller holds
// memberlist's lock.
func (t *nodeTable) readOneLocked(name string) (tableEntry, bool) {
	p := t.nodeMap.MapIndex(reflect.ValueOf(name))
	if !p.IsValid() || p.IsNil() {
		return tableEntry{}, false
	}
	return t.entry(p.Elem()), true
}

// entry copies one nodeState.
func (t *nodeTable) entry(ns reflect.Value) tableEntry {
	node := (*memberlist.Node)(unsafe.Pointer(ns.Field(t.nodeIdx).UnsafeAddr()))
	return tableEntry{node: *node, state: memberlist.NodeStateType(ns.Field(t.stateIdx).Int())}
}
