"""The health-check state machine (mecorch.mepm.health) over the real core
with in-memory drivers: thresholds, startup gating, readiness withdrawing
and restoring the instance's rules at the MEP, a failed liveness check
calling `on_dead`, an operator-stopped instance not probed, the record
written only on a change. Probe results and time are the test's own (the
runner and the clock are handed in); the real probes run in
tests/backends/test_probes.py."""

from __future__ import annotations

import copy

import yaml

from support import meolab
from support.corelab import INST, POD, create, env, instantiate, onboard  # noqa: F401 - fixture
from support.meolab import system  # noqa: F401 - the fixture
from mecorch.mepm.health import Prober

PROBES = {"startupProbe": None, "livenessProbe": None, "readinessProbe": None}


def pod_with(**probes) -> str:
    doc = yaml.safe_load(POD)
    doc["spec"]["containers"][0].update({k: v for k, v in probes.items() if v})
    return yaml.safe_dump(doc)


class Script:
    """The probe runner: each kind passes or fails as the test says, and
    every call is recorded as (kind, address)."""

    def __init__(self):
        self.passing = {"tcp:1": True, "tcp:2": True, "tcp:3": True}
        self.calls: list[str] = []

    def __call__(self, probe, ip, inst):
        key = f"{probe.action}:{probe.port}"
        self.calls.append(key)
        return self.passing[key], f"{key} {'ok' if self.passing[key] else 'refused'}"


# port 1: startup, 2: liveness, 3: readiness (so the script tells them apart)
def check(port, **kw):
    return {"tcpSocket": {"port": port}, "periodSeconds": 1, **kw}


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def deploy(e, **probes) -> str:
    onboard(e)
    iid = create(e)["id"]
    op = instantiate(e, iid, orchestrationInfo=pod_with(**probes))
    assert op["operationState"] == "COMPLETED", op
    return iid


def prober(e, dead=None):
    script, clock = Script(), Clock()
    dead = [] if dead is None else dead
    p = Prober(e.orch, lambda iid, why: dead.append((iid, why)), runner=script, clock=clock)
    return p, script, clock, dead


def step(p, clock, n=1):
    for _ in range(n):
        clock.now += 1
        p.run_due()


def rules_doc(e, iid):
    return e.orch.store.get("rules", iid)


def test_readiness_withdraws_after_failure_threshold_and_restores_after_success_threshold(env):
    e = env
    iid = deploy(e, readinessProbe=check(3, failureThreshold=2, successThreshold=2))
    inst = e.orch.store.get("instances", iid)
    assert inst["_probes"]["readiness"]["failure_threshold"] == 2
    assert "_probes" not in e.c.get(f"{INST}/{iid}")
    # as Kubernetes: out of service until the readiness check passes
    assert iid not in e.mep.applied and rules_doc(e, iid)["outOfService"] == ["readiness"]
    view = e.c.get(f"{INST}/{iid}")["health"]
    assert view["ready"] is False and view["checks"] == ["readiness"]
    assert view["detail"] == "readiness: not checked yet"
    p, script, clock, _ = prober(e)
    step(p, clock)
    assert iid not in e.mep.applied              # 1 success of 2
    step(p, clock)
    assert iid in e.mep.applied and "outOfService" not in rules_doc(e, iid)
    assert e.c.get(f"{INST}/{iid}")["health"]["ready"] is True
    script.passing["tcp:3"] = False
    step(p, clock)
    assert iid in e.mep.applied                  # 1 failure of 2: still in service
    step(p, clock)
    assert iid not in e.mep.applied              # withdrawn at the MEP
    assert rules_doc(e, iid)["outOfService"] == ["readiness"]
    health = e.c.get(f"{INST}/{iid}")["health"]
    assert health["ready"] is False and "tcp:3 refused" in health["detail"]
    # an apply while withdrawn (a new address, a reconcile) stores, pushes nothing
    host = e.orch.inventory.get("default")
    e.orch.mep.apply(host, iid, rules_doc(e, iid)["targetIp"])
    assert iid not in e.mep.applied and rules_doc(e, iid)["outOfService"] == ["readiness"]
    script.passing["tcp:3"] = True
    step(p, clock)
    assert iid not in e.mep.applied              # 1 success of 2
    step(p, clock)
    assert iid in e.mep.applied and "outOfService" not in rules_doc(e, iid)
    assert e.c.get(f"{INST}/{iid}")["health"]["ready"] is True


