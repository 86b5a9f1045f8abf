"""LinuxMEP against real iptables and a real dnsmasq, inside network
namespaces these tests make (the host's own iptables is never touched).

Topology (all addresses exist only inside the namespaces made here):

    client ns  10.231.1.2 --veth-- 10.231.1.1  edge ns (the MEP: iptables,
                                   10.231.2.1  dnsmasq on 10.231.1.1)
    instance ns 10.231.2.2, 10.231.2.3 --veth--/

The client's default route is the edge; the edge forwards. A "service"
address 10.231.3.80 exists nowhere: only a FORWARD rule (DNAT in the edge)
makes it reach the instance's HTTP server, which answers with the address
it was reached on.
"""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path

import pytest

from drivers.linux_mep import LinuxMEP, dnsmasq, iptables
from mecorch.kernel.errors import BackendError, InvalidInput, UnsupportedAction
from mecorch.spec.rules import DnsRule, TrafficRule

from conftest import run
from support.netns import (  # noqa: F401
    INSTANCE_A, INSTANCE_B, Lab, PORT, SERVICE, dns, forward, ns, poll)

pytestmark = pytest.mark.mep


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = Lab(tmp_path_factory.mktemp("mep"))
    try:
        lab.up()
        lab.driver.open()
        yield lab
    finally:
        pid = lab.driver.dnsmasq_pid() if lab.driver else None
        lab.down()
    # Nothing leaked: namespaces gone, our dnsmasq gone.
    left = run("ip", "netns", "list").stdout
    assert lab.edge not in left and lab.client not in left and lab.inst not in left
    assert pid is None or not Path(f"/proc/{pid}").exists()


# -- DNS ---------------------------------------------------------------------------------

def test_open_is_idempotent_and_doctor_passes(lab):
    pid = lab.driver.dnsmasq_pid()
    before = lab.driver.chains_text()
    lab.driver.open()
    LinuxMEP(lab.driver.config).open()          # another process would find it running
    assert lab.driver.dnsmasq_pid() == pid and pid is not None
    assert lab.driver.chains_text() == before
    checks = lab.driver.check()
    assert all(c.ok for c in checks), checks
    assert "nf_tables" in checks[1].detail


def test_dns_rule_resolves_changes_and_goes_away_without_restart(lab):
    d = lab.driver
    pid = d.dnsmasq_pid()
    d.apply_rules("dns-a", INSTANCE_A, [], [dns()])
    assert poll(lambda: lab.dig("app.mect.test"), "10.231.2.2") == "10.231.2.2"
    d.apply_rules("dns-a", INSTANCE_A, [], [dns(ip="10.231.2.3")])
    assert poll(lambda: lab.dig("app.mect.test"), "10.231.2.3") == "10.231.2.3"
    d.apply_rules("dns-a", INSTANCE_A, [], [dns(ip="10.231.2.3", state="INACTIVE")])
    assert poll(lambda: lab.dig("app.mect.test"), "") == ""
    assert "dns-a" not in d.rule_owners()
    d.apply_rules("dns-a", INSTANCE_A, [], [dns()])
    assert poll(lambda: lab.dig("app.mect.test"), "10.231.2.2") == "10.231.2.2"
    assert "dns-a" in d.rule_owners()
    d.remove_rules("dns-a")
    assert poll(lambda: lab.dig("app.mect.test"), "") == ""
    d.remove_rules("dns-a")                     # already gone: success
    assert d.dnsmasq_pid() == pid               # never restarted
    assert list(d.hosts_dir.iterdir()) == []


