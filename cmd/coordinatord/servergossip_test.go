package main

import (
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coordinatord/coordinatord/swim"
)

// serverArgs are the flags of a node with dev certificates made in dir
// (node dev-1 in datacenter dc1).
func serverArgs(t *testing.T) []string {
	t.Helper()
	dir := t.TempDir()
	if _, err := devCertificates(dir); err != nil {
		t.Fatal(err)
	}
	return []string{"--data-dir", t.TempDir(), "--node-id", devNode, "--ca", filepath.Join(dir, "ca.crt"),
		"--tls-cert", filepath.Join(dir, "node.crt"), "--tls-key", filepath.Join(dir, "node.key")}
}

func parseServer(t *testing.T, args ...string) (*serverFlags, error) {
	t.Helper()
	f := &serverFlags{}
	cmd := f.command()
	if err := cmd.ParseFlags(args); err != nil {
		t.Fatal(err)
	}
	return f, applyEnvAndFile(cmd)
}

func TestAServerIsAGossipMemberOnlyWithTheKey(t *testing.T) {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	base := serverArgs(t)
	_, keyFile := writeKeyFile(t)

	f, err := parseServer(t, base...)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := f.serverConfig(logger)
	if err != nil || cfg.Gossip != nil {
		t.Fatalf("without a key: gossip %+v, %v; want no gossip", cfg.Gossip, err)
	}

	f, _ = parseServer(t, append(base, "--gossip-join", "127.0.0.1:7946")...)
	if _, err := f.serverConfig(logger); err == nil || !strings.Contains(err.Error(), "--gossip-join") || !strings.Contains(err.Error(), "gossip needs the pool's key") {
		t.Fatalf("gossip flags without a key: %v", err)
	}

	f, _ = parseServer(t, append(base, "--gossip-key-file", keyFile, "--gossip-bind", "127.0.0.1:17946", "--gossip-join", "127.0.0.1:7946",
		"--gossip-probe-interval", "200ms", "--gossip-probe-timeout", "100ms", "--gossip-loss", "0.1",
		"--lease-max-hold", "90s", "--correlation-failure-confirmation", "2s")...)
	cfg, err = f.serverConfig(logger)
	if err != nil {
		t.Fatal(err)
	}
	g := cfg.Gossip
	if g == nil || g.BindAddr != "127.0.0.1" || g.BindPort != 17946 || strings.Join(g.Join, ",") != "127.0.0.1:7946" ||
		g.Timing.ProbeInterval != 200*time.Millisecond || g.WrapTransport == nil {
		t.Fatalf("gossip config %+v", g)
	}
	if want := (swim.Meta{NodeID: devNode, Datacenter: devDatacenter, Role: swim.RoleCoordinator, Version: version}); g.Meta != want {
		t.Errorf("meta %+v, want %+v (the datacenter of the certificate)", g.Meta, want)
	}
	if cfg.Raft.MaxLeaseHold != 90*time.Second || cfg.Correlation.FailureConfirmation != 2*time.Second {
		t.Errorf("max hold %s, failure confirmation %s", cfg.Raft.MaxLeaseHold, cfg.Correlation.FailureConfirmation)
	}

	for _, tt := range []struct{ flag, value, want string }{
		{"--gossip-loss", "1.5", "--gossip-loss 1.5: must be between 0 and 1"},
		{"--lease-max-hold", "-1s", "--lease-max-hold -1s: must not be negative"},
		{"--correlation-failing-share", "1", "failing_share 1 must be in (0, 1)"},
	} {
		f, _ := parseServer(t, append(base, "--gossip-key-file", keyFile, tt.flag, tt.value)...)
		if _, err := f.serverConfig(logger); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s %s: %v, want an error mentioning %q", tt.flag, tt.value, err, tt.want)
		}
	}
}

func TestTheChaosFlagIsHidden(t *testing.T) {
	for _, cmd := range []string{"agent", "server"} {
		root := newRootCmd()
		c, _, err := root.Find([]string{cmd})
		if err != nil {
			t.Fatal(err)
		}
		fl := c.Flags().Lookup("gossip-loss")
		if fl == nil || !fl.Hidden || !strings.Contains(fl.Usage, "FOR TESTING ONLY") {
			t.Errorf("%s --gossip-loss: %+v", cmd, fl)
		}
	}
}

func TestAServerWarnsWhenDeadMembersAreForgottenBeforeTheHoldCap(t *testing.T) {
	base := serverArgs(t)
	_, keyFile := writeKeyFile(t)
	const warning = "--gossip-dead-member-retention is shorter than --lease-max-hold"
	for _, tc := range []struct {
		name string
		args []string
		warn bool
	}{
		{"defaults", nil, false},
		{"retention shorter than the cap", []string{"--gossip-dead-member-retention", "1m", "--lease-max-hold", "5m"}, true},
		{"no cap", []string{"--gossip-dead-member-retention", "1m", "--lease-max-hold", "0s"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs strings.Builder
			logger := slog.New(slog.NewTextHandler(&logs, nil))
			f, err := parseServer(t, append(append(base, "--gossip-key-file", keyFile), tc.args...)...)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.serverConfig(logger); err != nil {
				t.Fatal(err)
			}
			if got := strings.Contains(logs.String(), warning); got != tc.warn {
				t.Errorf("warned %v, want %v:\n%s", got, tc.warn, logs.String())
			}
		})
	}
}
