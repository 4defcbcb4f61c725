// Package server wires a coordinatord node together: the replicated store,
// the admission engine and the mTLS HTTP API under /v1/. Every request is
// authenticated from its client certificate and authorised by the same
// admission engine that answers peers' questions.
package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/coordinatord/coordinatord/engine"
	"github.com/coordinatord/coordinatord/policies"
	"github.com/coordinatord/coordinatord/raftstore"
	"github.com/coordinatord/coordinatord/reporters"
	"github.com/coordinatord/coordinatord/swim"
	"github.com/coordinatord/coordinatord/wasm"
)

// DefaultMaxBodyBytes bounds request bodies: a policy of the maximum size
// plus room for its JSON envelope.
const DefaultMaxBodyBytes = policies.MaxPolicyBytes + 64<<10

// DefaultMaxModuleBytes bounds Wasm module uploads, which have their own
// limit: the ABI's module size cap.
const DefaultMaxModuleBytes = wasm.DefaultMaxModuleBytes

// Config describes one node.
type Config struct {
	// NodeID names this node in Raft and in logs. It must equal the node
	// claim of the node's own certificate.
	NodeID string
	// DataDir holds the Raft log, snapshots and the state database.
	DataDir string
	// HTTPAddr is where the API listens, e.g. "127.0.0.1:8443".
	HTTPAddr string
	// HTTPAdvertise is the API address other nodes reach this one at: a
	// follower forwards requests there while this node leads. Empty means
	// the address the API listens on.
	HTTPAdvertise string
	// RaftAddr is where the Raft transport (mutual TLS) listens. Empty
	// keeps an in-memory transport: a single node that nobody can join, as
	// coordinatord dev runs.
	RaftAddr string
	// RaftAdvertise is the Raft address other nodes reach this one at, as
	// stored in the Raft configuration. Empty means RaftAddr.
	RaftAdvertise string
	// Certificate is the node's own certificate: served to clients and used
	// as the target of the node's API decisions. Its role must be
	// "coordinator".
	Certificate tls.Certificate
	// ClientCAs verifies client certificates.
	ClientCAs *x509.CertPool
	// Identity chooses the certificate mapping and trust domain.
	Identity engine.IdentityConfig
	// Expect, when its fields are set, must match the node's own
	// certificate claims (cluster, env, datacenter), so that a node started
	// with the wrong files refuses to run instead of joining the wrong
	// cluster.
	Expect engine.Claims
	// Bootstrap makes this node the first voter of a new cluster and
	// installs the default policy when the store is empty.
	Bootstrap bool
	// Raft tunes the store; NodeID, DataDir, Bootstrap, Logger, the
	// hooks and (unless set) Clock are set from this Config.
	Raft raftstore.Config
	// Clock is the node's only source of time.
	Clock func() time.Time
	// Logger receives every log record of the node.
	Logger *slog.Logger
	// MaxBodyBytes bounds request bodies.
	MaxBodyBytes int64
	// MaxModuleBytes bounds a Wasm module upload (PUT /v1/modules/{name}),
	// at most raftstore.MaxModuleBytes. Every node should have the same.
	MaxModuleBytes int64
	// WasmCacheDir holds the sandbox's compilation cache; empty means
	// DataDir/wasm-cache.
	WasmCacheDir string
	// DecisionLogSize is how many decisions GET /v1/decisions can return.
	DecisionLogSize int
	// DecisionCacheSize bounds the decision cache; 0 disables it.
	DecisionCacheSize int
	// Reporters tunes the reporter pipeline (queue, workers, sinks). An
	// empty SinkDir means DataDir/sinks; Clock and Logger default to the
	// node's.
	Reporters reporters.Config
	// Gossip, if set, makes the node a member of the gossip pool (SWIM):
	// New starts the member with this configuration, and Close leaves the
	// pool and shuts it down. The server sets Meta (its node id, the
	// datacenter of its certificate, role coordinator; a Meta.Version given
	// here is kept), NodeName, and Clock and Logger when nil. A node without
	// gossip does not observe datacenters, and does not run the correlation
	// engine when it leads.
	Gossip *swim.Config
	// Membership, if set instead of Gossip, is the node's gossip
	// membership, owned (started and stopped) by the caller: tests inject
	// a fake here.
	Membership swim.Membership
	// Correlation holds the correlation engine's thresholds
	// (engine.DefaultCorrelationConfig's reference defaults).
	Correlation engine.CorrelationConfig
	// CorrelationInterval is how often the leader's engine ticks: time-based
	// transitions (confirmations, cooldowns, the notification backoff) and
	// the hold cap are noticed within it.
	CorrelationInterval time.Duration
}

