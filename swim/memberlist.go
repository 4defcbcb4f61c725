package swim

import (
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// Memberlist is this process's member of the gossip pool. Create it with
// New; it gossips until Shutdown. All methods are safe for concurrent use.
type Memberlist struct {
	cfg   Config // a private copy
	name  string
	meta  []byte // encoded cfg.Meta
	log   *slog.Logger
	clock func() time.Time
	ml    *memberlist.Memberlist
	// table is memberlist's node table; nil until New has located it
	// (memberlist calls our delegates while it starts).
	table atomic.Pointer[nodeTable]

	transport transportCounters
	// lossy is the chaos transport of Config.WrapTransport, when it is
	// one: its drops are exported so that a run with injected loss shows
	// the loss was there.
	lossy    lossStats
	counters counters
	metrics  *metrics

	// mu guards the view and the sends on the channels. Lock order:
	// memberlist's table lock, then mu; nothing called with mu held calls
	// memberlist.
	mu      sync.Mutex
	view    map[string]viewEntry
	counts  map[State]int // members in the view by state
	gen     uint64        // readings of the whole table, to spot forgotten members
	scratch []tableEntry  // reused between readings
	seq     uint64
	closed  bool // the channels are closed
	events  chan Event
	rtts    chan RTTSample

	life     sync.Mutex // serialises Leave and Shutdown
	shutdown atomic.Bool
	stop     chan struct{}
	wg       sync.WaitGroup
}

// New starts a member: it listens on BindAddr:BindPort, announces itself,
// starts joining cfg.Join in the background, and emits its own alive
// event. It fails if cfg is invalid or the port cannot be bound.
func New(cfg Config) (*Memberlist, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.Join = slices.Clone(cfg.Join)
	cfg.SecretKey = slices.Clone(cfg.SecretKey)
	meta, err := cfg.Meta.Encode()
	if err != nil {
		return nil, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	clock := cfg.Clock
	if clock == nil {
		clock = time.Now
	}
	m := &Memberlist{
		cfg:     cfg,
		name:    cfg.name(),
		meta:    meta,
		log:     logger.With("component", "swim", "node", cfg.name()),
		clock:   clock,
		metrics: newMetrics(),
		view:    map[string]viewEntry{},
		counts:  map[State]int{},
		events:  make(chan Event, cfg.EventBuffer),
		rtts:    make(chan RTTSample, cfg.RTTBuffer),
		stop:    make(chan struct{}),
	}
	std := newStdLogger(logger.With("component", "memberlist", "node", m.name))

	nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{
		BindAddrs: []string{cfg.BindAddr},
		BindPort:  cfg.BindPort,
		Logger:    std,
	})
	if err != nil {
		return nil, fmt.Errorf("swim: listen on %s: %w", net.JoinHostPort(cfg.BindAddr, strconv.Itoa(cfg.BindPort)), err)
	}
	mc := cfg.memberlistConfig(std)
	mc.BindPort = nt.GetAutoBindPort() // the default port for Join addresses without one
	if mc.AdvertiseAddr != "" && mc.AdvertisePort == 0 {
		mc.AdvertisePort = mc.BindPort
	}
	var tr memberlist.NodeAwareTransport = newCountingTransport(nt, &m.transport)
	if cfg.WrapTransport != nil {
		tr = cfg.WrapTransport(tr)
		if ls, ok := tr.(lossStats); ok {
			m.lossy = ls
		}
	}
	mc.Transport = tr
	mc.Delegate = metaDelegate{m}
	mc.Events = eventDelegate{m}
	mc.Alive = aliveDelegate{}
	mc.Conflict = conflictDelegate{m}
	mc.Ping = pingDelegate{m}

	ml, err := memberlist.Create(mc)
	if err != nil {
		_ = tr.Shutdown()
		return nil, fmt.Errorf("swim: start member %s: %w", m.name, err)
	}
	m.ml = ml
	table, err := openNodeTable(ml)
	if err != nil {
		_ = ml.Shutdown()
		return nil, err
	}
	m.table.Store(table)
	m.refresh()

	m.wg.Add(1)
	go m.pollLoop()
	if len(cfg.Join) > 0 {
		m.wg.Add(1)
		go m.joinLoop(cfg.Join)
	}
	m.log.Info("gossip member started", "addr", m.LocalMember().Addr,
		"datacenter", cfg.Meta.Datacenter, "role", cfg.Meta.Role)
	return m, nil
}

// Name returns this member's name.
func (m *Memberlist) Name() string { return m.name }

// LocalMember returns this member as the pool sees it (its advertised
// address and its metadata).
func (m *Memberlist) LocalMember() Member {
	n := m.ml.LocalNode() // memberlist returns a pointer into its table
	t := m.table.Load()
	t.mu.RLock()
	mem := memberOf(n, m.cfg.Meta, StateAlive)
	t.mu.RUnlock()
	m.mu.Lock()
	if v, ok := m.view[m.name]; ok {
		mem.State = v.member.State
	}
	m.mu.Unlock()
	return mem
}

// Join contacts the given members (host:port, or host for our own port)
// and synchronises state with each. It returns how many answered; the
// error is non-nil only when none did. It waits for the network, up to
// Timing.TCPTimeout per address.
func (m *Memberlist) Join(addrs []string) (int, error) {
	if m.shutdown.Load() {
		return 0, ErrShutdown
	}
	n, err := m.ml.Join(addrs)
	if err != nil {
		// memberlist returns a go-multierror, whose text spans lines.
		if me, ok := err.(interface{ WrappedErrors() []error }); ok {
			err = joinError(me.WrappedErrors())
		}
		return n, fmt.Errorf("swim: join %s: %w", strings.Join(addrs, ","), err)
	}
	return n, nil
}

// joinError is memberlist's per-address join errors on one line.
type joinError []error

func (e joinError) Error() string {
	msgs := make([]string, len(e))
	for i, err := range e {
		msgs[i] = err.Error()
	}
	return strings.Join(msgs, "; ")
}

func (e joinError) Unwrap() []error { return e }

// joinLoop joins addrs, retrying every RetryJoinInterval until one
// answers or the member shuts down.
func (m *Memberlist) joinLoop(addrs []string) {
	defer m.wg.Done()
	for attempt := 1; ; attempt++ {
		select {
		case <-m.stop:
			return
		default:
		}
		n, err := m.Join(addrs)
		if err == nil {
			m.log.Info("joined the gossip pool", "reached", n, "of", len(addrs), "attempt", attempt)
			return
		}
		m.log.Warn("cannot join the gossip pool yet; retrying", "join", addrs, "attempt", attempt,
			"retry_in", m.cfg.RetryJoinInterval, "error", err)
		select {
		case <-m.stop:
			return
		case <-time.After(m.cfg.RetryJoinInterval):
		}
	}
}

// Leave announces that this member leaves the pool and waits up to timeout
// for the announcement to go out. Others then see it left, not dead. The
// member keeps gossiping until Shutdown, which should follow.
func (m *Memberlist) Leave(timeout time.Duration) error {
	m.life.Lock()
	defer m.life.Unlock()
	if m.shutdown.Load() {
		return ErrShutdown
	}
	if err := m.ml.Leave(timeout); err != nil {
		return fmt.Errorf("swim: leave: %w", err)
	}
	return nil
}

// Shutdown stops gossiping at once, without announcing it (call Leave
// first for a graceful exit; otherwise the others see this member suspect
// and then dead), waits for the background work (an ongoing background
// join attempt for up to Timing.TCPTimeout per address), and closes the
// Events and RTTs channels. Safe to call more than once.
func (m *Memberlist) Shutdown() error {
	m.life.Lock()
	defer m.life.Unlock()
	if m.shutdown.Swap(true) {
		return nil
	}
	close(m.stop)
	err := m.ml.Shutdown()
	m.wg.Wait()
	m.mu.Lock()
	m.closed = true
	close(m.events)
	close(m.rtts)
	m.mu.Unlock()
	if err != nil {
		return fmt.Errorf("swim: shutdown: %w", err)
	}
	return nil
}

// Events returns the channel of member state changes (see Membership).
func (m *Memberlist) Events() <-chan Event { return m.events }

// RTTs returns the channel of RTT samples (see Membership).
func (m *Memberlist) RTTs() <-chan RTTSample { return m.rtts }

// LocalHealth returns Lifeguard's local health score (see Membership).
func (m *Memberlist) LocalHealth() int { return m.ml.GetHealthScore() }

// pollLoop reads the node table every PollInterval, to catch suspicions.
func (m *Memberlist) pollLoop() {
	defer m.wg.Done()
	t := time.NewTicker(m.cfg.PollInterval)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
			m.refresh()
		}
	}
}

// recordRTT emits a sample for a completed direct probe of node.
func (m *Memberlist) recordRTT(node *memberlist.Node, rtt time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	dc := ""
	if v, ok := m.view[node.Name]; ok {
		dc = v.member.Meta.Datacenter
	} else if md, err := DecodeMeta(node.Meta); err == nil {
		dc = md.Datacenter
	}
	if dc == "" || m.closed {
		return
	}
	select {
	case m.rtts <- RTTSample{At: m.clock(), Node: node.Name, Datacenter: dc, RTT: rtt}:
		m.counters.rttSamples.Add(1)
	default:
		m.counters.rttSamplesDropped.Add(1)
	}
}
