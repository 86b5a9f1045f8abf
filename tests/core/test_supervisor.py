"""The supervisor's logic (mecorch.mepm.supervisor) over in-memory drivers:
a runtime that dies by itself is restarted per its policy with a doubling,
capped wait; given up after its limit (CRASH_LOOP and a notification); an
operator's stop is never undone; an LCM operation in flight wins. The fake
drivers stream no events: the reconcile round reports each death, as it
does for a real driver without events. (On Docker and libvirt with their
events: tests/backends/test_restart.py.)"""

from __future__ import annotations

import time

import pytest

from mecorch.kernel.client import ApiError
from mecorch.kernel.states import DeploymentType, ObservedState
from support.corelab import (  # noqa: F401 (env: a fixture)
    INST, crash, crash_on, create, env, instantiate, onboard, until)
from support.meolab import system  # noqa: F401 (a fixture)

FAST = {"policy": "Always", "backoffInitialS": 0.05, "backoffMaxS": 0.1, "limit": 5,
        "resetAfterS": 600}


def deployed(env, **policy) -> str:
    onboard(env, appTrafficRule=[], appDNSRule=[])
    inst = create(env)
    body = {"restartPolicy": policy} if policy else {}
    assert instantiate(env, inst["id"], **body)["operationState"] == "COMPLETED"
    return inst["id"]


def view(env, iid: str) -> dict:
    return env.c.get(f"{INST}/{iid}")



def running(env, iid: str) -> bool:
    return env.cim.instances[iid]["state"] is ObservedState.RUNNING


def operate(env, iid: str, to: str) -> dict:
    op, _ = env.c.post(f"{INST}/{iid}/operate", {"changeStateTo": to, "stopType": "FORCEFUL"})
    return env.c.wait_op(op, timeout=10)


def test_observed_state_is_known_from_the_first_moment(env):
    iid = deployed(env)
    v = view(env, iid)
    assert (v["observedState"], v["observedStateDetail"]) == ("RUNNING", "started by instantiate")
    assert v["observedStateTime"]["seconds"] > 0
    assert v["restartPolicy"]["policy"] == "Never" and v["restartCount"] == 0
    assert operate(env, iid, "STOPPED")["operationState"] == "COMPLETED"
    assert view(env, iid)["observedState"] == "STOPPED"
    assert operate(env, iid, "STARTED")["operationState"] == "COMPLETED"
    assert view(env, iid)["observedState"] == "RUNNING"


def test_never_is_the_default_and_a_crash_stays_stopped(env):
    iid = deployed(env)
    crash(env, iid)
    time.sleep(0.3)
    env.orch.reconciler.run_once()
    assert not running(env, iid) and "start" not in env.cim.calls
    v = view(env, iid)
    assert v["observedState"] == "STOPPED" and v["restartCount"] == 0
    assert "lastExitCode" not in v          # nothing was counted


def test_always_restarts_with_a_doubling_capped_wait(env):
    iid = deployed(env, **FAST)
    waits = []
    for n in range(1, 5):
        crash(env, iid, 137)
        v = view(env, iid)
        assert v["observedState"] == "STOPPED", v
        waits.append(v["observedStateDetail"])
        assert v["lastExitCode"] == 137 and v["nextRestartTime"]["seconds"] > 0
        until(lambda: running(env, iid), what=f"restart {n}")
        until(lambda: view(env, iid)["observedState"] == "RUNNING")
        assert view(env, iid)["restartCount"] == n
    assert waits == [f"restarting in {w}s (restart {n} of 5; exit code 137)"
                     for n, w in ((1, "0.05"), (2, "0.1"), (3, "0.1"), (4, "0.1"))]
    assert "nextRestartTime" not in view(env, iid)


