// Package wasm is coordinatord's WebAssembly sandbox: it validates callback
// modules against the guest ABI (ABI.md in this directory), compiles them
// once (with an on-disk compilation cache), keeps a pool of instances per
// module and calls them under per-module limits: memory pages, time per
// call, output bytes and log lines per second.
//
// A module can be as broken or hostile as it likes: a trap, a timeout, a
// non-zero return, an output that is too large or not JSON, a failing
// allocator all end the call with a *CallError, throw the instance away
// (the next call gets a fresh one), count in coordinatord_wasm_failures_total
// and are reported once, with the event's datacenters and job ids, through
// the error hook (by default one error-level slog record). Nothing of it
// reaches the host or another module.
//
// Use:
//
//	sb, err := wasm.New(ctx, wasm.Config{CacheDir: dir, Logger: log})
//	info, err := sb.Install(ctx, "audit", wasm.KindReporter, wasm.DefaultLimits(), bytes)
//	call, err := wasm.NewJobResultCall(ev)
//	res := sb.Call(ctx, "audit", call) // res.Err: already reported
//	if res.Err == nil {
//		records, err := wasm.ParseReporterOutput(res.Output, sinks)
//		if err != nil {
//			sb.ReportBadOutput(ctx, "audit", call, res, err) // reported like a trap
//		}
//	}
//
// The package runs modules on wazero (compiler engine, WASI preview1 with
// no filesystem, arguments or environment; stdout and stderr go to the log,
// clocks are real, random is crypto/rand).
package wasm

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	goruntime "runtime"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
)

// ErrClosed is returned by Install and Validate after Close.
var ErrClosed = errors.New("wasm sandbox closed")

// DefaultMaxModuleBytes is the default Config.MaxModuleBytes (16 MiB).
const DefaultMaxModuleBytes = 16 << 20

// Config configures a Sandbox. New copies it; zero fields take the
// defaults documented on each.
type Config struct {
	// CacheDir holds the on-disk compilation cache (created if missing),
	// so that a module is compiled once per node and not at every start.
	// "": an in-memory cache only.
	CacheDir string
	// Logger receives guest log lines (attributed to the module) and the
	// default error hook's records. nil: slog.Default().
	Logger *slog.Logger
	// Stderr receives one plain line per failure report that the error
	// hook could not deliver (it returned an error or panicked). nil:
	// os.Stderr.
	Stderr io.Writer
	// Clock stamps reports and installations and drives the log rate
	// limit. Durations are measured with the monotonic clock regardless.
	// nil: time.Now.
	Clock func() time.Time
	// MaxModuleBytes caps a module's size. 0: DefaultMaxModuleBytes.
	MaxModuleBytes int
	// MaxIdle is how many idle instances a module keeps for the next
	// calls. 0: 2*GOMAXPROCS.
	MaxIdle int
	// MaxConcurrentCalls bounds the calls that run Wasm at the same time;
	// more wait (before their time limit starts) until one ends or their
	// ctx is done. Guests are CPU-bound and Go cannot preempt a P running
	// guest code as it would Go code, so running more calls than there
	// are Ps only makes each slower and lets healthy calls run out of time
	// behind busy ones. 0: GOMAXPROCS.
	MaxConcurrentCalls int
	// ErrorHook reports each failed call. It is called once per failure,
	// on the calling goroutine, and may be called concurrently. If it
	// returns an error or panics, a fallback line goes to Stderr. nil: one
	// error-level record on Logger (whose handler's error counts as the
	// hook's).
	ErrorHook func(ctx context.Context, f Failure) error
}

// Sandbox runs callback modules. It is safe for concurrent use; create it
// with New and release it with Close.
type Sandbox struct {
	cfg     Config
	log     *slog.Logger
	now     func() time.Time
	cache   wazero.CompilationCache
	host    hostFuncs
	metrics *metrics

	// hook reports failures: cfg.ErrorHook or logFailure. Tests replace it
	// before the first call.
	hook func(ctx context.Context, f Failure) error

	stderrMu sync.Mutex

	// slots holds a token per call running Wasm (MaxConcurrentCalls).
	slots chan struct{}

	rtMu     sync.Mutex
	runtimes map[uint32]*runtime

	// calls counts calls in flight, for Close.
	calls sync.WaitGroup

	mu      sync.RWMutex
	modules map[string]*module
	closed  bool
}

// runtime is a wazero runtime for one memory page limit, with the host
// modules instantiated. Every runtime shares the sandbox's compilation
// cache, so code compiled in one is found by the others.
type runtime struct {
	pages  uint32
	r      wazero.Runtime
	modCfg wazero.ModuleConfig
}

