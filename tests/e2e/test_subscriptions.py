"""Northbound subscriptions (MEC 010-2 app_pkgm and app_lcm) and their
delivery, with real HTTP callback receivers on loopback.

- Core: the real API server and orchestrator with in-memory drivers
  (tests/support/fakes.py): every notification type, filters, duplicates (303),
  authentication, callback networks, a receiver down then back, one that
  never answers, one that keeps failing (reported, then dropped), restart.
- Real backends: an OSS-style client against a `mecorch serve` process with
  its own docker network, chains and dnsmasq port: subscribes, onboards by
  create + PUT only, deploys, operates, terminates, fails an instantiation,
  deletes the package, restarts mecorch; every notification arrives, in
  order, valid against the ETSI schema.
"""

from __future__ import annotations

import base64
import json
import shutil
import time
from pathlib import Path

import pytest
import yaml

from support.fakes import broken
from mecorch.kernel.client import ApiError, Client
from support import lab as thelab
from support.corelab import INST, PKGS
from support.etsischema import LCM_FILE, PKGM_FILE, errors_of, etsi_validator
from support.receiver import Receiver
from support.uploadlab import Lab, zip_package

PKG_SUBS, LCM_SUBS = "/app_pkgm/v1/subscriptions", "/app_lcm/v1/subscriptions"
HOST = [{"hostId": {"id": "default"}}]
SCHEMA = {"AppPackageOnBoarded": (PKGM_FILE, "AppPkgNotification"),
          "AppPacakgeEnabled": (PKGM_FILE, "AppPkgNotification"),
          "AppPacakgeDisabled": (PKGM_FILE, "AppPkgNotification"),
          "AppPackageDeleted": (PKGM_FILE, "AppPkgNotification"),
          "NOT_INSTANTIATED": (LCM_FILE, "AppInstNotification"),
          "STARTED": (LCM_FILE, "AppInstNotification"),
          "STOPPED": (LCM_FILE, "AppInstNotification")}
OP_SCHEMA = (LCM_FILE, "AppLcmOpOccNotification")


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def lab(tmp_path):
    lab = Lab(tmp_path)
    lab.orch.subscriptions.notifier.timeout_s = 1.0
    lab.orch.subscriptions.start()
    yield lab
    lab.stop()


def subscribe_all(c: Client, url: str, **extra) -> dict[str, str]:
    """One subscription of every type; {name: subscription id}."""
    ids = {}
    for stype in ("AppPackageOnBoarding", "AppPacakgeOperationChange", "AppPackageDeletion"):
        sub, _ = c.post(PKG_SUBS, {"subsctiptionType": stype, "callbackUri": url, **extra})
        ids[stype] = sub["id"]
    for state in ("NOT_INSTANTIATED", "STARTED", "STOPPED"):
        sub, _ = c.post(LCM_SUBS, {"subscriptionType": "AppInstanceStateChange",
                                   "callbackUri": url, "appInstanceState": state, **extra})
        ids[state] = sub["id"]
    sub, _ = c.post(LCM_SUBS, {"subscriptionType": "AppLcmOpOccStateChange",
                               "callbackUri": url, **extra})
    ids["op"] = sub["id"]
    return ids


def check_bodies(bodies: list[dict]) -> None:
    """Each notification valid against its ETSI schema."""
    for b in bodies:
        schema = SCHEMA.get(b["notificationType"]) if "appLcmOpOccId" not in b else OP_SCHEMA
        assert errors_of(etsi_validator(*schema), b) == [], b


def events(bodies: list[dict]) -> list[str]:
    """What happened, one word per notification, in arrival order."""
    out = []
    for b in bodies:
        if "appLcmOpOccId" in b:
            out.append(f"op:{b['notificationType']}")
        else:
            out.append(b["notificationType"])
    return out


