"""The MEO over several edge hosts, with each host an in-process MEPM
(LocalMepm: the host-level Orchestrator) on in-memory drivers: placement
across hosts, the 409 naming each host, an explicit host, a host that
stops answering (UNREACHABLE, nothing placed there, its op finished on
its return), package copies on first use. The same flows over HTTP on the
real backends are in test_meo_e2e.py."""

from __future__ import annotations

import json
import threading
import time

import pytest

from mecorch.api import make_server
from mecorch.kernel.client import ApiError, Client
from mecorch.meo.orchestrator import MeoOrchestrator
from mecorch.mepm.local import LocalMepm
from mecorch.kernel.states import DeploymentType
from support.corelab import CONTAINER_APPD, VM_APPD
from support.meolab import (  # noqa: F401
    INST, PKGS, deploy, host, onboard, system)

HOSTS = "/mecorch/v1/hosts"


def test_placement_across_hosts_and_first_use_copies(system):
    s = system
    pkg = onboard(s)
    vm_pkg = onboard(s, VM_APPD)
    # the MEO keeps the package; no host has it before an instance goes there
    assert all(not o.packages.list() for o in s.hosts.values())
    placed = []
    for _ in range(4):
        iid, op = deploy(s, pkg["appDId"], deploymentType="CONTAINER")
        assert op["operationState"] == "COMPLETED", op
        placed.append(s.c.get(f"{INST}/{iid}")["hostId"])
    # edge1 has 1 core (4 vCPU), edge2/3 2 cores: most free share first
    assert set(placed) == {"edge1", "edge2", "edge3"}, placed
    for iid_host in placed:
        assert s.hosts[iid_host].packages.by_appd(pkg["appDId"])
    for _ in range(2):
        iid, op = deploy(s, vm_pkg["appDId"], deploymentType="VM")
        assert op["operationState"] == "COMPLETED", op
        assert s.c.get(f"{INST}/{iid}")["hostId"] in ("edge2", "edge3")
    # every MEO instance is exactly one host instance
    meo_ids = {i["id"] for i in s.c.get(INST)}
    host_insts = [i for o in s.hosts.values() for i in o.lcm.list()
                  if i["instantiationState"] == "INSTANTIATED"]
    assert len(host_insts) == len(meo_ids) == 6


def test_no_host_fits_names_each_host(system):
    s = system
    vm_pkg = onboard(s, VM_APPD)
    inst = s.c.post(INST, {"appDId": vm_pkg["appDId"]})[0]
    with pytest.raises(ApiError) as e:
        s.c.post(f"{INST}/{inst['id']}/instantiate", {
            "deploymentType": "VM",
            "virtualComputeDescriptor": {"virtualCpu": {"numVirtualCpu": 64},
                                         "virtualMemory": {"virtualMemSize": 512}}})
    assert e.value.status == 409
    d = e.value.body["detail"]
    assert "edge1: no VIM: takes no VM" in d and "edge2: vCPU" in d and "edge3: vCPU" in d
    assert s.c.get(f"{INST}/{inst['id']}")["instantiationState"] == "NOT_INSTANTIATED"
    assert not s.c.get("/app_lcm/v1/app_lcm_op_occs")


def test_explicit_host_is_honoured(system):
    s = system
    pkg = onboard(s)
    for _ in range(2):
        iid, op = deploy(s, pkg["appDId"], deploymentType="CONTAINER",
                         selectedMECHostInfo=[{"hostId": {"id": "edge3"}}])
        assert s.c.get(f"{INST}/{iid}")["hostId"] == "edge3"
    with pytest.raises(ApiError) as e:
        deploy(s, pkg["appDId"], selectedMECHostInfo=[{"hostId": {"id": "edge9"}}])
    assert e.value.status == 404


