package engine

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
)

// DefaultDecisionLogSize is how many recent decisions a node keeps in memory.
const DefaultDecisionLogSize = 10000

// logQueueSize bounds the decisions waiting to be written to the log. A
// decision that finds the queue full is counted as dropped, never silently
// lost and never allowed to slow down the request that made it.
const logQueueSize = 4096

// DecisionLog keeps the most recent decisions in a ring buffer, and writes
// every decision to the structured log from a background goroutine.
type DecisionLog struct {
	mu   sync.Mutex // guards ring, next, seq
	ring []Decision
	next int
	seq  uint64

	queue   chan Decision
	dropped atomic.Uint64
	evicted atomic.Uint64

	startOnce sync.Once
	stopOnce  sync.Once
	stop      chan struct{}
	done      chan struct{}
}

// NewDecisionLog returns a log keeping the size most recent decisions.
func NewDecisionLog(size int) *DecisionLog {
	if size <= 0 {
		size = DefaultDecisionLogSize
	}
	return &DecisionLog{
		ring:  make([]Decision, 0, size),
		queue: make(chan Decision, logQueueSize),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
}

// newBootID returns a random prefix that makes decision ids unique across
// restarts; the sequence number alone restarts at 1.
func newBootID() string {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		// crypto/rand does not fail on supported platforms; if it ever does,
		// ids stay unique within this process through the sequence number.
		return "00000000"
	}
	return hex.EncodeToString(b[:])
}

// append assigns the decision its sequence number and id and keeps it.
func (l *DecisionLog) append(d *Decision, boot string) {
	l.mu.Lock()
	l.seq++
	d.Seq = l.seq
	d.ID = boot + "-" + strconv.FormatUint(d.Seq, 10)
	if len(l.ring) < cap(l.ring) {
		l.ring = append(l.ring, *d)
	} else {
		l.ring[l.next] = *d
		l.next = (l.next + 1) % len(l.ring)
		l.evicted.Add(1)
	}
	l.mu.Unlock()
}

// write queues d for the structured log without blocking.
func (l *DecisionLog) write(logger *slog.Logger, d *Decision) {
	l.startOnce.Do(func() { go l.run(logger) })
	select {
	case l.queue <- *d:
	default:
		l.dropped.Add(1)
	}
}

func (l *DecisionLog) run(logger *slog.Logger) {
	defer close(l.done)
	for {
		select {
		case d := <-l.queue:
			logDecision(logger, &d)
		case <-l.stop:
			for {
				select {
				case d := <-l.queue:
					logDecision(logger, &d)
				default:
					return
				}
			}
		}
	}
}

func logDecision(logger *slog.Logger, d *Decision) {
	level := slog.LevelInfo
	if d.Result != ResultAllow {
		level = slog.LevelWarn
	}
	logger.LogAttrs(context.Background(), level, "admission decision",
		slog.String("decision_id", d.ID),
		slog.String("result", d.Result),
		slog.String("action", d.Action),
		slog.String("source", d.Source.SPIFFEID),
		slog.String("target", d.Target.SPIFFEID),
		slog.String("reason_code", d.ReasonCode),
		slog.Any("reasons", d.Reasons),
		slog.Uint64("policy_revision", d.PolicyRevision),
		slog.Duration("latency", d.Latency),
		slog.Bool("cached", d.Cached),
	)
}

// Close writes out the queued decisions and stops the writer.
func (l *DecisionLog) Close() {
	l.stopOnce.Do(func() {
		started := true
		l.startOnce.Do(func() { started = false })
		close(l.stop)
		if started {
			<-l.done
		}
	})
}

// Dropped counts decisions that were not written to the structured log
// because the queue was full.
func (l *DecisionLog) Dropped() uint64 { return l.dropped.Load() }

// Evicted counts decisions pushed out of the in-memory buffer by newer ones.
func (l *DecisionLog) Evicted() uint64 { return l.evicted.Load() }

// DecisionFilter selects decisions from the log. Zero values match all.
type DecisionFilter struct {
	// After returns only decisions with a greater sequence number.
	After  uint64
	Result string
	Action string
	// Limit caps how many are returned (the most recent ones); 0 means all.
	Limit int
}

// List returns the kept decisions that match f, oldest first.
func (l *DecisionLog) List(f DecisionFilter) []Decision {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []Decision
	n := len(l.ring)
	for i := 0; i < n; i++ {
		d := &l.ring[(l.next+i)%n]
		if d.Seq <= f.After || (f.Result != "" && d.Result != f.Result) || (f.Action != "" && d.Action != f.Action) {
			continue
		}
		out = append(out, *d)
	}
	if f.Limit > 0 && len(out) > f.Limit {
		out = out[len(out)-f.Limit:]
	}
	return out
}
