"""The MEPM contract's verbs of a live relocation (`live_source`,
`prepare_incoming`, `abort_incoming`, `migrate_out`, `HostInfo.live`;
mecorch/mepm/contract.py, mecorch.mepm.live), run against both
implementations (LocalMepm in process, RemoteMepm over HTTP), as
test_mepm_data.py.

Two host engines of the same implementation, a source and a target, each
with a LiveCompute VIM: an in-memory driver whose two fakes share one dict
as their backends' link (it proves the hosts' logic, not a backend:
tests/backends/test_libvirt_live.py proves the libvirt VIM).
"""

from __future__ import annotations

import hashlib
import uuid

import pytest
import yaml

from mecorch.kernel import errors
from mecorch.kernel.states import DeploymentType, ObservedState
from mepm_labs import LABS, wait_op
from support.corelab import VM_APPD, make_package
from support.fakes import FakeCompute, LiveCompute

CIDR = "10.123.0.0/24"          # the fakes' guest addresses: 10.123.0.n
BODY = {"deploymentType": "VM", "restartPolicy": {"policy": "Always"}}


def endpoint(name: str) -> dict:
    return {"uri": f"qemu+tcp://{name}.lab/system", "network_cidr": CIDR}


@pytest.fixture(params=list(LABS))
def pair(request, uid, tmp_path):
    """(source lab, target lab): two hosts, their VIMs on one link."""
    wire: dict = {}
    labs = []
    try:
        for name in ("src", "dst"):
            (tmp_path / name).mkdir()
            lab = LABS[request.param](f"{uid}{name}", tmp_path / name)
            labs.append(lab)
            lab.make()
            lab.vim = LiveCompute(wire=wire, endpoint=endpoint(name))
            lab.orch.inventory.get(lab.host_id).attach("vim", lab.vim)
        labs[0].wire = labs[1].wire = wire
        yield labs[0], labs[1]
    finally:
        for lab in labs:
            lab.teardown()


def created(lab, key: str) -> str:
    """The VM app's package on the host, an instance of it created."""
    if not hasattr(lab, "pkg"):
        appd = yaml.safe_load(VM_APPD.read_text())
        z = make_package(lab.tmp, VM_APPD, b"QFI\xfb" + b"\0" * 508)
        pkg = {"id": f"meo-pkg-{lab.uid}-{uuid.uuid4().hex[:8]}", "appDId": appd["appDId"],
               "appPkgName": appd["appName"], "appPkgVersion": str(appd["appDVersion"]),
               "appDVersion": str(appd["appDVersion"]),
               "appSoftwareVersion": str(appd["appSoftVersion"]),
               "checksum": {"algorithm": "SHA-256",
                            "hash": hashlib.sha256(z.read_bytes()).hexdigest()}}
        lab.pkg = lab.mepm.ensure_package(pkg, str(z)), pkg
    host_pkg, pkg = lab.pkg
    return lab.mepm.create_instance({"appDId": pkg["appDId"], "appPkgId": host_pkg},
                                    key=f"create-{key}-{uuid.uuid4().hex[:6]}")["id"]


def running(lab, key: str) -> str:
    iid = created(lab, key)
    op = lab.mepm.instantiate(iid, BODY, key=f"inst-{key}")
    assert wait_op(lab.mepm, op["id"])["operationState"] == "COMPLETED"
    return iid


def record(lab, iid: str) -> dict:
    return lab.orch.store.get("instances", iid)


def operational(lab, iid: str) -> str:
    return lab.mepm.get_instance(iid)["instantiatedAppState"]["operationalState"]


def moved(src, dst) -> tuple[str, str, dict, dict]:
    """A running instance on `src` sent to a prepared one on `dst`:
    (source id, target id, live facts, offer)."""
    sid = running(src, "src")
    facts = src.mepm.live_source(sid)
    tid = created(dst, "dst")
    offer = dst.mepm.prepare_incoming(tid, BODY, facts)
    src.mepm.migrate_out(sid, offer)
    return sid, tid, facts, offer


