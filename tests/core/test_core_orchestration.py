"""The orchestration flows through the real REST API, with in-memory drivers
standing in for the backends: decision rules, package state rules, rollback,
op occurrences, capacity, recovery. (The drivers are proven on their real
backends in test_docker_cim, test_libvirt_vim and test_linux_mep; the whole
chain on real backends in test_e2e.)"""

from __future__ import annotations

import copy
import hashlib
import json
import threading
import time
from pathlib import Path

import pytest

from support.fakes import broken
from mecorch.kernel.states import DeploymentType, LcmOperation
from support.corelab import (  # noqa: F401
    CONTAINER_APPD, INST, PKGS, POD, TOSCA, VM_APPD, fake_docker_tar, create, env,
    instantiate, make_package, onboard, problem, terminate)


# ---------------------------------------------------------------- deploy flow
def test_container_deploy_and_terminate(env):
    pkg = onboard(env)
    assert pkg["onboardingState"] == "ONBOARDED" and pkg["deploymentType"] == "CONTAINER"
    assert env.cim.images, "the image went into the container image repository"
    inst = create(env)
    assert inst["instantiationState"] == "NOT_INSTANTIATED"
    op = instantiate(env, inst["id"])
    assert op["operationState"] == "COMPLETED" and op["lcmOperation"] == "INSTATIATE"
    info = env.c.get(f"{INST}/{inst['id']}")
    assert info["instantiationState"] == "INSTANTIATED"
    assert info["instantiatedAppState"] == {"operationalState": "STARTED"}
    assert info["deploymentType"] == "CONTAINER"
    assert info["allocatedResources"]["network"][0]["ip"].startswith("10.123.0.")
    target, traffic, dns = env.mep.applied[inst["id"]]
    assert target == info["allocatedResources"]["network"][0]["ip"]
    assert [r.dns_rule_id for r in dns] == ["sample-http-dns"]
    assert env.c.get(f"{PKGS}/{pkg['id']}")["usageState"] == "IN_USE"

    op = terminate(env, inst["id"])
    assert op["operationState"] == "COMPLETED"
    assert env.cim.instances == {} and env.mep.applied == {}
    assert env.c.get(f"{INST}/{inst['id']}")["instantiationState"] == "NOT_INSTANTIATED"
    assert env.c.get(f"{PKGS}/{pkg['id']}")["usageState"] == "NOT_IN_USE"


# ---------------------------------------------------------------- the decision
def test_manner_from_deployment_type_orchestration_info_and_onboarding(env):
    # two instances of each app on one host: no fixed service address, which
    # only one instance may steer (test_mep_* for that rule)
    onboard(env, appTrafficRule=[], appDNSRule=[])
    onboard(env, VM_APPD, appTrafficRule=[], appDNSRule=[])
    a = create(env)
    assert instantiate(env, a["id"], deploymentType="CONTAINER")["operationState"] == "COMPLETED"
    b = create(env)
    assert instantiate(env, b["id"], orchestrationInfo=POD)["operationState"] == "COMPLETED"
    v = create(env, "sample-vm")
    assert instantiate(env, v["id"], orchestrationInfo=TOSCA)["operationState"] == "COMPLETED"
    w = create(env, "sample-vm")
    assert instantiate(env, w["id"])["operationState"] == "COMPLETED"       # recorded
    assert len(env.cim.instances) == 2 and len(env.vim.instances) == 2
    plans = [o["_plan"]["decidedBy"] for o in env.orch.store.list("op_occs")]
    assert plans == ["deploymentType", "orchestrationInfo", "orchestrationInfo", "onboarding"]


def test_contradicting_signals_are_a_400_naming_them(env):
    onboard(env)
    inst = create(env)
    err = problem(env.c.post, f"{INST}/{inst['id']}/instantiate",
                  {"deploymentType": "VM", "orchestrationInfo": POD,
                   "selectedMECHostInfo": [{"hostId": {"id": "default"}}]})
    assert err.status == 400
    assert "deploymentType" in err.body["detail"] and "orchestrationInfo" in err.body["detail"]
    assert env.orch.store.list("op_occs") == [] and env.cim.calls == ["import_image"]


# ---------------------------------------------------------------- failures
@pytest.mark.parametrize("where", ["deploy", "rules"])
def test_failure_at_each_step_rolls_back(env, where):
    onboard(env)
    inst = create(env)
    if where == "deploy":
        env.cim.fail["deploy"] = broken("no room in the fake")
    else:
        env.mep.fail = broken("iptables said no")
    op = instantiate(env, inst["id"])
    assert op["operationState"] == "FAILED"
    assert op["error"]["status"] == 502 and op["error"]["detail"]
    assert env.cim.instances == {} and env.mep.applied == {}
    info = env.c.get(f"{INST}/{inst['id']}")
    assert info["instantiationState"] == "NOT_INSTANTIATED" and "allocatedResources" not in info


