"""Replicas behind one service address, in the core (fake drivers).

- the claims rule (`spec.rules.claim_conflict`, both levels' one wording):
  an instance of the same app asking to be a replica (shareServiceAddress)
  may claim the same destinations with the same rule; without asking, with
  another rule, or of another app, it is a 409;
- the single node: the sample deployed once gets an address, later
  deploys of the same app naming it (`--replica-of`: the address as
  `--service-address` puts it, and shareServiceAddress) join it on the
  host; each replica is applied with its share
  (the replicas' ids per rule), and a terminate gives the others theirs
  again before its own rules go; another app naming the address is a 409;
- the MEO admits what the host admits (a replica naming the address) and
  refuses before its 202 what the host refuses (another app).
The spreading itself: tests/conformance/test_platform_contract.py (real
iptables in network namespaces) and tests/e2e/test_replicas.py.
"""

from __future__ import annotations


import pytest

from mecorch.driverapi.contracts import RuleAudit
from mecorch.cli.commands import with_service_address
from mecorch.kernel import config
from mecorch.kernel.client import ApiError
from mecorch.kernel.errors import Conflict
from mecorch.kernel.states import DeploymentType
from mecorch.kernel.store import Store
from mecorch.meo.orchestrator import MeoOrchestrator
from mecorch.mepm import replicas
from mecorch.mepm.claims import ClaimsLedger
from mecorch.mepm.inventory import EdgeHost
from mecorch.mepm.local import LocalMepm
from mecorch.mepm.orchestrator import Orchestrator
from mecorch.spec import rules as R
from support.corelab import deploy, onboard_with, serve
from support.fakes import FakeCompute, FakeMep

C = DeploymentType.CONTAINER
INST = "/app_lcm/v1/app_instances"
PKGS = "/app_pkgm/v1/app_packages"
MP1 = "/mec_app_support/v1/applications"
CIDR = "10.171.0.0/24"
SAMPLE_RULES = {   # the sample AppD's rules (examples/sample-container-app)
    "appTrafficRule": [{"trafficRuleId": "sample-http-vip", "filterType": "FLOW",
                        "priority": 1,
                        "trafficFilter": [{"dstPort": ["80"], "protocol": ["TCP"]}],
                        "action": "FORWARD_DECAPSULATED",
                        "dstInterface": [{"interfaceType": "IP"}]}],
    "appDNSRule": [{"dnsRuleId": "sample-http-dns", "domainName": "sample-http.mec.local",
                    "ipAddressType": "IP_V4", "ttl": 60}]}


def _joining(address: str, port: str = "80") -> dict:
    """A replica's request: the sample's rules naming `address`, as `app
    deploy --replica-of` sends them."""
    rules = with_service_address(SAMPLE_RULES, address)
    rules["appTrafficRule"][0]["trafficFilter"][0]["dstPort"] = [port]
    return {**rules, "shareServiceAddress": True}


def _rules(body: dict):
    return R.instance_rules({}, {k: v for k, v in body.items() if k != "shareServiceAddress"})


# ---------------------------------------------------------------- the claims rule
def _stored(app, address, port="80"):
    traffic, dns = _rules(_joining(address, port))
    return {"appDId": app, "trafficRules": [r.to_etsi() for r in traffic],
            "dnsRules": [r.to_etsi() for r in dns]}


