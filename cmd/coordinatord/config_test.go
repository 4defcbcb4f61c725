package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

func testServerCmd(t testing.TB) *cobra.Command {
	t.Helper()
	cmd := newServerCmd()
	addLogFlags(cmd)
	return cmd
}

func TestServerFlagsComeFromFlagsThenEnvironmentThenConfigFile(t *testing.T) {
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(cfgFile, []byte("data-dir: /from/file\nnode-id: file-node\nhttp-addr: 1.2.3.4:5\nbootstrap: true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("COORDINATORD_NODE_ID", "env-node")
	t.Setenv("COORDINATORD_HTTP_ADDR", "6.7.8.9:10")
	cmd := testServerCmd(t)
	if err := cmd.ParseFlags([]string{"--config", cfgFile, "--http-addr", "flag:1"}); err != nil {
		t.Fatal(err)
	}
	if err := applyEnvAndFile(cmd); err != nil {
		t.Fatal(err)
	}
	for flag, want := range map[string]string{"data-dir": "/from/file", "node-id": "env-node", "http-addr": "flag:1", "bootstrap": "true"} {
		if got := cmd.Flags().Lookup(flag).Value.String(); got != want {
			t.Errorf("--%s = %q, want %q", flag, got, want)
		}
	}
}

func TestBadConfigurationIsAnErrorNamingTheKey(t *testing.T) {
	tests := []struct {
		name, file, env, want string
	}{
		{"an unknown key in the file", "data-dir: x\ndata_dir: y\n", "", `unknown keys data_dir`},
		{"a nested value in the file", "data-dir:\n  a: b\n", "", `key "data-dir": must be a single value`},
		{"a key without a value", "node-id:\n", "", `key "node-id" has no value`},
		{"a value of the wrong type in the file", "bootstrap: maybe\n", "", `config key "bootstrap"`},
		{"malformed YAML", "data-dir: [\n", "", "c.yaml"},
		{"a bad value in the environment", "", "COORDINATORD_DECISION_CACHE_SIZE=lots", "COORDINATORD_DECISION_CACHE_SIZE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := []string{}
			if tt.file != "" {
				p := filepath.Join(t.TempDir(), "c.yaml")
				if err := os.WriteFile(p, []byte(tt.file), 0o600); err != nil {
					t.Fatal(err)
				}
				args = append(args, "--config", p)
			}
			if tt.env != "" {
				k, v, _ := strings.Cut(tt.env, "=")
				t.Setenv(k, v)
			}
			cmd := testServerCmd(t)
			if err := cmd.ParseFlags(args); err != nil {
				t.Fatal(err)
			}
			err := applyEnvAndFile(cmd)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one mentioning %q", err, tt.want)
			}
		})
	}
}

// FuzzReadConfigFile: any file either parses into values for known flags
// or is an error; nothing panics.
//
//	go test ./cmd/coordinatord -run '^$' -fuzz FuzzReadConfigFile -fuzztime 1m
func FuzzReadConfigFile(f *testing.F) {
	f.Add([]byte("data-dir: /var/lib/c\nbootstrap: true\ndecision-cache-size: 10\n"))
	f.Add([]byte("{}"))
	f.Add([]byte("- a\n- b\n"))
	f.Add([]byte("data-dir: &a x\nnode-id: *a\n"))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(dir, "c.yaml")
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := testServerCmd(t)
		values, err := readConfigFile(p, cmd.Flags())
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		for k := range values {
			if cmd.Flags().Lookup(k) == nil || k == "config" {
				t.Fatalf("accepted unknown key %q", k)
			}
		}
	})
}