def test_capacity_refusal_changes_nothing(env):
    onboard(env)
    inst = create(env)
    err = problem(instantiate, env, inst["id"],
                  orchestrationInfo=POD.replace("memory: 64Mi", "memory: 64Gi"))
    assert err.status == 409 and "no edge host fits CONTAINER" in err.body["detail"] and "default: memory 65536 MB > 4096 MB free" in err.body["detail"]
    assert env.orch.store.list("op_occs") == [] and env.cim.instances == {}


def test_unknown_host_is_problem_details(env):
    onboard(env)
    inst = create(env)
    err = problem(instantiate, env, inst["id"], selectedMECHostInfo=[{"hostId": {"id": "nope"}}])
    assert err.status == 404 and "unknown edge host" in err.body["detail"]


def test_one_operation_at_a_time_per_instance(env):
    onboard(env)
    inst = create(env)
    env.cim.deploy_gate = threading.Event()
    op, _ = env.c.post(f"{INST}/{inst['id']}/instantiate",
                       {"selectedMECHostInfo": [{"hostId": {"id": "default"}}]})
    err = problem(env.c.post, f"{INST}/{inst['id']}/terminate", {"terminationType": "FORCEFUL"})
    assert err.status == 409
    env.cim.deploy_gate.set()
    assert env.c.wait_op(op, timeout=10)["operationState"] == "COMPLETED"


# ---------------------------------------------------------------- packages
def test_package_state_rules(env):
    pkg = onboard(env)
    url = f"{PKGS}/{pkg['id']}"
    assert problem(env.c.call, "DELETE", url).status == 409          # enabled
    assert problem(env.c.call, "PATCH", url, {"operationState": "ENABLED"}).status == 409
    inst = create(env)
    instantiate(env, inst["id"])
    env.c.call("PATCH", url, {"operationState": "DISABLED"})
    other = create  # a disabled package cannot be instantiated
    assert problem(other, env).status == 409
    assert env.c.call("DELETE", url)[0] == 202                       # pending: in use
    assert env.c.get(url)["deletionPending"] is True
    assert problem(env.c.call, "PATCH", url, {"operationState": "ENABLED"}).status == 409
    image = next(iter(env.cim.images))
    terminate(env, inst["id"])
    assert problem(env.c.get, url).status == 404                      # finished deleting
    assert image not in env.cim.images                                # image removed too
    assert not list((Path(env.orch.cfg["state_dir"]) / "packages").iterdir())


def test_tampered_package_is_refused_and_nothing_kept(env):
    zpath = make_package(env.tmp, CONTAINER_APPD, fake_docker_tar())
    good = hashlib.sha256(zpath.read_bytes()).hexdigest()
    body = {"appPkgName": "p", "appPkgVersion": "1", "appPkgPath": str(zpath),
            "checksum": {"algorithm": "SHA-256", "hash": "0" * 64}}
    assert problem(env.c.post, PKGS, body).status == 422
    data = bytearray(zpath.read_bytes())
    i = data.find(b"sample-http.mec.local")                          # inside the AppD
    data[i] = ord("S")
    zpath.write_bytes(bytes(data))
    body["checksum"]["hash"] = hashlib.sha256(bytes(data)).hexdigest()
    err = problem(env.c.post, PKGS, body)
    assert err.status in (400, 422), err.body
    assert good != body["checksum"]["hash"]
    assert env.c.get(PKGS) == [] and env.cim.images == {}
    assert env.orch.store.list("packages") == []
    assert not list((Path(env.orch.cfg["state_dir"]) / "packages").iterdir())


def test_failed_image_import_keeps_nothing(env):
    env.cim.fail["import_image"] = broken("registry down")
    assert problem(onboard, env).status == 502
    assert env.orch.store.list("packages") == [] and env.cim.images == {}


def test_duplicate_app_d_id_is_a_conflict(env):
    onboard(env)
    assert problem(onboard, env).status == 409
    assert len(env.c.get(PKGS)) == 1


def test_query_filter(env):
    onboard(env)
    onboard(env, VM_APPD)
    assert [p["appDId"] for p in env.c.get(PKGS + "?filter=(eq,appDId,sample-vm)")] == ["sample-vm"]
    assert len(env.c.get(PKGS + "?filter=(in,deploymentType,VM,CONTAINER)")) == 2
    assert problem(env.c.get, PKGS + "?filter=(bogus)").status == 400


