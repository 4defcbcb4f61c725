package swim

import (
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/memberlist"
)

// DefaultPort is the default gossip port (UDP and TCP), memberlist's.
const DefaultPort = 7946

// Config configures a member. Start from DefaultLANConfig or
// DefaultWANConfig and set NodeName (or Meta.NodeID), Meta and SecretKey.
// A Config is a value: New copies what it keeps (slices included) and
// never modifies the caller's.
type Config struct {
	// NodeName is the member's name in the pool, unique across it. Empty
	// means Meta.NodeID.
	NodeName string

	// BindAddr is the IP address gossip listens on, UDP and TCP; "0.0.0.0"
	// listens on every IPv4 interface.
	BindAddr string
	// BindPort is the gossip port; 0 picks a free one (tests).
	BindPort int

	// AdvertiseAddr is the IP address other members use to reach this one.
	// Empty means BindAddr, or for "0.0.0.0" a private address of this
	// host that memberlist picks (set it explicitly behind NAT, or when
	// the host has several).
	AdvertiseAddr string
	// AdvertisePort is the port others use; 0 means the bound port.
	AdvertisePort int

	// Meta is the metadata gossiped about this member.
	Meta Meta

	// SecretKey encrypts and authenticates all gossip (AES-GCM; 16, 24 or
	// 32 bytes). Required: a pool without encryption would admit anyone
	// who can reach the port. Members with another key cannot join.
	SecretKey []byte

	// Join lists members to join on start, as host:port or host (then
	// BindPort). New does not wait: it tries them in the background, at
	// once and then every RetryJoinInterval until one answers. Call Join to
	// join synchronously instead.
	Join []string
	// RetryJoinInterval is the pause between failed attempts to join Join.
	RetryJoinInterval time.Duration

	// Logger receives this package's and memberlist's logs (memberlist's
	// bracketed levels mapped to slog levels). Nil means slog.Default().
	Logger *slog.Logger

	// Clock stamps events and RTT samples. Nil means time.Now. It is
	// called with memberlist's node table locked, so it must be quick.
	Clock func() time.Time

	// Timing holds the SWIM protocol's timing, memberlist's LAN or WAN
	// profile by default.
	Timing Timing

	// PollInterval is how often the node table is read to catch suspicions
	// (see the package documentation). It must not exceed
	// Timing.ProbeInterval.
	PollInterval time.Duration

	// DeadMemberRetention is how long a dead member stays in this
	// member's view (Members, as dead) after memberlist forgets it
	// (Timing.GossipToTheDeadTime after its death): a datacenter whose
	// hosts died must go on counting them dead, on the leader that saw them
	// die and on a new one seeding from its list, for longer than half a
	// minute. A member that left gracefully is forgotten with memberlist.
	// 0 forgets dead members with memberlist.
	DeadMemberRetention time.Duration

	// EventBuffer and RTTBuffer are the capacities of the Events and RTTs
	// channels; when one is full, new items are dropped and counted.
	EventBuffer int
	RTTBuffer   int

	// WrapTransport, if set, wraps the network transport (UDP and TCP on
	// BindAddr:BindPort, already wrapped to count bytes) before memberlist
	// uses it. It is a test and chaos hook, e.g. NewLossyTransport; leave
	// it nil in production.
	WrapTransport func(memberlist.NodeAwareTransport) memberlist.NodeAwareTransport
}

