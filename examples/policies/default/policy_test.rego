# Tests of the default admission policy. Run them with
#
#   coordinatord policy test examples/policies/default
#
# The tables below restate the policy's rules on purpose: they are the
# specification the policy is checked against, so editing the policy without
# editing them fails here.
package coordinatord.admission_test

import data.coordinatord.admission

# --- fixtures ---------------------------------------------------------------

claims(role) := {
	"cluster": "blue",
	"env": "prod",
	"role": role,
	"datacenter": "dc1",
	"node": sprintf("%s-1", [role]),
	"spiffe_id": sprintf("spiffe://coordinatord.local/cluster/blue/env/prod/role/%s/dc/dc1/node/%s-1", [role, role]),
	"serial": "0a1b2c",
	"not_after": "2030-01-01T00:00:00Z",
}

request(source, target, action) := request_claims(claims(source), claims(target), action)

request_claims(source, target, action) := {
	"source": source,
	"target": target,
	"action": action,
	"resource": {},
}

every_role := {"client", "gate", "manager", "worker", "admin", "coordinator"}

peer_roles := {"client", "gate", "manager", "worker"}

connect_pairs := {
	["client", "gate"],
	["gate", "manager"],
	["gate", "gate"],
	["manager", "worker"],
	["manager", "manager"],
	["worker", "manager"],
	["manager", "gate"],
	["coordinator", "coordinator"],
}

api_callers := {
	"admission.check": (peer_roles | {"admin"}),
	"metrics.read": (peer_roles | {"admin"}),
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
	"lease.read": (peer_roles | {"admin"}),
	"lease.check": (peer_roles | {"admin"}),
	"lease.force": {"admin"},
	"module.read": (peer_roles | {"admin"}),
	"module.invoke": (peer_roles | {"admin"}),
	"module.write": {"admin"},
	"job.report": {"admin", "gate", "manager"},
	"job.read": (peer_roles | {"admin"}),
	"datacenter.read": (peer_roles | {"admin"}),
}

every_action := {"connect", "raft", "gossip", "no.such.action"} | {a | some a, _ in api_callers}

# --- peer traffic -----------------------------------------------------------

test_every_listed_connect_pair_is_allowed if {
	denied := {pair |
		some pair in connect_pairs
		not admission.allow with input as request(pair[0], pair[1], "connect")
	}
	denied == set()
}

test_every_other_connect_pair_is_denied if {
	allowed := {[s, t] |
		some s in every_role
		some t in every_role
		not [s, t] in connect_pairs
		admission.allow with input as request(s, t, "connect")
	}
	allowed == set()
}

test_client_may_connect_to_a_gate if {
	admission.allow with input as request("client", "gate", "connect")
	count(admission.reasons) == 0 with input as request("client", "gate", "connect")
}

test_worker_may_not_connect_to_a_gate_and_the_reason_names_the_pair if {
	not admission.allow with input as request("worker", "gate", "connect")
	admission.reasons == {`role pair worker->gate is not allowed for action "connect"`} with input as request("worker", "gate", "connect")
}

test_client_may_not_connect_straight_to_a_manager_or_worker if {
	not admission.allow with input as request("client", "manager", "connect")
	not admission.allow with input as request("client", "worker", "connect")
}

test_worker_may_not_connect_to_another_worker if {
	not admission.allow with input as request("worker", "worker", "connect")
}

test_admin_may_not_connect_to_peers if {
	not admission.allow with input as request("admin", "gate", "connect")
	not admission.allow with input as request("admin", "coordinator", "connect")
}

test_coordinators_may_use_raft_and_gossip_with_each_other if {
	admission.allow with input as request("coordinator", "coordinator", "raft")
	admission.allow with input as request("coordinator", "coordinator", "gossip")
}

test_only_coordinators_may_use_raft_and_gossip if {
	allowed := {[s, t, a] |
		some s in every_role
		some t in every_role
		some a in {"raft", "gossip"}
		[s, t] != ["coordinator", "coordinator"]
		admission.allow with input as request(s, t, a)
	}
	allowed == set()
}

