"""Re-placement of an app whose edge host is lost (`lostAfter`, an MEO
extension: mecorch/meo/replace.py), with each host an in-process MEPM on
in-memory drivers whose link the test cuts (the host keeps running its
apps, as an edge host does without its MEO). The loop is driven by the
test (`Replacer.check` with a clock of its own); the same over HTTP on
the real backends is tests/e2e/test_meo_replace.py."""

from __future__ import annotations

import threading
import time

import pytest

from mecorch.kernel.client import ApiError
from mecorch.kernel.states import DeploymentType, LcmOperation
from mecorch.meo.orchestrator import MeoOrchestrator
from mecorch.mepm.local import LocalMepm
from mecorch.meo import replace
from support import corelab
from support.corelab import env  # noqa: F401
from support.fakes import broken
from support.meolab import INST, deploy, onboard, system  # noqa: F401

OPS = "/app_lcm/v1/app_lcm_op_occs"
INSTANTIATE = LcmOperation.INSTANTIATE.value        # ETSI spells it INSTATIATE


def _ops(s, iid: str) -> list[dict]:
    return [o for o in s.c.get(OPS) if o["appInstanceId"] == iid]


def _lose(s, hid: str) -> float:
    """Cut the host's link and beat until the registry has it UNREACHABLE;
    when it was marked so."""
    s.mepms[hid].down.set()
    entry = s.meo.registry.get(hid)
    for _ in range(s.meo.registry.unreachable_after):
        s.meo.registry.beat(entry)
    assert entry.state == "UNREACHABLE"
    return entry.unreachable_since


def _return(s, hid: str) -> None:
    s.mepms[hid].down.clear()
    assert s.meo.registry.beat(s.meo.registry.get(hid))


def _wait_replaced(s, iid: str, n: int) -> dict:
    """The n-th re-placement op of the instance, once ended."""
    deadline = time.monotonic() + 20
    while True:
        ops = [o for o in _ops(s, iid) if o["lcmOperation"] == INSTANTIATE
               and o.get("decisionReason", "").startswith("re-placed")]
        if len(ops) >= n and ops[n - 1]["operationState"] in ("COMPLETED", "FAILED"):
            return ops[n - 1]
        assert time.monotonic() < deadline, _ops(s, iid)
        time.sleep(0.05)


def _running_on(s, hid: str, iid: str) -> bool:
    """Whether the host runs a copy of the MEO's instance: under the MEO's
    id (as instantiated), or under the host's own id (a re-placed copy)."""
    remote = s.meo.store.get("instances", iid) or {}
    ids = {iid, (remote.get("_hostInstance") or {}).get("id")}
    return any(i["id"] in ids and i["instantiationState"] == "INSTANTIATED"
               for i in s.hosts[hid].lcm.list())


def test_lost_after_is_validated_at_the_meo_and_forwarded_to_the_host(system):  # noqa: F811
    s = system
    pkg = onboard(s)
    inst = s.c.post(INST, {"appDId": pkg["appDId"]})[0]
    url = f"{INST}/{inst['id']}/instantiate"
    for bad in (0, -5, 1.5, "30", True, replace.MAX_LOST_AFTER_S + 1):
        with pytest.raises(ApiError) as e:
            s.c.post(url, {"deploymentType": "CONTAINER", "lostAfter": bad})
        assert e.value.status == 400 and "lostAfter" in e.value.body["detail"], bad
    with pytest.raises(ApiError) as e:          # a typo is named, with the field meant
        s.c.post(url, {"deploymentType": "CONTAINER", "lostAftr": 30})
    assert "'lostAftr'" in e.value.body["detail"] and "'lostAfter'" in e.value.body["detail"]
    with pytest.raises(ApiError) as e:          # one selected host: nowhere to go
        s.c.post(url, {"deploymentType": "CONTAINER", "lostAfter": 30,
                       "selectedMECHostInfo": [{"hostId": {"id": "edge2"}}]})
    assert e.value.status == 400 and "lostAfter" in e.value.body["detail"]
    assert not _ops(s, inst["id"])
    op = s.c.wait_op(s.c.post(url, {"deploymentType": "CONTAINER", "lostAfter": 30})[0])
    assert op["operationState"] == "COMPLETED", op
    view = s.c.get(f"{INST}/{inst['id']}")
    assert view["lostAfter"] == 30 and "replacedFrom" not in view
    # the host is sent it (the body the MEO sends): it fences the app after
    # that long without the MEO (mecorch/mepm/fence.py)
    [sent] = s.meo.store.list("op_occs", appInstanceId=inst["id"])
    assert sent["_plan"]["body"]["deploymentType"] == "CONTAINER"
    assert sent["_plan"]["body"]["lostAfter"] == 30
    host = s.hosts[view["hostId"]]
    assert host.lcm.get(inst["id"])["_lostAfter"] == 30
    assert host.lcm.view(host.lcm.get(inst["id"]))["lostAfter"] == 30


