package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/coordinatord/coordinatord/engine"
	"github.com/coordinatord/coordinatord/internal/pki"
	"github.com/coordinatord/coordinatord/server"
)

type serverFlags struct {
	config            string
	dataDir           string
	httpAddr          string
	tlsCert, tlsKey   string
	caFile            string
	nodeID            string
	datacenter        string
	cluster, env      string
	mapping           string
	trustDomain       string
	bootstrap         bool
	decisionCacheSize int
	decisionLogSize   int
	maxBodyBytes      int64
	maxModuleBytes    int64
	wasmCacheDir      string
	sinkDir           string
	clusterOpts       clusterFlags
	leaseLimits       leaseLimitFlags
	reporters         reporterFlags
	gossip            gossipFlags
	correlation       correlationFlags
}

func newServerCmd() *cobra.Command {
	var f serverFlags
	return f.command()
}

// command returns the server command, its flags bound to f.
func (f *serverFlags) command() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run a coordinatord node",
		Long: `Run a coordinatord node: the mTLS HTTP API under /v1/, the admission engine
and the Raft-replicated store in --data-dir.

The node's certificate (--tls-cert, role "coordinator") is both its server
certificate and its identity; its claims must match --node-id, --cluster,
--env and --datacenter. Client certificates are verified against --ca.

The first node of a new cluster starts with --bootstrap, which also installs
the built-in default policy. The others start with --join, naming the API
address of any member: the node asks to be added with its own certificate,
and retries until the leader has added it. Nodes talk Raft over mutual TLS on
--raft-addr and accept only peers whose certificates say role coordinator,
same cluster, same env.

With the gossip pool's key (--gossip-key-file, made with "coordinatord
keygen"), the node is also a member of the gossip pool (SWIM): it gossips on
--gossip-bind, joins --gossip-join (other servers' or agents' gossip
addresses), and takes part in telling a dead datacenter from a partition.
The leader runs the correlation engine; while it suspects a partition,
leases owned in the cut-off datacenters are held, not expired, for at most
--lease-max-hold from the detection. The --gossip-* timing flags are the
agent's (see "coordinatord agent --help") with the gossip- prefix. Without a
key the node is no gossip member.`,
		Example: `  coordinatord server --bootstrap --data-dir /var/lib/coordinatord \
    --node-id node-1 --cluster prod --env prod --datacenter dc1 \
    --tls-cert node-1.crt --tls-key node-1.key --ca ca.crt
  coordinatord server --join node-1.example:8443 --data-dir /var/lib/coordinatord \
    --node-id node-2 --cluster prod --env prod --datacenter dc1 \
    --http-addr 10.0.0.2:8443 --raft-addr 10.0.0.2:8444 \
    --tls-cert node-2.crt --tls-key node-2.key --ca ca.crt \
    --gossip-bind 10.0.0.2:7946 --gossip-join 10.0.0.1:7946 --gossip-key-file gossip.key
  coordinatord server --config /etc/coordinatord.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := applyEnvAndFile(cmd); err != nil {
				return err
			}
			logger, err := newLogger()
			if err != nil {
				return err
			}
			cfg, err := f.serverConfig(logger)
			if err != nil {
				return err
			}
			return runServer(cmd.Context(), cfg, f.clusterOpts.joinOnStart)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.config, "config", "", "YAML file of flag values (keys are flag names, e.g. data-dir)")
	fl.StringVar(&f.dataDir, "data-dir", "", "directory for the Raft log, snapshots and state (required)")
	fl.StringVar(&f.httpAddr, "http-addr", "127.0.0.1:8443", "address of the mTLS HTTP API")
	fl.StringVar(&f.tlsCert, "tls-cert", "", "the node's certificate, PEM (role coordinator; required)")
	fl.StringVar(&f.tlsKey, "tls-key", "", "the node's private key, PEM (required)")
	fl.StringVar(&f.caFile, "ca", "", "CA certificate(s) that sign client certificates, PEM (required)")
	fl.StringVar(&f.nodeID, "node-id", "", "this node's id; must equal the node claim of --tls-cert (required)")
	fl.StringVar(&f.datacenter, "datacenter", "", "datacenter the node runs in; checked against its certificate")
	fl.StringVar(&f.cluster, "cluster", "", "cluster the node serves; checked against its certificate")
	fl.StringVar(&f.env, "env", "", "environment the node serves; checked against its certificate")
	fl.StringVar(&f.mapping, "identity-mapping", string(engine.MappingSPIFFE), "how certificates carry claims: spiffe or subject")
	fl.StringVar(&f.trustDomain, "trust-domain", engine.DefaultIdentityConfig().TrustDomain, "SPIFFE trust domain of every identity")
	fl.BoolVar(&f.bootstrap, "bootstrap", false, "bootstrap a new cluster with this node as its first voter")
	fl.IntVar(&f.decisionCacheSize, "decision-cache-size", server.DefaultConfig().DecisionCacheSize, "admission decisions to cache (0 disables the cache)")
	fl.IntVar(&f.decisionLogSize, "decision-log-size", server.DefaultConfig().DecisionLogSize, "recent decisions kept for GET /v1/decisions")
	fl.Int64Var(&f.maxBodyBytes, "max-body-bytes", server.DefaultConfig().MaxBodyBytes, "largest accepted request body")
	fl.Int64Var(&f.maxModuleBytes, "max-module-bytes", server.DefaultConfig().MaxModuleBytes, "largest accepted Wasm module upload (give every node the same)")
	fl.StringVar(&f.wasmCacheDir, "wasm-cache-dir", "", "Wasm compilation cache (default: DATA_DIR/wasm-cache)")
	fl.StringVar(&f.sinkDir, "sink-dir", "", "directory that reporter modules' file sinks write under (default: DATA_DIR/sinks)")
	f.clusterOpts.addFlags(fl)
	f.leaseLimits.addFlags(fl)
	f.reporters.addFlags(fl)
	f.gossip.addFlags(fl, "gossip-")
	f.correlation.addFlags(fl)
	return cmd
}

// serverConfig checks the flags and loads the TLS material they name.
func (f *serverFlags) serverConfig(logger *slog.Logger) (server.Config, error) {
	cfg := server.DefaultConfig()
	required := []struct{ flag, value string }{
		{"--data-dir", f.dataDir}, {"--tls-cert", f.tlsCert}, {"--tls-key", f.tlsKey},
		{"--ca", f.caFile}, {"--node-id", f.nodeID},
	}
	for _, r := range required {
		if r.value == "" {
			return cfg, fmt.Errorf("%s is required (or %s, or the config file key %s)", r.flag, envName(r.flag[2:]), r.flag[2:])
		}
	}
	cert, err := loadX509KeyPair(f.tlsCert, f.tlsKey)
	if err != nil {
		return cfg, fmt.Errorf("--tls-cert/--tls-key: %w", err)
	}
	pool, err := pki.LoadPool(f.caFile)
	if err != nil {
		return cfg, fmt.Errorf("--ca: %w", err)
	}
	cfg.NodeID = f.nodeID
	cfg.DataDir = f.dataDir
	cfg.HTTPAddr = f.httpAddr
	cfg.Certificate = cert
	cfg.ClientCAs = pool
	cfg.Identity = engine.IdentityConfig{Mapping: engine.Mapping(f.mapping), TrustDomain: f.trustDomain}
	if err := cfg.Identity.Validate(); err != nil {
		return cfg, fmt.Errorf("--identity-mapping/--trust-domain: %w", err)
	}
	cfg.Expect = engine.Claims{Cluster: f.cluster, Env: f.env, Datacenter: f.datacenter}
	cfg.Bootstrap = f.bootstrap
	cfg.Logger = logger
	cfg.DecisionCacheSize = f.decisionCacheSize
	cfg.DecisionLogSize = f.decisionLogSize
	cfg.MaxBodyBytes = f.maxBodyBytes
	cfg.MaxModuleBytes = f.maxModuleBytes
	cfg.WasmCacheDir = f.wasmCacheDir
	cfg.Reporters.SinkDir = f.sinkDir
	if err := f.clusterOpts.apply(&cfg); err != nil {
		return cfg, err
	}
	if err := f.leaseLimits.apply(&cfg); err != nil {
		return cfg, err
	}
	if err := f.reporters.apply(&cfg); err != nil {
		return cfg, err
	}
	if err := f.correlation.apply(&cfg); err != nil {
		return cfg, err
	}
	if err := serverGossip(&f.gossip, &cfg, logger); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// runServer runs a node until SIGINT or SIGTERM, or until serving fails.
// started, when set, is called once the API listens; its error stops the
// node.
func runServer(ctx context.Context, cfg server.Config, started func(context.Context, *server.Server) error) error {
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	srv, err := server.New(cfg)
	if err != nil {
		return err
	}
	if err := srv.Start(); err != nil {
		return errors.Join(err, srv.Close())
	}
	if started != nil {
		if err := started(ctx, srv); err != nil {
			return errors.Join(err, srv.Close())
		}
	}
	var serveErr error
	select {
	case <-ctx.Done():
		cfg.Logger.Info("shutting down", "node", cfg.NodeID)
	case <-srv.Served():
		serveErr = fmt.Errorf("node %s: API stopped: %w", cfg.NodeID, srv.ServeErr())
	}
	done := make(chan error, 1)
	go func() { done <- srv.Close() }()
	select {
	case err := <-done:
		return errors.Join(serveErr, err)
	case <-time.After(30 * time.Second):
		return errors.Join(serveErr, fmt.Errorf("node %s: shutdown took longer than 30s", cfg.NodeID))
	}
}

func loadX509KeyPair(certFile, keyFile string) (tls.Certificate, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return cert, fmt.Errorf("load %s / %s: %w", certFile, keyFile, err)
	}
	return cert, nil
}
