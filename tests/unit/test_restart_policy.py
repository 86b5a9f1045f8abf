"""Restart policies read (mecorch.spec.restart): from the request's
extension, a Kubernetes pod spec, the AppD's extension and the host
default; every refusal names its field."""

from __future__ import annotations

import copy

import pytest

from mecorch.kernel import config
from mecorch.kernel.errors import InvalidInput
from mecorch.spec import orchestration_info, restart
from mecorch.spec.restart import RestartPolicy

HOST = RestartPolicy("Never", 1.0, 60.0, 10, 300.0)
ALWAYS = {"policy": "Always"}          # what a manifest's restartPolicy: Always gives
POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
       "spec": {"containers": [{"name": "app", "image": "x:1"}]}}
DEPLOYMENT = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
              "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "x:1"}]}}}}


def refused(fn, *args) -> str:
    with pytest.raises(InvalidInput) as e:
        fn(*args)
    return e.value.detail


def manifest_policy(doc: dict) -> str | None:
    parsed = orchestration_info.parse(doc)
    orchestration_info.details(parsed)         # what the plan checks of the manifest
    spec, where = orchestration_info.pod_spec_of(parsed)
    return restart.kubernetes_policy(spec, parsed.kind, where)


def pod(**spec) -> dict:
    doc = copy.deepcopy(POD)
    doc["spec"].update(spec)
    return doc


# ---------------------------------------------------------------- the value
def test_backoff_doubles_and_is_capped():
    p = RestartPolicy("Always", 0.5, 3.0, 5, 60)
    assert [p.delay(n) for n in range(6)] == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]
    assert p.delay(10_000) == 3.0           # no overflow on a long count


@pytest.mark.parametrize("policy, code, restarts", [
    ("Always", 0, True), ("Always", 137, True), ("Always", None, True),
    ("OnFailure", 0, False), ("OnFailure", 1, True), ("OnFailure", None, True),
    ("Never", 1, False), ("Never", None, False)])
def test_which_exits_restart(policy, code, restarts):
    assert RestartPolicy(policy).restarts_after(code) is restarts


def test_stored_form_round_trips():
    p = RestartPolicy("OnFailure", 0.25, 8.0, 3, 20.0)
    assert p.to_doc() == {"policy": "OnFailure", "backoffInitialS": 0.25, "backoffMaxS": 8.0,
                          "limit": 3, "resetAfterS": 20.0}
    assert RestartPolicy.from_doc(p.to_doc(), HOST) == p
    assert RestartPolicy.from_doc(None, HOST) == HOST      # an instance older than policies


# ---------------------------------------------------------------- where it comes from
def test_nothing_said_is_the_host_default():
    assert restart.resolve({}, {}, {}, HOST) == HOST


def test_every_field_of_the_request_extension():
    body = {"restartPolicy": {"policy": "OnFailure", "backoffInitialS": 0.1,
                              "backoffMaxS": 2, "limit": 4, "resetAfterS": 30}}
    assert restart.resolve(body, {}, {}, HOST) == RestartPolicy("OnFailure", 0.1, 2, 4, 30)


def test_precedence_request_then_manifest_then_appd_then_host():
    appd = {"restartPolicy": {"policy": "OnFailure", "limit": 2, "backoffMaxS": 9}}
    assert restart.resolve({}, {}, appd, HOST) == RestartPolicy("OnFailure", 1.0, 9, 2, 300.0)
    assert restart.resolve({}, ALWAYS, appd, HOST).policy == "Always"
    got = restart.resolve({"restartPolicy": {"limit": 7}}, ALWAYS, appd, HOST)
    assert (got.policy, got.limit, got.backoff_max_s) == ("Always", 7, 9)


def test_request_and_manifest_that_disagree_are_refused_naming_both():
    says = refused(restart.resolve, {"restartPolicy": {"policy": "Never"}}, ALWAYS, {}, HOST,
                   "orchestrationInfo.spec.restartPolicy")
    assert "restartPolicy.policy" in says and "orchestrationInfo.spec.restartPolicy" in says


@pytest.mark.parametrize("doc, field", [
    ({"policy": "always"}, "restartPolicy.policy"),
    ({"policy": 1}, "restartPolicy.policy"),
    ({"backoffInitialS": -1}, "restartPolicy.backoffInitialS"),
    ({"backoffMaxS": "5"}, "restartPolicy.backoffMaxS"),
    ({"backoffMaxS": 1e9}, "restartPolicy.backoffMaxS"),
    ({"limit": 1.5}, "restartPolicy.limit"),
    ({"limit": -1}, "restartPolicy.limit"),
    ({"resetAfterS": True}, "restartPolicy.resetAfterS"),
    ({"polcy": "Always"}, "polcy"),
    ({"backoffInitialS": 10, "backoffMaxS": 5}, "backoffInitialS"),
])
def test_request_refusals_name_the_field(doc, field):
    assert field in refused(restart.resolve, {"restartPolicy": doc}, {}, {}, HOST)


def test_request_extension_must_be_an_object():
    assert "restartPolicy" in refused(restart.resolve, {"restartPolicy": "Always"}, {}, {},
                                      HOST)


@pytest.mark.parametrize("doc, field", [
    ({"policy": "Sometimes"}, "AppD.restartPolicy.policy"),
    ({"limitt": 3}, "limitt"),
    ({"backoffInitialS": 9, "backoffMaxS": 3}, "AppD.restartPolicy.backoffInitialS"),
])
def test_appd_extension_checked_at_onboarding(doc, field):
    assert field in refused(restart.check_appd, {"restartPolicy": doc})
    restart.check_appd({"restartPolicy": {"policy": "Always", "limit": 3}})