def test_the_record_is_written_only_on_a_change(env):
    e = env
    iid = deploy(e, readinessProbe=check(3))
    p, script, clock, _ = prober(e)
    writes = []
    put = e.orch.store.put
    e.orch.store.put = lambda t, i, d: (writes.append(t) if t == "instances" else None,
                                        put(t, i, d))[1]
    step(p, clock, 5)
    assert writes == ["instances"]               # not ready -> ready, then nothing
    assert script.calls == ["tcp:3"] * 5


def test_startup_gates_the_other_checks_and_its_failures_are_a_death(env):
    e = env
    iid = deploy(e, startupProbe=check(1, failureThreshold=3), livenessProbe=check(2),
                 readinessProbe=check(3))
    p, script, clock, dead = prober(e)
    script.passing["tcp:1"] = False
    step(p, clock, 2)
    assert script.calls == ["tcp:1", "tcp:1"] and not dead
    step(p, clock)
    assert dead and dead[0][0] == iid and "startup check failed 3 times" in dead[0][1]
    script.calls.clear()
    script.passing["tcp:1"] = True
    step(p, clock)                               # the restart starts it over
    assert script.calls == ["tcp:1"]
    step(p, clock)
    assert sorted(script.calls[1:]) == ["tcp:2", "tcp:3"]     # startup done: never again
    step(p, clock)
    assert "tcp:1" not in script.calls[1:]


def test_liveness_failures_call_on_dead_then_checks_start_over(env):
    e = env
    iid = deploy(e, livenessProbe=check(2, failureThreshold=2, initialDelaySeconds=3))
    p, script, clock, dead = prober(e)
    step(p, clock, 3)                            # first seen at the first step
    assert script.calls == []                    # initialDelaySeconds
    step(p, clock)
    assert script.calls == ["tcp:2"]
    script.passing["tcp:2"] = False
    step(p, clock, 2)
    assert len(dead) == 1 and "liveness check failed 2 times: tcp:2 refused" in dead[0][1]
    assert e.c.get(f"{INST}/{iid}")["health"]["live"] is False
    assert iid in e.mep.applied                  # liveness never withdraws
    n = len(script.calls)
    step(p, clock, 2)
    assert len(script.calls) == n                # the initial delay again after a restart


def test_an_operator_stopped_instance_is_not_probed(env):
    e = env
    iid = deploy(e, readinessProbe=check(3))
    p, script, clock, _ = prober(e)
    step(p, clock)
    assert script.calls == ["tcp:3"]
    op, _ = e.c.post(f"{INST}/{iid}/operate", {"changeStateTo": "STOPPED",
                                               "stopType": "FORCEFUL"})
    assert e.c.wait_op(op, timeout=10)["operationState"] == "COMPLETED"
    script.passing["tcp:3"] = False
    step(p, clock, 5)
    # not probed; out of service because it is stopped, not for readiness
    assert script.calls == ["tcp:3"] and iid not in e.mep.applied
    assert rules_doc(e, iid)["outOfService"] == ["down"]


def test_an_instance_held_by_an_operation_is_withdrawn_at_the_next_result(env):
    e = env
    iid = deploy(e, readinessProbe=check(3, failureThreshold=1))
    p, script, clock, _ = prober(e)
    with e.orch.lcm.hold(iid):
        step(p, clock)
        assert iid not in e.mep.applied         # ready, but held: not restored yet
    step(p, clock)
    assert iid in e.mep.applied
    script.passing["tcp:3"] = False
    with e.orch.lcm.hold(iid):
        step(p, clock)
        assert iid in e.mep.applied
    step(p, clock)
    assert iid not in e.mep.applied


def test_terminate_while_withdrawn_leaves_nothing_out_of_service(env):
    e = env
    iid = deploy(e, readinessProbe=check(3, failureThreshold=1))
    p, script, clock, _ = prober(e)
    step(p, clock)
    assert "outOfService" not in rules_doc(e, iid)
    script.passing["tcp:3"] = False
    step(p, clock)
    assert rules_doc(e, iid)["outOfService"] == ["readiness"]
    op, _ = e.c.post(f"{INST}/{iid}/terminate", {"terminationType": "FORCEFUL"})
    assert e.c.wait_op(op, timeout=10)["operationState"] == "COMPLETED"
    assert "outOfService" not in rules_doc(e, iid)
    assert "health" not in e.c.get(f"{INST}/{iid}")
    assert "_health" not in e.orch.store.get("instances", iid)
    step(p, clock)
    assert script.calls == ["tcp:3", "tcp:3"]    # not probed once terminated
    # instantiated again without a readiness check: in service from the start
    op = instantiate(e, iid, orchestrationInfo=pod_with(livenessProbe=check(2)))
    assert op["operationState"] == "COMPLETED" and iid in e.mep.applied


