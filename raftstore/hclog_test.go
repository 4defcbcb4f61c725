package raftstore

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
)

// jsonLogger returns an adapter over a JSON handler at level, and a function
// that decodes the records written so far.
func jsonLogger(t *testing.T, level slog.Level) (hclog.Logger, func() []map[string]any) {
	var buf bytes.Buffer
	h := slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: level, AddSource: true})
	return newHCLogger(slog.New(h), "raft"), func() []map[string]any {
		var out []map[string]any
		for line := range strings.Lines(buf.String()) {
			var m map[string]any
			if err := json.Unmarshal([]byte(line), &m); err != nil {
				t.Fatalf("decode %q: %v", line, err)
			}
			out = append(out, m)
		}
		buf.Reset()
		return out
	}
}

func TestHCLogAdapter(t *testing.T) {
	tests := []struct {
		name  string
		level slog.Level
		log   func(l hclog.Logger)
		want  []map[string]any // subset of each record's fields
	}{
		{
			"levels map to slog levels and key/value pairs stay structured",
			levelTrace,
			func(l hclog.Logger) {
				l.Trace("t")
				l.Debug("d")
				l.Info("i", "index", 7, "error", errors.New("boom"))
				l.Warn("w")
				l.Error("e")
			},
			[]map[string]any{
				{"level": "DEBUG-4", "msg": "t"},
				{"level": "DEBUG", "msg": "d"},
				{"level": "INFO", "msg": "i", "index": 7.0, "error": "boom", "logger": "raft"},
				{"level": "WARN", "msg": "w"},
				{"level": "ERROR", "msg": "e"},
			},
		},
		{
			"the handler's level filters, and trace sits below debug",
			slog.LevelDebug,
			func(l hclog.Logger) { l.Trace("dropped"); l.Debug("kept") },
			[]map[string]any{{"msg": "kept"}},
		},
		{
			"With and Named carry their arguments and name",
			slog.LevelInfo,
			func(l hclog.Logger) { l.With("peer", "n2").Named("replication").Info("sent") },
			[]map[string]any{{"msg": "sent", "peer": "n2", "logger": "raft.replication"}},
		},
		{
			"a dangling value is kept under hclog's key",
			slog.LevelInfo,
			func(l hclog.Logger) { l.Info("odd", "a", 1, "lonely") },
			[]map[string]any{{"a": 1.0, "EXTRA_VALUE_AT_END": "lonely"}},
		},
		{
			"a leading Format is rendered into the message",
			slog.LevelInfo,
			func(l hclog.Logger) { l.Info("count", hclog.Fmt("%d beans", 3), "k", "v") },
			[]map[string]any{{"msg": "count: 3 beans", "k": "v"}},
		},
		{
			"SetLevel raises the floor above the handler's",
			slog.LevelInfo,
			func(l hclog.Logger) { l.SetLevel(hclog.Error); l.Warn("dropped"); l.Error("kept") },
			[]map[string]any{{"msg": "kept"}},
		},
		{
			"the standard logger infers levels from prefixes",
			slog.LevelDebug,
			func(l hclog.Logger) {
				l.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}).Print("[WARN] raft-net: slow peer")
			},
			[]map[string]any{{"level": "WARN", "msg": "raft-net: slow peer"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, records := jsonLogger(t, tt.level)
			tt.log(l)
			got := records()
			if len(got) != len(tt.want) {
				t.Fatalf("got %d records %v, want %d", len(got), got, len(tt.want))
			}
			for i, want := range tt.want {
				for k, v := range want {
					if got[i][k] != v {
						t.Errorf("record %d: %s = %v, want %v (record %v)", i, k, got[i][k], v, got[i])
					}
				}
			}
		})
	}
}

func TestHCLogAdapterReportsTheCallersSource(t *testing.T) {
	l, records := jsonLogger(t, slog.LevelInfo)
	l.Info("here")
	src, _ := records()[0]["source"].(map[string]any)
	if file, _ := src["file"].(string); !strings.HasSuffix(file, "hclog_test.go") {
		t.Errorf("source %v, want this test file, not the adapter", src)
	}
}

func TestHCLogAdapterLevelQueries(t *testing.T) {
	l, _ := jsonLogger(t, slog.LevelWarn)
	if l.IsDebug() || l.IsInfo() || !l.IsWarn() || !l.IsError() {
		t.Errorf("Is*: debug %v info %v warn %v error %v", l.IsDebug(), l.IsInfo(), l.IsWarn(), l.IsError())
	}
	if got := l.GetLevel(); got != hclog.Warn {
		t.Errorf("GetLevel %v, want Warn", got)
	}
	if got := l.With("a", 1).ImpliedArgs(); len(got) != 2 || got[0] != "a" {
		t.Errorf("ImpliedArgs %v", got)
	}
	if got := l.Named("x").ResetNamed("y").Name(); got != "y" {
		t.Errorf("ResetNamed name %q", got)
	}
}