def test_unreachable_host_gets_nothing_and_its_op_ends_on_return(system):
    s = system
    pkg = onboard(s)
    gate = threading.Event()
    s.hosts["edge2"].inventory.get("edge2").compute(DeploymentType.CONTAINER).deploy_gate = gate
    inst = s.c.post(INST, {"appDId": pkg["appDId"]})[0]
    op, _ = s.c.post(f"{INST}/{inst['id']}/instantiate", {
        "deploymentType": "CONTAINER", "selectedMECHostInfo": [{"hostId": {"id": "edge2"}}]})
    # the host got the instantiate; now its link breaks mid-deploy
    deadline = time.monotonic() + 5
    while not s.hosts["edge2"].lcm.list() and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)
    s.mepms["edge2"].down.set()
    for _ in range(3):
        s.meo.registry.beat_all()
    hosts = {h["hostId"]: h for h in s.c.get(HOSTS)}
    assert hosts["edge2"]["state"] == "UNREACHABLE" and "link cut" in hosts["edge2"]["reason"]
    # new deploys go elsewhere
    for _ in range(2):
        iid, done = deploy(s, pkg["appDId"], deploymentType="CONTAINER")
        assert s.c.get(f"{INST}/{iid}")["hostId"] != "edge2"
    gate.set()                          # the host finishes by itself meanwhile
    time.sleep(0.5)
    assert s.c.get(f"/app_lcm/v1/app_lcm_op_occs/{op['id']}")["operationState"] == "PROCESSING"
    # a second instantiate of the same instance must not make a duplicate
    with pytest.raises(ApiError) as e:
        s.c.post(f"{INST}/{inst['id']}/instantiate", {"deploymentType": "CONTAINER"})
    assert e.value.status == 409
    s.mepms["edge2"].down.clear()
    s.meo.registry.beat_all()           # REACHABLE again: resync
    done = s.c.wait_op(op, timeout=10)
    assert done["operationState"] == "COMPLETED"
    view = s.c.get(f"{INST}/{inst['id']}")
    assert view["instantiationState"] == "INSTANTIATED" and view["hostId"] == "edge2"
    assert len([i for i in s.hosts["edge2"].lcm.list()
                if i["instantiationState"] == "INSTANTIATED"]) == 1


def test_terminate_and_delete_release_the_host(system):
    s = system
    pkg = onboard(s)
    iid, _ = deploy(s, pkg["appDId"], deploymentType="CONTAINER")
    hid = s.c.get(f"{INST}/{iid}")["hostId"]
    op, _ = s.c.post(f"{INST}/{iid}/terminate", {"terminationType": "FORCEFUL"})
    assert s.c.wait_op(op, timeout=10)["operationState"] == "COMPLETED"
    assert s.c.get(f"{INST}/{iid}")["instantiationState"] == "NOT_INSTANTIATED"
    s.c.call("DELETE", f"{INST}/{iid}")
    assert not s.hosts[hid].lcm.list()
    # the package's copies go with it
    s.c.call("PATCH", f"{PKGS}/{pkg['id']}", {"operationState": "DISABLED"})
    s.c.call("DELETE", f"{PKGS}/{pkg['id']}")
    assert not s.hosts[hid].packages.list()


def test_meo_restart_resumes_an_interrupted_op(system, tmp_path):
    s = system
    pkg = onboard(s)
    gate = threading.Event()
    s.hosts["edge3"].inventory.get("edge3").compute(DeploymentType.CONTAINER).deploy_gate = gate
    inst = s.c.post(INST, {"appDId": pkg["appDId"]})[0]
    op, _ = s.c.post(f"{INST}/{inst['id']}/instantiate", {
        "deploymentType": "CONTAINER", "selectedMECHostInfo": [{"hostId": {"id": "edge3"}}]})
    time.sleep(0.3)
    # a second MEO on the same store (as after a crash) finds the op and
    # follows the host's op to its end; the host makes one instance only
    # the first one's lease goes with it (its workers, still running in
    # this process, are fenced from then on)
    s.meo.lease.stop()
    cfg = dict(s.meo.cfg)
    meo2 = MeoOrchestrator(cfg)
    try:
        meo2.registry.attach(LocalMepm(s.hosts["edge3"], "edge3"))
        gate.set()
        meo2.lcm.recover()
        deadline = time.monotonic() + 10
        while meo2.lcm.op(op["id"])["operationState"] == "PROCESSING" \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        assert meo2.lcm.op(op["id"])["operationState"] == "COMPLETED"
    finally:
        meo2.close()
    assert len(s.hosts["edge3"].lcm.list()) == 1