def lifecycle(c: Client, zpath: Path, body: dict, fail_deploy) -> tuple[dict, list[str]]:
    """Onboard (create + PUT), disable, enable, instantiate, stop, start,
    terminate, a failed instantiation, delete the instance, disable and
    delete the package. The notifications expected, in order."""
    pkg = c.upload_package(body, zpath)
    c.call("PATCH", f"{PKGS}/{pkg['id']}", {"operationState": "DISABLED"})
    c.call("PATCH", f"{PKGS}/{pkg['id']}", {"operationState": "ENABLED"})
    inst, _ = c.post(INST, {"appDId": pkg["appDId"]})
    op, _ = c.post(f"{INST}/{inst['id']}/instantiate", {"selectedMECHostInfo": HOST})
    assert c.wait_op(op, timeout=300)["operationState"] == "COMPLETED"
    for to in ("STOPPED", "STARTED"):
        op, _ = c.post(f"{INST}/{inst['id']}/operate", {"changeStateTo": to})
        assert c.wait_op(op, timeout=120)["operationState"] == "COMPLETED"
    op, _ = c.post(f"{INST}/{inst['id']}/terminate", {"terminationType": "FORCEFUL"})
    assert c.wait_op(op, timeout=120)["operationState"] == "COMPLETED"
    op = fail_deploy(inst)
    assert c.wait_op(op, timeout=120)["operationState"] == "FAILED"
    c.call("DELETE", f"{INST}/{inst['id']}")
    c.call("PATCH", f"{PKGS}/{pkg['id']}", {"operationState": "DISABLED"})
    assert c.call("DELETE", f"{PKGS}/{pkg['id']}")[0] == 204
    op_ok = ["op:STARTING", "op:PROCESSING", "op:COMPLETED"]
    expected = (["AppPackageOnBoarded", "AppPacakgeDisabled", "AppPacakgeEnabled"]
                + op_ok[:2] + ["STARTED", "op:COMPLETED"]
                + op_ok[:2] + ["STOPPED", "op:COMPLETED"]
                + op_ok[:2] + ["STARTED", "op:COMPLETED"]
                + op_ok[:2] + ["NOT_INSTANTIATED", "op:COMPLETED"]
                + ["op:STARTING", "op:PROCESSING", "op:FAILED"]
                + ["AppPacakgeDisabled", "AppPackageDeleted"])
    return pkg, expected


def _fake_failure(lab):
    def fail(inst):
        lab.cim.fail["deploy"] = broken("injected")
        try:
            op, _ = lab.c.post(f"{INST}/{inst['id']}/instantiate", {"selectedMECHostInfo": HOST})
            lab.c.wait_op(op, timeout=10)
        finally:
            lab.cim.fail.clear()
        return op
    return fail


def _package(lab) -> tuple[Path, dict]:
    data, body = zip_package(lab)
    zpath = lab.tmp / "oss.zip"
    zpath.write_bytes(data)
    return zpath, body


# ---------------------------------------------------------------- core
def test_every_notification_type_in_order(lab, receiver):
    ids = subscribe_all(lab.c, receiver.url)
    zpath, body = _package(lab)
    pkg, expected = lifecycle(lab.c, zpath, body, _fake_failure(lab))
    got = receiver.wait_for(len(expected))
    time.sleep(0.3)                                   # nothing more comes
    assert events(receiver.bodies()) == expected
    check_bodies(got)
    # the links of each notification, and its subscription
    by_type = {v: k for k, v in ids.items()}
    for b in got:
        sub = by_type[b["subscriptionId"]]
        assert b["_links"]["subscription"]["href"].endswith(b["subscriptionId"])
        if "appLcmOpOccId" in b:
            assert sub == "op"
            assert b["_links"]["appLcmOpOcc"]["href"].endswith(b["appLcmOpOccId"])
            assert b["_links"]["appInstance"]["href"].endswith(b["appInstanceId"])
        elif b["notificationType"] in SCHEMA and "appPkgId" in b and "appInstanceId" not in b:
            assert b["appPkgId"] == pkg["id"] and b["appDId"] == "sample-http"
        else:
            assert sub == b["notificationType"]
    assert lab.orch.subscriptions.notifier.pending() == 0