def test_dns_ipv6_rule_and_ttl_policy(lab):
    d = lab.driver
    v6 = DnsRule.from_etsi({"dnsRuleId": "d6", "domainName": "v6.mect.test", "ipAddressType": "IP_V6",
                            "ipAddress": "2001:db8::7", "state": "ACTIVE", "ttl": 300})
    d.apply_rules("dns-6", INSTANCE_A, [], [v6])
    try:
        assert poll(lambda: lab.dig("v6.mect.test", "AAAA"), "2001:db8::7") == "2001:db8::7"
        # ttl 300 is served with the configured local ttl (0): never cached longer.
        out = ns(lab.client, "dig", "+noall", "+answer", "@10.231.1.1", "-p", "5353",
                 "v6.mect.test", "AAAA").stdout.split()
        assert out[1] == "0"
    finally:
        d.remove_rules("dns-6")
    strict = LinuxMEP({**d.config, "dns_ttl": 60})
    with pytest.raises(UnsupportedAction, match="ttl 30"):
        strict.apply_rules("dns-t", INSTANCE_A, [], [dns(ttl=30)])


# -- traffic -------------------------------------------------------------------------------

def test_forward_steers_drop_blocks_and_removal_restores_chains(lab):
    d = lab.driver
    before = lab.snapshot()
    chains_before = d.chains_text()
    assert lab.get() is None                          # the service address leads nowhere yet
    d.apply_rules("web-a", INSTANCE_A, [forward()], [dns()])
    assert lab.get() == f"reached {INSTANCE_A}"
    assert "web-a" in d.rule_owners()
    assert "web-a" in LinuxMEP(d.config).rule_owners()   # found from the backend alone
    # A DROP of higher priority (lower number) wins over the FORWARD...
    d.apply_rules("web-a", INSTANCE_A, [forward(), forward("x", 1, "DROP")], [dns()])
    assert lab.get() is None
    # ...a lower-priority DROP does not.
    d.apply_rules("web-a", INSTANCE_A, [forward(), forward("x", 99, "DROP")], [dns()])
    assert lab.get() == f"reached {INSTANCE_A}"
    # DROP also blocks the instance's own address; PASSTHROUGH first lets it be.
    d.apply_rules("web-a", INSTANCE_A, [forward("x", 5, "DROP", dst=INSTANCE_A)], [])
    assert lab.get(INSTANCE_A) is None
    d.apply_rules("web-a", INSTANCE_A, [forward("x", 5, "DROP", dst=INSTANCE_A),
                                       forward("p", 4, "PASSTHROUGH", dst=INSTANCE_A)], [])
    assert lab.get(INSTANCE_A) == f"reached {INSTANCE_A}"
    # dstInterface IP may name the target address; any other is refused with
    # nothing changed (a rule steers only to its own instance, issue 28);
    # INACTIVE rules are not applied.
    d.apply_rules("web-a", INSTANCE_A, [forward(dstInterface={"interfaceType": "IP",
                                                              "dstIpAddress": INSTANCE_A})], [])
    assert lab.get() == f"reached {INSTANCE_A}"
    applied = d.chains_text()
    with pytest.raises(InvalidInput, match=f"dstIpAddress {INSTANCE_B}"):
        d.apply_rules("web-a", INSTANCE_A, [forward(dstInterface={
            "interfaceType": "IP", "dstIpAddress": INSTANCE_B})], [])
    assert d.chains_text() == applied and lab.get() == f"reached {INSTANCE_A}"
    d.apply_rules("web-a", INSTANCE_A, [forward(state="INACTIVE")], [])
    assert lab.get() is None
    d.apply_rules("web-a", INSTANCE_A, [forward()], [dns()])
    d.remove_rules("web-a")
    assert lab.get() is None
    assert d.chains_text() == chains_before
    assert lab.snapshot() == before                  # byte for byte, files too
    assert "web-a" not in d.rule_owners()


