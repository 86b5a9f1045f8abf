"""The MEPM contract (mecorch/mepm/contract.py), written once and run
against both ways the MEO reaches a host: LocalMepm (in process) and
RemoteMepm (HTTP to an API server of role mepm on loopback), with the same
host engine on in-memory drivers behind each.

The failure rules of the contract, case by case: a retried create or
instantiate with its idempotency key returns what the first made (and the
same key with another body is refused); a retried terminate is refused
while the first runs and the MEO finds that op among the instance's; what
the host has not is None (get) or success (delete); a refusal is the
MEPM's own error class with its detail; a host that cannot be reached
raises BackendUnavailable (only over a link: in process there is none to
lose); the package copy is idempotent; the host info has its shape.
"""

from __future__ import annotations

import json
import threading

import pytest

from labfixture import lab_fixture
from mecorch.kernel import errors
from mecorch.kernel.states import LcmOperation
from mecorch.mepm.contract import HostInfo, MannerCapacity
from mepm_labs import LABS, wait_op


lab = lab_fixture(LABS)


def on_the_wire(doc):
    """An answer is what HTTP would carry: JSON, no internal keys."""
    assert json.loads(json.dumps(doc)) == doc
    for d in doc if isinstance(doc, list) else [doc]:
        assert not [k for k in d if k.startswith("_") and k != "_links"], d
    return doc


def deployed(lab, key="k") -> tuple[str, dict]:
    """A package on the host, an instance created and instantiated."""
    pkg, zip_path = lab.package()
    host_pkg = lab.mepm.ensure_package(pkg, zip_path)
    inst = lab.mepm.create_instance({"appDId": pkg["appDId"], "appPkgId": host_pkg},
                                    key=f"create-{key}")
    op = lab.mepm.instantiate(inst["id"], {"deploymentType": "CONTAINER"}, key=f"inst-{key}")
    assert wait_op(lab.mepm, op["id"])["operationState"] == "COMPLETED"
    return inst["id"], op


def test_host_info_has_its_shape(lab):
    info = lab.mepm.info()
    assert isinstance(info, HostInfo) and info.host_id == lab.host_id
    assert set(info.manners) == {"CONTAINER", "VM"}
    for cap in info.manners.values():
        assert isinstance(cap, MannerCapacity)
        assert cap.vcpu_total > 0 and cap.memory_mb_total > 0 and cap.disk_gb_total > 0
        assert cap.vcpu_used == 0 and cap.memory_mb_used == 0
    assert HostInfo.from_dict(on_the_wire(info.to_dict())) == info
    # an instance running counts in what the host reports as used
    deployed(lab)
    assert lab.mepm.info().manners["CONTAINER"].vcpu_used > 0
    # a host this MEPM does not serve is the MEPM's refusal, not None
    with pytest.raises(errors.NotFound):
        lab.connect(f"other-{lab.uid}").info()


def test_package_copy_is_idempotent(lab):
    pkg, zip_path = lab.package()
    first = lab.mepm.ensure_package(pkg, zip_path)
    assert lab.mepm.ensure_package(pkg, zip_path) == first
    assert [p["id"] for p in lab.orch.packages.list()] == [first]
    # disabled on the host meanwhile: made usable again, not copied again
    lab.orch.packages.modify(first, {"operationState": "DISABLED"})
    assert lab.mepm.ensure_package(pkg, zip_path) == first
    assert lab.orch.packages.get(first)["operationalState"] == "ENABLED"
    versions = (pkg["appDVersion"], pkg["appSoftwareVersion"])
    lab.mepm.remove_package(pkg["appDId"], ("9.9", "9.9"))      # another version: none
    assert [p["id"] for p in lab.orch.packages.list()] == [first]
    # two versions on the host: each removed by its own, the other kept
    newer, newer_zip = lab.package(appDVersion="2.0")
    second = lab.mepm.ensure_package(newer, newer_zip)
    assert second != first
    lab.mepm.remove_package(pkg["appDId"], versions)
    assert [p["id"] for p in lab.orch.packages.list()] == [second]
    lab.mepm.remove_package(pkg["appDId"], versions)            # gone: success
    lab.mepm.remove_package(f"absent-{lab.uid}", versions)
    lab.mepm.remove_package(pkg["appDId"], ("2.0", newer["appSoftwareVersion"]))
    assert lab.orch.packages.list() == []


