"""Pure tests: rule value objects (mecorch.spec.rules) and the MEP renderers
(drivers.linux_mep.iptables / .dnsmasq). No backend needed."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from drivers.linux_mep import dnsmasq, iptables
from mecorch.kernel.errors import Conflict, InvalidInput, UnsupportedAction
from mecorch.spec.rules import DnsRule, TrafficRule

DNS = {"dnsRuleId": "dns1", "domainName": "app.mec.example", "ipAddressType": "IP_V4",
       "ipAddress": "10.0.0.5", "ttl": 30, "state": "ACTIVE"}
TR = {"trafficRuleId": "tr1", "filterType": "FLOW", "priority": 5,
      "trafficFilter": [{"dstAddress": ["10.9.0.80"], "dstPort": ["80"], "protocol": ["TCP"]}],
      "action": "FORWARD_DECAPSULATED", "state": "ACTIVE"}


def tr(**over) -> TrafficRule:
    d = copy.deepcopy(TR)
    d.update(over)
    return TrafficRule.from_etsi(d)


# -- value objects -----------------------------------------------------------------

def test_dns_rule_round_trip():
    rule = DnsRule.from_etsi(DNS)
    assert rule.active and rule.ttl == 30
    assert rule.to_etsi() == DNS
    assert DnsRule.from_etsi({**DNS, "domainName": "App.MEC.example."}).domain_name == "app.mec.example"
    no_ttl = {k: v for k, v in DNS.items() if k != "ttl"}
    assert DnsRule.from_etsi(no_ttl).to_etsi() == no_ttl


def test_dns_rule_ipv6_and_type_mismatch():
    assert DnsRule.from_etsi({**DNS, "ipAddressType": "IP_V6", "ipAddress": "2001:DB8::1"}).ip_address == "2001:db8::1"
    with pytest.raises(InvalidInput, match="dnsRule.ipAddress"):
        DnsRule.from_etsi({**DNS, "ipAddressType": "IP_V6"})


def test_traffic_rule_round_trip_normalises():
    rule = tr(dstInterface={"interfaceType": "IP", "dstIpAddress": "10.0.0.9"})
    out = rule.to_etsi()
    # the protocol is given back as sent ("TCP"); its value compares as "tcp"
    assert out["trafficFilter"] == [{"dstAddress": ["10.9.0.80"], "dstPort": ["80"],
                                     "protocol": ["TCP"]}]
    assert rule.traffic_filter[0].protocol == ("tcp",)
    assert out["dstInterface"] == {"interfaceType": "IP", "dstIpAddress": "10.0.0.9"}
    assert TrafficRule.from_etsi(out) == rule
    full = tr(trafficFilter=[{"srcAddress": ["192.0.2.0/24", "10.0.0.1-10.0.0.9"],
                              "srcPort": ["1000-2000"], "dstPort": ["443"], "protocol": ["udp", "17"],
                              "token": ["abc"], "srcTunnelAddress": ["10.1.1.1"],
                              "tgtTunnelAddress": ["10.1.1.2"], "srcTunnelPort": ["2152"],
                              "dstTunnelPort": ["2152"], "qCI": 9, "dSCP": 46, "tC": 1}],
              dstInterface=[{"interfaceType": "TUNNEL",
                             "tunnelInfo": {"tunnelType": "GTP_U", "tunnelDstAddress": "10.2.2.2"}},
                            {"interfaceType": "MAC", "dstMacAddress": "02-00-00-00-00-0A"}],
              action="DUPLICATE_ENCAPSULATED")
    assert TrafficRule.from_etsi(full.to_etsi()) == full


BAD_TRAFFIC = [
    ({"priority": 256}, "priority"), ({"priority": True}, "priority"),
    ({"priority": "1"}, "priority"), ({"filterType": "flow"}, "filterType"),
    ({"action": "ACCEPT"}, "action"), ({"state": "ON"}, "state"),
    ({"trafficFilter": []}, "trafficFilter"), ({"trafficFilter": [{}]}, "trafficFilter\\[0\\]"),
    ({"trafficFilter": [{"dstPort": [80]}]}, "dstPort\\[0\\]"),
    ({"trafficFilter": [{"dstPort": ["90-80"]}]}, "dstPort\\[0\\]"),
    ({"trafficFilter": [{"dstPort": ["0"]}]}, "dstPort\\[0\\]"),
    ({"trafficFilter": [{"dstAddress": ["10.0.0.9-10.0.0.1"]}]}, "dstAddress\\[0\\]"),
    ({"trafficFilter": [{"dstAddress": ["fe80::1%eth0"]}]}, "dstAddress\\[0\\]"),
    ({"trafficFilter": [{"protocol": ["tcp"], "dSCP": 64}]}, "dSCP"),
    ({"trafficFilter": [{"protocol": ["tcp"], "bogus": 1}]}, "unknown field 'bogus'"),
    ({"trafficFilter": [{"dstPort": ["80"] * 17}]}, "dstPort"),
    ({"action": "DROP", "dstInterface": {"interfaceType": "IP"}}, "dstInterface"),
    ({"dstInterface": {"interfaceType": "IP", "dstIpAddress": "x"}}, "dstIpAddress"),
    ({"dstInterface": {"interfaceType": "MAC", "dstMacAddress": "02:00"}}, "dstMacAddress"),
    ({"dstInterface": [{"interfaceType": "IP"}] * 3}, "dstInterface"),
    ({"extra": 1}, "unknown field 'extra'"), ({"trafficRuleId": "-j"}, "trafficRuleId"),
]


@pytest.mark.parametrize("over,field", BAD_TRAFFIC)
def test_traffic_rule_refuses_malformed(over, field):
    with pytest.raises(InvalidInput, match=field):
        tr(**over)


def test_missing_required_field_named():
    d = dict(TR)
    del d["priority"]
    with pytest.raises(InvalidInput, match="trafficRule.priority: is required"):
        TrafficRule.from_etsi(d)
    with pytest.raises(InvalidInput, match="dnsRule.state: is required"):
        DnsRule.from_etsi({k: v for k, v in DNS.items() if k != "state"})


def test_unsupported_actions_are_well_formed_here():
    for action in ("FORWARD_ENCAPSULATED", "DUPLICATE_DECAPSULATED", "DUPLICATE_ENCAPSULATED"):
        assert tr(action=action).action == action


# -- iptables renderer ------------------------------------------------------------------

def test_render_orders_by_priority_and_maps_actions():
    rules = [tr(trafficRuleId="low", priority=9, action="DROP"),
             tr(trafficRuleId="high", priority=0),
             tr(trafficRuleId="mid", priority=3, action="PASSTHROUGH", state="ACTIVE"),
             tr(trafficRuleId="off", priority=1, state="INACTIVE")]
    out = iptables.render_instance("MEC", "inst1", "10.0.1.2", rules)
    chain = iptables.instance_chain("MEC", "inst1")
    assert chain == "MEC-" + chain[4:] and len(chain) == 12
    assert out["nat"] == [
        f'-A {chain} -d 10.9.0.80 -p tcp -m tcp --dport 80 -m comment --comment "mecorch:inst1/high" -j DNAT --to-destination 10.0.1.2',
        f'-A {chain} -d 10.9.0.80 -p tcp -m tcp --dport 80 -m comment --comment "mecorch:inst1/mid" -j RETURN',
        f'-A {chain} -d 10.9.0.80 -p tcp -m tcp --dport 80 -m comment --comment "mecorch:inst1/low" -j RETURN']
    assert [l.rsplit(" -j ", 1)[1] for l in out["raw"]] == ["RETURN", "RETURN", "DROP"]


def test_render_expands_filters_and_ranges():
    rule = tr(trafficFilter=[{"srcAddress": ["10.0.0.1-10.0.0.9", "192.0.2.0/24"],
                              "dstPort": ["8000-8080"]}],
              dstInterface={"interfaceType": "IP", "dstIpAddress": "10.5.5.5"})
    # dstIpAddress may only name the instance's own address (issue 28)
    nat = iptables.render_instance("MEC", "i", "10.5.5.5", [rule])["nat"]
    assert len(nat) == 4            # 2 sources x (tcp, udp) since no protocol was given
    assert "-m iprange --src-range 10.0.0.1-10.0.0.9 -p tcp -m tcp --dport 8000:8080" in nat[0]
    assert "-s 192.0.2.0/24 -p udp -m udp --dport 8000:8080" in nat[3]
    assert all(l.endswith("DNAT --to-destination 10.5.5.5") for l in nat)


def test_render_nothing_active_is_empty():
    assert iptables.render_instance("MEC", "i", "10.0.1.2", [tr(state="INACTIVE")]) == {}


@pytest.mark.parametrize("over", [
    {"action": "FORWARD_ENCAPSULATED"}, {"action": "DUPLICATE_DECAPSULATED"},
    {"trafficFilter": [{"token": ["t"]}]}, {"trafficFilter": [{"qCI": 1}]},
    {"trafficFilter": [{"tC": 1}]}, {"trafficFilter": [{"srcTunnelPort": ["2152"]}]},
    {"trafficFilter": [{"dstAddress": ["2001:db8::1"]}]},
    {"trafficFilter": [{"protocol": ["icmp"], "dstPort": ["80"]}]},
    {"dstInterface": {"interfaceType": "MAC", "dstMacAddress": "02-00-00-00-00-01"}},
])
def test_render_refuses_what_iptables_cannot_express(over):
    with pytest.raises(UnsupportedAction, match="trafficRule tr1"):
        iptables.render_instance("MEC", "i", "10.0.1.2", [tr(**over)])


def test_render_caps_expansion():
    many = [str(p) for p in range(1, 17)]
    rule = tr(trafficFilter=[{"srcPort": many, "dstPort": many, "protocol": ["tcp", "udp"]}])
    with pytest.raises(InvalidInput, match="expand"):
        iptables.render_instance("MEC", "i", "10.0.1.2", [rule])


SAVE = """*raw
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:MEC-RAW - [0:0]
-A PREROUTING -j MEC-RAW
-A OUTPUT -j MEC-RAW
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:MEC-PRE - [0:0]
-A PREROUTING -j MEC-PRE
-A OUTPUT -j MEC-PRE
COMMIT
"""


def test_transition_add_then_remove():
    saved = iptables.parse_save(SAVE)
    assert iptables.base_text(saved, "MEC") == ""
    desired = iptables.render_instance("MEC", "i1", "10.0.1.2", [tr()])
    text = iptables.transition(saved, "MEC", "i1", desired)
    chain = iptables.instance_chain("MEC", "i1")
    assert text.splitlines()[:2] == ["*raw", f":{chain} - [0:0]"]
    assert f'-A MEC-PRE -m comment --comment "mecorch:i1" -j {chain}' in text
    assert text.count("COMMIT") == 2
    # Simulate iptables-save after applying, then remove.
    after = SAVE.replace("-A OUTPUT -j MEC-RAW\n", f"-A OUTPUT -j MEC-RAW\n:{chain} - [0:0]\n"
                         f'-A MEC-RAW -m comment --comment "mecorch:i1" -j {chain}\n'
                         + desired["raw"][0] + "\n")
    parsed = iptables.parse_save(after)
    assert iptables.owners(parsed, "MEC") == {"i1": chain}
    assert iptables.current(parsed, "MEC", "i1") == {"raw": desired["raw"], "nat": []}
    # Re-applying declares (flushes) the chain but does not add a second jump.
    again = iptables.transition(parsed, "MEC", "i1", desired)
    assert again.count("-A MEC-RAW ") == 0 and again.count("-A MEC-PRE ") == 1
    removal = iptables.transition(parsed, "MEC", "i1", {})
    assert removal == ("*raw\n" f'-D MEC-RAW -m comment --comment "mecorch:i1" -j {chain}\n'
                       f"-F {chain}\n-X {chain}\nCOMMIT\n")
    assert iptables.transition(saved, "MEC", "i1", {}) == ""


def test_transition_refuses_hash_collision():
    chain = iptables.instance_chain("MEC", "i1")
    saved = iptables.parse_save(SAVE.replace(
        "-A OUTPUT -j MEC-RAW\n",
        f'-A OUTPUT -j MEC-RAW\n-A MEC-RAW -m comment --comment "mecorch:other" -j {chain}\n'))
    with pytest.raises(Conflict):
        iptables.transition(saved, "MEC", "i1", {})


def test_base_text_creates_missing_chains_without_flushing():
    text = iptables.base_text({}, "MEC")
    assert ":MEC-RAW - [0:0]" in text and "-I PREROUTING 1 -j MEC-PRE" in text
    half = iptables.parse_save(SAVE.replace("-A OUTPUT -j MEC-PRE\n", ""))
    assert iptables.base_text(half, "MEC") == "*nat\n-I OUTPUT 1 -j MEC-PRE\nCOMMIT\n"


def test_chain_prefix_checked():
    for bad in ("", "1MEC", "MEC-X", "A" * 17, "M\nX"):
        with pytest.raises(InvalidInput, match="chain_prefix"):
            iptables.check_prefix(bad)


# -- dnsmasq renderer ---------------------------------------------------------------------

def test_render_hosts_active_only_sorted():
    rules = [DnsRule.from_etsi({**DNS, "dnsRuleId": "b", "domainName": "b.test"}),
             DnsRule.from_etsi({**DNS, "dnsRuleId": "a", "domainName": "a.test",
                                "ipAddressType": "IP_V6", "ipAddress": "2001:db8::5"}),
             DnsRule.from_etsi({**DNS, "dnsRuleId": "c", "state": "INACTIVE"})]
    assert dnsmasq.render_hosts("i1", rules) == (
        "# mecorch: DNS rules of instance i1 (generated, do not edit)\n"
        "# a\n2001:db8::5 a.test\n# b\n10.0.0.5 b.test\n")
    assert dnsmasq.render_hosts("i1", rules[2:]) == ""


def test_ttl_policy():
    dnsmasq.check_ttls([DnsRule.from_etsi(DNS)], 30)       # equal: served as asked
    dnsmasq.check_ttls([DnsRule.from_etsi(DNS)], 0)        # served shorter: accepted
    with pytest.raises(UnsupportedAction, match="ttl 30"):
        dnsmasq.check_ttls([DnsRule.from_etsi(DNS)], 60)


def test_dnsmasq_argv_has_no_config_or_upstream():
    from pathlib import Path
    argv = dnsmasq.argv(pid_file=Path("/r/p"), hosts_dir=Path("/s/h"), log_file=Path("/r/l"),
                        listen="127.0.0.1", port=5353, local_ttl=0, user="root")
    assert argv[0] == "dnsmasq" and "--conf-file=/dev/null" in argv
    assert {"--no-resolv", "--no-hosts", "--bind-interfaces", "--hostsdir=/s/h"} <= set(argv)


# -- ownership: what a rule claims (issue 12) --------------------------------------------

from mecorch.spec import rules as R       # noqa: E402 - grouped with the tests that use it


def _dest(**flt) -> list:
    return R.destinations(tr(trafficFilter=[flt]))


def test_destinations_and_their_overlap():
    mine = _dest(dstAddress=["10.90.0.10"], dstPort=["80"], protocol=["TCP"])
    assert mine[0].overlap(_dest(dstAddress=["10.90.0.0/28"], dstPort=["70-90"])[0]) \
        == "10.90.0.10:80/tcp"
    assert mine[0].overlap(_dest(dstAddress=["10.90.0.10"])[0]) == "10.90.0.10:80/tcp"
    assert mine[0].overlap(_dest(dstAddress=["10.90.0.10"], dstPort=["80"],
                                 protocol=["17"])[0]) is None
    assert mine[0].overlap(_dest(dstAddress=["10.90.0.11"], dstPort=["80"])[0]) is None
    everything = _dest(dstPort=["80"])               # no dstAddress: every v4 and v6 address
    assert len(everything) == 2 and any(d.overlap(mine[0]) for d in everything)
    whole = _dest(dstAddress=["10.90.0.1-10.90.0.20"])
    assert "every port" in whole[0].overlap(_dest(dstAddress=["10.90.0.20"])[0])
    assert _dest(dstAddress=["2001:db8::1"])[0].overlap(mine[0]) is None


def test_outside_the_service_range_and_below_domain():
    assert R.outside(tr(), "10.9.0.0/24") is None
    assert R.outside(tr(), "10.9.1.0/24") == "10.9.0.80"
    assert R.outside(tr(trafficFilter=[{"dstAddress": ["10.9.0.0/23"]}]), "10.9.0.0/24") \
        == "10.9.0.0/23"
    assert R.outside(tr(trafficFilter=[{"dstAddress": ["10.9.0.250-10.9.1.2"]}]),
                     "10.9.0.0/24") == "10.9.0.250-10.9.1.2"
    assert "every address" in R.outside(tr(trafficFilter=[{"dstPort": ["80"]}]), "10.9.0.0/24")
    assert R.below_domain("a.mec.local", "MEC.local.")
    assert not R.below_domain("mec.local", "mec.local")     # the domain is the host's
    assert not R.below_domain("evilmec.local", "mec.local")
    assert not R.below_domain("mec.local.evil.org", "mec.local")


def test_plumbing_chains_are_rendered_once_and_torn_down():
    saved = iptables.parse_save("*filter\n:FORWARD DROP [0:0]\nCOMMIT\n*nat\n:POSTROUTING ACCEPT"
                                " [0:0]\nCOMMIT\n*raw\nCOMMIT\n")
    text = iptables.base_text(saved, "MX", "10.9.0.0/24")
    assert "-I FORWARD 1 -j MX-FWD" in text and "-I POSTROUTING 1 -j MX-POST" in text
    assert "--ctstate DNAT --ctorigdst 10.9.0.0/24" in text
    assert "-j MASQUERADE" in text and text.count("-j ACCEPT") == 1
    # once applied (as iptables-save shows it), nothing more to do
    applied = iptables.parse_save("\n".join(
        [l if not l.startswith("-I ") else "-A " + l.split()[1] + " " + " ".join(l.split()[3:])
         for l in text.replace("COMMIT\n", "COMMIT\n").splitlines()]))
    assert iptables.base_text(applied, "MX", "10.9.0.0/24") == ""
    down = iptables.teardown_text(applied, "MX")
    assert "-D FORWARD -j MX-FWD" in down and "-X MX-POST" in down and "-X MX-RAW" in down
    assert iptables.base_text(saved, "MX") .count("FWD") == 0      # no range: no plumbing


def test_dnsmasq_argv_upstream_domain_and_dynamic():
    argv = dnsmasq.argv(pid_file="p", hosts_dir="h", log_file="l", listen=["10.0.0.1", "10.0.1.1"],
                        port=53, local_ttl=0, user="root", upstream=("192.0.2.53",),
                        domain="mec.local", dynamic=True)
    assert argv.count("--bind-dynamic") == 1 and "--bind-interfaces" not in argv
    assert "--listen-address=10.0.0.1" in argv and "--listen-address=10.0.1.1" in argv
    assert "--server=192.0.2.53" in argv and "--local=/mec.local/" in argv


def test_protocol_is_given_back_as_sent_and_compared_normalised():
    upper, lower = tr(), tr(trafficFilter=[{"dstAddress": ["10.9.0.80"], "dstPort": ["80"],
                                           "protocol": ["tcp"]}])
    assert upper.to_etsi()["trafficFilter"][0]["protocol"] == ["TCP"]
    assert lower.to_etsi()["trafficFilter"][0]["protocol"] == ["tcp"]
    # one value: equal, one hash, the same iptables lines, the same claims
    assert upper == lower and hash(upper) == hash(lower)
    assert TrafficRule.from_etsi(upper.to_etsi()) == upper
    assert iptables.render_instance("MEC", "i", "10.0.1.2", [upper]) == \
        iptables.render_instance("MEC", "i", "10.0.1.2", [lower])
    assert "-p tcp -m tcp --dport 80" in iptables.render_instance(
        "MEC", "i", "10.0.1.2", [upper])["nat"][0]
    from mecorch.spec import rules as R
    assert R.replica_key(upper.to_etsi()) == R.replica_key(lower.to_etsi())
    held = [("other", {"appDId": "b", "trafficRules": [lower.to_etsi()], "dnsRules": []})]
    assert R.claim_conflict([upper], [], "a", held).startswith(
        "trafficRule tr1: 10.9.0.80:80/tcp is steered by instance other")
    # numbers as sent too, compared by value
    number = tr(trafficFilter=[{"dstAddress": ["10.9.0.80"], "protocol": ["Udp", "017"]}])
    assert number.to_etsi()["trafficFilter"][0]["protocol"] == ["Udp", "017"]
    assert number.traffic_filter[0].protocol == ("udp", "17")
    with pytest.raises(InvalidInput, match=r"trafficFilter\[0\].protocol\[0\]"):
        tr(trafficFilter=[{"dstAddress": ["10.9.0.80"], "protocol": ["TCPX"]}])


def test_held_names_outside_the_domain_are_rendered_local():
    index = {"10.0.0.5 video.example.com": {"i1", "i2"}, "10.0.0.6 app.mec.local": {"i3"},
             "10.0.0.7 gone.example.org": set(), "10.0.0.8 mec.local.example.net": {"i4"}}
    names = dnsmasq.held_names(index, "mec.local")
    assert names == ["mec.local.example.net", "video.example.com"]
    assert dnsmasq.held_names(index, None) == ["app.mec.local", "mec.local.example.net",
                                               "video.example.com"]
    text = dnsmasq.render_servers(names)
    assert text.splitlines()[1:] == ["server=/mec.local.example.net/",
                                     "server=/video.example.com/"]
    assert text.startswith("# mecorch: ")
    assert dnsmasq.render_servers([]).count("\n") == 1
    argv = dnsmasq.argv(pid_file=Path("/r/p"), hosts_dir=Path("/s/h"), log_file=Path("/r/l"),
                        listen="127.0.0.1", port=5353, local_ttl=0, user="root",
                        domain="mec.local", servers_file=Path("/s/servers.conf"))
    assert argv[-2:] == ["--local=/mec.local/", "--servers-file=/s/servers.conf"]
