"""Live relocation (mecorch/meo/relocate.py with `live`): the MEO moves a
running VM between two hosts whose VIMs take live migration, each host an
in-process MEPM (LocalMepm: the host engine's own live verbs,
mecorch/mepm/live.py) over `fakes.LiveCompute`, whose two "libvirtds"
share a dict. These prove the MEO's choice of live or cold, its steps and
its rollback, not a backend: tests/backends/test_libvirt_live.py moves a
real VM between two real libvirtds."""

from __future__ import annotations

import pytest

from mecorch.kernel.client import ApiError
from mecorch.kernel.errors import BackendError
from support import corelab
from support.meolab import INST, deploy, onboard
from support.movelab import VOLUME, movable


def _vm(s) -> tuple[str, dict]:
    """A VM app STARTED on the first host, with data in its volume."""
    pkg = onboard(s, corelab.VM_APPD, virtualStorageDescriptor=VOLUME)
    iid, op = deploy(s, pkg["appDId"], deploymentType="VM")
    assert op["operationState"] == "COMPLETED", op
    src = s.meo.store.get("instances", iid)["_hostInstance"]
    s.cims[src["hostId"]].data[src["id"]] = {"www": b"a disk's file"}
    return iid, src


def _relocate(s, iid: str, **body) -> dict:
    op, _ = s.c.post(f"{INST}/{iid}/relocate", body)
    return s.c.wait_op(op, timeout=20)


def _conflict(s, iid: str, **body) -> str:
    with pytest.raises(ApiError) as e:
        s.c.post(f"{INST}/{iid}/relocate", body)
    assert e.value.status == 409, e.value
    return e.value.detail


def _serving_on(s, iid: str, src: dict) -> None:
    """As before the move: STARTED on its host, its guest running there,
    nothing of it on the other."""
    view = s.c.get(f"{INST}/{iid}")
    assert view["hostId"] == src["hostId"] and "relocatedFrom" not in view
    host = s.hosts[src["hostId"]].lcm
    assert host.view(host.get(src["id"]))["instantiatedAppState"]["operationalState"] \
        == "STARTED"
    assert s.cims[src["hostId"]].instances[src["id"]]["state"].value == "RUNNING"
    for other, orch in s.hosts.items():
        if other != src["hostId"]:
            assert orch.lcm.list() == [] and s.cims[other].instances == {}, other
            assert s.cims[other].prepared == {}, other
    assert all(not arrived for arrived in s.cims[src["hostId"]].wire.values())


def test_a_running_vm_moves_live_keeping_its_address_and_data(tmp_path):
    with movable(tmp_path, ("live-a", "live-b")) as s:
        # the host list says where a VM may move live (and on what range)
        listed = {h["hostId"]: h.get("live") for h in s.c.get("/mecorch/v1/hosts")}
        assert listed == {h: {"uri": f"fake+live://{h}/system", "networkCidr": "10.123.0.0/24"}
                          for h in ("live-a", "live-b")}, listed
        iid, src = _vm(s)
        ip = s.cims["live-a"].instances[src["id"]]["ip"]
        op = _relocate(s, iid)
        assert op["operationState"] == "COMPLETED", op
        assert op["decisionReason"].startswith("relocated live from edge host live-a"), op
        view = s.c.get(f"{INST}/{iid}")
        assert view["hostId"] == "live-b" and view["id"] == iid
        move = view["relocatedFrom"][-1]
        assert move["moveType"] == "LIVE" and move["sourceCopy"] == "REMOVED"
        assert move["outageS"] >= 0
        new = s.meo.store.get("instances", iid)["_hostInstance"]
        b = s.cims["live-b"]
        # adopted, never deployed anew: the guest's address and data arrived
        assert len(b.incomings) == 1 and b.incomings[0]["domain"] == new["id"]
        assert b.instances[new["id"]]["ip"] == ip
        assert b.data[new["id"]] == {"www": b"a disk's file"}
        # the source holds nothing: its shut-off copy destroyed, its record gone
        assert s.hosts["live-a"].lcm.list() == [] and s.cims["live-a"].instances == {}
        steps = [st["step"] for st in s.meo.store.get("op_occs", op["id"])["_steps"]]
        assert steps.index("incoming") < steps.index("migrated") < steps.index("dispatched")
        assert "sourceStop" not in steps and "imported" not in steps