// New returns a sandbox configured by cfg.
func New(ctx context.Context, cfg Config) (*Sandbox, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Stderr == nil {
		cfg.Stderr = os.Stderr
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.MaxModuleBytes <= 0 {
		cfg.MaxModuleBytes = DefaultMaxModuleBytes
	}
	if cfg.MaxConcurrentCalls <= 0 {
		cfg.MaxConcurrentCalls = goruntime.GOMAXPROCS(0)
	}
	if cfg.MaxIdle <= 0 {
		cfg.MaxIdle = 2 * goruntime.GOMAXPROCS(0)
	}
	s := &Sandbox{
		cfg:      cfg,
		log:      cfg.Logger,
		now:      cfg.Clock,
		metrics:  newMetrics(),
		slots:    make(chan struct{}, cfg.MaxConcurrentCalls),
		runtimes: make(map[uint32]*runtime),
		modules:  make(map[string]*module),
	}
	s.hook = cfg.ErrorHook
	if s.hook == nil {
		s.hook = s.logFailure
	}
	if cfg.CacheDir != "" {
		c, err := wazero.NewCompilationCacheWithDir(cfg.CacheDir)
		if err != nil {
			return nil, fmt.Errorf("wasm compilation cache in %s: %w", cfg.CacheDir, err)
		}
		s.cache = c
	} else {
		s.cache = wazero.NewCompilationCache()
	}
	// The validation runtime allows the largest memory, so Validate
	// accepts what some limits could run; it also lists the host functions.
	rt, err := s.runtimeFor(ctx, MaxMemoryPages)
	if err != nil {
		_ = s.cache.Close(ctx)
		return nil, err
	}
	s.host = make(hostFuncs)
	for _, name := range []string{HostModule, wasi_snapshot_preview1.ModuleName} {
		fns := make(map[string]sig)
		for n, d := range rt.r.Module(name).ExportedFunctionDefinitions() {
			fns[n] = sigOf(d)
		}
		s.host[name] = fns
	}
	return s, nil
}

// runtimeFor returns the runtime for a page limit, creating it on first use.
func (s *Sandbox) runtimeFor(ctx context.Context, pages uint32) (*runtime, error) {
	s.rtMu.Lock()
	defer s.rtMu.Unlock()
	if rt, ok := s.runtimes[pages]; ok {
		return rt, nil
	}
	// Close sets closed before it takes rtMu to close the runtimes: a
	// runtime made here after that would never be closed.
	if s.isClosed() {
		return nil, ErrClosed
	}
	r := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfig().
		WithCloseOnContextDone(true).
		WithMemoryLimitPages(pages).
		WithCompilationCache(s.cache))
	if _, err := wasi_snapshot_preview1.Instantiate(ctx, r); err != nil {
		_ = r.Close(ctx)
		return nil, fmt.Errorf("wasm runtime (%d pages): instantiate WASI: %w", pages, err)
	}
	if err := instantiateHost(ctx, r); err != nil {
		_ = r.Close(ctx)
		return nil, fmt.Errorf("wasm runtime (%d pages): instantiate host module: %w", pages, err)
	}
	rt := &runtime{
		pages: pages,
		r:     r,
		// No arguments, environment or preopened directories; real clocks,
		// crypto random. Sleeping (poll_oneoff) returns at once, so a
		// sleeping guest spins in Wasm where its time limit can stop it.
		modCfg: wazero.NewModuleConfig().
			WithName("").
			WithStartFunctions().
			WithSysWalltime().
			WithSysNanotime().
			WithRandSource(rand.Reader),
	}
	s.runtimes[pages] = rt
	return rt, nil
}

// Close stops the sandbox: modules are removed, calls in flight are
// awaited (until ctx is done), then runtimes and the in-memory cache are
// released. The on-disk cache stays for the next start. Calls after Close
// fail with not_installed.
func (s *Sandbox) Close(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	mods := s.modules
	s.modules = map[string]*module{}
	s.mu.Unlock()
	for _, m := range mods {
		m.retire()
	}
	done := make(chan struct{})
	go func() { s.calls.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = fmt.Errorf("close wasm sandbox: calls still in flight: %w", ctx.Err())
	}
	s.rtMu.Lock()
	defer s.rtMu.Unlock()
	for _, rt := range s.runtimes {
		if cerr := rt.r.Close(context.Background()); cerr != nil && err == nil {
			err = fmt.Errorf("close wasm runtime (%d pages): %w", rt.pages, cerr)
		}
	}
	if cerr := s.cache.Close(context.Background()); cerr != nil && err == nil {
		err = fmt.Errorf("close wasm compilation cache: %w", cerr)
	}
	return err
}

// Validate checks that wasm is a module of kind under ABI v1: size cap,
// magic and version, section framing, compilation (through the cache, so
// a later Install of the same bytes does not compile again when a cache
// directory is configured), exports and imports. It installs nothing. A
// defect is a *ModuleError.
func (s *Sandbox) Validate(ctx context.Context, kind Kind, wasm []byte) (Info, error) {
	cm, info, err := s.compile(ctx, kind, wasm)
	if err != nil {
		return Info{}, err
	}
	_ = cm.Close(ctx)
	return info, nil
}