def test_two_instances_are_independent(lab):
    d = lab.driver
    before = lab.snapshot()
    d.apply_rules("two-a", INSTANCE_A, [forward(port=PORT)], [dns("d", "a.mect.test")])
    d.apply_rules("two-b", INSTANCE_B, [forward(dst="10.231.3.81")], [dns("d", "b.mect.test", INSTANCE_B)])
    assert lab.get() == f"reached {INSTANCE_A}"
    assert lab.get("10.231.3.81") == f"reached {INSTANCE_B}"
    assert poll(lambda: lab.dig("b.mect.test"), INSTANCE_B) == INSTANCE_B
    assert {"two-a", "two-b"} <= d.rule_owners()
    d.apply_rules("two-a", INSTANCE_A, [], [])              # A empties its set
    assert lab.get() is None and lab.get("10.231.3.81") == f"reached {INSTANCE_B}"
    assert poll(lambda: lab.dig("a.mect.test"), "") == ""
    assert lab.dig("b.mect.test") == INSTANCE_B
    d.remove_rules("two-b")
    assert lab.snapshot() == before


def test_replicas_parts_read_back_as_applied_and_a_stale_part_is_seen(lab):
    """Two replicas of one address: what iptables-save shows of their
    parts and jump order is what `rules_applied` expects (reconciliation
    leaves them alone); told three replicas, or its jump moved out of
    order, it is not; applied again, it is. The spreading itself:
    tests/conformance/test_platform_contract.py."""
    d = lab.driver
    before = lab.snapshot()
    rules, names = [forward(port=PORT)], [dns("d", "rep.mect.test", SERVICE)]
    two = {rules[0].traffic_rule_id: ("rep-a", "rep-b")}
    three = {rules[0].traffic_rule_id: ("rep-a", "rep-b", "rep-c")}
    d.apply_rules("rep-a", INSTANCE_A, rules, names, two)
    d.apply_rules("rep-b", INSTANCE_B, rules, names, two)
    try:
        for iid, ip in (("rep-a", INSTANCE_A), ("rep-b", INSTANCE_B)):
            assert d.rules_applied(iid, ip, rules, names, shares=two)
        assert not d.rules_applied("rep-a", INSTANCE_A, rules, names, shares=three)
        assert not d.rules_applied("rep-a", INSTANCE_A, rules, names)      # alone: no part
        # rep-a's jump moved behind rep-b's (as an older mecorch left it)
        chain = iptables.instance_chain(d.prefix, "rep-a")
        jump = f'-m comment --comment "mecorch:rep-a" -j {chain}'
        ns(lab.edge, "iptables", "-t", "nat", "-D", f"{d.prefix}-PRE", *jump.replace(
            '"', "").split())
        ns(lab.edge, "iptables", "-t", "nat", "-A", f"{d.prefix}-PRE", *jump.replace(
            '"', "").split())
        assert not d.rules_applied("rep-a", INSTANCE_A, rules, names, shares=two)
        d.apply_rules("rep-a", INSTANCE_A, rules, names, two)
        assert d.rules_applied("rep-a", INSTANCE_A, rules, names, shares=two)
        assert d.rules_applied("rep-b", INSTANCE_B, rules, names, shares=two)
    finally:
        d.remove_rules("rep-a")
        d.remove_rules("rep-b")
    assert lab.snapshot() == before


def test_a_change_reads_the_same_chains_as_a_full_iptables_save(lab):
    """apply/remove read only the hooks, the top chain and the instance's
    chain (`iptables -S CHAIN` each): what they read equals those chains in
    a full iptables-save, for an instance with rules, one without and one
    whose chain does not exist."""
    d = lab.driver
    before = lab.snapshot()
    d.apply_rules("read-a", INSTANCE_A, [forward(port=PORT)], [])
    d.apply_rules("read-b", INSTANCE_B, [forward(dst="10.231.3.82")], [])
    try:
        full = d._save()
        for iid in ("read-a", "read-b", "read-none"):
            read = d._read_chains(iid)
            chain = iptables.instance_chain(d.prefix, iid)
            for table in iptables.TABLES:
                names = [*iptables.HOOKS, iptables.top_chain(d.prefix, table), chain]
                want = {n: full[table][n] for n in names if n in full[table]}
                assert read[table] == want, (iid, table)
            want_change = iptables.transition(full, d.prefix, iid, {})
            assert iptables.transition(read, d.prefix, iid, {}) == want_change
            assert iptables.current(read, d.prefix, iid) == iptables.current(full, d.prefix, iid)
        assert iptables.instance_chain(d.prefix, "read-a") in d._read_chains("read-a")["nat"]
        assert iptables.instance_chain(d.prefix, "read-none") not in d._read_chains("read-none")["nat"]
    finally:
        d.remove_rules("read-a")
        d.remove_rules("read-b")
    assert lab.snapshot() == before