def test_a_copy_the_host_refuses_leaves_nothing(lab):
    """Bytes that are not what the checksum says: the host's IntegrityError,
    no copy kept; the right bytes then copy as usual."""
    pkg, zip_path = lab.package()
    with pytest.raises(errors.IntegrityError, match="checksum"):
        lab.mepm.ensure_package({**pkg, "checksum": {"algorithm": "SHA-256",
                                                     "hash": "0" * 64}}, zip_path)
    assert lab.orch.packages.list() == []
    assert lab.mepm.ensure_package(pkg, zip_path)


def test_a_package_in_use_is_removed_when_its_instance_goes(lab):
    iid, _ = deployed(lab)
    pkg = lab.orch.packages.list()[0]
    versions = (pkg["appDVersion"], pkg["appSoftwareVersion"])
    lab.mepm.remove_package(pkg["appDId"], versions)
    kept = lab.orch.packages.list()
    assert [(p["id"], p["operationalState"], p["deletionPending"]) for p in kept] == \
        [(pkg["id"], "DISABLED", True)]
    lab.mepm.remove_package(pkg["appDId"], versions)            # pending: success
    op = lab.mepm.terminate(iid, {"terminationType": "FORCEFUL"})
    assert wait_op(lab.mepm, op["id"])["operationState"] == "COMPLETED"
    lab.mepm.delete_instance(iid)
    assert lab.orch.packages.list() == []


def test_a_retried_create_returns_the_first_instance(lab):
    pkg, zip_path = lab.package()
    lab.mepm.ensure_package(pkg, zip_path)
    body = {"appDId": pkg["appDId"], "appInstanceName": "one"}
    first = on_the_wire(lab.mepm.create_instance(body, key="same"))
    again = lab.mepm.create_instance(body, key="same")
    assert again["id"] == first["id"]
    assert first["instantiationState"] == "NOT_INSTANTIATED"
    assert [i["id"] for i in on_the_wire(lab.mepm.list_instances())] == [first["id"]]
    with pytest.raises(errors.IdempotencyMismatch):
        lab.mepm.create_instance({**body, "appInstanceName": "two"}, key="same")
    assert len(lab.mepm.list_instances()) == 1
    assert lab.mepm.create_instance(body, key="other")["id"] != first["id"]


def test_a_retried_instantiate_returns_the_first_op(lab):
    pkg, zip_path = lab.package()
    lab.mepm.ensure_package(pkg, zip_path)
    iid = lab.mepm.create_instance({"appDId": pkg["appDId"]}, key="c")["id"]
    body = {"deploymentType": "CONTAINER"}
    gate = threading.Event()
    lab.cim.deploy_gate = gate
    try:
        op = on_the_wire(lab.mepm.instantiate(iid, body, key="i"))
        assert op["lcmOperation"] == LcmOperation.INSTANTIATE.value and op["appInstanceId"] == iid
        assert lab.mepm.instantiate(iid, body, key="i")["id"] == op["id"]    # in flight
    finally:
        gate.set()
    assert wait_op(lab.mepm, op["id"])["operationState"] == "COMPLETED"
    assert lab.mepm.instantiate(iid, body, key="i")["id"] == op["id"]        # ended
    assert list(lab.cim.instances) == [iid]                                   # one deploy
    with pytest.raises(errors.IdempotencyMismatch):
        lab.mepm.instantiate(iid, {"deploymentType": "VM"}, key="i")
    with pytest.raises(errors.Conflict, match="INSTANTIATED"):
        lab.mepm.instantiate(iid, body, key="another")
    view = on_the_wire(lab.mepm.get_instance(iid))
    assert view["instantiationState"] == "INSTANTIATED" and view["hostId"] == lab.host_id
    assert [o["id"] for o in on_the_wire(lab.mepm.ops_of(iid))] == [op["id"]]