def test_filters_select_what_is_notified(lab, receiver):
    c = lab.c
    c.post(PKG_SUBS, {"subsctiptionType": "AppPackageOnBoarding", "callbackUri": receiver.url,
                      "appPkgFilter": ["(eq,appDId,other-app)"]})
    c.post(PKG_SUBS, {"subsctiptionType": "AppPacakgeOperationChange",
                      "callbackUri": receiver.url,
                      "appPkgFilter": ["(eq,appDId,other-app)", "(eq,appName,sample-http)"]})
    c.post(LCM_SUBS, {"subscriptionType": "AppInstanceStateChange", "callbackUri": receiver.url,
                      "appInstanceState": "STARTED",
                      "appInstanceSubscriptionFilter": {"appInstSelectorType": "APP_NAME",
                                                        "appInstances": ["nope"]}})
    c.post(LCM_SUBS, {"subscriptionType": "AppInstanceStateChange", "callbackUri": receiver.url,
                      "appInstanceState": "STARTED",
                      "appInstanceSubscriptionFilter": {
                          "appInstSelectorType": "APP_FROM_PROVIDER",
                          "appsFromProviders": [{"appProvider": "mecorch",
                                                 "appProducts": {"appName": "sample-http"}}]}})
    c.post(LCM_SUBS, {"subscriptionType": "AppLcmOpOccStateChange", "callbackUri": receiver.url,
                      "appLcmOpOccSubscriptionFilter": {"operationStates": ["COMPLETED"],
                                                        "operationTypes": "INSTANTIATE"}})
    zpath, body = _package(lab)
    pkg = c.upload_package(body, zpath)
    provider = pkg.get("appProvider")
    c.call("PATCH", f"{PKGS}/{pkg['id']}", {"operationState": "DISABLED"})
    c.call("PATCH", f"{PKGS}/{pkg['id']}", {"operationState": "ENABLED"})
    inst, _ = c.post(INST, {"appDId": "sample-http"})
    op, _ = c.post(f"{INST}/{inst['id']}/instantiate", {"selectedMECHostInfo": HOST})
    c.wait_op(op, timeout=10)
    op, _ = c.post(f"{INST}/{inst['id']}/operate", {"changeStateTo": "STOPPED"})
    c.wait_op(op, timeout=10)
    expected = ["AppPacakgeDisabled", "AppPacakgeEnabled"]
    if provider == "mecorch":
        expected.append("STARTED")
    expected.append("op:COMPLETED")
    receiver.wait_for(len(expected))
    time.sleep(0.3)
    assert events(receiver.bodies()) == expected
    check_bodies(receiver.bodies())


@pytest.mark.parametrize("body, field", [
    ({"subsctiptionType": "AppPackageOnBoarding", "callbackUri": "http://192.0.2.1/x"},
     "callbackUri"),
    ({"subsctiptionType": "AppPackageOnBoarding", "callbackUri": "http://u:p@127.0.0.1/x"},
     "credentials"),
    ({"subsctiptionType": "AppPackageOnBoarding", "callbackUri": "http://example.com/x"},
     "IP address"),
    ({"subsctiptionType": "AppPackageOnBoarding", "callbackUri": "ftp://127.0.0.1/x"},
     "http(s)"),
    ({"subsctiptionType": "AppPackageOnBoarding"}, "callbackUri"),
    ({"subsctiptionType": "Nope", "callbackUri": "http://127.0.0.1/x"}, "subsctiptionType"),
    ({"subsctiptionType": "AppPackageOnBoarding", "callbackUri": "http://127.0.0.1/x",
      "bogus": 1}, "bogus"),
    ({"subsctiptionType": "AppPackageOnBoarding", "callbackUri": "http://127.0.0.1/x",
      "appPkgFilter": ["(eq,nosuch,1)"]}, "nosuch"),
    ({"subsctiptionType": "AppPackageOnBoarding", "callbackUri": "http://127.0.0.1/x",
      "authentication": {"authType": ["OAUTH2_CLIENT_CREDENTIALS"]}}, "not supported"),
    ({"subsctiptionType": "AppPackageOnBoarding", "callbackUri": "http://127.0.0.1/x",
      "authentication": {"authType": ["BASIC"], "paramsBasic": {"userName": "a"}}},
     "paramsBasic"),
])
def test_bad_pkgm_subscriptions_name_the_field(lab, body, field):
    with pytest.raises(ApiError) as e:
        lab.c.post(PKG_SUBS, body)
    assert e.value.status == 400 and field in e.value.body["detail"], e.value.body


