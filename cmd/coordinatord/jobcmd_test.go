package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/coordinatord/coordinatord/api"
	"github.com/coordinatord/coordinatord/server"
)

func TestStatsArgAcceptsOnlyAJSONObject(t *testing.T) {
	file := filepath.Join(t.TempDir(), "stats.json")
	if err := os.WriteFile(file, []byte(`{"rows": 3}`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, ok := range []string{`{}`, `{"rows": 1200, "seconds": 3.5}`, "@" + file} {
		if _, err := statsArg(ok); err != nil {
			t.Errorf("statsArg(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{``, `[]`, `1`, `null`, `{"rows":`, "@" + file + ".missing"} {
		if _, err := statsArg(bad); err == nil || !strings.Contains(err.Error(), "--stats") {
			t.Errorf("statsArg(%q) = %v, want an error naming --stats", bad, err)
		}
	}
}

func TestReporterFlagsAreChecked(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string // "" means accepted
	}{
		{nil, ""},
		{[]string{"--reporter-queue-size", "100", "--reporter-workers", "8"}, ""},
		{[]string{"--reporter-queue-size", "0"}, "QueueSize"},
		{[]string{"--reporter-workers", "-1"}, "Workers"},
	} {
		var f reporterFlags
		fs := pflag.NewFlagSet("server", pflag.ContinueOnError)
		f.addFlags(fs)
		if err := fs.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		cfg := server.DefaultConfig()
		err := f.apply(&cfg)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%v: %v", tc.args, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%v: %v, want an error naming %s", tc.args, err, tc.want)
		case tc.want == "" && len(tc.args) > 0 && (cfg.Reporters.QueueSize != 100 || cfg.Reporters.Workers != 8):
			t.Errorf("%v: config %+v", tc.args, cfg.Reporters)
		}
	}
}

func TestPrintJobReportersShowsEachOutcome(t *testing.T) {
	var b bytes.Buffer
	err := printJobReporters(&b, &api.JobReporters{JobID: "job-7", Node: "node-1", Since: time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC), Results: []api.ReporterResult{
		{Reporter: "broken", Datacenter: "dc1", Event: "job_result", Status: "error", ErrorKind: "trap", Error: "unreachable", Elapsed: "40µs", Calls: 1, Failures: 1},
		{Reporter: "good", Datacenter: "dc3", Event: "lease_event", EventType: "expired", Status: "ok", Elapsed: "30µs", Records: 1, Calls: 4},
	}})
	if err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"node-1 (leader since 2026-11-27T10:00:00Z)", "broken", "trap: unreachable", "lease_event:expired", "dc3"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}