def test_an_instance_without_probes_is_not_tracked(env):
    e = env
    onboard(e)
    iid = create(e)["id"]
    assert instantiate(e, iid, orchestrationInfo=copy.copy(POD))["operationState"] == "COMPLETED"
    p, script, clock, _ = prober(e)
    step(p, clock, 3)
    assert script.calls == [] and p.snapshot() == {}
    assert "health" not in e.c.get(f"{INST}/{iid}")


def test_app_list_shows_ready(env, capsys):
    from mecorch import cli
    e = env
    iid = deploy(e, readinessProbe=check(3, failureThreshold=1))

    def row() -> str:
        assert cli.main(["--api", e.c.base, "app", "list"]) == 0
        out = capsys.readouterr().out.splitlines()
        assert "READY" in out[0].split()
        return next(ln for ln in out if ln.startswith(iid))
    p, script, clock, _ = prober(e)
    assert " no (out of service) " in row()      # not checked yet
    step(p, clock)
    assert " yes " in row()
    script.passing["tcp:3"] = False
    step(p, clock)
    assert " no (out of service) " in row()


def test_metrics_and_status_page_show_health(env):
    import urllib.request
    from prometheus_client.parser import text_string_to_metric_families
    e = env
    iid = deploy(e, readinessProbe=check(3, failureThreshold=1), livenessProbe=check(2))

    def scrape() -> dict:
        with urllib.request.urlopen(f"{e.c.base}/metrics", timeout=10) as r:
            text = r.read().decode()
        return {(s.name, s.labels.get("instance")): s.value
                for f in text_string_to_metric_families(text) for s in f.samples}

    def page() -> str:
        with urllib.request.urlopen(f"{e.c.base}/status", timeout=10) as r:
            return r.read().decode()
    p, script, clock, _ = prober(e)
    assert scrape()[("mecorch_instance_ready", iid)] == 0       # not checked yet
    assert ("mecorch_instance_live", iid) not in scrape()      # not decided: no sample
    assert "out of service (readiness: not checked yet)" in page()
    step(p, clock)
    m = scrape()
    assert m[("mecorch_instance_ready", iid)] == 1 and m[("mecorch_instance_live", iid)] == 1
    script.passing["tcp:3"] = False
    step(p, clock)
    assert scrape()[("mecorch_instance_ready", iid)] == 0
    assert "out of service (readiness: tcp:3 refused)" in page()


def test_a_vm_gets_the_appds_health_checks_and_the_meo_shows_health(system):
    """The AppD's healthChecks extension on a VM deployed through an MEO;
    the host's health record reaches the MEO's view at its resync."""
    from support.corelab import VM_APPD
    s = system
    pkg = meolab.onboard(s, VM_APPD, healthChecks={
        "readinessProbe": {"tcpSocket": {"port": 3}, "periodSeconds": 1,
                           "failureThreshold": 1}})
    iid, op = meolab.deploy(s, pkg["appDId"], deploymentType="VM",
                            selectedMECHostInfo=[{"hostId": {"id": "edge2"}}])
    assert op["operationState"] == "COMPLETED", op
    edge = s.hosts["edge2"]
    (host_inst,) = [i for i in edge.store.list("instances")
                    if i["instantiationState"] == "INSTANTIATED"]
    assert host_inst["_probes"] == {"readiness": {
        "action": "tcp", "port": 3, "path": "/", "headers": [], "command": [],
        "initial_delay_s": 0, "period_s": 1, "timeout_s": 1, "success_threshold": 1,
        "failure_threshold": 1}}
    script, clock = Script(), Clock()
    p = Prober(edge, lambda *_: None, runner=script, clock=clock)
    step(p, clock)
    assert script.calls == ["tcp:3"]
    s.meo.lcm.resync(s.meo.registry.get("edge2"))
    health = s.c.get(f"{INST}/{iid}")["health"]
    assert health["ready"] is True and health["checks"] == ["readiness"]

