package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/coordinatord/coordinatord/api"
	"github.com/coordinatord/coordinatord/raftstore"
	"github.com/coordinatord/coordinatord/reporters"
	"github.com/coordinatord/coordinatord/wasm"
)

// Every node installs every module. The store's OnModulesChanged hook runs
// on Raft's state machine goroutine, which must not wait for a compile, so
// it only hands the newest module set to the node's installer, a goroutine
// that brings the sandbox in line with it: it installs each module whose
// version it does not run yet and removes the names that are gone. Sets
// that arrive while it works are coalesced: only the newest matters.
//
// A module that fails to install on a node (it was validated and compiled
// on the leader before it was committed, so this is a node-local fault: a
// full disk, another wazero) is logged at error level, counted, and shown
// in GET /v1/modules for that node; the node keeps the version it ran
// before, if any. The installer does not retry a version that failed; the
// next write of the name does.

// moduleInstallWait bounds how long a write on the leader waits for the
// module to be installed there before answering.
const moduleInstallWait = 30 * time.Second

// installedModule is a version of a module running in this node's sandbox.
type installedModule struct {
	version     uint64
	digest      string
	manifest    api.ModuleManifest
	handlers    []string
	sinks       []reporters.SinkSpec
	installedAt time.Time
}

// moduleState is what the installer knows of one module name.
type moduleState struct {
	// installed is the version the sandbox runs, nil if none.
	installed *installedModule
	// failedVersion is the last version that failed to install, with why.
	failedVersion uint64
	failure       error
}

type moduleSetUpdate struct {
	revision uint64
	list     []raftstore.Module
}

// moduleInstaller keeps the node's sandbox in line with the replicated
// module set.
type moduleInstaller struct {
	sb       *wasm.Sandbox
	node     string
	log      *slog.Logger
	clock    func() time.Time
	failures *prometheus.CounterVec
	// readBytes reads a module's bytes from the store; set before start.
	readBytes func(digest string) ([]byte, error)

	// mu guards the fields below.
	mu sync.Mutex
	// pending is the newest set the installer has not started on.
	pending *moduleSetUpdate
	// done is the revision of the last set fully processed; doneCh is
	// closed and replaced whenever it moves or the installer stops.
	done   uint64
	doneCh chan struct{}
	states map[string]*moduleState
	// reporters is the immutable list handed to the reporter pipeline,
	// replaced (never modified) after each set.
	reporters []reporters.Reporter
	stopped   bool

	wake   chan struct{}
	cancel context.CancelFunc
	exited chan struct{}
}

func newModuleInstaller(sb *wasm.Sandbox, node string, log *slog.Logger, clock func() time.Time) *moduleInstaller {
	return &moduleInstaller{
		sb:     sb,
		node:   node,
		log:    log.With("component", "modules", "node", node),
		clock:  clock,
		doneCh: make(chan struct{}),
		states: make(map[string]*moduleState),
		wake:   make(chan struct{}, 1),
		exited: make(chan struct{}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coordinatord_module_install_failures_total",
			Help: "Module versions this node failed to install in its sandbox, by module.",
		}, []string{"module"}),
	}
}

// submit is the store's OnModulesChanged hook: it records the set and
// returns at once.
func (mi *moduleInstaller) submit(revision uint64, ms []raftstore.Module) {
	mi.mu.Lock()
	mi.pending = &moduleSetUpdate{revision: revision, list: ms}
	mi.mu.Unlock()
	select {
	case mi.wake <- struct{}{}:
	default:
	}
}

// start runs the installer until stop; readBytes must be set.
func (mi *moduleInstaller) start() {
	ctx, cancel := context.WithCancel(context.Background())
	mi.cancel = cancel
	go mi.run(ctx)
}

// stop ends the installer and waits for it. An install in progress is
// cancelled.
func (mi *moduleInstaller) stop() {
	if mi.cancel == nil {
		return
	}
	mi.cancel()
	<-mi.exited
	mi.mu.Lock()
	mi.stopped = true
	close(mi.doneCh)
	mi.doneCh = make(chan struct{})
	mi.mu.Unlock()
}