// DefaultConfig returns the configuration of a node that sets nothing but
// its identity, certificates and data dir.
func DefaultConfig() Config {
	return Config{
		HTTPAddr:          "127.0.0.1:8443",
		Identity:          engine.DefaultIdentityConfig(),
		Raft:              raftstore.DefaultConfig(),
		Clock:             time.Now,
		MaxBodyBytes:      DefaultMaxBodyBytes,
		MaxModuleBytes:    DefaultMaxModuleBytes,
		DecisionLogSize:   engine.DefaultDecisionLogSize,
		DecisionCacheSize: 10000,
		Reporters:         reporters.DefaultConfig(),
		Correlation:       engine.DefaultCorrelationConfig(),
		// A second: the engine's confirmations and windows are seconds to
		// minutes long.
		CorrelationInterval: time.Second,
	}
}

// Server is a running node.
type Server struct {
	cfg      Config
	log      *slog.Logger
	clock    func() time.Time
	self     engine.Claims
	verifier *engine.Verifier
	engine   *engine.Engine
	store    *raftstore.Store
	cluster  clusterState
	registry *prometheus.Registry
	metrics  *serverMetrics
	// sandbox runs this node's Wasm modules; modules keeps it in line with
	// the replicated module set (modules.go).
	sandbox *wasm.Sandbox
	modules *moduleInstaller
	// reporters dispatches job results and lease events to reporter
	// modules (jobs_dispatch.go).
	reporters *reporterState
	// corr is the gossip membership and the correlation engine
	// (correlation*.go); storeRef is the store for the expiry hook.
	corr     *correlationState
	storeRef storeRef

	listener net.Listener
	http     *http.Server
	// served is closed when the HTTP server stops; serveErr is then set.
	served   chan struct{}
	serveErr error

	stopSeed  context.CancelFunc
	seedDone  chan struct{}
	closeOnce sync.Once
	closeErr  error
}

// New opens the node's store and prepares its API; Start serves it.
func New(cfg Config) (*Server, error) {
	if err := validate(&cfg); err != nil {
		return nil, err
	}
	self, err := ownClaims(cfg)
	if err != nil {
		return nil, err
	}
	verifier, err := engine.NewVerifier(cfg.ClientCAs, cfg.Identity, cfg.Clock)
	if err != nil {
		return nil, fmt.Errorf("node %s: %w", cfg.NodeID, err)
	}
	log := engine.NewDecisionLog(cfg.DecisionLogSize)
	em := engine.NewMetrics(log)
	eng, err := engine.NewEngine(engine.EngineConfig{
		Clock:     cfg.Clock,
		Logger:    cfg.Logger.With("component", "admission"),
		Log:       log,
		CacheSize: cfg.DecisionCacheSize,
		Metrics:   em,
	})
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:      cfg,
		log:      cfg.Logger.With("component", "api", "node", cfg.NodeID),
		clock:    cfg.Clock,
		self:     self,
		verifier: verifier,
		engine:   eng,
		registry: prometheus.NewRegistry(),
		served:   make(chan struct{}),
		seedDone: make(chan struct{}),
	}

	if err := s.openModules(); err != nil {
		eng.Close()
		return nil, err
	}
	rc := cfg.Raft
	rc.NodeID = cfg.NodeID
	rc.DataDir = cfg.DataDir
	rc.Bootstrap = cfg.Bootstrap
	rc.Logger = cfg.Logger
	if rc.Clock == nil {
		// The node's only source of time: leases and their expiry too.
		rc.Clock = cfg.Clock
	}
	rc.OnPoliciesChanged = s.loadPolicies
	rc.OnModulesChanged = s.modules.submit
	// The expiry hook reads the committed correlation record, on whichever
	// node leads.
	rc.Hold = s.holdLease
	if rc.Transport, err = s.openTransport(); err != nil {
		eng.Close()
		_ = s.closeModules()
		return nil, err
	}
	store, err := raftstore.Open(rc)
	if err != nil {
		eng.Close()
		_ = s.closeModules()
		_ = s.closeTransport()
		return nil, fmt.Errorf("node %s: open store in %s: %w", cfg.NodeID, cfg.DataDir, err)
	}
	s.store = store
	s.storeRef.p.Store(store)
	s.startModules()
	s.metrics = newServerMetrics(store)
	s.registry.MustRegister(em.Collectors()...)
	s.registry.MustRegister(s.metrics.collectors()...)
	s.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if err := s.openReporters(s.reporterBackends()); err != nil {
		return nil, errors.Join(fmt.Errorf("node %s: reporters: %w", cfg.NodeID, err), s.Close())
	}
	if err := s.openCorrelation(); err != nil {
		return nil, errors.Join(err, s.Close())
	}
	return s, nil
}

