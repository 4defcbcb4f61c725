package swim

import (
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// LossyTransport is a test and chaos tool, not for production: a
// memberlist transport that drops a fraction of the UDP packets it is
// asked to send, and may delay the others. Plug it in with
// Config.WrapTransport. Only packets (probes, acks, gossip) are affected;
// TCP streams (joins, push/pull, TCP fallback probes) pass unchanged, as
// they would on a lossy network where TCP retransmits.
//
// Each packet is dropped independently with probability Loss, so with the
// same loss on every member of a pool, that share of all gossip packets is
// lost. Loss can be changed while running (SetLoss), e.g. to start and end
// a lossy period.
type LossyTransport struct {
	inner memberlist.NodeAwareTransport
	loss  atomic.Uint64 // math.Float64bits of the loss fraction
	delay time.Duration
	jit   time.Duration

	mu  sync.Mutex // guards rnd
	rnd *rand.Rand

	sent, dropped atomic.Uint64
	closed        atomic.Bool
}

var _ memberlist.NodeAwareTransport = (*LossyTransport)(nil)

// LossyConfig configures a LossyTransport.
type LossyConfig struct {
	// Loss is the fraction of outgoing packets dropped, 0 to 1.
	Loss float64
	// Delay holds every packet that is not dropped this long before
	// sending it; Jitter adds up to that much more, uniformly (so packets
	// may be reordered). Zero sends at once.
	Delay, Jitter time.Duration
	// Seed makes the drops reproducible; 0 picks a random seed.
	Seed uint64
}

// NewLossyTransport wraps inner. The LossyTransport owns inner from then
// on: its Shutdown shuts inner down.
func NewLossyTransport(inner memberlist.NodeAwareTransport, cfg LossyConfig) (*LossyTransport, error) {
	if cfg.Delay < 0 || cfg.Jitter < 0 {
		return nil, fmt.Errorf("swim: lossy transport: negative Delay %s or Jitter %s", cfg.Delay, cfg.Jitter)
	}
	seed := cfg.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	t := &LossyTransport{
		inner: inner,
		delay: cfg.Delay,
		jit:   cfg.Jitter,
		rnd:   rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
	}
	if err := t.SetLoss(cfg.Loss); err != nil {
		return nil, err
	}
	return t, nil
}

// SetLoss changes the fraction of packets dropped from now on.
func (t *LossyTransport) SetLoss(loss float64) error {
	if !(loss >= 0 && loss <= 1) {
		return fmt.Errorf("swim: lossy transport: Loss %v is not between 0 and 1", loss)
	}
	t.loss.Store(math.Float64bits(loss))
	return nil
}

// Loss returns the current loss fraction.
func (t *LossyTransport) Loss() float64 { return math.Float64frombits(t.loss.Load()) }

// Stats returns how many packets were passed on (sent, delayed ones
// included) and how many were dropped.
func (t *LossyTransport) Stats() (sent, dropped uint64) { return t.sent.Load(), t.dropped.Load() }

// decide reports whether to drop the next packet, and how long to delay
// it otherwise.
func (t *LossyTransport) decide() (drop bool, delay time.Duration) {
	loss := t.Loss()
	t.mu.Lock()
	defer t.mu.Unlock()
	if loss > 0 && t.rnd.Float64() < loss {
		return true, 0
	}
	delay = t.delay
	if t.jit > 0 {
		delay += time.Duration(t.rnd.Int64N(int64(t.jit) + 1))
	}
	return false, delay
}

func (t *LossyTransport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	return t.inner.FinalAdvertiseAddr(ip, port)
}

func (t *LossyTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	return t.WriteToAddress(b, memberlist.Address{Addr: addr})
}

// WriteToAddress drops, delays or sends the packet. A dropped or delayed
// packet is reported as sent now, as a packet lost or held in the network
// would be.
func (t *LossyTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	drop, delay := t.decide()
	if drop {
		t.dropped.Add(1)
		return time.Now(), nil
	}
	t.sent.Add(1)
	if delay <= 0 {
		return t.inner.WriteToAddress(b, a)
	}
	buf := append([]byte(nil), b...)
	time.AfterFunc(delay, func() {
		if !t.closed.Load() {
			_, _ = t.inner.WriteToAddress(buf, a) // lost if the socket closed meanwhile
		}
	})
	return time.Now(), nil
}

func (t *LossyTransport) PacketCh() <-chan *memberlist.Packet { return t.inner.PacketCh() }

func (t *LossyTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return t.inner.DialAddressTimeout(memberlist.Address{Addr: addr}, timeout)
}

func (t *LossyTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return t.inner.DialAddressTimeout(a, timeout)
}

func (t *LossyTransport) StreamCh() <-chan net.Conn { return t.inner.StreamCh() }

// Shutdown drops the delayed packets not yet sent and shuts inner down.
func (t *LossyTransport) Shutdown() error {
	t.closed.Store(true)
	return t.inner.Shutdown()
}
