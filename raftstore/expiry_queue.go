package raftstore

import (
	"container/heap"
	"slices"
	"sync"
	"time"

	"github.com/coordinatord/coordinatord/engine"
)

// expiryItem is an active lease as the expiry loop needs it.
type expiryItem struct {
	job       string
	owner     string
	ownerDC   string
	token     uint64
	expiresAt time.Time
	// ownerExpiresAt is the expiry the owner last set
	// (storedLease.ownerExpiry): the hold cap counts from it.
	ownerExpiresAt time.Time
	// index is the Raft index of the lease's last change, to tell newer
	// information from older.
	index uint64
}

func itemOf(l storedLease) expiryItem {
	return expiryItem{job: l.JobID, owner: l.Owner, ownerDC: l.OwnerDC, token: l.Token, expiresAt: l.ExpiresAt,
		ownerExpiresAt: l.ownerExpiry(), index: l.Index}
}

// queueChange is one committed change of a job's lease as the queue sees
// it: the lease's item (job and index always set), or its removal.
type queueChange struct {
	item   expiryItem
	remove bool
}

// expiryQueue is a min-heap of the active leases by expiry, one entry per
// job, kept only while this node leads (etcd's lease_queue.go). The expiry
// loop rebuilds it from the file when it starts; from then on the state
// machine feeds it every committed lease event. Its methods are safe for
// concurrent use; observe, called on the state machine goroutine, only
// takes the mutex.
type expiryQueue struct {
	mu sync.Mutex
	// active is true between rebuild and deactivate; observe ignores
	// events otherwise.
	active bool
	// pending collects the changes observed while rebuild reads the file,
	// which it does without the mutex; nil when not rebuilding.
	pending []queueChange
	// stale is set when the file was replaced under an active queue; the
	// loop rebuilds.
	stale bool
	// floor is the applied index the last rebuild read: events at or below
	// it are already in the heap.
	floor uint64
	items itemHeap
	byJob map[string]*queued
	// wake is signalled when the earliest expiry moves earlier, so that a
	// sleeping loop re-plans.
	wake chan struct{}
}

type queued struct {
	expiryItem
	pos int
}

// itemHeap implements heap.Interface, earliest expiry first.
type itemHeap []*queued

func (h itemHeap) Len() int { return len(h) }
func (h itemHeap) Less(i, j int) bool {
	return h[i].expiresAt.Before(h[j].expiresAt)
}
func (h itemHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].pos, h[j].pos = i, j
}
func (h *itemHeap) Push(x any) {
	q := x.(*queued)
	q.pos = len(*h)
	*h = append(*h, q)
}
func (h *itemHeap) Pop() any {
	old := *h
	q := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return q
}

func (q *expiryQueue) wakeC() <-chan struct{} {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.wakeLocked()
}

func (q *expiryQueue) wakeLocked() chan struct{} {
	if q.wake == nil {
		q.wake = make(chan struct{}, 1)
	}
	return q.wake
}

// rebuild fills the queue from read, which returns the active leases and
// the applied index of one consistent view of the file, and activates it.
// Events committed while read runs are collected first and applied after
// the view; those the view already holds are recognised by their index.
// read runs without the mutex: it takes the file's lock, which a restore
// holds while it calls invalidate.
func (q *expiryQueue) rebuild(read func() ([]storedLease, uint64, error)) error {
	q.mu.Lock()
	q.clearLocked()
	q.active, q.pending = true, []queueChange{}
	q.mu.Unlock()

	leases, applied, err := read()

	q.mu.Lock()
	defer q.mu.Unlock()
	pending := q.pending
	q.pending = nil
	if err != nil {
		q.clearLocked()
		return err
	}
	for _, l := range leases {
		q.setLocked(itemOf(l))
	}
	q.floor = applied
	q.observeLocked(pending)
	q.signalLocked()
	return nil
}

// deactivate empties the queue when this node stops leading.
func (q *expiryQueue) deactivate() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.clearLocked()
}

// invalidate marks an active queue for rebuilding.
func (q *expiryQueue) invalidate() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.active {
		q.stale = true
		q.signalLocked()
	}
}

