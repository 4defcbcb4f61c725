# coordinatord's built-in admission policy.
#
# The engine evaluates data.coordinatord.admission with
#
#   input.source    claims of the caller (from its verified certificate)
#   input.target    claims of the peer it wants to reach; for coordinatord's
#                   own API, the claims of the coordinatord node (role
#                   "coordinator")
#   input.action    what the caller wants to do
#   input.resource  what it acts on, e.g. {"kind": "policy", "id": "default"}
#
# and admits the request only when allow is true. reasons says why not.
#
# To change who may talk to whom, edit the tables below: peer_actions for
# traffic between peers, api_actions for coordinatord's API.
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
required_claims := ["cluster", "env", "role"]

default allow := false

allow if {
	claims_present
	input.source.cluster == input.target.cluster
	input.source.env == input.target.env
	action_permitted
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
