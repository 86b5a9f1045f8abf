"""Requests mecorch defines refuse what they do not know, and an
Idempotency-Key reused with another body is a 422 (in-memory drivers)."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.corelab import INST, create, env, onboard, problem  # noqa: F401


def test_a_misspelled_extension_is_refused_with_the_closest_field(env):  # noqa: F811
    onboard(env)
    iid = create(env)["id"]
    err = problem(env.c.post, f"{INST}/{iid}/instantiate",
                  {"deployementType": "VM", "selectedMECHostInfo": [{"hostId": {"id": "default"}}]})
    assert err.status == 400
    assert err.body["detail"] == ("InstantiateAppRequest has no field 'deployementType' "
                                  "(did you mean 'deploymentType'?)")
    assert env.c.get(f"{INST}/{iid}")["instantiationState"] == "NOT_INSTANTIATED"
    assert not env.c.get("/app_lcm/v1/app_lcm_op_occs")
    err = problem(env.c.post, f"{INST}/{iid}/instantiate", {"zzz": 1})
    assert "InstantiateAppRequest has no field 'zzz'; its fields: " in err.body["detail"]


def test_terminate_refuses_unknown_fields(env):  # noqa: F811
    onboard(env)
    iid = create(env)["id"]
    err = problem(env.c.post, f"{INST}/{iid}/terminate",
                  {"terminationType": "FORCEFUL", "gracefullTerminationTimeout": 3})
    assert err.status == 400 and "did you mean 'gracefulTerminationTimeout'" in err.body["detail"]


def test_idempotency_key_with_another_body_is_a_422(env):  # noqa: F811
    onboard(env)
    key = {"Idempotency-Key": "k-422"}
    a, _ = env.c.post(INST, {"appDId": "sample-http", "appInstanceName": "one"}, key)
    again, _ = env.c.post(INST, {"appDId": "sample-http", "appInstanceName": "one"}, key)
    assert again["id"] == a["id"]
    err = problem(env.c.post, INST, {"appDId": "sample-http", "appInstanceName": "two"}, key)
    assert err.status == 422 and "Idempotency-Key was already used" in err.body["detail"]
    assert len(env.c.get(INST)) == 1
    body = {"deploymentType": "CONTAINER", "selectedMECHostInfo": [{"hostId": {"id": "default"}}],
            "appTrafficRule": [], "appDNSRule": []}
    op, _ = env.c.post(f"{INST}/{a['id']}/instantiate", body, key)
    err = problem(env.c.post, f"{INST}/{a['id']}/instantiate", {**body, "deploymentType": "VM"},
                  key)
    assert err.status == 422
    env.c.wait_op(op, timeout=10)


def test_a_misspelled_appd_field_names_the_closest():
    from mecorch.kernel.errors import InvalidInput
    from mecorch.package import appd as appd_mod
    import yaml
    from support.corelab import CONTAINER_APPD
    doc = yaml.safe_load(CONTAINER_APPD.read_text())
    doc["appTraficRule"] = doc.pop("appTrafficRule")
    with pytest.raises(InvalidInput, match="did you mean 'appTrafficRule'"):
        appd_mod.validate_appd(doc)


@pytest.mark.parametrize("doc, says", [
    ("apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec:\n  containers:\n"
     "    - name: c\n      image: sample-http\n      resourcez: {limits: {cpu: 1}}\n",
     "orchestrationInfo.spec.containers[0] has no field 'resourcez' (did you mean 'resources'?)"),
    ("apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec:\n  containers:\n"
     "    - name: c\n      resources: {limit: {cpu: 1}}\n",
     "orchestrationInfo.spec.containers[0].resources has no field 'limit' "
     "(did you mean 'limits'?)"),
    ((Path(__file__).resolve().parents[2] / "examples/orchestration/vm-tosca.yaml").read_text()
     .replace("num_cpus", "num_cpuz"), "has no field 'num_cpuz' (did you mean 'num_cpus'?)"),
])
def test_orchestration_info_typos_are_refused(doc, says):
    from mecorch.spec import decision, orchestration_info
    from mecorch.kernel.errors import InvalidInput
    with pytest.raises(InvalidInput) as e:
        orchestration_info.details(orchestration_info.parse(doc))
    assert says in e.value.detail
