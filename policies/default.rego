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
#
# How it is written, and why. allow is evaluated on every request, so it is
# kept to a few lookups in literal tables and two comparisons. OPA computes
# nothing ahead of time: a comprehension, an `every`, a function or a table
# built from other tables would be worked out again on every evaluation,
# which is why admin is listed in every entry of api_actions rather than
# added by a rule. A lookup such as api_actions[action][role] tests set
# membership without a built-in call. The engine checks the input before it
# asks (every claim present and non-empty, both roles known, an action), so
# allow does not check it again. reasons is evaluated only when allow is
# false; each of its rules begins with a cheap test that fails for the
# requests it does not explain. `not a == b` is written rather than `a != b`:
# a comparison is evaluated in place, while != is a built-in call costing
# several times as much.
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

default allow := false

# A call to coordinatord's API. OPA indexes rules on equalities with input, so
# this rule is not even looked at when the target is not a coordinator.
allow if {
	input.target.role == "coordinator"
	api_actions[input.action][input.source.role]
	input.source.cluster == input.target.cluster
	input.source.env == input.target.env
}

# Traffic between peers, coordinatord's own nodes included.
allow if {
	peer_actions[input.action][input.source.role][input.target.role]
	input.source.cluster == input.target.cluster
	input.source.env == input.target.env
}

# reasons says why a request is denied: the problems below, or when there are
# none, what is missing from the input. Every path to a denial above has a
# reason, and an allowed request has none; policy_test.rego checks both over
# every role pair and action. To add a reason of your own, add a problem.
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

# missing names what the engine never lets through: a claim or the action
# missing, empty or not a string. Such input (in policy tests, say) can be
# denied without any problem above, because a rule reading a missing claim
# fails; only then is it looked at, so a well-formed denial never pays for it.

missing contains sprintf("%s claim %q is missing or empty", [side, name]) if {
	some side in ["source", "target"]
	some name in ["cluster", "env", "role"]
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