def test_same_app_same_rule_shares_other_rule_or_app_is_refused():
    traffic, dns = _rules(_joining("10.171.0.1"))
    held = [("first", _stored("app-a", "10.171.0.1"))]
    assert R.claim_conflict(traffic, dns, "app-a", held, share=True) is None
    # not asking to be a replica: refused as before, saying how to ask
    taken = R.claim_conflict(traffic, dns, "app-a", held)
    assert taken == ("trafficRule sample-http-vip: 10.171.0.1:80/tcp is steered by instance "
                     "first (app app-a, trafficRule sample-http-vip) (an instance of the same "
                     "app shares it as a replica: shareServiceAddress)")
    taken = R.claim_conflict(traffic, dns, "app-b", held, share=True)
    assert taken.startswith("trafficRule sample-http-vip: 10.171.0.1:80/tcp is steered by "
                            "instance first (app app-a")
    assert "replica" not in taken
    # the one joined, checked again (an Mp1 change of its rules): the
    # replica's stored flag counts for both
    joined = [("second", {**_stored("app-a", "10.171.0.1"), "shareServiceAddress": True})]
    assert R.claim_conflict(traffic, dns, "app-a", joined) is None
    assert R.claim_conflict(traffic, dns, "app-b", joined).startswith("trafficRule ")
    # the same app steering an overlapping but different box (ports 80-90)
    other = [("first", _stored("app-a", "10.171.0.1", "80-90"))]
    taken = R.claim_conflict(traffic, dns, "app-a", other, share=True)
    assert "is steered by instance first" in taken and "the same rule" in taken


def test_the_ledger_lets_a_replica_join_the_allocated_address(tmp_path):
    store = Store(tmp_path / "s.db")
    ledger = ClaimsLedger(store)
    host = EdgeHost({"id": "edge1", "mep": {"service_cidr": CIDR}}, 4.0)
    for iid, app in (("r1", "app-a"), ("r2", "app-a"), ("x", "app-b")):
        store.put("instances", iid, {"id": iid, "appDId": app})
    ledger.set_rules("r1", *R.instance_rules({}, SAMPLE_RULES), host)
    addr = store.get("rules", "r1")["serviceAddress"]
    assert addr == "10.171.0.1"
    with pytest.raises(Conflict, match="shareServiceAddress"):
        ledger.set_rules("r2", *_rules(_joining(addr)), host)
    ledger.set_rules("r2", *_rules(_joining(addr)), host, share=True)
    assert store.get("rules", "r2")["trafficRules"] == store.get("rules", "r1")["trafficRules"]
    assert store.get("rules", "r2")["shareServiceAddress"] is True
    with pytest.raises(Conflict, match="steered by instance r1 .app app-a"):
        ledger.set_rules("x", *_rules(_joining(addr)), host, share=True)
    # the next allocation (the other app, its own rules) skips the shared address
    ledger.set_rules("x", *R.instance_rules({}, {**SAMPLE_RULES, "appDNSRule": []}), host)
    assert store.get("rules", "x")["serviceAddress"] == "10.171.0.2"


def test_a_replica_asking_for_an_address_gets_the_one_of_its_app(tmp_path):
    """shareServiceAddress with the sample's rules as they are (asking for
    an address): the first gets one, the next ones the same; two addresses
    of the app on the host is a 409 asking to name one."""
    store = Store(tmp_path / "s.db")
    ledger = ClaimsLedger(store)
    host = EdgeHost({"id": "edge1", "mep": {"service_cidr": CIDR}}, 4.0)
    for iid in ("r1", "r2", "r3", "solo", "r4"):
        store.put("instances", iid, {"id": iid, "appDId": "app-a"})
    sample = R.instance_rules({}, SAMPLE_RULES)
    for iid in ("r1", "r2", "r3"):
        ledger.set_rules(iid, *sample, host, share=True)
    assert {store.get("rules", i)["serviceAddress"] for i in ("r1", "r2", "r3")} == \
        {"10.171.0.1"}
    # one not asking: an address of its own (its name is the app's to share)
    ledger.set_rules("solo", *sample, host)
    assert store.get("rules", "solo")["serviceAddress"] == "10.171.0.2"
    with pytest.raises(Conflict, match=r"hold several \(10.171.0.1, 10.171.0.2\); name the one"):
        ledger.set_rules("r4", *sample, host, share=True)
    # the first gone: the others keep the address, a new replica joins it
    ledger.release("r1")
    ledger.release("solo")
    ledger.set_rules("r4", *sample, host, share=True)
    assert store.get("rules", "r4")["serviceAddress"] == "10.171.0.1"