// Timing is the SWIM protocol's timing and fan-out: what an operator tunes
// to trade detection speed and convergence against bandwidth. Each field
// sets the memberlist.Config field of the same name.
type Timing struct {
	// ProbeInterval: each member probes one peer (round robin) this often.
	// Lower detects failures faster at the cost of bandwidth. Lifeguard
	// stretches it up to AwarenessMaxMultiplier times while the local
	// health score is bad.
	ProbeInterval time.Duration
	// ProbeTimeout: how long a direct probe waits for its ack before
	// indirect probes start; about the 99th percentile of RTT. At most
	// ProbeInterval.
	ProbeTimeout time.Duration
	// IndirectChecks: how many peers are asked to probe a member whose
	// direct probe failed.
	IndirectChecks int
	// DisableTCPPings turns off the TCP probe sent alongside the indirect
	// ones (it tells a UDP-only network problem from a dead member).
	DisableTCPPings bool
	// SuspicionMult: a suspect member is declared dead after
	// SuspicionMult * max(1, log10(N)) * ProbeInterval when enough peers
	// confirm the suspicion (N members).
	SuspicionMult int
	// SuspicionMaxTimeoutMult: without confirmations the suspicion lasts up
	// to this many times the above, giving a member with network trouble
	// more time to refute.
	SuspicionMaxTimeoutMult int
	// RetransmitMult: each gossiped message is retransmitted
	// RetransmitMult * log(N+1) times.
	RetransmitMult int
	// GossipInterval: how often pending messages are gossiped beyond those
	// piggybacked on probes; 0 disables that gossip.
	GossipInterval time.Duration
	// GossipNodes: how many random peers each gossip round goes to.
	GossipNodes int
	// GossipToTheDeadTime: how long a dead member keeps receiving gossip
	// (a chance to refute) and stays in the member list.
	GossipToTheDeadTime time.Duration
	// PushPullInterval: how often a full state exchange (TCP) runs with a
	// random peer (anti-entropy); 0 disables it.
	PushPullInterval time.Duration
	// TCPTimeout bounds connecting to a peer over TCP (join, push/pull,
	// TCP probes) and each stream read and write.
	TCPTimeout time.Duration
	// AwarenessMaxMultiplier: the most Lifeguard may stretch the probe
	// interval and probe timeout while the local health score is bad
	// (health scores range up to AwarenessMaxMultiplier-1).
	AwarenessMaxMultiplier int
	// DeadNodeReclaimTime: after this long a dead member's name may be
	// taken by a member at another address; 0 never.
	DeadNodeReclaimTime time.Duration
}

// DefaultLANConfig returns the defaults for members within a datacenter
// (or datacenters a few milliseconds apart): memberlist's LAN profile.
// NodeName, Meta and SecretKey are left to the caller.
func DefaultLANConfig() Config {
	base := memberlist.DefaultLANConfig()
	return Config{
		BindAddr:      "0.0.0.0",   // every IPv4 interface
		BindPort:      DefaultPort, // memberlist's (and Serf's) 7946
		AdvertisePort: 0,           // the bound port
		// Half a minute between join attempts: a restarting peer is back
		// within about that, and a wrong address does not flood the log.
		RetryJoinInterval: 30 * time.Second,
		Timing: Timing{
			ProbeInterval:           base.ProbeInterval,           // 1s: a probe a second per member
			ProbeTimeout:            base.ProbeTimeout,            // 500ms: a slow LAN round trip
			IndirectChecks:          base.IndirectChecks,          // 3 peers probe on our behalf
			DisableTCPPings:         base.DisableTcpPings,         // false: TCP probes on
			SuspicionMult:           base.SuspicionMult,           // 4: dead after ≥ 4 probe intervals of suspicion
			SuspicionMaxTimeoutMult: base.SuspicionMaxTimeoutMult, // 6: ≤ 24s unconfirmed in a small pool
			RetransmitMult:          base.RetransmitMult,          // 4 * log(N+1) retransmissions
			GossipInterval:          base.GossipInterval,          // 200ms between gossip rounds
			GossipNodes:             base.GossipNodes,             // 3 peers per round
			GossipToTheDeadTime:     base.GossipToTheDeadTime,     // 30s, same as push/pull
			PushPullInterval:        base.PushPullInterval,        // 30s full sync (scaled up past 32 members)
			TCPTimeout:              base.TCPTimeout,              // 10s
			AwarenessMaxMultiplier:  base.AwarenessMaxMultiplier,  // 8: probes back off to 8s
			DeadNodeReclaimTime:     base.DeadNodeReclaimTime,     // 0: names are never reclaimed
		},
		// A fifth of the probe interval: every suspicion lasts at least
		// SuspicionMult probe intervals, so none that ends in a death is
		// missed, and reading the table 5 times a second is negligible.
		PollInterval: base.ProbeInterval / 5, // 200ms
		// Three times the default maximum lease hold: a partition is judged
		// on the same members by every leader for as long as leases may be
		// held, and hosts replaced under new names without leaving stop
		// counting as dead within a quarter of an hour.
		DeadMemberRetention: 15 * time.Minute,
		EventBuffer:         1024, // a full restart of a 1000-member pool
		RTTBuffer:           1024, // about 17 minutes of samples at 1 probe/s
	}
}

