"""Hostile input against what issue 12 added: rule destinations and names
that try to leave the host's service range or MEC domain or take another
instance's, racing claims, and the new configuration fields and values that
reach dnsmasq, Docker and libvirt (upstream servers, data-plane address,
MEC domain, containers' resolvers, a VM's SMBIOS OEM strings).

The ownership ledger is core logic: it runs here through the real REST API
with in-memory drivers (its real-backend proof, with iptables-save and the
dnsmasq files byte-identical, is tests/e2e/test_mep_clients.py)."""

from __future__ import annotations

import threading
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from support.fakes import broken
from mecorch.kernel.client import ApiError
from mecorch.kernel.errors import InvalidInput
from mecorch.driverapi.model import ResourceRequest
from mecorch.kernel.states import DeploymentType
from support.mepenv import (  # noqa: F401
    Env, INST, MP1, SERVICE, descriptor, dns, refused, traffic)


@pytest.fixture
def env(tmp_path):
    e = Env(tmp_path)
    yield e
    e.close()


# -- destinations outside the service range -------------------------------------------------

OUTSIDE = ["0.0.0.0/0", "10.90.0.0/23", "10.89.255.255-10.90.0.5", "10.90.1.1",
           "10.90.0.200-10.90.1.0", "192.0.2.1", "127.0.0.1", "169.254.169.254",
           "255.255.255.255", "2001:db8::1", "::ffff:10.90.0.10", "10.0.0.0/8", None]


@pytest.mark.parametrize("vip", OUTSIDE)
def test_destination_outside_the_service_range_is_400_naming_it(env, vip):
    a = env.deploy()
    before = env.state()
    e = refused(env.c.call, "PUT", f"{MP1}/{a}/traffic_rules/sample-http-vip", traffic(vip))
    assert e.status == 400 and SERVICE in e.detail and "sample-http-vip" in e.detail, e.detail
    assert env.state() == before
    if vip is None:
        return      # at instantiation, no dstAddress asks the host for one (below)
    b = env.create()
    # at instantiation the placement refuses first: no host's range holds it
    # (409 naming each host's range; the ledger's 400 stays behind it)
    e = refused(env.instantiate, b, appTrafficRule=[descriptor(traffic(vip, rule_id="x"))],
                appDNSRule=[])
    assert e.status == 409 and f"its service range {SERVICE} does not hold" in e.detail
    assert env.state() == before
    assert env.c.get(f"{INST}/{b}")["instantiationState"] == "NOT_INSTANTIATED"


def test_no_destination_at_instantiation_is_given_an_address_of_the_range(env):
    """A filter without dstAddress (once "every address", refused) now asks
    the host for a service address: the lowest free one of its range."""
    a = env.deploy(appTrafficRule=[descriptor(traffic(None, rule_id="x"))], appDNSRule=[])
    (flt,) = env.mep.applied[a][1][0].traffic_filter
    assert flt.dst_address == ("10.90.0.1",)


@pytest.mark.parametrize("vip", ["10.90.0.0/24", "10.90.0.64/26", "10.90.0.1-10.90.0.254",
                                 "10.90.0.255"])
def test_destinations_inside_the_range_are_accepted(env, vip):
    a = env.deploy(appTrafficRule=[descriptor(traffic(vip))], appDNSRule=[])
    assert env.mep.applied[a][1][0].traffic_filter[0].dst_address[0] == vip


def test_other_actions_are_held_to_the_range_too(env):
    """A DROP of another address would cut other apps' (or the host's) traffic."""
    a = env.deploy()
    rule = {**traffic("192.0.2.9"), "action": "DROP"}
    rule.pop("dstInterface")
    e = refused(env.c.call, "PUT", f"{MP1}/{a}/traffic_rules/sample-http-vip", rule)
    assert e.status == 400 and SERVICE in e.detail


# -- destinations another instance steers --------------------------------------------------