def test_shares_count_only_in_service_replicas_of_the_app_on_the_host():
    rule = _stored("a", "10.171.0.1")["trafficRules"]
    docs = [{"id": i, "appDId": app, "hostId": h, "trafficRules": rule, **extra}
            for i, app, h, extra in (
                ("i1", "a", "e1", {}), ("i3", "a", "e1", {}),
                ("i4", "a", "e1", {"outOfService": ["readiness"]}),  # withdrawn
                ("i5", "a", "e2", {}),                        # another host
                ("i6", "a", None, {}),                        # not applied
                ("i7", "b", "e1", {}))]                       # another app
    assert replicas.shares(docs, "e1", "i2", "a", rule) == {
        "sample-http-vip": ("i1", "i2", "i3")}
    assert replicas.shares(docs, "e1", "i1", "a", rule) == {"sample-http-vip": ("i1", "i3")}
    assert replicas.spreadable(rule) and not replicas.spreadable([])
    assert replicas.shares(docs, "e1", "i7", "b", rule) == {}


# ---------------------------------------------------------------- the single node

def _edge(tmp_path, hid="edge1"):
    cfg = config.load()
    cfg["state_dir"] = str(tmp_path / hid)
    cfg["hosts"][0].update(id=hid, vim=None)
    cfg["hosts"][0]["cim"]["state_dir"] = str(tmp_path / hid / "cim")
    cfg["hosts"][0]["mep"]["service_cidr"] = CIDR
    orch = Orchestrator(cfg)
    mep = FakeMep()
    orch.inventory.get(hid).attach("cim", FakeCompute(C, cpus=8))
    orch.inventory.get(hid).attach("mep", mep)
    return orch, mep


@pytest.fixture
def node(tmp_path):
    orch, mep = _edge(tmp_path)
    server, c = serve(orch)
    yield orch, mep, c
    server.shutdown()
    server.server_close()
    orch.close()


def test_three_replicas_get_their_shares_and_a_terminate_respreads(node, tmp_path):
    orch, mep, c = node
    pkg = onboard_with(c, tmp_path)
    # an instance of another app, with an address and name of its own: no
    # replica's coming or going applies its rules again
    bystander_pkg = onboard_with(c, tmp_path, appDId="bystander")
    rules = {k: v for k, v in _joining("10.171.0.200").items() if k != "shareServiceAddress"}
    rules["appDNSRule"][0]["domainName"] = "bystander.mec.local"
    bystander, op = deploy(c, bystander_pkg["appDId"], **rules)
    assert op["operationState"] == "COMPLETED", op
    calls: list[str] = []
    apply_rules = mep.apply_rules
    mep.apply_rules = lambda iid, *a, **kw: (calls.append(iid), apply_rules(iid, *a, **kw))
    first, op = deploy(c, pkg["appDId"])
    assert op["operationState"] == "COMPLETED", op
    addr = c.get(f"{INST}/{first}")["allocatedResources"]["serviceAddress"]
    ids = [first]
    for _ in range(2):
        iid, op = deploy(c, pkg["appDId"], **_joining(addr))
        assert op["operationState"] == "COMPLETED", op
        assert c.get(f"{INST}/{iid}")["allocatedResources"]["serviceAddresses"] == [addr]
        ids.append(iid)
    group = tuple(sorted(ids))
    assert {i: mep.shares[i] for i in ids} == {i: {"sample-http-vip": group} for i in ids}
    # the first (which did not ask to share) changes its DNS rule over Mp1:
    # still its own to change, and applied with its share
    (dns,) = c.get(f"{MP1}/{first}/dns_rules")
    new = c.call("PUT", f"{MP1}/{first}/dns_rules/{dns['dnsRuleId']}", {**dns, "ttl": 30})[1]
    assert new["ttl"] == 30 and mep.shares[first] == {"sample-http-vip": group}
    (tr,) = c.get(f"{MP1}/{first}/traffic_rules")
    other_port = {**tr, "trafficFilter": [{**tr["trafficFilter"][0], "dstPort": ["80-81"]}]}
    with pytest.raises(ApiError) as info:
        c.call("PUT", f"{MP1}/{first}/traffic_rules/{tr['trafficRuleId']}", other_port)
    assert info.value.status == 409 and "the same rule" in info.value.detail
    # another app naming the address: refused, nothing applied for it
    other = onboard_with(c, tmp_path, appDId="other-http")
    inst = c.post(INST, {"appDId": other["appDId"]})[0]
    with pytest.raises(ApiError) as info:
        c.post(f"{INST}/{inst['id']}/instantiate", _joining(addr))
    assert info.value.status == 409 and "steered by instance" in info.value.detail
    assert inst["id"] not in mep.applied
    # one terminated: the two left share it, the gone one holds nothing
    gone = group[1]
    op, _ = c.post(f"{INST}/{gone}/terminate", {"terminationType": "FORCEFUL"})
    assert c.wait_op(op, timeout=20)["operationState"] == "COMPLETED"
    left = tuple(i for i in group if i != gone)
    assert gone not in mep.applied
    assert {i: mep.shares[i] for i in left} == {i: {"sample-http-vip": left} for i in left}
    # down to one: a set of its own again (no shares)
    op, _ = c.post(f"{INST}/{left[0]}/terminate", {"terminationType": "FORCEFUL"})
    assert c.wait_op(op, timeout=20)["operationState"] == "COMPLETED"
    assert mep.shares[left[1]] == {} and mep.applied[left[1]][0]
    # its DNS name still answered by the one left
    assert [r.ip_address for r in mep.applied[left[1]][2]] == [addr]
    # each replica applied when it came and when the others came or went;
    # the other app's instance never
    assert bystander not in calls and bystander in mep.applied
    assert calls.count(group[0]) >= 3 and set(calls) == set(group)


