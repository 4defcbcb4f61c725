package wasm

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
)

// Host function limits (ABI.md).
const (
	// maxFailBytes is how much of the text given to fail is kept.
	maxFailBytes = 1 << 10
	// maxLineBytes is the longest log line kept; longer ones are cut.
	maxLineBytes = 4 << 10
)

// LogLine is one line a module logged during a call: through the host
// function log, or written to stdout or stderr.
type LogLine struct {
	Level slog.Level `json:"level"`
	// Stream is "log", "stdout" or "stderr".
	Stream string `json:"stream"`
	Text   string `json:"text"`
}

// callState is one call in progress on one instance. It is the context
// the sandbox hands wazero, so host functions find it with a type
// assertion on their ctx. Only the goroutine running the call touches it.
type callState struct {
	context.Context
	m *module
	// inHandler is set while the handler runs (not during instantiation,
	// _initialize or coordinatord_alloc): output is accepted only then.
	inHandler    bool
	outputCalled bool
	output       []byte
	failText     string
	logs         []LogLine
	dropped      int
	// partial holds the unterminated end of stdout (0) and stderr (1).
	partial [2][]byte
	// stderrHead is the first lines written to stderr, rate limit or not:
	// a guest runtime's last words before proc_exit (Go's "panic: ...").
	stderrHead []string
}

// stderrHeadLines and stderrHeadBytes bound callState.stderrHead.
const (
	stderrHeadLines = 3
	stderrHeadBytes = 256
)

type callKey struct{}

// Value answers callKey with the state, for a ctx that wraps it.
func (st *callState) Value(k any) any {
	if k == (callKey{}) {
		return st
	}
	return st.Context.Value(k)
}

func stateOf(ctx context.Context) *callState {
	if st, ok := ctx.(*callState); ok {
		return st
	}
	st, _ := ctx.Value(callKey{}).(*callState)
	return st
}

// hostTrap is what a host function panics with to end a call; wazero
// recovers it and returns it wrapped with the guest stack.
type hostTrap struct {
	kind, msg string
}

func (t *hostTrap) Error() string { return t.msg }

func trapf(kind, format string, args ...any) *hostTrap {
	return &hostTrap{kind: kind, msg: fmt.Sprintf(format, args...)}
}

// instantiateHost adds the "coordinatord" host module to r.
func instantiateHost(ctx context.Context, r wazero.Runtime) error {
	b := r.NewHostModuleBuilder(HostModule)
	b.NewFunctionBuilder().
		WithGoModuleFunction(api.GoModuleFunc(hostOutput), []api.ValueType{i32, i32}, nil).
		WithParameterNames("ptr", "len").Export("output")
	b.NewFunctionBuilder().
		WithGoModuleFunction(api.GoModuleFunc(hostLog), []api.ValueType{i32, i32, i32}, nil).
		WithParameterNames("level", "ptr", "len").Export("log")
	b.NewFunctionBuilder().
		WithGoModuleFunction(api.GoModuleFunc(hostFail), []api.ValueType{i32, i32}, nil).
		WithParameterNames("ptr", "len").Export("fail")
	_, err := b.Instantiate(ctx)
	return err
}

// read returns guest memory [ptr, ptr+n) or traps naming fn.
func read(fn string, mod api.Module, ptr, n uint32) []byte {
	mem := mod.Memory()
	if mem == nil {
		panic(trapf(FailTrap, "%s: the module has no memory", fn))
	}
	b, ok := mem.Read(ptr, n)
	if !ok {
		panic(trapf(FailTrap, "%s: [%d, %d) is outside memory (%d bytes)", fn, ptr, uint64(ptr)+uint64(n), mem.Size()))
	}
	return b
}

// hostOutput is coordinatord.output(ptr, len).
func hostOutput(ctx context.Context, mod api.Module, stack []uint64) {
	ptr, n := api.DecodeU32(stack[0]), api.DecodeU32(stack[1])
	st := stateOf(ctx)
	switch {
	case st == nil || !st.inHandler:
		panic(trapf(FailTrap, "output called outside a handler call"))
	case st.outputCalled:
		panic(trapf(FailTrap, "output called a second time in one call"))
	case uint64(n) > uint64(st.m.limits.MaxOutputBytes):
		panic(trapf(FailOutputTooLarge, "output of %d bytes is over the module's limit of %d bytes", n, st.m.limits.MaxOutputBytes))
	}
	st.output = bytes.Clone(read("output", mod, ptr, n))
	st.outputCalled = true
}