def test_replaced_once_after_lost_after_and_the_stale_copy_removed_on_return(system):  # noqa: F811
    s = system
    pkg = onboard(s)
    iid, op = deploy(s, pkg["appDId"], deploymentType="CONTAINER", lostAfter=30,
                     selectedMECHostInfo=[{"hostId": {"id": "edge2"}},
                                          {"hostId": {"id": "edge3"}}])
    lost = s.c.get(f"{INST}/{iid}")["hostId"]
    other = ({"edge2", "edge3"} - {lost}).pop()
    since = _lose(s, lost)
    # the host list shows the time lostAfter is compared with
    hosts = {h["hostId"]: h for h in s.c.get("/mecorch/v1/hosts")}
    assert hosts[lost]["unreachableForS"] >= 0 and "unreachableForS" not in hosts[other]
    # not before lostAfter
    assert s.meo.replacer.check(now=since + 29) == []
    assert [o["lcmOperation"] for o in _ops(s, iid)] == [INSTANTIATE]
    done = s.meo.replacer.check(now=since + 31)
    assert done == [f"re-placing instance {iid} from {lost} on {other}"]
    moved = _wait_replaced(s, iid, 1)
    assert moved["operationState"] == "COMPLETED", moved
    assert moved["decisionReason"].startswith(
        f"re-placed: edge host {lost} unreachable for 31 s (lostAfter 30 s); placed on {other}")
    # exactly once: later rounds leave it where it is
    for dt in (32, 60, 600):
        assert s.meo.replacer.check(now=since + dt) == []
    assert len([o for o in _ops(s, iid) if o["lcmOperation"] == INSTANTIATE]) == 2
    view = s.c.get(f"{INST}/{iid}")
    assert view["hostId"] == other and view["instantiationState"] == "INSTANTIATED"
    assert "hostState" not in view                  # its host answers: not shown UNKNOWN
    assert view["decisionReason"] == moved["decisionReason"]
    [move] = view["replacedFrom"]
    assert move["hostId"] == lost and move["opId"] == moved["id"]
    assert move["staleCopy"] == "PENDING_REMOVAL"
    # the new host runs it under the MEO's id; the lost host still runs its
    # copy (edge autonomy), which the MEO owes a removal
    assert _running_on(s, other, iid) and _running_on(s, lost, iid)
    _return(s, lost)
    # removed as the host came back, before anything else was read from it
    assert not any(i["id"] == iid for i in s.hosts[lost].lcm.list())
    assert _running_on(s, other, iid)
    removal = _ops(s, iid)[-1]
    assert removal["lcmOperation"] == "TERMINATE" and removal["operationState"] == "COMPLETED"
    assert removal["decisionReason"].startswith(f"stale copy on edge host {lost} removed")
    view = s.c.get(f"{INST}/{iid}")
    assert view["hostId"] == other and view["replacedFrom"][0]["staleCopy"] == "REMOVED"
    assert not s.meo.store.list("host_tasks")
    assert s.meo.replacer.check(now=time.time() + 600) == []
    # the instance is the OSS's as before: terminated on its new host
    op = s.c.wait_op(s.c.post(f"{INST}/{iid}/terminate",
                              {"terminationType": "FORCEFUL"})[0])
    assert op["operationState"] == "COMPLETED", op
    assert not _running_on(s, other, iid)
    view = s.c.get(f"{INST}/{iid}")
    assert "lostAfter" not in view and "replacedFrom" not in view