test_raft_between_gates_is_denied_with_the_pair_named if {
	admission.reasons == {`role pair gate->gate is not allowed for action "raft"`} with input as request("gate", "gate", "raft")
}

# --- coordinatord's API -----------------------------------------------------

test_each_api_action_is_allowed_exactly_for_its_callers if {
	wrong := {[action, role, allowed] |
		some action, callers in api_callers
		some role in every_role
		allowed := admission.allow with input as request(role, "coordinator", action)
		expected := role in callers
		allowed != expected
	}
	wrong == set()
}

test_admin_may_call_every_api_action if {
	denied := {action |
		some action, _ in api_callers
		not admission.allow with input as request("admin", "coordinator", action)
	}
	denied == set()
}

test_worker_may_not_write_a_policy_and_the_reason_names_action_and_role if {
	req := request("worker", "coordinator", "policy.write")
	not admission.allow with input as req
	admission.reasons == {`action "policy.write" is not allowed for role "worker"`} with input as req
}

test_gates_and_managers_own_leases_and_jobs if {
	every role in {"gate", "manager"} {
		every action in {"lease.acquire", "lease.renew", "lease.release", "job.report"} {
			admission.allow with input as request(role, "coordinator", action)
		}
	}
}

test_workers_and_clients_may_read_leases_and_check_tokens_but_not_acquire if {
	every role in {"client", "worker"} {
		admission.allow with input as request(role, "coordinator", "lease.read")
		admission.allow with input as request(role, "coordinator", "lease.check")
		not admission.allow with input as request(role, "coordinator", "lease.acquire")
		not admission.allow with input as request(role, "coordinator", "job.report")
	}
}

test_every_job_role_may_read_reporter_results_but_a_coordinator_may_not if {
	every role in peer_roles {
		admission.allow with input as request(role, "coordinator", "job.read")
	}
	not admission.allow with input as request("coordinator", "coordinator", "job.read")
}

test_every_job_role_may_read_datacenters_and_members_but_a_coordinator_may_not if {
	every role in peer_roles {
		admission.allow with input as request(role, "coordinator", "datacenter.read")
	}
	admission.allow with input as request("admin", "coordinator", "datacenter.read")
	not admission.allow with input as request("coordinator", "coordinator", "datacenter.read")
}

test_only_admin_may_force_a_lease_or_write_a_module if {
	every role in peer_roles {
		not admission.allow with input as request(role, "coordinator", "lease.force")
		not admission.allow with input as request(role, "coordinator", "module.write")
	}
}

test_an_api_action_aimed_at_a_peer_by_a_role_that_may_not_call_it_names_both if {
	req := request("worker", "gate", "policy.write")
	not admission.allow with input as req
	admission.reasons == {
		`action "policy.write" is not allowed for role "worker"`,
		`action "policy.write" must target a coordinator, not role "gate"`,
	} with input as req
}

test_an_api_action_aimed_at_a_peer_is_denied_with_a_reason if {
	req := request("admin", "gate", "policy.read")
	not admission.allow with input as req
	admission.reasons == {`action "policy.read" must target a coordinator, not role "gate"`} with input as req
}

test_coordinators_may_only_join_the_cluster_and_read_it if {
	allowed := {action |
		some action, _ in api_callers
		admission.allow with input as request("coordinator", "coordinator", action)
	}
	allowed == {"cluster.join", "cluster.read"}
}

test_a_coordinator_may_not_remove_members if {
	req := request("coordinator", "coordinator", "cluster.write")
	not admission.allow with input as req
	admission.reasons == {`action "cluster.write" is not allowed for role "coordinator"`} with input as req
}

test_a_coordinator_of_another_cluster_may_not_join if {
	req := object.union(request("coordinator", "coordinator", "cluster.join"), {"source": object.union(claims("coordinator"), {"cluster": "green"})})
	not admission.allow with input as req
	admission.reasons == {`source cluster "green" differs from target cluster "blue"`} with input as req
}

test_job_roles_may_not_join_or_read_the_cluster if {
	every role in peer_roles {
		not admission.allow with input as request(role, "coordinator", "cluster.join")
		not admission.allow with input as request(role, "coordinator", "cluster.read")
	}
}

