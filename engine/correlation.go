package engine

import (
	"fmt"
	"time"
)

// The correlation engine tells a datacenter that failed on its own from a
// network partition that makes several look failed together. It is a pure
// state machine: its inputs are member state changes, RTT samples and the
// local health score, each with the time it was observed; it reads no clock
// and does no I/O. The Raft leader feeds it and commits what it decides.

// DCState is a datacenter's state as the correlation engine sees it.
type DCState string

// Datacenter states.
const (
	// DCHealthy: at most the failing share of its members are down.
	DCHealthy DCState = "healthy"
	// DCFailing: more than the failing share of its members are suspect or
	// dead, for less than FailureConfirmation so far.
	DCFailing DCState = "failing"
	// DCFailed: failing for at least FailureConfirmation.
	DCFailed DCState = "failed"
	// DCRecovering: was failed, members are back, for less than
	// RecoveryConfirmation so far.
	DCRecovering DCState = "recovering"
	// DCFlapping: changed between up and down FlapTransitions times within
	// FlapWindow; its changes are damped until FlapCooldown passes without
	// one. It counts as down.
	DCFlapping DCState = "flapping"
)

// down reports whether a datacenter in state s counts as unavailable for
// correlation.
func (s DCState) down() bool { return s == DCFailing || s == DCFailed || s == DCFlapping }

// Severity grades how many datacenters fail together.
type Severity string

// Severities, in increasing order.
const (
	SeverityNone   Severity = "none"
	SeverityLow    Severity = "low"
	SeverityMedium Severity = "medium"
	SeverityHigh   Severity = "high"
)

func (s Severity) rank() int {
	switch s {
	case SeverityLow:
		return 1
	case SeverityMedium:
		return 2
	case SeverityHigh:
		return 3
	}
	return 0
}

// MemberState is a member's state as SWIM reports it.
type MemberState string

// Member states. Left members (a graceful leave) no longer count.
const (
	MemberAlive   MemberState = "alive"
	MemberSuspect MemberState = "suspect"
	MemberDead    MemberState = "dead"
	MemberLeft    MemberState = "left"
)

// CorrelationConfig holds the engine's thresholds. Every field has a
// reference default in DefaultCorrelationConfig.
type CorrelationConfig struct {
	// FailingShare: a datacenter is failing when more than this share of
	// its (non-left) members are suspect or dead.
	FailingShare float64 `json:"failing_share"`
	// Window: datacenters that went down within this time of each other
	// are correlated; ones that went down further apart are independent.
	Window time.Duration `json:"window"`
	// LowThreshold, MediumThreshold, HighThreshold: how many correlated
	// down datacenters make each severity. High also needs at least
	// HighShare of the known datacenters down; with fewer datacenters than
	// HighThreshold known, all of them down (and at least MediumThreshold)
	// is high, so that three datacenters can reach it.
	LowThreshold    int     `json:"low_threshold"`
	MediumThreshold int     `json:"medium_threshold"`
	HighThreshold   int     `json:"high_threshold"`
	HighShare       float64 `json:"high_share"`
	// Backoff: after a partition is detected, severity changes are
	// notified at most once per Backoff (the latest wins). It never delays
	// detecting the heal.
	Backoff time.Duration `json:"backoff"`
	// FailureConfirmation: how long a datacenter must stay failing before
	// it is failed. A burst of lost heartbeats shorter than this evicts
	// nothing.
	FailureConfirmation time.Duration `json:"failure_confirmation"`
	// RecoveryConfirmation: how long a failed datacenter must stay up
	// before it is healthy again.
	RecoveryConfirmation time.Duration `json:"recovery_confirmation"`
	// FlapTransitions within FlapWindow make a datacenter flapping, until
	// FlapCooldown passes without a transition. Transitions older than
	// FlapWindow are forgotten.
	FlapTransitions int           `json:"flap_transitions"`
	FlapWindow      time.Duration `json:"flap_window"`
	FlapCooldown    time.Duration `json:"flap_cooldown"`
	// Latency is elevated for a datacenter when the mean of at least
	// LatencySamples RTT samples within LatencyWindow reaches
	// LatencyElevated. Elevated latency is reported, and it doubles the
	// failure confirmation (a slow network is a reason to wait), but it is
	// never a failure by itself.
	LatencyElevated time.Duration `json:"latency_elevated"`
	LatencySamples  int           `json:"latency_samples"`
	LatencyWindow   time.Duration `json:"latency_window"`
	// HealthScoreLimit: while the local node's health score (Lifeguard's
	// 0-8, higher is worse) is at or above it, this node's view is not
	// trusted: no datacenter becomes failed, the confirmations wait.
	HealthScoreLimit int `json:"health_score_limit"`
}