OVERLAPS = [  # (the second instance's filter, whether it takes the first one's 10.90.0.10:80/tcp)
    ({"dstAddress": ["10.90.0.10"], "dstPort": ["80"], "protocol": ["TCP"]}, True),
    ({"dstAddress": ["10.90.0.0/28"], "dstPort": ["70-90"]}, True),       # tcp+udp, a range
    ({"dstAddress": ["10.90.0.5-10.90.0.12"], "protocol": ["6"]}, True),  # every port, tcp by number
    ({"dstAddress": ["10.90.0.10"]}, True),                               # every protocol and port
    ({"dstAddress": ["10.90.0.10"], "dstPort": ["80"], "protocol": ["UDP"]}, False),
    ({"dstAddress": ["10.90.0.10"], "dstPort": ["81"], "protocol": ["TCP"]}, False),
    ({"dstAddress": ["10.90.0.11"], "dstPort": ["80"], "protocol": ["TCP"]}, False),
    ({"dstAddress": ["10.90.0.10"], "protocol": ["icmp"]}, False),
]


@pytest.mark.parametrize("flt,takes", OVERLAPS)
def test_a_destination_steered_by_another_instance_is_409_naming_it(env, flt, takes):
    a = env.deploy()
    before = env.state()
    rule = {**traffic(), "trafficRuleId": "mine", "trafficFilter": [flt]}
    b = env.create()
    if not takes:
        env.c.wait_op(env.instantiate(b, appTrafficRule=[descriptor(rule)], appDNSRule=[]))
        assert b in env.mep.applied
        return
    e = refused(env.instantiate, b, appTrafficRule=[descriptor(rule)], appDNSRule=[])
    assert e.status == 409 and a in e.detail and "mine" in e.detail, e.detail
    assert env.state() == before
    # ... and by Mp1: b takes a free address first, then tries a's
    env.c.wait_op(env.instantiate(b, appTrafficRule=[descriptor(traffic("10.90.0.99",
                                                                        rule_id="mine"))],
                                  appDNSRule=[]))
    before = env.state()
    e = refused(env.c.call, "PUT", f"{MP1}/{b}/traffic_rules/mine", rule)
    assert e.status == 409 and a in e.detail
    assert env.state() == before


def test_a_rule_may_keep_its_own_destination_and_two_rules_of_one_instance_may_overlap(env):
    a = env.deploy(appTrafficRule=[descriptor(traffic()),
                                   descriptor({**traffic(), "trafficRuleId": "drop-first",
                                               "priority": 0, "action": "DROP",
                                               "dstInterface": None})], appDNSRule=[])
    env.c.call("PUT", f"{MP1}/{a}/traffic_rules/sample-http-vip", traffic(port="80"))
    assert len(env.mep.applied[a][1]) == 2


# -- names ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["evilmec.local", "mec.local.evil.org", "sample.mec.localhost",
                                  "local", "example.org", "sample-http.mec-local",
                                  "xn--mec-local.org"])
def test_a_name_outside_the_mec_domain_is_400(env, name):
    a = env.deploy()
    before = env.state()
    e = refused(env.c.call, "PUT", f"{MP1}/{a}/dns_rules/sample-http-dns", dns(name))
    assert e.status == 400 and "mec.local" in e.detail and name in e.detail, e.detail
    assert env.state() == before


def test_names_in_the_domain_any_case_are_accepted(env):
    a = env.deploy()
    env.c.call("PUT", f"{MP1}/{a}/dns_rules/sample-http-dns", dns("Deep.Sub.MEC.Local."))
    assert env.mep.applied[a][2][0].domain_name == "deep.sub.mec.local"


def test_a_name_belongs_to_its_first_app_replicas_may_share_it(env):
    a = env.deploy()
    # a replica of the same app (sample-http) shares the name, on its own address
    b = env.deploy(appTrafficRule=[descriptor(traffic("10.90.0.20"))])
    assert env.mep.applied[b][2][0].domain_name == "sample-http.mec.local"
    # another app may not take it: at instantiation ...
    v = env.create("sample-vm")
    before = env.state()
    for name in ("sample-http.mec.local", "SAMPLE-HTTP.mec.local."):
        e = refused(env.instantiate, v, appDNSRule=[descriptor(dns(name, "10.90.0.11"))])
        assert e.status == 409 and a in e.detail or b in e.detail, e.detail
        assert env.state() == before
    # ... nor by Mp1
    env.c.wait_op(env.instantiate(v))
    before = env.state()
    e = refused(env.c.call, "PUT", f"{MP1}/{v}/dns_rules/sample-vm-dns",
                dns("sample-http.mec.local", "10.90.0.11", "sample-vm-dns"))
    assert e.status == 409
    assert env.state() == before


