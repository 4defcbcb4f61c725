# A stricter admission policy for deployments that span datacenters.
#
# It is coordinatord's default policy (policies/default.rego) plus two rules:
#
#   1. Peers talk within their own datacenter. Only gate->gate and
#      manager->manager traffic (and coordinatord's own Raft and gossip
#      between coordinator nodes) may cross datacenters.
#   2. Admins may use coordinatord's API only from the datacenters listed in
#      ops_datacenters.
#
# Calls to coordinatord's API by the job roles may reach a coordinatord node
# in another datacenter: a datacenter need not have a node of its own.
#
# A policy is one self-contained module, so the default's tables are repeated
# here rather than imported; the Go tests check that this policy never allows
# what the default denies. Install it in place of the default, or next to it.
#
# Input and output as in the default policy: input.source, input.target,
# input.action, input.resource; allow and reasons.
package coordinatord.admission

# The roles of the job system. Every one of them may use the read-only and
# checking parts of coordinatord's API.
peer_roles := {"client", "gate", "manager", "worker"}

# The roles that own jobs: they take and give back leases and report on jobs.
job_owners := {"gate", "manager"}

# Traffic between peers: for each action, the allowed [source role, target
# role] pairs.
peer_actions := {
	"connect": {
		["client", "gate"],
		["gate", "manager"],
		["gate", "gate"],
		["manager", "worker"],
		["manager", "manager"],
		["worker", "manager"],
		["manager", "gate"], # registration
		["coordinator", "coordinator"],
	},
	# coordinatord's own nodes, between each other.
	"raft": {["coordinator", "coordinator"]},
	"gossip": {["coordinator", "coordinator"]},
}

# coordinatord's API: for each action, the roles that may call it on a
# coordinatord node. admin may call every one of them (see api_callers).
api_actions := {
	"admission.check": peer_roles,
	"metrics.read": peer_roles,
	"policy.read": set(),
	"policy.write": set(),
	"policy.delete": set(),
	"decisions.read": set(),
	"cluster.read": set(),
	"cluster.write": set(),
	"lease.acquire": job_owners,
	"lease.renew": job_owners,
	"lease.release": job_owners,
	"lease.read": peer_roles,
	"lease.check": peer_roles,
	"lease.force": set(),
	"module.read": peer_roles,
	"module.invoke": peer_roles,
	"module.write": set(),
	"job.report": job_owners,
}

api_callers := {action: roles | some action, listed in api_actions; roles := listed | {"admin"}}

# The claims every decision reads; a missing or empty one denies.
required_claims := ["cluster", "env", "role", "datacenter"]

# Edit to name your operations datacenters: admins elsewhere are refused.
ops_datacenters := {"ops-1", "ops-2"}

# The peer role pairs that may cross datacenters.
cross_datacenter_pairs := {
	["gate", "gate"],
	["manager", "manager"],
	["coordinator", "coordinator"],
}

default allow := false

allow if {
	claims_present
	input.source.cluster == input.target.cluster
	input.source.env == input.target.env
	action_permitted
	datacenter_permitted
}

claims_present if {
	every side in ["source", "target"] {
		every name in required_claims {
			present(claim(side, name))
		}
	}
}

# claim is one claim of the source or target, "" when it is missing. Reading
# through object.get matters below: `not present(input.source.env)` would be
# undefined, not true, when env is missing, because OPA evaluates a
# function's arguments before the negation.
claim(side, name) := object.get(input, [side, name], "")

present(value) if {
	is_string(value)
	value != ""
}

action_permitted if {
	[input.source.role, input.target.role] in peer_actions[input.action]
}

action_permitted if {
	input.target.role == "coordinator"
	input.source.role in api_callers[input.action]
}

datacenter_permitted if {
	peer_actions[input.action]
	input.source.datacenter == input.target.datacenter
}

datacenter_permitted if {
	peer_actions[input.action]
	[input.source.role, input.target.role] in cross_datacenter_pairs
}

datacenter_permitted if {
	api_actions[input.action]
	input.source.role != "admin"
}

datacenter_permitted if {
	api_actions[input.action]
	input.source.role == "admin"
	input.source.datacenter in ops_datacenters
}

# Every path to a denial above has a reason below, and an allowed request has
# none; policy_test.rego checks both over every role pair and action.

reasons contains sprintf("%s claim %q is missing or empty", [side, name]) if {
	some side in ["source", "target"]
	some name in required_claims
	not present(claim(side, name))
}

reasons contains "action is missing or not a string" if {
	not is_string(object.get(input, "action", null))
}

reasons contains sprintf("source cluster %q differs from target cluster %q", [input.source.cluster, input.target.cluster]) if {
	input.source.cluster != input.target.cluster
}

reasons contains sprintf("source env %q differs from target env %q", [input.source.env, input.target.env]) if {
	input.source.env != input.target.env
}

reasons contains sprintf("unknown action %q", [input.action]) if {
	is_string(input.action)
	not peer_actions[input.action]
	not api_actions[input.action]
}

reasons contains sprintf("role pair %s->%s is not allowed for action %q", [input.source.role, input.target.role, input.action]) if {
	pairs := peer_actions[input.action]
	not [input.source.role, input.target.role] in pairs
}

reasons contains sprintf("action %q is not allowed for role %q", [input.action, input.source.role]) if {
	callers := api_callers[input.action]
	not input.source.role in callers
}

reasons contains sprintf("action %q must target a coordinator, not role %q", [input.action, input.target.role]) if {
	api_actions[input.action]
	input.target.role != "coordinator"
}

reasons contains msg if {
	peer_actions[input.action]
	input.source.datacenter != input.target.datacenter
	not [input.source.role, input.target.role] in cross_datacenter_pairs
	msg := sprintf("role pair %s->%s may not cross datacenters: source datacenter %q differs from target datacenter %q", [
		input.source.role, input.target.role,
		input.source.datacenter, input.target.datacenter,
	])
}

reasons contains sprintf("admins may call the API only from datacenters %v, not from %q", [sort(ops_datacenters), input.source.datacenter]) if {
	api_actions[input.action]
	input.source.role == "admin"
	not input.source.datacenter in ops_datacenters
}
