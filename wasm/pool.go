package wasm

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
)

// module is one installed version of a named module: its compiled code, its
// limits and its pool of idle instances. A replaced or removed module is
// retired: calls already holding it finish on it, then its instances and
// compiled code are closed.
type module struct {
	s           *Sandbox
	name        string
	info        Info
	limits      Limits
	installedAt time.Time
	rt          *runtime
	compiled    wazero.CompiledModule
	logRate     *rateLimiter
	metrics     moduleMetrics
	maxIdle     int

	mu       sync.Mutex
	idle     []*instance // LIFO: the most recently used is the warmest
	inflight int         // calls between begin and end
	retired  bool
}

// instance is one instantiation of a module. It serves one call at a time;
// between calls it sits in its module's idle list.
type instance struct {
	mod     api.Module
	alloc   api.Function
	handler map[string]api.Function
	stack   [2]uint64
	stdout  stream
	stderr  stream
	// cur is the call in progress, for stdout and stderr.
	cur *callState
}

// begin registers a call and takes an idle instance, if any (nil: the
// caller instantiates one). The caller must call end.
func (m *module) begin() *instance {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.inflight++
	n := len(m.idle)
	if n == 0 {
		return nil
	}
	inst := m.idle[n-1]
	m.idle[n-1] = nil
	m.idle = m.idle[:n-1]
	return inst
}

// end finishes a call registered by begin: inst (nil if none) goes back to
// the idle list when keep is set and there is room, else it is closed. The
// last call on a retired module closes its compiled code.
func (m *module) end(inst *instance, keep bool) {
	m.mu.Lock()
	m.inflight--
	if inst != nil && keep && !m.retired && len(m.idle) < m.maxIdle {
		m.idle = append(m.idle, inst)
		inst = nil
	}
	last := m.retired && m.inflight == 0
	m.mu.Unlock()
	if inst != nil {
		m.closeInstance(inst)
	}
	if last {
		_ = m.compiled.Close(context.Background())
	}
}

// retire takes m out of service: idle instances are closed now, the
// compiled code when the last call in flight ends.
func (m *module) retire() {
	m.mu.Lock()
	if m.retired {
		m.mu.Unlock()
		return
	}
	m.retired = true
	idle := m.idle
	m.idle = nil
	last := m.inflight == 0
	m.mu.Unlock()
	for _, inst := range idle {
		m.closeInstance(inst)
	}
	if last {
		_ = m.compiled.Close(context.Background())
	}
}

// instantiate makes a new instance and runs _initialize, under st (the
// call's context and state: the start code may log).
func (m *module) instantiate(st *callState) (*instance, error) {
	inst := &instance{handler: make(map[string]api.Function, len(m.info.Handlers))}
	inst.stdout = stream{inst: inst, fd: 1}
	inst.stderr = stream{inst: inst, fd: 2}
	inst.cur = st
	defer func() { inst.cur = nil }()
	cfg := m.rt.modCfg.WithStdout(&inst.stdout).WithStderr(&inst.stderr)
	mod, err := m.rt.r.InstantiateModule(st, m.compiled, cfg)
	if err != nil {
		return nil, err
	}
	m.metrics.instances.Inc()
	inst.mod = mod
	inst.alloc = mod.ExportedFunction(ExportAlloc)
	for _, h := range m.info.Handlers {
		inst.handler[h] = mod.ExportedFunction(h)
	}
	if init := mod.ExportedFunction(ExportInitialize); init != nil {
		if err := init.CallWithStack(st, inst.stack[:]); err != nil {
			m.closeInstance(inst)
			return nil, err
		}
	}
	return inst, nil
}

func (m *module) closeInstance(inst *instance) {
	_ = inst.mod.Close(context.Background())
	m.metrics.instances.Dec()
}

// snapshot describes m for Installed and Lookup.
func (m *module) snapshot() Installed {
	info := m.info
	info.Handlers = slices.Clone(info.Handlers)
	info.Imports = slices.Clone(info.Imports)
	return Installed{Name: m.name, Info: info, Limits: m.limits, InstalledAt: m.installedAt}
}