def test_limit_gives_up_in_crash_loop_with_a_notification(env):
    sub, _ = env.c.post("/app_lcm/v1/subscriptions", {
        "subscriptionType": "AppInstanceStateChange", "appInstanceState": "STOPPED",
        "callbackUri": "http://127.0.0.1:9/cb"})
    iid = deployed(env, **{**FAST, "limit": 2})
    for _ in range(2):
        crash(env, iid, 1)
        until(lambda: running(env, iid))
    starts = env.cim.calls.count("start")
    crash(env, iid, 1)
    v = view(env, iid)
    assert v["observedState"] == "CRASH_LOOP", v
    assert "gave up after 2 restart(s) in a row (exit code 1)" in v["observedStateDetail"]
    assert v["instantiatedAppState"]["operationalState"] == "STARTED"    # the operator's word
    sent = [d["body"] for d in env.orch.store.list("outbox")
            if d["body"]["subscriptionId"] == sub["id"]]
    assert [(b["notificationType"], b["appInstanceId"], b["observedState"], b["restartCount"],
             b["lastExitCode"]) for b in sent] == [("STOPPED", iid, "CRASH_LOOP", 2, 1)]
    time.sleep(0.3)
    env.orch.reconciler.run_once()          # later rounds leave it given up
    assert env.cim.calls.count("start") == starts
    assert view(env, iid)["observedState"] == "CRASH_LOOP"
    # the operator's start is allowed (the runtime is not running) and begins again
    assert operate(env, iid, "STARTED")["operationState"] == "COMPLETED"
    v = view(env, iid)
    assert running(env, iid) and v["observedState"] == "RUNNING" and v["restartCount"] == 2
    crash(env, iid, 1)
    until(lambda: running(env, iid), what="a new loop after the operator's start")


def test_an_operators_stop_is_never_undone(env):
    iid = deployed(env, **FAST)
    assert operate(env, iid, "STOPPED")["operationState"] == "COMPLETED"
    env.cim.crash(iid, 137)             # whatever the backend says afterwards
    env.orch.reconciler.run_once()
    time.sleep(0.3)
    assert not running(env, iid) and "start" not in env.cim.calls


def test_a_stop_while_a_restart_waits_cancels_it(env):
    iid = deployed(env, **{**FAST, "backoffInitialS": 0.5, "backoffMaxS": 1})
    crash(env, iid)
    assert env.orch.supervisor.pending(iid)
    assert operate(env, iid, "STOPPED")["operationState"] == "COMPLETED"
    time.sleep(0.8)
    assert not running(env, iid) and "start" not in env.cim.calls
    assert view(env, iid)["observedState"] == "STOPPED"


def test_on_failure_leaves_exit_0_stopped_and_restarts_exit_1(env):
    iid = deployed(env, **{**FAST, "policy": "OnFailure"})
    crash(env, iid, 0)
    time.sleep(0.3)
    assert not running(env, iid) and "start" not in env.cim.calls
    assert view(env, iid)["restartCount"] == 0
    env.cim.instances[iid]["state"] = ObservedState.RUNNING      # as if started by hand
    env.orch.reconciler.run_once()
    crash(env, iid, 1)
    until(lambda: running(env, iid))
    assert view(env, iid)["restartCount"] == 1


def test_an_operation_in_flight_wins(env, monkeypatch):
    iid = deployed(env, **{**FAST, "backoffInitialS": 0.2, "backoffMaxS": 0.2})
    real_stop = env.cim.stop

    def slow_stop(handle, timeout_s):        # the operation holds the instance a while
        time.sleep(0.8)
        real_stop(handle, timeout_s)
    monkeypatch.setattr(env.cim, "stop", slow_stop)
    crash(env, iid)
    op, _ = env.c.post(f"{INST}/{iid}/operate", {"changeStateTo": "STOPPED",
                                                 "stopType": "FORCEFUL"})
    assert env.c.wait_op(op, timeout=10)["operationState"] == "COMPLETED"
    time.sleep(0.5)                          # the restart's retries see the stop
    assert not running(env, iid) and "start" not in env.cim.calls
    assert view(env, iid)["instantiatedAppState"]["operationalState"] == "STOPPED"


