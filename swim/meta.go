package swim

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/hashicorp/memberlist"
)

// Role is what kind of process a member is.
type Role string

// Roles.
const (
	// RoleCoordinator: a coordinatord server (Raft voter or follower).
	RoleCoordinator Role = "coordinator"
	// RoleAgent: a gossip-only `coordinatord agent` on a host of gates,
	// managers or workers.
	RoleAgent Role = "agent"
)

// MaxMetaSize is the largest encoded Meta memberlist carries
// (memberlist.MetaMaxSize).
const MaxMetaSize = memberlist.MetaMaxSize

// Meta is the metadata every member gossips about itself, encoded as
// compact JSON in memberlist's node meta. Peers decode it with DecodeMeta;
// unknown JSON keys are ignored, so fields can be added later without
// breaking older members.
type Meta struct {
	// NodeID is the member's node id (for a server, its Raft id).
	NodeID string `json:"id"`
	// Datacenter is the datacenter the member runs in; the correlation
	// engine groups members by it.
	Datacenter string `json:"dc"`
	// Role is RoleCoordinator or RoleAgent.
	Role Role `json:"role"`
	// Version is the coordinatord version the member runs.
	Version string `json:"v"`
}

// Validate checks a member's own metadata before it is gossiped: every
// field set, without whitespace or control characters, a known role, and
// at most MaxMetaSize bytes encoded. The error wraps ErrInvalidMeta and
// names the field.
func (m Meta) Validate() error {
	if err := m.validateFields(); err != nil {
		return err
	}
	if m.Role != RoleCoordinator && m.Role != RoleAgent {
		return fmt.Errorf("%w: Role %q: must be %q or %q", ErrInvalidMeta, m.Role, RoleCoordinator, RoleAgent)
	}
	b, err := m.Encode()
	if err != nil {
		return err
	}
	if len(b) > MaxMetaSize {
		return fmt.Errorf("%w: encoded size %d bytes exceeds memberlist's limit of %d", ErrInvalidMeta, len(b), MaxMetaSize)
	}
	return nil
}

// validateFields is what is required of any member, local or remote. A
// peer's role is not checked against the known ones, so that a newer
// version may add roles.
func (m Meta) validateFields() error {
	for _, f := range []struct{ name, value string }{
		{"NodeID", m.NodeID}, {"Datacenter", m.Datacenter}, {"Role", string(m.Role)}, {"Version", m.Version},
	} {
		if f.value == "" {
			return fmt.Errorf("%w: %s is empty", ErrInvalidMeta, f.name)
		}
		if strings.ContainsFunc(f.value, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
			return fmt.Errorf("%w: %s %q contains whitespace or control characters", ErrInvalidMeta, f.name, f.value)
		}
	}
	return nil
}

// Encode returns the compact JSON form gossiped in memberlist's node meta.
func (m Meta) Encode() ([]byte, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidMeta, err)
	}
	return b, nil
}

// DecodeMeta parses a peer's node meta. Unknown keys are ignored; missing
// or empty required fields are an error wrapping ErrInvalidMeta.
func DecodeMeta(b []byte) (Meta, error) {
	var m Meta
	if len(b) == 0 {
		return m, fmt.Errorf("%w: no metadata", ErrInvalidMeta)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&m); err != nil {
		return Meta{}, fmt.Errorf("%w: %v", ErrInvalidMeta, err)
	}
	if err := m.validateFields(); err != nil {
		return Meta{}, err
	}
	return m, nil
}
