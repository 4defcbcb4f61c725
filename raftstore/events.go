package raftstore

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"sync"

	bolt "go.etcd.io/bbolt"

	"github.com/coordinatord/coordinatord/engine"
)

// The lease event history and its watchers.
//
// Every lease change is stored in bucketLeaseEvents in the same transaction
// as the change, under its entry's Raft index and its position in the
// entry, and handed to live watchers once committed. The history is bounded
// (Config.LeaseEventRetention): the oldest whole entries' events are dropped
// in the transaction that goes past the bound, and keyLeaseEventsCompacted
// remembers up to which index that happened. Which events are kept after an
// entry depends only on the log and the retention, so nodes with the same
// retention keep the same history.

var (
	// bucketLeaseEvents maps eventKey(index, seq) to an engine.LeaseEvent's
	// JSON: the seq-th event of Raft entry index.
	bucketLeaseEvents = []byte("lease_events")
	// keyLeaseEventCount is how many events bucketLeaseEvents holds.
	keyLeaseEventCount = []byte("lease_event_count")
	// keyLeaseEventsCompacted is the highest index whose events were
	// dropped; a watch can start at the index after it.
	keyLeaseEventsCompacted = []byte("lease_events_compacted")
)

const (
	// DefaultLeaseEventRetention is Config.LeaseEventRetention's default:
	// about 30 MB of history, minutes to hours of it at typical renew rates.
	DefaultLeaseEventRetention = 100000
	// watchBuffer is how many committed events a watcher may have pending
	// before it is ended with ErrWatchLagged.
	watchBuffer = 1024
	// eventPageSize is how many events a watch replays per read
	// transaction; short transactions keep snapshots and restores unblocked.
	eventPageSize = 256
)

func eventKey(index uint64, seq uint32) []byte {
	k := make([]byte, 12)
	binary.BigEndian.PutUint64(k, index)
	binary.BigEndian.PutUint32(k[8:], seq)
	return k
}

func eventKeyIndex(k []byte) uint64 { return binary.BigEndian.Uint64(k) }

// appendLeaseEvents stores one entry's events, in order. Call it at most
// once per entry: the positions start at 0.
func appendLeaseEvents(tx *bolt.Tx, index uint64, evs []engine.LeaseEvent) error {
	b := tx.Bucket(bucketLeaseEvents)
	for i, ev := range evs {
		raw, err := json.Marshal(ev)
		if err != nil {
			return err
		}
		if err := b.Put(eventKey(index, uint32(i)), raw); err != nil {
			return err
		}
	}
	return nil
}

// compactLeaseEvents drops the oldest entries' events until at most
// retention remain, always whole entries, and returns the new count.
func compactLeaseEvents(tx *bolt.Tx, count, retention uint64) (uint64, error) {
	if count <= retention {
		return count, nil
	}
	b := tx.Bucket(bucketLeaseEvents)
	var (
		drop [][]byte
		last uint64
	)
	c := b.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		idx := eventKeyIndex(k)
		if count-uint64(len(drop)) <= retention && idx != last {
			break
		}
		drop = append(drop, append([]byte(nil), k...))
		last = idx
	}
	for _, k := range drop {
		if err := b.Delete(k); err != nil {
			return 0, err
		}
	}
	if err := putUint64(tx.Bucket(bucketMeta), keyLeaseEventsCompacted, last); err != nil {
		return 0, err
	}
	return count - uint64(len(drop)), nil
}

// readEventPage returns the events from index from on, about max of them
// but always whole entries, and whether more follow.
func readEventPage(tx *bolt.Tx, from uint64, max int) (evs []engine.LeaseEvent, more bool, err error) {
	c := tx.Bucket(bucketLeaseEvents).Cursor()
	for k, v := c.Seek(eventKey(from, 0)); k != nil; k, v = c.Next() {
		if len(evs) >= max && eventKeyIndex(k) != evs[len(evs)-1].Index {
			return evs, true, nil
		}
		var ev engine.LeaseEvent
		if err := json.Unmarshal(v, &ev); err != nil {
			return nil, false, fmt.Errorf("decode lease event %d.%d: %w", eventKeyIndex(k), binary.BigEndian.Uint32(k[8:]), err)
		}
		evs = append(evs, ev)
	}
	return evs, false, nil
}

// eventHub hands committed events to live watchers. publish runs on the
// state machine goroutine and never blocks: a watcher whose buffer is full
// is dropped with ErrWatchLagged.
type eventHub struct {
	mu   sync.Mutex
	subs map[*subscriber]struct{}
	// closed is set by close; later subscribers are born ended.
	closed bool
}

// subscriber is one watcher's live feed.
type subscriber struct {
	live chan engine.LeaseEvent
	// gone is closed when the hub drops the subscriber; err says why and
	// is written before.
	gone chan struct{}
	err  error
}

func (h *eventHub) subscribe() *subscriber {
	s := &subscriber{live: make(chan engine.LeaseEvent, watchBuffer), gone: make(chan struct{})}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		s.err = ErrClosed
		close(s.gone)
		return s
	}
	if h.subs == nil {
		h.subs = map[*subscriber]struct{}{}
	}
	h.subs[s] = struct{}{}
	return s
}

