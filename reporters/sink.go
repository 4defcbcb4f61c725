package reporters

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Sink types.
const (
	// SinkStdout writes JSON lines to the process's standard output (not
	// the log).
	SinkStdout = "stdout"
	// SinkFile appends JSON lines to a file under Config.SinkDir.
	SinkFile = "file"
	// SinkWebhook POSTs each record's data as application/json.
	SinkWebhook = "webhook"
)

// maxSinkNameLen bounds a sink's name, which modules write in every record.
const maxSinkNameLen = 64

// ErrInvalidSinkSpec is wrapped by every error of ParseSinkSpec.
var ErrInvalidSinkSpec = errors.New("invalid sink spec")

// SinkSpec is one sink an operator gave a reporter module: records whose
// "sink" is Name go to it.
type SinkSpec struct {
	// Name is what the module writes in a record's "sink": 1 to 64 bytes of
	// A-Z a-z 0-9 _ -.
	Name string
	// Type is SinkStdout, SinkFile or SinkWebhook.
	Type string
	// Target is the file's path relative to the sink directory (SinkFile),
	// the URL (SinkWebhook), or empty (SinkStdout).
	Target string
	// Timeout bounds one webhook attempt; 0 means Config.WebhookTimeout.
	Timeout time.Duration
	// Retries is how many times a webhook POST is retried after a network
	// error or a 5xx answer; 0 means Config.WebhookRetries, negative none.
	Retries int
}

// String is the spec in the form ParseSinkSpec reads.
func (s SinkSpec) String() string {
	if s.Target == "" {
		return s.Name + "=" + s.Type
	}
	return s.Name + "=" + s.Type + ":" + s.Target
}

// ParseSinkSpec reads "name=type[:target]": "audit=stdout",
// "results=file:results.jsonl", "hook=webhook:https://host/path". The error
// wraps ErrInvalidSinkSpec and names the part at fault.
func ParseSinkSpec(spec string) (SinkSpec, error) {
	bad := func(format string, args ...any) (SinkSpec, error) {
		return SinkSpec{}, fmt.Errorf("%w %q: %s", ErrInvalidSinkSpec, spec, fmt.Sprintf(format, args...))
	}
	name, rest, ok := strings.Cut(spec, "=")
	if !ok {
		return bad("no '=': a sink spec is name=type[:target], e.g. results=file:results.jsonl")
	}
	if err := validateSinkName(name); err != nil {
		return bad("name: %v", err)
	}
	typ, target, hasTarget := strings.Cut(rest, ":")
	s := SinkSpec{Name: name, Type: typ, Target: target}
	switch typ {
	case SinkStdout:
		if hasTarget {
			return bad("target: a stdout sink takes no target, got %q", target)
		}
	case SinkFile:
		if err := checkFileTarget(target); err != nil {
			return bad("target: %v", err)
		}
		s.Target = filepath.ToSlash(filepath.Clean(target))
	case SinkWebhook:
		if err := checkWebhookTarget(target); err != nil {
			return bad("target: %v", err)
		}
	case "":
		return bad("type: missing; use stdout, file or webhook")
	default:
		return bad("type: unknown type %q; use stdout, file or webhook", typ)
	}
	return s, nil
}

// ParseSinkSpecs parses a module's sink list and checks that no name
// repeats.
func ParseSinkSpecs(specs []string) ([]SinkSpec, error) {
	out := make([]SinkSpec, 0, len(specs))
	seen := make(map[string]bool, len(specs))
	for _, spec := range specs {
		s, err := ParseSinkSpec(spec)
		if err != nil {
			return nil, err
		}
		if seen[s.Name] {
			return nil, fmt.Errorf("%w %q: name: sink %q is given twice", ErrInvalidSinkSpec, spec, s.Name)
		}
		seen[s.Name] = true
		out = append(out, s)
	}
	return out, nil
}

func validateSinkName(name string) error {
	switch {
	case name == "":
		return errors.New("empty")
	case len(name) > maxSinkNameLen:
		return fmt.Errorf("longer than %d bytes", maxSinkNameLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return fmt.Errorf("%q has %q at byte %d; allowed are A-Z a-z 0-9 _ -", name, c, i)
		}
	}
	return nil
}

