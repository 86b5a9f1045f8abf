"""One planned request (spec/plan.py): an instantiate request's
orchestrationInfo is parsed once per level, on one node and through an
MEO over an in-process MEPM (fake drivers), and the plan is the one value
the driver gets."""

from __future__ import annotations

import traceback

import pytest

from mecorch.spec import decision, orchestration_info
from support.corelab import (  # noqa: F401 (env: a fixture)
    CONTAINER_APPD, INST, POD, TOSCA, VM_APPD, create, env, instantiate, onboard)
from support.meolab import deploy, onboard as meo_onboard, system  # noqa: F401 (a fixture)


@pytest.fixture
def parses(monkeypatch):
    """Every parse of orchestrationInfo, by the level whose LCM asked for it
    ("mepm" or "meo": the innermost LCM module on the stack)."""
    seen: list[str] = []
    real = orchestration_info.parse

    def counting(info):
        for frame in reversed(traceback.extract_stack()):
            name = frame.filename.replace("\\", "/")
            if name.endswith("mecorch/mepm/lcm.py") or name.endswith("mecorch/meo/lcm.py"):
                seen.append(name.rsplit("/", 2)[-2])
                break
        else:
            seen.append("elsewhere")
        return real(info)
    monkeypatch.setattr(orchestration_info, "parse", counting)
    monkeypatch.setattr(decision, "parse", counting)     # decision's own name for it
    return seen


def test_one_parse_per_instantiate_on_one_node(env, parses):
    onboard(env, appTrafficRule=[], appDNSRule=[])
    onboard(env, VM_APPD, appTrafficRule=[], appDNSRule=[])
    for app, info in (("sample-http", POD), ("sample-vm", TOSCA)):
        inst = create(env, app)
        parses.clear()
        assert instantiate(env, inst["id"], orchestrationInfo=info)["operationState"] \
            == "COMPLETED"
        assert parses == ["mepm"], f"{app}: {parses}"


def test_one_parse_per_level_through_the_meo(system, parses):
    pkg = meo_onboard(system)
    parses.clear()
    iid, op = deploy(system, pkg["appDId"], orchestrationInfo=POD)
    assert op["operationState"] == "COMPLETED", op
    assert sorted(parses) == ["meo", "mepm"], parses


def test_the_driver_gets_the_planned_request(env):
    """What the driver deploys is the plan's request (plus the app's Mp1
    environment), not one rebuilt after the 202."""
    onboard(env, appTrafficRule=[], appDNSRule=[])
    inst = create(env)
    assert instantiate(env, inst["id"], orchestrationInfo=POD)["operationState"] == "COMPLETED"
    op = env.orch.store.list("op_occs")[0]
    planned = op["_plan"]["request"]
    got = env.cim.instances[inst["id"]]["request"]
    assert (got.vcpu, got.memory_mb, got.disk_gb) == \
        (planned["vcpu"], planned["memory_mb"], planned["disk_gb"])
    assert {k: v for k, v in got.env.items() if not k.startswith("MEC_")} == planned["env"]


def test_rules_are_read_from_etsi_once_before_the_202_and_once_to_apply(env, monkeypatch):
    """The plan validates the rules once; the claims and the targets are
    checked on those values; the worker reads the stored set once to apply
    it (an Mp1 PUT may have changed it while the instance deployed)."""
    from mecorch.spec.rules import DnsRule, TrafficRule
    reads = {"TrafficRule": 0, "DnsRule": 0}
    for cls in (TrafficRule, DnsRule):
        real = cls.from_etsi.__func__

        def counting(klass, data, field=cls.__name__[0].lower() + cls.__name__[1:],
                     _real=real):
            reads[klass.__name__] += 1
            return _real(klass, data, field)
        monkeypatch.setattr(cls, "from_etsi", classmethod(counting))
    onboard(env)                # sample-http: one traffic rule, one DNS rule
    inst = create(env)
    assert instantiate(env, inst["id"])["operationState"] == "COMPLETED"
    assert reads == {"TrafficRule": 2, "DnsRule": 2}


def test_the_manner_policy_is_given_each_manners_need_from_the_one_reading(monkeypatch):
    """A dual-format app with no manner named: the policy gets both
    manners' needs, and the chosen manner's request is the one already
    made for the policy (each manner's request made once)."""
    from pathlib import Path

    import yaml

    from mecorch.kernel.states import DeploymentType
    from mecorch.spec.capacity import Need
    from mecorch.spec.plan import plan_request
    appd = yaml.safe_load((Path(__file__).resolve().parents[2]
                           / "examples/sample-dual-app/Definitions/appd.yaml").read_text())
    pkg = {"_appd": appd, "_manners": ["CONTAINER", "VM"], "appDId": "sample-dual",
           "_imageOf": {"CONTAINER": "127.0.0.1:5000/mecorch/sample-http:1.0",
                        "VM": "sample-dual-vm"}}
    made = []
    real = decision.resource_request

    def counting(*a, **kw):
        made.append(a[2])
        return real(*a, **kw)
    monkeypatch.setattr(decision, "resource_request", counting)
    asked = {}

    def policy(manners, needs, accel):
        asked.update(needs)
        return DeploymentType.VM, "the test says VM", ["edge-b"]
    p = plan_request("i1", pkg, {}, policy)
    assert asked == {DeploymentType.CONTAINER: Need(0.5, 64, 0.1),
                     DeploymentType.VM: Need(1.0, 256, 2.0)}
    assert sorted(m.value for m in made) == ["CONTAINER", "VM"]        # once each
    assert p.manner is DeploymentType.VM and p.decision.source == "policy"
    assert p.need == asked[DeploymentType.VM] and p.wanted == ("edge-b",)
    assert [r.traffic_rule_id for r in p.traffic] == ["sample-dual-vip"]
    assert [r.dns_rule_id for r in p.dns] == ["sample-dual-dns"]
    with pytest.raises(AttributeError):
        p.wanted = ()                                                    # frozen
