"""An edge host fences an app its MEO may re-place (mecorch/mepm/fence.py):
after `lostAfter` without a word from its MEO the app's rules are withdrawn
and its runtime stopped; nothing on the host undoes it; only the MEO lifts
it, for an instance that is still its there (its resync), never for a copy
it re-placed elsewhere (removed instead). In-process MEPMs on in-memory
drivers whose link the test cuts (tests/support/meolab.py); the fencing
loop is driven by the test with a time of its own (`Fence.check(now)`).
The same on the real backends: tests/e2e/test_meo_replace.py."""

from __future__ import annotations

import threading
import time
import urllib.request

import pytest

from mecorch.api import make_server
from mecorch.driverapi.contracts import Revivable
from mecorch.kernel.client import ApiError, Client
from mecorch.kernel.states import DeploymentType
from mecorch.mepm import fence as fence_mod
from mecorch.mepm.fence import Fence
from mecorch.mepm.health import Prober
from mecorch.mepm.remote import RemoteMepm
from support import corelab
from support.corelab import env  # noqa: F401
from support.fakes import FakeCompute, broken
from support.meolab import INST, deploy, onboard, system  # noqa: F401

OPS = "/app_lcm/v1/app_lcm_op_occs"
TWO = [{"hostId": {"id": "edge2"}}, {"hostId": {"id": "edge3"}}]


class RevivingCompute(FakeCompute):
    """A fake whose stopped runtimes died with their host: reconciliation
    revives them (as Docker's driver does after a daemon restart)."""

    def revive(self, handle, check_only=False):
        if not check_only:
            self.start(handle)
        return True


Revivable.register(RevivingCompute)


def _opted(s, lost_after=5):
    """An opted-in instance through the MEO: (its id, its host's orchestrator)."""
    pkg = onboard(s)
    iid, op = deploy(s, pkg["appDId"], deploymentType="CONTAINER", lostAfter=lost_after,
                     selectedMECHostInfo=TWO)
    assert op["operationState"] == "COMPLETED", op
    return iid, s.hosts[s.c.get(f"{INST}/{iid}")["hostId"]]


def _state(orch, iid):
    host = orch.inventory.get(orch.lcm.get(iid)["hostId"])
    cim = host.driver("cim")
    return cim.instances[iid]["state"].value, iid in host.driver("mep").applied


def test_fenced_after_lost_after_without_the_meo_and_nothing_on_the_host_undoes_it(system):  # noqa: F811
    s = system
    iid, orch = _opted(s)
    f = orch.fence
    last = f._last
    assert _state(orch, iid) == ("RUNNING", True)
    # not before lostAfter
    assert f.check(now=last + 4.9) == []
    assert _state(orch, iid) == ("RUNNING", True)
    done = f.check(now=last + 5.2)
    assert done == [f"instance {iid} fenced: no word from the MEO for 5 s (lostAfter 5 s)"]
    # serves nothing: its rules are off the MEP, its runtime stopped
    assert _state(orch, iid) == ("STOPPED", False)
    inst = orch.lcm.get(iid)
    assert orch.store.get("rules", iid)["outOfService"] == ["down", "fenced"]
    assert inst["_fenced"]["stopped"] is True
    view = orch.lcm.view(inst)
    assert view["fenced"]["reason"] == "fenced: no word from the MEO for 5 s (lostAfter 5 s)"
    assert view["observedState"] == "STOPPED"
    assert view["observedStateDetail"] == view["fenced"]["reason"]
    assert view["instantiatedAppState"]["operationalState"] == "STARTED"    # the MEO's intent
    # once: later rounds leave it as it is
    assert f.check(now=last + 60) == []
    # reconciliation neither revives it nor puts its rules back, even with a
    # driver that revives what stopped with its host
    host = orch.inventory.get(inst["hostId"])
    host.attach("cim", RevivingCompute(DeploymentType.CONTAINER))
    host.driver("cim").instances[iid] = {"state": fence_mod.ObservedState.STOPPED}
    orch.reconciler.run_once()
    assert host.driver("cim").instances[iid]["state"].value == "STOPPED"
    assert iid not in host.driver("mep").applied
    # the reconciler's record of the stopped runtime keeps the fence's reason
    orch.reconciler._record(iid, fence_mod.ObservedState.STOPPED, "exited, exit code 137")
    assert orch.lcm.view(orch.lcm.get(iid))["observedStateDetail"].startswith("fenced: ")


