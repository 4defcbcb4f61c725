# Tests of the per-datacenter admission policy. Run them with
#
#   coordinatord policy test examples/policies/per-datacenter
#
# The role tables are the default policy's and are tested in full there;
# these tests sample them and cover the datacenter rules in full.
package coordinatord.admission_test

import data.coordinatord.admission

# --- fixtures ---------------------------------------------------------------

claims(role, dc) := {
	"cluster": "blue",
	"env": "prod",
	"role": role,
	"datacenter": dc,
	"node": sprintf("%s-1", [role]),
	"spiffe_id": sprintf("spiffe://coordinatord.local/cluster/blue/env/prod/role/%s/dc/%s/node/%s-1", [role, dc, role]),
	"serial": "0a1b2c",
	"not_after": "2030-01-01T00:00:00Z",
}

# request: source in source_dc, target in target_dc.
request(source, source_dc, target, target_dc, action) := {
	"source": claims(source, source_dc),
	"target": claims(target, target_dc),
	"action": action,
	"resource": {},
}

every_role := {"client", "gate", "manager", "worker", "admin", "coordinator"}

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

crossing_pairs := {["gate", "gate"], ["manager", "manager"], ["coordinator", "coordinator"]}

sample_actions := {
	"connect", "raft", "gossip", "admission.check", "policy.write", "cluster.join",
	"lease.acquire", "lease.check", "lease.force", "module.invoke",
	"job.report", "job.read", "datacenter.read", "no.such.action",
}

# --- within one datacenter: as the default policy -----------------------------

test_every_connect_pair_of_the_default_is_allowed_within_a_datacenter if {
	denied := {pair |
		some pair in connect_pairs
		not admission.allow with input as request(pair[0], "dc1", pair[1], "dc1", "connect")
	}
	denied == set()
}

test_every_other_connect_pair_is_denied_within_a_datacenter if {
	allowed := {[s, t] |
		some s in every_role
		some t in every_role
		not [s, t] in connect_pairs
		admission.allow with input as request(s, "dc1", t, "dc1", "connect")
	}
	allowed == set()
}

test_worker_may_not_write_a_policy if {
	req := request("worker", "dc1", "coordinator", "dc1", "policy.write")
	not admission.allow with input as req
	admission.reasons == {`action "policy.write" is not allowed for role "worker"`} with input as req
}

test_different_clusters_are_denied if {
	req := object.union(request("client", "dc1", "gate", "dc1", "connect"), {"target": {"cluster": "green"}})
	admission.reasons == {`source cluster "blue" differs from target cluster "green"`} with input as req
}

# --- crossing datacenters -----------------------------------------------------

test_gates_managers_and_coordinators_may_reach_their_own_kind_across_datacenters if {
	admission.allow with input as request("gate", "dc1", "gate", "dc2", "connect")
	admission.allow with input as request("manager", "dc1", "manager", "dc2", "connect")
	admission.allow with input as request("coordinator", "dc1", "coordinator", "dc2", "raft")
	admission.allow with input as request("coordinator", "dc1", "coordinator", "dc2", "gossip")
}

test_every_other_connect_pair_is_denied_across_datacenters if {
	allowed := {pair |
		some pair in (connect_pairs - crossing_pairs)
		admission.allow with input as request(pair[0], "dc1", pair[1], "dc2", "connect")
	}
	allowed == set()
}

test_a_worker_in_another_datacenter_is_denied_and_the_reason_names_both_datacenters if {
	req := request("worker", "dc2", "manager", "dc1", "connect")
	not admission.allow with input as req
	admission.reasons == {`role pair worker->manager may not cross datacenters: source datacenter "dc2" differs from target datacenter "dc1"`} with input as req
}

test_a_pair_that_is_not_allowed_at_all_is_named_for_both_problems if {
	req := request("worker", "dc2", "gate", "dc1", "connect")
	not admission.allow with input as req
	admission.reasons == {
		`role pair worker->gate is not allowed for action "connect"`,
		`role pair worker->gate may not cross datacenters: source datacenter "dc2" differs from target datacenter "dc1"`,
	} with input as req
}

test_coordinators_may_join_and_read_the_cluster_across_datacenters_but_not_change_it if {
	admission.allow with input as request("coordinator", "dc2", "coordinator", "dc1", "cluster.join")
	admission.allow with input as request("coordinator", "dc2", "coordinator", "dc1", "cluster.read")
	not admission.allow with input as request("coordinator", "dc1", "coordinator", "dc1", "cluster.write")
}

test_job_roles_may_call_a_coordinator_in_another_datacenter if {
	admission.allow with input as request("worker", "dc2", "coordinator", "dc1", "lease.check")
	admission.allow with input as request("gate", "dc2", "coordinator", "dc1", "lease.acquire")
	admission.allow with input as request("client", "dc2", "coordinator", "dc1", "admission.check")
	admission.allow with input as request("manager", "dc2", "coordinator", "dc1", "job.report")
	admission.allow with input as request("worker", "dc2", "coordinator", "dc1", "job.read")
}

test_a_missing_datacenter_is_denied_and_named if {
	req := {
		"source": object.remove(claims("client", "dc1"), ["datacenter"]),
		"target": claims("gate", "dc1"),
		"action": "connect",
		"resource": {},
	}
	not admission.allow with input as req
	admission.reasons == {`source claim "datacenter" is missing or empty`} with input as req
}

# --- admins -----------------------------------------------------------------

test_an_admin_in_an_ops_datacenter_may_write_policies if {
	admission.allow with input as request("admin", "ops-1", "coordinator", "dc1", "policy.write")
	admission.allow with input as request("admin", "ops-2", "coordinator", "ops-2", "lease.force")
}

test_an_admin_outside_the_ops_datacenters_is_denied_even_next_to_the_node if {
	req := request("admin", "dc1", "coordinator", "dc1", "policy.read")
	not admission.allow with input as req
	admission.reasons == {`admins may call the API only from datacenters ["ops-1", "ops-2"], not from "dc1"`} with input as req
}

test_an_admin_outside_the_ops_datacenters_aiming_at_a_peer_is_named_for_both_problems if {
	req := request("admin", "dc1", "gate", "dc1", "policy.read")
	not admission.allow with input as req
	admission.reasons == {
		`action "policy.read" must target a coordinator, not role "gate"`,
		`admins may call the API only from datacenters ["ops-1", "ops-2"], not from "dc1"`,
	} with input as req
}

# --- allow and reasons agree --------------------------------------------------

test_every_denial_has_a_reason_and_no_allowed_request_has_one if {
	inconsistent := {[s, sdc, t, tdc, a] |
		some s in every_role
		some t in every_role
		some [sdc, tdc] in [["dc1", "dc1"], ["dc1", "dc2"], ["ops-1", "dc1"]]
		some a in sample_actions
		decision := admission with input as request(s, sdc, t, tdc, a)
		has_reasons := count(decision.reasons) > 0
		decision.allow == has_reasons
	}
	inconsistent == set()
}
