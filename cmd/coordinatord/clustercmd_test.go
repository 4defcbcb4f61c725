package main

import (
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/coordinatord/coordinatord/server"
)

func TestClusterFlagsAreCheckedAndNameTheFlag(t *testing.T) {
	tests := []struct {
		name string
		args []string
		http string
		boot bool
		want string // "" means accepted
	}{
		{"the defaults", nil, "127.0.0.1:8443", false, ""},
		{"a raft address without a port", []string{"--raft-addr", "10.0.0.1"}, "127.0.0.1:8443", false, "--raft-addr"},
		{"a raft address on every interface needs an advertised one", []string{"--raft-addr", "0.0.0.0:8444"}, "127.0.0.1:8443", false, "set --raft-advertise"},
		{"an advertised raft address makes a wildcard bind fine", []string{"--raft-addr", "0.0.0.0:8444", "--raft-advertise", "10.0.0.1:8444"}, "127.0.0.1:8443", false, ""},
		{"an API on every interface needs an advertised address", nil, ":8443", false, "set --http-advertise"},
		{"an advertised address must be reachable", []string{"--http-advertise", "0.0.0.0:8443"}, "127.0.0.1:8443", false, "--http-advertise"},
		{"a join address must be host:port", []string{"--join", "node-1"}, "127.0.0.1:8443", false, "--join"},
		{"bootstrap and join exclude each other", []string{"--join", "node-1:8443"}, "127.0.0.1:8443", true, "--bootstrap and --join"},
		{"the leader lease may not exceed the heartbeat", []string{"--raft-heartbeat-timeout", "100ms", "--raft-election-timeout", "100ms"}, "127.0.0.1:8443", false, "LeaderLeaseTimeout"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := &clusterFlags{}
			fs := pflag.NewFlagSet("server", pflag.ContinueOnError)
			f.addFlags(fs)
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			cfg := server.DefaultConfig()
			cfg.HTTPAddr = tc.http
			cfg.Bootstrap = tc.boot
			err := f.apply(&cfg)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("err = %v, want it to name %q", err, tc.want)
			}
			if err == nil && (cfg.RaftAddr != f.raftAddr || cfg.Raft.HeartbeatTimeout != f.heartbeat) {
				t.Fatalf("flags not applied: %+v", cfg)
			}
		})
	}
}

func TestClusterTimingFlagsReachTheStoreConfig(t *testing.T) {
	f := &clusterFlags{raftAddr: "127.0.0.1:8444", heartbeat: 300 * time.Millisecond, election: 300 * time.Millisecond,
		leaderLease: 150 * time.Millisecond, snapshotThreshold: 64, snapshotInterval: 200 * time.Millisecond, trailingLogs: 16}
	cfg := server.DefaultConfig()
	if err := f.apply(&cfg); err != nil {
		t.Fatal(err)
	}
	r := cfg.Raft
	if r.HeartbeatTimeout != 300*time.Millisecond || r.ElectionTimeout != 300*time.Millisecond || r.LeaderLeaseTimeout != 150*time.Millisecond ||
		r.SnapshotThreshold != 64 || r.SnapshotInterval != 200*time.Millisecond || r.TrailingLogs != 16 {
		t.Fatalf("raft config %+v", r)
	}
}
