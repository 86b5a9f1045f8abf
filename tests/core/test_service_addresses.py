"""Service addresses the MEP gives, and placement by service range.

- the allocator (`spec.rules.lowest_free` and the claims ledger): the
  lowest free address of the host's range, freed on release, distinct
  under concurrent deploys, a full range a 409 naming it;
- the one placement engine (`spec.placement.choose`): a fixed address
  binds the request to a host whose range holds it, a 409 names each
  host's range, and the choice says why (winner and the others);
- the single node with two hosts of different ranges and the MEO over two
  in-process MEPMs (fake drivers): the sample package, which names no
  address, deploys unchanged on both, its Mp1 rules and `app show` give
  the address, terminate frees it, a restart keeps it; the MEO logs each
  placement. The same on real backends: test_meo_e2e.py (at its end).
"""

from __future__ import annotations

import logging
import threading

import pytest

from support.fakes import FakeCompute, FakeMep
from mecorch.kernel import config
from mecorch.kernel.client import ApiError
from mecorch.kernel.errors import CapacityExceeded, Conflict, InvalidInput
from mecorch.kernel.states import DeploymentType
from mecorch.kernel.store import Store
from mecorch.meo.orchestrator import MeoOrchestrator
from mecorch.mepm.claims import ClaimsLedger
from mecorch.mepm.inventory import EdgeHost
from mecorch.mepm.local import LocalMepm
from mecorch.mepm.orchestrator import Orchestrator
from mecorch.spec import placement, rules as R
from mecorch.spec.capacity import Need, Room
from support.corelab import VM_APPD, deploy, onboard_with, serve

C, VM = DeploymentType.CONTAINER, DeploymentType.VM
INST = "/app_lcm/v1/app_instances"
PKGS = "/app_pkgm/v1/app_packages"
MP1 = "/mec_app_support/v1/applications"
RANGES = {"edge1": "10.171.0.0/24", "edge2": "10.172.0.0/24"}


# ---------------------------------------------------------------- the allocator
def _asking(n: int = 0):
    """A rule set that asks for a service address (the sample's shape)."""
    return R.instance_rules({}, {
        "appTrafficRule": [{"trafficRuleId": f"t{n}", "filterType": "FLOW", "priority": 1,
                            "trafficFilter": [{"dstPort": ["80"], "protocol": ["TCP"]}],
                            "action": "FORWARD_DECAPSULATED",
                            "dstInterface": [{"interfaceType": "IP"}]}],
        "appDNSRule": [{"dnsRuleId": f"d{n}", "domainName": f"a{n}.mec.local",
                        "ipAddressType": "IP_V4"}]})


def _fixed(addr: str, n: int = 0):
    return R.instance_rules({}, {
        "appTrafficRule": [{"trafficRuleId": f"f{n}", "filterType": "FLOW", "priority": 1,
                            "trafficFilter": [{"dstAddress": [addr], "dstPort": ["80"]}],
                            "action": "FORWARD_DECAPSULATED"}], "appDNSRule": []})


def _ledger(tmp_path, cidr="10.171.0.0/24"):
    host = EdgeHost({"id": "edge1", "mep": {"service_cidr": cidr} if cidr else {}}, 4.0)
    return ClaimsLedger(Store(tmp_path / "s.db")), host


def _address(ledger, iid):
    return ledger.store.get("rules", iid)["serviceAddress"]


def test_lowest_free_skips_network_broadcast_and_what_is_held():
    iv = lambda a: R.address_interval(a)            # noqa: E731
    assert R.lowest_free("10.171.0.0/24", []) == "10.171.0.1"
    assert R.lowest_free("10.171.0.0/24", [iv("10.171.0.1"), iv("10.171.0.2")]) == "10.171.0.3"
    assert R.lowest_free("10.171.0.0/24", [iv("10.171.0.1-10.171.0.5"), iv("10.171.0.7")]) \
        == "10.171.0.6"
    assert R.lowest_free("10.171.0.0/24", [iv("10.90.0.1")]) == "10.171.0.1"   # elsewhere
    assert R.lowest_free("10.171.0.0/30", [iv("10.171.0.1"), iv("10.171.0.2")]) is None
    assert R.lowest_free("10.171.0.0/24", [iv("10.171.0.0/25")]) == "10.171.0.128"