def test_rules_change_and_go_away_when_read_chain_by_chain(lab, monkeypatch):
    """The path a host with many instances takes (READ_BY_CHAIN_AT): apply,
    change, empty and remove, each reading the chains one by one."""
    import drivers.linux_mep.driver as linux_driver
    monkeypatch.setattr(linux_driver, "READ_BY_CHAIN_AT", 0)
    d = lab.driver
    before = lab.snapshot()
    # another instance's rule, held throughout: no change of "bychain" may
    # touch it (the top chain holds both jumps)
    d.apply_rules("bychain-other", INSTANCE_B, [forward(dst="10.231.3.83")], [])
    d.apply_rules("bychain", INSTANCE_A, [forward(port=PORT)], [])
    assert lab.get() == f"reached {INSTANCE_A}"
    d.apply_rules("bychain", INSTANCE_B, [forward(port=PORT)], [])       # moved
    assert lab.get() == f"reached {INSTANCE_B}"
    d.apply_rules("bychain", INSTANCE_B, [], [])
    assert lab.get() is None
    d.remove_rules("bychain")
    d.remove_rules("bychain")                      # gone already: fine
    assert lab.get("10.231.3.83") == f"reached {INSTANCE_B}"
    d.remove_rules("bychain-other")
    assert lab.snapshot() == before


def test_unsupported_action_changes_nothing(lab):
    d = lab.driver
    d.apply_rules("uns", INSTANCE_A, [forward()], [dns()])
    try:
        before = lab.snapshot()
        for rule in (forward(action="FORWARD_ENCAPSULATED"), forward(action="DUPLICATE_DECAPSULATED"),
                     forward(dst="2001:db8::1")):
            with pytest.raises(UnsupportedAction):
                d.apply_rules("uns", INSTANCE_A, [rule], [dns(ip="10.231.2.3")])
            assert lab.snapshot() == before
    finally:
        d.remove_rules("uns")


def test_iptables_failure_leaves_dns_and_chains_unchanged(lab):
    """Real failure half-way: a foreign nat rule references the instance's
    chain, so removing it fails in nat after raw was already committed
    (iptables-nft commits per table). The raw part must be put back and the
    DNS file must not change."""
    d = lab.driver
    d.apply_rules("atom", INSTANCE_A, [forward()], [dns(name="atom.mect.test")])
    chain = iptables.instance_chain(d.prefix, "atom")
    ns(lab.edge, "iptables", "-t", "nat", "-N", "FOREIGN")
    ns(lab.edge, "iptables", "-t", "nat", "-A", "FOREIGN", "-j", chain)
    try:
        before = lab.snapshot()
        with pytest.raises(BackendError, match="iptables-restore"):
            d.apply_rules("atom", INSTANCE_A, [forward(state="INACTIVE")],
                          [dns(name="atom.mect.test", state="INACTIVE")])
        assert lab.snapshot() == before
        assert lab.get() == f"reached {INSTANCE_A}"
        assert lab.dig("atom.mect.test") == INSTANCE_A
    finally:
        ns(lab.edge, "iptables", "-t", "nat", "-F", "FOREIGN")
        ns(lab.edge, "iptables", "-t", "nat", "-X", "FOREIGN")
    d.remove_rules("atom")