# --- cluster, env and claims ------------------------------------------------

test_different_clusters_are_denied_and_the_reason_names_both if {
	req := object.union(request("client", "gate", "connect"), {"target": object.union(claims("gate"), {"cluster": "green"})})
	not admission.allow with input as req
	admission.reasons == {`source cluster "blue" differs from target cluster "green"`} with input as req
}

test_different_envs_are_denied_and_the_reason_names_both if {
	req := object.union(request("client", "gate", "connect"), {"source": object.union(claims("client"), {"env": "dev"})})
	not admission.allow with input as req
	admission.reasons == {`source env "dev" differs from target env "prod"`} with input as req
}

test_every_problem_is_named_at_once if {
	req := request_claims(claims("worker"), object.union(claims("gate"), {"cluster": "green", "env": "dev"}), "connect")
	not admission.allow with input as req
	admission.reasons == {
		`source cluster "blue" differs from target cluster "green"`,
		`source env "prod" differs from target env "dev"`,
		`role pair worker->gate is not allowed for action "connect"`,
	} with input as req
}

test_an_admin_of_another_env_may_not_write_policies if {
	req := object.union(request("admin", "coordinator", "policy.write"), {"source": object.union(claims("admin"), {"env": "dev"})})
	not admission.allow with input as req
}

test_a_missing_claim_is_denied_and_named if {
	req := request_claims(object.remove(claims("client"), ["env"]), claims("gate"), "connect")
	not admission.allow with input as req
	`source claim "env" is missing or empty` in admission.reasons with input as req
}

# The engine refuses a missing or empty claim before it evaluates any policy
# (engine.wellFormed, tested in engine/admission_test.go), so allow does not
# check claims again: empty but equal claims on both sides are the engine's to
# refuse. An empty claim on one side still differs from the other side.
test_an_empty_claim_on_one_side_is_denied_and_the_reason_shows_it if {
	req := object.union(request("client", "gate", "connect"), {"source": object.union(claims("client"), {"cluster": ""})})
	not admission.allow with input as req
	admission.reasons == {`source cluster "" differs from target cluster "blue"`} with input as req
}

test_an_empty_input_is_denied_with_every_missing_claim_named if {
	not admission.allow with input as {}
	admission.reasons == {
		"action is missing or not a string",
		`source claim "cluster" is missing or empty`,
		`source claim "env" is missing or empty`,
		`source claim "role" is missing or empty`,
		`target claim "cluster" is missing or empty`,
		`target claim "env" is missing or empty`,
		`target claim "role" is missing or empty`,
	} with input as {}
}

test_a_missing_action_is_denied_and_named if {
	req := object.remove(request("admin", "coordinator", "policy.read"), ["action"])
	not admission.allow with input as req
	admission.reasons == {"action is missing or not a string"} with input as req
}

# A claim that is not a string is the engine's to refuse too; the policy
# denies it and shows the value it got.
test_a_claim_that_is_not_a_string_is_denied if {
	req := request_claims(object.union(claims("client"), {"role": ["gate"]}), claims("gate"), "connect")
	not admission.allow with input as req
	admission.reasons == {`role pair ["gate"]->gate is not allowed for action "connect"`} with input as req
}

test_an_unknown_action_is_denied_and_named if {
	not admission.allow with input as request("admin", "coordinator", "x")
	admission.reasons == {`unknown action "x"`} with input as request("admin", "coordinator", "x")
}

test_an_unknown_role_is_denied if {
	not admission.allow with input as request("intruder", "gate", "connect")
	not admission.allow with input as request("intruder", "coordinator", "admission.check")
}

# --- allow and reasons agree --------------------------------------------------

test_every_denial_has_a_reason_and_no_allowed_request_has_one if {
	inconsistent := {[s, t, a] |
		some s in (every_role | {"intruder"})
		some t in every_role
		some a in every_action
		decision := admission with input as request(s, t, a)
		has_reasons := count(decision.reasons) > 0
		decision.allow == has_reasons
	}
	inconsistent == set()
}