// hostLog is coordinatord.log(level, ptr, len).
func hostLog(ctx context.Context, mod api.Module, stack []uint64) {
	level, ptr, n := int32(api.DecodeU32(stack[0])), api.DecodeU32(stack[1]), api.DecodeU32(stack[2])
	st := stateOf(ctx)
	if st == nil {
		return
	}
	cut := min(n, maxLineBytes)
	text := read("log", mod, ptr, cut)
	if n > cut {
		// The whole range must still be memory: a guest cannot log garbage
		// addresses just because the line is long.
		read("log", mod, ptr, n)
	}
	st.line(guestLevel(level), "log", text)
}

// hostFail is coordinatord.fail(ptr, len).
func hostFail(ctx context.Context, mod api.Module, stack []uint64) {
	ptr, n := api.DecodeU32(stack[0]), api.DecodeU32(stack[1])
	st := stateOf(ctx)
	if st == nil {
		return
	}
	st.failText = validUTF8(read("fail", mod, ptr, min(n, maxFailBytes)))
}

func guestLevel(l int32) slog.Level {
	switch {
	case l <= 0:
		return slog.LevelDebug
	case l == 1:
		return slog.LevelInfo
	case l == 2:
		return slog.LevelWarn
	}
	return slog.LevelError
}

func validUTF8(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	return strings.ToValidUTF8(string(b), "\uFFFD")
}

// line records one guest log line, if the module's rate allows it, and
// writes it to the sandbox log attributed to the module.
func (st *callState) line(level slog.Level, stream string, text []byte) {
	m := st.m
	if stream == "stderr" && len(st.stderrHead) < stderrHeadLines && len(bytes.TrimSpace(text)) > 0 {
		st.stderrHead = append(st.stderrHead, validUTF8(head(text, stderrHeadBytes)))
	}
	if !m.logRate.allow() {
		st.dropped++
		m.metrics.dropped.Inc()
		return
	}
	if len(text) > maxLineBytes {
		text = text[:maxLineBytes]
	}
	l := LogLine{Level: level, Stream: stream, Text: validUTF8(text)}
	st.logs = append(st.logs, l)
	m.s.log.LogAttrs(st, level, l.Text,
		slog.String("module", m.name), slog.String("digest", m.info.Digest), slog.String("stream", stream))
}

// write takes bytes the guest wrote to stdout (1) or stderr (2) and logs
// each complete line that is not empty.
func (st *callState) write(fd int, p []byte) {
	stream, level := "stdout", slog.LevelInfo
	if fd == 2 {
		stream, level = "stderr", slog.LevelWarn
	}
	buf := append(st.partial[fd-1], p...)
	for {
		i := bytes.IndexByte(buf, '\n')
		if i < 0 {
			break
		}
		if l := bytes.TrimSuffix(buf[:i], []byte("\r")); len(l) > 0 {
			st.line(level, stream, l)
		}
		buf = buf[i+1:]
	}
	for len(buf) > maxLineBytes {
		st.line(level, stream, buf[:maxLineBytes])
		buf = buf[maxLineBytes:]
	}
	st.partial[fd-1] = append(st.partial[fd-1][:0], buf...)
}

// flush logs what is left of unterminated stdout and stderr lines.
func (st *callState) flush() {
	for i := range st.partial {
		if len(st.partial[i]) > 0 {
			st.write(i+1, []byte{'\n'})
		}
	}
}

// stream is an instance's stdout or stderr: it forwards to the instance's
// current call.
type stream struct {
	inst *instance
	fd   int
}

func (w *stream) Write(p []byte) (int, error) {
	if st := w.inst.cur; st != nil {
		st.write(w.fd, p)
	}
	return len(p), nil
}

// rateLimiter is a token bucket of rate tokens per second holding at most
// rate tokens. Safe for concurrent use.
type rateLimiter struct {
	now  func() time.Time
	rate float64

	mu     sync.Mutex
	tokens float64
	last   time.Time
}

func newRateLimiter(perSecond int, now func() time.Time) *rateLimiter {
	return &rateLimiter{now: now, rate: float64(perSecond), tokens: float64(perSecond), last: now()}
}

func (r *rateLimiter) allow() bool {
	if r.rate == 0 {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	if elapsed := now.Sub(r.last); elapsed > 0 {
		r.tokens = min(r.rate, r.tokens+elapsed.Seconds()*r.rate)
		r.last = now
	}
	if r.tokens < 1 {
		return false
	}
	r.tokens--
	return true
}