def test_a_word_from_the_meo_holds_the_fence_off_and_a_busy_instance_waits(system):  # noqa: F811
    s = system
    iid, orch = _opted(s)
    f = orch.fence
    # the heartbeat (LocalMepm.info, as the HTTP request) is the MEO's word
    before = f._last
    time.sleep(0.01)
    s.meo.registry.beat(s.meo.registry.get(orch.lcm.get(iid)["hostId"]))
    assert f._last > before
    assert f.check(now=f._last + 4.9) == []
    # an instance an LCM operation (or reconciliation) holds: the next round
    with orch.lcm.hold(iid):
        assert f.check(now=f._last + 6) == []
    assert "_fenced" not in orch.lcm.get(iid)
    assert len(f.check(now=f._last + 6)) == 1
    assert "_fenced" in orch.lcm.get(iid)


def test_a_runtime_that_would_not_stop_is_withdrawn_and_stopped_at_a_later_round(system):  # noqa: F811
    s = system
    iid, orch = _opted(s)
    cim = orch.inventory.get(orch.lcm.get(iid)["hostId"]).driver("cim")
    cim.fail["stop"] = broken("stop refused")
    [line] = orch.fence.check(now=orch.fence._last + 6)
    assert "fenced (rules withdrawn; its runtime not stopped yet: stop refused)" in line
    assert _state(orch, iid) == ("RUNNING", False)
    del cim.fail["stop"]
    assert orch.fence.check(now=orch.fence._last + 7) == [
        f"fenced instance {iid}: its runtime stopped"]
    assert _state(orch, iid) == ("STOPPED", False)


def test_the_meo_unfences_an_instance_still_its_at_its_resync(system):  # noqa: F811
    """A partition: the MEO still holds the app on the host (not re-placed):
    its resync lifts the fence; the first word alone does not."""
    s = system
    iid, orch = _opted(s)
    hid = orch.lcm.get(iid)["hostId"]
    orch.fence.check(now=orch.fence._last + 6)
    assert _state(orch, iid) == ("STOPPED", False)
    # a heartbeat is a word, not an unfence
    s.meo.registry.beat(s.meo.registry.get(hid))
    assert orch.fence.check() == [] and _state(orch, iid) == ("STOPPED", False)
    # the MEO's resync (every meo.sync_s, and on a host's return) lifts it
    done = s.meo.lcm.resync(s.meo.registry.get(hid))
    assert f"instance {iid} unfenced on host {hid}" in done
    assert _state(orch, iid) == ("RUNNING", True)
    inst = orch.lcm.get(iid)
    assert "_fenced" not in inst and not orch.store.get("rules", iid).get("outOfService")
    assert orch.lcm.view(inst)["observedState"] == "RUNNING"
    assert "fenced" not in s.c.get(f"{INST}/{iid}")
    # and the next silence fences it again
    assert len(orch.fence.check(now=orch.fence._last + 6)) == 1


def test_a_re_placed_copy_is_never_unfenced_only_removed(system):  # noqa: F811
    s = system
    iid, lost_orch = _opted(s)
    lost = lost_orch.lcm.get(iid)["hostId"]
    mep = lost_orch.inventory.get(lost).driver("mep")
    pushes = []
    real_apply = mep.apply_rules
    mep.apply_rules = lambda i, *a: (pushes.append(i), real_apply(i, *a))

    s.mepms[lost].down.set()                    # the link is cut: no word, no heartbeat
    entry = s.meo.registry.get(lost)
    for _ in range(s.meo.registry.unreachable_after):
        s.meo.registry.beat(entry)
    # the host fences first (lostAfter after its last word) ...
    assert len(lost_orch.fence.check(now=lost_orch.fence._last + 5.5)) == 1
    # ... the MEO re-places later (lostAfter after the host was UNREACHABLE)
    assert s.meo.replacer.check(now=entry.unreachable_since + 6)
    deadline = time.monotonic() + 20
    while s.c.get(f"{INST}/{iid}")["hostId"] == lost:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    # the host returns: its copy is removed, never served again meanwhile
    s.mepms[lost].down.clear()
    assert s.meo.registry.beat(entry)
    assert not any(i["id"] == iid for i in lost_orch.lcm.list())
    assert pushes == [] and iid not in mep.applied
    assert s.c.get(f"{INST}/{iid}")["replacedFrom"][0]["staleCopy"] == "REMOVED"