def test_no_host_fits_is_recorded_once_and_retried(system):  # noqa: F811
    s = system
    pkg = onboard(s)
    iid, _ = deploy(s, pkg["appDId"], deploymentType="CONTAINER", lostAfter=5,
                    selectedMECHostInfo=[{"hostId": {"id": "edge2"}},
                                         {"hostId": {"id": "edge3"}}])
    lost = s.c.get(f"{INST}/{iid}")["hostId"]
    other = ({"edge2", "edge3"} - {lost}).pop()
    _lose(s, other)
    since = _lose(s, lost)
    t = since + 10
    [line] = s.meo.replacer.check(now=t)
    assert line.startswith(f"instance {iid} not re-placed")
    failed = _ops(s, iid)[-1]
    assert failed["operationState"] == "FAILED" and failed["lcmOperation"] == INSTANTIATE
    assert f"{other}: UNREACHABLE" in failed["error"]["detail"]
    assert "edge1" not in failed["error"]["detail"]     # not selected: never a candidate
    # the same reason again: tried, not recorded again
    t += replace.RETRY_S + 1
    assert s.meo.replacer.check(now=t) == []
    assert len(_ops(s, iid)) == 2
    # not before the retry time even with a host back
    _return(s, other)
    assert s.meo.replacer.check(now=time.time()) == []
    t = time.time() + replace.RETRY_S + 1
    assert s.meo.replacer.check(now=t) == [f"re-placing instance {iid} from {lost} on {other}"]
    assert _wait_replaced(s, iid, 1)["operationState"] == "COMPLETED"
    assert s.c.get(f"{INST}/{iid}")["hostId"] == other


def test_not_opted_in_stays_and_an_op_in_flight_is_not_overtaken(system):  # noqa: F811
    s = system
    pkg = onboard(s)
    opted, _ = deploy(s, pkg["appDId"], deploymentType="CONTAINER", lostAfter=5,
                      selectedMECHostInfo=[{"hostId": {"id": "edge2"}},
                                           {"hostId": {"id": "edge3"}}])
    lost = s.c.get(f"{INST}/{opted}")["hostId"]
    plain, _ = deploy(s, pkg["appDId"], deploymentType="CONTAINER",
                      selectedMECHostInfo=[{"hostId": {"id": lost}}])
    since = _lose(s, lost)
    # not opted in: never moved
    assert s.meo.replacer.check(now=since + 4) == []
    assert s.c.get(f"{INST}/{plain}")["hostId"] == lost
    # an operation of its own in flight (the instance held, as by a worker
    # following a host op): the round leaves it to that op
    s.meo.lcm._busy.add(opted)
    try:
        assert s.meo.replacer.check(now=since + 3600) == []
    finally:
        s.meo.lcm._free(opted)
    for iid in (plain, opted):
        assert s.c.get(f"{INST}/{iid}")["hostId"] == lost
    assert not s.meo.store.list("host_tasks")
    # free again: moved on the next round
    assert s.meo.replacer.check(now=since + 3600) == [
        f"re-placing instance {opted} from {lost} on {({'edge2', 'edge3'} - {lost}).pop()}"]
    assert _wait_replaced(s, opted, 1)["operationState"] == "COMPLETED"