// DefaultWANConfig returns the defaults for members spread across
// datacenters with WAN latencies between them: memberlist's WAN profile,
// the LAN one with slower probes, longer timeouts and suspicions, and a
// wider gossip fan-out.
func DefaultWANConfig() Config {
	c := DefaultLANConfig()
	base := memberlist.DefaultWANConfig()
	c.Timing.ProbeInterval = base.ProbeInterval             // 5s
	c.Timing.ProbeTimeout = base.ProbeTimeout               // 3s: a slow intercontinental round trip
	c.Timing.SuspicionMult = base.SuspicionMult             // 6: dead after ≥ 30s of suspicion
	c.Timing.GossipInterval = base.GossipInterval           // 500ms
	c.Timing.GossipNodes = base.GossipNodes                 // 4 peers per round, less often
	c.Timing.GossipToTheDeadTime = base.GossipToTheDeadTime // 60s
	c.Timing.PushPullInterval = base.PushPullInterval       // 60s
	c.Timing.TCPTimeout = base.TCPTimeout                   // 30s
	c.PollInterval = base.ProbeInterval / 5                 // 1s
	return c
}

// name is the member name New uses.
func (c Config) name() string {
	if c.NodeName != "" {
		return c.NodeName
	}
	return c.Meta.NodeID
}

// Validate reports the first invalid field by name. The error wraps
// ErrInvalidConfig (and ErrInvalidMeta or ErrInvalidKey where they apply).
func (c Config) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("swim: %w: "+format, append([]any{ErrInvalidConfig}, args...)...)
	}
	if err := c.Meta.Validate(); err != nil {
		return bad("Meta: %w", err)
	}
	name := c.name()
	switch {
	case strings.ContainsFunc(name, func(r rune) bool { return r <= ' ' || r == 0x7f }):
		return bad("NodeName %q contains whitespace or control characters", name)
	case len(name) > 128:
		return bad("NodeName is %d bytes long, the limit is 128", len(name))
	}
	if ip := net.ParseIP(c.BindAddr); ip == nil {
		return bad("BindAddr %q is not an IP address", c.BindAddr)
	} else if ip.IsUnspecified() && ip.To4() == nil && c.AdvertiseAddr == "" {
		// memberlist only picks an address to advertise for "0.0.0.0".
		return bad("BindAddr %q listens on every IPv6 interface: set AdvertiseAddr", c.BindAddr)
	}
	if c.BindPort < 0 || c.BindPort > 65535 {
		return bad("BindPort %d is out of range", c.BindPort)
	}
	if c.AdvertiseAddr != "" {
		ip := net.ParseIP(c.AdvertiseAddr)
		if ip == nil {
			return bad("AdvertiseAddr %q is not an IP address", c.AdvertiseAddr)
		}
		if ip.IsUnspecified() {
			return bad("AdvertiseAddr %q is not an address others can reach", c.AdvertiseAddr)
		}
	}
	if c.AdvertisePort < 0 || c.AdvertisePort > 65535 {
		return bad("AdvertisePort %d is out of range", c.AdvertisePort)
	}
	if len(c.SecretKey) == 0 {
		return bad("SecretKey is required (gossip is always encrypted; GenerateKey makes one)")
	}
	if err := validateKey(c.SecretKey); err != nil {
		return bad("SecretKey: %w", err)
	}
	for i, a := range c.Join {
		if err := ValidateJoinAddr(a); err != nil {
			return bad("Join[%d] %q: %v", i, a, err)
		}
	}
	if len(c.Join) > 0 && c.RetryJoinInterval <= 0 {
		return bad("RetryJoinInterval %s must be positive when Join is set", c.RetryJoinInterval)
	}
	if err := c.Timing.validate(); err != nil {
		return bad("%v", err)
	}
	switch {
	case c.PollInterval <= 0:
		return bad("PollInterval %s must be positive", c.PollInterval)
	case c.PollInterval > c.Timing.ProbeInterval:
		return bad("PollInterval %s exceeds Timing.ProbeInterval %s: short suspicions would go unseen", c.PollInterval, c.Timing.ProbeInterval)
	case c.DeadMemberRetention < 0:
		return bad("DeadMemberRetention %s must not be negative", c.DeadMemberRetention)
	case c.EventBuffer < 1:
		return bad("EventBuffer %d must be at least 1", c.EventBuffer)
	case c.RTTBuffer < 1:
		return bad("RTTBuffer %d must be at least 1", c.RTTBuffer)
	}
	return nil
}