# ---------------------------------------------------------------- termination notice
def test_graceful_termination_waits_for_confirm(env, notification_sink):
    onboard(env)
    inst = create(env)
    instantiate(env, inst["id"])
    app = f"/mec_app_support/v1/applications/{inst['id']}"
    sub, _ = env.c.post(f"{app}/subscriptions", {
        "subscriptionType": "AppTerminationNotificationSubscription",
        "callbackReference": notification_sink.url,
        "appInstanceId": inst["id"]})
    t0 = time.monotonic()
    op, _ = env.c.post(f"{INST}/{inst['id']}/terminate",
                       {"terminationType": "GRACEFUL", "gracefulTerminationTimeout": 30})
    got = notification_sink.wait()
    assert got and got[0]["notificationType"] == "AppTerminationNotification"
    assert got[0]["maxGracefulTimeout"] == 30
    env.c.post(f"{app}/confirm_termination", {"operationAction": "TERMINATING"})
    assert env.c.wait_op(op, timeout=10)["operationState"] == "COMPLETED"
    assert time.monotonic() - t0 < 10, "the confirm ended the wait early"
    steps = env.orch.store.get("op_occs", op["id"])["_steps"]
    assert {"step": "notified", "confirmed": True} in steps


def test_graceful_stop_tells_the_app_stopping(env, notification_sink):
    """An operate to STOPPED, GRACEFUL, gives the app its termination notice
    (operationAction STOPPING, MEC 011) within its graceful timeout, as a
    graceful terminate does (an MEO's relocation stops the app so)."""
    onboard(env)
    inst = create(env)
    instantiate(env, inst["id"])
    app = f"/mec_app_support/v1/applications/{inst['id']}"
    env.c.post(f"{app}/subscriptions", {
        "subscriptionType": "AppTerminationNotificationSubscription",
        "callbackReference": notification_sink.url, "appInstanceId": inst["id"]})
    t0 = time.monotonic()
    op, _ = env.c.post(f"{INST}/{inst['id']}/operate", {
        "changeStateTo": "STOPPED", "stopType": "GRACEFUL", "gracefulStopTimeout": 30})
    got = notification_sink.wait()
    assert got and got[0]["notificationType"] == "AppTerminationNotification"
    assert got[0]["operationAction"] == "STOPPING" and got[0]["maxGracefulTimeout"] == 30
    env.c.post(f"{app}/confirm_termination", {"operationAction": "STOPPING"})
    assert env.c.wait_op(op, timeout=10)["operationState"] == "COMPLETED"
    assert time.monotonic() - t0 < 10, "the confirm ended the wait early"
    assert {"step": "notified", "confirmed": True} in \
        env.orch.store.get("op_occs", op["id"])["_steps"]
    assert env.cim.instances[inst["id"]]["state"] == "STOPPED"
    # FORCEFUL: no notice
    start = env.c.post(f"{INST}/{inst['id']}/operate", {"changeStateTo": "STARTED"})[0]
    assert env.c.wait_op(start)["operationState"] == "COMPLETED"
    op, _ = env.c.post(f"{INST}/{inst['id']}/operate", {"changeStateTo": "STOPPED",
                                                         "stopType": "FORCEFUL"})
    assert env.c.wait_op(op, timeout=10)["operationState"] == "COMPLETED"
    assert len(notification_sink.got) == 1


def test_callbacks_only_to_allowed_networks(env):
    onboard(env)
    inst = create(env)
    err = problem(env.c.post, f"/mec_app_support/v1/applications/{inst['id']}/subscriptions", {
        "subscriptionType": "AppTerminationNotificationSubscription",
        "callbackReference": "http://192.0.2.1/x", "appInstanceId": inst["id"]})
    assert err.status == 400


# ---------------------------------------------------------------- Mp1 rules
def test_mp1_rule_update_reapplies_and_validates(env):
    onboard(env)
    inst = create(env)
    instantiate(env, inst["id"])
    url = f"/mec_app_support/v1/applications/{inst['id']}/dns_rules/sample-http-dns"
    status, rule, headers = env.c.call("GET", url)
    changed = dict(rule, state="INACTIVE")
    assert problem(env.c.call, "PUT", url, changed, {"If-Match": '"stale"'}).status == 412
    _, new, _ = env.c.call("PUT", url, changed, {"If-Match": headers["ETag"]})
    assert new["state"] == "INACTIVE"
    assert env.mep.applied[inst["id"]][2][0].state == "INACTIVE"
    bad = dict(rule, domainName="x.com\naddress=/evil/1.2.3.4")
    assert problem(env.c.call, "PUT", url, bad).status == 400
    assert problem(env.c.call, "GET", url.replace("sample-http-dns", "nope")).status == 404
    assert env.c.get(url)["state"] == "INACTIVE"