def test_live_false_moves_it_cold(tmp_path):
    with movable(tmp_path, ("live-a", "live-b")) as s:
        iid, _ = _vm(s)
        op = _relocate(s, iid, live=False)
        assert op["operationState"] == "COMPLETED", op
        assert "relocated cold (a cold move was asked (live: false))" in op["decisionReason"]
        assert s.c.get(f"{INST}/{iid}")["relocatedFrom"][-1]["moveType"] == "COLD"
        assert s.cims["live-b"].incomings == []


def test_live_true_is_refused_saying_why_and_absent_falls_back_to_cold(tmp_path):
    with movable(tmp_path, ("live-a", "live-b"),
                 live_cidrs={"live-b": "10.124.0.0/24"}) as s:
        iid, src = _vm(s)
        why = _conflict(s, iid, live=True)
        assert "cannot be relocated live" in why and "10.123.0.0/24" in why \
            and "10.124.0.0/24" in why, why
        _serving_on(s, iid, src)
        op = _relocate(s, iid)
        assert op["operationState"] == "COMPLETED", op
        assert "relocated cold (the guest networks differ" in op["decisionReason"], op
        assert s.c.get(f"{INST}/{iid}")["relocatedFrom"][-1]["moveType"] == "COLD"


def test_a_host_without_a_live_endpoint_or_a_stopped_vm_or_a_container_moves_cold(tmp_path):
    with movable(tmp_path, ("live-a", "live-b"), live_cidrs={"live-b": None}) as s:
        iid, _ = _vm(s)
        assert "edge host 'live-b' takes no live migration" in _conflict(s, iid, live=True)
    with movable(tmp_path / "2", ("live-a", "live-b")) as s:
        iid, src = _vm(s)
        op, _ = s.c.post(f"{INST}/{iid}/operate", {"changeStateTo": "STOPPED",
                                                    "stopType": "FORCEFUL"})
        assert s.c.wait_op(op)["operationState"] == "COMPLETED"
        assert "it is STOPPED: a stopped VM moves cold" in _conflict(s, iid, live=True)
    with movable(tmp_path / "3", ("edge1", "edge2")) as s:
        pkg = onboard(s, virtualStorageDescriptor=VOLUME)
        iid, op = deploy(s, pkg["appDId"], deploymentType="CONTAINER")
        assert "it is a container" in _conflict(s, iid, live=True)
        with pytest.raises(ApiError) as e:
            s.c.post(f"{INST}/{iid}/relocate", {"live": "yes"})
        assert e.value.status == 400 and "live" in e.value.detail


@pytest.mark.parametrize("where", ["live_source", "prepare_incoming", "migrate_out"])
def test_a_failure_before_the_vm_moves_leaves_it_running_where_it_was(tmp_path, where):
    with movable(tmp_path, ("live-a", "live-b")) as s:
        iid, src = _vm(s)
        s.mepms["live-a" if where != "prepare_incoming" else "live-b"].fail[where] = \
            BackendError(f"{where} broke")
        op = _relocate(s, iid)
        assert op["operationState"] == "FAILED", op
        assert "relocation rolled back (the app serves on edge host live-a as before, " \
               f"nothing left on live-b): {where} broke" in op["error"]["detail"], op
        _serving_on(s, iid, src)


def test_a_failure_after_the_vm_moved_starts_it_again_on_its_source(tmp_path):
    """The target's adoption fails once the VM runs there: its copy there is
    removed, the source's shut-off copy started again (cold)."""
    with movable(tmp_path, ("live-a", "live-b")) as s:
        iid, src = _vm(s)
        s.cims["live-b"].fail["deploy"] = BackendError("adoption broke")
        op = _relocate(s, iid)
        assert op["operationState"] == "FAILED", op
        assert "adoption broke" in op["error"]["detail"], op
        steps = [st["step"] for st in s.meo.store.get("op_occs", op["id"])["_steps"]]
        assert "migrated" in steps and "sourceStart" in steps, steps
        _serving_on(s, iid, src)