def test_the_oss_subscribes_at_the_meo(system, notification_sink):
    s = system
    s.meo.subscriptions.start()
    s.c.post("/app_lcm/v1/subscriptions", {"subscriptionType": "AppInstanceStateChange",
                                           "callbackUri": notification_sink.url,
                                           "appInstanceState": "STARTED"})
    s.c.post("/app_lcm/v1/subscriptions", {"subscriptionType": "AppLcmOpOccStateChange",
                                           "callbackUri": notification_sink.url})
    pkg = onboard(s)
    iid, op = deploy(s, pkg["appDId"], deploymentType="CONTAINER")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(
            n.get("notificationType") == "STARTED" for n in notification_sink.got):
        time.sleep(0.05)
    got = [(n["notificationType"], n.get("appInstanceId")) for n in notification_sink.got]
    assert ("STARTED", iid) in got
    # the op occurrence's states as the MEO journalled them, in order
    states = [t for t, i in got if i == iid and t in ("STARTING", "PROCESSING", "COMPLETED")]
    assert states[0] == "STARTING" and states[-1] == "COMPLETED", got


# ---------------------------------------------------------------- one identity
def _vip_rules(address="10.90.0.10"):
    """The sample's traffic rule at a fixed service address (the sample now
    asks its host for one): two instances of it on one host collide."""
    import yaml
    rules = yaml.safe_load(CONTAINER_APPD.read_text())["appTrafficRule"]
    rules[0]["trafficFilter"][0]["dstAddress"] = [address]
    return rules


def _moved_at_the_host(s, host_id, host_instance, address):
    """The instance's traffic rule moved to `address` through the host's
    Mp1 (the MEO has not read it: its view of the host's claims is stale)."""
    mep = s.hosts[host_id].mep
    (rule,) = mep.list_rules(host_instance, "traffic_rules")
    rule["trafficFilter"][0]["dstAddress"] = [address]
    mep.put_rule(host_instance, "traffic_rules", rule["trafficRuleId"], rule)


def test_a_held_address_or_name_is_a_409_before_the_202(system):
    """Before its 202 the MEO refuses a request naming a host where another
    of its instances holds the fixed service address (or DNS name) it
    claims, in the host's words with the MEO's id and the host: nothing is
    made at the host, no op at the MEO. Named no host, it is placed where
    the address is free, the holding host left out with the reason."""
    s = system
    pkg = onboard(s, appTrafficRule=_vip_rules())
    on_edge2 = [{"hostId": {"id": "edge2"}}]
    first, op = deploy(s, pkg["appDId"], deploymentType="CONTAINER",
                       selectedMECHostInfo=on_edge2)
    assert op["operationState"] == "COMPLETED", op
    second = s.c.post(INST, {"appDId": pkg["appDId"]})[0]["id"]
    with pytest.raises(ApiError) as info:
        s.c.post(f"{INST}/{second}/instantiate",
                 {"deploymentType": "CONTAINER", "selectedMECHostInfo": on_edge2})
    assert info.value.status == 409
    assert info.value.detail.startswith("edge host 'edge2': trafficRule "), info.value.detail
    assert f"10.90.0.10:80/tcp is steered by instance {first}" in info.value.detail
    assert [i["id"] for i in s.hosts["edge2"].lcm.list()] == [first]
    assert s.meo.store.list("op_occs", appInstanceId=second) == []
    assert s.c.get(f"{INST}/{second}")["instantiationState"] == "NOT_INSTANTIATED"
    # no host named: placed where the address is free, edge2 left out
    op, _ = s.c.post(f"{INST}/{second}/instantiate", {"deploymentType": "CONTAINER"})
    op = s.c.wait_op(op, timeout=20)
    assert op["operationState"] == "COMPLETED", op
    assert s.c.get(f"{INST}/{second}")["hostId"] != "edge2"
    assert f"edge2: trafficRule {_vip_rules()[0]['trafficRuleId']}: 10.90.0.10:80/tcp is " \
           f"steered by instance {first}" in op["decisionReason"], op["decisionReason"]
    # a DNS name another app's instance holds: the same, before the 202
    named = [{"dnsRuleId": "n", "domainName": "held.mec.local", "ipAddressType": "IP_V4",
              "ipAddress": "10.90.0.20"}]
    other = onboard(s, appDId="other-app", appDNSRule=named)
    holder, op = deploy(s, other["appDId"], deploymentType="CONTAINER",
                        selectedMECHostInfo=on_edge2)
    assert op["operationState"] == "COMPLETED", op
    third = s.c.post(INST, {"appDId": pkg["appDId"]})[0]["id"]
    with pytest.raises(ApiError) as info:
        s.c.post(f"{INST}/{third}/instantiate", {
            "deploymentType": "CONTAINER", "selectedMECHostInfo": on_edge2,
            "appTrafficRule": [], "appDNSRule": [dict(named[0], ipAddress="10.90.0.21")]})
    assert info.value.status == 409
    assert f"edge host 'edge2': dnsRule n: the name held.mec.local belongs to instance " \
           f"{holder}" in info.value.detail, info.value.detail
    assert s.meo.store.list("op_occs", appInstanceId=third) == []


