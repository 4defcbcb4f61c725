package swim

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

func validConfig() Config {
	c := DefaultLANConfig()
	c.Meta = Meta{NodeID: "n1", Datacenter: "dc1", Role: RoleAgent, Version: "1.0"}
	c.SecretKey = make([]byte, 32)
	return c
}

func TestConfigValidationNamesTheBadField(t *testing.T) {
	tests := []struct {
		name   string
		change func(*Config)
		want   string // "" means valid
	}{
		{"the LAN defaults with a name, metadata and a key are valid", func(*Config) {}, ""},
		{"the WAN defaults with a name, metadata and a key are valid", func(c *Config) { w := DefaultWANConfig(); w.Meta, w.SecretKey = c.Meta, c.SecretKey; *c = w }, ""},
		{"a missing node id is refused", func(c *Config) { c.Meta.NodeID = "" }, "Meta: invalid member metadata: NodeID is empty"},
		{"a missing datacenter is refused", func(c *Config) { c.Meta.Datacenter = "" }, "Datacenter is empty"},
		{"an unknown role is refused", func(c *Config) { c.Meta.Role = "worker" }, `Role "worker"`},
		{"a missing version is refused", func(c *Config) { c.Meta.Version = "" }, "Version is empty"},
		{"a datacenter with a space is refused", func(c *Config) { c.Meta.Datacenter = "dc 1" }, "Datacenter \"dc 1\" contains whitespace"},
		{"metadata over memberlist's 512 bytes is refused", func(c *Config) { c.Meta.NodeID = strings.Repeat("n", 500) }, "exceeds memberlist's limit of 512"},
		{"a node name with whitespace is refused", func(c *Config) { c.NodeName = "a b" }, "NodeName"},
		{"a host name as bind address is refused", func(c *Config) { c.BindAddr = "localhost" }, "BindAddr"},
		{"an IPv6 wildcard bind needs an advertised address", func(c *Config) { c.BindAddr = "::" }, "set AdvertiseAddr"},
		{"an IPv6 wildcard bind with an advertised address is valid", func(c *Config) { c.BindAddr, c.AdvertiseAddr = "::", "fd00::1" }, ""},
		{"a bind port above 65535 is refused", func(c *Config) { c.BindPort = 70000 }, "BindPort"},
		{"an advertised wildcard address is refused", func(c *Config) { c.AdvertiseAddr = "0.0.0.0" }, "AdvertiseAddr"},
		{"an advertised host name is refused", func(c *Config) { c.AdvertiseAddr = "node.example" }, "AdvertiseAddr"},
		{"a negative advertised port is refused", func(c *Config) { c.AdvertisePort = -1 }, "AdvertisePort"},
		{"no gossip key is refused", func(c *Config) { c.SecretKey = nil }, "SecretKey is required"},
		{"a 10-byte gossip key is refused", func(c *Config) { c.SecretKey = make([]byte, 10) }, "SecretKey: invalid gossip key: 10 bytes"},
		{"a 16-byte gossip key is valid", func(c *Config) { c.SecretKey = make([]byte, 16) }, ""},
		{"a join address with a bad port is refused", func(c *Config) { c.Join = []string{"10.0.0.1:99999"} }, "Join[0]"},
		{"an empty join address is refused", func(c *Config) { c.Join = []string{"10.0.0.1:7946", ""} }, "Join[1]"},
		{"a join host without port is valid", func(c *Config) { c.Join = []string{"node-1.example"} }, ""},
		{"joining without a retry interval is refused", func(c *Config) { c.Join = []string{"10.0.0.1"}; c.RetryJoinInterval = 0 }, "RetryJoinInterval"},
		{"a zero probe interval is refused", func(c *Config) { c.Timing.ProbeInterval = 0 }, "Timing.ProbeInterval"},
		{"a probe timeout longer than the interval is refused", func(c *Config) { c.Timing.ProbeTimeout = 2 * time.Second }, "Timing.ProbeTimeout 2s exceeds Timing.ProbeInterval 1s"},
		{"a zero suspicion multiplier is refused", func(c *Config) { c.Timing.SuspicionMult = 0 }, "Timing.SuspicionMult"},
		{"a zero suspicion max timeout multiplier is refused", func(c *Config) { c.Timing.SuspicionMaxTimeoutMult = 0 }, "Timing.SuspicionMaxTimeoutMult"},
		{"a negative number of indirect checks is refused", func(c *Config) { c.Timing.IndirectChecks = -1 }, "Timing.IndirectChecks"},
		{"a zero retransmit multiplier is refused", func(c *Config) { c.Timing.RetransmitMult = 0 }, "Timing.RetransmitMult"},
		{"a negative gossip interval is refused", func(c *Config) { c.Timing.GossipInterval = -time.Second }, "Timing.GossipInterval"},
		{"gossip to no nodes is refused", func(c *Config) { c.Timing.GossipNodes = 0 }, "Timing.GossipNodes"},
		{"a zero TCP timeout is refused", func(c *Config) { c.Timing.TCPTimeout = 0 }, "Timing.TCPTimeout"},
		{"a zero awareness multiplier is refused", func(c *Config) { c.Timing.AwarenessMaxMultiplier = 0 }, "Timing.AwarenessMaxMultiplier"},
		{"a negative push/pull interval is refused", func(c *Config) { c.Timing.PushPullInterval = -1 }, "Timing.PushPullInterval"},
		{"push/pull disabled is valid", func(c *Config) { c.Timing.PushPullInterval = 0 }, ""},
		{"a poll slower than the probe interval is refused", func(c *Config) { c.PollInterval = 2 * time.Second }, "PollInterval 2s exceeds Timing.ProbeInterval"},
		{"a zero poll interval is refused", func(c *Config) { c.PollInterval = 0 }, "PollInterval"},
		{"an event buffer of zero is refused", func(c *Config) { c.EventBuffer = 0 }, "EventBuffer"},
		{"an RTT buffer of zero is refused", func(c *Config) { c.RTTBuffer = 0 }, "RTTBuffer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig()
			tt.change(&c)
			err := c.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) || !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("Validate: %v, want ErrInvalidConfig mentioning %q", err, tt.want)
			}
		})
	}
}

