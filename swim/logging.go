package swim

import (
	"context"
	"log"
	"log/slog"
	"strings"
)

// newStdLogger returns the *log.Logger memberlist insists on, writing to
// sl: memberlist formats each line as "[LEVEL] memberlist: message", and
// each becomes one slog record at the matching level, so that a Debug
// handler drops memberlist's per-connection chatter and its errors reach
// the same handler as ours.
func newStdLogger(sl *slog.Logger) *log.Logger {
	return log.New(slogWriter{sl: sl}, "", 0)
}

type slogWriter struct{ sl *slog.Logger }

// Write is called by log.Logger once per line.
func (w slogWriter) Write(p []byte) (int, error) {
	level, msg := parseMemberlistLine(string(p))
	if w.sl.Enabled(context.Background(), level) {
		w.sl.Log(context.Background(), level, msg)
	}
	return len(p), nil
}

// parseMemberlistLine splits "[WARN] memberlist: text\n" into a level and
// "text". Lines without a known bracketed level are Info.
func parseMemberlistLine(line string) (slog.Level, string) {
	line = strings.TrimRight(line, "\r\n")
	level := slog.LevelInfo
	if rest, ok := strings.CutPrefix(line, "["); ok {
		if tag, msg, ok := strings.Cut(rest, "]"); ok {
			switch tag {
			case "TRACE", "DEBUG":
				level, line = slog.LevelDebug, msg
			case "INFO":
				level, line = slog.LevelInfo, msg
			case "WARN", "WARNING":
				level, line = slog.LevelWarn, msg
			case "ERR", "ERROR":
				level, line = slog.LevelError, msg
			}
		}
	}
	line = strings.TrimSpace(line)
	line = strings.TrimPrefix(line, "memberlist: ")
	return level, line
}