def test_the_stale_copy_of_a_deleted_instance_is_still_removed(system):  # noqa: F811
    s = system
    pkg = onboard(s)
    iid, _ = deploy(s, pkg["appDId"], deploymentType="CONTAINER", lostAfter=5,
                    selectedMECHostInfo=[{"hostId": {"id": "edge2"}},
                                         {"hostId": {"id": "edge3"}}])
    lost = s.c.get(f"{INST}/{iid}")["hostId"]
    since = _lose(s, lost)
    s.meo.replacer.check(now=since + 6)
    assert _wait_replaced(s, iid, 1)["operationState"] == "COMPLETED"
    # the OSS is done with it while the lost host is still away
    op = s.c.wait_op(s.c.post(f"{INST}/{iid}/terminate", {"terminationType": "FORCEFUL"})[0])
    assert op["operationState"] == "COMPLETED", op
    s.c.call("DELETE", f"{INST}/{iid}")
    assert _running_on(s, lost, iid)
    _return(s, lost)
    assert not any(i["id"] == iid for i in s.hosts[lost].lcm.list())
    assert not s.meo.store.list("host_tasks")


def test_a_re_placement_the_new_host_fails_leaves_it_where_it_was(system):  # noqa: F811
    s = system
    pkg = onboard(s)
    iid, _ = deploy(s, pkg["appDId"], deploymentType="CONTAINER", lostAfter=5,
                    selectedMECHostInfo=[{"hostId": {"id": "edge2"}},
                                         {"hostId": {"id": "edge3"}}])
    lost = s.c.get(f"{INST}/{iid}")["hostId"]
    other = ({"edge2", "edge3"} - {lost}).pop()
    cim = s.hosts[other].inventory.get(other).driver("cim")
    cim.fail["deploy"] = broken("the new host's deploy broke")
    since = _lose(s, lost)
    s.meo.replacer.check(now=since + 6)
    failed = _wait_replaced(s, iid, 1)
    assert failed["operationState"] == "FAILED"
    assert "the new host's deploy broke" in failed["error"]["detail"]
    # still the lost host's, as before; nothing left on the other
    view = s.c.get(f"{INST}/{iid}")
    assert view["hostId"] == lost and "replacedFrom" not in view
    assert not s.hosts[other].lcm.list()
    assert not s.meo.store.list("host_tasks")
    # tried again after RETRY_S, and this time it lands
    del cim.fail["deploy"]
    assert s.meo.replacer.check(now=time.time() + 1) == []
    s.meo.replacer.check(now=time.time() + replace.RETRY_S + 1)
    assert _wait_replaced(s, iid, 2)["operationState"] == "COMPLETED"
    assert s.c.get(f"{INST}/{iid}")["hostId"] == other


def test_a_single_node_refuses_lost_after_by_name(env):  # noqa: F811
    """No other host to go to: a node (or an MEPM) does not accept and ignore
    it; the MEO alone knows it."""
    corelab.onboard(env)
    iid = corelab.create(env)["id"]
    err = corelab.problem(env.c.post, f"{INST}/{iid}/instantiate",
                          {"deploymentType": "CONTAINER", "lostAfter": 30})
    assert err.status == 400 and "no field 'lostAfter'" in err.body["detail"]
    assert not env.c.get(OPS)


def test_a_failed_instantiate_keeps_no_opt_in(system):  # noqa: F811
    s = system
    pkg = onboard(s)
    for hid in ("edge1", "edge2", "edge3"):
        s.hosts[hid].inventory.get(hid).driver("cim").fail["deploy"] = broken("no deploy")
    iid, op = deploy(s, pkg["appDId"], deploymentType="CONTAINER", lostAfter=30)
    assert op["operationState"] == "FAILED"
    view = s.c.get(f"{INST}/{iid}")
    assert view["instantiationState"] == "NOT_INSTANTIATED" and "lostAfter" not in view