def test_an_instance_in_flight_holds_its_claims_at_the_meo(system, monkeypatch):
    """Two requests for one address on one host, the first still deploying
    (its host's instantiate held): the MEO counts its own instance in
    flight, the second is a 409 before the 202."""
    s = system
    pkg = onboard(s, appTrafficRule=_vip_rules())
    on_edge2 = [{"hostId": {"id": "edge2"}}]
    gate, mepm = threading.Event(), s.mepms["edge2"]
    real = mepm.instantiate
    monkeypatch.setattr(mepm, "instantiate", lambda *a, **kw: gate.wait(10) and real(*a, **kw))
    first = s.c.post(INST, {"appDId": pkg["appDId"]})[0]["id"]
    op, _ = s.c.post(f"{INST}/{first}/instantiate",
                     {"deploymentType": "CONTAINER", "selectedMECHostInfo": on_edge2})
    try:
        second = s.c.post(INST, {"appDId": pkg["appDId"]})[0]["id"]
        with pytest.raises(ApiError) as info:
            s.c.post(f"{INST}/{second}/instantiate",
                     {"deploymentType": "CONTAINER", "selectedMECHostInfo": on_edge2})
        assert info.value.status == 409
        assert f"steered by instance {first}" in info.value.detail, info.value.detail
    finally:
        gate.set()
    assert s.c.wait_op(op, timeout=20)["operationState"] == "COMPLETED"


def test_a_relayed_error_names_the_meos_ids_and_the_host(system, caplog):
    """The MEO's view of the host's claims is stale (the first instance's
    rule moved through the host's Mp1): the MEO passes the second, the host
    refuses it (its ledger is the authority), and the error at the MEO
    names the first by the MEO's id and the host; the log spells the
    operation INSTANTIATE. Once the MEO has read the rules it refuses the
    same request before its 202."""
    s = system
    pkg = onboard(s, appTrafficRule=_vip_rules())
    on_edge2 = [{"hostId": {"id": "edge2"}}]
    first, op = deploy(s, pkg["appDId"], deploymentType="CONTAINER",
                       selectedMECHostInfo=on_edge2)
    assert op["operationState"] == "COMPLETED", op
    _moved_at_the_host(s, "edge2", first, "10.90.0.11")
    caplog.set_level("WARNING", logger="mecorch.meo.lcm")
    second, op = deploy(s, pkg["appDId"], deploymentType="CONTAINER",
                        selectedMECHostInfo=on_edge2,
                        appTrafficRule=_vip_rules("10.90.0.11"))
    assert op["operationState"] == "FAILED", op
    detail = op["error"]["detail"]
    assert f"steered by instance {first}" in detail and "edge host 'edge2'" in detail, detail
    assert op["error"]["status"] == 409
    lines = [r.getMessage() for r in caplog.records]
    assert any(line.startswith(f"INSTANTIATE of {second} on edge2 failed") for line in lines), lines
    assert not any("INSTATIATE" in line for line in lines)
    # the wire keeps the ETSI enum value
    assert op["lcmOperation"] == "INSTATIATE" and op["operationParams"] == "INSTANTIATE"
    # the rules read through the MEO: its view is the host's again
    (rule,) = s.c.get(f"/mec_app_support/v1/applications/{first}/traffic_rules")
    assert rule["trafficFilter"][0]["dstAddress"] == ["10.90.0.11"]
    with pytest.raises(ApiError) as info:
        s.c.post(f"{INST}/{second}/instantiate",
                 {"deploymentType": "CONTAINER", "selectedMECHostInfo": on_edge2,
                  "appTrafficRule": _vip_rules("10.90.0.11")})
    assert info.value.status == 409 and f"steered by instance {first}" in info.value.detail