func validate(cfg *Config) error {
	switch {
	case cfg.NodeID == "":
		return errors.New("config: node id is required")
	case cfg.DataDir == "":
		return errors.New("config: data dir is required")
	case cfg.HTTPAddr == "":
		return errors.New("config: HTTP address is required")
	case len(cfg.Certificate.Certificate) == 0:
		return errors.New("config: the node's TLS certificate is required")
	case cfg.ClientCAs == nil:
		return errors.New("config: a CA pool to verify client certificates is required")
	case cfg.Clock == nil:
		return errors.New("config: Clock is required")
	case cfg.Logger == nil:
		return errors.New("config: Logger is required")
	case cfg.MaxBodyBytes <= 0:
		return fmt.Errorf("config: max body bytes %d must be positive", cfg.MaxBodyBytes)
	case cfg.MaxModuleBytes <= 0 || cfg.MaxModuleBytes > raftstore.MaxModuleBytes:
		return fmt.Errorf("config: max module bytes %d must be in 1..%d", cfg.MaxModuleBytes, raftstore.MaxModuleBytes)
	case cfg.Gossip != nil && cfg.Membership != nil:
		return errors.New("config: Gossip and Membership exclude each other: give the configuration of a member to start, or a membership")
	case cfg.CorrelationInterval <= 0:
		return fmt.Errorf("config: correlation interval %s must be positive", cfg.CorrelationInterval)
	}
	if err := cfg.Correlation.Validate(); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	return cfg.Identity.Validate()
}

// ownClaims reads the node's identity from its own certificate, strictly,
// and checks it against the configured expectations.
func ownClaims(cfg Config) (engine.Claims, error) {
	leaf, err := x509.ParseCertificate(cfg.Certificate.Certificate[0])
	if err != nil {
		return engine.Claims{}, fmt.Errorf("node %s: parse own certificate: %w", cfg.NodeID, err)
	}
	c, err := engine.ParseClaims(leaf, cfg.Identity)
	if err != nil {
		return engine.Claims{}, fmt.Errorf("node %s: own certificate: %w", cfg.NodeID, err)
	}
	if c.Role != engine.RoleCoordinator {
		return engine.Claims{}, fmt.Errorf("node %s: own certificate has role %q; a coordinatord node needs role %q", cfg.NodeID, c.Role, engine.RoleCoordinator)
	}
	checks := []struct{ claim, want, got string }{
		{"node", cfg.NodeID, c.Node},
		{"cluster", cfg.Expect.Cluster, c.Cluster},
		{"env", cfg.Expect.Env, c.Env},
		{"datacenter", cfg.Expect.Datacenter, c.Datacenter},
	}
	for _, k := range checks {
		if k.want != "" && k.want != k.got {
			return engine.Claims{}, fmt.Errorf("node %s: own certificate claims %s %q, but the node is configured with %q", cfg.NodeID, k.claim, k.got, k.want)
		}
	}
	return c, nil
}

// loadPolicies is the store's policy hook: it runs inside the state
// machine, so the engine is re-prepared before a policy write returns.
func (s *Server) loadPolicies(revision uint64, ps []policies.Policy) {
	if err := s.engine.Load(context.Background(), revision, ps); err != nil {
		// The policies were validated before they were committed, so this
		// is a node-local fault (e.g. a different OPA version): keep the old
		// set and make it loud.
		s.cfg.Logger.Error("policy set not loaded; this node keeps its previous policies",
			"node", s.cfg.NodeID, "policy_revision", revision, "error", err)
		s.metrics.policyLoadErrors.Inc()
	}
}