def test_a_withdrawn_replica_is_left_out_of_the_others_shares(node, tmp_path):
    """An instance whose stored rules hold an out-of-service reason takes
    no part; applying a replica then gives it none."""
    orch, mep, c = node
    pkg = onboard_with(c, tmp_path)
    first, _ = deploy(c, pkg["appDId"])
    addr = c.get(f"{INST}/{first}")["allocatedResources"]["serviceAddress"]
    second, _ = deploy(c, pkg["appDId"], **_joining(addr))
    doc = orch.store.get("rules", first)
    orch.store.put("rules", first, {**doc, "outOfService": ["readiness"]})
    orch.mep.rules.apply(orch.inventory.get("edge1"), second,
                         orch.store.get("rules", second)["targetIp"])
    assert mep.shares[second] == {}


def test_a_replica_whose_runtime_dies_leaves_its_share_until_it_runs_again(node, tmp_path):
    """Killed, not terminated: the others take its part at once (a reconcile
    round here, Docker's die event on a real host), and it joins again when
    the operator starts it."""
    orch, mep, c = node
    pkg = onboard_with(c, tmp_path)
    first, _ = deploy(c, pkg["appDId"])
    addr = c.get(f"{INST}/{first}")["allocatedResources"]["serviceAddress"]
    second, _ = deploy(c, pkg["appDId"], **_joining(addr))
    group = tuple(sorted((first, second)))
    assert mep.shares[first] == {"sample-http-vip": group}
    orch.inventory.get("edge1").compute(C).crash(second, 137)
    orch.reconciler.run_once()
    assert second not in mep.applied and mep.shares[first] == {}
    assert orch.store.get("rules", second)["outOfService"] == ["down"]
    op, _ = c.post(f"{INST}/{second}/operate", {"changeStateTo": "STARTED"})
    assert c.wait_op(op, timeout=10)["operationState"] == "COMPLETED"
    assert {i: mep.shares[i] for i in group} == {i: {"sample-http-vip": group} for i in group}


class AuditedMep(FakeMep, RuleAudit):
    """The fake MEP, able to say whether an instance's rules are in place
    as last applied, shares included (as LinuxMEP compares its parts)."""

    def snapshot(self):
        return None

    def rules_applied(self, instance_id, target_ip, traffic_rules, dns_rules, saved=None,
                      shares=None):
        return self.applied.get(instance_id) == (target_ip, list(traffic_rules),
                                                 list(dns_rules)) \
            and self.shares.get(instance_id) == dict(shares or {})


