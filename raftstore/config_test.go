package raftstore

import (
	"errors"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func TestConfigValidate(t *testing.T) {
	valid := func() Config {
		c := DefaultConfig()
		c.NodeID, c.DataDir = "n1", "/var/lib/coordinatord"
		return c
	}
	tests := []struct {
		name      string
		change    func(*Config)
		wantField string // "" means valid
	}{
		{"the defaults with an id and a directory are valid", func(*Config) {}, ""},
		{"equal heartbeat, election and lease timeouts are valid", func(c *Config) {
			c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout = time.Second, time.Second, time.Second
		}, ""},
		{"a missing node id is refused", func(c *Config) { c.NodeID = "" }, "NodeID"},
		{"a node id with a space is refused", func(c *Config) { c.NodeID = "n 1" }, "NodeID"},
		{"a missing data directory is refused", func(c *Config) { c.DataDir = "" }, "DataDir"},
		{"a heartbeat timeout below raft's floor is refused", func(c *Config) { c.HeartbeatTimeout = time.Millisecond }, "HeartbeatTimeout"},
		{"an election timeout below raft's floor is refused", func(c *Config) { c.ElectionTimeout = time.Millisecond }, "ElectionTimeout"},
		{"a zero leader lease timeout is refused", func(c *Config) { c.LeaderLeaseTimeout = 0 }, "LeaderLeaseTimeout"},
		{"a zero commit timeout is refused", func(c *Config) { c.CommitTimeout = 0 }, "CommitTimeout"},
		{"a tiny snapshot interval is refused", func(c *Config) { c.SnapshotInterval = time.Millisecond }, "SnapshotInterval"},
		{"keeping no snapshot is refused", func(c *Config) { c.SnapshotRetain = 0 }, "SnapshotRetain"},
		{"a zero apply timeout is refused", func(c *Config) { c.ApplyTimeout = 0 }, "ApplyTimeout"},
		{"a leader lease longer than the heartbeat timeout is refused", func(c *Config) {
			c.LeaderLeaseTimeout = 2 * c.HeartbeatTimeout
		}, "LeaderLeaseTimeout"},
		{"a heartbeat timeout longer than the election timeout is refused", func(c *Config) {
			c.HeartbeatTimeout = 2 * c.ElectionTimeout
		}, "HeartbeatTimeout"},
		{"an apply timeout shorter than an election is refused", func(c *Config) {
			c.ApplyTimeout = c.ElectionTimeout / 2
		}, "ApplyTimeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := valid()
			tt.change(&c)
			err := c.Validate()
			if tt.wantField == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tt.wantField) {
				t.Fatalf("Validate: %v, want ErrInvalidConfig naming %s", err, tt.wantField)
			}
		})
	}
}

func TestValidateMatchesRaft(t *testing.T) {
	// What we accept, raft must accept too, or Open would fail late with
	// raft's field names instead of ours.
	c := DefaultConfig()
	c.NodeID, c.DataDir = "n1", "d"
	c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout = minTimeout, minTimeout, minTimeout
	c.CommitTimeout, c.SnapshotInterval = time.Millisecond, minTimeout
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := raftValidate(c); err != nil {
		t.Fatalf("raft refuses a config Validate accepts: %v", err)
	}
}

func TestOpenDoesNotModifyTheConfig(t *testing.T) {
	before := DefaultConfig()
	cfg := testConfig(t, t.TempDir())
	cfg.Logger = slog.New(slog.DiscardHandler)
	snapshot := cfg
	s := openStore(t, cfg)
	mustPut(t, s, pol("a", "enforce"))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Open fills in a transport and wraps the logger for itself only.
	if !reflect.DeepEqual(cfg, snapshot) || cfg.Transport != nil {
		t.Errorf("Open modified the caller's Config:\n%+v\nwant %+v", cfg, snapshot)
	}
	if !reflect.DeepEqual(DefaultConfig(), before) {
		t.Errorf("DefaultConfig changed after use: %+v, want %+v", DefaultConfig(), before)
	}
}

func raftValidate(c Config) error {
	return raft.ValidateConfig(c.raftConfig(slog.New(slog.DiscardHandler)))
}