def test_allocation_lowest_free_release_and_retry(tmp_path):
    ledger, host = _ledger(tmp_path)
    ledger.set_rules("a", *_asking(1), host)
    ledger.set_rules("b", *_asking(2), host)
    assert (_address(ledger, "a"), _address(ledger, "b")) == ("10.171.0.1", "10.171.0.2")
    # the address is written into the stored rules: the DNS rule answers it
    doc = ledger.store.get("rules", "a")
    assert doc["trafficRules"][0]["trafficFilter"][0]["dstAddress"] == ["10.171.0.1"]
    assert doc["dnsRules"][0]["ipAddress"] == "10.171.0.1"
    # a retry keeps the address the instance holds
    ledger.set_rules("b", *_asking(2), host)
    assert _address(ledger, "b") == "10.171.0.2"
    # a fixed address another instance holds is not given
    ledger.set_rules("f", *_fixed("10.171.0.3"), host)
    ledger.release("a")
    ledger.set_rules("c", *_asking(3), host)
    ledger.set_rules("d", *_asking(4), host)
    assert (_address(ledger, "c"), _address(ledger, "d")) == ("10.171.0.1", "10.171.0.4")


def test_concurrent_allocations_never_share_an_address(tmp_path):
    ledger, host = _ledger(tmp_path, "10.171.0.0/26")
    errors = []

    def one(n):
        try:
            ledger.set_rules(f"i{n}", *_asking(n), host)
        except Exception as e:      # noqa: BLE001 - reported below
            errors.append(e)
    threads = [threading.Thread(target=one, args=(n,)) for n in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    got = [_address(ledger, f"i{n}") for n in range(40)]
    assert len(set(got)) == 40
    assert sorted(got, key=lambda a: int(a.split(".")[-1])) == [f"10.171.0.{n}"
                                                               for n in range(1, 41)]


def test_a_full_range_is_a_409_naming_it(tmp_path):
    ledger, host = _ledger(tmp_path, "10.171.0.0/30")
    ledger.set_rules("a", *_asking(1), host)
    ledger.set_rules("b", *_asking(2), host)
    with pytest.raises(Conflict) as info:
        ledger.set_rules("c", *_asking(3), host)
    assert "10.171.0.0/30" in info.value.detail and "edge1" in info.value.detail
    assert ledger.store.get("rules", "c") is None           # nothing recorded


def test_no_range_and_a_dns_rule_without_address_is_a_409(tmp_path):
    ledger, host = _ledger(tmp_path, None)
    with pytest.raises(Conflict) as info:
        ledger.set_rules("a", *_asking(1), host)
    assert "host edge1 has no service range" in info.value.detail
    assert "dnsRule d1" in info.value.detail


def test_a_dns_rule_of_the_other_ip_version_is_a_400(tmp_path):
    ledger, host = _ledger(tmp_path)
    traffic, (dns,) = _asking(1)
    from dataclasses import replace
    with pytest.raises(InvalidInput) as info:
        ledger.set_rules("a", traffic, (replace(dns, ip_address_type="IP_V6"),), host)
    assert "dnsRule d1: ipAddressType IP_V6" in info.value.detail
    assert "IP_V4 addresses (service range 10.171.0.0/24)" in info.value.detail


def test_a_fixed_address_outside_the_range_still_400(tmp_path):
    ledger, host = _ledger(tmp_path)
    with pytest.raises(InvalidInput) as info:
        ledger.set_rules("a", *_fixed("10.172.0.10"), host)
    assert "outside the service range 10.171.0.0/24" in info.value.detail


# ---------------------------------------------------------------- placement
def _cand(hid, cidr, cpus=4.0, memory=4096, manners=(C,)):
    room = Room(cpus, memory, 100.0, 0.0, 0, 0.0)
    return placement.Candidate(hid, True, {m.value: room for m in manners},
                               service_cidr=cidr)


NEED = Need(0.5, 64, 0.1)


def test_a_fixed_address_places_on_the_host_whose_range_holds_it():
    hosts = [_cand("edge1", RANGES["edge1"], cpus=8), _cand("edge2", RANGES["edge2"])]
    host, why = placement.choose(C, NEED, hosts, fixed=("10.172.0.10",))
    assert host == "edge2"
    assert why.startswith("edge2: the only host that fits, its service range 10.172.0.0/24 "
                          "holds 10.172.0.10")
    assert "edge1: its service range 10.171.0.0/24 does not hold 10.172.0.10" in why
    # no fixed address: the most room wins, and says so
    host, why = placement.choose(C, NEED, hosts)
    assert host == "edge1" and why.startswith("edge1: most room left") and "of 2 fitting" in why
    # a host that reports no range is not held to one (its MEP checks)
    assert placement.place(C, NEED, [_cand("old", None)], fixed=("10.9.9.9",)) == "old"


def test_an_address_in_no_range_is_a_409_naming_each_range():
    hosts = [_cand("edge1", RANGES["edge1"]), _cand("edge2", RANGES["edge2"])]
    with pytest.raises(CapacityExceeded) as info:
        placement.choose(C, NEED, hosts, fixed=("10.173.0.10",))
    d = info.value.detail
    assert "service address 10.173.0.10" in d
    assert "edge1: its service range 10.171.0.0/24 does not hold 10.173.0.10" in d
    assert "edge2: its service range 10.172.0.0/24 does not hold 10.173.0.10" in d


def test_a_host_where_the_address_or_name_is_held_is_left_out():
    """`Candidate.held` (the claims the placing level knows on the host):
    a host where another instance steers the fixed destination, or another
    app's instance has the DNS name, is left out in the host's words; what
    the host would allocate (no dstAddress) claims nothing here."""
    (tr,), _ = _fixed("10.171.0.10")
    held = (("i1", {"appDId": "a1", "trafficRules": [tr.to_etsi()], "dnsRules": [
        {"dnsRuleId": "d", "domainName": "x.mec.local", "ipAddressType": "IP_V4",
         "ipAddress": "10.171.0.11", "ttl": 60, "state": "ACTIVE"}]}),)
    from dataclasses import replace
    hosts = [replace(_cand("edge1", RANGES["edge1"], cpus=8), held=held),
             _cand("edge3", None)]
    traffic, dns = _fixed("10.171.0.10", 1)
    claims = placement.Claims(R.with_fixed_addresses(traffic), dns, "a2")
    host, why = placement.choose(C, NEED, hosts, claims=claims)
    assert host == "edge3"
    assert "edge1: trafficRule f1: 10.171.0.10:80/tcp/udp is steered by instance i1 (app a1, " \
           "trafficRule f0)" in why, why
    with pytest.raises(CapacityExceeded) as info:
        placement.choose(C, NEED, hosts, wanted=["edge1"], claims=claims)
    assert "steered by instance i1" in info.value.detail
    # a rule asking for its address claims none before its host gives one
    traffic, dns = _asking(2)
    asking = placement.Claims(R.with_fixed_addresses(traffic), dns, "a2")
    assert placement.place(C, NEED, hosts[:1], claims=asking) == "edge1"
    # a DNS name: another app's is held, the same app's replicas share it
    named = tuple(R.DnsRule.from_etsi(d) for d in held[0][1]["dnsRules"])
    assert "the name x.mec.local belongs to instance i1" in placement.why_not(
        hosts[0], C, NEED, claims=placement.Claims((), named, "a2"))
    assert placement.why_not(hosts[0], C, NEED, claims=placement.Claims((), named, "a1")) is None


def test_the_reason_names_the_winner_and_every_host_left_out():
    hosts = [_cand("edge1", None), _cand("edge2", None, manners=(C, VM)),
             _cand("edge3", None, cpus=8, manners=(C, VM))]
    host, why = placement.choose(VM, NEED, hosts)
    assert host == "edge3"
    assert why.startswith("edge3: most room left of 2 fitting (")
    assert why.endswith("free after it); edge1: no VIM: takes no VM")
    host, why = placement.choose(VM, NEED, hosts, wanted=["edge2"])
    assert why == "edge2: the selected host"


# ---------------------------------------------------------------- the single node, two hosts
def _rules_at(addr):
    return {"appTrafficRule": [{"trafficRuleId": "vip", "filterType": "FLOW", "priority": 1,
                                "trafficFilter": [{"dstAddress": [addr], "dstPort": ["80"],
                                                   "protocol": ["TCP"]}],
                                "action": "FORWARD_DECAPSULATED",
                                "dstInterface": [{"interfaceType": "IP"}]}],
            "appDNSRule": []}


def _node(tmp_path, state="node"):
    cfg = config.load()
    cfg["state_dir"] = str(tmp_path / state)
    base = cfg["hosts"][0]
    cfg["hosts"] = [{**base, "id": hid, "vim": None,
                     "cim": {**base["cim"], "state_dir": str(tmp_path / state / hid)},
                     "mep": {**base["mep"], "service_cidr": cidr}}
                    for hid, cidr in RANGES.items()]
    orch = Orchestrator(cfg)
    meps = {}
    for hid in RANGES:
        host = orch.inventory.get(hid)
        host.attach("cim", FakeCompute(C, cpus=2 if hid == "edge1" else 4))
        meps[hid] = FakeMep()
        host.attach("mep", meps[hid])
    return orch, meps


@pytest.fixture
def node(tmp_path):
    orch, meps = _node(tmp_path)
    server, c = serve(orch)
    yield orch, meps, c
    server.shutdown()
    server.server_close()
    orch.close()


def _in(addr, cidr):
    return R.in_range(addr, cidr)


def test_single_node_allocates_per_host_places_by_range_and_explains(node, tmp_path, caplog):
    orch, meps, c = node
    caplog.set_level(logging.INFO, logger="mecorch.events")
    pkg = onboard_with(c, tmp_path)
    # the sample as packaged, no host named: the host with most room, an
    # address of its range, the DNS rule answering it
    iid, op = deploy(c, pkg["appDId"])
    assert op["operationState"] == "COMPLETED", op
    inst = c.get(f"{INST}/{iid}")
    assert inst["hostId"] == "edge2"
    addr = inst["allocatedResources"]["serviceAddress"]
    assert addr == "10.172.0.1" and inst["allocatedResources"]["serviceAddresses"] == [addr]
    (tr,) = c.get(f"{MP1}/{iid}/traffic_rules")
    (dns,) = c.get(f"{MP1}/{iid}/dns_rules")
    assert tr["trafficFilter"][0]["dstAddress"] == [addr] and dns["ipAddress"] == addr
    assert inst["decisionReason"] == op["decisionReason"]
    assert inst["decisionReason"].startswith("the app was onboarded as CONTAINER")
    assert "; placed on edge2: most room left of 2 fitting (" in inst["decisionReason"]
    (placed,) = [r for r in caplog.records if r.getMessage() == "instance.placed"]
    assert placed.mecorch_fields == {"instance": iid, "host": "edge2", "manner": "CONTAINER",
                                     "reason": inst["decisionReason"]}
    # a second one on the same host: the next address
    iid2, op = deploy(c, pkg["appDId"], selectedMECHostInfo=[{"hostId": {"id": "edge2"}}])
    assert c.get(f"{INST}/{iid2}")["allocatedResources"]["serviceAddress"] == "10.172.0.2"
    assert "placed on edge2: the selected host" in op["decisionReason"]
    # a fixed address of edge1's range lands on edge1, though edge2 has more room
    iid3, op = deploy(c, pkg["appDId"], **_rules_at("10.171.0.10"))
    assert op["operationState"] == "COMPLETED", op
    assert c.get(f"{INST}/{iid3}")["hostId"] == "edge1"
    assert "edge2: its service range 10.172.0.0/24 does not hold 10.171.0.10" \
        in op["decisionReason"]
    # an address in no range: 409 naming both ranges, nothing made
    inst4 = c.post(INST, {"appDId": pkg["appDId"]})[0]
    with pytest.raises(ApiError) as info:
        c.post(f"{INST}/{inst4['id']}/instantiate", _rules_at("10.173.0.10"))
    assert info.value.status == 409
    assert "10.171.0.0/24" in info.value.detail and "10.172.0.0/24" in info.value.detail
    # terminate frees the address: the next instance on edge2 gets it
    op, _ = c.post(f"{INST}/{iid}/terminate", {"terminationType": "FORCEFUL"})
    assert c.wait_op(op, timeout=20)["operationState"] == "COMPLETED"
    iid5, _ = deploy(c, pkg["appDId"], selectedMECHostInfo=[{"hostId": {"id": "edge2"}}])
    assert c.get(f"{INST}/{iid5}")["allocatedResources"]["serviceAddress"] == "10.172.0.1"


def test_the_address_is_kept_across_a_restart(tmp_path):
    orch, _ = _node(tmp_path)
    server, c = serve(orch)
    try:
        pkg = onboard_with(c, tmp_path)
        iid, op = deploy(c, pkg["appDId"], selectedMECHostInfo=[{"hostId": {"id": "edge1"}}])
        assert op["operationState"] == "COMPLETED", op
    finally:
        server.shutdown()
        server.server_close()
        orch.close()
    orch, _ = _node(tmp_path)
    server, c = serve(orch)
    try:
        (dns,) = c.get(f"{MP1}/{iid}/dns_rules")
        assert dns["ipAddress"] == "10.171.0.1"
        # the restarted ledger holds it: the next claim gets the next address
        orch.mep.set_rules("other", *_asking(9), orch.inventory.get("edge1"))
        assert orch.store.get("rules", "other")["serviceAddress"] == "10.171.0.2"
    finally:
        server.shutdown()
        server.server_close()
        orch.close()


def test_an_mp1_put_without_address_keeps_the_allocated_one(node, tmp_path):
    orch, meps, c = node
    pkg = onboard_with(c, tmp_path)
    iid, _ = deploy(c, pkg["appDId"], selectedMECHostInfo=[{"hostId": {"id": "edge1"}}])
    (dns,) = c.get(f"{MP1}/{iid}/dns_rules")
    dns.pop("ipAddress")
    dns["ttl"] = 30
    new = c.call("PUT", f"{MP1}/{iid}/dns_rules/{dns['dnsRuleId']}", dns)[1]
    assert new["ipAddress"] == "10.171.0.1" and new["ttl"] == 30


# ---------------------------------------------------------------- the MEO over two hosts
@pytest.fixture
def meo_system(tmp_path):
    hosts = {}
    for hid, cidr in RANGES.items():
        cfg = config.load()
        cfg["state_dir"] = str(tmp_path / hid)
        cfg["hosts"][0].update(id=hid, vim=None)
        cfg["hosts"][0]["mep"]["service_cidr"] = cidr
        orch = Orchestrator(cfg)
        host = orch.inventory.get(hid)
        host.attach("cim", FakeCompute(C, cpus=2 if hid == "edge1" else 4))
        host.attach("vim", FakeCompute(VM))
        host.attach("mep", FakeMep())
        hosts[hid] = orch
    cfg = config.load()
    cfg["state_dir"] = str(tmp_path / "meo")
    cfg["hosts"] = []
    cfg["meo"]["heartbeat_s"] = 0
    meo = MeoOrchestrator(cfg)
    for hid, orch in hosts.items():
        meo.registry.attach(LocalMepm(orch, hid))
    server, c = serve(meo, "meo")
    yield meo, hosts, c
    server.shutdown()
    server.server_close()
    meo.close()
    for orch in hosts.values():
        orch.close()


def test_meo_places_by_range_allocates_on_each_host_and_logs(meo_system, tmp_path, caplog):
    meo, hosts, c = meo_system
    pkg = onboard_with(c, tmp_path)
    caplog.set_level(logging.INFO, logger="mecorch.meo.lcm")
    got = {}
    for hid in RANGES:
        iid, op = deploy(c, pkg["appDId"], selectedMECHostInfo=[{"hostId": {"id": hid}}])
        assert op["operationState"] == "COMPLETED", op
        inst = c.get(f"{INST}/{iid}")
        got[hid] = inst["allocatedResources"]["serviceAddress"]
        assert inst["decisionReason"] == op["decisionReason"]
        assert f"placed on {hid}: the selected host" in inst["decisionReason"]
        # the host's own rules hold the same address (Mp1 is the host's)
        held = [d for d in hosts[hid].store.list("rules") if d.get("claimHost") == hid]
        assert [d["dnsRules"][0]["ipAddress"] for d in held] == [got[hid]]
    assert got == {"edge1": "10.171.0.1", "edge2": "10.172.0.1"}
    # no host named: most room (edge2), and the reason says so
    iid, op = deploy(c, pkg["appDId"])
    assert c.get(f"{INST}/{iid}")["hostId"] == "edge2"
    assert "placed on edge2: most room left" in op["decisionReason"]
    # a fixed address of edge1's range: edge1
    iid, op = deploy(c, pkg["appDId"], **_rules_at("10.171.0.10"))
    assert op["operationState"] == "COMPLETED", op
    assert c.get(f"{INST}/{iid}")["hostId"] == "edge1"
    assert "edge2: its service range 10.172.0.0/24 does not hold 10.171.0.10" \
        in op["decisionReason"]
    placed = [r.getMessage() for r in caplog.records if " placed on " in r.getMessage()]
    assert len(placed) == 4 and "placed on edge1 as CONTAINER: edge1:" in placed[-1]
    # in no range: 409 naming both, logged as not placed
    inst = c.post(INST, {"appDId": pkg["appDId"]})[0]
    with pytest.raises(ApiError) as info:
        c.post(f"{INST}/{inst['id']}/instantiate", _rules_at("10.173.0.10"))
    assert info.value.status == 409
    assert "edge1: its service range 10.171.0.0/24 does not hold 10.173.0.10" \
        in info.value.detail
    assert "edge2: its service range 10.172.0.0/24 does not hold 10.173.0.10" \
        in info.value.detail
    assert any("not placed" in r.getMessage() for r in caplog.records)
    # the host list reports each range (what the MEO places by)
    infos = {e.host_id: e.info.service_cidr for e in meo.registry.entries()}
    assert infos == RANGES


def test_vm_sample_asks_for_an_address_too(node, tmp_path):
    orch, meps, c = node
    for hid in RANGES:
        orch.inventory.get(hid)._cfg["vim"] = {"driver": "fake"}
        orch.inventory.get(hid).attach("vim", FakeCompute(VM))
    pkg = onboard_with(c, tmp_path, VM_APPD)
    iid, op = deploy(c, pkg["appDId"], selectedMECHostInfo=[{"hostId": {"id": "edge1"}}])
    assert op["operationState"] == "COMPLETED", op
    (dns,) = c.get(f"{MP1}/{iid}/dns_rules")
    assert dns["ipAddress"] == "10.171.0.1"


# ---------------------------------------------------------------- the CLI
from support.corelab import env, onboard  # noqa: E402,F401,F811 - the fixture


def _cli(e, capsys, *argv):
    from mecorch import cli
    rc = cli.main(["--api", e.c.base, *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_deploy_with_service_address_and_rules(env, capsys, tmp_path):  # noqa: F811
    import json
    onboard(env)
    rc, out, _ = _cli(env, capsys, "app", "create", "sample-http", "--name", "one")
    iid = out.strip()
    # --service-address fixes the address the AppD's rules ask for
    rc, out, err = _cli(env, capsys, "-o", "json", "app", "deploy", iid[:8],
                        "--service-address", "10.90.0.77")
    assert rc == 0, err
    shown = json.loads(out)
    assert shown["allocatedResources"]["serviceAddresses"] == ["10.90.0.77"]
    assert shown["allocatedResources"]["serviceAddress"] is None   # fixed, not allocated
    assert "placed on default: the selected host" in shown["decisionReason"] or \
        "placed on default: the only host that fits" in shown["decisionReason"]
    (dns,) = env.c.get(f"{MP1}/{iid}/dns_rules")
    assert dns["ipAddress"] == "10.90.0.77"
    # --rules FILE: this deploy's rules (YAML), the address still given by the host
    rules = tmp_path / "rules.yaml"
    rules.write_text("appTrafficRule:\n"
                     "  - {trafficRuleId: web, filterType: FLOW, priority: 1,\n"
                     "     trafficFilter: [{dstPort: ['8080'], protocol: [TCP]}],\n"
                     "     action: FORWARD_DECAPSULATED}\n"
                     "appDNSRule:\n"
                     "  - {dnsRuleId: web, domainName: web.mec.local, ipAddressType: IP_V4}\n")
    rc, out, _ = _cli(env, capsys, "app", "create", "sample-http", "--name", "two")
    iid2 = out.strip()
    rc, out, err = _cli(env, capsys, "app", "deploy", iid2[:8], "--rules", str(rules))
    assert rc == 0, err                     # text mode: the instance as key: value lines
    assert "allocatedResources.serviceAddress: 10.90.0.1" in out.splitlines()
    (dns,) = env.c.get(f"{MP1}/{iid2}/dns_rules")
    assert (dns["domainName"], dns["ipAddress"]) == ("web.mec.local", "10.90.0.1")


def test_cli_rule_options_are_checked_naming_the_field(env, capsys, tmp_path):  # noqa: F811
    onboard(env)
    rc, out, _ = _cli(env, capsys, "app", "create", "sample-http")
    iid = out.strip()[:8]
    bad = tmp_path / "bad.yaml"
    cases = [
        ("appTrafficRule: {}\n", "appTrafficRule must be a list"),
        ("appTraficRule: []\n", "unknown field 'appTraficRule'"),
        ("appDNSRule:\n  - {dnsRuleId: x, domainName: x.mec.local, ipAddressType: IPV4}\n",
         "appDNSRule[0].ipAddressType: must be one of IP_V4, IP_V6"),
        ("appTrafficRule:\n  - {trafficRuleId: t, filterType: FLOW, priority: 1, action: DROP,"
         "\n     trafficFilter: [{dstPort: ['99999']}]}\n",
         "appTrafficRule[0].trafficFilter[0].dstPort[0]"),
        ("- 1\n", "must be a mapping"),
    ]
    for text, says in cases:
        bad.write_text(text)
        rc, _, err = _cli(env, capsys, "app", "deploy", iid, "--rules", str(bad))
        assert rc == 2 and f"--rules {bad}" in err and says in err, (text, err)
    rc, _, err = _cli(env, capsys, "app", "deploy", iid, "--rules", str(tmp_path / "none"))
    assert rc == 2 and "--rules" in err
    rc, _, err = _cli(env, capsys, "app", "deploy", iid, "--service-address", "10.90.0")
    assert rc == 2 and "--service-address '10.90.0': must be an IP address" in err
    fixed = tmp_path / "fixed.yaml"
    fixed.write_text("appDNSRule:\n  - {dnsRuleId: x, domainName: x.mec.local, "
                     "ipAddressType: IP_V4, ipAddress: 10.90.0.5}\n")
    rc, _, err = _cli(env, capsys, "app", "deploy", iid, "--rules", str(fixed),
                      "--service-address", "10.90.0.6")
    assert rc == 2 and "the rules ask for no service address" in err
    # nothing was deployed by any of these
    assert env.c.get(f"{INST}/{out.strip()}")["instantiationState"] == "NOT_INSTANTIATED"