func (h *eventHub) unsubscribe(s *subscriber) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.subs, s)
}

func (h *eventHub) publish(evs []engine.LeaseEvent) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		for _, ev := range evs {
			select {
			case s.live <- ev:
				continue
			default:
			}
			h.dropLocked(s, fmt.Errorf("%w: more than %d events pending", ErrWatchLagged, watchBuffer))
			break
		}
	}
}

// dropAll ends every watcher with err.
func (h *eventHub) dropAll(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		h.dropLocked(s, err)
	}
}

// close ends every watcher with ErrClosed, now and on later subscribes.
func (h *eventHub) close() {
	h.dropAll(ErrClosed)
	h.mu.Lock()
	h.closed = true
	h.mu.Unlock()
}

func (h *eventHub) dropLocked(s *subscriber, err error) {
	delete(h.subs, s)
	s.err = err
	close(s.gone)
}

// LeaseWatch is a stream of committed lease events; see Store.WatchLeases.
type LeaseWatch struct {
	events chan engine.LeaseEvent
	done   chan struct{}
	err    error // written before done is closed
}

// Events delivers the events in commit order. It is closed when the watch
// ends; Err then says why.
func (w *LeaseWatch) Events() <-chan engine.LeaseEvent { return w.events }

// Err is nil while the watch runs, and afterwards why it ended: the
// context's error, ErrWatchLagged (the consumer fell behind, or a snapshot
// replaced this node's state; resume from the last index received), a
// *CompactedError (the history moved past the watch while it replayed),
// ErrClosed, or a storage error.
func (w *LeaseWatch) Err() error {
	select {
	case <-w.done:
		return w.err
	default:
		return nil
	}
}

// WatchLeases streams lease events, in commit order and without gaps or
// repeats: first the retained events with Index ≥ fromIndex, read from this
// node's file, then live ones as this node commits them. fromIndex 0 means
// "from now on": only entries applied after the call. Events of one entry
// share its index and always come together, in their order, so a consumer
// that resumes from an index (after ErrWatchLagged, say) gets that entry's
// events from the first.
//
// If events at or after fromIndex were already dropped by retention it
// fails with a *CompactedError (ErrCompacted) naming the oldest index it
// could start from. A watch runs on any node (a follower's stream trails the
// leader's) until ctx ends, its consumer falls watchBuffer events behind, or
// the store closes; see LeaseWatch.Err.
func (s *Store) WatchLeases(ctx context.Context, fromIndex uint64) (*LeaseWatch, error) {
	if s.closed.Load() {
		return nil, s.errorf("watch leases: %w", ErrClosed)
	}
	if fromIndex == 0 {
		fromIndex = s.fsm.appliedIndex() + 1
	}
	var compacted uint64
	err := s.fsm.view(func(tx *bolt.Tx) error {
		compacted = getUint64(tx.Bucket(bucketMeta), keyLeaseEventsCompacted)
		return nil
	})
	if err != nil {
		return nil, s.errorf("watch leases: %w", err)
	}
	if fromIndex <= compacted {
		return nil, s.errorf("watch leases from %d: %w", fromIndex, &CompactedError{Oldest: compacted + 1})
	}
	w := &LeaseWatch{events: make(chan engine.LeaseEvent), done: make(chan struct{})}
	go s.runWatch(ctx, w, fromIndex)
	return w, nil
}

// runWatch replays the history page by page until it has caught up, then
// subscribes to live events and reads once more, which closes the window
// between the last page and the subscription. Live events at indexes
// already replayed are skipped; the rest are new, since entries commit (and
// publish) in index order.
func (s *Store) runWatch(ctx context.Context, w *LeaseWatch, next uint64) {
	hub := &s.fsm.lease.hub
	var sub *subscriber
	end := func(err error) {
		if sub != nil {
			hub.unsubscribe(sub)
		}
		w.err = err
		close(w.done)
		close(w.events)
	}
	var gone <-chan struct{} // nil, so never ready, until subscribed
	send := func(ev engine.LeaseEvent) error {
		select {
		case w.events <- ev:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-gone:
			return sub.err
		}
	}
	for {
		var (
			page      []engine.LeaseEvent
			more      bool
			compacted uint64
		)
		err := s.fsm.view(func(tx *bolt.Tx) error {
			compacted = getUint64(tx.Bucket(bucketMeta), keyLeaseEventsCompacted)
			var err error
			page, more, err = readEventPage(tx, next, eventPageSize)
			return err
		})
		if err != nil {
			end(err)
			return
		}
		if compacted >= next {
			end(&CompactedError{Oldest: compacted + 1})
			return
		}
		for _, ev := range page {
			if err := send(ev); err != nil {
				end(err)
				return
			}
		}
		if len(page) > 0 {
			next = page[len(page)-1].Index + 1
		}
		if more {
			continue
		}
		if sub != nil {
			break
		}
		sub = hub.subscribe()
		gone = sub.gone
	}
	for {
		select {
		case ev := <-sub.live:
			if ev.Index < next {
				continue
			}
			if err := send(ev); err != nil {
				end(err)
				return
			}
		case <-gone:
			end(sub.err)
			return
		case <-ctx.Done():
			end(ctx.Err())
			return
		}
	}
}
