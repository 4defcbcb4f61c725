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
# input.action, input.resource; allow and reasons. It is written the same way
# and for the same reasons (see the default policy's header): allow is a few
# lookups in literal tables, because it is evaluated on every request; the
# engine has checked every claim, the datacenter included, before it asks;
# reasons is evaluated only on a denial.
package coordinatord.admission

# Traffic between peers: peer_actions[action][source role] is the set of
# target roles the source may reach with that action.
peer_actions := {
	"connect": {
		"client": {"gate"},
		"gate": {"gate", "manager"},
		"manager": {"gate", "manager", "worker"}, # manager->gate: registration
		"worker": {"manager"},
		"coordinator": {"coordinator"},
	},
	# coordinatord's own nodes, between each other.
	"raft": {"coordinator": {"coordinator"}},
	"gossip": {"coordinator": {"coordinator"}},
}

# coordinatord's API: api_actions[action] is the set of roles that may call
# it on a coordinatord node. admin may call every action. The roles of the job
# system (client, gate, manager, worker) may use the read-only and checking
# parts; the roles that own jobs (gate, manager) also take and give back
# leases and report on jobs. coordinatord's own nodes (coordinator) may ask
# to join the cluster and read its state, nothing else.
api_actions := {
	"admission.check": {"admin", "client", "gate", "manager", "worker"},
	"metrics.read": {"admin", "client", "gate", "manager", "worker"},
	"policy.read": {"admin"},
	"policy.write": {"admin"},
	"policy.delete": {"admin"},
	"decisions.read": {"admin"},
	"cluster.join": {"admin", "coordinator"},
	"cluster.read": {"admin", "coordinator"},
	"cluster.write": {"admin"},
	"lease.acquire": {"admin", "gate", "manager"},
	"lease.renew": {"admin", "gate", "manager"},
	"lease.release": {"admin", "gate", "manager"},
	"lease.read": {"admin", "client", "gate", "manager", "worker"},
	"lease.check": {"admin", "client", "gate", "manager", "worker"},
	"lease.force": {"admin"},
	"module.read": {"admin", "client", "gate", "manager", "worker"},
	"module.invoke": {"admin", "client", "gate", "manager", "worker"},
	"module.write": {"admin"},
	"job.report": {"admin", "gate", "manager"},
	"job.read": {"admin", "client", "gate", "manager", "worker"},
	# Datacenter states, partitions and held leases (/v1/datacenters), and
	# the gossip members (/v1/members).
	"datacenter.read": {"admin", "client", "gate", "manager", "worker"},
}

# Edit to name your operations datacenters: admins elsewhere are refused.
ops_datacenters := {"ops-1", "ops-2"}

# The peer role pairs that may cross datacenters:
# cross_datacenter_pairs[source role] is the set of target roles.
cross_datacenter_pairs := {
	"gate": {"gate"},
	"manager": {"manager"},
	"coordinator": {"coordinator"},
}

default allow := false

# An admin's call to coordinatord's API, from an operations datacenter. OPA
# indexes rules on equalities with input, so this rule is looked at only for
# an admin calling a coordinator, and the next only for calls to a
# coordinator.
allow if {
	input.target.role == "coordinator"
	input.source.role == "admin"
	api_actions[input.action].admin
	ops_datacenters[input.source.datacenter]
	input.source.cluster == input.target.cluster
	input.source.env == input.target.env
}

# A job role's call to coordinatord's API, from any datacenter.
allow if {
	input.target.role == "coordinator"
	api_actions[input.action][input.source.role]
	not input.source.role == "admin"
	input.source.cluster == input.target.cluster
	input.source.env == input.target.env
}

# Traffic between peers in one datacenter...
allow if {
	peer_actions[input.action][input.source.role][input.target.role]
	input.source.datacenter == input.target.datacenter
	input.source.cluster == input.target.cluster
	input.source.env == input.target.env
}

# ...or between a pair that may cross datacenters.
allow if {
	peer_actions[input.action][input.source.role][input.target.role]
	cross_datacenter_pairs[input.source.role][input.target.role]
	input.source.cluster == input.target.cluster
	input.source.env == input.target.env
}

# reasons says why a request is denied: the problems below, or when there are
# none, what is missing from the input. Every path to a denial above has a
# reason, and an allowed request has none; policy_test.rego checks both. To
# add a reason of your own, add a problem.
reasons := problems if {
	not problems == set()
} else := missing

problems contains sprintf("source cluster %q differs from target cluster %q", [input.source.cluster, input.target.cluster]) if {
	not input.source.cluster == input.target.cluster
}

problems contains sprintf("source env %q differs from target env %q", [input.source.env, input.target.env]) if {
	not input.source.env == input.target.env
}

problems contains sprintf("role pair %s->%s is not allowed for action %q", [input.source.role, input.target.role, input.action]) if {
	pairs := peer_actions[input.action]
	not pairs[input.source.role][input.target.role]
}

problems contains sprintf("action %q is not allowed for role %q", [input.action, input.source.role]) if {
	callers := api_actions[input.action]
	not callers[input.source.role]
}

problems contains sprintf("action %q must target a coordinator, not role %q", [input.action, input.target.role]) if {
	api_actions[input.action]
	not input.target.role == "coordinator"
}

problems contains sprintf("unknown action %q", [input.action]) if {
	not peer_actions[input.action]
	not api_actions[input.action]
}

problems contains msg if {
	peer_actions[input.action]
	not input.source.datacenter == input.target.datacenter
	not cross_datacenter_pairs[input.source.role][input.target.role]
	msg := sprintf("role pair %s->%s may not cross datacenters: source datacenter %q differs from target datacenter %q", [
		input.source.role, input.target.role,
		input.source.datacenter, input.target.datacenter,
	])
}

problems contains sprintf("admins may call the API only from datacenters %v, not from %q", [sort(ops_datacenters), input.source.datacenter]) if {
	input.source.role == "admin"
	api_actions[input.action]
	not ops_datacenters[input.source.datacenter]
}

# missing names what the engine never lets through: a claim or the action
# missing, empty or not a string. Only such input can be denied without any
# problem above, and only then is it looked at.

missing contains sprintf("%s claim %q is missing or empty", [side, name]) if {
	some side in ["source", "target"]
	some name in ["cluster", "env", "role", "datacenter"]
	not present(claim(side, name))
}

missing contains "action is missing or not a string" if {
	not is_string(object.get(input, "action", null))
}

# claim is one claim of the source or target, "" when it is missing. Reading
# through object.get matters: `not present(input.source.env)` would be
# undefined, not true, when env is missing, because OPA evaluates a
# function's arguments before the negation.
claim(side, name) := object.get(input, [side, name], "")

present(value) if {
	is_string(value)
	value != ""
}
