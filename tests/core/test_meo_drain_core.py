"""Drain of an edge host at the MEO (mecorch/meo/drain.py): cordon, then
one relocation per INSTANTIATED instance through `SystemLcm.relocate`;
what cannot move is listed with why. The hosts are in-process MEPMs on
the in-memory fake drivers (support/meolab.py).

Here `relocate` is the test's stand-in (it refuses, or records the call
and answers an op id): these tests cover the drain's own choices (what is
asked to move, what is listed as cannot move and why, the cordon, the
route, the CLI), not a relocation itself."""

from __future__ import annotations

import pytest

from mecorch.kernel.client import ApiError
from mecorch.kernel.errors import Conflict
from support.meolab import INST, deploy, onboard, system  # noqa: F401

HOSTS = "/mecorch/v1/hosts"


def _on_edge2(s, pkg, **body) -> str:
    """A container instance placed on edge2 (the other hosts cordoned
    meanwhile)."""
    for hid in ("edge1", "edge3"):
        s.meo.registry.cordon(hid, "test: keep off")
    try:
        iid, op = deploy(s, pkg["appDId"], deploymentType="CONTAINER", **body)
    finally:
        for hid in ("edge1", "edge3"):
            s.meo.registry.uncordon(hid)
    assert op["operationState"] == "COMPLETED", op
    assert s.c.get(f"{INST}/{iid}")["hostId"] == "edge2"
    return iid


@pytest.fixture
def drained(system):  # noqa: F811
    """edge2 runs: `only` (its request named only edge2), `free` (named
    no host), `busy` (named edge2 and edge3), and a terminated one; the
    stand-in relocate refuses `busy` as relocate refuses an instance
    another operation holds, and answers an op id for the others."""
    s = system
    pkg = onboard(s)
    s.only = _on_edge2(s, pkg, selectedMECHostInfo=[{"hostId": {"id": "edge2"}}])
    s.free = _on_edge2(s, pkg)
    s.busy = _on_edge2(s, pkg, selectedMECHostInfo=[{"hostId": {"id": "edge2"}},
                                                    {"hostId": {"id": "edge3"}}])
    gone = _on_edge2(s, pkg)
    s.c.wait_op(s.c.post(f"{INST}/{gone}/terminate", {"terminationType": "FORCEFUL"})[0])
    s.calls = []

    def relocate(instance_id: str, body: dict) -> dict:
        s.calls.append((instance_id, body))
        if instance_id == s.busy:
            raise Conflict(f"app instance {instance_id} has an operation in progress")
        return {"id": f"op-{instance_id}"}
    s.meo.lcm.relocate = relocate
    return s


def test_drain_cordons_and_lists_what_moves_and_what_cannot(drained):
    s = drained
    out, _ = s.c.post(f"{HOSTS}/edge2/drain", None)
    assert out["relocating"] == [{"appInstanceId": s.free, "opId": f"op-{s.free}"}]
    cannot = {c["appInstanceId"]: c["reason"] for c in out["cannotMove"]}
    assert set(cannot) == {s.only, s.busy}
    assert cannot[s.only].startswith("its instantiate request selected only edge host edge2")
    assert cannot[s.busy] == f"app instance {s.busy} has an operation in progress"
    # relocate asked once per movable INSTANTIATED instance, no host named
    assert sorted(s.calls) == sorted([(s.free, {}), (s.busy, {})])
    host = {h["hostId"]: h for h in s.c.get(HOSTS)}["edge2"]
    assert host["cordoned"]["reason"] == "drained"
    with pytest.raises(ApiError) as e:      # cordoned: nothing new lands there
        deploy(s, s.c.get(f"{INST}/{s.free}")["appDId"], deploymentType="CONTAINER",
               selectedMECHostInfo=[{"hostId": {"id": "edge2"}}])
    assert e.value.status == 409 and "edge2: cordoned (drained)" in e.value.body["detail"]


def test_drain_keeps_a_cordon_s_reason_or_takes_the_one_given(drained):
    s = drained
    s.c.post(f"{HOSTS}/edge2/cordon", {"reason": "kernel upgrade"})
    s.c.post(f"{HOSTS}/edge2/drain", None)
    assert s.meo.registry.cordons()["edge2"]["reason"] == "kernel upgrade"
    s.c.post(f"{HOSTS}/edge2/drain", {"reason": "disk swap"})
    assert s.meo.registry.cordons()["edge2"]["reason"] == "disk swap"


def test_drain_refuses_bad_input_and_unknown_hosts_before_cordoning(drained):
    s = drained
    with pytest.raises(ApiError) as e:
        s.c.post(f"{HOSTS}/edge9/drain", None)
    assert e.value.status == 404
    for body in ({"reasons": "x"}, {"reason": 3}, "x"):
        with pytest.raises(ApiError) as e:
            s.c.post(f"{HOSTS}/edge2/drain", body)
        assert e.value.status == 400, body
    assert s.meo.registry.cordons() == {} and s.calls == []


def test_cli_host_drain(drained, capsys):
    from mecorch.cli import main
    s = drained
    capsys.readouterr()
    rc = main(["--api", s.c.base, "host", "drain", "edge2", "--reason", "maintenance"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0] == "edge host edge2 cordoned; 1 instance(s) relocating, 2 cannot move"
    assert f"relocating {s.free} (op op-{s.free})" in lines
    assert f"cannot move {s.busy}: app instance {s.busy} has an operation in progress" in lines
    assert any(ln.startswith(f"cannot move {s.only}: its instantiate request selected only")
               for ln in lines)
    assert s.meo.registry.cordons()["edge2"]["reason"] == "maintenance"


def test_an_instantiate_still_running_onto_the_host_is_listed_not_lost(drained):
    """Placed on edge2 before the drain, its instantiate still running
    there: not yet there to move, listed with why."""
    import threading
    import time
    from mecorch.kernel.states import DeploymentType
    s = drained
    gate = threading.Event()
    s.hosts["edge2"].inventory.get("edge2").compute(DeploymentType.CONTAINER).deploy_gate = gate
    inst = s.c.post(INST, {"appDId": s.c.get(f"{INST}/{s.free}")["appDId"]})[0]
    op, _ = s.c.post(f"{INST}/{inst['id']}/instantiate", {
        "deploymentType": "CONTAINER", "selectedMECHostInfo": [{"hostId": {"id": "edge2"}}]})
    try:
        deadline = time.monotonic() + 5
        while not any(i["id"] == inst["id"] for i in s.hosts["edge2"].lcm.list()):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        out, _ = s.c.post(f"{HOSTS}/edge2/drain", None)
    finally:
        gate.set()
    cannot = {c["appInstanceId"]: c["reason"] for c in out["cannotMove"]}
    assert cannot[inst["id"]] == (f"being instantiated onto edge host edge2 (op {op['id']}, "
                                  "placed before the cordon); drain again once it ends")
    assert inst["id"] not in {c[0] for c in s.calls}
    assert s.c.wait_op(op, timeout=10)["operationState"] == "COMPLETED"