def test_an_meo_restart_resumes_a_re_placement_and_keeps_what_the_lost_host_owes(system):  # noqa: F811
    s = system
    pkg = onboard(s)
    iid, _ = deploy(s, pkg["appDId"], deploymentType="CONTAINER", lostAfter=5,
                    selectedMECHostInfo=[{"hostId": {"id": "edge2"}},
                                         {"hostId": {"id": "edge3"}}])
    lost = s.c.get(f"{INST}/{iid}")["hostId"]
    other = ({"edge2", "edge3"} - {lost}).pop()
    gate = threading.Event()
    s.hosts[other].inventory.get(other).compute(DeploymentType.CONTAINER).deploy_gate = gate
    since = _lose(s, lost)
    s.meo.replacer.check(now=since + 6)
    time.sleep(0.3)         # the new host's deploy is held at the gate
    # a second MEO on the same store (as after a crash), the lost host not
    # back yet: it follows the re-placement to its end
    # the first one's lease goes with it (its workers, still running in
    # this process, are fenced from then on)
    s.meo.lease.stop()
    meo2 = MeoOrchestrator(dict(s.meo.cfg))
    try:
        meo2.registry.attach(LocalMepm(s.hosts[other], other))
        gate.set()
        meo2.replacer.recover()
        meo2.lcm.recover()
        op = _wait_replaced(s, iid, 1)
        assert op["operationState"] == "COMPLETED", op
        time.sleep(0.3)     # both MEOs' workers followed it: one move is recorded
        inst = meo2.lcm.get(iid)
        assert inst["hostId"] == other and len(inst["replacedFrom"]) == 1
        assert _running_on(s, lost, iid)
        # the lost host comes back to the second MEO: it owes the removal
        meo2.registry.attach(LocalMepm(s.hosts[lost], lost))
        assert not any(i["id"] == iid for i in s.hosts[lost].lcm.list())
        assert meo2.lcm.get(iid)["replacedFrom"][0]["staleCopy"] == "REMOVED"
    finally:
        meo2.close()
    assert _running_on(s, other, iid)


def test_a_stale_copy_the_returning_host_fails_to_remove_is_tried_again(system):  # noqa: F811
    s = system
    pkg = onboard(s)
    iid, _ = deploy(s, pkg["appDId"], deploymentType="CONTAINER", lostAfter=5,
                    selectedMECHostInfo=[{"hostId": {"id": "edge2"}},
                                         {"hostId": {"id": "edge3"}}])
    lost = s.c.get(f"{INST}/{iid}")["hostId"]
    since = _lose(s, lost)
    s.meo.replacer.check(now=since + 6)
    assert _wait_replaced(s, iid, 1)["operationState"] == "COMPLETED"
    cim = s.hosts[lost].inventory.get(lost).driver("cim")
    cim.fail["destroy"] = broken("destroy refused")
    _return(s, lost)
    failed = _ops(s, iid)[-1]
    assert failed["lcmOperation"] == "TERMINATE" and failed["operationState"] == "FAILED"
    assert "stale copy not removed yet" in failed["error"]["detail"]
    assert failed["decisionReason"].startswith(f"stale copy on edge host {lost} not removed yet")
    assert s.c.get(f"{INST}/{iid}")["replacedFrom"][0]["staleCopy"] == "PENDING_REMOVAL"
    assert len(s.meo.store.list("host_tasks")) == 1
    # the next rounds while the host answers: after RETRY_S, and done
    del cim.fail["destroy"]
    assert s.meo.replacer.check(now=time.time() + 1) == []
    assert s.meo.replacer.check(now=time.time() + replace.RETRY_S + 1) == [
        f"removed the stale copy of instance {iid} from host {lost}"]
    assert not any(i["id"] == iid for i in s.hosts[lost].lcm.list())
    assert _ops(s, iid)[-1]["operationState"] == "COMPLETED"
    assert s.c.get(f"{INST}/{iid}")["replacedFrom"][0]["staleCopy"] == "REMOVED"
