package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coordinatord/coordinatord/swim"
)

// writeKeyFile writes a new gossip key to a file and returns both.
func writeKeyFile(t *testing.T) ([]byte, string) {
	t.Helper()
	key, err := swim.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "gossip.key")
	if err := os.WriteFile(p, []byte(swim.EncodeKey(key)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return key, p
}

func waitUntil(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting until %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func memberState(m *swim.Memberlist, name string) (swim.Member, bool) {
	for _, mem := range m.Members() {
		if mem.Name == name {
			return mem, true
		}
	}
	return swim.Member{}, false
}

func TestAgentJoinsThenLeavesWhenStopped(t *testing.T) {
	key, keyFile := writeKeyFile(t)
	// A coordinator's member for the agent to join.
	cfg := swim.DefaultLANConfig()
	cfg.BindAddr, cfg.BindPort = "127.0.0.1", 0
	cfg.Meta = swim.Meta{NodeID: "server-1", Datacenter: "dc1", Role: swim.RoleCoordinator, Version: "test"}
	cfg.SecretKey = key
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg.Timing.ProbeInterval, cfg.Timing.ProbeTimeout, cfg.PollInterval = 200*time.Millisecond, 100*time.Millisecond, 20*time.Millisecond
	srv, err := swim.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Shutdown() })

	ln, err := net.Listen("tcp", "127.0.0.1:0") // a free port for the metrics
	if err != nil {
		t.Fatal(err)
	}
	metricsAddr := ln.Addr().String()
	_ = ln.Close()

	root := newRootCmd()
	root.SetArgs([]string{"agent", "--node", "agent-1", "--datacenter", "dc2",
		"--bind", "127.0.0.1:0", "--join", srv.LocalMember().Addr, "--gossip-key-file", keyFile,
		"--probe-interval", "200ms", "--probe-timeout", "100ms", "--metrics-addr", metricsAddr,
		"--log-level", "warn"})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()

	waitUntil(t, 10*time.Second, "the coordinator lists the agent alive", func() bool {
		m, ok := memberState(srv, "agent-1")
		return ok && m.State == swim.StateAlive
	})
	m, _ := memberState(srv, "agent-1")
	if want := (swim.Meta{NodeID: "agent-1", Datacenter: "dc2", Role: swim.RoleAgent, Version: version}); m.Meta != want {
		t.Errorf("agent metadata %+v, want %+v", m.Meta, want)
	}
	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	for _, want := range []string{"coordinatord_swim_members{state=\"alive\"} 2", "coordinatord_swim_packet_bytes_total", "process_cpu_seconds_total"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}

	cancel() // as SIGINT would
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("agent stopped with %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the agent did not stop")
	}
	waitUntil(t, 10*time.Second, "the coordinator sees the agent left", func() bool {
		m, ok := memberState(srv, "agent-1")
		return ok && m.State == swim.StateLeft
	})
}

func TestAgentFlagErrorsNameTheFlag(t *testing.T) {
	_, keyFile := writeKeyFile(t)
	badKeyFile := filepath.Join(t.TempDir(), "bad.key")
	if err := os.WriteFile(badKeyFile, []byte("c2hvcnQ=\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// with returns base and extra in a new slice (appending to a shared
	// base would let the cases overwrite each other).
	with := func(base []string, extra ...string) []string { return append(append([]string(nil), base...), extra...) }
	ok := []string{"--node", "a", "--datacenter", "dc1", "--bind", "127.0.0.1:0"}
	withKey := with(ok, "--gossip-key-file", keyFile)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"a missing node name", []string{"--datacenter", "dc1", "--gossip-key-file", keyFile}, "--node is required"},
		{"a missing datacenter", []string{"--node", "a", "--gossip-key-file", keyFile}, "--datacenter is required"},
		{"a datacenter with a space", []string{"--node", "a", "--datacenter", "dc 1", "--gossip-key-file", keyFile}, `--datacenter "dc 1"`},
		{"no gossip key", ok, "a gossip key is required"},
		{"a gossip key of the wrong length", with(ok, "--gossip-key", swim.EncodeKey(make([]byte, 20))), "--gossip-key: invalid gossip key: 20 bytes, must be 16, 24 or 32"},
		{"a gossip key that is not base64", with(ok, "--gossip-key", "secret!"), "--gossip-key: invalid gossip key: not standard base64"},
		{"a key file with a short key", with(ok, "--gossip-key-file", badKeyFile), "--gossip-key-file " + badKeyFile + ": invalid gossip key: 5 bytes"},
		{"a key file that does not exist", with(ok, "--gossip-key-file", "/nonexistent/key"), "--gossip-key-file: open /nonexistent/key"},
		{"a key and a key file", with(withKey, "--gossip-key", swim.EncodeKey(make([]byte, 32))), "give one, not both"},
		{"a host name to bind", with(withKey, "--bind", "localhost:7946"), `--bind "localhost:7946": want an IP address`},
		{"a bind port out of range", with(withKey, "--bind", "127.0.0.1:99999"), `--bind "127.0.0.1:99999": port "99999"`},
		{"an unreachable advertised address", with(withKey, "--advertise", "0.0.0.0"), `--advertise "0.0.0.0"`},
		{"a join address with a bad port", with(withKey, "--join", "10.0.0.1:http"), `--join "10.0.0.1:http"`},
		{"an unknown profile", with(withKey, "--profile", "metro"), `--profile "metro": must be lan or wan`},
		{"a probe interval shorter than the profile's probe timeout", with(withKey, "--probe-interval", "100ms"), "--probe-timeout 500ms exceeds --probe-interval 100ms"},
		{"a suspicion multiplier of zero", with(withKey, "--suspicion-mult", "0"), "--suspicion-mult 0 must be at least 1"},
		{"a zero leave timeout", with(withKey, "--leave-timeout", "0s"), "--leave-timeout"},
		{"a zero join retry interval", with(withKey, "--retry-join-interval", "0s"), "--retry-join-interval 0s: must be positive"},
		{"a negative dead member retention", with(withKey, "--dead-member-retention", "-1s"), "--dead-member-retention -1s: must not be negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := newRootCmd()
			root.SetArgs(append([]string{"agent"}, tt.args...))
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second) // ends the agent if it starts after all
			defer cancel()
			err := root.ExecuteContext(ctx)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one mentioning %q", err, tt.want)
			}
		})
	}
}

