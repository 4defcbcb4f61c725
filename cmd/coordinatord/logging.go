package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/lmittmann/tint"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

var logFlags struct {
	level  string
	format string
}

func addLogFlags(cmd *cobra.Command) {
	f := cmd.PersistentFlags()
	f.StringVar(&logFlags.level, "log-level", "info", "log level: debug, info, warn or error (env COORDINATORD_LOG_LEVEL)")
	f.StringVar(&logFlags.format, "log-format", "auto", "log format: auto (colored text on a terminal, JSON otherwise), text or json (env COORDINATORD_LOG_FORMAT)")
}

// newLogger builds the process logger on stderr from the log flags.
func newLogger() (*slog.Logger, error) {
	return buildLogger(os.Stderr, logFlags.level, logFlags.format)
}

func buildLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: must be debug, info, warn or error", level)
	}
	switch strings.ToLower(format) {
	case "auto":
		if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			return slog.New(tint.NewHandler(w, &tint.Options{Level: lv, TimeFormat: time.TimeOnly})), nil
		}
		return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: lv})), nil
	case "text":
		f, isFile := w.(*os.File)
		noColor := !isFile || !term.IsTerminal(int(f.Fd()))
		return slog.New(tint.NewHandler(w, &tint.Options{Level: lv, TimeFormat: time.TimeOnly, NoColor: noColor})), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: lv})), nil
	}
	return nil, fmt.Errorf("--log-format %q: must be auto, text or json", format)
}
