package raftstore

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
)

// levelTrace is slog's conventional level for hclog's Trace, which slog
// lacks: below Debug, so a Debug handler drops Raft's per-RPC chatter.
const levelTrace = slog.LevelDebug - 4

// hcLogger adapts a *slog.Logger to hclog.Logger, which is the only logger
// hashicorp/raft accepts, so that Raft's records reach the same handler as
// ours with their key/value pairs intact instead of as preformatted text.
type hcLogger struct {
	sl      *slog.Logger // already carries implied args
	name    string
	implied []any
	// level is shared with loggers derived by With and Named, like hclog's
	// own: SetLevel on the root changes them all. NoLevel defers to the
	// slog handler.
	level *atomic.Int32
}

var _ hclog.Logger = (*hcLogger)(nil)

func newHCLogger(sl *slog.Logger, name string) *hcLogger {
	return &hcLogger{sl: sl, name: name, level: new(atomic.Int32)}
}

func slogLevel(l hclog.Level) slog.Level {
	switch l {
	case hclog.Trace:
		return levelTrace
	case hclog.Debug:
		return slog.LevelDebug
	case hclog.Warn:
		return slog.LevelWarn
	case hclog.Error:
		return slog.LevelError
	default: // Info, NoLevel
		return slog.LevelInfo
	}
}

// enabled applies SetLevel's floor first, then asks the handler.
func (h *hcLogger) enabled(l hclog.Level) bool {
	if l == hclog.Off {
		return false
	}
	if floor := hclog.Level(h.level.Load()); floor != hclog.NoLevel && l < floor {
		return false
	}
	return h.sl.Enabled(context.Background(), slogLevel(l))
}

// log builds the record itself so that its source is Raft's call site, not
// this adapter. skip counts the frames above runtime.Callers.
func (h *hcLogger) log(skip int, l hclog.Level, msg string, args []any) {
	if !h.enabled(l) {
		return
	}
	var pcs [1]uintptr
	runtime.Callers(skip, pcs[:])
	r := slog.NewRecord(time.Now(), slogLevel(l), msg, pcs[0])
	if h.name != "" {
		r.AddAttrs(slog.String("logger", h.name))
	}
	// hclog renders a leading Format argument into the message.
	if len(args) > 0 {
		if f, ok := args[0].(hclog.Format); ok && len(f) > 0 {
			r.Message = msg + ": " + fmt.Sprintf(fmt.Sprint(f[0]), f[1:]...)
			args = args[1:]
		}
	}
	r.AddAttrs(attrs(args)...)
	_ = h.sl.Handler().Handle(context.Background(), r)
}

// attrs turns hclog's alternating key/value arguments into slog attributes.
// A dangling value gets hclog's own key for it, so nothing is dropped.
func attrs(args []any) []slog.Attr {
	out := make([]slog.Attr, 0, (len(args)+1)/2)
	for i := 0; i < len(args); i += 2 {
		if i+1 == len(args) {
			out = append(out, slog.Any("EXTRA_VALUE_AT_END", args[i]))
			break
		}
		key, ok := args[i].(string)
		if !ok {
			key = fmt.Sprint(args[i])
		}
		out = append(out, slog.Any(key, hclogValue(args[i+1])))
	}
	return out
}

// hclogValue unwraps hclog's formatting helpers into plain values.
func hclogValue(v any) any {
	switch v := v.(type) {
	case hclog.Format:
		if len(v) == 0 {
			return ""
		}
		return fmt.Sprintf(fmt.Sprint(v[0]), v[1:]...)
	case hclog.Hex:
		return fmt.Sprintf("0x%x", int(v))
	case hclog.Octal:
		return fmt.Sprintf("0%o", int(v))
	case hclog.Binary:
		return fmt.Sprintf("0b%b", int(v))
	case hclog.Quote:
		return string(v)
	}
	return v
}

