package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/coordinatord/coordinatord/engine"
	"github.com/coordinatord/coordinatord/internal/pki"
)

// clockSkew backdates new certificates so that a machine whose clock is a
// little behind the issuer's still accepts them.
const clockSkew = 5 * time.Minute

func newCACmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ca",
		Short: "Make a certificate authority and issue identity certificates",
		Long: `A small certificate authority for coordinatord identities. Production
deployments may use their own PKI instead; these commands write certificates
with the claims laid out as the server reads them, in either mapping.`,
	}
	cmd.AddCommand(newCAInitCmd(), newCAIssueCmd())
	return cmd
}

func newCAInitCmd() *cobra.Command {
	var dir, name string
	var validity time.Duration
	var force bool
	cmd := &cobra.Command{
		Use:     "init",
		Short:   "Create a CA: DIR/ca.crt and DIR/ca.key",
		Example: `  coordinatord ca init --dir ./pki`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return fmt.Errorf("--dir: %w", err)
			}
			ca, err := pki.NewCA(name, time.Now().Add(-clockSkew), validity)
			if err != nil {
				return err
			}
			certFile, keyFile := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")
			if err := ca.WriteFiles(certFile, keyFile, force); err != nil {
				return err
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "CA %q written: %s (share it), %s (keep it secret)\n", name, certFile, keyFile)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "dir", ".", "directory for ca.crt and ca.key")
	f.StringVar(&name, "name", "coordinatord CA", "common name of the CA")
	f.DurationVar(&validity, "validity", 10*365*24*time.Hour, "how long the CA is valid")
	f.BoolVar(&force, "force", false, "overwrite existing files")
	return cmd
}

func newCAIssueCmd() *cobra.Command {
	var caDir, outDir, name, mapping, trustDomain, role string
	var claims engine.Claims
	var dnsNames []string
	var ips []net.IP
	var validity time.Duration
	var serverUse, force bool
	cmd := &cobra.Command{
		Use:   "issue",
		Short: "Issue a certificate carrying the given claims",
		Long: `Issue a certificate (and a new key) whose claims are the given cluster, env,
role, datacenter and node, laid out in the spiffe mapping (one URI SAN) or the
subject mapping (CN, OU, DNS SANs node=/dc=/region= and an env extension).
Writes OUT-DIR/NAME.crt and OUT-DIR/NAME.key; NAME defaults to the node.`,
		Example: `  coordinatord ca issue --ca-dir ./pki --role worker --cluster prod --env prod --datacenter dc1 --node worker-1
  coordinatord ca issue --ca-dir ./pki --role coordinator --cluster prod --env prod --datacenter dc1 \
    --node node-1 --server --dns node-1.example.net --ip 10.0.0.1
  coordinatord ca issue --ca-dir ./pki --mapping subject --role gate --cluster prod --env prod \
    --datacenter dc2 --region eu --node gate-7`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ca, err := pki.LoadCA(filepath.Join(caDir, "ca.crt"), filepath.Join(caDir, "ca.key"))
			if err != nil {
				return fmt.Errorf("--ca-dir: %w", err)
			}
			claims.Role = engine.Role(role)
			now := time.Now()
			req := pki.Request{
				Claims: claims, Mapping: engine.Mapping(mapping), TrustDomain: trustDomain,
				NotBefore: now.Add(-clockSkew), NotAfter: now.Add(validity),
				Server: serverUse, DNSNames: dnsNames, IPAddresses: ips,
			}
			if name == "" {
				name = claims.Node
			}
			certFile, keyFile, err := issueTo(ca, req, outDir, name, force)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "issued %s (%s mapping, role %s): %s, %s\n", name, mapping, role, certFile, keyFile)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&caDir, "ca-dir", ".", "directory holding ca.crt and ca.key")
	f.StringVar(&outDir, "out-dir", ".", "directory to write NAME.crt and NAME.key to")
	f.StringVar(&name, "name", "", "base name of the files (default: the node)")
	f.StringVar(&mapping, "mapping", string(engine.MappingSPIFFE), "claims layout: spiffe or subject")
	f.StringVar(&trustDomain, "trust-domain", engine.DefaultIdentityConfig().TrustDomain, "SPIFFE trust domain (spiffe mapping)")
	f.StringVar(&role, "role", "", "client, gate, manager, worker, admin or coordinator (required)")
	f.StringVar(&claims.Cluster, "cluster", "", "cluster claim (required)")
	f.StringVar(&claims.Env, "env", "", "env claim (required)")
	f.StringVar(&claims.Datacenter, "datacenter", "", "datacenter claim (required)")
	f.StringVar(&claims.Node, "node", "", "node claim (required)")
	f.StringVar(&claims.Region, "region", "", "region claim (subject mapping only, optional)")
	f.BoolVar(&serverUse, "server", false, "also valid as a server certificate (coordinatord nodes)")
	f.StringSliceVar(&dnsNames, "dns", nil, "host names a server certificate is valid for")
	f.IPSliceVar(&ips, "ip", nil, "IP addresses a server certificate is valid for")
	f.DurationVar(&validity, "validity", 365*24*time.Hour, "how long the certificate is valid")
	f.BoolVar(&force, "force", false, "overwrite existing files")
	return cmd
}

// issueTo issues a certificate for req and writes DIR/NAME.crt and .key.
func issueTo(ca *pki.CA, req pki.Request, dir, name string, force bool) (certFile, keyFile string, err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", fmt.Errorf("output directory: %w", err)
	}
	issued, err := ca.Issue(req)
	if err != nil {
		return "", "", err
	}
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	if err := issued.WriteFiles(certFile, keyFile, force); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}
