package engine

import (
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Correlator is the correlation state machine. Feed it observations in time
// order (MemberUpdate, RTT, LocalHealth) and call Tick regularly (every
// second is plenty) so that time-based transitions happen; each call returns
// the events it decided, in a stable order. It is not safe for concurrent
// use: one goroutine (the leader's correlation loop) owns it.
type Correlator struct {
	cfg     CorrelationConfig
	members map[string]member
	dcs     map[string]*dcTrack
	order   []string // the names of dcs, sorted
	health  int
	episode *Episode
	// episodeBase and episodeN make episode ids unique: the id is the
	// detection time, with -N appended for the N+1th episode detected in
	// the same instant.
	episodeBase string
	episodeN    int
	// now is the time of the latest input; time never goes backwards for
	// the engine even if inputs arrive slightly out of order.
	now time.Time
}

type member struct {
	dc    string
	state MemberState
}

type rttSample struct {
	at  time.Time
	rtt time.Duration
}

// dcTrack is what the engine knows of one datacenter.
type dcTrack struct {
	state DCState
	// since is when the current state began.
	since time.Time
	// downSince is when the current outage began (it became failing);
	// zero while up.
	downSince time.Time
	// flips are the up/down transitions within FlapWindow.
	flips    []time.Time
	lastFlip time.Time
	// wasDown remembers, while flapping, whether the last raw view was down.
	wasDown bool
	rtts    []rttSample
	// members counts the datacenter's members the engine holds (not
	// left), and alive, suspect and dead those in each state: kept as
	// members change so that an update costs the same with a thousand
	// members as with ten.
	members, alive, suspect, dead int
}

// count adds delta to the counters of a member in state.
func (t *dcTrack) count(state MemberState, delta int) {
	t.members += delta
	switch state {
	case MemberAlive:
		t.alive += delta
	case MemberSuspect:
		t.suspect += delta
	case MemberDead:
		t.dead += delta
	}
}

// NewCorrelator returns an engine with no datacenter known yet.
func NewCorrelator(cfg CorrelationConfig) (*Correlator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Correlator{cfg: cfg, members: map[string]member{}, dcs: map[string]*dcTrack{}}, nil
}

func (c *Correlator) advance(at time.Time) time.Time {
	if at.After(c.now) {
		c.now = at
	}
	return c.now
}

func (c *Correlator) track(dc string) *dcTrack {
	t := c.dcs[dc]
	if t == nil {
		t = &dcTrack{state: DCHealthy, since: c.now}
		c.dcs[dc] = t
		at, _ := slices.BinarySearch(c.order, dc)
		c.order = slices.Insert(c.order, at, dc)
	}
	return t
}

// MemberUpdate records a member's state as SWIM reports it. A member that
// moves to another datacenter is counted in the new one only.
func (c *Correlator) MemberUpdate(at time.Time, node, dc string, state MemberState) []CorrelationEvent {
	now := c.advance(at)
	c.setMember(node, dc, state)
	return c.evaluate(now)
}

// setMember records one member without evaluating. A member that left is
// forgotten from the datacenter it was counted in, whatever dc says (a
// caller that no longer knows it may not know its datacenter either).
func (c *Correlator) setMember(node, dc string, state MemberState) {
	if old, ok := c.members[node]; ok {
		c.track(old.dc).count(old.state, -1)
	}
	if state == MemberLeft {
		delete(c.members, node)
		return
	}
	c.members[node] = member{dc: dc, state: state}
	c.track(dc).count(state, +1)
}

// MemberObservation is one member of a whole membership list.
type MemberObservation struct {
	Name, Datacenter string
	State            MemberState
}

// SetMembers replaces the members the engine counts with list (members
// not in it are forgotten, as if they had left), records the local health
// score, and then evaluates once: the view is judged whole, and with this
// node's trust in it (a fresh engine would otherwise judge a new leader's
// first view as trusted).
// A new leader seeding the engine, or a resynchronisation after lost
// events, must use it rather than one MemberUpdate per member: evaluating
// after each one would judge datacenters on a half-loaded view (a held
// datacenter whose alive members sort first would look up and end the
// episode).
func (c *Correlator) SetMembers(at time.Time, health int, list []MemberObservation) []CorrelationEvent {
	now := c.advance(at)
	c.health = health
	listed := make(map[string]bool, len(list))
	for _, m := range list {
		listed[m.Name] = true
		c.setMember(m.Name, m.Datacenter, m.State)
	}
	for name := range c.members {
		if !listed[name] {
			c.setMember(name, "", MemberLeft)
		}
	}
	return c.evaluate(now)
}

// Forget removes members (memberlist no longer lists them) and evaluates
// once.
func (c *Correlator) Forget(at time.Time, names []string) []CorrelationEvent {
	now := c.advance(at)
	for _, name := range names {
		c.setMember(name, "", MemberLeft)
	}
	return c.evaluate(now)
}

// MemberNames returns the members the engine counts (not left), sorted, so
// that a caller resynchronising from a member list can tell which ones the
// list no longer has.
func (c *Correlator) MemberNames() []string {
	names := make([]string, 0, len(c.members))
	for name := range c.members {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// RTT records a round-trip time sample to a member of dc.
func (c *Correlator) RTT(at time.Time, dc string, rtt time.Duration) []CorrelationEvent {
	now := c.advance(at)
	t := c.track(dc)
	t.rtts = append(t.rtts, rttSample{at: now, rtt: rtt})
	c.pruneRTT(t, now)
	return c.evaluate(now)
}

// LocalHealth records the local node's health score (Lifeguard: 0 is
// healthy, 8 the worst).
func (c *Correlator) LocalHealth(at time.Time, score int) []CorrelationEvent {
	now := c.advance(at)
	c.health = score
	return c.evaluate(now)
}

// Tick lets time-based transitions happen: confirmations, cooldowns and the
// notification backoff.
func (c *Correlator) Tick(at time.Time) []CorrelationEvent {
	return c.evaluate(c.advance(at))
}

// Restore continues an episode that an earlier leader detected, so that a
// new leader neither starts it over (no second partition_detected) nor
// drops its holds. Datacenters of the episode start as failed, confirmed
// by the earlier leader, until this node's own observations say otherwise.
func (c *Correlator) Restore(at time.Time, ep Episode) {
	now := c.advance(at)
	cp := ep
	cp.Datacenters = slices.Clone(ep.Datacenters)
	c.episode = &cp
	c.episodeBase, c.episodeN = splitEpisodeID(ep.ID)
	for _, dc := range ep.Datacenters {
		t := c.track(dc)
		t.state, t.since, t.downSince, t.wasDown = DCFailed, now, now, true
	}
}

// RestoreDatacenter continues a datacenter's committed state: a new leader
// calls it for each datacenter of the last committed record (after Restore)
// so that states and their since times carry over instead of starting
// healthy, and confirmations, recoveries and flap damping go on from where
// the earlier leader left them. Its own observations then move them as
// usual. A since after the latest input counts as now.
func (c *Correlator) RestoreDatacenter(at time.Time, dc string, state DCState, since time.Time) {
	now := c.advance(at)
	if since.After(now) || since.IsZero() {
		since = now
	}
	t := c.track(dc)
	t.state, t.since = state, since
	t.wasDown = state.down()
	switch state {
	case DCHealthy:
		t.downSince = time.Time{}
	case DCFlapping:
		// Damped until the cooldown has passed since it became flapping.
		t.downSince, t.lastFlip = since, since
	default:
		t.downSince = since
	}
}

func (c *Correlator) pruneRTT(t *dcTrack, now time.Time) {
	cut := 0
	for cut < len(t.rtts) && now.Sub(t.rtts[cut].at) > c.cfg.LatencyWindow {
		cut++
	}
	t.rtts = t.rtts[cut:]
}

// latency returns the mean RTT within the window and whether it is
// elevated (enough samples, mean at or above the limit).
func (c *Correlator) latency(t *dcTrack) (time.Duration, bool) {
	if len(t.rtts) == 0 {
		return 0, false
	}
	var sum time.Duration
	for _, s := range t.rtts {
		sum += s.rtt
	}
	mean := sum / time.Duration(len(t.rtts))
	return mean, len(t.rtts) >= c.cfg.LatencySamples && mean >= c.cfg.LatencyElevated
}

// counts returns a datacenter's alive, suspect and dead members.
func (c *Correlator) counts(dc string) (alive, suspect, dead int) {
	t := c.dcs[dc]
	if t == nil {
		return 0, 0, 0
	}
	return t.alive, t.suspect, t.dead
}

// rawDown is the instantaneous view: more than the failing share of the
// datacenter's members are suspect or dead. known is false when no member
// of it is known (yet): a new leader restoring an episode has no view of
// the datacenters until gossip tells it, and must not read that as "up".
func (c *Correlator) rawDown(dc string) (down, known bool) {
	alive, suspect, dead := c.counts(dc)
	total := alive + suspect + dead
	return float64(suspect+dead) > c.cfg.FailingShare*float64(total), total > 0
}

// sortedDCs returns the datacenters by name. The slice is the engine's
// own, kept sorted as datacenters appear (they are never removed): the
// caller must not modify it.
func (c *Correlator) sortedDCs() []string { return c.order }

// evaluate moves every datacenter's state, then the severity and the
// episode, and returns what changed.
func (c *Correlator) evaluate(now time.Time) []CorrelationEvent {
	var events []CorrelationEvent
	for _, dc := range c.sortedDCs() {
		t := c.dcs[dc]
		c.pruneRTT(t, now)
		from := t.state
		c.step(dc, t, now)
		if t.state != from {
			events = append(events, CorrelationEvent{Type: EventDCStateChanged, At: now, Datacenter: dc, From: from, To: t.state})
		}
	}
	return append(events, c.correlate(now)...)
}

// step applies one datacenter's transitions.
func (c *Correlator) step(dc string, t *dcTrack, now time.Time) {
	down, known := c.rawDown(dc)
	if !known {
		return
	}
	if down != t.wasDown {
		c.flip(t, now)
		t.wasDown = down
	}
	if t.state == DCFlapping {
		if now.Sub(t.lastFlip) >= c.cfg.FlapCooldown && (!down || c.health < c.cfg.HealthScoreLimit) {
			// Calm again: take the current view at face value (a failure
			// only from a trusted view).
			t.flips = nil
			if down {
				c.set(t, DCFailed, now)
			} else {
				c.set(t, DCHealthy, now)
				t.downSince = time.Time{}
			}
		}
		return
	}
	if len(t.flips) >= c.cfg.FlapTransitions {
		if t.downSince.IsZero() || !t.state.down() {
			// From healthy or recovering this is a new outage: it
			// correlates with the others from now.
			t.downSince = now
		}
		c.set(t, DCFlapping, now)
		return
	}
	switch t.state {
	case DCHealthy:
		if down {
			c.set(t, DCFailing, now)
			t.downSince = now
		}
	case DCFailing:
		switch {
		case !down:
			c.set(t, DCHealthy, now)
			t.downSince = time.Time{}
		case c.health < c.cfg.HealthScoreLimit && now.Sub(t.since) >= c.confirmation(t):
			c.set(t, DCFailed, now)
		}
	case DCFailed:
		if !down {
			c.set(t, DCRecovering, now)
		}
	case DCRecovering:
		switch {
		case down:
			// A new outage: it correlates with the others from now, not
			// from when the earlier one began.
			c.set(t, DCFailed, now)
			t.downSince = now
		case now.Sub(t.since) >= c.cfg.RecoveryConfirmation:
			c.set(t, DCHealthy, now)
			t.downSince = time.Time{}
		}
	}
}

// confirmation is how long failing must last: doubled while latency to the
// datacenter is elevated, since a slow network makes heartbeats late.
func (c *Correlator) confirmation(t *dcTrack) time.Duration {
	if _, elevated := c.latency(t); elevated {
		return 2 * c.cfg.FailureConfirmation
	}
	return c.cfg.FailureConfirmation
}

func (c *Correlator) set(t *dcTrack, s DCState, now time.Time) {
	t.state, t.since = s, now
}

// flip records an up/down transition; only those within FlapWindow count,
// so that recoveries long ago never make a datacenter flapping.
func (c *Correlator) flip(t *dcTrack, now time.Time) {
	t.lastFlip = now
	t.flips = append(t.flips, now)
	cut := 0
	for cut < len(t.flips) && now.Sub(t.flips[cut]) > c.cfg.FlapWindow {
		cut++
	}
	t.flips = t.flips[cut:]
}

// correlated returns the datacenters that count for severity: confirmed
// down ones (failed or flapping). Outside an episode only those that went
// down within Window of the most recent outage count — a region going dark
// one datacenter at a time is a series of independent failures. Inside an
// episode every confirmed down datacenter counts.
func (c *Correlator) correlated() []string {
	var down []string
	var newest time.Time
	for _, dc := range c.sortedDCs() {
		t := c.dcs[dc]
		if t.state == DCFailed || t.state == DCFlapping {
			down = append(down, dc)
			if t.downSince.After(newest) {
				newest = t.downSince
			}
		}
	}
	if c.episode != nil {
		return down
	}
	var out []string
	for _, dc := range down {
		if newest.Sub(c.dcs[dc].downSince) <= c.cfg.Window {
			out = append(out, dc)
		}
	}
	return out
}

// known counts datacenters with at least one member that has not left, and
// those restored from an episode whose members are not known yet.
func (c *Correlator) known() int {
	n := 0
	for dc, t := range c.dcs {
		if t.members > 0 || (c.episode != nil && slices.Contains(c.episode.Datacenters, dc)) {
			n++
		}
	}
	if c.episode != nil {
		for _, dc := range c.episode.Datacenters {
			if c.dcs[dc] == nil {
				n++
			}
		}
	}
	return n
}

func (c *Correlator) severity(n, total int) Severity {
	cfg := c.cfg
	switch {
	case n >= cfg.MediumThreshold && n >= min(cfg.HighThreshold, total) && total > 0 && float64(n) >= cfg.HighShare*float64(total):
		return SeverityHigh
	case n >= cfg.MediumThreshold:
		return SeverityMedium
	case n >= cfg.LowThreshold:
		return SeverityLow
	}
	return SeverityNone
}

// splitEpisodeID returns an episode id's time part and how many earlier
// episodes had the same one (the -N suffix minus one).
func splitEpisodeID(id string) (base string, n int) {
	base = id
	if i := strings.LastIndexByte(id, '-'); i > len("ep") {
		if k, err := strconv.Atoi(id[i+1:]); err == nil && k >= 2 {
			return id[:i], k - 1
		}
	}
	return base, 0
}

// correlate derives severity and moves the episode.
func (c *Correlator) correlate(now time.Time) []CorrelationEvent {
	corr := c.correlated()
	sev := c.severity(len(corr), c.known())
	affected, healthy := c.split()
	ep := c.episode
	switch {
	case ep == nil && sev.rank() >= SeverityMedium.rank() && c.health >= c.cfg.HealthScoreLimit:
		// This node's own view is not trusted (it misses probes itself):
		// no episode starts from it, as no failure is confirmed from it.
		return nil
	case ep == nil && sev.rank() >= SeverityMedium.rank():
		id := "ep-" + now.UTC().Format("20060102T150405.000000000Z")
		if id == c.episodeBase {
			// Detected in the same instant as the last one (inputs that
			// arrive late are stamped with the engine's time).
			c.episodeN++
			id = fmt.Sprintf("%s-%d", c.episodeBase, c.episodeN+1)
		} else {
			c.episodeBase, c.episodeN = id, 0
		}
		c.episode = &Episode{
			ID:          id,
			DetectedAt:  now,
			Severity:    sev,
			Datacenters: corr,
			NotifiedAt:  now,
			Notified:    sev,
		}
		return []CorrelationEvent{{Type: EventPartitionDetected, At: now, Episode: c.episode.ID, Severity: sev, Affected: affected, Healthy: healthy}}
	case ep == nil:
		return nil
	case sev.rank() < SeverityMedium.rank():
		// Healing is never held back by the backoff.
		c.episode = nil
		return []CorrelationEvent{{Type: EventPartitionHealed, At: now, Episode: ep.ID, Severity: sev, Previous: ep.Severity, Affected: affected, Healthy: healthy}}
	}
	ep.Datacenters = c.heldSet(ep.Datacenters, corr)
	ep.Severity = sev
	if sev != ep.Notified && now.Sub(ep.NotifiedAt) >= c.cfg.Backoff {
		prev := ep.Notified
		ep.Notified, ep.NotifiedAt = sev, now
		return []CorrelationEvent{{Type: EventSeverityChanged, At: now, Episode: ep.ID, Severity: sev, Previous: prev, Affected: affected, Healthy: healthy}}
	}
	return nil
}

// heldSet keeps every datacenter of the episode that is not healthy again,
// and adds those down now.
func (c *Correlator) heldSet(prev, down []string) []string {
	set := map[string]bool{}
	for _, dc := range prev {
		if t := c.dcs[dc]; t != nil && t.state != DCHealthy {
			set[dc] = true
		}
	}
	for _, dc := range down {
		set[dc] = true
	}
	out := make([]string, 0, len(set))
	for dc := range set {
		out = append(out, dc)
	}
	sort.Strings(out)
	return out
}

// split lists down and up datacenters.
func (c *Correlator) split() (down, up []string) {
	for _, dc := range c.sortedDCs() {
		if c.dcs[dc].state.down() {
			down = append(down, dc)
		} else {
			up = append(up, dc)
		}
	}
	return down, up
}

// DCStatus is one datacenter as the engine sees it.
type DCStatus struct {
	Name            string        `json:"name"`
	State           DCState       `json:"state"`
	Since           time.Time     `json:"since"`
	Alive           int           `json:"alive"`
	Suspect         int           `json:"suspect"`
	Dead            int           `json:"dead"`
	RTT             time.Duration `json:"rtt"`
	LatencyElevated bool          `json:"latency_elevated"`
}

// CorrelationStatus is the engine's whole view.
type CorrelationStatus struct {
	Severity Severity `json:"severity"`
	Episode  *Episode `json:"episode,omitempty"`
	// DelayEviction: leases owned in Held are held, not expired.
	DelayEviction bool       `json:"delay_eviction"`
	Held          []string   `json:"held,omitempty"`
	HealthScore   int        `json:"health_score"`
	Datacenters   []DCStatus `json:"datacenters"`
}

// Status returns the current view.
func (c *Correlator) Status() CorrelationStatus {
	st := CorrelationStatus{Severity: c.severity(len(c.correlated()), c.known()), HealthScore: c.health}
	if c.episode != nil {
		ep := *c.episode
		ep.Datacenters = slices.Clone(ep.Datacenters)
		st.Episode, st.DelayEviction, st.Held = &ep, true, slices.Clone(ep.Datacenters)
		st.Severity = ep.Severity
	}
	for _, dc := range c.sortedDCs() {
		t := c.dcs[dc]
		alive, suspect, dead := c.counts(dc)
		mean, elevated := c.latency(t)
		st.Datacenters = append(st.Datacenters, DCStatus{Name: dc, State: t.state, Since: t.since, Alive: alive, Suspect: suspect, Dead: dead, RTT: mean, LatencyElevated: elevated})
	}
	return st
}

// String is for logs and test failures.
func (s CorrelationStatus) String() string {
	out := fmt.Sprintf("severity %s", s.Severity)
	if s.Episode != nil {
		out += fmt.Sprintf(", episode %s holding %v", s.Episode.ID, s.Held)
	}
	for _, d := range s.Datacenters {
		out += fmt.Sprintf("; %s %s (%d/%d/%d)", d.Name, d.State, d.Alive, d.Suspect, d.Dead)
	}
	return out
}