def test_a_retried_terminate_finds_the_first(lab):
    """A terminate sent again while the first runs is refused (Conflict)
    and the first is among the instance's ops (what the MEO follows then);
    after it ended, a terminate is refused and the instance is
    NOT_INSTANTIATED (the MEO takes that as done)."""
    iid, _ = deployed(lab)
    gate, destroy = threading.Event(), lab.cim.destroy
    lab.cim.destroy = lambda handle: (gate.wait(10), destroy(handle))
    try:
        op = on_the_wire(lab.mepm.terminate(iid, {"terminationType": "FORCEFUL"}))
        assert op["lcmOperation"] == LcmOperation.TERMINATE.value
        with pytest.raises(errors.Conflict):
            lab.mepm.terminate(iid, {"terminationType": "FORCEFUL"})
        running = [o for o in lab.mepm.ops_of(iid)
                   if o["operationState"] in ("STARTING", "PROCESSING")]
        assert [o["id"] for o in running] == [op["id"]]
    finally:
        gate.set()
    assert wait_op(lab.mepm, op["id"])["operationState"] == "COMPLETED"
    with pytest.raises(errors.Conflict, match="NOT_INSTANTIATED"):
        lab.mepm.terminate(iid, {"terminationType": "FORCEFUL"})
    assert lab.mepm.get_instance(iid)["instantiationState"] == "NOT_INSTANTIATED"
    assert lab.cim.instances == {}


def test_operate_runs_as_an_op_of_the_instance(lab):
    """Sent again while it runs: refused, the first among the ops."""
    iid, first = deployed(lab)
    gate, stop = threading.Event(), lab.cim.stop
    lab.cim.stop = lambda handle, timeout_s: (gate.wait(10), stop(handle, timeout_s))
    try:
        op = lab.mepm.operate(iid, {"changeStateTo": "STOPPED", "stopType": "FORCEFUL"})
        with pytest.raises(errors.Conflict):
            lab.mepm.operate(iid, {"changeStateTo": "STOPPED", "stopType": "FORCEFUL"})
        assert op["id"] in [o["id"] for o in lab.mepm.ops_of(iid)
                            if o["operationState"] in ("STARTING", "PROCESSING")]
    finally:
        gate.set()
    assert wait_op(lab.mepm, op["id"])["operationState"] == "COMPLETED"
    view = lab.mepm.get_instance(iid)
    assert view["instantiatedAppState"]["operationalState"] == "STOPPED"
    with pytest.raises(errors.Conflict, match="already STOPPED"):
        lab.mepm.operate(iid, {"changeStateTo": "STOPPED"})
    assert {o["id"] for o in lab.mepm.ops_of(iid)} == {first["id"], op["id"]}


def test_what_the_host_has_not(lab):
    """A get of what the host has not is None, a delete of it succeeds,
    its ops are none; an operation on it is the MEPM's NotFound."""
    absent = f"absent-{lab.uid}"
    assert lab.mepm.get_instance(absent) is None
    assert lab.mepm.get_op(absent) is None
    assert lab.mepm.ops_of(absent) == []
    lab.mepm.delete_instance(absent)
    for call in (lambda: lab.mepm.instantiate(absent, {"deploymentType": "CONTAINER"}, "k"),
                 lambda: lab.mepm.terminate(absent, {"terminationType": "FORCEFUL"}),
                 lambda: lab.mepm.operate(absent, {"changeStateTo": "STOPPED"})):
        with pytest.raises(errors.NotFound, match=absent):
            call()


def test_delete_of_a_gone_instance_succeeds(lab):
    pkg, zip_path = lab.package()
    lab.mepm.ensure_package(pkg, zip_path)
    iid = lab.mepm.create_instance({"appDId": pkg["appDId"]}, key="c")["id"]
    lab.mepm.delete_instance(iid)
    assert lab.mepm.get_instance(iid) is None
    lab.mepm.delete_instance(iid)
    assert lab.mepm.list_instances() == []