def test_a_running_vm_moves_live_and_the_target_adopts_it(pair):
    src, dst = pair
    assert src.mepm.info().live == {"uri": endpoint("src")["uri"], "networkCidr": CIDR}
    sid = running(src, "src")
    src.vim.data[sid] = {"sample-vm-data": b"what the guest wrote"}
    ip = src.vim.instances[sid]["ip"]
    facts = src.mepm.live_source(sid)
    assert facts == {"driver": {"xml": f"<domain name='{sid}'/>", "addresses": [ip]},
                     "mp1TokenDigest": record(src, sid)["_mp1Token"]}
    assert len(facts["mp1TokenDigest"]) == 64

    tid = created(dst, "dst")
    offer = dst.mepm.prepare_incoming(tid, BODY, facts)
    assert offer["driver"]["uri"] == endpoint("dst")["uri"]
    assert offer["driver"]["instance_id"] == tid
    assert dst.vim.prepared[tid] == offer["driver"]           # the driver made the room
    assert dst.mepm.get_instance(tid)["instantiationState"] == "NOT_INSTANTIATED"

    src.mepm.migrate_out(sid, offer)
    assert src.wire[endpoint("dst")["uri"]][tid]["ip"] == ip   # it arrived there
    view = src.mepm.get_instance(sid)
    assert view["instantiationState"] == "INSTANTIATED"
    assert view["instantiatedAppState"]["operationalState"] == "STOPPED"
    assert record(src, sid)["_movedOut"]["sent"] is True
    assert src.vim.instances[sid]["state"] is ObservedState.STOPPED     # kept, shut off

    op = dst.mepm.instantiate(tid, BODY, key="inst-dst")
    assert wait_op(dst.mepm, op["id"])["operationState"] == "COMPLETED"
    assert dst.vim.incomings == [offer["driver"]]             # the deploy adopted, made nothing
    assert dst.vim.instances[tid]["ip"] == ip                 # the guest kept its address
    assert dst.vim.data[tid] == {"sample-vm-data": b"what the guest wrote"}
    got = record(dst, tid)
    assert got["_mp1Token"] == facts["mp1TokenDigest"]        # the token the guest booted with
    assert "_incoming" not in got                             # the offer is spent
    assert dst.mepm.get_instance(tid)["instantiatedAppState"]["operationalState"] == "STARTED"


def test_nothing_starts_a_moved_out_instance_but_an_operate_start(pair):
    src, dst = pair
    sid, _, _, _ = moved(src, dst)
    host = src.orch.inventory.get(src.host_id)
    starts = src.vim.calls.count("start")
    # the supervisor (its policy Always), a reconciliation round
    obs = src.vim.inspect({"id": sid})
    assert src.orch.supervisor.died(host, DeploymentType.VM, obs) is None
    assert not src.orch.supervisor.pending(sid)
    src.orch.reconciler.run_once()
    assert not src.orch.supervisor.pending(sid)
    assert src.vim.calls.count("start") == starts
    assert src.vim.instances[sid]["state"] is ObservedState.STOPPED
    assert operational(src, sid) == "STOPPED"
    # an MEPM that stopped while it sent the instance left it marked,
    # STARTED: its runtime seen stopped is no death to restart either
    inst = record(src, sid)
    inst["_movedOut"]["sent"] = False
    inst["instantiatedAppState"] = {"operationalState": "STARTED"}
    src.orch.store.put("instances", sid, inst)
    assert src.orch.supervisor.died(host, DeploymentType.VM, obs) is None
    assert not src.orch.supervisor.pending(sid)
    inst.pop("_movedOut")                 # the same record unmarked: restarted by its policy
    src.orch.store.put("instances", sid, inst)
    assert src.orch.supervisor.died(host, DeploymentType.VM, obs) is not None
    assert src.orch.supervisor.pending(sid)
    src.orch.supervisor.close()


