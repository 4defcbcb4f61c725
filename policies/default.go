package policies

import _ "embed"

// DefaultRego is the source of the built-in default policy. It is the policy
// a node installs under DefaultID when none is stored, and the example users
// copy: examples/policies/default/policy.rego is a symlink to it.
//
//go:embed default.rego
var DefaultRego string

// Default returns the built-in default policy in enforce mode. Revision,
// Version and the update fields are left zero for the store to fill.
func Default() Policy {
	return Policy{ID: DefaultID, Rego: DefaultRego, Mode: ModeEnforce}
}