# ---------------------------------------------------------------- recovery
def test_recover_rolls_back_an_interrupted_instantiate(env):
    onboard(env)
    inst = create(env)
    orch = env.orch
    pkg = orch.packages.by_appd("sample-http")
    # what a crash right after the deploy call leaves: journal says deploy
    # began; the backend has the instance; no handle was recorded.
    op = orch.lcm.journal.start(inst["id"], LcmOperation.INSTANTIATE,
                                {"hostId": "default", "manner": "CONTAINER", "need": {}})
    orch.lcm.journal.step(op, "begin:deploy")
    from mecorch.spec import decision
    req = decision.resource_request(inst["id"], pkg["_appd"], DeploymentType.CONTAINER,
                                    pkg["_image"], {})
    env.cim.deploy(req)
    assert inst["id"] in env.cim.instances
    done = orch.recover()
    assert any("rolled back" in d for d in done)
    assert env.cim.instances == {}
    assert orch.store.get("op_occs", op["id"])["operationState"] == "FAILED"


def test_idempotent_create(env):
    onboard(env)
    a, _ = env.c.post(INST, {"appDId": "sample-http"}, {"Idempotency-Key": "k-1"})
    b, _ = env.c.post(INST, {"appDId": "sample-http"}, {"Idempotency-Key": "k-1"})
    assert a["id"] == b["id"] and len(env.c.get(INST)) == 1


def test_errors_are_problem_details(env):
    err = problem(env.c.get, "/app_lcm/v1/app_instances/nope")
    assert err.status == 404 and err.body["status"] == 404 and err.body["title"]
    assert problem(env.c.call, "PUT", PKGS, {}).status == 405
    assert problem(env.c.post, INST, "not an object").status == 400
    assert copy.deepcopy(err.body)["instance"] == "/app_lcm/v1/app_instances/nope"


def test_package_listing_is_paged(env):
    """NFV-SOL 013 paging: Link rel="next" while more remain; the pages
    together are the whole listing, filters apply across pages."""
    import urllib.parse
    orch = env.orch
    for i in range(7):
        doc = {"id": f"p{i}", "appDId": f"app{i}", "appName": "same" if i % 2 else "odd",
               "onboardingState": "ONBOARDED", "operationalState": "ENABLED",
               "usageState": "NOT_IN_USE"}
        orch.store.put("packages", doc["id"], doc)
    got, pages = [], 0
    for expr in (None, "(eq,appName,same)"):
        ids, marker = [], None
        while True:
            texts, marker = orch.packages.list_page(expr, marker, 2)
            items = [json.loads(t) for t in texts]      # the views as stored
            ids += [p["id"] for p in items]
            pages += 1
            assert len(items) <= 2
            if marker is None:
                break
        got.append(ids)
    assert got[0] == [f"p{i}" for i in range(7)]
    assert got[1] == ["p1", "p3", "p5"]
    # through the API with the configured page size: one page, no Link
    status, body, headers = env.c.call("GET", PKGS)
    assert len(body) == 7 and "Link" not in headers
    # the client follows Link headers
    assert len(env.c.get_all(PKGS + "?filter=" + urllib.parse.quote("(eq,appName,same)"))) == 3
    assert problem(env.c.get, PKGS + "?nextpage_opaque_marker=-1").status == 400
    assert problem(env.c.get, PKGS + "?nextpage_opaque_marker=" + "9" * 30).status == 400


def test_orphan_listed_before_a_delete_ended_is_not_reported(env):
    """The reconciler lists the backend, then looks at each instance: one
    that a terminate + delete removed in between is not an orphan (no
    destroy, no recovery line); one still on the backend is removed."""
    from mecorch.driverapi.model import Observation
    from mecorch.kernel.states import ObservedState
    rec, host = env.orch.reconciler, env.orch.inventory.get("default")
    stale = Observation("gone-meanwhile", ObservedState.RUNNING, {"id": "gone-meanwhile"})
    env.cim.calls.clear()
    assert rec._one_observed(host, DeploymentType.CONTAINER, "gone-meanwhile", [stale]) == []
    assert "destroy" not in env.cim.calls
    env.cim.instances["left-behind"] = {"state": ObservedState.RUNNING, "ip": "10.123.0.9"}
    live = Observation("left-behind", ObservedState.RUNNING, {"id": "left-behind"})
    done = rec._one_observed(host, DeploymentType.CONTAINER, "left-behind", [live])
    assert done == ["removed orphaned CONTAINER objects of instance left-behind on host default"]
    assert "left-behind" not in env.cim.instances