def test_a_host_instance_under_an_id_of_its_own_keeps_working(system, monkeypatch):
    """A host that holds an instance under an id of its own (made before
    the MEO passed its ids, or by an MEPM that ignores the header): the MEO
    maps it as before, errors about it are relayed in the MEO's ids, and
    its terminate and delete reach it."""
    s = system
    pkg = onboard(s, appTrafficRule=_vip_rules())
    on_edge3 = [{"hostId": {"id": "edge3"}}]
    mepm = s.mepms["edge3"]
    made = mepm.create_instance
    monkeypatch.setattr(mepm, "create_instance",
                        lambda body, key, instance_id=None: made(body, key))
    old, op = deploy(s, pkg["appDId"], deploymentType="CONTAINER", selectedMECHostInfo=on_edge3)
    assert op["operationState"] == "COMPLETED", op
    theirs = s.meo.store.get("instances", old)["_hostInstance"]["id"]
    assert theirs != old and [i["id"] for i in s.hosts["edge3"].lcm.list()] == [theirs]
    monkeypatch.undo()
    # moved at the host: the MEO's view is stale, so the host refuses it
    _moved_at_the_host(s, "edge3", theirs, "10.90.0.11")
    new, op = deploy(s, pkg["appDId"], deploymentType="CONTAINER", selectedMECHostInfo=on_edge3,
                     appTrafficRule=_vip_rules("10.90.0.11"))
    assert op["operationState"] == "FAILED", op
    assert f"steered by instance {old}" in op["error"]["detail"], op["error"]
    assert theirs not in op["error"]["detail"]
    op, _ = s.c.post(f"{INST}/{old}/terminate", {"terminationType": "FORCEFUL"})
    assert s.c.wait_op(op, timeout=10)["operationState"] == "COMPLETED"
    assert s.hosts["edge3"].lcm.get(theirs)["instantiationState"] == "NOT_INSTANTIATED"
    assert s.c.get(f"{PKGS}/{pkg['id']}")["usageState"] == "NOT_IN_USE"
    s.c.call("DELETE", f"{INST}/{old}")
    assert [i["id"] for i in s.hosts["edge3"].lcm.list()] == [new]