// DefaultCorrelationConfig returns the reference defaults.
func DefaultCorrelationConfig() CorrelationConfig {
	return CorrelationConfig{
		FailingShare:         0.5,
		Window:               30 * time.Second,
		LowThreshold:         2,
		MediumThreshold:      3,
		HighThreshold:        4,
		HighShare:            0.5,
		Backoff:              60 * time.Second,
		FailureConfirmation:  5 * time.Second,
		RecoveryConfirmation: 30 * time.Second,
		FlapTransitions:      3,
		FlapWindow:           120 * time.Second,
		FlapCooldown:         300 * time.Second,
		LatencyElevated:      100 * time.Millisecond,
		LatencySamples:       3,
		LatencyWindow:        60 * time.Second,
		HealthScoreLimit:     4,
	}
}

// Validate reports the first bad field.
func (c CorrelationConfig) Validate() error {
	switch {
	case c.FailingShare <= 0 || c.FailingShare >= 1:
		return fmt.Errorf("correlation config: failing_share %v must be in (0, 1)", c.FailingShare)
	case c.Window <= 0:
		return fmt.Errorf("correlation config: window %s must be positive", c.Window)
	case c.LowThreshold < 1 || c.MediumThreshold < c.LowThreshold || c.HighThreshold < c.MediumThreshold:
		return fmt.Errorf("correlation config: thresholds low %d, medium %d, high %d must be 1 ≤ low ≤ medium ≤ high", c.LowThreshold, c.MediumThreshold, c.HighThreshold)
	case c.HighShare <= 0 || c.HighShare > 1:
		return fmt.Errorf("correlation config: high_share %v must be in (0, 1]", c.HighShare)
	case c.Backoff < 0 || c.FailureConfirmation < 0 || c.RecoveryConfirmation < 0:
		return fmt.Errorf("correlation config: backoff and confirmations must not be negative")
	case c.FlapTransitions < 2 || c.FlapWindow <= 0 || c.FlapCooldown < 0:
		return fmt.Errorf("correlation config: flapping needs flap_transitions ≥ 2 and a positive flap_window")
	case c.LatencySamples < 1 || c.LatencyWindow <= 0 || c.LatencyElevated <= 0:
		return fmt.Errorf("correlation config: latency needs latency_samples ≥ 1 and positive latency_window and latency_elevated")
	case c.HealthScoreLimit < 1:
		return fmt.Errorf("correlation config: health_score_limit %d must be at least 1", c.HealthScoreLimit)
	}
	return nil
}

// CorrelationEventType names what the engine reports.
type CorrelationEventType string

// Correlation events. partition_detected fires once per episode, and
// partition_healed ends it.
const (
	EventDCStateChanged    CorrelationEventType = "dc_state_changed"
	EventSeverityChanged   CorrelationEventType = "severity_changed"
	EventPartitionDetected CorrelationEventType = "partition_detected"
	EventPartitionHealed   CorrelationEventType = "partition_healed"
)

// CorrelationEvent is one thing the engine decided.
type CorrelationEvent struct {
	Type       CorrelationEventType `json:"type"`
	At         time.Time            `json:"at"`
	Datacenter string               `json:"datacenter,omitempty"`
	From       DCState              `json:"from,omitempty"`
	To         DCState              `json:"to,omitempty"`
	Severity   Severity             `json:"severity,omitempty"`
	Previous   Severity             `json:"previous_severity,omitempty"`
	Episode    string               `json:"episode,omitempty"`
	// Affected and Healthy are the down and up datacenters at the event.
	Affected []string `json:"affected,omitempty"`
	Healthy  []string `json:"healthy,omitempty"`
}

// Episode is a detected partition: from partition_detected to
// partition_healed. It is what a new leader continues.
type Episode struct {
	ID         string    `json:"id"`
	DetectedAt time.Time `json:"detected_at"`
	Severity   Severity  `json:"severity"`
	// Datacenters are the ones whose leases are held: every datacenter
	// that was down while the episode lasted and is not healthy again.
	Datacenters []string `json:"datacenters"`
	// NotifiedAt and Notified are the last severity_changed sent, for the
	// backoff.
	NotifiedAt time.Time `json:"notified_at"`
	Notified   Severity  `json:"notified"`
}