def test_dns_failure_puts_chains_back(lab):
    """Real failure at the last step: the DNS file cannot be renamed into
    place (a directory sits at its name); the chains go back as they were."""
    d = lab.driver
    before = lab.snapshot()
    (d.hosts_dir / "dnsfail").mkdir()
    try:
        with pytest.raises(BackendError):
            d.apply_rules("dnsfail", INSTANCE_A, [forward()], [dns(name="fail.mect.test")])
        assert lab.get() is None
        files = sorted(p.name for p in d.hosts_dir.iterdir())
        assert files == ["dnsfail"]                # no staged file left behind
    finally:
        (d.hosts_dir / "dnsfail").rmdir()
    assert lab.snapshot() == before


# -- hostile input ---------------------------------------------------------------------------

PAYLOADS = [
    "a\nb", "x\r\n-A INPUT -j ACCEPT", "#comment", "-- -j ACCEPT", "-j ACCEPT",
    "--address=/x/1.2.3.4", "a\x00b", "x" * 300, "app.\u00e9xample.test", "\u0430pp.test",
    "$(reboot)", "`id`", "a;b", "a|b", "a b", "a&&b", "'\"", "../../etc/passwd", "",
    "10.0.0.1 -j ACCEPT", "10.0.0.1\n", "80 --dport 22", "fe80::1%lo -j DROP",
]
GOOD_DNS = {"dnsRuleId": "h1", "domainName": "hostile.mect.test", "ipAddressType": "IP_V4",
            "ipAddress": "10.231.2.2", "ttl": 0, "state": "ACTIVE"}
GOOD_TR = {"trafficRuleId": "h1", "filterType": "FLOW", "priority": 1,
           "trafficFilter": [{"srcAddress": ["10.231.1.2"], "dstAddress": [SERVICE],
                              "srcPort": ["1000-65535"], "dstPort": ["8080"], "protocol": ["tcp"],
                              "token": ["t"], "srcTunnelAddress": ["10.0.0.1"],
                              "tgtTunnelAddress": ["10.0.0.2"], "srcTunnelPort": ["2152"],
                              "dstTunnelPort": ["2152"], "qCI": 1, "dSCP": 1, "tC": 1}],
           "action": "FORWARD_DECAPSULATED", "state": "ACTIVE",
           "dstInterface": {"interfaceType": "TUNNEL", "srcMacAddress": "02-00-00-00-00-01",
                            "dstMacAddress": "02-00-00-00-00-02", "dstIpAddress": "10.231.2.2",
                            "tunnelInfo": {"tunnelType": "GTP_U", "tunnelDstAddress": "10.0.0.3",
                                           "tunnelSrcAddress": "10.0.0.4"}}}
# Every leaf of both rules: (which rule, path of keys/indexes).
DNS_PATHS = [("dns", (k,)) for k in GOOD_DNS]
TR_PATHS = ([("tr", (k,)) for k in GOOD_TR if k not in ("trafficFilter", "dstInterface")]
            + [("tr", ("trafficFilter", 0, k) + ((0,) if isinstance(v, list) else ()))
               for k, v in GOOD_TR["trafficFilter"][0].items()]
            + [("tr", ("dstInterface", k)) for k in GOOD_TR["dstInterface"] if k != "tunnelInfo"]
            + [("tr", ("dstInterface", "tunnelInfo", k)) for k in GOOD_TR["dstInterface"]["tunnelInfo"]])


def _inject(doc: dict, path: tuple, value) -> dict:
    doc = copy.deepcopy(doc)
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return doc


def test_every_field_is_a_full_schema_leaf():
    # DnsRule: 6 fields; TrafficRule: 5 scalars, 13 TrafficFilter fields,
    # 4 DestinationInterface scalars, 3 TunnelInfo fields (the whole schema).
    assert len(DNS_PATHS) == 6 and len(TR_PATHS) == 5 + 13 + 4 + 3