func (mi *moduleInstaller) run(ctx context.Context) {
	defer close(mi.exited)
	for {
		select {
		case <-ctx.Done():
			return
		case <-mi.wake:
		}
		mi.mu.Lock()
		set := mi.pending
		mi.pending = nil
		mi.mu.Unlock()
		if set == nil {
			continue
		}
		mi.reconcile(ctx, set)
		if ctx.Err() != nil {
			return
		}
		mi.mu.Lock()
		mi.done = set.revision
		close(mi.doneCh)
		mi.doneCh = make(chan struct{})
		mi.mu.Unlock()
	}
}

// reconcile installs and removes modules until the sandbox runs set.
func (mi *moduleInstaller) reconcile(ctx context.Context, set *moduleSetUpdate) {
	want := make(map[string]bool, len(set.list))
	for _, m := range set.list {
		want[m.Name] = true
		mi.mu.Lock()
		st := mi.states[m.Name]
		if st == nil {
			st = &moduleState{}
			mi.states[m.Name] = st
		}
		current := st.installed != nil && st.installed.version == m.Version
		failed := st.failedVersion == m.Version
		mi.mu.Unlock()
		if current || failed {
			continue
		}
		inst, err := mi.install(ctx, m)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, raftstore.ErrNotFound) {
			// The bytes went with a later write, whose set is pending.
			continue
		}
		mi.mu.Lock()
		if err != nil {
			st.failedVersion, st.failure = m.Version, err
		} else {
			st.installed, st.failedVersion, st.failure = inst, 0, nil
		}
		mi.mu.Unlock()
		if err != nil {
			mi.failures.WithLabelValues(m.Name).Inc()
			mi.log.Error("module not installed on this node; it keeps the version it ran before, if any",
				"module", m.Name, "digest", m.Digest, "version", m.Version, "error", err)
		}
	}
	mi.mu.Lock()
	var gone []string
	for name := range mi.states {
		if !want[name] {
			gone = append(gone, name)
			delete(mi.states, name)
		}
	}
	mi.mu.Unlock()
	for _, name := range gone {
		mi.sb.Remove(name)
		mi.log.Info("module removed", "module", name)
	}
	mi.publishReporters()
}

// install reads, checks and installs one module version.
func (mi *moduleInstaller) install(ctx context.Context, m raftstore.Module) (*installedModule, error) {
	start := time.Now()
	var man api.ModuleManifest
	if err := json.Unmarshal(m.Manifest, &man); err != nil {
		return nil, fmt.Errorf("decode manifest: %w", err)
	}
	kind, limits, sinks, err := resolveManifest(man)
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	bytes, err := mi.readBytes(m.Digest)
	if err != nil {
		return nil, err
	}
	info, err := mi.sb.Install(ctx, m.Name, kind, limits, bytes)
	if err != nil {
		return nil, err
	}
	inst := &installedModule{
		version:     m.Version,
		digest:      m.Digest,
		manifest:    man,
		handlers:    slices.Clone(info.Handlers),
		sinks:       sinks,
		installedAt: mi.clock(),
	}
	mi.log.Info("module installed", "module", m.Name, "digest", m.Digest, "version", m.Version,
		"kind", man.Kind, "handlers", inst.handlers, "elapsed", time.Since(start).Round(time.Microsecond))
	return inst, nil
}