def test_a_refusal_is_the_mepms_own_error_with_its_detail(lab):
    iid, _ = deployed(lab)
    with pytest.raises(errors.Conflict, match="terminate it first"):
        lab.mepm.delete_instance(iid)
    with pytest.raises(errors.InvalidInput, match="appDId"):
        lab.mepm.create_instance({"appDId": "bad id!"}, key="bad")
    with pytest.raises(errors.NotFound, match=f"nope-{lab.uid}"):
        lab.mepm.create_instance({"appDId": f"nope-{lab.uid}"}, key="nope")
    with pytest.raises(errors.InvalidInput, match="terminationType"):
        lab.mepm.terminate(iid, {"terminationType": "SOON"})
    with pytest.raises(errors.InvalidInput, match="changeStateTo"):
        lab.mepm.operate(iid, {"changeStateTo": "PAUSED"})
    # a subclass too: no room is CapacityExceeded, not just a Conflict
    other = lab.mepm.create_instance({"appDId": "sample-http"}, key="big")["id"]
    with pytest.raises(errors.CapacityExceeded, match="vCPU"):
        lab.mepm.instantiate(other, {"deploymentType": "CONTAINER", "virtualComputeDescriptor": {
            "virtualCpu": {"numVirtualCpu": 64}, "virtualMemory": {"virtualMemSize": 64}}}, "big")
    assert lab.mepm.get_instance(other)["instantiationState"] == "NOT_INSTANTIATED"


@pytest.mark.parametrize("lab", [n for n in LABS if LABS[n].link], indirect=True)
def test_an_unreachable_host_is_backend_unavailable(lab):
    """Every verb, the reads included: an unreachable host is never 'has
    none' (None) and never another error."""
    iid, op = deployed(lab)
    mepm = lab.unreachable()
    pkg, zip_path = lab.package()
    for call in (mepm.info, lambda: mepm.ensure_package(pkg, zip_path),
                 lambda: mepm.remove_package(pkg["appDId"], ("1.0", "1.0")),
                 lambda: mepm.create_instance({"appDId": pkg["appDId"]}, "k2"),
                 lambda: mepm.instantiate(iid, {}, "k3"),
                 lambda: mepm.terminate(iid, {"terminationType": "FORCEFUL"}),
                 lambda: mepm.operate(iid, {"changeStateTo": "STOPPED"}),
                 lambda: mepm.delete_instance(iid), lambda: mepm.get_instance(iid),
                 mepm.list_instances, lambda: mepm.get_op(op["id"]),
                 lambda: mepm.ops_of(iid), lambda: mepm.rules(iid),
                 lambda: mepm.logs(iid), mepm.health):
        with pytest.raises(errors.BackendUnavailable):
            call()


def test_rules_are_the_mep_s_own(lab):
    """An instance's rules as its host's MEP holds them (with their state);
    None for an instance the host has not."""
    iid, _ = deployed(lab)
    rules = on_the_wire(lab.mepm.rules(iid))
    assert set(rules) == {"trafficRules", "dnsRules"}
    assert rules["trafficRules"] == lab.orch.mep.list_rules(iid, "traffic_rules")
    assert rules["dnsRules"] == lab.orch.mep.list_rules(iid, "dns_rules")
    assert rules["trafficRules"] and rules["dnsRules"]          # the sample app has both
    assert all(r.get("state") for r in rules["trafficRules"] + rules["dnsRules"])
    assert lab.mepm.rules(f"absent-{lab.uid}") is None


def test_logs_are_the_host_s_answer(lab):
    """The in-memory driver keeps no output: both say so with the same
    error; an instance the host has not is its NotFound."""
    iid, _ = deployed(lab)
    with pytest.raises(errors.UnsupportedAction, match="keeps no output"):
        lab.mepm.logs(iid, 10)
    with pytest.raises(errors.NotFound, match=f"absent-{lab.uid}"):
        lab.mepm.logs(f"absent-{lab.uid}")