def test_reconciliation_leaves_replicas_alone_and_restores_a_stale_part(tmp_path):
    orch, _ = _edge(tmp_path)
    mep = AuditedMep()
    orch.inventory.get("edge1").attach("mep", mep)
    server, c = serve(orch)
    try:
        pkg = onboard_with(c, tmp_path)
        first, _ = deploy(c, pkg["appDId"])
        addr = c.get(f"{INST}/{first}")["allocatedResources"]["serviceAddress"]
        ids = [first] + [deploy(c, pkg["appDId"], **_joining(addr))[0] for _ in range(2)]
        assert not [d for d in orch.reconciler.run_once() if "re-applied" in d]
        # one replica's part lost (as after a reboot, or a failed re-spread)
        stale = sorted(ids)[0]
        mep.shares[stale] = {"sample-http-vip": tuple(sorted(ids))[:2]}
        done = orch.reconciler.run_once()
        assert [d for d in done if "re-applied" in d] == [
            f"re-applied the rules of instance {stale} on host edge1"]
        assert mep.shares[stale] == {"sample-http-vip": tuple(sorted(ids))}
        assert not [d for d in orch.reconciler.run_once() if "re-applied" in d]
    finally:
        server.shutdown()
        server.server_close()
        orch.close()


# ---------------------------------------------------------------- the MEO agrees
@pytest.fixture
def meo_system(tmp_path):
    orch, mep = _edge(tmp_path)
    cfg = config.load()
    cfg["state_dir"] = str(tmp_path / "meo")
    cfg["hosts"] = []
    cfg["meo"]["heartbeat_s"] = 0
    meo = MeoOrchestrator(cfg)
    meo.registry.attach(LocalMepm(orch, "edge1"))
    server, c = serve(meo, "meo")
    yield meo, mep, c
    server.shutdown()
    server.server_close()
    meo.close()
    orch.close()


def test_the_meo_admits_a_replica_and_refuses_another_app_before_its_202(meo_system, tmp_path):
    meo, mep, c = meo_system
    pkg = onboard_with(c, tmp_path)
    on = {"selectedMECHostInfo": [{"hostId": {"id": "edge1"}}]}
    first, op = deploy(c, pkg["appDId"], **on)
    assert op["operationState"] == "COMPLETED", op
    addr = c.get(f"{INST}/{first}")["allocatedResources"]["serviceAddress"]
    second, op = deploy(c, pkg["appDId"], **on, **_joining(addr))
    assert op["operationState"] == "COMPLETED", op
    assert set(mep.shares) >= {first, second}
    assert all(len(s["sample-http-vip"]) == 2 for i, s in mep.shares.items()
               if i in (first, second))
    other = onboard_with(c, tmp_path, appDId="other-http")
    inst = c.post(INST, {"appDId": other["appDId"]})[0]
    rules = _joining(addr)
    rules["appDNSRule"][0]["domainName"] = "other-http.mec.local"    # its own name
    with pytest.raises(ApiError) as info:
        c.post(f"{INST}/{inst['id']}/instantiate", {**on, **rules})
    # refused by the MEO itself (no op started), in the host's words
    assert info.value.status == 409
    assert info.value.detail.startswith("edge host 'edge1': trafficRule sample-http-vip: ")
    assert c.get(f"{INST}/{inst['id']}")["instantiationState"] == "NOT_INSTANTIATED"
    # the same app, not asking to be a replica: refused by the host (the
    # first's address was allocated there: the MEO knows the second's, a
    # replica's, with which the pair may share)
    third = c.post(INST, {"appDId": pkg["appDId"]})[0]
    unasked = {k: v for k, v in _joining(addr).items() if k != "shareServiceAddress"}
    op, _ = c.post(f"{INST}/{third['id']}/instantiate", {**on, **unasked})
    op = c.wait_op(op, timeout=20)
    assert op["operationState"] in ("FAILED", "FAILED_TEMP"), op
    assert f"steered by instance {first}" in op["error"]["detail"]
    assert "shareServiceAddress" in op["error"]["detail"]
    # the first gone, the one left asked to be a replica: the host lets the
    # same app's instance share with it, and the MEO agrees
    op, _ = c.post(f"{INST}/{first}/terminate", {"terminationType": "FORCEFUL"})
    assert c.wait_op(op, timeout=20)["operationState"] == "COMPLETED"
    op, _ = c.post(f"{INST}/{third['id']}/instantiate", {**on, **unasked})
    assert c.wait_op(op, timeout=20)["operationState"] == "COMPLETED"
    assert mep.shares[third["id"]] == {"sample-http-vip": tuple(sorted((second, third["id"])))}


