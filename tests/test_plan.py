"""One planned request (spec/plan.py): an instantiate request's
orchestrationInfo is parsed once per level, on one node and through an
MEO over an in-process MEPM (fake drivers), and the plan is the one value
the driver gets."""

from __future__ import annotations

import traceback

import pytest

from mecorch.spec import decision, orchestration_info
from test_core_orchestration import (  # noqa: F401 (env: a fixture)
    CONTAINER_APPD, INST, POD, TOSCA, VM_APPD, create, env, instantiate, onboard)
from test_meo_core import deploy, onboard as meo_onboard, system  # noqa: F401 (a fixture)


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