def test_hostile_input_refused_and_nothing_changed(lab):
    d = lab.driver
    d.apply_rules("calm", INSTANCE_A, [forward()], [dns()])   # something to stay untouched
    try:
        before = lab.snapshot()
        GOOD_TR_OK = TrafficRule.from_etsi(GOOD_TR)          # the untouched docs are valid
        DnsRule.from_etsi(GOOD_DNS)
        assert GOOD_TR_OK.dst_interface[0].interface_type == "TUNNEL"
        refused = 0
        for kind, path in DNS_PATHS + TR_PATHS:
            # Wrong JSON types too; an array item also gets a number instead of a string.
            for payload in PAYLOADS + [{"x": 1}, ["x"], 10**20] + ([1] if path[-1] == 0 else []):
                good = GOOD_DNS if kind == "dns" else GOOD_TR
                doc = _inject(good, path, payload)
                with pytest.raises(InvalidInput) as err:
                    rule = (DnsRule if kind == "dns" else TrafficRule).from_etsi(doc)
                    d.apply_rules("calm", INSTANCE_A, *(([], [rule]) if kind == "dns" else ([rule], [])))
                assert not isinstance(err.value, UnsupportedAction), (path, payload)
                field = str(path[-1] if not isinstance(path[-1], int) else path[-2])
                assert field in err.value.detail, (path, payload, err.value.detail)
                refused += 1
        # The driver's own arguments too.
        for payload in PAYLOADS + [None, 5]:
            with pytest.raises(InvalidInput):
                d.apply_rules(payload, INSTANCE_A, [forward()], [dns()])
            with pytest.raises(InvalidInput):
                d.apply_rules("calm", payload, [forward()], [dns()])
            with pytest.raises(InvalidInput):
                d.remove_rules(payload)
        with pytest.raises(InvalidInput):
            d.apply_rules("calm", INSTANCE_A, [GOOD_TR], [])         # a dict, not a rule
        with pytest.raises(InvalidInput, match="duplicate"):
            d.apply_rules("calm", INSTANCE_A, [forward(), forward()], [])
        assert refused > 500
        assert lab.snapshot() == before
        assert lab.get() == f"reached {INSTANCE_A}"
    finally:
        d.remove_rules("calm")


def test_a_dns_only_change_leaves_iptables_alone(lab):
    """Changing only DNS rules (same traffic rules as last applied, chains
    still of that shape) runs no iptables-restore; a traffic change does."""
    d = lab.driver
    d.apply_rules("dnsonly", INSTANCE_A, [forward()], [dns(name="only.mect.test")])
    restores = []
    real = d._restore
    d._restore = lambda text: (restores.append(text), real(text))
    try:
        d.apply_rules("dnsonly", INSTANCE_A, [forward()], [dns(name="only.mect.test",
                                                               ip=INSTANCE_B)])
        assert poll(lambda: lab.dig("only.mect.test"), INSTANCE_B) == INSTANCE_B
        assert restores == [""] and lab.get() == f"reached {INSTANCE_A}"
        d.apply_rules("dnsonly", INSTANCE_B, [forward()], [dns(name="only.mect.test")])
        assert restores[-1] and lab.get() == f"reached {INSTANCE_B}"
        # chains changed behind its back (flushed): the shape differs, so it restores
        ns(lab.edge, "iptables", "-t", "nat", "-F", iptables.instance_chain(d.prefix, "dnsonly"))
        d.apply_rules("dnsonly", INSTANCE_B, [forward()], [dns(name="only.mect.test")])
        assert restores[-1] and lab.get() == f"reached {INSTANCE_B}"
    finally:
        d._restore = real
        d.remove_rules("dnsonly")