def _serve(orch, role):
    server = make_server(orch, "127.0.0.1:0", role)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def test_the_meos_ids_are_taken_from_the_meo_only(tmp_path):
    """X-Mecorch-Meo-Id: on an MEPM with tokens, only with the MEO's token
    (the first of api.token_file, the one it registers with), validated as
    any id, never twice; refused by a single node."""
    orch, _ = host(tmp_path, "edge9")
    tokens = tmp_path / "tokens"
    meo_token, operator = "meo-token-0123456789", "operator-token-0123456789"
    tokens.write_text(f"{meo_token}\n{operator}\n")
    orch.cfg["api"]["token_file"] = str(tokens)
    s = type("S", (), {"tmp": tmp_path})()
    servers = []
    try:
        server, url = _serve(orch, "mepm")
        servers.append(server)
        s.c = Client(url, token=meo_token)
        pkg = onboard(s)
        body = {"appDId": pkg["appDId"]}
        by = {"X-Mecorch-Meo-Id": "c0ffee00-0000-4000-8000-000000000001"}
        with pytest.raises(ApiError) as e:
            Client(url, token=operator).call("POST", INST, body, headers=by)
        assert e.value.status == 403 and "MEO" in str(e.value)
        made, _ = s.c.post(INST, body, headers=by)
        assert made["id"] == by["X-Mecorch-Meo-Id"]
        assert s.c.get(f"{INST}/{made['id']}")["id"] == made["id"]
        with pytest.raises(ApiError) as e:
            s.c.call("POST", INST, body, headers=by)             # the same id again
        assert e.value.status == 409
        with pytest.raises(ApiError) as e:
            s.c.call("POST", INST, body, headers={"X-Mecorch-Meo-Id": "../x"})
        assert e.value.status == 400 and "X-Mecorch-Meo-Id" in str(e.value)
        # a single node names its resources itself
        orch.cfg["api"]["token_file"] = None
        server, url = _serve(orch, "all")
        servers.append(server)
        with pytest.raises(ApiError) as e:
            Client(url, token="").call("POST", INST, body, headers=by)
        assert e.value.status == 403
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
        orch.close()


