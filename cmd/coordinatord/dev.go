package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/coordinatord/coordinatord/client"
	"github.com/coordinatord/coordinatord/engine"
	examplemodules "github.com/coordinatord/coordinatord/examples/modules"
	"github.com/coordinatord/coordinatord/internal/pki"
	"github.com/coordinatord/coordinatord/server"
	"github.com/coordinatord/coordinatord/swim"
)

// The development node's identity.
const (
	devNode       = "dev-1"
	devCluster    = "dev"
	devEnv        = "dev"
	devDatacenter = "dc1"
)

// devRoles get a certificate each in the dev data dir, named after the role.
var devRoles = []engine.Role{engine.RoleAdmin, engine.RoleClient, engine.RoleGate, engine.RoleManager, engine.RoleWorker}

func newDevCmd() *cobra.Command {
	var dataDir, httpAddr, sinkDir, gossipBind string
	var noGossip bool
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run a single development node with every default embedded",
		Long: `Run one node for development: a data dir in a temporary folder (removed on
exit unless --data-dir is given), a generated dev CA with a certificate for
each role, the built-in default policy, and a Raft store with one voter.
It prints the commands to try next.

The node is also a gossip member on loopback (--gossip-bind, 127.0.0.1:7946
by default, or a free port when that one is taken), with a gossip key
generated next to the certificates (certs/gossip.key): agents started on
this host with that key can join it, and "dc status" shows them.
--no-gossip turns gossip off.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := applyEnvAndFile(cmd, "log-level", "log-format"); err != nil {
				return err
			}
			logger, err := newLogger()
			if err != nil {
				return err
			}
			keep := dataDir != ""
			if !keep {
				if dataDir, err = os.MkdirTemp("", "coordinatord-dev-"); err != nil {
					return err
				}
				defer func() {
					if err := os.RemoveAll(dataDir); err != nil {
						logger.Error("remove dev data dir", "dir", dataDir, "error", err)
					}
				}()
			}
			certs := filepath.Join(dataDir, "certs")
			ca, err := devCertificates(certs)
			if err != nil {
				return err
			}
			cert, err := loadPair(certs, "node")
			if err != nil {
				return err
			}
			cfg := server.DefaultConfig()
			cfg.NodeID = devNode
			cfg.DataDir = filepath.Join(dataDir, "node")
			cfg.HTTPAddr = httpAddr
			cfg.Certificate = cert
			cfg.ClientCAs = ca.Pool()
			cfg.Bootstrap = true
			cfg.Logger = logger
			cfg.Reporters.SinkDir = sinkDir
			// One voter over an in-memory transport: elections need not
			// wait for a network, so the node leads within a few 100 ms.
			cfg.Raft.HeartbeatTimeout = 200 * time.Millisecond
			cfg.Raft.ElectionTimeout = 200 * time.Millisecond
			cfg.Raft.LeaderLeaseTimeout = 100 * time.Millisecond
			keyFile := ""
			if !noGossip {
				if cfg.Gossip, keyFile, err = devGossip(certs, gossipBind, cmd.Flags().Changed("gossip-bind"), logger); err != nil {
					return err
				}
			}
			return runServer(cmd.Context(), cfg, func(ctx context.Context, s *server.Server) error {
				// Print what to try only once it will work.
				ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				defer cancel()
				if err := s.WaitReady(ctx); err != nil {
					return err
				}
				if err := loadDevModules(ctx, s.Addr(), certs); err != nil {
					return err
				}
				sinks := sinkDir
				if sinks == "" {
					sinks = filepath.Join(cfg.DataDir, "sinks")
				}
				printDevHelp(cmd.OutOrStdout(), s.Addr(), dataDir, certs, filepath.Join(sinks, "results.jsonl"), keep)
				printDevGossipHelp(cmd.OutOrStdout(), s.GossipAddr(), keyFile)
				fmt.Fprintf(cmd.OutOrStdout(), "\nPress Ctrl-C to stop.\n")
				return nil
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&dataDir, "data-dir", "", "keep the node's data and certificates here (default: a temporary folder removed on exit)")
	f.StringVar(&httpAddr, "http-addr", "127.0.0.1:8443", "address of the mTLS HTTP API")
	f.StringVar(&sinkDir, "sink-dir", "", "directory that reporter modules' file sinks write under (default: DATA_DIR/node/sinks)")
	f.StringVar(&gossipBind, "gossip-bind", "127.0.0.1:"+strconv.Itoa(swim.DefaultPort), "loopback address (and :port) the node gossips on; if the default port is taken, a free one")
	f.BoolVar(&noGossip, "no-gossip", false, "do not run gossip (no datacenter view, no correlation engine)")
	return cmd
}

// devGossip returns the dev node's gossip configuration on loopback, with
// the key in certs/gossip.key (made once, reused in a kept data dir). An
// address given explicitly must be free; the default one falls back to a
// free port.
func devGossip(certs, bind string, explicit bool, logger *slog.Logger) (*swim.Config, string, error) {
	keyFile := filepath.Join(certs, "gossip.key")
	raw, err := os.ReadFile(keyFile)
	if errors.Is(err, fs.ErrNotExist) {
		k, gerr := swim.GenerateKey()
		if gerr != nil {
			return nil, "", gerr
		}
		raw = []byte(swim.EncodeKey(k) + "\n")
		err = os.WriteFile(keyFile, raw, 0o600)
	}
	if err != nil {
		return nil, "", fmt.Errorf("dev gossip key: %w", err)
	}
	key, err := swim.ParseKey(string(raw))
	if err != nil {
		return nil, "", fmt.Errorf("dev gossip key %s: %w", keyFile, err)
	}
	host, port, err := parseGossipAddr(bind, swim.DefaultPort)
	if err != nil {
		return nil, "", fmt.Errorf("--gossip-bind %q: %w", bind, err)
	}
	if !explicit && !gossipPortFree(host, port) {
		logger.Info("the default gossip port is taken; the dev node gossips on a free port", "taken", net.JoinHostPort(host, strconv.Itoa(port)))
		port = 0
	}
	cfg := swim.DefaultLANConfig()
	cfg.BindAddr, cfg.BindPort, cfg.SecretKey, cfg.Logger = host, port, key, logger
	cfg.Meta.Version = version
	return &cfg, keyFile, nil
}

// gossipPortFree reports whether both UDP and TCP port are free on host.
func gossipPortFree(host string, port int) bool {
	addr := net.JoinHostPort(host, strconv.Itoa(port))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	defer ln.Close()
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return false
	}
	return pc.Close() == nil
}

func printDevGossipHelp(w io.Writer, addr, keyFile string) {
	self := selfCommand()
	if addr == "" {
		fmt.Fprintf(w, "\nGossip is off (--no-gossip).\n")
		return
	}
	host, port, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(port)
	fmt.Fprintf(w, `
  # the datacenters as the correlation engine sees them, and the gossip members
  %s dc status
  %s members

  # the node gossips on %s; to add a gossip-only member in datacenter dc2, run in another shell:
  #   %s agent --node agent-1 --datacenter dc2 --bind %s --join %s --gossip-key-file %s
`, self, self, addr, self, net.JoinHostPort(host, strconv.Itoa(p+1)), addr, keyFile)
}

// devCertificates makes (or, in a kept data dir, reuses) the dev CA, the
// node's certificate and one client certificate per role.
func devCertificates(dir string) (*pki.CA, error) {
	caCert, caKey := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")
	ca, err := pki.LoadCA(caCert, caKey)
	switch {
	case err == nil:
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		if ca, err = pki.NewCA("coordinatord dev CA", time.Now().Add(-clockSkew), 10*365*24*time.Hour); err != nil {
			return nil, err
		}
		if err := ca.WriteFiles(caCert, caKey, false); err != nil {
			return nil, err
		}
	default:
		return nil, err
	}
	now := time.Now()
	base := pki.Request{
		Mapping:     engine.MappingSPIFFE,
		TrustDomain: engine.DefaultIdentityConfig().TrustDomain,
		NotBefore:   now.Add(-clockSkew),
		NotAfter:    now.Add(365 * 24 * time.Hour),
	}
	claims := func(role engine.Role, node string) engine.Claims {
		return engine.Claims{Cluster: devCluster, Env: devEnv, Role: role, Datacenter: devDatacenter, Node: node}
	}
	node := base
	node.Claims = claims(engine.RoleCoordinator, devNode)
	node.Server = true
	node.DNSNames = []string{"localhost"}
	node.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	want := map[string]pki.Request{"node": node}
	for _, role := range devRoles {
		r := base
		r.Claims = claims(role, string(role)+"-1")
		want[string(role)] = r
	}
	for name, req := range want {
		if _, err := os.Stat(filepath.Join(dir, name+".crt")); err == nil {
			continue
		}
		if _, _, err := issueTo(ca, req, dir, name, false); err != nil {
			return nil, fmt.Errorf("dev certificate %s: %w", name, err)
		}
	}
	return ca, nil
}

func loadPair(dir, name string) (tls.Certificate, error) {
	return loadX509KeyPair(filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key"))
}

// devModules are the example modules a dev node starts with.
var devModules = []struct {
	name string
	wasm []byte
	opts client.ModuleOptions
}{
	{"results", examplemodules.CReporter, client.ModuleOptions{Kind: "reporter", Sinks: []string{"results=file:results.jsonl"}}},
	{"two-dc-hold", examplemodules.GoCorrelation, client.ModuleOptions{Kind: "correlation"}},
}

// loadDevModules uploads the example modules through the API, as an admin
// would, unless a kept data dir has them already.
func loadDevModules(ctx context.Context, addr, certs string) error {
	c, err := client.New(client.Config{
		Addr: addr, CAFile: filepath.Join(certs, "ca.crt"),
		CertFile: filepath.Join(certs, "admin.crt"), KeyFile: filepath.Join(certs, "admin.key"),
	})
	if err != nil {
		return err
	}
	defer c.Close()
	for _, m := range devModules {
		if _, err := c.GetModule(ctx, m.name, true); err == nil {
			continue
		}
		if _, err := c.PutModule(ctx, m.name, m.wasm, m.opts); err != nil {
			return fmt.Errorf("load example module %s: %w", m.name, err)
		}
	}
	return nil
}

// selfCommand is how the user should run this binary again: "go run" when
// it was built by go run into a temporary folder.
func selfCommand() string {
	exe, err := os.Executable()
	if err != nil || strings.Contains(exe, "go-build") {
		return "go run ./cmd/coordinatord"
	}
	if p, err := exec.LookPath(filepath.Base(exe)); err == nil && p == exe {
		return filepath.Base(exe)
	}
	return exe
}

func printDevHelp(w io.Writer, addr, dataDir, certs, resultsFile string, kept bool) {
	self := selfCommand()
	c := func(name string) string { return filepath.Join(certs, name) }
	removal := "removed on exit"
	if kept {
		removal = "kept"
	}
	fmt.Fprintf(w, `
coordinatord dev: node %s serves https://%s  (cluster %s, env %s, datacenter %s)
data and certificates in %s (%s)

Try, in a second shell (the exports make you the admin):

  export COORDINATORD_ADDR=https://%s
  export COORDINATORD_CA=%s COORDINATORD_CERT=%s COORDINATORD_KEY=%s

  # a worker may connect to a manager: ALLOWED
  %s admission check --source-cert %s --target-cert %s --action connect
  # a worker may not connect to a gate: DENIED, and the reason names the role pair
  %s admission check --source-cert %s --target-cert %s --action connect

  %s policy list                  # the stored policies
  %s policy get default           # the default policy's Rego
  %s decisions --limit 5          # the decisions just made, with reasons
  %s policy test examples/policies/default   # run a policy's Rego tests

  # a worker may not write policies: 403 with the decision's reason
  %s policy push examples/policies/per-datacenter/policy.rego --id per-dc --cert %s --key %s

  # a gate takes the lease of a job and gets its fencing token; then list the leases
  %s lease acquire job-1 --ttl 30s --cert %s --key %s
  %s lease list

  # the example modules: a reporter writing to %s, a correlation module
  %s module list
  %s job report job-1 --workflow nightly --datacenter dc1 --source manager-1 --stats '{"rows":42}' --cert %s --key %s
  %s job reporters job-1
  %s module invoke two-dc-hold --event examples/modules/events/partition_detected.json
`, devNode, addr, devCluster, devEnv, devDatacenter, dataDir, removal,
		addr, c("ca.crt"), c("admin.crt"), c("admin.key"),
		self, c("worker.crt"), c("manager.crt"),
		self, c("worker.crt"), c("gate.crt"),
		self, self, self, self,
		self, c("worker.crt"), c("worker.key"),
		self, c("gate.crt"), c("gate.key"),
		self,
		resultsFile,
		self, self, c("manager.crt"), c("manager.key"), self, self)
}