// checkFileTarget accepts a relative path that stays inside the sink
// directory.
func checkFileTarget(p string) error {
	switch {
	case p == "":
		return errors.New("a file sink needs a path relative to the sink directory, e.g. file:results.jsonl")
	case strings.ContainsRune(p, 0):
		return errors.New("the path contains a NUL byte")
	case filepath.IsAbs(p) || strings.HasPrefix(p, "/") || strings.HasPrefix(p, `\`):
		return fmt.Errorf("%q is absolute; file sinks are paths relative to the node's sink directory", p)
	}
	for _, el := range strings.FieldsFunc(p, func(r rune) bool { return r == '/' || r == '\\' }) {
		if el == ".." {
			return fmt.Errorf("%q leaves the sink directory (..)", p)
		}
	}
	if c := filepath.Clean(p); c == "." {
		return fmt.Errorf("%q names the sink directory itself, not a file", p)
	}
	return nil
}

func checkWebhookTarget(raw string) error {
	if raw == "" {
		return errors.New("a webhook sink needs a URL, e.g. webhook:https://host/path")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("URL %q: %v", raw, err)
	}
	if u.Scheme != "https" && u.Scheme != "http" {
		return fmt.Errorf("URL %q: scheme must be https or http", raw)
	}
	if u.Host == "" {
		return fmt.Errorf("URL %q has no host", raw)
	}
	if u.User != nil {
		return fmt.Errorf("URL %q carries credentials; sink specs are visible to module readers", raw)
	}
	return nil
}

// Sink receives the records a reporter emits. Implementations must be safe
// for concurrent use: every worker writes to it. Write must not keep data
// after it returns.
type Sink interface {
	// Write delivers one record's data (a JSON value). It may block (a
	// webhook waits for its answer) but returns when ctx ends.
	Write(ctx context.Context, data []byte) error
	// Type is the sink's type, a metric label.
	Type() string
	// Close flushes and releases the sink.
	Close() error
}

// sinkSet opens each distinct sink once and shares it between the modules
// that name it: one writer per file, one client per webhook URL.
type sinkSet struct {
	cfg *Config
	// mu guards open and closed; every record reads them, so lookups
	// share it.
	mu sync.RWMutex
	// open maps "type:target" (with a webhook's timeout and retries) to
	// its sink.
	open   map[string]Sink
	closed bool
}

func newSinkSet(cfg *Config) *sinkSet {
	return &sinkSet{cfg: cfg, open: make(map[string]Sink)}
}

func sinkKey(s SinkSpec) string {
	if s.Type == SinkWebhook {
		return fmt.Sprintf("%s:%s#%s,%d", s.Type, s.Target, s.Timeout, s.Retries)
	}
	return s.Type + ":" + s.Target
}

// get returns the sink of spec, opening it on first use.
func (ss *sinkSet) get(spec SinkSpec) (Sink, error) {
	key := sinkKey(spec)
	ss.mu.RLock()
	s, ok := ss.open[key]
	closed := ss.closed
	ss.mu.RUnlock()
	switch {
	case closed:
		return nil, ErrClosed
	case ok:
		return s, nil
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.closed {
		return nil, ErrClosed
	}
	if s, ok := ss.open[key]; ok {
		return s, nil
	}
	s, err := ss.openLocked(spec)
	if err != nil {
		return nil, err
	}
	ss.open[key] = s
	return s, nil
}

func (ss *sinkSet) openLocked(spec SinkSpec) (Sink, error) {
	switch spec.Type {
	case SinkStdout:
		// One stdout writer, whatever the sink's name.
		return newLineSink(SinkStdout, nopCloser{ss.cfg.Stdout}, ss.cfg.FlushInterval), nil
	case SinkFile:
		return openFileSink(ss.cfg.SinkDir, spec.Target, ss.cfg.FlushInterval)
	case SinkWebhook:
		timeout, retries := spec.Timeout, spec.Retries
		if timeout == 0 {
			timeout = ss.cfg.WebhookTimeout
		}
		if retries == 0 {
			retries = ss.cfg.WebhookRetries
		}
		return newWebhookSink(spec.Target, ss.cfg.HTTPClient, timeout, max(retries, 0), ss.cfg.WebhookBackoff), nil
	}
	return nil, fmt.Errorf("%w: unknown sink type %q", ErrInvalidSinkSpec, spec.Type)
}

// close flushes and closes every sink; later gets fail with ErrClosed.
func (ss *sinkSet) close() error {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.closed = true
	var errs []error
	for k, s := range ss.open {
		if err := s.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close sink %s: %w", k, err))
		}
	}
	ss.open = nil
	return errors.Join(errs...)
}