func (h *hcLogger) Log(l hclog.Level, msg string, args ...any) { h.log(3, l, msg, args) }
func (h *hcLogger) Trace(msg string, args ...any)              { h.log(3, hclog.Trace, msg, args) }
func (h *hcLogger) Debug(msg string, args ...any)              { h.log(3, hclog.Debug, msg, args) }
func (h *hcLogger) Info(msg string, args ...any)               { h.log(3, hclog.Info, msg, args) }
func (h *hcLogger) Warn(msg string, args ...any)               { h.log(3, hclog.Warn, msg, args) }
func (h *hcLogger) Error(msg string, args ...any)              { h.log(3, hclog.Error, msg, args) }

func (h *hcLogger) IsTrace() bool { return h.enabled(hclog.Trace) }
func (h *hcLogger) IsDebug() bool { return h.enabled(hclog.Debug) }
func (h *hcLogger) IsInfo() bool  { return h.enabled(hclog.Info) }
func (h *hcLogger) IsWarn() bool  { return h.enabled(hclog.Warn) }
func (h *hcLogger) IsError() bool { return h.enabled(hclog.Error) }

func (h *hcLogger) ImpliedArgs() []any { return append([]any(nil), h.implied...) }

func (h *hcLogger) With(args ...any) hclog.Logger {
	c := *h
	c.implied = append(append([]any(nil), h.implied...), args...)
	as := attrs(args)
	anys := make([]any, len(as))
	for i, a := range as {
		anys[i] = a
	}
	c.sl = h.sl.With(anys...)
	return &c
}

func (h *hcLogger) Name() string { return h.name }

// Named appends to the name with a dot, as hclog does ("raft.snapshot").
func (h *hcLogger) Named(name string) hclog.Logger {
	c := *h
	if c.name != "" {
		c.name += "." + name
	} else {
		c.name = name
	}
	return &c
}

func (h *hcLogger) ResetNamed(name string) hclog.Logger {
	c := *h
	c.name = name
	return &c
}

func (h *hcLogger) SetLevel(l hclog.Level) { h.level.Store(int32(l)) }

// GetLevel reports the SetLevel floor if one was set, otherwise the lowest
// level the slog handler accepts.
func (h *hcLogger) GetLevel() hclog.Level {
	if l := hclog.Level(h.level.Load()); l != hclog.NoLevel {
		return l
	}
	for l := hclog.Trace; l <= hclog.Error; l++ {
		if h.sl.Enabled(context.Background(), slogLevel(l)) {
			return l
		}
	}
	return hclog.Off
}

func (h *hcLogger) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	return log.New(h.StandardWriter(opts), "", 0)
}

// StandardWriter returns a writer that logs each written line. Raft's
// network transport logs through it with "[LEVEL]" prefixes, which
// InferLevels turns back into levels.
func (h *hcLogger) StandardWriter(opts *hclog.StandardLoggerOptions) io.Writer {
	if opts == nil {
		opts = &hclog.StandardLoggerOptions{}
	}
	return &stdWriter{h: h, opts: *opts}
}

type stdWriter struct {
	h    *hcLogger
	opts hclog.StandardLoggerOptions
}

func (w *stdWriter) Write(p []byte) (int, error) {
	for line := range bytes.SplitSeq(bytes.TrimRight(p, "\r\n"), []byte("\n")) {
		msg := strings.TrimSpace(string(line))
		level := hclog.Info
		if w.opts.ForceLevel != hclog.NoLevel {
			level = w.opts.ForceLevel
		} else if w.opts.InferLevels || w.opts.InferLevelsWithTimestamp {
			level, msg = inferLevel(msg)
		}
		w.h.log(4, level, msg, nil)
	}
	return len(p), nil
}

// inferLevel recognises the "[ERR] " style prefixes of the standard log
// package users, anywhere in the line because a timestamp may precede it.
func inferLevel(msg string) (hclog.Level, string) {
	for _, p := range []struct {
		tag   string
		level hclog.Level
	}{
		{"[TRACE]", hclog.Trace}, {"[DEBUG]", hclog.Debug}, {"[INFO]", hclog.Info},
		{"[WARN]", hclog.Warn}, {"[ERR]", hclog.Error}, {"[ERROR]", hclog.Error},
	} {
		if i := strings.Index(msg, p.tag); i >= 0 {
			return p.level, strings.TrimSpace(msg[i+len(p.tag):])
		}
	}
	return hclog.Info, msg
}