def test_a_restarted_mepm_knows_the_meo_s_last_word(system):  # noqa: F811
    s = system
    iid, orch = _opted(s)
    f = orch.fence
    f._written = -1e18          # the next word is written at once (else: once a second)
    f.heard()
    again = Fence(orch)         # as a restarted MEPM reads it
    assert abs(again._last - f._last) < 0.01
    # written at most once a second, not at every request
    written = f._written
    f.heard()
    assert f._written == written
    # a state dir without it (a new MEPM): counted from its start
    (orch.fence._path).unlink()
    fresh = Fence(orch)
    assert fresh.silence_s() < 1
    # the file holds wall-clock time: a later life counts the time it was down
    (orch.fence._path).write_text(f"{time.time() - 40:.3f}\n")
    assert 39 < Fence(orch).silence_s() < 41


def test_a_restarted_mepm_fences_before_it_reconciles_anything(system, monkeypatch):  # noqa: F811
    s = system
    iid, orch = _opted(s)
    order = []
    monkeypatch.setattr(orch.fence, "check",
                        lambda at_start=False: order.append(f"fence {at_start}") or [])
    monkeypatch.setattr(orch.reconciler, "run_once", lambda: order.append("reconcile") or [])
    orch.recover()
    assert order == ["fence True", "reconcile"]


def test_a_fenced_instance_is_not_probed_nor_restored_by_its_health_checks(system):  # noqa: F811
    s = system
    iid, orch = _opted(s)
    inst = orch.lcm.get(iid)
    inst["_probes"] = {"readiness": {"action": "tcp", "port": 80}}
    orch.store.put("instances", iid, inst)
    prober = Prober(orch, on_dead=lambda *a: None, runner=lambda *a: (True, "ok"))
    try:
        orch.fence.check(now=orch.fence._last + 6)
        prober.refresh()
        assert prober.snapshot() == {}
    finally:
        prober.stop()