// compile validates wasm in the validation runtime and returns its
// compiled module there; the caller closes it.
func (s *Sandbox) compile(ctx context.Context, kind Kind, wasm []byte) (wazero.CompiledModule, Info, error) {
	if !kind.Valid() {
		return nil, Info{}, moduleErr(ErrUnknownKind, "%q (want %q or %q)", kind, KindCorrelation, KindReporter)
	}
	raw, merr := checkBytes(wasm, s.cfg.MaxModuleBytes)
	if merr != nil {
		return nil, Info{}, merr
	}
	if s.isClosed() {
		return nil, Info{}, ErrClosed
	}
	rt, err := s.runtimeFor(ctx, MaxMemoryPages)
	if err != nil {
		return nil, Info{}, err
	}
	cm, err := rt.r.CompileModule(ctx, wasm)
	if err != nil {
		return nil, Info{}, moduleErr(ErrCompile, "%v", err)
	}
	info, merr := checkABI(kind, cm, raw, s.host, wasm)
	if merr != nil {
		_ = cm.Close(ctx)
		return nil, Info{}, merr
	}
	return cm, info, nil
}

var validName = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// Install validates wasm like Validate and installs it as name, with
// limits (the zero Limits means DefaultLimits()). A module already
// installed under name is replaced atomically: calls that began before
// finish on it, later calls use the new one, and the old instances are
// closed when its last call ends. Errors: *LimitsError, *ModuleError,
// ErrClosed.
func (s *Sandbox) Install(ctx context.Context, name string, kind Kind, limits Limits, wasm []byte) (Info, error) {
	if !validName.MatchString(name) {
		return Info{}, moduleErr(ErrInvalidName, "%q: want 1 to 64 of [A-Za-z0-9._-]", name)
	}
	if limits == (Limits{}) {
		limits = DefaultLimits()
	}
	if err := limits.Validate(); err != nil {
		return Info{}, fmt.Errorf("install wasm module %q: %w", name, err)
	}
	vcm, info, err := s.compile(ctx, kind, wasm)
	if err != nil {
		return Info{}, fmt.Errorf("install wasm module %q: %w", name, err)
	}
	defer vcm.Close(ctx)
	if err := CheckLimits(info, limits); err != nil {
		return Info{}, fmt.Errorf("install wasm module %q (%s): %w", name, shortDigest(info.Digest), err)
	}
	rt, err := s.runtimeFor(ctx, limits.MemoryPages)
	if err != nil {
		return Info{}, err
	}
	// The code compiled for validation is still open, so this finds it in
	// the shared cache rather than compiling again.
	cm, err := rt.r.CompileModule(ctx, wasm)
	if err != nil {
		return Info{}, fmt.Errorf("install wasm module %q (%s): %w", name, shortDigest(info.Digest), moduleErr(ErrCompile, "%v", err))
	}
	m := &module{
		s:           s,
		name:        name,
		info:        info,
		limits:      limits,
		installedAt: s.now(),
		rt:          rt,
		compiled:    cm,
		logRate:     newRateLimiter(limits.LogLinesPerSecond, s.now),
		metrics:     s.metrics.forModule(name),
		maxIdle:     s.cfg.MaxIdle,
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		_ = cm.Close(ctx)
		return Info{}, ErrClosed
	}
	old := s.modules[name]
	s.modules[name] = m
	s.mu.Unlock()
	if old != nil {
		old.retire()
	}
	s.log.Debug("wasm module installed", "module", name, "digest", info.Digest, "kind", kind,
		"handlers", info.Handlers, "replaced", old != nil)
	return m.snapshot().Info, nil
}

// Remove uninstalls the module called name; calls in flight finish first.
// It reports whether there was one.
func (s *Sandbox) Remove(name string) bool {
	s.mu.Lock()
	m := s.modules[name]
	delete(s.modules, name)
	s.mu.Unlock()
	if m == nil {
		return false
	}
	m.retire()
	s.log.Debug("wasm module removed", "module", name, "digest", m.info.Digest)
	return true
}

// Installed describes an installed module.
type Installed struct {
	Name        string    `json:"name"`
	Info        Info      `json:"info"`
	Limits      Limits    `json:"limits"`
	InstalledAt time.Time `json:"installed_at"`
}

// Installed returns the installed modules, sorted by name.
func (s *Sandbox) Installed() []Installed {
	s.mu.RLock()
	out := make([]Installed, 0, len(s.modules))
	for _, m := range s.modules {
		out = append(out, m.snapshot())
	}
	s.mu.RUnlock()
	slices.SortFunc(out, func(a, b Installed) int {
		if a.Name < b.Name {
			return -1
		}
		if a.Name > b.Name {
			return 1
		}
		return 0
	})
	return out
}

// Lookup returns the module installed as name.
func (s *Sandbox) Lookup(name string) (Installed, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	m, ok := s.modules[name]
	if !ok {
		return Installed{}, false
	}
	return m.snapshot(), true
}

// Collectors returns the sandbox's Prometheus collectors, to register.
func (s *Sandbox) Collectors() []prometheus.Collector { return s.metrics.collectors() }

func (s *Sandbox) isClosed() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.closed
}

// acquire returns the module called name with a call registered on it
// (the caller calls m.end and s.calls.Done), or nil.
func (s *Sandbox) acquire(name string) (*module, *instance) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	m := s.modules[name]
	if m == nil || s.closed {
		return nil, nil
	}
	s.calls.Add(1)
	return m, m.begin()
}