// publishReporters replaces the reporter list with the installed reporters.
func (mi *moduleInstaller) publishReporters() {
	mi.mu.Lock()
	defer mi.mu.Unlock()
	list := make([]reporters.Reporter, 0, len(mi.states))
	for name, st := range mi.states {
		in := st.installed
		if in == nil || in.manifest.Kind != api.ModuleKindReporter {
			continue
		}
		list = append(list, reporters.Reporter{Name: name, Digest: in.digest, Handlers: slices.Clone(in.handlers), Sinks: slices.Clone(in.sinks)})
	}
	slices.SortFunc(list, func(a, b reporters.Reporter) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	mi.reporters = list
}

// installedReporters returns the reporter modules this node runs. The
// slice is never modified after it is returned.
func (mi *moduleInstaller) installedReporters() []reporters.Reporter {
	mi.mu.Lock()
	defer mi.mu.Unlock()
	return mi.reporters
}

// waitFor returns once the installer has processed the module set of
// revision rev or a later one, or when ctx ends or the installer stops.
func (mi *moduleInstaller) waitFor(ctx context.Context, rev uint64) error {
	for {
		mi.mu.Lock()
		done, ch, stopped := mi.done, mi.doneCh, mi.stopped
		mi.mu.Unlock()
		if done >= rev {
			return nil
		}
		if stopped {
			return errors.New("the module installer has stopped")
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// nodeState is this node's install state of record m.
func (mi *moduleInstaller) nodeState(m raftstore.Module) api.ModuleNodeState {
	out := api.ModuleNodeState{Node: mi.node, State: api.ModuleInstalling}
	mi.mu.Lock()
	defer mi.mu.Unlock()
	st := mi.states[m.Name]
	if st == nil {
		return out
	}
	if in := st.installed; in != nil {
		out.Digest, out.Version, out.Handlers, out.InstalledAt = in.digest, in.version, slices.Clone(in.handlers), in.installedAt
		if in.version == m.Version {
			out.State = api.ModuleInstalled
			return out
		}
	}
	if st.failure != nil && st.failedVersion == m.Version {
		out.State = api.ModuleFailed
		out.Error, out.ErrorCode = st.failure.Error(), errorCode(st.failure)
	}
	return out
}

// installed returns the version of module name this node runs.
func (mi *moduleInstaller) installed(name string) (installedModule, bool) {
	mi.mu.Lock()
	defer mi.mu.Unlock()
	st := mi.states[name]
	if st == nil || st.installed == nil {
		return installedModule{}, false
	}
	return *st.installed, true
}

// errorCode is the stable code of a sandbox error, or "install_failed".
func errorCode(err error) string {
	var coded interface{ Code() string }
	if errors.As(err, &coded) {
		return coded.Code()
	}
	return "install_failed"
}

// reporterModules lists the reporter modules installed on this node with
// their sinks, for the reporter pipeline: pass
// reporters.RegistryFunc(s.reporterModules). It is cheap (no copy) and
// safe for concurrent use; the slice and its elements are never modified
// after they are returned. Call a module through s.sandbox with its Name.
func (s *Server) reporterModules() []reporters.Reporter {
	return s.modules.installedReporters()
}

// sandboxCloseTimeout bounds how long Close waits for module calls in
// flight.
const sandboxCloseTimeout = 5 * time.Second

// openModules creates the node's sandbox and its installer. It runs before
// the store opens, because the store hands its module set to the installer
// during Open; startModules starts installing once the store is open.
func (s *Server) openModules() error {
	cacheDir := s.cfg.WasmCacheDir
	if cacheDir == "" {
		cacheDir = filepath.Join(s.cfg.DataDir, "wasm-cache")
	}
	sb, err := wasm.New(context.Background(), wasm.Config{
		CacheDir:       cacheDir,
		Logger:         s.cfg.Logger.With("component", "wasm", "node", s.cfg.NodeID),
		Clock:          s.cfg.Clock,
		MaxModuleBytes: int(s.cfg.MaxModuleBytes),
	})
	if err != nil {
		return fmt.Errorf("node %s: wasm sandbox: %w", s.cfg.NodeID, err)
	}
	s.sandbox = sb
	s.modules = newModuleInstaller(sb, s.cfg.NodeID, s.cfg.Logger, s.cfg.Clock)
	return nil
}

// startModules starts the installer on the open store and registers the
// sandbox's metrics.
func (s *Server) startModules() {
	s.modules.readBytes = s.store.ModuleBytes
	s.modules.start()
	s.registry.MustRegister(s.sandbox.Collectors()...)
	s.registry.MustRegister(s.modules.failures)
}

// closeModules stops the installer, then the sandbox. Calls of modules
// must have ended (HTTP shut down, reporter pipeline closed).
func (s *Server) closeModules() error {
	if s.modules != nil {
		s.modules.stop()
	}
	if s.sandbox == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), sandboxCloseTimeout)
	defer cancel()
	return s.sandbox.Close(ctx)
}