# ---------------------------------------------------------------- Kubernetes
@pytest.mark.parametrize("value", ["Always", "OnFailure", "Never"])
def test_pod_restart_policy_is_read(value):
    assert manifest_policy(pod(restartPolicy=value)) == value
    assert manifest_policy(POD) is None


def test_pod_restart_policy_value_refused_naming_it():
    assert "orchestrationInfo.spec.restartPolicy" in refused(
        manifest_policy, pod(restartPolicy="Sometimes"))


def test_deployment_allows_only_always_as_kubernetes_does():
    doc = copy.deepcopy(DEPLOYMENT)
    doc["spec"]["template"]["spec"]["restartPolicy"] = "Always"
    assert manifest_policy(doc) == "Always"
    doc["spec"]["template"]["spec"]["restartPolicy"] = "OnFailure"
    says = refused(manifest_policy, doc)
    assert "orchestrationInfo.spec.template.spec.restartPolicy" in says and "Always" in says


def test_a_containers_own_restart_policy_is_refused_by_name():
    doc = copy.deepcopy(POD)
    doc["spec"]["containers"][0]["restartPolicy"] = "Always"
    says = refused(orchestration_info.details, orchestration_info.parse(doc))
    assert "orchestrationInfo.spec.containers[0].restartPolicy" in says


@pytest.mark.parametrize("name", ["terminationGracePeriodSeconds", "dnsPolicy", "hostAliases",
                                  "ephemeralContainers", "shareProcessNamespace"])
def test_pod_fields_mecorch_does_not_honour_are_refused_by_name(name):
    says = refused(orchestration_info.details, orchestration_info.parse(pod(**{name: 1})))
    assert f"orchestrationInfo.spec.{name}" in says and "not supported" in says


def test_a_misspelt_pod_field_is_refused_with_a_hint():
    says = refused(orchestration_info.details,
                   orchestration_info.parse(pod(restartPolcy="Always")))
    assert "restartPolcy" in says and "restartPolicy" in says


def test_placement_and_privilege_asks_are_refused_by_name():
    # never granted, so never accepted: the app would run believing them
    for field, value in (("nodeSelector", {"a": "b"}), ("serviceAccountName", "x"),
                         ("hostNetwork", True)):
        says = refused(orchestration_info.details,
                       orchestration_info.parse(pod(**{field: value})))
        assert f"spec.{field}: is not supported" in says, says


# ---------------------------------------------------------------- TOSCA
def tosca(policies) -> dict:
    return {"tosca_definitions_version": "tosca_simple_yaml_1_3",
            "topology_template": {"node_templates": {"app": {"type": "Application"}},
                                  "policies": policies}}


def test_tosca_restart_policy_every_field():
    props = {"policy": "OnFailure", "backoffInitialS": 2, "backoffMaxS": 30, "limit": 3,
             "resetAfterS": 120}
    said, where = restart.tosca_policy(tosca([
        {"placement": {"type": "tosca.policies.Placement"}},          # others: not read
        {"restart": {"type": "mecorch.policies.Restart", "properties": props,
                     "targets": ["app"]}}]))
    assert where == "orchestrationInfo.topology_template.policies[1].restart.properties"
    assert restart.resolve({}, said, {}, HOST, where) == RestartPolicy("OnFailure", 2, 30, 3, 120)
    assert restart.tosca_policy(tosca(None)) == ({}, "")
    # the mapping form some templates use
    said, _ = restart.tosca_policy(tosca({"r": {"type": "mecorch.policies.Restart",
                                               "properties": {"policy": "Always"}}}))
    assert said == {"policy": "Always"}


@pytest.mark.parametrize("policies, field", [
    ([{"r": {"type": "mecorch.policies.Restart", "properties": {"policy": "always"}}}],
     "policies[0].r.properties.policy"),
    ([{"r": {"type": "mecorch.policies.Restart", "properties": {"limt": 3}}}], "limt"),
    ([{"r": {"type": "mecorch.policies.Restart", "propertes": {}}}], "propertes"),
    ([{"r": {"type": "mecorch.policies.Restart"}}, {"s": {"type": "mecorch.policies.Restart"}}],
     "policies[1].s"),
    ([{"r": {}, "s": {}}], "policies[0]"),
    ("restart", "topology_template.policies"),
])
def test_tosca_refusals_name_the_field(policies, field):
    assert field in refused(restart.tosca_policy, tosca(policies))


# ---------------------------------------------------------------- the host default
def test_host_default_from_the_configuration(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("orchestrator:\n  restart_policy:\n    policy: OnFailure\n    limit: 3\n")
    cfg = config.load(f)
    assert restart.host_default(cfg["orchestrator"]["restart_policy"]) == \
        RestartPolicy("OnFailure", 1.0, 60.0, 3, 300.0)
    assert restart.host_default(config.load()["orchestrator"]["restart_policy"]) == HOST


@pytest.mark.parametrize("text, says", [
    ("    polcy: Always\n", "orchestrator.restart_policy.polcy"),
    ("    policy: always\n", "orchestrator.restart_policy.policy"),
    ("    limit: -1\n", "orchestrator.restart_policy.limit"),
    ("    backoff_max_s: x\n", "orchestrator.restart_policy.backoff_max_s"),
    ("    backoff_initial_s: 90\n", "orchestrator.restart_policy.backoff_initial_s"),
])
def test_host_default_refusals_name_the_key(tmp_path, text, says):
    f = tmp_path / "c.yaml"
    f.write_text("orchestrator:\n  restart_policy:\n" + text)
    assert says in refused(config.load, f)