@pytest.mark.parametrize("body, field", [
    # absent is all states (ETSI); a value that is no state is refused
    ({"subscriptionType": "AppInstanceStateChange", "callbackUri": "http://127.0.0.1/x",
      "appInstanceState": "RUNNING"}, "appInstanceState"),
    ({"subscriptionType": "AppInstanceStateChange", "callbackUri": "http://127.0.0.1/x",
      "appInstanceState": "STARTED", "appInstanceSubscriptionFilter": {
          "appInstSelectorType": "APP_D_ID"}}, "appInstances"),
    ({"subscriptionType": "AppInstanceStateChange", "callbackUri": "http://127.0.0.1/x",
      "appInstanceState": "STARTED", "appInstanceSubscriptionFilter": {
          "appInstSelectorType": "SOME"}}, "appInstSelectorType"),
    ({"subscriptionType": "AppLcmOpOccStateChange", "callbackUri": "http://127.0.0.1/x",
      "appLcmOpOccSubscriptionFilter": {"operationStates": "DONE"}}, "operationStates"),
    ({"subscriptionType": "AppLcmOpOccStateChange", "callbackUri": "http://127.0.0.1/x",
      "appLcmOpOccSubscriptionFilter": {"operationTypes": ["INSTATIATE"]}}, "operationTypes"),
    ({"subscriptionType": "AppLcmOpOccStateChange", "callbackUri": "http://10.0.0.1/x"},
     "callback networks"),
    ({"subscriptionType": "Other", "callbackUri": "http://127.0.0.1/x"}, "subscriptionType"),
])
def test_bad_lcm_subscriptions_name_the_field(lab, body, field):
    with pytest.raises(ApiError) as e:
        lab.c.post(LCM_SUBS, body)
    assert e.value.status == 400 and field in e.value.body["detail"], e.value.body


