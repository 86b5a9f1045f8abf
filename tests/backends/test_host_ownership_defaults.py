"""Ownership by default: every object a host makes on the machine is its
own (named from its host id, or marked with it), `mecorch host teardown`
removes only what is the host's and never what another configured host
still uses, and `mecorch doctor` leaves nothing behind.

The real-backend tests configure two hosts on this machine, each a host
entry with only its id plus a service range of its own and a DNS port (the
names of their docker network, chains and service link are derived), set
both up as `serve` does (the drivers' `open`, a DNS rule each), tear one
down with the CLI and check the other's link, route, chains, docker network
and DNS still answer. Names, ports and ranges come from tests/support/lab.py;
only what these tests made is removed, by its owner marks.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mecorch.kernel import config
from mecorch.kernel.errors import InvalidInput
from mecorch.spec.rules import DnsRule
from support.lab import dig as lab_dig
from support.lab import (VIRSH, Names, free_port, free_subnet, private_dir, remove_host, run,
                         service_links_of)

REPO = Path(__file__).resolve().parents[2]


def cli(cfg_path, *argv, api: str | None = None) -> subprocess.CompletedProcess:
    extra = ["--api", api] if api else []
    return subprocess.run([sys.executable, "-m", "mecorch.cli", "--config", str(cfg_path),
                           *extra, *argv], capture_output=True, text=True, timeout=300,
                          cwd=REPO)


def write(tmp: Path, doc: dict) -> Path:
    p = tmp / "c.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


# ---------------------------------------------------------------- names and checks
def test_default_host_keeps_todays_names(tmp_path):
    """An installed node (host id `default`, embedded or written out) finds
    its objects again under the names it always had."""
    for cfg in (config.load(),
                config.load(write(tmp_path, {"hosts": [{"id": "default", "cim": {},
                                                        "vim": {}, "mep": {}}]}))):
        host = cfg["hosts"][0]
        assert host["cim"]["network"] == "mecorch"
        assert (host["vim"]["network"], host["vim"]["pool"]) == ("mecorch", "mecorch")
        assert host["mep"]["chain_prefix"] == "MECORCH"
        assert host["mep"]["service_interface"] == "mecorch-svc"
    from drivers.libvirt_vim.settings import default_bridge
    assert default_bridge("mecorch") == "mecorch-br0"


def test_a_host_with_only_its_id_gets_names_of_its_own_within_the_kernels_limits(tmp_path):
    long_id = "edge-" + "x" * 40 + ".site"
    cfg_path = write(tmp_path, {"hosts": [
        {"id": "edge1", "cim": {}, "vim": {"network_cidr": "10.199.61.0/24"},
         "mep": {"service_cidr": "10.93.61.0/24", "dns_port": 5391}},
        {"id": long_id, "cim": {}, "vim": {"network_cidr": "10.199.62.0/24"},
         "mep": {"service_cidr": "10.93.62.0/24", "dns_port": 5392}},
        {"id": long_id + "2", "mep": {"service_cidr": "10.93.63.0/24", "dns_port": 5393}}]})
    sources: dict = {}
    cfg = config.load(cfg_path, sources=sources)
    e1, long1, long2 = cfg["hosts"]
    assert e1["cim"]["network"] == "mecorch-edge1"
    assert e1["vim"]["network"] == e1["vim"]["pool"] == "mecorch-edge1"
    assert e1["mep"]["chain_prefix"] == "MC_edge1"
    assert e1["mep"]["service_interface"] == "mecsvc-edge1"
    assert sources["hosts[0].mep.service_interface"] == "derived"
    for a, b in ((long1, long2),):
        assert a["mep"]["service_interface"] != b["mep"]["service_interface"]
        assert a["mep"]["chain_prefix"] != b["mep"]["chain_prefix"]
    for h in (long1, long2):
        assert len(h["mep"]["service_interface"]) <= 15
        assert re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,15}", h["mep"]["chain_prefix"])
        # the longest chain: PREFIX-<hash8> within iptables' 28
        assert len(h["mep"]["chain_prefix"]) + 9 <= 28
    from drivers.libvirt_vim.settings import parse
    assert len(parse(long1["vim"]).bridge) <= 15
    # shown by config show, with where it came from
    out = cli(cfg_path, "config", "show")
    assert out.returncode == 0, out.stderr
    assert re.search(r"hosts\[0\]\.mep\.service_interface\s+mecsvc-edge1\s+derived", out.stdout)
    # a name the file sets is the file's
    cfg = config.load(write(tmp_path, {"hosts": [
        {"id": "edge1", "mep": {"service_interface": "svc-e1", "chain_prefix": "E1"}}]}))
    assert cfg["hosts"][0]["mep"]["service_interface"] == "svc-e1"
    assert cfg["hosts"][0]["mep"]["chain_prefix"] == "E1"


@pytest.mark.parametrize("hosts, words", [
    ([{"id": "a", "mep": {"service_interface": "a-name-longer-than-15"}}],
     "hosts[0].mep.service_interface: must be a link name of 1-15"),
    ([{"id": "a", "mep": {"service_interface": "bad name;x"}}],
     "hosts[0].mep.service_interface"),
    ([{"id": "a", "mep": {"chain_prefix": "MC-1"}}], "hosts[0].mep.chain_prefix"),
    ([{"id": "a", "mep": {"service_cidr": "10.93.0.1/24"}}], "hosts[0].mep.service_cidr"),
    ([{"id": "a", "cim": {"subnet": "not-a-net"}}], "hosts[0].cim.subnet"),
    ([{"id": "a", "cim": {"subnet": "fd00::/64"}}], "hosts[0].cim.subnet: must be an IPv4"),
    ([{"id": "a", "cim": {"network": "-x"}}], "hosts[0].cim.network"),
    ([{"id": "a", "vim": {"bridge": "a-bridge-name-too-long"}}], "vim.bridge"),
    ([{"id": "a", "mep": {"dns_port": 5391, "service_cidr": "10.93.1.0/24"}},
      {"id": "b", "mep": {"dns_port": 5391, "service_cidr": "10.93.2.0/24"}}],
     "hosts[1].mep.dns_port: 127.0.0.1:5391 is hosts[0].mep's too"),
    ([{"id": "a", "mep": {"dns_port": 5391}}, {"id": "b", "mep": {"dns_port": 5392}}],
     "hosts[1].mep.service_cidr: 10.90.0.0/24 overlaps hosts[0].mep.service_cidr"),
    ([{"id": "a", "vim": {}}, {"id": "b", "vim": {}}],
     "hosts[1].vim.network_cidr: 192.168.150.0/24 overlaps"),
])
def test_new_fields_are_validated_naming_the_key(tmp_path, hosts, words):
    with pytest.raises(InvalidInput) as e:
        config.load(write(tmp_path, {"hosts": hosts}))
    assert words in e.value.detail


def test_two_hosts_may_be_configured_to_share_one_service_link(tmp_path):
    cfg = config.load(write(tmp_path, {"hosts": [
        {"id": "a", "mep": {"dns_port": 5391, "service_interface": "svc-ab"}},
        {"id": "b", "mep": {"dns_port": 5392, "service_interface": "svc-ab"}}]}))
    from mecorch.mepm.teardown import shared
    assert shared(cfg, "a", "mep") == {"service_interface": ("b",)}


def test_teardown_against_an_meo_says_what_it_expects(tmp_path):
    cfg_path = write(tmp_path, {"role": "meo", "state_dir": str(tmp_path / "s"),
                                "run_dir": str(tmp_path / "r")})
    r = cli(cfg_path, "host", "teardown")
    assert r.returncode == 2
    assert "is an MEO's (role: meo)" in r.stderr and "MEPM runs with" in r.stderr
    r = cli(write(tmp_path, {"state_dir": str(tmp_path / "s"), "run_dir": str(tmp_path / "r")}),
            "host", "teardown", api="http://127.0.0.1:9")
    assert r.returncode == 2
    assert "does not go through an API (--api)" in r.stderr
    assert not (tmp_path / "s").exists()          # nothing was looked at or made


# ---------------------------------------------------------------- real backends
def route_dev(addr: str) -> str:
    out = run("ip", "route", "get", addr).stdout
    return re.search(r"\bdev (\S+)", out).group(1)


def dig(port: int, name: str) -> str:
    return lab_dig(port, name, time_s=2)


def two_hosts(workdir: Path) -> tuple[dict, Path, list[dict]]:
    """Two hosts of one config, each with only its id, a service range and
    a DNS port of its own (and a docker subnet of its own for one)."""
    hosts = []
    for i in range(2):
        mep = {"service_cidr": free_subnet("10.93.0.0/16"), "dns_port": free_port()}
        hosts.append({"id": Names("own").host_id, "cim": {}, "mep": mep})
    hosts[0]["cim"]["subnet"] = free_subnet("10.199.0.0/18")
    doc = {"state_dir": str(workdir / "state"), "run_dir": str(workdir / "run"), "hosts": hosts}
    path = workdir / "two.yaml"
    path.write_text(yaml.safe_dump(doc))
    return doc, path, config.load(path)["hosts"]


def chains(prefix: str) -> list[str]:
    return [ln for ln in run("iptables-save").stdout.splitlines()
            if f"{prefix}-" in ln and not ln.startswith("#")]


def docker_network(name: str) -> dict | None:
    r = run("docker", "network", "inspect", name, check=False)
    return yaml.safe_load(r.stdout)[0] if r.returncode == 0 else None


@pytest.mark.docker
@pytest.mark.mep
def test_teardown_of_one_host_leaves_the_others_link_route_chains_network_and_dns():
    from drivers.docker_cim import DockerCIM
    from drivers.linux_mep import LinuxMEP
    workdir = private_dir("own")
    doc, path, (a, b) = two_hosts(workdir)
    try:
        meps = {}
        for host in (a, b):
            cim = DockerCIM(host["cim"])
            try:
                cim.open()
            finally:
                cim.close()
            mep = meps[host["id"]] = LinuxMEP(host["mep"])
            mep.open()
            mep.apply_rules("inst-" + host["id"], "10.93.255.1", [], [DnsRule(
                dns_rule_id="r1", domain_name=f"{host['id']}.mec.local",
                ip_address="10.93.255.1", ip_address_type="IP_V4")])
        for host in (a, b):
            m = host["mep"]
            assert m["service_interface"] in service_links_of(host["id"])
            inside = m["service_cidr"].rsplit(".", 1)[0] + ".10"
            assert route_dev(inside) == m["service_interface"]
            assert chains(m["chain_prefix"])
            assert docker_network(host["cim"]["network"])["Labels"]["mecorch.host"] == host["id"]
            assert dig(m["dns_port"], f"{host['id']}.mec.local") == "10.93.255.1"
        sub = docker_network(a["cim"]["network"])["IPAM"]["Config"][0]["Subnet"]
        assert sub == a["cim"]["subnet"]          # the configured subnet
        a_dns_pid = meps[a["id"]].dnsmasq_pid()
        b_before = (chains(b["mep"]["chain_prefix"]), meps[b["id"]].dnsmasq_pid())

        r = cli(path, "host", "teardown", a["id"])
        assert r.returncode == 0, r.stderr
        assert f"removed mep: service link {a['mep']['service_interface']}" in r.stdout
        assert f"removed cim: docker network {a['cim']['network']}" in r.stdout
        assert f"removed mep: iptables chains {a['mep']['chain_prefix']}-*" in r.stdout

        # the other host: link, route, chains, docker network, DNS as they were
        m = b["mep"]
        assert m["service_interface"] in service_links_of(b["id"])
        assert route_dev(m["service_cidr"].rsplit(".", 1)[0] + ".10") == m["service_interface"]
        assert (chains(m["chain_prefix"]), meps[b["id"]].dnsmasq_pid()) == b_before
        assert docker_network(b["cim"]["network"]) is not None
        assert dig(m["dns_port"], f"{b['id']}.mec.local") == "10.93.255.1"
        # the one torn down: gone
        assert not service_links_of(a["id"])
        assert not chains(a["mep"]["chain_prefix"])
        assert docker_network(a["cim"]["network"]) is None
        assert not os.path.exists(f"/proc/{a_dns_pid}")
        # the machine's default node's link is never touched by either
        assert "mecorch-svc" not in r.stdout
    finally:
        for host in (a, b):
            remove_host(host, doc["state_dir"], doc["run_dir"])
        run("rm", "-rf", str(workdir))


@pytest.mark.mep
def test_a_link_two_hosts_share_is_kept_by_the_first_teardown_and_said_so():
    from drivers.linux_mep import LinuxMEP
    workdir = private_dir("own")
    ids = [Names("shr").host_id for _ in range(2)]
    link = f"svc{ids[0][-6:]}"
    cidr = free_subnet("10.93.0.0/16")
    hosts = [{"id": hid, "mep": {"service_cidr": cidr, "dns_port": free_port(),
                                 "service_interface": link}} for hid in ids]
    doc = {"state_dir": str(workdir / "state"), "run_dir": str(workdir / "run"), "hosts": hosts}
    path = workdir / "shared.yaml"
    path.write_text(yaml.safe_dump(doc))
    loaded = config.load(path)["hosts"]
    try:
        for host in loaded:
            LinuxMEP(host["mep"]).open()
        assert service_links_of(ids[0]) == [link]         # made and marked by the first
        r = cli(path, "host", "teardown", ids[0])
        assert r.returncode == 0, r.stderr
        assert f"kept mep: service link {link}: host(s) {ids[1]} of the configuration" in r.stdout
        assert route_dev(cidr.rsplit(".", 1)[0] + ".10") == link
        assert service_links_of(ids[1]) == [link]         # handed over to the host using it
        # the first host gone from the configuration: the second's teardown removes it
        path.write_text(yaml.safe_dump({**doc, "hosts": hosts[1:]}))
        r = cli(path, "host", "teardown", ids[1])
        assert r.returncode == 0, r.stderr
        assert f"removed mep: service link {link}" in r.stdout
        assert link not in run("ip", "-o", "link", "show").stdout
    finally:
        for host in loaded:
            remove_host(host, doc["state_dir"], doc["run_dir"])
        run("ip", "link", "del", link, check=False)
        run("rm", "-rf", str(workdir))


def _mine(lines, marks) -> set[str]:
    return {ln.strip() for ln in lines if any(m in ln for m in marks)}


def _processes() -> dict[int, str]:
    out = {}
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                out[int(pid)] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(
                    b"\0", b" ").decode(errors="replace")
            except OSError:
                pass
    return out


@pytest.mark.docker
@pytest.mark.libvirt
@pytest.mark.mep
def test_doctor_leaves_networks_pools_and_processes_as_they_were():
    workdir = private_dir("doc")
    hid = Names("doc").host_id
    doc = {"state_dir": str(workdir / "state"), "run_dir": str(workdir / "run"),
           "hosts": [{"id": hid, "cim": {},
                      "vim": {"network_cidr": free_subnet(), "accel": "auto"},
                      "mep": {"service_cidr": free_subnet("10.93.0.0/16"),
                              "dns_port": free_port()}}]}
    path = workdir / "doctor.yaml"
    path.write_text(yaml.safe_dump(doc))
    host = config.load(path)["hosts"][0]
    marks = (hid, host["cim"]["network"], host["vim"]["network"], host["mep"]["service_interface"],
             host["mep"]["chain_prefix"])

    def state():
        return {
            "docker networks": set(run("docker", "network", "ls", "--format", "{{.Name}}")
                                   .stdout.split()),
            "libvirt networks": set(run(*VIRSH, "net-list", "--all", "--name").stdout.split()),
            "libvirt pools": set(run(*VIRSH, "pool-list", "--all", "--name").stdout.split()),
            "iptables": _mine(run("iptables-save").stdout.splitlines(), marks),
            "links": _mine(run("ip", "-o", "link").stdout.splitlines(), marks),
        }
    before, procs_before = state(), _processes()
    try:
        r = cli(path, "doctor")
        assert r.returncode == 0, r.stdout + r.stderr
        after, procs_after = state(), _processes()
        # nothing of this host's names anywhere; nothing of these kinds new
        # that is mecorch's (other tests run beside this one)
        for kind in ("docker networks", "libvirt networks", "libvirt pools"):
            assert not {n for n in after[kind] - before[kind] if any(m in n for m in marks)}, kind
        assert after["iptables"] == before["iptables"] == set()
        assert after["links"] == before["links"] == set()
        new = {pid: cmd for pid, cmd in procs_after.items() if pid not in procs_before}
        assert not {pid: cmd for pid, cmd in new.items()
                    if "dnsmasq" in cmd or str(workdir) in cmd or "mecorch-doctor-" in cmd}
        assert "not made yet" in r.stdout and "probe dnsmasq" in r.stdout
    finally:
        remove_host(host, doc["state_dir"], doc["run_dir"])
        run("rm", "-rf", str(workdir))