def test_services_are_the_host_s_registry(lab):
    """The MEC 011 services the host's apps registered, as its operator
    reads them (no isLocal); none for a host whose apps registered none."""
    assert on_the_wire(lab.mepm.services()) == []
    iid, _ = deployed(lab)
    made = lab.orch.mep.services.register(iid, {
        "serName": "contract", "version": "1", "state": "ACTIVE", "serializer": "JSON",
        "transportInfo": {"id": "t", "name": "REST", "type": "REST_HTTP", "protocol": "HTTP",
                          "version": "1.1", "endpoint": {"uris": []}, "security": {}}})
    got = on_the_wire(lab.mepm.services())
    assert "isLocal" not in got[0] and got == [{k: v for k, v in made.items()
                                                if k != "isLocal"}]


def test_follow_subscribes_once_or_says_the_meo_reads(lab):
    """Over HTTP the host is asked to notify its op changes and its
    instances' state changes (one MEC 010-2 subscription of each type,
    asked again: the same ones), and its subscriptions for the same
    callback path at another MEO address are removed, no other; in
    process it says no (the MEO reads the host's store)."""
    url = "http://127.0.0.1:9/mecorch/v1/hosts/h/notifications"
    subs = lab.orch.subscriptions

    def made(callback: str, kind: str = "AppLcmOpOccStateChange") -> str:
        return subs.create("lcm", {"subscriptionType": kind, "callbackUri": callback})["id"]
    former = [made("http://127.0.0.2:9/mecorch/v1/hosts/h/notifications"),
              made("https://127.0.0.1:9/mecorch/v1/hosts/h/notifications",
                   "AppInstanceStateChange")]
    kept = [made("http://127.0.0.2:9/mecorch/v1/hosts/other/notifications"),
            made("http://127.0.0.2:9/oss/notifications"),
            made("http://127.0.0.2:9/oss/notifications", "AppInstanceStateChange")]
    will = lab.mepm.follow(url, "t" * 43)
    assert lab.mepm.follow(url, "t" * 43) is will
    held = lab.orch.store.list("oss_subscriptions", api="lcm")
    mine = [s for s in held if s["callbackUri"] == url]
    assert len(mine) == (2 if will else 0), mine
    ids = {s["id"] for s in held}
    assert set(kept) <= ids
    if will:
        assert sorted(s["subscriptionType"] for s in mine) == [
            "AppInstanceStateChange", "AppLcmOpOccStateChange"]
        assert not ids & set(former)
    else:
        assert set(former) <= ids


def test_health_names_each_backend(lab):
    health = on_the_wire(lab.mepm.health())
    assert sorted(h["role"] for h in health) == ["cim", "mep", "vim"]
    assert all(h["ok"] is True and isinstance(h["detail"], str) for h in health)


def test_the_meo_s_lost_after_fences_and_only_its_unfence_lifts_it(lab):
    """The host takes the MEO's lostAfter (mecorch/mepm/fence.py), shows it
    and, once fenced, the fence; `unfence` answers what became of each id."""
    pkg, zip_path = lab.package()
    host_pkg = lab.mepm.ensure_package(pkg, zip_path)
    iid = lab.mepm.create_instance({"appDId": pkg["appDId"], "appPkgId": host_pkg},
                                   key="c")["id"]
    op = lab.mepm.instantiate(iid, {"deploymentType": "CONTAINER", "lostAfter": 30}, key="i")
    assert wait_op(lab.mepm, op["id"])["operationState"] == "COMPLETED"
    view = on_the_wire(lab.mepm.get_instance(iid))
    assert view["lostAfter"] == 30 and "fenced" not in view
    fence = lab.orch.fence
    assert fence.check(now=fence._last + 29) == []
    assert len(fence.check(now=fence._last + 31)) == 1
    view = on_the_wire(lab.mepm.get_instance(iid))
    assert view["fenced"]["reason"].startswith("fenced: no word from the MEO for ")
    assert lab.cim.instances[iid]["state"].value == "STOPPED"
    absent = f"absent-{lab.uid}"
    assert on_the_wire(lab.mepm.unfence([iid, absent])) == {
        "unfenced": [iid], "notFenced": [absent], "busy": []}
    assert "fenced" not in lab.mepm.get_instance(iid)
    assert lab.cim.instances[iid]["state"].value == "RUNNING"