def test_duplicate_is_303_to_the_existing_one(lab, receiver):
    import http.client
    body = {"subscriptionType": "AppInstanceStateChange", "callbackUri": receiver.url,
            "appInstanceState": "STOPPED"}
    first, _ = lab.c.post(LCM_SUBS, body)
    for extra in ({}, {"authentication": {"authType": ["BEARER"],
                                          "paramsBearer": {"token": "t0ken"}}}):
        conn = http.client.HTTPConnection("127.0.0.1", lab.port, timeout=10)
        conn.request("POST", LCM_SUBS, body=json.dumps({**body, **extra}),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 303
        assert resp.headers["Location"] == first["_links"]["self"]["href"]
        conn.close()
    # another state is another subscription
    other, _ = lab.c.post(LCM_SUBS, dict(body, appInstanceState="STARTED"))
    assert other["id"] != first["id"]
    assert len(lab.c.get(LCM_SUBS)["_links"]["subscriptions"]) == 2


def test_callback_authentication(lab, receiver):
    lab.c.post(PKG_SUBS, {"subsctiptionType": "AppPackageOnBoarding",
                          "callbackUri": receiver.url,
                          "authentication": {"authType": ["BASIC"], "paramsBasic": {
                              "userName": "oss", "password": "s3cret"}}})
    sub, _ = lab.c.post(LCM_SUBS, {"subscriptionType": "AppLcmOpOccStateChange",
                                   "callbackUri": receiver.url,
                                   "authentication": {"authType": ["BEARER"],
                                                      "paramsBearer": {"token": "abc.def"}}})
    assert "authentication" not in sub and "_auth" not in sub         # never shown back
    assert "s3cret" not in json.dumps(lab.c.get(PKG_SUBS))
    zpath, body = _package(lab)
    pkg = lab.c.upload_package(body, zpath)
    inst, _ = lab.c.post(INST, {"appDId": pkg["appDId"]})
    op, _ = lab.c.post(f"{INST}/{inst['id']}/instantiate", {"selectedMECHostInfo": HOST})
    lab.c.wait_op(op, timeout=10)
    receiver.wait_for(4)
    auth = [(h.get("Authorization"), b["notificationType"]) for h, b in receiver.got]
    assert auth[0] == ("Basic " + base64.b64encode(b"oss:s3cret").decode(),
                       "AppPackageOnBoarded")
    assert {a for a, _ in auth[1:]} == {"Bearer abc.def"}


def test_receiver_down_then_back_gets_everything_in_order(lab, receiver):
    subscribe_all(lab.c, receiver.url)
    receiver.stop()                                    # connection refused from now on
    zpath, body = _package(lab)
    _, expected = lifecycle(lab.c, zpath, body, _fake_failure(lab))
    time.sleep(1.5)                                    # a few failed tries
    assert receiver.bodies() == []
    links = lab.c.get(PKG_SUBS)["_links"]["subscriptions"]
    infos = [lab.c.get(s["href"]) for s in links]
    assert any("deliveryFailure" in i for i in infos), infos      # reported while down
    receiver.start()
    receiver.wait_for(len(expected), timeout_s=30)
    time.sleep(0.3)
    assert events(receiver.bodies()) == expected
    check_bodies(receiver.bodies())
    assert all("deliveryFailure" not in lab.c.get(s["href"]) for s in links)


def test_failing_callback_is_reported_then_dropped(lab, caplog):
    bad = Receiver("fail")
    good = Receiver()
    try:
        lab.orch.subscriptions.notifier.retry_s = 1.5
        doomed, _ = lab.c.post(PKG_SUBS, {"subsctiptionType": "AppPackageOnBoarding",
                                          "callbackUri": bad.url})
        lab.c.post(PKG_SUBS, {"subsctiptionType": "AppPackageOnBoarding",
                              "callbackUri": good.url})
        zpath, body = _package(lab)
        with caplog.at_level("WARNING", logger="mecorch.notify"):
            lab.c.upload_package(body, zpath)
            assert [b["notificationType"] for b in good.wait_for(1)] == ["AppPackageOnBoarded"]
            seen_failure = None
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    info = lab.c.get(doomed["_links"]["self"]["href"])
                except ApiError as e:
                    assert e.status == 404
                    break
                seen_failure = info.get("deliveryFailure") or seen_failure
                time.sleep(0.05)
            else:
                raise AssertionError("the failing subscription was not dropped")
        assert seen_failure and seen_failure["lastError"] == "HTTP 500"
        assert seen_failure["attempts"] >= 1
        assert any("kept failing" in r.getMessage() and doomed["id"] in r.getMessage()
                   for r in caplog.records)
        assert lab.orch.subscriptions.notifier.pending() == 0
        assert len(lab.c.get(PKG_SUBS)["_links"]["subscriptions"]) == 1
    finally:
        bad.close()
        good.close()


def test_receiver_that_never_answers_slows_no_operation(lab, receiver):
    """While the sender is stuck in a POST to a receiver that never answers,
    operations run to their end: they never wait on delivery."""
    hang = Receiver("hang")
    try:
        lab.orch.subscriptions.notifier.timeout_s = 30       # held for the whole test
        subscribe_all(lab.c, hang.url)
        zpath, body = _package(lab)
        pkg = lab.c.upload_package(body, zpath)
        assert hang.hanging.wait(10)                     # the sender is stuck now
        inst, _ = lab.c.post(INST, {"appDId": pkg["appDId"]})
        op, _ = lab.c.post(f"{INST}/{inst['id']}/instantiate", {"selectedMECHostInfo": HOST})
        assert lab.c.wait_op(op, timeout=10)["operationState"] == "COMPLETED"
        op, _ = lab.c.post(f"{INST}/{inst['id']}/terminate", {"terminationType": "FORCEFUL"})
        assert lab.c.wait_op(op, timeout=10)["operationState"] == "COMPLETED"
        assert lab.orch.subscriptions.notifier.pending() == 9    # all kept for later
    finally:
        hang.close()


def test_subscriptions_and_pending_notifications_survive_restart(tmp_path, receiver):
    lab = Lab(tmp_path)
    try:
        ids = subscribe_all(lab.c, receiver.url)
        receiver.stop()
        zpath, body = _package(lab)
        lab.c.upload_package(body, zpath)                 # not delivered: receiver down
        lab.restart()                                     # the sender was never started
        assert {s["href"].rsplit("/", 1)[1] for s in
                lab.c.get(PKG_SUBS)["_links"]["subscriptions"]
                + lab.c.get(LCM_SUBS)["_links"]["subscriptions"]} == set(ids.values())
        receiver.start()
        lab.orch.subscriptions.start()
        assert events(receiver.wait_for(1)) == ["AppPackageOnBoarded"]
        # and the restarted one notifies as before (its fake image
        # repository is new and empty: no deployment here)
        (pkg,) = lab.c.get(PKGS)
        lab.c.call("PATCH", f"{PKGS}/{pkg['id']}", {"operationState": "DISABLED"})
        receiver.wait_for(2)
        time.sleep(0.3)
        assert events(receiver.bodies()) == ["AppPackageOnBoarded", "AppPacakgeDisabled"]
    finally:
        lab.stop()


def test_deleted_subscription_gets_nothing_more(lab, receiver):
    receiver.stop()
    sub, _ = lab.c.post(PKG_SUBS, {"subsctiptionType": "AppPackageOnBoarding",
                                   "callbackUri": receiver.url})
    zpath, body = _package(lab)
    lab.c.upload_package(body, zpath)
    assert lab.c.call("DELETE", sub["_links"]["self"]["href"])[0] == 204
    assert lab.orch.subscriptions.notifier.pending() == 0
    receiver.start()
    time.sleep(0.5)
    assert receiver.bodies() == []


# ---------------------------------------------------------------- real backends
def _real_lab() -> tuple[Path, dict, thelab.Serve]:
    """A `mecorch serve` of the one lab (tests/support/lab.py) with names of
    its own (host id, docker network, chains, dnsmasq port, API port) and no
    VMs; restartable on the same state."""
    tmp = thelab.private_dir("subs")
    # a host id of its own: mecorch holds a lease on each host id
    host = thelab.host_config(thelab.Names("sub"), vms=False)
    cfg = thelab.lab_config(tmp, [host], api={"notify_timeout_s": 2, "notify_retry_s": 120})
    return tmp, host, thelab.Serve(cfg, tmp)


def _end_real_lab(tmp: Path, host: dict, serve: thelab.Serve) -> list[str]:
    """Everything through the API, then the server, then the host: what the
    backends still held for it before the forced removal ([] when clean)."""
    try:
        if not serve.alive:
            serve.start()
        thelab.clear(serve.client)
    except Exception:  # noqa: BLE001 - cleanup goes on; leftovers say what stayed
        pass
    serve.stop()
    left = thelab.leftovers(host)
    thelab.remove_host(host, serve.config["state_dir"], serve.config["run_dir"])
    shutil.rmtree(tmp, ignore_errors=True)
    return left


@pytest.mark.docker
@pytest.mark.mep
def test_oss_on_real_backends(sample_container):
    """An OSS-style client: subscribes, onboards by create + PUT of the zip
    only, deploys, operates, terminates, fails an instantiation (a command
    the image does not have: the real container fails to start), deletes;
    its receiver is down for a while in the middle and mecorch restarts in
    between: every notification arrives once, in order, ETSI-valid."""
    from mecorch.package import build_package
    receiver = Receiver()
    tmp, host_cfg, lab = _real_lab()
    host = [{"hostId": {"id": host_cfg["id"]}}]
    try:
        lab.start()
        c = lab.client
        subscribe_all(c, receiver.url)
        repo = Path(__file__).resolve().parents[2]
        zpath = build_package(repo / "examples/sample-container-app", tmp / "pkg.zip")
        body = {"appPkgName": "oss-sample", "appPkgVersion": "1.0"}
        pod = yaml.safe_load((repo / "examples/orchestration/container-pod.yaml").read_text())
        pod["spec"]["containers"][0]["command"] = ["/no/such/program"]

        def fail(inst):
            op, _ = c.post(f"{INST}/{inst['id']}/instantiate",
                           {"selectedMECHostInfo": host, "orchestrationInfo": yaml.safe_dump(pod)})
            return op

        # the receiver goes away after the first notifications and mecorch
        # restarts while it is away; it comes back at the end
        pkg = c.upload_package(body, zpath)
        assert pkg["onboardingState"] == "ONBOARDED"
        assert events(receiver.wait_for(1)) == ["AppPackageOnBoarded"]
        receiver.stop()
        lab.stop()
        lab.start()
        assert len(c.get(LCM_SUBS)["_links"]["subscriptions"]) == 4     # survived
        # the rest of the lifecycle on the restarted mecorch
        c.call("PATCH", f"{PKGS}/{pkg['id']}", {"operationState": "DISABLED"})
        c.call("PATCH", f"{PKGS}/{pkg['id']}", {"operationState": "ENABLED"})
        inst, _ = c.post(INST, {"appDId": pkg["appDId"]})
        op, _ = c.post(f"{INST}/{inst['id']}/instantiate", {"selectedMECHostInfo": host})
        assert c.wait_op(op, timeout=300)["operationState"] == "COMPLETED"
        for to in ("STOPPED", "STARTED"):
            op, _ = c.post(f"{INST}/{inst['id']}/operate", {"changeStateTo": to})
            assert c.wait_op(op, timeout=120)["operationState"] == "COMPLETED"
        op, _ = c.post(f"{INST}/{inst['id']}/terminate", {"terminationType": "FORCEFUL"})
        assert c.wait_op(op, timeout=120)["operationState"] == "COMPLETED"
        failed = c.wait_op(fail(inst), timeout=120)
        assert failed["operationState"] == "FAILED", failed
        c.call("DELETE", f"{INST}/{inst['id']}")
        c.call("PATCH", f"{PKGS}/{pkg['id']}", {"operationState": "DISABLED"})
        assert c.call("DELETE", f"{PKGS}/{pkg['id']}")[0] == 204
        receiver.start()
        op_ok = ["op:STARTING", "op:PROCESSING"]
        expected = (["AppPackageOnBoarded", "AppPacakgeDisabled", "AppPacakgeEnabled"]
                    + op_ok + ["STARTED", "op:COMPLETED"]
                    + op_ok + ["STOPPED", "op:COMPLETED"]
                    + op_ok + ["STARTED", "op:COMPLETED"]
                    + op_ok + ["NOT_INSTANTIATED", "op:COMPLETED"]
                    + op_ok + ["op:FAILED", "AppPacakgeDisabled", "AppPackageDeleted"])
        receiver.wait_for(len(expected), timeout_s=60)
        time.sleep(0.5)
        assert events(receiver.bodies()) == expected, lab.log_tail(3000)
        check_bodies(receiver.bodies())
        assert len({b["id"] for b in receiver.bodies()}) == len(expected)   # each once
    finally:
        receiver.close()
        left = _end_real_lab(tmp, host_cfg, lab)
    assert left == [], left