func (q *expiryQueue) needsRebuild() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.stale
}

func (q *expiryQueue) clearLocked() {
	q.active, q.stale, q.floor, q.pending = false, false, 0, nil
	q.items = nil
	q.byJob = map[string]*queued{}
}

// observe applies committed lease events, in commit order. An active
// lease in an event was just acquired or renewed by its owner (promotions
// and graces make no event), so the owner's expiry is its ExpiresAt.
func (q *expiryQueue) observe(evs []engine.LeaseEvent) {
	changes := make([]queueChange, len(evs))
	for i, ev := range evs {
		it := itemOf(storedLease{Lease: ev.Lease})
		it.index = ev.Index
		changes[i] = queueChange{item: it, remove: ev.Lease.State != engine.LeaseActive}
	}
	q.observeChanges(changes)
}

// observeItems applies committed changes of active leases that are no
// lease event (a grace), in commit order.
func (q *expiryQueue) observeItems(items []expiryItem) {
	changes := make([]queueChange, len(items))
	for i, it := range items {
		changes[i] = queueChange{item: it}
	}
	q.observeChanges(changes)
}

func (q *expiryQueue) observeChanges(changes []queueChange) {
	q.mu.Lock()
	defer q.mu.Unlock()
	switch {
	case !q.active:
	case q.pending != nil:
		q.pending = append(q.pending, changes...)
	default:
		q.observeLocked(changes)
	}
}

func (q *expiryQueue) observeLocked(changes []queueChange) {
	for _, ch := range changes {
		if ch.item.index <= q.floor {
			continue
		}
		if cur, ok := q.byJob[ch.item.job]; ok && cur.index > ch.item.index {
			continue
		}
		if ch.remove {
			q.removeLocked(ch.item.job)
		} else {
			q.setLocked(ch.item)
		}
	}
}

// resync replaces job's item with what the file says as of index applied:
// l is the job's lease then (nil if none). Newer information is kept.
func (q *expiryQueue) resync(job string, l *storedLease, applied uint64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.active || q.pending != nil {
		return
	}
	if cur, ok := q.byJob[job]; ok && cur.index > applied {
		return
	}
	if l != nil && l.State == engine.LeaseActive {
		q.setLocked(itemOf(*l))
	} else {
		q.removeLocked(job)
	}
}

func (q *expiryQueue) setLocked(it expiryItem) {
	if cur, ok := q.byJob[it.job]; ok {
		earlier := it.expiresAt.Before(cur.expiresAt)
		cur.expiryItem = it
		heap.Fix(&q.items, cur.pos)
		if earlier && cur.pos == 0 {
			q.signalLocked()
		}
		return
	}
	n := &queued{expiryItem: it}
	heap.Push(&q.items, n)
	q.byJob[it.job] = n
	if n.pos == 0 {
		q.signalLocked()
	}
}

func (q *expiryQueue) removeLocked(job string) {
	if cur, ok := q.byJob[job]; ok {
		heap.Remove(&q.items, cur.pos)
		delete(q.byJob, job)
	}
}

func (q *expiryQueue) signalLocked() {
	select {
	case q.wakeLocked() <- struct{}{}:
	default:
	}
}

// due returns copies of the items whose expiry is at or before now,
// earliest first. It walks only the part of the heap that is due.
func (q *expiryQueue) due(now time.Time) []expiryItem {
	q.mu.Lock()
	defer q.mu.Unlock()
	var out []expiryItem
	stack := []int{0}
	for len(stack) > 0 {
		i := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if i >= len(q.items) || q.items[i].expiresAt.After(now) {
			continue
		}
		out = append(out, q.items[i].expiryItem)
		stack = append(stack, 2*i+1, 2*i+2)
	}
	slices.SortFunc(out, func(a, b expiryItem) int { return a.expiresAt.Compare(b.expiresAt) })
	return out
}

// next returns the earliest expiry, if any.
func (q *expiryQueue) next() (time.Time, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items) == 0 {
		return time.Time{}, false
	}
	return q.items[0].expiresAt, true
}

func (q *expiryQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items)
}