# -- claims end with the instance ------------------------------------------------------------

def test_claims_are_released_by_termination_and_by_a_failed_deploy(env):
    a = env.deploy()
    op = env.c.post(f"{INST}/{a}/terminate", {"terminationType": "FORCEFUL"})[0]
    assert env.c.wait_op(op)["operationState"] == "COMPLETED"
    env.cim.fail["deploy"] = broken()
    b = env.create()
    assert env.c.wait_op(env.instantiate(b))["operationState"] == "FAILED"
    env.cim.fail.clear()
    c = env.deploy()                    # the address and the name are free again
    assert c in env.mep.applied
    e = refused(env.instantiate, a)     # and c holds them now
    assert e.status == 409 and c in e.detail


def test_concurrent_instantiations_for_one_address_exactly_one_wins(env):
    ids = [env.create() for _ in range(8)]
    results = {}

    def go(iid):
        try:
            results[iid] = env.instantiate(iid)
        except ApiError as e:
            results[iid] = e
    threads = [threading.Thread(target=go, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    won = [i for i in ids if isinstance(results[i], dict)]
    assert len(won) == 1, results
    assert all(results[i].status == 409 and won[0] in results[i].detail
               for i in ids if i not in won)
    assert env.c.wait_op(results[won[0]])["operationState"] == "COMPLETED"
    assert set(env.mep.applied) == set(won)


# -- configuration values that reach dnsmasq, Docker and libvirt ----------------------------

INJECTIONS = ["1.2.3.4 --conf-file=/etc/passwd", "--server=1.2.3.4", "1.2.3.4\n--x", "",
              "1.2.3.4,5.6.7.8", "fe80::1%eth0", "a" * 300, "$(id)", "1.2.3.4#53", None, 5,
              {"a": 1}, ["1.2.3.4"]]


def _mep(tmp: Path, **over):
    from drivers.linux_mep import LinuxMEP
    return LinuxMEP({"driver": "linux", "state_dir": str(tmp), "run_dir": str(tmp / "run"),
                     "chain_prefix": "MECH", **over})


@pytest.mark.parametrize("value", INJECTIONS)
def test_hostile_mep_settings_are_refused_naming_the_key(tmp_path, value):
    for key, wrap in (("dns_upstream", lambda v: [v]), ("data_plane_address", lambda v: v)):
        if value is None and key == "data_plane_address":
            continue                      # null: no data-plane address, which is valid
        with pytest.raises(InvalidInput) as e:
            _mep(tmp_path, **{key: wrap(value)})
        assert f"mep.{key}" in e.value.detail
    if value is not None:
        with pytest.raises(InvalidInput) as e:
            _mep(tmp_path, dns_domain=value)
        assert "mep.dns_domain" in e.value.detail
    mep = _mep(tmp_path)
    with pytest.raises(InvalidInput):
        mep.serve_dns_on([value])
    if value is not None:               # null: no upstream, which is valid
        with pytest.raises(InvalidInput):
            _mep(tmp_path, dns_upstream=value if not isinstance(value, list) else [value])


def test_dnsmasq_command_line_carries_only_checked_values(tmp_path):
    mep = _mep(tmp_path, dns_upstream=["192.0.2.53", "2001:db8::53"], dns_domain="MEC.local",
               data_plane_address="10.0.0.1")
    argv = mep._dnsmasq_argv(mep.clients_pid_file, mep.clients_log_file, ["10.0.0.1"], 53,
                             dynamic=True)
    assert argv[0] == "dnsmasq" and all(a.startswith("--") for a in argv[1:])
    assert "--server=192.0.2.53" in argv and "--server=2001:db8::53" in argv
    assert "--local=/mec.local/" in argv and "--bind-dynamic" in argv
    assert "--no-resolv" in argv and "--no-hosts" in argv
    none = _mep(tmp_path)._dnsmasq_argv(mep.pid_file, mep.log_file, "127.0.0.1", 5353)
    assert not [a for a in none if a.startswith(("--server=", "--local=/"))]


@pytest.mark.parametrize("value", INJECTIONS + [["gateway", "1.2.3.4", "5.6.7.8", "9.9.9.9"]])
def test_hostile_container_resolvers_are_refused_naming_cim_dns(tmp_path, value):
    from drivers.docker_cim import DockerCIM
    with pytest.raises(InvalidInput) as e:
        DockerCIM({"driver": "docker", "state_dir": str(tmp_path),
                   "dns": value if isinstance(value, list) and len(value) > 1 else [value]
                   if value is not None else "gateway"})
    assert "cim.dns" in e.value.detail


def test_docker_accepts_gateway_and_addresses(tmp_path):
    from drivers.docker_cim import DockerCIM
    cim = DockerCIM({"driver": "docker", "state_dir": str(tmp_path),
                     "dns": ["gateway", "192.0.2.53"]})
    cim._gateway = "172.30.0.1"
    assert cim._resolvers() == ["172.30.0.1", "192.0.2.53"]
    assert DockerCIM({"driver": "docker", "state_dir": str(tmp_path), "dns": []})._resolvers() is None


HOSTILE_ENV = ["</entry><entry>MEC_APP_TOKEN=stolen", "a\nb", "<![CDATA[x]]>", "&amp;",
               "'\"", "x" * 4096, "\u00e9\u0430"]


def test_vm_env_is_escaped_and_checked():
    """The VM's environment is NUL-ended KEY=VALUE strings in a fw_cfg file
    the domain XML names (the XML holds no value of it)."""
    pytest.importorskip("libvirt")
    from drivers.libvirt_vim import xmlrender as X
    from drivers.libvirt_vim.request import validate_request
    env = {"MEC_MP1_URL": "http://192.168.150.1:8080/mec_app_support/v1",
           "MEC_APP_INSTANCE_ID": "i-1", "MEC_APP_TOKEN": "t0k"}
    for i, value in enumerate(HOSTILE_ENV):
        env[f"X{i}"] = value
    req = ResourceRequest(instance_id="i-1", app_d_id="a", manner=DeploymentType.VM,
                          image="img", vcpu=1, memory_mb=64, disk_gb=1, env=env)
    data = validate_request(req)["env"]
    entries = data.decode().split("\0")
    assert entries[-1] == "" and entries[:-1] == [f"{k}={v}" for k, v in sorted(env.items())]
    assert "MEC_APP_TOKEN=stolen" not in entries
    spec = X.DomainSpec(name="mecorch-i-1", virt_type="qemu", vcpu=1, memory_mb=64,
                        pool="p", disks=("d",), network="n", env_file="/s/vm-env/mecorch-i-1.env")
    text = X.domain_xml(spec)
    root = ET.fromstring(text)
    assert [(e.get("name"), e.get("file")) for e in root.findall("./sysinfo/entry")] == [
        ("opt/org.mecorch/env", "/s/vm-env/mecorch-i-1.env")]
    assert root.find("./sysinfo").get("type") == "fwcfg" and "t0k" not in text
    for bad in ({"1BAD": "x"}, {"A B": "x"}, {"A": "x\x00y"}, {"A": "y" * 5000}):
        with pytest.raises(InvalidInput, match="env"):
            validate_request(ResourceRequest(instance_id="i-1", app_d_id="a",
                                             manner=DeploymentType.VM, image="img", vcpu=1,
                                             memory_mb=64, disk_gb=1, env=bad))


def test_vm_network_gives_the_gateway_as_dns_and_runs_no_dns_of_its_own():
    pytest.importorskip("libvirt")
    from drivers.libvirt_vim import xmlrender as X
    root = ET.fromstring(X.network_xml("n", "br", "10.96.3.0/24"))
    assert root.find("./dns").get("enable") == "no"
    opts = [o.get("value") for o in root.iter(f"{{{X.NS_DNSMASQ}}}option")]
    assert opts == ["dhcp-option=option:dns-server,10.96.3.1"]
    assert X.gateway("10.96.3.0/24") == "10.96.3.1"
