package guest

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/coordinatord/coordinatord/wasm/guest/internal/abi"
)

// Level is the level of a log line.
type Level int32

// The levels of the host's log function.
const (
	LevelDebug Level = Level(abi.LevelDebug)
	LevelInfo  Level = Level(abi.LevelInfo)
	LevelWarn  Level = Level(abi.LevelWarn)
	LevelError Level = Level(abi.LevelError)
)

// Log sends one line to the coordinatord log, attributed to the module.
// Lines beyond the module's rate limit are dropped (and counted) by the
// host. Off wasip1 it writes to standard error.
func Log(level Level, msg string) {
	abi.Log(int32(level), msg)
}

// Debug logs msg at debug level with key/value pairs, like log/slog:
// Debug("retrying", "job", id, "attempt", 2) logs `retrying job=job-7 attempt=2`.
func Debug(msg string, args ...any) { Log(LevelDebug, format(msg, args)) }

// Info logs msg at info level with key/value pairs (see Debug).
func Info(msg string, args ...any) { Log(LevelInfo, format(msg, args)) }

// Warn logs msg at warn level with key/value pairs (see Debug).
func Warn(msg string, args ...any) { Log(LevelWarn, format(msg, args)) }

// Error logs msg at error level with key/value pairs (see Debug).
func Error(msg string, args ...any) { Log(LevelError, format(msg, args)) }

// format renders msg and args as `msg k1=v1 k2=v2`, quoting values that hold
// spaces, quotes, '=' or are empty; a key without a value is logged as
// !BADKEY=key, as log/slog does.
func format(msg string, args []any) string {
	if len(args) == 0 {
		return msg
	}
	var b strings.Builder
	b.Grow(len(msg) + 24*len(args)) // one allocation for most lines
	b.WriteString(msg)
	for i := 0; i < len(args); i += 2 {
		var k, v string
		if i+1 < len(args) {
			k, v = text(args[i]), text(args[i+1])
		} else {
			k, v = "!BADKEY", text(args[i])
		}
		b.WriteByte(' ')
		b.WriteString(k)
		b.WriteByte('=')
		if needsQuote(v) {
			v = strconv.Quote(v)
		}
		b.WriteString(v)
	}
	return b.String()
}

// text formats v as fmt.Sprint does, without fmt for the common types.
func text(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case int:
		return strconv.Itoa(v)
	case int64:
		return strconv.FormatInt(v, 10)
	case uint64:
		return strconv.FormatUint(v, 10)
	case bool:
		return strconv.FormatBool(v)
	}
	return fmt.Sprint(v)
}

// needsQuote reports whether a logged value must be quoted: it is empty or
// holds a space, a control character, '"' or '='.
func needsQuote(v string) bool {
	if v == "" {
		return true
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c <= ' ' || c == '"' || c == '=' {
			return true
		}
	}
	return false
}