# ---------------------------------------------------------------- the MEO's views
def _cli(s, capsys, *argv: str) -> tuple[int, str, str]:
    from mecorch.cli import main
    capsys.readouterr()
    rc = main(["--api", s.c.base, *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _columns(out: str) -> list[dict]:
    import re
    lines = [ln for ln in out.splitlines() if ln.strip()]
    starts = [m.start() for m in re.finditer(r"(?:(?<=  )|^)[A-Z][A-Z ]*?(?=  |$)", lines[0])]
    heads = [lines[0][a:b].strip() for a, b in zip(starts, starts[1:] + [None])]
    return [{h: ln[a:b].strip() if b else ln[a:].strip()
             for h, a, b in zip(heads, starts, starts[1:] + [None])} for ln in lines[1:]]


def _with_rules(s):
    import yaml
    appd = yaml.safe_load(CONTAINER_APPD.read_text())
    return onboard(s, appTrafficRule=appd["appTrafficRule"], appDNSRule=appd["appDNSRule"])


def _metrics(s) -> dict:
    from prometheus_client.parser import text_string_to_metric_families
    text = s.c.call("GET", "/metrics")[1]
    text = text.decode() if isinstance(text, bytes) else text
    return {(smp.name, tuple(sorted(smp.labels.items()))): smp.value
            for fam in text_string_to_metric_families(text) for smp in fam.samples}


def _metric(m: dict, name: str, **labels) -> list[float]:
    return [v for (n, ls), v in m.items()
            if n == name and all(dict(ls).get(k) == w for k, w in labels.items())]


def test_meo_views_ask_the_host_and_say_when_it_is_away(system, capsys, caplog):
    """app list/show/rules/logs/events at the MEO answer as a node's do,
    asking the instance's MEPM for its rules and output; with the host's
    link cut, its instances show UNKNOWN with the last known state and age
    (never RUNNING), rules as last read and a warning, every command exits 0,
    and the outage is one WARNING line."""
    import logging
    s = system
    pkg = _with_rules(s)
    s.hosts["edge2"].inventory.get("edge2").compute(DeploymentType.CONTAINER).logs = \
        lambda handle, tail=None: b"line one\nline two\n"
    ids = {}
    for hid in ("edge2", "edge3"):
        iid, op = deploy(s, pkg["appDId"], deploymentType="CONTAINER",
                         selectedMECHostInfo=[{"hostId": {"id": hid}}])
        assert op["operationState"] == "COMPLETED", op
        ids[hid] = iid
    mp1 = "/mec_app_support/v1/applications"
    for hid, iid in ids.items():
        host_iid = next(i["id"] for i in s.hosts[hid].lcm.list()
                        if i["instantiationState"] == "INSTANTIATED")
        for kind in ("dns_rules", "traffic_rules"):
            assert s.c.get(f"{mp1}/{iid}/{kind}") == \
                s.hosts[hid].mep.list_rules(host_iid, kind)
    rule = s.c.get(f"{mp1}/{ids['edge2']}/dns_rules/sample-http-dns")
    assert rule["domainName"] == "sample-http.mec.local" and rule["state"] == "ACTIVE"
    with pytest.raises(ApiError) as e:          # read-only at the MEO: the MEPM's to change
        s.c.call("PUT", f"{mp1}/{ids['edge2']}/dns_rules/sample-http-dns", rule)
    assert e.value.status == 400 and "MEPM of edge2" in e.value.body["detail"]

    # the CLI against the MEO: every view exits 0 with what the hosts hold
    rc, out, err = _cli(s, capsys, "app", "list")
    assert rc == 0, err
    rows = {r["ID"]: r for r in _columns(out)}
    assert {rows[i]["HOST"] for i in ids.values()} == {"edge2", "edge3"}
    assert all(rows[i]["DNS"] == "sample-http.mec.local" for i in ids.values())
    rc, out, err = _cli(s, capsys, "-o", "json", "app", "list")
    assert rc == 0 and {i["id"] for i in json.loads(out)} == set(ids.values())
    rc, out, err = _cli(s, capsys, "app", "rules", ids["edge3"][:8])
    assert rc == 0 and "sample-http-vip" in out and "sample-http.mec.local" in out, err
    assert "{" not in out                       # text, not a JSON dump
    rc, out, err = _cli(s, capsys, "app", "logs", ids["edge2"][:8], "--tail", "1")
    assert rc == 0 and out == "line two\n", err
    rc, out, err = _cli(s, capsys, "app", "events", ids["edge2"][:8])
    assert rc == 0 and "INSTANTIATE" in out and "COMPLETED" in out
    rc, out, err = _cli(s, capsys, "-o", "text", "app", "show", ids["edge2"][:8])
    assert rc == 0 and "hostId: edge2" in out and "{" not in out
    rc, out, err = _cli(s, capsys, "host", "list")
    assert rc == 0 and "REACHABLE" in out and "cim:up" in out, (out, err)

    # edge2's link breaks: one WARNING, and every view says what it knows
    before = s.c.get(f"{INST}/{ids['edge2']}")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="mecorch"):
        s.mepms["edge2"].down.set()
        for _ in range(3):
            s.meo.registry.beat_all()
        view = s.c.get(f"{INST}/{ids['edge2']}")
        listed = {i["id"]: i for i in s.c.get(INST)}
        got = s.c.call("GET", f"{mp1}/{ids['edge2']}/dns_rules")
        logs_answer = s.c.call("GET", f"{INST}/{ids['edge2']}/logs")
        results = {cmd: _cli(s, capsys, *cmd) for cmd in (
            ("app", "list"), ("-o", "json", "app", "list"), ("app", "rules", ids["edge2"][:8]),
            ("app", "logs", ids["edge2"][:8]), ("app", "show", ids["edge2"][:8]),
            ("app", "events", ids["edge2"][:8]), ("host", "list"))}
        s.c.call("GET", "/status")
        m = _metrics(s)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "UNREACHABLE" in warnings[0].getMessage(), \
        [r.getMessage() for r in warnings]
    for v in (view, listed[ids["edge2"]]):
        assert v["observedState"] == "UNKNOWN" and v["hostState"] == "UNREACHABLE"
        assert v["lastKnownObservedState"] == before.get("observedState")
        assert v["observedStateAge"] is not None and v["observedStateAge"] >= 0
        assert "edge2 is UNREACHABLE" in v["observedStateDetail"]
    assert listed[ids["edge3"]].get("observedState") != "UNKNOWN"
    assert "hostState" not in listed[ids["edge3"]]
    status, rules, headers = got
    assert status == 200 and rules[0]["domainName"] == "sample-http.mec.local"
    assert "edge2 is UNREACHABLE" in headers["Warning"]
    status, data, headers = logs_answer
    assert status == 200 and headers["X-Mecorch-Logs-Source"] == "unavailable"
    assert "edge2 is UNREACHABLE" in headers["Warning"]
    for cmd, (rc, out, err) in results.items():
        assert rc == 0, (cmd, out, err)
    rc, out, err = results[("app", "list")]
    row = {r["ID"]: r for r in _columns(out)}[ids["edge2"]]
    assert row["OBSERVED"].startswith("UNKNOWN") and "RUNNING" not in row["OBSERVED"].split()[0]
    assert row["DNS"] == "sample-http.mec.local" and "edge2 does not answer" in err
    assert "UNREACHABLE" in results[("app", "rules", ids["edge2"][:8])][2]
    assert "UNREACHABLE" in results[("app", "logs", ids["edge2"][:8])][2]
    assert "UNREACHABLE" in results[("host", "list")][1]
    # the metrics: reachability, heartbeat age, instances by observed state
    assert _metric(m, "mecorch_host_reachable", host="edge2") == [0]
    assert _metric(m, "mecorch_host_reachable", host="edge3") == [1]
    assert _metric(m, "mecorch_host_heartbeat_age_seconds", host="edge3")[0] >= 0
    assert _metric(m, "mecorch_instances", host="edge2", observed="UNKNOWN") == [1]
    assert not _metric(m, "mecorch_instances", host="edge3", observed="UNKNOWN")


def test_meo_status_page_and_metrics(system):
    from support.page import Tables
    from mecorch.api import status
    s = system
    status.for_orchestrator(s.meo).start()     # as serve does: listen before the ops
    try:
        _status_page_and_metrics(s, Tables)
    finally:
        status.for_orchestrator(s.meo).stop()


def _status_page_and_metrics(s, Tables):
    pkg = _with_rules(s)
    iid, op = deploy(s, pkg["appDId"], deploymentType="CONTAINER",
                     selectedMECHostInfo=[{"hostId": {"id": "edge3"}}])
    assert op["operationState"] == "COMPLETED"
    with pytest.raises(ApiError):       # no host has 64 vCPUs
        deploy(s, pkg["appDId"], deploymentType="CONTAINER", virtualComputeDescriptor={
            "virtualCpu": {"numVirtualCpu": 64}, "virtualMemory": {"virtualMemSize": 64}})
    s.meo.registry.beat_all()
    page = s.c.call("GET", "/status")[1]
    t = Tables()
    t.feed(page.decode() if isinstance(page, bytes) else page)
    hosts = {h["host"]: h for h in t.tables["hosts"]}
    assert set(hosts) == {"edge1", "edge2", "edge3"}
    assert all(h["state"] == "REACHABLE" for h in hosts.values())
    assert "CONTAINER" in hosts["edge3"]["capacity (used/total)"]
    assert "cim=" in hosts["edge3"]["backends"] and hosts["edge3"]["instances"] == "1"
    (inst,) = [r for r in t.tables["instances"] if r["id"] == iid]
    assert inst["host"] == "edge3" and inst["DNS names"] == "sample-http.mec.local"
    assert inst["addresses"] not in ("", "-")
    kinds = {r["kind"] for r in t.tables["rules"] if r["instance"] == inst["name"]}
    assert kinds == {"traffic", "dns"}
    ops = [o for o in t.tables["operations"] if o["instance"] == iid]
    assert ops and ops[0]["host"] == "edge3" and ops[0]["placement decision"] not in ("", "-")
    m = _metrics(s)
    assert _metric(m, "mecorch_placements_total", host="edge3", manner="CONTAINER") == [1]
    assert _metric(m, "mecorch_placement_refusals_total", reason="capacity") == [1]
    assert _metric(m, "mecorch_placement_refusals_total", reason="manner") == []
    # the MEO's op and, in this one process, the host's own (a served MEO has its own)
    assert _metric(m, "mecorch_lcm_operation_duration_seconds_count", operation="INSTANTIATE",
                   host="edge3", manner="CONTAINER", outcome="completed") == [2]
    assert _metric(m, "mecorch_backend_up", host="edge3", role="cim") == [1]
    assert _metric(m, "mecorch_rules", kind="dns", host="edge3")