func (t Timing) validate() error {
	switch {
	case t.ProbeInterval <= 0:
		return fmt.Errorf("Timing.ProbeInterval %s must be positive", t.ProbeInterval)
	case t.ProbeTimeout <= 0:
		return fmt.Errorf("Timing.ProbeTimeout %s must be positive", t.ProbeTimeout)
	case t.ProbeTimeout > t.ProbeInterval:
		return fmt.Errorf("Timing.ProbeTimeout %s exceeds Timing.ProbeInterval %s", t.ProbeTimeout, t.ProbeInterval)
	case t.IndirectChecks < 0:
		return fmt.Errorf("Timing.IndirectChecks %d is negative", t.IndirectChecks)
	case t.SuspicionMult < 1:
		return fmt.Errorf("Timing.SuspicionMult %d must be at least 1", t.SuspicionMult)
	case t.SuspicionMaxTimeoutMult < 1:
		return fmt.Errorf("Timing.SuspicionMaxTimeoutMult %d must be at least 1", t.SuspicionMaxTimeoutMult)
	case t.RetransmitMult < 1:
		return fmt.Errorf("Timing.RetransmitMult %d must be at least 1", t.RetransmitMult)
	case t.GossipInterval < 0:
		return fmt.Errorf("Timing.GossipInterval %s is negative", t.GossipInterval)
	case t.GossipNodes < 1:
		return fmt.Errorf("Timing.GossipNodes %d must be at least 1", t.GossipNodes)
	case t.GossipToTheDeadTime < 0:
		return fmt.Errorf("Timing.GossipToTheDeadTime %s is negative", t.GossipToTheDeadTime)
	case t.PushPullInterval < 0:
		return fmt.Errorf("Timing.PushPullInterval %s is negative", t.PushPullInterval)
	case t.TCPTimeout <= 0:
		return fmt.Errorf("Timing.TCPTimeout %s must be positive", t.TCPTimeout)
	case t.AwarenessMaxMultiplier < 1:
		return fmt.Errorf("Timing.AwarenessMaxMultiplier %d must be at least 1", t.AwarenessMaxMultiplier)
	case t.DeadNodeReclaimTime < 0:
		return fmt.Errorf("Timing.DeadNodeReclaimTime %s is negative", t.DeadNodeReclaimTime)
	}
	return nil
}

// ValidateJoinAddr checks one address to join: host:port, or a bare host
// (memberlist then uses our own port). Host names are resolved when
// joining.
func ValidateJoinAddr(a string) error {
	if a == "" {
		return fmt.Errorf("empty address")
	}
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		if strings.Contains(err.Error(), "missing port") {
			host, port = a, ""
		} else {
			return fmt.Errorf("want host:port")
		}
	}
	if host == "" {
		return fmt.Errorf("no host")
	}
	if port != "" {
		p, err := strconv.Atoi(port)
		if err != nil || p < 1 || p > 65535 {
			return fmt.Errorf("port %q is not 1-65535", port)
		}
	}
	return nil
}

// memberlistConfig builds memberlist's configuration from c (valid) on
// top of memberlist's LAN defaults, which supply what Config does not
// expose (compression on, 1400-byte packets, protocol version).
func (c Config) memberlistConfig(logger *log.Logger) *memberlist.Config {
	mc := memberlist.DefaultLANConfig()
	mc.Name = c.name()
	mc.BindAddr = c.BindAddr
	mc.BindPort = c.BindPort
	mc.AdvertiseAddr = c.AdvertiseAddr
	mc.AdvertisePort = c.AdvertisePort
	mc.SecretKey = append([]byte(nil), c.SecretKey...)
	mc.GossipVerifyIncoming = true
	mc.GossipVerifyOutgoing = true
	t := c.Timing
	mc.ProbeInterval = t.ProbeInterval
	mc.ProbeTimeout = t.ProbeTimeout
	mc.IndirectChecks = t.IndirectChecks
	mc.DisableTcpPings = t.DisableTCPPings
	mc.SuspicionMult = t.SuspicionMult
	mc.SuspicionMaxTimeoutMult = t.SuspicionMaxTimeoutMult
	mc.RetransmitMult = t.RetransmitMult
	mc.GossipInterval = t.GossipInterval
	mc.GossipNodes = t.GossipNodes
	mc.GossipToTheDeadTime = t.GossipToTheDeadTime
	mc.PushPullInterval = t.PushPullInterval
	mc.TCPTimeout = t.TCPTimeout
	mc.AwarenessMaxMultiplier = t.AwarenessMaxMultiplier
	mc.DeadNodeReclaimTime = t.DeadNodeReclaimTime
	mc.Logger = logger
	mc.LogOutput = nil
	if logger == nil {
		mc.LogOutput = io.Discard
	}
	return mc
}