def test_a_long_run_starts_the_count_again(env):
    iid = deployed(env, **{**FAST, "limit": 1, "resetAfterS": 0.3})
    crash(env, iid)
    until(lambda: running(env, iid))
    time.sleep(0.4)                          # ran longer than resetAfterS
    crash(env, iid)
    assert view(env, iid)["observedState"] == "STOPPED"      # restarted, not given up
    until(lambda: running(env, iid))
    crash(env, iid)                          # at once: 1 in a row is the limit
    assert view(env, iid)["observedState"] == "CRASH_LOOP"


def test_a_failing_start_counts_and_ends_in_crash_loop(env):
    from mecorch.kernel.errors import BackendError
    iid = deployed(env, **{**FAST, "limit": 3})
    env.cim.fail["start"] = BackendError("no such image any more")
    crash(env, iid)
    until(lambda: view(env, iid)["observedState"] == "CRASH_LOOP", what="failing starts")
    assert env.cim.calls.count("start") == 3
    assert "restart failed: no such image any more" in view(env, iid)["observedStateDetail"]


def test_liveness_restart_is_counted_under_the_policy(env):
    iid = deployed(env, **FAST)
    line = env.orch.supervisor.restart(iid, "liveness probe failed 3 times")
    assert "restarting in 0.05s (restart 1 of 5; liveness probe failed 3 times)" in line
    until(lambda: running(env, iid) and view(env, iid)["restartCount"] == 1)
    assert env.cim.calls[-2:] == ["stop", "start"]


def test_liveness_with_never_stops_the_app_as_kubernetes_does(env):
    iid = deployed(env, **{**FAST, "policy": "Never"})
    env.orch.supervisor.restart(iid, "liveness probe failed")
    time.sleep(0.2)
    assert not running(env, iid) and "start" not in env.cim.calls
    assert "policy Never" in view(env, iid)["observedStateDetail"]


def test_a_vm_destroyed_counts_as_a_failure(env):
    onboard(env, appTrafficRule=[], appDNSRule=[])
    from support.corelab import VM_APPD
    onboard(env, VM_APPD, appTrafficRule=[], appDNSRule=[])
    inst = create(env, "sample-vm")
    assert instantiate(env, inst["id"], restartPolicy={**FAST, "policy": "OnFailure"}
                       )["operationState"] == "COMPLETED"
    env.vim.crash(inst["id"], None)          # destroyed: no exit code
    env.orch.reconciler.run_once()
    until(lambda: env.vim.instances[inst["id"]]["state"] is ObservedState.RUNNING)
    assert env.orch.store.get("instances", inst["id"])["deploymentType"] == \
        DeploymentType.VM.value


def test_restarts_are_a_metric_per_instance(env):
    import urllib.request
    from prometheus_client.parser import text_string_to_metric_families
    iid = deployed(env, **FAST)
    crash(env, iid)
    until(lambda: running(env, iid) and view(env, iid)["restartCount"] == 1)
    with urllib.request.urlopen(f"{env.c.base}/metrics", timeout=10) as r:
        text = r.read().decode()
    (fam,) = [f for f in text_string_to_metric_families(text)
              if f.name == "mecorch_instance_restarts"]
    assert fam.type == "counter"
    assert [(s.name, s.labels, s.value) for s in fam.samples] == [
        ("mecorch_instance_restarts_total",
         {"instance": iid, "host": "default", "policy": "Always"}, 1.0)]


