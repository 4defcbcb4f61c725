package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/coordinatord/coordinatord/swim"
)

type agentFlags struct {
	config       string
	node         string
	datacenter   string
	leaveTimeout time.Duration
	metricsAddr  string
	gossip       gossipFlags
}

func newAgentCmd() *cobra.Command {
	var f agentFlags
	return f.command()
}

// command returns the agent command, its flags bound to f.
func (f *agentFlags) command() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run a gossip-only member (for hosts of gates, managers and workers)",
		Long: `Run a gossip-only member of the coordinatord gossip pool (SWIM, with
Lifeguard), as a Consul client agent does: it tells the coordinators that
this host and its datacenter are reachable, and takes part in probing the
others. It stores nothing and serves no API.

It joins the members named by --join (coordinators or other agents),
retrying until one answers, and logs member events. On SIGINT or SIGTERM it
leaves the pool gracefully (the others see it "left", not "dead") and exits.

All gossip is encrypted with the pool's key: --gossip-key-file (preferred;
a file made with "coordinatord keygen > key") or --gossip-key. A member
without the key cannot join.

--profile selects memberlist's timing: lan (within a datacenter, probes
every 1s) or wan (across datacenters, probes every 5s); the timing flags
override single values.

Flags can also come from the environment (COORDINATORD_<FLAG>, e.g.
COORDINATORD_GOSSIP_KEY_FILE) or a YAML file (--config, keys are flag
names); flags win over the environment, which wins over the file.`,
		Example: `  coordinatord keygen > /etc/coordinatord/gossip.key
  coordinatord agent --node worker-17 --datacenter dc2 \
    --bind 10.2.0.17:7946 --join 10.2.0.5:7946,10.2.0.6:7946 \
    --gossip-key-file /etc/coordinatord/gossip.key
  coordinatord agent --config /etc/coordinatord/agent.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := applyEnvAndFile(cmd); err != nil {
				return err
			}
			logger, err := newLogger()
			if err != nil {
				return err
			}
			cfg, err := f.swimConfig(logger)
			if err != nil {
				return err
			}
			if f.leaveTimeout <= 0 {
				return fmt.Errorf("--leave-timeout %s: must be positive", f.leaveTimeout)
			}
			return runAgent(cmd.Context(), cfg, f.leaveTimeout, f.metricsAddr, logger)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.config, "config", "", "YAML file of flag values (keys are flag names, e.g. gossip-key-file)")
	fl.StringVar(&f.node, "node", "", "this member's name, unique in the pool (required)")
	fl.StringVar(&f.datacenter, "datacenter", "", "datacenter this host is in (required)")
	fl.DurationVar(&f.leaveTimeout, "leave-timeout", 5*time.Second, "how long to wait for the leave announcement to go out on shutdown")
	fl.StringVar(&f.metricsAddr, "metrics-addr", "", "serve Prometheus metrics (gossip bytes, member counts, health score, CPU) over plain HTTP at host:port/metrics; empty: off")
	f.gossip.addFlags(fl, "")
	return cmd
}

// swimConfig checks the flags; each error names its flag.
func (f *agentFlags) swimConfig(logger *slog.Logger) (swim.Config, error) {
	for _, r := range []struct{ flag, value string }{{"--node", f.node}, {"--datacenter", f.datacenter}} {
		if r.value == "" {
			return swim.Config{}, fmt.Errorf("%s is required (or %s, or the config file key %s)", r.flag, envName(r.flag[2:]), r.flag[2:])
		}
		if strings.ContainsFunc(r.value, func(c rune) bool { return c <= ' ' || c == 0x7f }) {
			return swim.Config{}, fmt.Errorf("%s %q: must not contain whitespace or control characters", r.flag, r.value)
		}
	}
	meta := swim.Meta{NodeID: f.node, Datacenter: f.datacenter, Role: swim.RoleAgent, Version: version}
	if err := meta.Validate(); err != nil {
		return swim.Config{}, fmt.Errorf("--node/--datacenter: %w", err)
	}
	return f.gossip.swimConfig(meta, logger)
}

// runAgent runs a member until ctx ends or SIGINT/SIGTERM, logging member
// events, then leaves the pool and shuts down.
func runAgent(ctx context.Context, cfg swim.Config, leaveTimeout time.Duration, metricsAddr string, logger *slog.Logger) error {
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	// Listen for metrics first: a bad --metrics-addr fails before the
	// member joins, and the endpoint is up as soon as the member is.
	var metricsLn net.Listener
	if metricsAddr != "" {
		ln, err := net.Listen("tcp", metricsAddr)
		if err != nil {
			return fmt.Errorf("--metrics-addr: %w", err)
		}
		metricsLn = ln
	}
	m, err := swim.New(cfg)
	if err != nil {
		if metricsLn != nil {
			_ = metricsLn.Close()
		}
		if cfg.AdvertiseAddr == "" && strings.Contains(err.Error(), "private IP") {
			return fmt.Errorf("%w (set --advertise to the address other members reach this host at)", err)
		}
		return err
	}
	var metricsSrv *http.Server
	if metricsLn != nil {
		metricsSrv = serveAgentMetrics(metricsLn, m, logger)
	}
	logger.Info("agent started", "node", m.Name(), "datacenter", cfg.Meta.Datacenter,
		"addr", m.LocalMember().Addr, "join", cfg.Join, "metrics", metricsAddr)

	log := agentEventLogger{logger: logger}
	health := time.NewTicker(time.Second)
	defer health.Stop()
	lastHealth := 0
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case ev := <-m.Events():
			log.event(ev)
		case s := <-m.RTTs():
			if logger.Enabled(ctx, slog.LevelDebug) {
				logger.Debug("rtt", "member", s.Node, "datacenter", s.Datacenter, "rtt", s.RTT)
			}
		case <-health.C:
			if h := m.LocalHealth(); h != lastHealth {
				level := slog.LevelWarn
				if h < lastHealth {
					level = slog.LevelInfo
				}
				logger.Log(ctx, level, "local health score changed (0 is healthy)", "score", h, "previous", lastHealth)
				lastHealth = h
			}
		}
	}

	logger.Info("leaving the gossip pool", "node", m.Name(), "timeout", leaveTimeout)
	var errs []error
	if err := m.Leave(leaveTimeout); err != nil {
		logger.Warn("leave not confirmed; the others will see this member fail instead", "error", err)
	}
	if err := m.Shutdown(); err != nil {
		errs = append(errs, err)
	}
	for ev := range m.Events() { // closed by Shutdown
		log.event(ev)
	}
	if metricsSrv != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		errs = append(errs, metricsSrv.Shutdown(sctx))
		cancel()
	}
	logger.Info("agent stopped", "node", m.Name())
	return errors.Join(errs...)
}

// agentEventLogger logs member events, and the events lost to a full
// channel (a gap in Seq).
type agentEventLogger struct {
	logger  *slog.Logger
	lastSeq uint64
}

func (l *agentEventLogger) event(ev swim.Event) {
	if ev.Seq > l.lastSeq+1 {
		l.logger.Warn("member events lost (the event channel was full)", "lost", ev.Seq-l.lastSeq-1)
	}
	l.lastSeq = ev.Seq
	level := slog.LevelInfo
	if ev.State == swim.StateSuspect || ev.State == swim.StateDead {
		level = slog.LevelWarn
	}
	l.logger.Log(context.Background(), level, "member "+string(ev.State),
		"member", ev.Member.Name, "datacenter", ev.Member.Meta.Datacenter, "role", ev.Member.Meta.Role,
		"addr", ev.Member.Addr, "previous", ev.Previous, "version", ev.Member.Meta.Version)
}

// serveAgentMetrics serves the member's metrics, with the Go runtime's and
// the process's (CPU, memory), on ln at /metrics.
func serveAgentMetrics(ln net.Listener, m *swim.Memberlist, logger *slog.Logger) *http.Server {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(m.Collectors()...)
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("metrics server stopped", "addr", ln.Addr().String(), "error", err)
		}
	}()
	return srv
}

// gossipFlags are the gossip settings: addresses, key, profile and
// timing. The agent registers them with no prefix (--bind, --join); a
// server registers them with the prefix "gossip-" (--gossip-bind,
// --gossip-join). The key flags are --gossip-key and --gossip-key-file
// either way, and so are the flags that already start with "gossip-".
type gossipFlags struct {
	prefix          string
	fs              *pflag.FlagSet
	bind, advertise string
	join            []string
	retryJoin       time.Duration
	deadRetention   time.Duration
	key, keyFile    string
	profile         string
	// loss is the hidden chaos option --gossip-loss.
	loss float64
}

// enabled reports whether a gossip key was given: a server is a gossip
// member only then.
func (f *gossipFlags) enabled() bool { return f.key != "" || f.keyFile != "" }

// changed lists the gossip flags that were set (by flag, environment or
// config file), for a server that was given gossip flags but no key.
func (f *gossipFlags) changed() []string {
	var out []string
	f.fs.VisitAll(func(fl *pflag.Flag) {
		if fl.Changed && (strings.HasPrefix(fl.Name, "gossip-") || f.prefix == "") {
			out = append(out, "--"+fl.Name)
		}
	})
	return out
}

// name is the flag name for base under f's prefix.
func (f *gossipFlags) name(base string) string {
	if strings.HasPrefix(base, "gossip-") {
		return base
	}
	return f.prefix + base
}

// timingFlags lists the timing flags: name, the Timing field it sets (for
// errors), and whether it is a duration or a count.
var timingFlags = []struct {
	base, field, help string
	dur               func(*swim.Timing) *time.Duration
	num               func(*swim.Timing) *int
}{
	{base: "probe-interval", field: "ProbeInterval", help: "time between probes (each of the next peer, round robin)", dur: func(t *swim.Timing) *time.Duration { return &t.ProbeInterval }},
	{base: "probe-timeout", field: "ProbeTimeout", help: "time a direct probe waits for its ack before indirect probes", dur: func(t *swim.Timing) *time.Duration { return &t.ProbeTimeout }},
	{base: "indirect-checks", field: "IndirectChecks", help: "peers asked to probe a member whose direct probe failed", num: func(t *swim.Timing) *int { return &t.IndirectChecks }},
	{base: "suspicion-mult", field: "SuspicionMult", help: "a suspect is dead after this many probe intervals (times log10 of the pool size) when confirmed", num: func(t *swim.Timing) *int { return &t.SuspicionMult }},
	{base: "suspicion-max-timeout-mult", field: "SuspicionMaxTimeoutMult", help: "an unconfirmed suspicion lasts up to this many times longer", num: func(t *swim.Timing) *int { return &t.SuspicionMaxTimeoutMult }},
	{base: "retransmit-mult", field: "RetransmitMult", help: "each gossip message is retransmitted this many times log(N+1)", num: func(t *swim.Timing) *int { return &t.RetransmitMult }},
	{base: "gossip-interval", field: "GossipInterval", help: "time between gossip rounds", dur: func(t *swim.Timing) *time.Duration { return &t.GossipInterval }},
	{base: "gossip-nodes", field: "GossipNodes", help: "peers per gossip round", num: func(t *swim.Timing) *int { return &t.GossipNodes }},
	{base: "push-pull-interval", field: "PushPullInterval", help: "time between full state syncs with a random peer (0 disables)", dur: func(t *swim.Timing) *time.Duration { return &t.PushPullInterval }},
	{base: "dead-member-time", field: "GossipToTheDeadTime", help: "how long a dead member is still gossiped to and listed", dur: func(t *swim.Timing) *time.Duration { return &t.GossipToTheDeadTime }},
}

func (f *gossipFlags) addFlags(fl *pflag.FlagSet, prefix string) {
	f.prefix, f.fs = prefix, fl
	fl.StringVar(&f.bind, f.name("bind"), net.JoinHostPort("0.0.0.0", strconv.Itoa(swim.DefaultPort)),
		"IP address (and :port) gossip listens on, UDP and TCP")
	fl.StringVar(&f.advertise, f.name("advertise"), "",
		"IP address (and :port) other members reach this one at (default: the bind address; for 0.0.0.0 a private address of this host)")
	fl.StringSliceVar(&f.join, f.name("join"), nil, "gossip address(es) of members to join, host:port, comma-separated; retried until one answers")
	fl.DurationVar(&f.retryJoin, f.name("retry-join-interval"), swim.DefaultLANConfig().RetryJoinInterval, "pause between attempts to join while none of --"+f.name("join")+" answers")
	fl.DurationVar(&f.deadRetention, f.name("dead-member-retention"), swim.DefaultLANConfig().DeadMemberRetention,
		"how long a dead member is still listed and counted dead in its datacenter after gossip forgets it (0: forgotten with gossip)")
	fl.StringVar(&f.keyFile, "gossip-key-file", "", "file holding the pool's gossip key, base64 (from coordinatord keygen)")
	fl.StringVar(&f.key, "gossip-key", "", "the pool's gossip key, base64 (prefer --gossip-key-file: flags show in ps)")
	fl.StringVar(&f.profile, f.name("profile"), "lan", "timing profile: lan or wan (memberlist's)")
	fl.Float64Var(&f.loss, "gossip-loss", 0, "FOR TESTING ONLY (chaos): drop this fraction, 0 to 1, of this member's outgoing gossip UDP packets")
	_ = fl.MarkHidden("gossip-loss")
	lan, wan := swim.DefaultLANConfig().Timing, swim.DefaultWANConfig().Timing
	for _, tf := range timingFlags {
		if tf.dur != nil {
			fl.Duration(f.name(tf.base), 0, fmt.Sprintf("%s (default: the profile's, lan %s, wan %s)", tf.help, *tf.dur(&lan), *tf.dur(&wan)))
		} else {
			fl.Int(f.name(tf.base), 0, fmt.Sprintf("%s (default: the profile's, lan %d, wan %d)", tf.help, *tf.num(&lan), *tf.num(&wan)))
		}
	}
}

// swimConfig builds the member configuration; each error names its flag.
func (f *gossipFlags) swimConfig(meta swim.Meta, logger *slog.Logger) (swim.Config, error) {
	var cfg swim.Config
	switch f.profile {
	case "lan":
		cfg = swim.DefaultLANConfig()
	case "wan":
		cfg = swim.DefaultWANConfig()
	default:
		return cfg, fmt.Errorf("--%s %q: must be lan or wan", f.name("profile"), f.profile)
	}
	cfg.Meta, cfg.NodeName, cfg.Logger = meta, meta.NodeID, logger

	var err error
	if cfg.BindAddr, cfg.BindPort, err = parseGossipAddr(f.bind, swim.DefaultPort); err != nil {
		return cfg, fmt.Errorf("--%s %q: %w", f.name("bind"), f.bind, err)
	}
	if f.advertise != "" {
		if cfg.AdvertiseAddr, cfg.AdvertisePort, err = parseGossipAddr(f.advertise, 0); err != nil {
			return cfg, fmt.Errorf("--%s %q: %w", f.name("advertise"), f.advertise, err)
		}
		if net.ParseIP(cfg.AdvertiseAddr).IsUnspecified() {
			return cfg, fmt.Errorf("--%s %q: other members cannot reach an unspecified address", f.name("advertise"), f.advertise)
		}
	}
	for _, a := range f.join {
		if err := swim.ValidateJoinAddr(a); err != nil {
			return cfg, fmt.Errorf("--%s %q: %w", f.name("join"), a, err)
		}
	}
	cfg.Join = f.join
	if f.retryJoin <= 0 {
		return cfg, fmt.Errorf("--%s %s: must be positive", f.name("retry-join-interval"), f.retryJoin)
	}
	cfg.RetryJoinInterval = f.retryJoin
	if f.deadRetention < 0 {
		return cfg, fmt.Errorf("--%s %s: must not be negative", f.name("dead-member-retention"), f.deadRetention)
	}
	cfg.DeadMemberRetention = f.deadRetention

	switch {
	case f.key != "" && f.keyFile != "":
		return cfg, errors.New("--gossip-key and --gossip-key-file: give one, not both")
	case f.key != "":
		if cfg.SecretKey, err = swim.ParseKey(f.key); err != nil {
			return cfg, fmt.Errorf("--gossip-key: %w", err)
		}
	case f.keyFile != "":
		raw, err := os.ReadFile(f.keyFile)
		if err != nil {
			return cfg, fmt.Errorf("--gossip-key-file: %w", err)
		}
		if cfg.SecretKey, err = swim.ParseKey(string(raw)); err != nil {
			return cfg, fmt.Errorf("--gossip-key-file %s: %w", f.keyFile, err)
		}
	default:
		return cfg, fmt.Errorf("a gossip key is required: --gossip-key-file or --gossip-key (make one with coordinatord keygen)")
	}

	for _, tf := range timingFlags {
		fl := f.fs.Lookup(f.name(tf.base))
		if fl == nil || !fl.Changed {
			continue
		}
		if tf.dur != nil {
			*tf.dur(&cfg.Timing), err = f.fs.GetDuration(fl.Name)
		} else {
			*tf.num(&cfg.Timing), err = f.fs.GetInt(fl.Name)
		}
		if err != nil {
			return cfg, fmt.Errorf("--%s: %w", fl.Name, err)
		}
	}
	cfg.PollInterval = cfg.Timing.ProbeInterval / 5 // the profiles' rule
	if !(f.loss >= 0 && f.loss <= 1) {
		return cfg, fmt.Errorf("--gossip-loss %v: must be between 0 and 1", f.loss)
	}
	if loss := f.loss; loss > 0 {
		logger.Warn("gossip packet loss injected: a testing option, never for production", "gossip_loss", loss)
		cfg.WrapTransport = func(tr memberlist.NodeAwareTransport) memberlist.NodeAwareTransport {
			lt, err := swim.NewLossyTransport(tr, swim.LossyConfig{Loss: loss})
			if err != nil { // cannot happen: the loss is checked above
				logger.Error("gossip loss not injected", "error", err)
				return tr
			}
			return lt
		}
	}
	if err := cfg.Validate(); err != nil {
		// Name the flags rather than the Timing fields.
		var pairs []string
		for _, tf := range timingFlags {
			pairs = append(pairs, "Timing."+tf.field, "--"+f.name(tf.base))
		}
		return cfg, errors.New(strings.NewReplacer(pairs...).Replace(err.Error()))
	}
	return cfg, nil
}

// parseGossipAddr parses "IP" or "IP:port" (IPv6 in brackets with a
// port); memberlist binds to and advertises addresses, not host names.
func parseGossipAddr(s string, defaultPort int) (string, int, error) {
	host, portStr, err := net.SplitHostPort(s)
	if err != nil {
		host, portStr = strings.Trim(s, "[]"), ""
	}
	if net.ParseIP(host) == nil {
		return "", 0, errors.New("want an IP address, optionally with :port (not a host name)")
	}
	port := defaultPort
	if portStr != "" {
		if port, err = strconv.Atoi(portStr); err != nil || port < 0 || port > 65535 {
			return "", 0, fmt.Errorf("port %q is not 0-65535", portStr)
		}
	}
	return host, port, nil
}