def test_a_reconciliation_leaves_an_arrival_to_its_instantiate(pair):
    """Between the migration's end and the target's instantiate, the
    arrived guest runs on the target for an instance NOT_INSTANTIATED
    there: no orphan (a reconciliation round once destroyed it, and held
    the instance while it did: the instantiate was refused)."""
    src, dst = pair
    sid, tid, _, offer = moved(src, dst)
    assert tid in [o.instance_id for o in dst.vim.list_instances()]   # listed, as libvirt does
    dst.orch.reconciler.run_once()
    assert tid in dst.wire[endpoint("dst")["uri"]]
    op = dst.mepm.instantiate(tid, BODY, key="inst-dst")
    assert wait_op(dst.mepm, op["id"])["operationState"] == "COMPLETED"
    assert dst.vim.incomings == [offer["driver"]]
    dst.orch.reconciler.run_once()                      # adopted: its instance's now
    assert dst.vim.instances[tid]["state"] is ObservedState.RUNNING


def test_an_operate_start_rolls_a_move_back_and_a_terminate_ends_it(pair):
    src, dst = pair
    sid, _, _, _ = moved(src, dst)
    with pytest.raises(errors.Conflict, match="STOPPED"):
        src.mepm.migrate_out(sid, {"driver": {}})             # not running here
    with pytest.raises(errors.Conflict, match="STOPPED"):
        src.mepm.live_source(sid)
    op = src.mepm.operate(sid, {"changeStateTo": "STARTED"})
    assert wait_op(src.mepm, op["id"])["operationState"] == "COMPLETED"
    assert src.vim.instances[sid]["state"] is ObservedState.RUNNING
    assert "_movedOut" not in record(src, sid)
    assert operational(src, sid) == "STARTED"
    assert src.mepm.live_source(sid)["driver"]["addresses"]   # it may move again

    other, _, _, _ = moved(src, dst)
    op = src.mepm.terminate(other, {"terminationType": "FORCEFUL"})
    assert wait_op(src.mepm, op["id"])["operationState"] == "COMPLETED"
    assert src.mepm.get_instance(other)["instantiationState"] == "NOT_INSTANTIATED"
    assert "_movedOut" not in record(src, other) and other not in src.vim.instances


def test_a_prepare_is_undone_by_abort_and_by_delete(pair):
    src, dst = pair
    sid = running(src, "src")
    facts = src.mepm.live_source(sid)
    tid = created(dst, "dst")
    dst.mepm.prepare_incoming(tid, BODY, facts)
    dst.mepm.abort_incoming(tid)
    assert dst.vim.calls.count("abort_incoming") == 1
    assert dst.vim.prepared == {} and "_incoming" not in record(dst, tid)
    dst.mepm.abort_incoming(tid)                              # nothing kept: success
    dst.mepm.abort_incoming(f"absent-{dst.uid}")
    assert dst.vim.calls.count("abort_incoming") == 1

    dst.mepm.prepare_incoming(tid, BODY, facts)
    offer = dst.mepm.prepare_incoming(tid, BODY, facts)       # again: replaces the first
    assert dst.vim.calls.count("abort_incoming") == 2
    assert record(dst, tid)["_incoming"]["offer"] == offer["driver"]
    src.mepm.migrate_out(sid, offer)                          # it arrived
    dst.mepm.delete_instance(tid)
    assert dst.vim.calls.count("abort_incoming") == 3
    assert dst.vim.prepared == {} and src.wire[endpoint("dst")["uri"]] == {}
    assert dst.mepm.get_instance(tid) is None