def test_the_meo_shows_the_hosts_restart_fields_and_tells_a_crash_loop(system):
    from support.meolab import deploy as meo_deploy, onboard as meo_onboard
    s = system
    sub, _ = s.c.post("/app_lcm/v1/subscriptions", {
        "subscriptionType": "AppInstanceStateChange", "appInstanceState": "STOPPED",
        "callbackUri": "http://127.0.0.1:9/cb"})
    pkg = meo_onboard(s)
    iid, op = meo_deploy(s, pkg["appDId"], deploymentType="CONTAINER", restartPolicy=FAST)
    assert op["operationState"] == "COMPLETED", op
    hid = s.c.get(f"{INST}/{iid}")["hostId"]
    host = s.hosts[hid]
    cim = host.inventory.get(hid).compute(DeploymentType.CONTAINER)
    (remote,) = [i["id"] for i in host.lcm.list() if i["instantiationState"] == "INSTANTIATED"]
    def restarted(n: int) -> bool:
        # with a round each time, as the host's periodic reconciliation
        # runs: a death seen while the supervisor finished its last restart
        # is taken up by the next round (the fakes stream no events)
        host.reconciler.run_once()
        return host.lcm.view(host.store.get("instances", remote))["restartCount"] == n
    crash_on(host, cim, remote, 137)
    until(lambda: restarted(1))
    (entry,) = [e for e in s.meo.registry.entries() if e.host_id == hid]
    s.meo.lcm.resync(entry)
    v = s.c.get(f"{INST}/{iid}")
    assert (v["restartCount"], v["lastExitCode"], v["restartPolicy"]["policy"]) == \
        (1, 137, "Always")
    # limit 5: five more deaths in a row give up
    for n in range(2, 7):
        crash_on(host, cim, remote, 1)
        if n < 6:
            until(lambda: restarted(n))
    s.meo.lcm.resync(entry)
    assert s.c.get(f"{INST}/{iid}")["observedState"] == "CRASH_LOOP"
    sent = [d["body"] for d in s.meo.store.list("outbox")
            if d["body"]["subscriptionId"] == sub["id"]]
    assert [(b["notificationType"], b["appInstanceId"], b["observedState"], b["restartCount"],
             b["lastExitCode"]) for b in sent] == [("STOPPED", iid, "CRASH_LOOP", 5, 1)]
    s.meo.lcm.resync(entry)                 # told once
    assert len([d for d in s.meo.store.list("outbox")
                if d["body"]["subscriptionId"] == sub["id"]]) == 1


def test_a_start_through_the_meo_is_the_way_back_before_its_next_sync(system):
    """The issue's trap through the MEO: the app died on its host (policy
    Never), the MEO has not synced since; `operate start` at the MEO asks
    the host's view and is accepted, not "already STARTED"."""
    from support.meolab import deploy as meo_deploy, onboard as meo_onboard
    s = system
    iid, op = meo_deploy(s, meo_onboard(s)["appDId"], deploymentType="CONTAINER")
    assert op["operationState"] == "COMPLETED", op
    hid = s.c.get(f"{INST}/{iid}")["hostId"]
    host = s.hosts[hid]
    (remote,) = [i["id"] for i in host.lcm.list() if i["instantiationState"] == "INSTANTIATED"]
    crash_on(host, host.inventory.get(hid).compute(DeploymentType.CONTAINER), remote, 137)
    assert s.c.get(f"{INST}/{iid}").get("observedState") != "STOPPED"    # not synced yet
    op, _ = s.c.post(f"{INST}/{iid}/operate", {"changeStateTo": "STARTED"})
    assert s.c.wait_op(op, timeout=10)["operationState"] == "COMPLETED"
    assert host.lcm.view(host.store.get("instances", remote))["observedState"] == "RUNNING"
    with pytest.raises(ApiError) as e:          # running: a start is refused again
        s.c.post(f"{INST}/{iid}/operate", {"changeStateTo": "STARTED"})
    assert e.value.status == 409 and "already STARTED" in e.value.body["detail"]