func TestAgentFlagsComeFromFlagsThenEnvironmentThenConfigFile(t *testing.T) {
	key, keyFile := writeKeyFile(t)
	cfgFile := filepath.Join(t.TempDir(), "agent.yaml")
	yaml := "node: file-node\ndatacenter: file-dc\ngossip-key-file: " + keyFile + "\nprofile: wan\njoin: 10.0.0.1:7946,10.0.0.2\n"
	if err := os.WriteFile(cfgFile, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("COORDINATORD_DATACENTER", "env-dc")
	t.Setenv("COORDINATORD_ADVERTISE", "10.9.9.9")
	var f agentFlags
	cmd := f.command()
	addLogFlags(cmd)
	if err := cmd.ParseFlags([]string{"--config", cfgFile, "--probe-interval", "4s", "--bind", "10.0.0.5"}); err != nil {
		t.Fatal(err)
	}
	if err := applyEnvAndFile(cmd); err != nil {
		t.Fatal(err)
	}
	cfg, err := f.swimConfig(slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	wan := swim.DefaultWANConfig()
	checks := []struct {
		what      string
		got, want any
	}{
		{"node name (file)", cfg.NodeName, "file-node"},
		{"datacenter (environment over file)", cfg.Meta.Datacenter, "env-dc"},
		{"role", cfg.Meta.Role, swim.RoleAgent},
		{"key (file)", string(cfg.SecretKey), string(key)},
		{"join (file)", strings.Join(cfg.Join, " "), "10.0.0.1:7946 10.0.0.2"},
		{"bind address (flag, default port)", cfg.BindAddr + " " + strconv.Itoa(cfg.BindPort), "10.0.0.5 7946"},
		{"advertised address (environment)", cfg.AdvertiseAddr, "10.9.9.9"},
		{"probe interval (flag over the wan profile)", cfg.Timing.ProbeInterval, 4 * time.Second},
		{"probe timeout (wan profile)", cfg.Timing.ProbeTimeout, wan.Timing.ProbeTimeout},
		{"suspicion multiplier (wan profile)", cfg.Timing.SuspicionMult, wan.Timing.SuspicionMult},
		{"poll interval (a fifth of the probe interval)", cfg.PollInterval, 800 * time.Millisecond},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.what, c.got, c.want)
		}
	}
}

func TestKeygenPrintsANewBase64Key(t *testing.T) {
	var keys []string
	for range 2 {
		root := newRootCmd()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetArgs([]string{"keygen"})
		if err := root.Execute(); err != nil {
			t.Fatal(err)
		}
		k, err := swim.ParseKey(out.String())
		if err != nil || len(k) != 32 || !strings.HasSuffix(out.String(), "\n") || strings.Count(out.String(), "\n") != 1 {
			t.Fatalf("keygen printed %q: %v", out.String(), err)
		}
		keys = append(keys, out.String())
	}
	if keys[0] == keys[1] {
		t.Error("two runs printed the same key")
	}
}