# ---------------------------------------------------------------- the CLI
from support.corelab import env, onboard  # noqa: E402,F401,F811 - the fixture


def _cli(e, capsys, *argv):
    from mecorch import cli
    rc = cli.main(["--api", e.c.base, *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_deploys_three_replicas_with_replica_of(env, capsys):  # noqa: F811
    import json
    onboard(env)
    onboard(env, appDId="other-http")
    ids = []
    for name in ("web-1", "web-2", "web-3", "other"):
        rc, out, err = _cli(env, capsys, "app", "create",
                            "other-http" if name == "other" else "sample-http", "--name", name)
        assert rc == 0, err
        ids.append(out.strip())
    rc, out, err = _cli(env, capsys, "-o", "json", "app", "deploy", "web-1")
    assert rc == 0, err
    addr = json.loads(out)["allocatedResources"]["serviceAddress"]
    # each option checked before anything is sent, naming it
    for argv, said in ((["web-2", "--replica-of", "web-2"], "names the instance being deployed"),
                       (["web-2", "--replica-of", "other"], "is of app other-http"),
                       (["web-2", "--replica-of", "web-3"], "is not INSTANTIATED"),
                       (["web-2", "--replica-of", "web-1", "--host", "edge9"],
                        "--host edge9: a replica runs on the host of --replica-of web-1"),
                       (["web-2", "--replica-of", "web-1", "--service-address", "10.90.0.99"],
                        f"a replica takes the address of --replica-of web-1, {addr}")):
        rc, _, err = _cli(env, capsys, "app", "deploy", *argv)
        assert rc != 0 and said in err, (argv, err)
    assert env.c.get(f"{INST}/{ids[1]}")["instantiationState"] == "NOT_INSTANTIATED"
    for name in ("web-2", "web-3"):
        rc, out, err = _cli(env, capsys, "-o", "json", "app", "deploy", name,
                            "--replica-of", "web-1")
        assert rc == 0, err
        assert json.loads(out)["allocatedResources"]["serviceAddresses"] == [addr]
    group = tuple(sorted(ids[:3]))
    assert {i: env.mep.shares[i] for i in ids[:3]} == {
        i: {"sample-http-vip": group} for i in ids[:3]}
    # the other app, naming the address as a replica would: 409, nothing applied
    rc, _, err = _cli(env, capsys, "app", "deploy", "other", "--service-address", addr)
    assert rc != 0 and "steered by instance" in err
    assert ids[3] not in env.mep.applied


def test_a_withdrawal_respreads_the_others_before_the_rules_go(node, tmp_path):
    """What a readiness withdrawal does (the probes' `withdraw`): the
    stored set says inService false, `before_leaving` gives the others
    their parts without it, then its rules go; `apply` brings it back."""
    orch, mep, c = node
    pkg = onboard_with(c, tmp_path)
    ids = [deploy(c, pkg["appDId"], shareServiceAddress=True)[0] for _ in range(3)]
    group = tuple(sorted(ids))
    host, out = orch.inventory.get("edge1"), group[2]
    doc = orch.store.get("rules", out)
    orch.store.put("rules", out, {**doc, "inService": False})
    orch.mep.rules.before_leaving(host, out)
    mep.remove_rules(out)
    assert {i: mep.shares[i] for i in group[:2]} == {
        i: {"sample-http-vip": group[:2]} for i in group[:2]}
    orch.store.put("rules", out, doc)                  # ready again
    orch.mep.rules.apply(host, out, doc["targetIp"])
    assert {i: mep.shares[i] for i in group} == {i: {"sample-http-vip": group} for i in group}
