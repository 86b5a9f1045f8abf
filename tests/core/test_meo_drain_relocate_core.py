"""A drain whose relocations run (mecorch/meo/drain.py over
`SystemLcm.relocate`, mecorch/meo/relocate.py), each host an in-process
MEPM (the host engine's own data verbs) whose fake containers carry
their volume's "data" (support/movelab.py): what can move ends on the
other hosts with its data and id, what cannot stays, the drained host
keeps only that and takes no new placement until uncordoned. The MEO's
logic only, on fake drivers (tests/e2e/test_meo_relocate_sites.py drains
on the real backends)."""

from __future__ import annotations

import pytest

from mecorch.kernel.client import ApiError
from support.meolab import INST, deploy, onboard
from support.movelab import VOLUME, movable

HOSTS = "/mecorch/v1/hosts"


@pytest.fixture
def system(tmp_path):
    with movable(tmp_path, ("edge1", "edge2", "edge3")) as s:
        yield s


def _on_edge1(s, pkg, **body) -> tuple[str, str]:
    """A container instance on edge1 (the others cordoned meanwhile) with
    a file in its volume: (its id, its id on the host)."""
    for hid in ("edge2", "edge3"):
        s.meo.registry.cordon(hid)
    try:
        iid, op = deploy(s, pkg["appDId"], deploymentType="CONTAINER", **body)
    finally:
        for hid in ("edge2", "edge3"):
            s.meo.registry.uncordon(hid)
    assert op["operationState"] == "COMPLETED", op
    rid = s.meo.store.get("instances", iid)["_hostInstance"]["id"]
    s.cims["edge1"].data[rid] = {"www": f"file of {iid}".encode()}
    return iid, rid


def test_drain_moves_what_can_move_and_leaves_the_host_cordoned(system):
    s = system
    pkg = onboard(s, virtualStorageDescriptor=VOLUME)
    a, _ = _on_edge1(s, pkg)
    b, _ = _on_edge1(s, pkg)
    pinned, pinned_rid = _on_edge1(s, pkg, selectedMECHostInfo=[{"hostId": {"id": "edge1"}}])
    out, _ = s.c.post(f"{HOSTS}/edge1/drain", {"reason": "kernel upgrade"})
    assert sorted(r["appInstanceId"] for r in out["relocating"]) == sorted([a, b])
    assert [c["appInstanceId"] for c in out["cannotMove"]] == [pinned]
    ops = {r["appInstanceId"]: r["opId"] for r in out["relocating"]}
    for iid in (a, b):
        op = s.c.wait_op(s.c.get(f"/app_lcm/v1/app_lcm_op_occs/{ops[iid]}"), timeout=30)
        assert op["operationState"] == "COMPLETED" and op["lcmOperation"] == "RELOCATE", op
        view = s.c.get(f"{INST}/{iid}")
        assert view["id"] == iid and view["hostId"] in ("edge2", "edge3")
        assert view["instantiatedAppState"]["operationalState"] == "STARTED"
        remote = s.meo.store.get("instances", iid)["_hostInstance"]
        assert s.cims[remote["hostId"]].data[remote["id"]] == {"www": f"file of {iid}".encode()}
    # edge1 keeps only the pinned one, and is cordoned
    assert [i["id"] for i in s.hosts["edge1"].lcm.list()] == [pinned_rid]
    assert set(s.cims["edge1"].instances) == {pinned_rid}
    host = {h["hostId"]: h for h in s.c.get(HOSTS)}["edge1"]
    assert host["cordoned"]["reason"] == "kernel upgrade"
    # nothing new lands there; a relocation naming it is refused too
    for _ in range(3):
        iid, op = deploy(s, pkg["appDId"], deploymentType="CONTAINER")
        assert s.c.get(f"{INST}/{iid}")["hostId"] != "edge1"
    with pytest.raises(ApiError) as e:
        s.c.post(f"{INST}/{a}/relocate", {"hostId": "edge1"})
    assert e.value.status == 409 and "cordoned" in e.value.body["detail"]
    # a second drain: nothing left to move, the pinned one still listed
    again, _ = s.c.post(f"{HOSTS}/edge1/drain", None)
    assert again["relocating"] == [] and [c["appInstanceId"] for c in again["cannotMove"]] \
        == [pinned]
    # uncordoned: placeable again (a relocation back, named)
    s.c.post(f"{HOSTS}/edge1/uncordon", None)
    back = s.c.wait_op(s.c.post(f"{INST}/{a}/relocate", {"hostId": "edge1"})[0], timeout=30)
    assert back["operationState"] == "COMPLETED", back
    assert s.c.get(f"{INST}/{a}")["hostId"] == "edge1"