def test_unfence_only_from_the_meo_and_lost_after_only_through_it(tmp_path, system):  # noqa: F811
    """The Mm3 extension over HTTP: an MEPM's listener (no tokens: every
    loopback caller is its operator, the MEO among them) records the word
    and takes the unfence; a single node's listener refuses it."""
    s = system
    iid, orch = _opted(s)
    hid = orch.lcm.get(iid)["hostId"]
    server = make_server(orch, "127.0.0.1:0", "mepm")
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        remote = RemoteMepm(hid, url)
        orch.fence.check(now=orch.fence._last + 6)
        before = orch.fence._last
        time.sleep(0.01)
        remote.info()
        assert orch.fence._last > before                # a request of the MEO is a word
        assert _state(orch, iid) == ("STOPPED", False)  # and no unfence
        assert f'mecorch_instance_fenced{{host="{hid}",instance="{iid}"}} 1.0' in \
            urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
        assert remote.unfence([iid, "nope"]) == {"unfenced": [iid], "notFenced": ["nope"],
                                                 "busy": []}
        assert _state(orch, iid) == ("RUNNING", True)
        c = Client(url, token="")
        for bad in ({"appInstanceIds": "x"}, {"ids": []}, {"appInstanceIds": ["../x"]}):
            with pytest.raises(ApiError) as e:
                c.post(f"/mecorch/v1/hosts/{hid}/unfence", bad)
            assert e.value.status == 400, bad
    finally:
        server.shutdown()
        server.server_close()
    # a single node's listener: no MEO calls it
    node = make_server(orch, "127.0.0.1:0", "all")
    threading.Thread(target=node.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    try:
        c = Client(f"http://127.0.0.1:{node.server_address[1]}", token="")
        with pytest.raises(ApiError) as e:
            c.post(f"/mecorch/v1/hosts/{hid}/unfence", {"appInstanceIds": [iid]})
        assert e.value.status == 403 and "MEO" in e.value.body["detail"]
    finally:
        node.shutdown()
        node.server_close()


def test_an_meo_refuses_a_lost_after_shorter_than_two_heartbeats(system):  # noqa: F811
    s = system
    pkg = onboard(s)
    inst = s.c.post(INST, {"appDId": pkg["appDId"]})[0]
    s.meo.registry.heartbeat_s = 2.0
    with pytest.raises(ApiError) as e:
        s.c.post(f"{INST}/{inst['id']}/instantiate", {"deploymentType": "CONTAINER",
                                                      "lostAfter": 3})
    assert e.value.status == 400 and "lostAfter" in e.value.body["detail"] \
        and "heartbeat" in e.value.body["detail"]


def test_a_node_without_an_meo_fences_nothing(env):  # noqa: F811
    """A single node's instances never carry lostAfter: its fence check has
    nothing to do, however long no MEO spoke."""
    corelab.onboard(env)
    iid = corelab.create(env)["id"]
    assert corelab.instantiate(env, iid)["operationState"] == "COMPLETED"
    orch = env.orch
    assert orch.fence.check(now=time.time() + 10 ** 7) == []
    assert "_fenced" not in orch.lcm.get(iid)


def test_a_driver_asked_for_unopened_is_opened_at_its_next_use(tmp_path, monkeypatch):
    """The fence at an MEPM's start removes rules from an MEP it does not
    open (EdgeHost.driver(opened=False)); the next use opens it, once."""
    from mecorch.kernel import config
    from mecorch.mepm import inventory
    from support.fakes import FakeMep

    opened = []

    class CountingMep(FakeMep):
        def open(self):
            opened.append(self)

    monkeypatch.setattr(inventory, "load_driver", lambda role, section: CountingMep())
    cfg = config.load()
    cfg["state_dir"] = str(tmp_path)
    host = inventory.Inventory(cfg).get(cfg["hosts"][0]["id"])
    first = host.mep(opened=False)
    first.remove_rules("x1")
    assert opened == [] and host.mep(opened=False) is first
    assert host.mep() is first and opened == [first]
    assert host.mep() is first and host.mep(opened=False) is first and opened == [first]


def test_the_restart_policy_does_not_restart_a_fenced_app(system):  # noqa: F811
    """The fence's stop is seen as a death (Docker's event, a reconcile
    round): the supervisor leaves it, and its liveness restart too."""
    from mecorch.driverapi.model import Observation
    s = system
    iid, orch = _opted(s)
    orch.fence.check(now=orch.fence._last + 6)
    inst = orch.lcm.get(iid)
    host = orch.inventory.get(inst["hostId"])
    died = Observation(iid, fence_mod.ObservedState.STOPPED, inst["_handle"], "exited",
                       exit_code=137)
    assert orch.supervisor.died(host, DeploymentType.CONTAINER, died) is None
    assert orch.supervisor.restart(iid, "liveness check failed 3 times") is None
    assert not orch.supervisor.pending(iid)
    assert _state(orch, iid) == ("STOPPED", False)


def test_an_app_that_does_not_start_stays_fenced_and_the_resync_goes_on(system):  # noqa: F811
    s = system
    iid, orch = _opted(s)
    hid = orch.lcm.get(iid)["hostId"]
    orch.fence.check(now=orch.fence._last + 6)
    cim = orch.inventory.get(hid).driver("cim")
    cim.fail["start"] = broken("start refused")
    assert orch.fence.unfence([iid]) == {"unfenced": [], "notFenced": [], "busy": [iid]}
    done = s.meo.lcm.resync(s.meo.registry.get(hid))
    assert not any("unfenced" in line for line in done)
    assert "_fenced" in orch.lcm.get(iid) and _state(orch, iid) == ("STOPPED", False)
    assert s.meo.registry.get(hid).state == "REACHABLE"
    del cim.fail["start"]
    assert f"instance {iid} unfenced on host {hid}" in s.meo.lcm.resync(s.meo.registry.get(hid))
    assert _state(orch, iid) == ("RUNNING", True)


def test_an_unfenced_app_with_a_readiness_check_serves_once_it_passes(system):  # noqa: F811
    s = system
    iid, orch = _opted(s)
    inst = orch.lcm.get(iid)
    inst["_probes"] = {"readiness": {"action": "tcp", "port": 80}}
    inst["_health"] = {"ready": True, "live": None, "at": inst["instantiatedAppState"]}
    orch.store.put("instances", iid, inst)
    orch.fence.check(now=orch.fence._last + 6)
    assert orch.fence.unfence([iid])["unfenced"] == [iid]
    # running, but out of service until its readiness check passes again
    assert _state(orch, iid) == ("RUNNING", False)
    assert orch.lcm.get(iid)["_health"]["ready"] is False
    ready = []
    prober = Prober(orch, on_dead=lambda *a: None,
                    runner=lambda *a: (bool(ready), "connect: open" if ready else "refused"))
    try:
        prober.run_due()
        assert _state(orch, iid) == ("RUNNING", False)
        ready.append(True)
        prober.run_due(time.monotonic() + 60)
        assert _state(orch, iid) == ("RUNNING", True)
    finally:
        prober.stop()
