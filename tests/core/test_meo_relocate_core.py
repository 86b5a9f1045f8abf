"""Relocation of an instance to another edge host (the MEO's RELOCATE op,
mecorch/meo/relocate.py), each host an in-process MEPM (LocalMepm, with
the host engine's own data verbs: mecorch/mepm/seeds.py) on in-memory
drivers (CarryingCompute holds each volume's "data" and carries it as the
DataMovable contract says: one tar, a member per volume). These prove the
MEO's flow (placement of the target, the journalled steps, the rollback,
the resume, the API and CLI), not the drivers: the real-backend tests do
that."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import yaml

from mecorch.kernel.client import ApiError
from mecorch.kernel.errors import BackendUnavailable
from mecorch.kernel.states import InstantiationState
from mecorch.meo.orchestrator import MeoOrchestrator
from mecorch.spec.capacity import Need
from mecorch.mepm.local import LocalMepm
from support import corelab
from support.corelab import env  # noqa: F401 - a fixture
from support.fakes import broken
from support.meolab import INST, deploy, onboard
from support.movelab import VOLUME, movable

OPS = "/app_lcm/v1/app_lcm_op_occs"


@pytest.fixture
def system(tmp_path):
    with movable(tmp_path, ("edge1", "edge2", "edge3")) as s:
        yield s


# ---------------------------------------------------------------------- helpers
def _deployed(s, host: str = "edge1") -> tuple[str, str]:
    """An instance STARTED on `host` (edge1: placement's pick among equal
    hosts, the first id; the request selects none), with data in its
    volume `www`: (id, host's id)."""
    pkg = onboard(s, virtualStorageDescriptor=VOLUME)
    iid, op = deploy(s, pkg["appDId"], deploymentType="CONTAINER")
    assert op["operationState"] == "COMPLETED", op
    assert s.c.get(f"{INST}/{iid}")["hostId"] == host
    rid = s.meo.store.get("instances", iid)["_hostInstance"]["id"]
    s.cims[host].data[rid] = {"www": b"the app's file"}
    return iid, rid


def _relocate(s, iid: str, **body) -> dict:
    op, headers = s.c.post(f"{INST}/{iid}/relocate", body)
    assert headers["Location"] == op["_links"]["self"]["href"]
    assert op["lcmOperation"] == "RELOCATE" and op["operationParams"] == "RELOCATE"
    return s.c.wait_op(op, timeout=20)


def _copies(s, hid: str) -> list[dict]:
    return s.hosts[hid].lcm.list()


def _problem(fn, *a, **kw) -> ApiError:
    with pytest.raises(ApiError) as e:
        fn(*a, **kw)
    return e.value


def _serving_on_source(s, iid: str, host: str, rid: str) -> None:
    """The instance is as before the relocation: STARTED on its source host
    (its runtime running again), nothing of it on any other host."""
    view = s.c.get(f"{INST}/{iid}")
    assert view["hostId"] == host and view["instantiationState"] == "INSTANTIATED"
    assert s.meo.store.get("instances", iid)["_hostInstance"] == {"hostId": host, "id": rid}
    on_host = s.hosts[host].lcm.view(s.hosts[host].lcm.get(rid))
    assert on_host["instantiatedAppState"]["operationalState"] == "STARTED"
    assert s.cims[host].instances[rid]["state"] == "RUNNING"
    assert s.cims[host].data[rid] == {"www": b"the app's file"}
    for other in s.hosts:
        if other != host:
            assert _copies(s, other) == [], other
            assert s.cims[other].instances == {}, other
            seeds = Path(s.hosts[other].cfg["state_dir"]) / "seeds"
            assert not seeds.exists() or list(seeds.iterdir()) == [], other
    assert list((Path(s.meo.cfg["state_dir"]) / "relocations").glob("*")) == []
    assert "relocatedFrom" not in view
    assert not s.meo.store.list("reservations")


# ---------------------------------------------------------------------- tests
def test_relocated_keeps_its_id_and_data_and_leaves_nothing_behind(system):
    s = system
    iid, rid = _deployed(s, "edge1")
    before = s.c.get(f"{INST}/{iid}")
    op = _relocate(s, iid, gracefulStopTimeout=5)
    assert op["operationState"] == "COMPLETED", op
    view = s.c.get(f"{INST}/{iid}")
    target = view["hostId"]
    assert target in ("edge2", "edge3") and view["id"] == iid
    assert view["instantiatedAppState"]["operationalState"] == "STARTED"
    assert view["appPkgId"] == before["appPkgId"] and view["appDId"] == before["appDId"]
    assert op["decisionReason"].startswith("relocated from edge host edge1; placed on "
                                           f"{target}")
    [move] = view["relocatedFrom"]
    assert move["hostId"] == "edge1" and move["opId"] == op["id"]
    assert move["sourceCopy"] == "REMOVED" and 0 <= move["outageS"] < 10
    # the target runs it (under an id of its own) with the source's data
    remote = s.meo.store.get("instances", iid)["_hostInstance"]
    assert remote["hostId"] == target
    assert s.cims[target].data[remote["id"]] == {"www": b"the app's file"}
    assert len(s.cims[target].seeds) == 1           # the deploy was given the archive
    # no archive left behind: the MEO's carrier file, the target's seed
    assert list((Path(s.meo.cfg["state_dir"]) / "relocations").iterdir()) == []
    assert list((Path(s.hosts[target].cfg["state_dir"]) / "seeds").glob("*")) == []
    # the source holds nothing of it; the source was stopped GRACEFUL first
    assert _copies(s, "edge1") == [] and s.cims["edge1"].instances == {}
    stops = [o for o in s.hosts["edge1"].store.list("op_occs") if o["lcmOperation"] == "OPERATE"]
    assert [o["_plan"] for o in stops] == [{"to": "STOPPED", "timeout": 5}]
    # the op's steps, in order
    assert [st["step"] for st in s.meo.store.get("op_occs", op["id"])["_steps"]] == [
        "package", "created", "sourceStop", "imported", "dispatched", "targetServing",
        "sourceTerminate", "sourceDeleted"]
    # the instance lives on as any other: relocated again (back to edge1,
    # named), then terminated
    op2 = _relocate(s, iid, hostId="edge1")
    assert op2["operationState"] == "COMPLETED", op2
    view = s.c.get(f"{INST}/{iid}")
    assert view["hostId"] == "edge1" and len(view["relocatedFrom"]) == 2
    assert _copies(s, target) == []
    op3 = s.c.wait_op(s.c.post(f"{INST}/{iid}/terminate", {"terminationType": "FORCEFUL"})[0])
    assert op3["operationState"] == "COMPLETED", op3
    assert "relocatedFrom" not in s.c.get(f"{INST}/{iid}")


def test_the_body_and_a_named_host_are_checked_before_anything_is_made(system):
    s = system
    iid, rid = _deployed(s, "edge1")
    url = f"{INST}/{iid}/relocate"
    for body, field in (({"hostID": "edge2"}, "'hostID'"),
                        ({"hostId": "../x"}, "hostId"),
                        ({"hostId": "nope"}, "hostId"),
                        ({"gracefulStopTimeout": -1}, "gracefulStopTimeout"),
                        ({"gracefulStopTimeout": 3601}, "gracefulStopTimeout"),
                        ({"gracefulStopTimeout": "5"}, "gracefulStopTimeout"),
                        ([], "RelocateAppRequest")):
        err = _problem(s.c.post, url, body)
        assert err.status == 400 and field in err.body["detail"], (body, err.body)
    err = _problem(s.c.post, url, {"hostId": "edge1"})
    assert err.status == 409 and "runs on edge host 'edge1' already" in err.body["detail"]
    # an unreachable host
    s.mepms["edge2"].down.set()
    for _ in range(s.meo.registry.unreachable_after):
        s.meo.registry.beat(s.meo.registry.get("edge2"))
    err = _problem(s.c.post, url, {"hostId": "edge2"})
    assert err.status == 409 and "'edge2' is UNREACHABLE" in err.body["detail"]
    # no room (another deploy holds all of edge3's vCPU: 2 cores x 4)
    s.mepms["edge2"].down.clear()
    s.meo.registry.beat(s.meo.registry.get("edge2"))
    s.meo.registry.reserve("edge3", "another", Need(8, 0, 0))
    err = _problem(s.c.post, url, {"hostId": "edge3"})
    assert err.status == 409 and "cannot be relocated" in err.body["detail"] \
        and "edge3: vCPU" in err.body["detail"], err.body
    # a cordoned host (the host record's mark, as the registry's cordon writes it)
    s.meo.store.put("hosts", "edge2", {"id": "edge2", "cordoned": {"at": 1, "reason": "disk"}})
    err = _problem(s.c.post, url, {"hostId": "edge2"})
    assert err.status == 409 and "'edge2' is cordoned (disk)" in err.body["detail"]
    s.meo.store.put("hosts", "edge2", {"id": "edge2", "cordoned": {"at": 1, "reason": ""}})
    err = _problem(s.c.post, url, {"hostId": "edge2"})
    assert err.status == 409 and "'edge2' is cordoned:" in err.body["detail"]
    # and placement leaves both out: no host fits
    err = _problem(s.c.post, url, {})
    assert err.status == 409 and "edge3: vCPU" in err.body["detail"], err.body
    assert "edge2" not in err.body["detail"] and "edge1" not in err.body["detail"]
    s.meo.registry.unreserve("edge3", "another")
    # nothing was made, no op journalled
    assert [o["lcmOperation"] for o in s.c.get(OPS) if o["appInstanceId"] == iid] == \
        ["INSTATIATE"]
    _serving_on_source(s, iid, "edge1", rid)
    # an unknown instance, one not instantiated
    assert _problem(s.c.post, f"{INST}/nope/relocate", {}).status == 404
    other = s.c.post(INST, {"appDId": s.c.get(f"{INST}/{iid}")["appDId"]})[0]
    err = _problem(s.c.post, f"{INST}/{other['id']}/relocate", {})
    assert err.status == 409 and "NOT_INSTANTIATED" in err.body["detail"]


def test_a_named_host_without_the_manner_is_refused(tmp_path):
    with movable(tmp_path, ("edge1", "vm-edge")) as s:
        iid, rid = _deployed(s, "edge1")
        err = _problem(s.c.post, f"{INST}/{iid}/relocate", {"hostId": "vm-edge"})
        assert err.status == 409 and "vm-edge: no CIM: takes no container" in \
            err.body["detail"], err.body
        err = _problem(s.c.post, f"{INST}/{iid}/relocate", {})      # nor placed there
        assert err.status == 409 and "vm-edge: no CIM" in err.body["detail"], err.body
        _serving_on_source(s, iid, "edge1", rid)


def test_placement_keeps_to_the_hosts_the_request_selected(system):
    s = system
    pkg = onboard(s)
    iid, _ = deploy(s, pkg["appDId"], deploymentType="CONTAINER",
                    selectedMECHostInfo=[{"hostId": {"id": "edge1"}},
                                         {"hostId": {"id": "edge3"}}])
    here = s.c.get(f"{INST}/{iid}")["hostId"]
    op = _relocate(s, iid)
    assert op["operationState"] == "COMPLETED", op
    assert s.c.get(f"{INST}/{iid}")["hostId"] == ({"edge1", "edge3"} - {here}).pop()
    # one selected host: no other to go to (a named host is the operator's
    # own choice: taken)
    iid2, _ = deploy(s, pkg["appDId"], deploymentType="CONTAINER",
                     selectedMECHostInfo=[{"hostId": {"id": "edge2"}}])
    err = _problem(s.c.post, f"{INST}/{iid2}/relocate", {})
    assert err.status == 409 and "request selected only edge2" in err.body["detail"]
    assert _relocate(s, iid2, hostId="edge1")["operationState"] == "COMPLETED"


def test_one_host_at_an_meo_or_a_single_node_has_no_other(tmp_path, env):  # noqa: F811
    with movable(tmp_path, ("edge1",)) as s:
        iid, rid = _deployed(s, "edge1")
        err = _problem(s.c.post, f"{INST}/{iid}/relocate", {})
        assert err.status == 409 and "no other edge host is registered" in err.body["detail"]
        _serving_on_source(s, iid, "edge1", rid)
    # the single node (role all) has one host and no relocation
    corelab.onboard(env)
    iid = corelab.create(env)["id"]
    assert corelab.instantiate(env, iid, deploymentType="CONTAINER")["operationState"] == \
        "COMPLETED"
    err = _problem(env.c.post, f"{INST}/{iid}/relocate", {})
    assert err.status == 409 and "no other host to relocate to" in err.body["detail"]
    assert _problem(env.c.post, f"{INST}/nope/relocate", {}).status == 404


@pytest.mark.parametrize("where", ["create", "export", "import", "instantiate",
                                   "source-terminate"])
def test_a_failure_at_any_step_leaves_it_serving_on_the_source(system, where):
    s = system
    iid, rid = _deployed(s, "edge1")
    if where == "create":
        s.mepms["edge2"].fail["create_instance"] = broken("target create refused")
    elif where == "export":
        def export_broke(handle, into):         # the source's driver fails its export
            raise broken("export broke")
        s.cims["edge1"].export_data = export_broke
    elif where == "import":
        s.mepms["edge2"].fail["import_data"] = broken("import broke")
    elif where == "instantiate":
        s.cims["edge2"].fail["deploy"] = broken("the target's image repository is away")
    else:
        # the source's runtime cannot be destroyed: its copy stays whole
        # (INSTANTIATED), so the target's goes and the source serves again
        s.cims["edge1"].fail["destroy"] = broken("the source's engine refused")
    op = _relocate(s, iid, hostId="edge2")
    assert op["operationState"] == "FAILED", op
    detail = op["error"]["detail"]
    assert detail.startswith("relocation rolled back (the app serves on edge host edge1 as "
                             "before, nothing left on edge2): "), detail
    assert {"create": "target create refused", "export": "export broke",
            "import": "import broke",
            "instantiate": "the target's image repository is away",
            "source-terminate": "the source's engine refused"}[where] in detail
    _serving_on_source(s, iid, "edge1", rid)
    steps = [st["step"] for st in s.meo.store.get("op_occs", op["id"])["_steps"]]
    assert "rollback" in steps and ("targetRemoved" in steps) == (where != "create")
    assert ("sourceTerminate" in steps) == (where == "source-terminate")
    # the source was started again after it was stopped (not for a
    # failure before the stop)
    assert ("sourceStarted" in steps) and (("sourceStart" in steps) == (where != "create"))
    # and it can be relocated once the cause is gone
    s.mepms["edge2"].fail.clear()
    vars(s.cims["edge1"]).pop("export_data", None)
    s.cims["edge1"].fail.clear()
    s.cims["edge2"].fail.clear()
    assert _relocate(s, iid, hostId="edge2")["operationState"] == "COMPLETED"


def test_a_second_relocate_or_op_while_one_runs_is_a_conflict(system):
    s = system
    iid, rid = _deployed(s, "edge1")
    gate = threading.Event()
    s.cims["edge2"].deploy_gate = gate
    op, _ = s.c.post(f"{INST}/{iid}/relocate", {"hostId": "edge2"})
    try:
        for path, body in (("relocate", {}), ("relocate", {"hostId": "edge3"}),
                           ("operate", {"changeStateTo": "STOPPED"}),
                           ("terminate", {"terminationType": "GRACEFUL"})):
            err = _problem(s.c.post, f"{INST}/{iid}/{path}", body)
            assert err.status == 409 and "operation in progress" in err.body["detail"], err.body
    finally:
        gate.set()
    assert s.c.wait_op(op, timeout=20)["operationState"] == "COMPLETED"
    assert s.c.get(f"{INST}/{iid}")["hostId"] == "edge2"


def test_a_stopped_instance_is_relocated_stopped(system):
    s = system
    iid, rid = _deployed(s, "edge1")
    stop = s.c.post(f"{INST}/{iid}/operate", {"changeStateTo": "STOPPED"})[0]
    assert s.c.wait_op(stop)["operationState"] == "COMPLETED"
    op = _relocate(s, iid, hostId="edge3")
    assert op["operationState"] == "COMPLETED", op
    view = s.c.get(f"{INST}/{iid}")
    assert view["hostId"] == "edge3"
    assert view["instantiatedAppState"]["operationalState"] == "STOPPED"
    remote = s.meo.store.get("instances", iid)["_hostInstance"]
    assert s.cims["edge3"].instances[remote["id"]]["state"] == "STOPPED"
    assert s.cims["edge3"].data[remote["id"]] == {"www": b"the app's file"}


def test_a_source_deletion_that_fails_after_the_move_is_owed(system):
    """Past the source's terminate there is no way back: the app serves on
    the target, the resource's deletion is owed to the source host."""
    s = system
    iid, rid = _deployed(s, "edge1")
    real = s.mepms["edge1"].delete_instance
    s.mepms["edge1"].delete_instance = lambda i: (_ for _ in ()).throw(broken("delete broke"))
    op = _relocate(s, iid, hostId="edge2")
    assert op["operationState"] == "COMPLETED", op
    view = s.c.get(f"{INST}/{iid}")
    assert view["hostId"] == "edge2" and view["relocatedFrom"][0]["sourceCopy"] == \
        "PENDING_REMOVAL"
    [task] = s.meo.store.list("host_tasks")
    assert task["hostId"] == "edge1" and task["appInstanceId"] == iid
    s.mepms["edge1"].delete_instance = real
    assert s.meo.replacer.check() == [f"removed the stale copy of instance {iid} from host edge1"]
    assert _copies(s, "edge1") == [] and not s.meo.store.list("host_tasks")
    assert s.c.get(f"{INST}/{iid}")["relocatedFrom"][0]["sourceCopy"] == "REMOVED"
    removal = [o for o in s.c.get(OPS) if o["appInstanceId"] == iid][-1]
    assert removal["lcmOperation"] == "TERMINATE" and removal["operationState"] == "COMPLETED"
    assert removal["decisionReason"] == (
        f"stale copy on edge host edge1 removed: the instance was relocated to edge2 (op "
        f"{op['id']}) and its copy here not deleted then")


def test_an_meo_restart_mid_relocation_resumes_it(system):
    s = system
    iid, rid = _deployed(s, "edge1")
    gate = threading.Event()
    s.cims["edge2"].deploy_gate = gate
    op, _ = s.c.post(f"{INST}/{iid}/relocate", {"hostId": "edge2"})
    deadline = time.monotonic() + 10
    while not any(st["step"] == "dispatched"
                  for st in s.meo.store.get("op_occs", op["id"])["_steps"]):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    # a second MEO on the same store (as after a crash): it follows the
    # relocation to its end from its journal, each step done once
    s.meo.lease.stop()
    meo2 = MeoOrchestrator(dict(s.meo.cfg))
    try:
        for hid in ("edge1", "edge2"):
            meo2.registry.attach(LocalMepm(s.hosts[hid], hid))
        gate.set()
        meo2.lcm.recover()
        deadline = time.monotonic() + 10
        while meo2.lcm.op(op["id"])["operationState"] == "PROCESSING":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert meo2.lcm.op(op["id"])["operationState"] == "COMPLETED"
        time.sleep(0.3)         # both MEOs' workers followed it: one move is recorded
        inst = meo2.lcm.get(iid)
        assert inst["hostId"] == "edge2" and len(inst["relocatedFrom"]) == 1
    finally:
        meo2.close()
    assert _copies(s, "edge1") == []
    assert [i["instantiationState"] for i in _copies(s, "edge2")] == \
        [InstantiationState.INSTANTIATED.value]


def test_the_cli_relocates(system, capsys):
    from mecorch import cli
    s = system
    iid, _ = _deployed(s, "edge1")
    rc = cli.main(["--api", s.c.base, "app", "relocate", iid[:8], "--host", "edge3",
               "--graceful-timeout", "2"])
    assert rc == 0, capsys.readouterr()
    out = capsys.readouterr().out
    assert f"{iid}: on edge3 (from edge1), STARTED" in out


def test_its_dns_name_and_rules_follow_and_the_oss_is_notified(system, notification_sink):
    """The AppD's rules (a DNS name, a traffic rule whose service address
    the host allocates): the target's MEP holds them after the move (the
    address allocated again from the target's range), the source's holds
    nothing; the OSS hears of the RELOCATE op as of any op."""
    s = system
    s.meo.subscriptions.start()
    s.c.post("/app_lcm/v1/subscriptions", {
        "subscriptionType": "AppLcmOpOccStateChange", "callbackUri": notification_sink.url,
        "appLcmOpOccSubscriptionFilter": {"operationTypes": "RELOCATE"}})
    pkg = onboard(s)
    appd = yaml.safe_load(corelab.CONTAINER_APPD.read_text())
    iid, op = deploy(s, pkg["appDId"], deploymentType="CONTAINER",
                     appTrafficRule=appd["appTrafficRule"], appDNSRule=appd["appDNSRule"])
    assert op["operationState"] == "COMPLETED", op
    before = s.c.get(f"/mec_app_support/v1/applications/{iid}/dns_rules")
    assert [r["domainName"] for r in before] == ["sample-http.mec.local"]
    src = s.meo.store.get("instances", iid)["_hostInstance"]
    op = _relocate(s, iid)
    assert op["operationState"] == "COMPLETED", op
    target = s.c.get(f"{INST}/{iid}")["hostId"]
    assert target != src["hostId"]
    after = s.c.get(f"/mec_app_support/v1/applications/{iid}/dns_rules")
    assert [r["domainName"] for r in after] == ["sample-http.mec.local"]
    traffic = s.c.get(f"/mec_app_support/v1/applications/{iid}/traffic_rules")
    assert [r["trafficRuleId"] for r in traffic] == ["sample-http-vip"]
    # the source's MEP holds nothing of it any more
    assert s.hosts[src["hostId"]].store.list("instances") == []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(
            n.get("notificationType") == "COMPLETED" for n in notification_sink.got):
        time.sleep(0.05)
    # (the filter took the RELOCATE op only, not the deploy's INSTANTIATE)
    got = [(n["appLcmOpOccId"], n["notificationType"]) for n in notification_sink.got]
    assert got == [(op["id"], "STARTING"), (op["id"], "PROCESSING"),
                   (op["id"], "COMPLETED")], notification_sink.got


def test_a_rollback_a_host_interrupts_goes_on_when_it_answers(system):
    """The source's link breaks in the middle of the export: the rollback
    removes the target's copy, cannot start the source again yet, and leaves
    the op PROCESSING; once the host answers, the pickup finishes it."""
    s = system
    iid, rid = _deployed(s, "edge1")

    def cut(*a):
        s.mepms["edge1"].down.set()
        raise BackendUnavailable("edge host 'edge1': link cut in the middle of the export")
    s.mepms["edge1"].export_data = cut
    op, _ = s.c.post(f"{INST}/{iid}/relocate", {"hostId": "edge2"})
    deadline = time.monotonic() + 10
    while not any(st["step"] == "rollbackWaits"
                  for st in s.meo.store.get("op_occs", op["id"])["_steps"]):
        assert time.monotonic() < deadline, s.meo.store.get("op_occs", op["id"])
        time.sleep(0.02)
    assert s.c.get(f"{OPS}/{op['id']}")["operationState"] == "PROCESSING"
    assert _copies(s, "edge2") == []                    # the target's part is done
    err = _problem(s.c.post, f"{INST}/{iid}/relocate", {"hostId": "edge3"})
    assert err.status == 409                            # the instance is still held
    del s.mepms["edge1"].export_data
    s.mepms["edge1"].down.clear()
    s.meo.lcm.tick()
    ended = s.c.wait_op(op, timeout=10)
    assert ended["operationState"] == "FAILED"
    assert ended["error"]["detail"].startswith("relocation rolled back (the app serves on "
                                               "edge host edge1 as before")
    assert "link cut in the middle of the export" in ended["error"]["detail"]
    _serving_on_source(s, iid, "edge1", rid)


def test_a_relocation_whose_target_was_deregistered_ends_at_the_meo_restart(system):
    """The MEO stops mid-relocation and comes back without the target host:
    its recovery rolls back as far as it can and says what it left."""
    s = system
    iid, rid = _deployed(s, "edge1")
    gate = threading.Event()
    s.cims["edge2"].deploy_gate = gate
    op, _ = s.c.post(f"{INST}/{iid}/relocate", {"hostId": "edge2"})
    deadline = time.monotonic() + 10
    while not any(st["step"] == "dispatched"
                  for st in s.meo.store.get("op_occs", op["id"])["_steps"]):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    s.meo.lease.stop()
    meo2 = MeoOrchestrator(dict(s.meo.cfg))
    try:
        meo2.registry.attach(LocalMepm(s.hosts["edge1"], "edge1"))     # no edge2
        meo2.lcm.recover()
        deadline = time.monotonic() + 10
        while meo2.lcm.op(op["id"])["operationState"] == "PROCESSING":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        ended = meo2.lcm.op(op["id"])
        assert ended["operationState"] == "FAILED"
        assert ended["error"]["detail"].startswith(
            "relocation failed and its rollback did not finish (its copy on edge2 not "
            "removed: the host is no longer registered): "), ended["error"]
        inst = meo2.lcm.get(iid)
        assert inst["hostId"] == "edge1" and "relocatedFrom" not in inst
        # the source serves again
        view = s.hosts["edge1"].lcm.view(s.hosts["edge1"].lcm.get(rid))
        assert view["instantiatedAppState"]["operationalState"] == "STARTED"
    finally:
        gate.set()
        meo2.close()


def test_the_hosts_view_decides_whether_it_runs(system):
    """Stopped at its host directly (the MEO's copy not caught up yet): it is
    relocated as it is, STOPPED, not started on the target."""
    s = system
    iid, rid = _deployed(s, "edge1")
    host_op = s.hosts["edge1"].lcm.operate(rid, {"changeStateTo": "STOPPED",
                                                 "stopType": "FORCEFUL"})
    corelab.until(lambda: s.hosts["edge1"].lcm.op(host_op["id"])["operationState"]
                  == "COMPLETED")
    assert s.meo.store.get("instances", iid)["instantiatedAppState"]["operationalState"] \
        == "STARTED"
    op = _relocate(s, iid, hostId="edge2")
    assert op["operationState"] == "COMPLETED", op
    remote = s.meo.store.get("instances", iid)["_hostInstance"]
    assert s.cims["edge2"].instances[remote["id"]]["state"] == "STOPPED"
    assert s.c.get(f"{INST}/{iid}")["instantiatedAppState"]["operationalState"] == "STOPPED"


def test_a_vm_is_relocated_the_same_way(tmp_path):
    """The flow does not depend on the manner: a VM app between two hosts
    with a VIM (the fake carries its volume as a container's)."""
    with movable(tmp_path, ("vm-a", "vm-b")) as s:
        pkg = onboard(s, corelab.VM_APPD, virtualStorageDescriptor=VOLUME)
        iid, op = deploy(s, pkg["appDId"], deploymentType="VM")
        assert op["operationState"] == "COMPLETED", op
        src = s.meo.store.get("instances", iid)["_hostInstance"]
        s.cims[src["hostId"]].data[src["id"]] = {"www": b"a disk's file"}
        op = _relocate(s, iid)
        assert op["operationState"] == "COMPLETED", op
        view = s.c.get(f"{INST}/{iid}")
        assert view["deploymentType"] == "VM" and view["hostId"] != src["hostId"]
        remote = s.meo.store.get("instances", iid)["_hostInstance"]
        assert s.cims[remote["hostId"]].data[remote["id"]] == {"www": b"a disk's file"}
        assert _copies(s, src["hostId"]) == []