def test_refusals(pair):
    src, dst = pair
    sid = running(src, "src")
    tid = created(dst, "dst")
    with pytest.raises(errors.Conflict, match="NOT_INSTANTIATED"):
        dst.mepm.live_source(tid)
    with pytest.raises(errors.NotFound):
        dst.mepm.live_source(f"absent-{dst.uid}")
    facts = src.mepm.live_source(sid)
    # an offer for an instance already INSTANTIATED
    with pytest.raises(errors.Conflict, match="INSTANTIATED"):
        src.mepm.prepare_incoming(sid, BODY, facts)
    # the bodies' fields, named
    with pytest.raises(errors.InvalidInput, match="'extra'"):
        dst.mepm.prepare_incoming(tid, BODY, {**facts, "extra": 1})
    with pytest.raises(errors.InvalidInput, match="source.driver"):
        dst.mepm.prepare_incoming(tid, BODY, {**facts, "driver": "x"})
    with pytest.raises(errors.InvalidInput, match="source.mp1TokenDigest"):
        dst.mepm.prepare_incoming(tid, BODY, {**facts, "mp1TokenDigest": "nope"})
    with pytest.raises(errors.InvalidInput, match="deployementType"):
        dst.mepm.prepare_incoming(tid, {"deployementType": "VM"}, facts)
    with pytest.raises(errors.InvalidInput, match="'bogus'"):
        src.mepm.migrate_out(sid, {"driver": {}, "bogus": 1})
    with pytest.raises(errors.InvalidInput, match="offer.driver"):
        src.mepm.migrate_out(sid, {"driver": []})
    # the target's driver refuses a guest it cannot keep as it is
    with pytest.raises(errors.Conflict, match="outside"):
        dst.mepm.prepare_incoming(tid, BODY, {**facts, "driver": {**facts["driver"],
                                                                   "addresses": ["10.9.9.9"]}})
    assert dst.vim.prepared == {} and "_incoming" not in record(dst, tid)
    # a failed migration: it still runs here, unmarked
    offer = dst.mepm.prepare_incoming(tid, BODY, facts)
    src.vim.fail["migrate_out"] = errors.BackendError("link cut")
    with pytest.raises(errors.BackendError, match="link cut"):
        src.mepm.migrate_out(sid, offer)
    assert operational(src, sid) == "STARTED" and "_movedOut" not in record(src, sid)
    assert src.vim.instances[sid]["state"] is ObservedState.RUNNING
    assert src.mepm.get_instance(sid)["instantiationState"] == "INSTANTIATED"
    # a STOPPED instance moves cold
    op = src.mepm.operate(sid, {"changeStateTo": "STOPPED", "stopType": "FORCEFUL"})
    assert wait_op(src.mepm, op["id"])["operationState"] == "COMPLETED"
    with pytest.raises(errors.Conflict, match="STOPPED"):
        src.mepm.live_source(sid)
    with pytest.raises(errors.Conflict, match="STOPPED"):
        src.mepm.migrate_out(sid, offer)


def test_a_driver_that_cannot_move_live_is_refused(pair):
    src, dst = pair
    plain = FakeCompute(DeploymentType.VM)
    plain.images = src.vim.images
    created(src, "warm")                  # the package's image in the live VIM, shared
    src.orch.inventory.get(src.host_id).attach("vim", plain)
    assert src.mepm.info().live is None
    sid = running(src, "plain")
    with pytest.raises(errors.UnsupportedAction, match="FakeCompute.*not LiveMovable"):
        src.mepm.live_source(sid)
    with pytest.raises(errors.UnsupportedAction, match="FakeCompute.*not LiveMovable"):
        src.mepm.migrate_out(sid, {"driver": {}})
    facts = {"driver": {"xml": "<domain/>", "addresses": []}, "mp1TokenDigest": None}
    tid = created(src, "in")
    with pytest.raises(errors.UnsupportedAction, match="FakeCompute.*not LiveMovable"):
        src.mepm.prepare_incoming(tid, BODY, facts)
    assert "_incoming" not in record(src, tid)
    # an offer kept with a live VIM, the VIM then replaced: its instantiate refuses
    src.orch.inventory.get(src.host_id).attach("vim", src.vim)
    dst_offer = src.mepm.prepare_incoming(tid, BODY, facts)
    assert dst_offer["driver"]["instance_id"] == tid
    src.orch.inventory.get(src.host_id).attach("vim", plain)
    with pytest.raises(errors.UnsupportedAction, match="not LiveMovable"):
        src.mepm.instantiate(tid, BODY, key="inst-in")
    assert src.mepm.get_instance(tid)["instantiationState"] == "NOT_INSTANTIATED"
    assert plain.calls.count("deploy") == 1                   # only `plain`'s own instance