def test_an_event_during_a_hold_is_applied_when_it_ends(env):
    """The watcher keeps what a backend reports while an operation holds
    the instance (an app dying while its instantiate ends) and applies it
    after; what the operation recorded itself is not overwritten."""
    from mecorch.driverapi.model import Observation
    from mecorch.mepm.watch import Watcher
    iid = deployed(env)
    host = env.orch.inventory.get("default")
    watcher = Watcher(env.orch)
    watcher.start()                 # the fakes stream nothing: only the keeper runs
    try:
        with env.orch.lcm.hold(iid):
            watcher._changed(host, DeploymentType.CONTAINER,
                             Observation(iid, ObservedState.STOPPED, {}, "exited, exit code 3", 3))
            time.sleep(0.3)
            assert view(env, iid)["observedState"] == "RUNNING"      # held: not yet
        until(lambda: view(env, iid)["observedState"] == "STOPPED", 2, "applied after the hold")
        assert view(env, iid)["observedStateDetail"] == "exited, exit code 3"
        env.cim.instances[iid]["state"] = ObservedState.RUNNING
        assert operate(env, iid, "STOPPED")["operationState"] == "COMPLETED"
        with env.orch.lcm.hold(iid):        # the stop's own event, late
            watcher._changed(host, DeploymentType.CONTAINER,
                             Observation(iid, ObservedState.STOPPED, {}, "exited, exit code 137",
                                         137))
        time.sleep(0.4)
        assert view(env, iid)["observedStateDetail"] == "stopped by operate"
    finally:
        watcher.stop()


def test_a_backend_that_does_not_answer_is_not_counted(env, monkeypatch):
    from mecorch.kernel.errors import BackendUnavailable
    from mecorch.mepm import supervisor
    monkeypatch.setattr(supervisor, "RETRY_DOWN_S", 0.1)
    iid = deployed(env, **{**FAST, "limit": 2})
    env.cim.fail["start"] = BackendUnavailable("dockerd restarting")
    crash(env, iid)
    until(lambda: env.cim.calls.count("start") >= 4, what="tries while it is down")
    assert view(env, iid)["observedState"] == "STOPPED"     # not given up: the daemon's fault
    del env.cim.fail["start"]
    until(lambda: running(env, iid), what="started once it answers")
    v = view(env, iid)
    assert (v["observedState"], v["restartCount"]) == ("RUNNING", 1)


def test_the_policy_comes_from_orchestration_info_through_the_api(env):
    import yaml
    from support.corelab import POD, TOSCA, VM_APPD
    from support.corelab import problem
    onboard(env, appTrafficRule=[], appDNSRule=[])
    onboard(env, VM_APPD, appTrafficRule=[], appDNSRule=[])
    vm = create(env, "sample-vm")
    template = yaml.safe_load(TOSCA)
    template["topology_template"]["policies"] = [{"restart": {
        "type": "mecorch.policies.Restart", "properties": {"policy": "OnFailure", "limit": 3}}}]
    assert instantiate(env, vm["id"], orchestrationInfo=template)["operationState"] == \
        "COMPLETED"
    assert view(env, vm["id"])["restartPolicy"] == {
        "policy": "OnFailure", "backoffInitialS": 1.0, "backoffMaxS": 60.0, "limit": 3,
        "resetAfterS": 300.0}
    pod = yaml.safe_load(POD)
    pod["spec"]["restartPolicy"] = "Always"
    c = create(env)
    err = problem(env.c.post, f"{INST}/{c['id']}/instantiate",
                  {"orchestrationInfo": pod, "restartPolicy": {"policy": "Never"},
                   "selectedMECHostInfo": [{"hostId": {"id": "default"}}]})
    assert err.status == 400 and "orchestrationInfo.spec.restartPolicy" in err.body["detail"]
    assert instantiate(env, c["id"], orchestrationInfo=pod,
                       restartPolicy={"limit": 2})["operationState"] == "COMPLETED"
    assert (view(env, c["id"])["restartPolicy"]["policy"],
            view(env, c["id"])["restartPolicy"]["limit"]) == ("Always", 2)
