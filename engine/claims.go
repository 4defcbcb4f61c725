// Package engine is coordinatord's decision core: it turns verified client
// certificates into identity claims, decides admission with the embedded Open
// Policy Agent, and (in later slices) holds the lease and correlation rules.
// It is pure logic: it opens no sockets and reads time only from an injected
// clock, so every rule can be tested without a network or a real clock.
package engine

import (
	"fmt"
	"time"
)

// Role is the part a peer plays in the job system. The set is closed: a
// certificate naming any other role is rejected, never mapped to a default.
type Role string

// The roles of the job system, plus admin (operators) and coordinator
// (coordinatord's own nodes, between each other).
const (
	RoleClient      Role = "client"
	RoleGate        Role = "gate"
	RoleManager     Role = "manager"
	RoleWorker      Role = "worker"
	RoleAdmin       Role = "admin"
	RoleCoordinator Role = "coordinator"
)

// Roles lists every known role in a stable order.
var Roles = []Role{RoleClient, RoleGate, RoleManager, RoleWorker, RoleAdmin, RoleCoordinator}

// Valid reports whether r is one of the known roles.
func (r Role) Valid() bool {
	for _, k := range Roles {
		if r == k {
			return true
		}
	}
	return false
}

// Claims is the identity of a peer, read from its verified certificate. Every
// field but Region is required; the parser never fills one in.
type Claims struct {
	Cluster    string `json:"cluster"`
	Env        string `json:"env"`
	Role       Role   `json:"role"`
	Datacenter string `json:"datacenter"`
	Node       string `json:"node"`
	// Region is read only by the subject mapping, where it is optional.
	Region string `json:"region,omitempty"`
	// SPIFFEID is the certificate's URI SAN under the spiffe mapping. Under the
	// subject mapping it is derived from the claims, so that every principal
	// has one canonical name in logs and decisions.
	SPIFFEID string    `json:"spiffe_id"`
	Serial   string    `json:"serial"`
	NotAfter time.Time `json:"not_after"`
}

// Mapping names how claims are laid out in a certificate.
type Mapping string

const (
	// MappingSPIFFE reads one URI SAN
	// spiffe://<trust-domain>/cluster/<c>/env/<e>/role/<r>/dc/<dc>/node/<id>.
	MappingSPIFFE Mapping = "spiffe"
	// MappingSubject reads cluster from the subject CN, role from the subject
	// OU, node/dc/region from DNS SANs "node=<id>", "dc=<id>", "region=<id>",
	// and env from the UTF-8 extension OIDEnv.
	MappingSubject Mapping = "subject"
)

// IdentityConfig chooses how certificates map to claims.
type IdentityConfig struct {
	// Mapping is MappingSPIFFE (the default) or MappingSubject.
	Mapping Mapping
	// TrustDomain is the SPIFFE trust domain the URI SAN must name, and the
	// one used to derive SPIFFEID under the subject mapping.
	TrustDomain string
}

// DefaultIdentityConfig is the identity configuration of a node that sets none.
func DefaultIdentityConfig() IdentityConfig {
	return IdentityConfig{Mapping: MappingSPIFFE, TrustDomain: "coordinatord.local"}
}

// Validate reports the first bad field of c.
func (c IdentityConfig) Validate() error {
	switch c.Mapping {
	case MappingSPIFFE, MappingSubject:
	default:
		return fmt.Errorf("identity mapping %q: must be %q or %q", c.Mapping, MappingSPIFFE, MappingSubject)
	}
	if err := validTrustDomain(c.TrustDomain); err != nil {
		return fmt.Errorf("trust domain %q: %w", c.TrustDomain, err)
	}
	return nil
}