def test_clients_dns_on_port_53_forwards_upstream_as_configured(lab):
    """The clients' listener: port 53 of the data-plane address and of the
    addresses serve_dns_on names (restarted only when they change); names
    that are no rule go to dns_upstream, names of the MEC domain never do;
    without upstream they are refused."""
    upstream = subprocess.Popen(
        ["ip", "netns", "exec", lab.client, "dnsmasq", "--no-daemon", "--conf-file=/dev/null",
         "--port=53", "--listen-address=10.231.1.2", "--bind-interfaces", "--no-resolv",
         "--no-hosts", "--address=/upstream.test/10.9.9.9", "--address=/mect.test/10.9.9.8"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run_dir = lab.tmp / "run-clients"
    mep = LinuxMEP({**lab.driver.config, "run_dir": str(run_dir), "dns_listen": "10.231.1.1",
                    "dns_port": 5354, "dns_upstream": ["10.231.1.2"], "dns_domain": "mect.test",
                    "data_plane_address": "10.231.1.1"})
    closed = LinuxMEP({**lab.driver.config, "run_dir": str(lab.tmp / "run-closed"),
                       "dns_port": 5355, "data_plane_address": "10.231.2.1"})

    def dig53(server, name):
        return ns(lab.client, "dig", "+short", "+time=1", "+tries=2", f"@{server}", name,
                  check=False).stdout.strip()
    try:
        mep.open()
        closed.open()
        lab.driver.apply_rules("dns53", INSTANCE_A, [], [dns(name="app53.mect.test")])
        assert poll(lambda: dig53("10.231.1.1", "app53.mect.test"), INSTANCE_A) == INSTANCE_A
        assert dig53("10.231.1.1", "upstream.test") == "10.9.9.9"        # forwarded
        assert dig53("10.231.1.1", "other.mect.test") == ""              # the MEC domain stays
        assert dig53("10.231.2.1", "app53.mect.test") == INSTANCE_A      # the closed MEP...
        refused = ns(lab.client, "dig", "+time=1", "+tries=1", "@10.231.2.1", "upstream.test",
                     check=False).stdout
        assert "status: REFUSED" in refused                              # ...forwards nothing
        closed.stop_services()
        pid = dnsmasq.live_pid(mep.clients_pid_file)
        mep.serve_dns_on([])                                             # same set: kept
        assert dnsmasq.live_pid(mep.clients_pid_file) == pid
        mep.serve_dns_on(["10.231.2.1"])                                 # a gateway more
        assert dnsmasq.live_pid(mep.clients_pid_file) not in (None, pid)
        assert mep.client_dns_addresses() == ["10.231.1.1", "10.231.2.1"]
        assert all(c.ok for c in mep.check()), mep.check()
    finally:
        lab.driver.remove_rules("dns53")
        for m in (mep, closed):
            m.stop_services()
        upstream.terminate()
        upstream.wait(10)
    assert dnsmasq.live_pid(mep.clients_pid_file) is None


def test_a_held_name_outside_the_mec_domain_is_answered_here_only(lab):
    """A DNS rule may hold a public name (one its app's package declares:
    video.example.com). Its A record is the rule's, on both listeners, and
    nothing else of it goes upstream: an AAAA from there would send a
    dual-stack UE past the edge instance (dnsmasq asks upstream for a
    hostsdir name's other types unless the name is local: the servers
    file). A name no rule holds still goes upstream; without one it is
    refused. Once the rule is gone, the name is the upstream's again."""
    upstream = subprocess.Popen(
        ["ip", "netns", "exec", lab.client, "dnsmasq", "--no-daemon", "--conf-file=/dev/null",
         "--port=53", "--listen-address=10.231.1.2", "--bind-interfaces", "--no-resolv",
         "--no-hosts", "--address=/video.example.com/10.9.9.7",
         "--address=/video.example.com/2001:db8::7", "--address=/nobody.example.com/10.9.9.6"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    mep = LinuxMEP({**lab.driver.config, "run_dir": str(lab.tmp / "run-public"),
                    "state_dir": str(lab.tmp / "state-public"), "dns_listen": "10.231.1.1",
                    "dns_port": 5356, "dns_upstream": ["10.231.1.2"], "dns_domain": "mect.test",
                    "data_plane_address": "10.231.1.1"})

    def ask(name, qtype="A", server="10.231.1.1", port="5356"):
        """(status, answers) of a query from the client ns."""
        out = ns(lab.client, "dig", "+noall", "+comments", "+answer", "+time=1", "+tries=2",
                 f"@{server}", "-p", port, name, qtype, check=False).stdout
        status = next((line.split("status: ")[1].split(",")[0] for line in out.splitlines()
                       if "status: " in line), None)
        return status, [line.split()[-1] for line in out.splitlines()
                        if line and not line.startswith(";")]
    try:
        mep.open()
        assert poll(lambda: ask("video.example.com", "AAAA"), ("NOERROR", ["2001:db8::7"])) \
            == ("NOERROR", ["2001:db8::7"])                     # nobody holds it: upstream's
        mep.apply_rules("pub", INSTANCE_A, [], [dns(name="video.example.com")])
        mep.apply_rules("own", INSTANCE_B, [], [dns(name="app.mect.test", ip=INSTANCE_B)])
        for server, port in (("10.231.1.1", "5356"), ("10.231.1.1", "53")):
            assert poll(lambda: ask("video.example.com", server=server, port=port),
                        ("NOERROR", [INSTANCE_A])) == ("NOERROR", [INSTANCE_A])
            assert poll(lambda: ask("video.example.com", "AAAA", server, port),
                        ("NOERROR", [])) == ("NOERROR", [])     # not asked upstream
            assert ask("nobody.example.com", server=server, port=port) == ("NOERROR",
                                                                         ["10.9.9.6"])
            assert ask("app.mect.test", server=server, port=port) == ("NOERROR", [INSTANCE_B])
        # only the held name outside the MEC domain is listed (the domain is --local)
        assert mep.servers_file.read_text().splitlines()[1:] == ["server=/video.example.com/"]
        mep.remove_rules("pub")
        assert poll(lambda: ask("video.example.com", "AAAA"), ("NOERROR", ["2001:db8::7"])) \
            == ("NOERROR", ["2001:db8::7"])
        assert ask("video.example.com") == ("NOERROR", ["10.9.9.7"])
        assert mep.servers_file.read_text().splitlines()[1:] == []
        # the lab's MEP has no upstream: a name nobody holds is refused there
        assert ask("nobody.example.com", port="5353")[0] == "REFUSED"
    finally:
        for iid in ("pub", "own"):
            mep.remove_rules(iid)
        mep.stop_services()
        upstream.terminate()
        upstream.wait(10)


def test_removing_what_was_applied_without_traffic_rules_reads_no_iptables(lab):
    """An instance this driver applied with DNS rules only has no chains:
    removing it runs no iptables at all and its name goes away. A driver
    that did not apply it (a new process) reads iptables and removes the
    chains it finds."""
    d = lab.driver
    d.apply_rules("nochains", INSTANCE_A, [], [dns(name="nochains.mect.test")])
    assert poll(lambda: lab.dig("nochains.mect.test"), INSTANCE_A) == INSTANCE_A
    ran = []
    real = d._run
    d._run = lambda *argv, **kw: (ran.append(argv[0]), real(*argv, **kw))[1]
    try:
        d.remove_rules("nochains")
        assert ran == []
        assert poll(lambda: lab.dig("nochains.mect.test"), "") == ""
        # chains applied, then forgotten (as by a restart): read and removed
        d._run = real
        chain = iptables.instance_chain(d.prefix, "nochains")
        d.apply_rules("nochains", INSTANCE_A, [forward()], [])
        assert chain in ns(lab.edge, "iptables-save", "-t", "nat").stdout
        d._applied.clear()
        d._run = lambda *argv, **kw: (ran.append(argv[0]), real(*argv, **kw))[1]
        d.remove_rules("nochains")
        assert "iptables-restore" in ran
        assert chain not in ns(lab.edge, "iptables-save", "-t", "nat").stdout
    finally:
        d._run = real
        d.remove_rules("nochains")