func TestNewRefusesAnInvalidConfig(t *testing.T) {
	c := validConfig()
	c.SecretKey = []byte("short")
	if _, err := New(c); !errors.Is(err, ErrInvalidConfig) || !errors.Is(err, ErrInvalidKey) {
		t.Fatalf("New: %v, want ErrInvalidConfig wrapping ErrInvalidKey", err)
	}
}

func TestProfilesAreMemberlistsDefaults(t *testing.T) {
	for _, tt := range []struct {
		name string
		got  Config
		base *memberlist.Config
	}{
		{"lan", DefaultLANConfig(), memberlist.DefaultLANConfig()},
		{"wan", DefaultWANConfig(), memberlist.DefaultWANConfig()},
	} {
		// Our memberlist.Config from the profile must equal memberlist's
		// profile in every field we expose.
		got := tt.got.memberlistConfig(nil)
		b := tt.base
		pairs := []struct {
			field     string
			got, want any
		}{
			{"ProbeInterval", got.ProbeInterval, b.ProbeInterval},
			{"ProbeTimeout", got.ProbeTimeout, b.ProbeTimeout},
			{"IndirectChecks", got.IndirectChecks, b.IndirectChecks},
			{"DisableTcpPings", got.DisableTcpPings, b.DisableTcpPings},
			{"SuspicionMult", got.SuspicionMult, b.SuspicionMult},
			{"SuspicionMaxTimeoutMult", got.SuspicionMaxTimeoutMult, b.SuspicionMaxTimeoutMult},
			{"RetransmitMult", got.RetransmitMult, b.RetransmitMult},
			{"GossipInterval", got.GossipInterval, b.GossipInterval},
			{"GossipNodes", got.GossipNodes, b.GossipNodes},
			{"GossipToTheDeadTime", got.GossipToTheDeadTime, b.GossipToTheDeadTime},
			{"PushPullInterval", got.PushPullInterval, b.PushPullInterval},
			{"TCPTimeout", got.TCPTimeout, b.TCPTimeout},
			{"AwarenessMaxMultiplier", got.AwarenessMaxMultiplier, b.AwarenessMaxMultiplier},
			{"DeadNodeReclaimTime", got.DeadNodeReclaimTime, b.DeadNodeReclaimTime},
			{"BindPort", tt.got.BindPort, b.BindPort},
			{"EnableCompression", got.EnableCompression, b.EnableCompression},
			{"UDPBufferSize", got.UDPBufferSize, b.UDPBufferSize},
		}
		for _, p := range pairs {
			if p.got != p.want {
				t.Errorf("%s: %s = %v, memberlist's is %v", tt.name, p.field, p.got, p.want)
			}
		}
	}
	// The values the comments in DefaultLANConfig and DefaultWANConfig state.
	lan, wan := DefaultLANConfig().Timing, DefaultWANConfig().Timing
	if lan.ProbeInterval != time.Second || lan.ProbeTimeout != 500*time.Millisecond || lan.SuspicionMult != 4 ||
		lan.GossipInterval != 200*time.Millisecond || lan.GossipNodes != 3 || lan.PushPullInterval != 30*time.Second {
		t.Errorf("LAN timing %+v differs from its documented values", lan)
	}
	if wan.ProbeInterval != 5*time.Second || wan.ProbeTimeout != 3*time.Second || wan.SuspicionMult != 6 ||
		wan.GossipInterval != 500*time.Millisecond || wan.GossipNodes != 4 || wan.PushPullInterval != time.Minute {
		t.Errorf("WAN timing %+v differs from its documented values", wan)
	}
	if DefaultLANConfig().PollInterval != 200*time.Millisecond || DefaultWANConfig().PollInterval != time.Second {
		t.Errorf("poll intervals %s, %s", DefaultLANConfig().PollInterval, DefaultWANConfig().PollInterval)
	}
	for _, c := range []Config{DefaultLANConfig(), DefaultWANConfig()} {
		c.Meta, c.SecretKey = validConfig().Meta, validConfig().SecretKey
		if err := c.Validate(); err != nil {
			t.Errorf("a profile with metadata and a key: %v", err)
		}
	}
}

func TestDefaultsAndConfigsAreNotModifiedByUse(t *testing.T) {
	c := newTestCluster(t)
	lan, wan := DefaultLANConfig(), DefaultWANConfig()

	cfg := c.config("n", "dc", RoleAgent)
	cfg.Join = []string{"127.0.0.1:1"} // nobody there: the background join keeps failing
	cfg.RetryJoinInterval = time.Hour
	before := cfg
	before.Join = append([]string(nil), cfg.Join...)
	before.SecretKey = append([]byte(nil), cfg.SecretKey...)
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cfg, before) {
		t.Errorf("New modified its config:\n got %+v\nwant %+v", cfg, before)
	}
	if !reflect.DeepEqual(lan, DefaultLANConfig()) || !reflect.DeepEqual(wan, DefaultWANConfig()) {
		t.Error("the default profiles changed")
	}
	// Each call returns a fresh value.
	d := DefaultLANConfig()
	d.Timing.ProbeInterval = time.Hour
	d.Join = append(d.Join, "x")
	if DefaultLANConfig().Timing.ProbeInterval != time.Second || len(DefaultLANConfig().Join) != 0 {
		t.Error("changing a returned default changed the defaults")
	}
}
