package main

import (
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/spf13/pflag"

	"github.com/coordinatord/coordinatord/engine"
	"github.com/coordinatord/coordinatord/server"
	"github.com/coordinatord/coordinatord/swim"
)

// correlationFlags are the server's correlation engine thresholds most
// worth tuning; the others keep engine.DefaultCorrelationConfig's values.
type correlationFlags struct {
	window, backoff      time.Duration
	failureConfirmation  time.Duration
	recoveryConfirmation time.Duration
	failingShare         float64
	interval             time.Duration
}

func (f *correlationFlags) addFlags(fl *pflag.FlagSet) {
	d := engine.DefaultCorrelationConfig()
	fl.DurationVar(&f.window, "correlation-window", d.Window, "datacenters that fail within this time of each other are correlated (a partition); further apart, independent failures")
	fl.DurationVar(&f.failureConfirmation, "correlation-failure-confirmation", d.FailureConfirmation, "how long a datacenter must stay failing (more than the failing share of its members suspect or dead) before it is failed")
	fl.DurationVar(&f.recoveryConfirmation, "correlation-recovery-confirmation", d.RecoveryConfirmation, "how long a failed datacenter must stay up before it is healthy again")
	fl.DurationVar(&f.backoff, "correlation-backoff", d.Backoff, "during an episode, severity changes are notified (and correlation modules called) at most this often")
	fl.Float64Var(&f.failingShare, "correlation-failing-share", d.FailingShare, "a datacenter is failing when more than this share of its members are suspect or dead")
	fl.DurationVar(&f.interval, "correlation-interval", server.DefaultConfig().CorrelationInterval, "how often the leader's correlation engine ticks (time-based transitions, the hold cap)")
}

func (f *correlationFlags) apply(cfg *server.Config) error {
	c := engine.DefaultCorrelationConfig()
	c.Window, c.Backoff = f.window, f.backoff
	c.FailureConfirmation, c.RecoveryConfirmation = f.failureConfirmation, f.recoveryConfirmation
	c.FailingShare = f.failingShare
	if err := c.Validate(); err != nil {
		return fmt.Errorf("--correlation-* flags: %w", err)
	}
	if f.interval <= 0 {
		return fmt.Errorf("--correlation-interval %s: must be positive", f.interval)
	}
	cfg.Correlation, cfg.CorrelationInterval = c, f.interval
	return nil
}

// serverGossip makes a server a gossip member when a gossip key is given
// (--gossip-key-file or --gossip-key); without one the node is no member,
// and other --gossip-* flags are an error. The member's metadata is the
// node's: --node-id, the datacenter of its certificate, role coordinator.
func serverGossip(f *gossipFlags, cfg *server.Config, logger *slog.Logger) error {
	if !f.enabled() {
		if changed := f.changed(); len(changed) > 0 {
			return fmt.Errorf("%v: gossip needs the pool's key (--gossip-key-file, made with coordinatord keygen); without one the node is no gossip member", changed)
		}
		return nil
	}
	dc, err := certDatacenter(cfg)
	if err != nil {
		return err
	}
	gc, err := f.swimConfig(swim.Meta{NodeID: cfg.NodeID, Datacenter: dc, Role: swim.RoleCoordinator, Version: version}, logger)
	if err != nil {
		return err
	}
	cfg.Gossip = &gc
	if r, hold := gc.DeadMemberRetention, cfg.Raft.MaxLeaseHold; hold > 0 && r < hold {
		// A leader elected during a long partition would count the dead
		// members it forgot as gone, and could end holds its predecessor
		// kept.
		logger.Warn("--gossip-dead-member-retention is shorter than --lease-max-hold: during a partition longer than the retention, "+
			"a new leader may no longer count the dead members of the cut-off datacenters", "gossip_dead_member_retention", r, "lease_max_hold", hold)
	}
	return nil
}

// certDatacenter is the datacenter claim of the node's certificate.
func certDatacenter(cfg *server.Config) (string, error) {
	if len(cfg.Certificate.Certificate) == 0 {
		return "", errors.New("--tls-cert: no certificate")
	}
	leaf, err := x509.ParseCertificate(cfg.Certificate.Certificate[0])
	if err != nil {
		return "", fmt.Errorf("--tls-cert: %w", err)
	}
	c, err := engine.ParseClaims(leaf, cfg.Identity)
	if err != nil {
		return "", fmt.Errorf("--tls-cert: %w", err)
	}
	return c.Datacenter, nil
}