// Start listens and serves the API, and on a bootstrap node installs the
// default policy once the node leads.
func (s *Server) Start() error {
	ln, err := net.Listen("tcp", s.cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("node %s: listen on %s: %w", s.cfg.NodeID, s.cfg.HTTPAddr, err)
	}
	s.listener = ln
	s.http = &http.Server{
		Handler:           s.routes(),
		TLSConfig:         s.tlsConfig(),
		ConnContext:       connContext,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second,
		IdleTimeout:       5 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	go func() {
		defer close(s.served)
		if err := s.http.ServeTLS(ln, "", ""); !errors.Is(err, http.ErrServerClosed) {
			s.serveErr = err
		}
	}()

	ctx, cancel := context.WithCancel(context.Background())
	s.stopSeed = cancel
	go func() {
		defer close(s.seedDone)
		s.seedDefaultPolicy(ctx)
	}()
	s.startRegistration()
	s.startReporters()
	s.startCorrelation()
	s.log.Info("serving", "addr", ln.Addr().String(), "self", s.self.SPIFFEID, "bootstrap", s.cfg.Bootstrap)
	return nil
}

// WaitReady waits until the node knows a leader and has loaded a policy
// set, the same conditions as GET /v1/ready.
func (s *Server) WaitReady(ctx context.Context) error {
	if err := s.store.WaitForLeader(ctx); err != nil {
		return fmt.Errorf("node %s: wait for a leader: %w", s.cfg.NodeID, err)
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for s.engine.Revision() == 0 {
		select {
		case <-ctx.Done():
			return fmt.Errorf("node %s: no admission policy loaded: %w", s.cfg.NodeID, ctx.Err())
		case <-tick.C:
		}
	}
	return nil
}

// Addr is the address the API listens on (useful with port 0).
func (s *Server) Addr() string { return s.listener.Addr().String() }

// Served is closed when the API stops serving; ServeErr then says why (nil
// after Close).
func (s *Server) Served() <-chan struct{} { return s.served }

// ServeErr is the error that stopped the API, once Served is closed.
func (s *Server) ServeErr() error {
	<-s.served
	return s.serveErr
}

func (s *Server) tlsConfig() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{s.cfg.Certificate},
		// Verification happens per request in authenticate, so that a
		// rejected certificate gets an HTTP answer naming its defect
		// instead of a bare TLS alert.
		ClientAuth: tls.RequireAnyClientCert,
		NextProtos: []string{"h2", "http/1.1"},
	}
}

// seedDefaultPolicy installs the built-in policy on a fresh bootstrap node.
// The write is conditional on an empty policy set, so a restart or a second
// bootstrap never overwrites an operator's policies.
func (s *Server) seedDefaultPolicy(ctx context.Context) {
	if !s.cfg.Bootstrap {
		return
	}
	if err := s.store.WaitForLeader(ctx); err != nil {
		if ctx.Err() == nil {
			s.log.Error("no leader; default policy not installed", "error", err)
		}
		return
	}
	if !s.store.IsLeader() || s.store.PolicyRevision() > 0 {
		return
	}
	p := policies.Default()
	p.UpdatedAt = s.clock()
	p.UpdatedBy = s.self.SPIFFEID
	zero := uint64(0)
	stored, err := s.store.PutPolicy(ctx, p, &zero)
	switch {
	case errors.Is(err, raftstore.ErrConflict):
		s.log.Debug("policies already present; default policy not installed")
	case err != nil:
		s.log.Error("install default policy", "error", err)
	default:
		s.log.Info("installed the default policy", "policy", stored.ID, "policy_revision", stored.Revision)
	}
}

// Close stops serving, then closes the store. It is safe to call twice.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		if s.stopSeed != nil {
			s.stopSeed()
			<-s.seedDone
		}
		s.stopRegistration()
		var errs []error
		// The engine submits to the reporters and reads the store: stop it
		// first, then leave the gossip pool.
		if err := s.closeCorrelation(); err != nil {
			errs = append(errs, fmt.Errorf("close gossip: %w", err))
		}
		if s.http != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := s.http.Shutdown(ctx); err != nil {
				errs = append(errs, fmt.Errorf("shut down HTTP: %w", err))
			}
			cancel()
			if err := s.ServeErr(); err != nil {
				errs = append(errs, fmt.Errorf("serve: %w", err))
			}
		}
		if err := s.closeReporters(); err != nil {
			errs = append(errs, fmt.Errorf("close reporters: %w", err))
		}
		// The installer reads the store: stop it first.
		s.modules.stop()
		if err := s.store.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close store: %w", err))
		}
		if err := s.closeModules(); err != nil {
			errs = append(errs, fmt.Errorf("close wasm sandbox: %w", err))
		}
		if err := s.closeTransport(); err != nil {
			errs = append(errs, fmt.Errorf("close raft transport: %w", err))
		}
		s.engine.Close()
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}

// Engine exposes the node's admission engine (for benchmarks and tests).
func (s *Server) Engine() *engine.Engine { return s.engine }

// Store exposes the node's replicated store.
func (s *Server) Store() *raftstore.Store { return s.store }

// Self returns the node's own claims.
func (s *Server) Self() engine.Claims { return s.self }
