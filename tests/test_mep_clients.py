"""The MEP for real clients (issue 12), on the real backends: a `mecorch
serve` of its own (host id, docker network, libvirt pool + network, chain
prefix, service range, dnsmasq port: all unique) with two container apps
and one VM app, and a UE in a network namespace behind the data-plane
address. What is shown:

- from inside a container app (its default resolver: Docker's 127.0.0.11,
  which forwards to the MEP on the network's gateway) and from inside the VM
  app (the resolver DHCP gave it), another app's DNS name resolves to its
  service address, and HTTP to that address reaches the app (traffic rule);
  an unknown name is refused (no upstream configured);
- a UE in a netns resolves through the data-plane address and reaches the app;
- a container app and the VM app (which read MEC_MP1_URL, instance id and
  token from their environment / SMBIOS OEM strings) read their rules over
  Mp1 on their gateway with their own token, change one, the change takes
  effect; their token on another instance's routes is a 403;
- every ownership case is refused with its status and nothing applied (the
  MEP's chains and its dnsmasq files byte-identical), including two
  concurrent instantiations racing for one address: exactly one wins.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from mecorch.kernel.client import ApiError, Client
from mecorch.kernel.fileutil import sha256_file
from mecorch.package import build_package

from conftest import WORKLOADS, run

pytestmark = [pytest.mark.docker, pytest.mark.libvirt, pytest.mark.mep]

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
INST = "/app_lcm/v1/app_instances"
MP1 = "/mec_app_support/v1/applications"
# The VM image with the MEC client (vagrant/workloads/build-vm-image.sh);
# MECORCH_SAMPLE_VM points at another build of it.
SAMPLE_VM = Path(os.environ.get("MECORCH_SAMPLE_VM", WORKLOADS / "sample-vm.qcow2"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_net(first: str, prefix: int) -> str:
    """A network under `first`/16 no route of this machine overlaps."""
    used = [ipaddress.ip_network(line.split()[0], strict=False)
            for line in run("ip", "-4", "route", "show", "table", "all").stdout.splitlines()
            if line and line.split()[0][0].isdigit()]
    base = ipaddress.ip_network(first + "/16")
    subnets = list(base.subnets(new_prefix=prefix))
    start = secrets.randbelow(len(subnets))
    for i in range(len(subnets)):
        net = subnets[(start + i) % len(subnets)]
        if not any(net.overlaps(u) for u in used):
            return str(net)
    raise AssertionError(f"no free /{prefix} under {first}/16")


def traffic(rule_id: str, vip: str, port: str = "80") -> dict:
    return {"trafficRuleId": rule_id, "filterType": "FLOW", "priority": 1,
            "trafficFilter": [{"dstAddress": [vip], "dstPort": [port], "protocol": ["TCP"]}],
            "action": "FORWARD_DECAPSULATED", "dstInterface": [{"interfaceType": "IP"}]}


def dns(rule_id: str, name: str, ip: str) -> dict:
    return {"dnsRuleId": rule_id, "domainName": name, "ipAddressType": "IP_V4", "ipAddress": ip}


def etsi(rule: dict) -> dict:
    """An AppD descriptor as the MEC 011 rule Mp1 PUT takes."""
    out = {**rule, "state": "ACTIVE"}
    if isinstance(out.get("dstInterface"), list):
        out["dstInterface"] = out["dstInterface"][0]
    return out


class Lab:
    def __init__(self, tmp: Path):
        u = secrets.token_hex(3)
        self.u, self.tmp = u, tmp
        self.host = f"mc12-{u}"
        self.service = free_net("10.97.0.0", 24)
        svc = list(ipaddress.ip_network(self.service).hosts())
        self.vip = {"a": str(svc[9]), "b": str(svc[10]), "v": str(svc[11])}
        self.spare = [str(a) for a in svc[20:40]]
        self.names = {k: f"{k}-{u}.mec.local" for k in ("a", "b", "v")}
        ue_net = ipaddress.ip_network(free_net("10.98.0.0", 30))
        self.dp, self.ue_ip = (str(a) for a in ue_net.hosts())
        self.ue_ns, self.ue_link = f"mc12ue-{u}", f"mcue{u}"
        self.dns_port = free_port()
        self.port = free_port()
        self.prefix = f"MC{u}".upper()
        self.cfg = {
            "state_dir": str(tmp / "state"), "run_dir": str(tmp / "run"),
            "api": {"listen": f"127.0.0.1:{self.port}"},
            "orchestrator": {"reconcile_interval_s": 0},
            "hosts": [{
                "id": self.host,
                "cim": {"driver": "docker", "network": f"mc12-{u}"},
                "vim": {"driver": "libvirt", "pool": f"mc12-{u}", "network": f"mc12-{u}",
                        "network_cidr": free_net("10.96.0.0", 24), "accel": "tcg",
                        "boot_timeout_s": 300},
                "mep": {"driver": "linux", "dns_port": self.dns_port, "chain_prefix": self.prefix,
                        "service_cidr": self.service, "service_interface": f"mcs{u}",
                        "dns_domain": "mec.local", "dns_upstream": [],
                        "data_plane_address": self.dp}}]}
        self.api = Client(f"http://127.0.0.1:{self.port}", timeout=60)
        self.server: subprocess.Popen | None = None
        self.ids: dict[str, str] = {}

    # -- set up and tear down --------------------------------------------------------
    def up(self) -> None:
        run("ip", "netns", "add", self.ue_ns)
        run("ip", "link", "add", self.ue_link, "type", "veth", "peer", "name", self.ue_link + "p",
            "netns", self.ue_ns)
        run("ip", "addr", "add", f"{self.dp}/30", "dev", self.ue_link)
        run("ip", "link", "set", self.ue_link, "up")
        for argv in (("ip", "link", "set", "lo", "up"),
                     ("ip", "addr", "add", f"{self.ue_ip}/30", "dev", self.ue_link + "p"),
                     ("ip", "link", "set", self.ue_link + "p", "up"),
                     ("ip", "route", "add", "default", "via", self.dp)):
            run("ip", "netns", "exec", self.ue_ns, *argv)
        (self.tmp / "mecorch.yaml").write_text(json.dumps(self.cfg))   # JSON is YAML
        log = open(self.tmp / "serve.log", "wb")
        self.server = subprocess.Popen(
            [sys.executable, "-m", "mecorch.cli", "--config", str(self.tmp / "mecorch.yaml"),
             "serve", "--listen", f"127.0.0.1:{self.port}"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while True:
            assert self.server.poll() is None, self.log()
            try:
                self.api.get("/app_pkgm/v1/app_packages")
                break
            except (ApiError, OSError, Exception):
                assert time.monotonic() < deadline, self.log()
                time.sleep(0.3)
        self.onboard()

    def log(self) -> str:
        return (self.tmp / "serve.log").read_text(errors="replace")[-4000:]

    def onboard(self) -> None:
        vm_folder = self.tmp / "sample-vm-app"
        shutil.copytree(EXAMPLES / "sample-vm-app", vm_folder)
        (vm_folder / "artifacts.yaml").write_text(
            f"artifacts:\n  - source: {SAMPLE_VM}\n    path: Artifacts/sample-vm.qcow2\n")
        for name, folder in (("sample-container-app", EXAMPLES / "sample-container-app"),
                             ("sample-vm-app", vm_folder)):
            self.onboard_folder(name, folder)

    def onboard_folder(self, name: str, folder: Path) -> None:
        """Build the package of an app folder and onboard it."""
        zpath = build_package(folder, self.tmp / f"{name}.zip")
        self.api.call("POST", "/app_pkgm/v1/app_packages", {
            "appPkgName": name, "appPkgVersion": "1.0", "appPkgPath": str(zpath),
            "checksum": {"algorithm": "SHA-256", "hash": sha256_file(zpath)}})

    def create(self, app_d_id: str) -> str:
        return self.api.call("POST", INST, {"appDId": app_d_id})[1]["id"]

    def instantiate(self, iid: str, manner: str, rules: tuple[list, list]) -> dict:
        return self.api.call("POST", f"{INST}/{iid}/instantiate", {
            "selectedMECHostInfo": [{"hostId": {"id": self.host}}], "deploymentType": manner,
            "appTrafficRule": rules[0], "appDNSRule": rules[1]})[1]

    def deploy(self, key: str, app_d_id: str, manner: str) -> str:
        iid = self.create(app_d_id)
        op = self.api.wait_op(self.instantiate(iid, manner, (
            [traffic(f"{key}-vip", self.vip[key])], [dns(f"{key}-dns", self.names[key],
                                                         self.vip[key])])), timeout=420)
        assert op["operationState"] == "COMPLETED", (op.get("error"), self.log())
        self.ids[key] = iid
        return iid

    def terminate(self, iid: str) -> None:
        op = self.api.call("POST", f"{INST}/{iid}/terminate", {"terminationType": "FORCEFUL"})[1]
        assert self.api.wait_op(op)["operationState"] == "COMPLETED"

    def down(self) -> None:
        try:
            for inst in self.api.get(INST):
                if inst["instantiationState"] == "INSTANTIATED":
                    self.terminate(inst["id"])
        except Exception:       # noqa: BLE001 - clean up what can be cleaned
            pass
        if self.server is not None:
            self.server.terminate()
            try:
                self.server.wait(30)
            except subprocess.TimeoutExpired:
                self.server.kill()
        host = self.cfg["hosts"][0]
        from drivers.linux_mep import LinuxMEP
        mep = LinuxMEP({**host["mep"], "state_dir": str(self.tmp / "state/hosts" / self.host),
                        "run_dir": str(self.tmp / "run" / self.host), "host_id": self.host})
        mep.uninstall()
        run("docker", "network", "rm", host["cim"]["network"], check=False)
        for cmd in (["net-destroy"], ["net-undefine"], ["pool-destroy"], ["pool-undefine"]):
            run("virsh", "-c", "qemu:///system", *cmd, host["vim"]["network"], check=False)
        run("ip", "netns", "del", self.ue_ns, check=False)

    # -- probes ------------------------------------------------------------------------
    def in_app(self, iid: str, script: str) -> str:
        """Run a busybox shell script inside the instance's app container."""
        r = run("docker", "exec", f"mecorch-{iid}-app", "/bin/busybox", "sh", "-c", script,
                check=False, timeout=60)
        return r.stdout + r.stderr

    def vm_ip(self) -> str:
        return self.api.get(f"{INST}/{self.ids['v']}")["allocatedResources"]["network"][0]["ip"]

    def in_vm(self, query: str, body: dict | None = None) -> str:
        """Ask the sample VM's MEC client (/cgi-bin/mec) to act."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://{self.vm_ip()}/cgi-bin/mec?{query}", data=data)
        with urllib.request.urlopen(req, timeout=30) as resp:    # noqa: S310 - our own VM
            return resp.read().decode(errors="replace")

    def dig(self, name: str) -> str:
        return run("dig", "+short", "+time=1", "+tries=2", "@127.0.0.1", "-p",
                   str(self.dns_port), name, check=False).stdout.strip()

    def snapshot(self) -> tuple[str, dict]:
        """The MEP's iptables chains and hooks (lines naming its prefix) and
        every file of its hostsdir with its content."""
        saved = run("iptables-save").stdout
        rules = "\n".join(l for l in saved.splitlines() if self.prefix + "-" in l)
        hosts = self.tmp / "state/hosts" / self.host / "dns/hosts.d"
        return rules, {p.name: p.read_bytes() for p in sorted(hosts.iterdir())}


def http_get(address: str) -> str:
    """A busybox script fetching http://address/ (busybox-static's wget
    crashes in glibc's NSS without its modules: nc speaks HTTP instead)."""
    return f"printf 'GET / HTTP/1.0\\r\\nHost: {address}\\r\\n\\r\\n' | nc -w 5 {address} 80"


def app_mp1(method: str, path: str, body: dict | None = None) -> str:
    """A busybox script an app runs to call its Mp1 with its own env."""
    payload = json.dumps(body) if body is not None else ""
    return (f"u=${{MEC_MP1_URL#http://}}; hp=${{u%%/*}}; base=/${{u#*/}}; b='{payload}'; "
            f"{{ printf '{method} %s/{path} HTTP/1.0\\r\\nHost: %s\\r\\n"
            f"Authorization: Bearer %s\\r\\nContent-Type: application/json\\r\\n"
            f"Content-Length: %s\\r\\n\\r\\n%s' \"$base\" \"$hp\" \"$MEC_APP_TOKEN\" "
            f"\"${{#b}}\" \"$b\"; }} | nc -w 5 \"${{hp%:*}}\" \"${{hp##*:}}\"")


def poll(probe, check, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if check(got) or time.monotonic() > deadline:
            return got
        time.sleep(0.2)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    assert SAMPLE_VM.is_file(), f"{SAMPLE_VM} missing: run bash vagrant/provision.sh"
    # The image must come from the current build script (it reads its
    # fw_cfg environment and carries the MEC client): the build records the
    # script's hash.
    script = Path(__file__).resolve().parents[1] / "vagrant/workloads/build-vm-image.sh"
    key = Path(f"{SAMPLE_VM}.key")
    assert key.is_file() and key.read_text().strip() == sha256_file(script), (
        f"{SAMPLE_VM} was built by an older build-vm-image.sh: run bash vagrant/provision.sh "
        "(it rebuilds the cached image when the script changed)")
    # QEMU runs as libvirt-qemu and must reach the pool under the state dir.
    tmp = Path(tempfile.mkdtemp(prefix="mecorch-mep12-", dir="/var/tmp"))
    os.chmod(tmp, 0o711)
    lab = Lab(tmp)
    try:
        lab.up()
        lab.deploy("a", "sample-http", "CONTAINER")
        lab.deploy("b", "sample-http", "CONTAINER")
        lab.deploy("v", "sample-vm", "VM")
        yield lab
    finally:
        lab.down()
        shutil.rmtree(tmp, ignore_errors=True)


# -- DNS and traffic where clients look ----------------------------------------------------

def test_container_app_resolves_and_reaches_other_apps_through_its_default_resolver(lab):
    a = lab.ids["a"]
    assert "nameserver 127.0.0.11" in lab.in_app(a, "cat /etc/resolv.conf")
    for key, body in (("b", "mecorch sample container"), ("v", "mecorch sample vm")):
        out = poll(lambda: lab.in_app(a, f"nslookup {lab.names[key]}"),
                   lambda o: lab.vip[key] in o)
        assert lab.vip[key] in out, out
        got = lab.in_app(a, http_get(lab.vip[key]))
        assert body in got, got
    out = lab.in_app(a, f"nslookup nowhere-{lab.u}.example.org")
    assert "can't resolve" in out or "REFUSED" in out or "NXDOMAIN" in out, out


def test_vm_app_resolves_and_reaches_other_apps_through_its_dhcp_resolver(lab):
    for key in ("a", "b"):
        out = lab.in_vm(f"resolve={lab.names[key]}")
        assert lab.vip[key] in out, out
        assert "mecorch sample container" in lab.in_vm(f"fetch=http://{lab.vip[key]}/")
    out = lab.in_vm(f"resolve=nowhere-{lab.u}.example.org")
    assert "REFUSED" in out, out                       # no upstream configured


def test_ue_in_a_netns_resolves_through_the_data_plane_address(lab):
    for key, body in (("a", "mecorch sample container"), ("v", "mecorch sample vm")):
        got = run("ip", "netns", "exec", lab.ue_ns, "dig", "+short", "+time=2", "+tries=2",
                  f"@{lab.dp}", lab.names[key]).stdout.strip()
        assert got == lab.vip[key]
        out = run("ip", "netns", "exec", lab.ue_ns, "curl", "-s", "-m", "5",
                  f"http://{lab.vip[key]}/", check=False).stdout
        assert body in out
    refused = run("ip", "netns", "exec", lab.ue_ns, "dig", "+time=2", "+tries=1", f"@{lab.dp}",
                  f"nowhere-{lab.u}.example.org", check=False).stdout
    assert "status: REFUSED" in refused


# -- Mp1 from inside the apps --------------------------------------------------------------

def test_container_app_reads_and_changes_its_rules_over_mp1_with_its_own_token(lab):
    a, b = lab.ids["a"], lab.ids["b"]
    env = lab.in_app(a, "echo $MEC_MP1_URL $MEC_APP_INSTANCE_ID")
    assert env.split()[1] == a and "127.0.0.1" not in env.split()[0], env
    got = lab.in_app(a, app_mp1("GET", f"applications/{a}/dns_rules"))
    assert " 200 " in got.splitlines()[0] and lab.names["a"] in got, got
    new_ip = lab.spare[0]
    rule = etsi(dns("a-dns", lab.names["a"], new_ip))
    got = lab.in_app(a, app_mp1("PUT", f"applications/{a}/dns_rules/a-dns", rule))
    assert " 200 " in got.splitlines()[0], got
    assert poll(lambda: lab.dig(lab.names["a"]), lambda o: o == new_ip) == new_ip
    # traffic: move its VIP to a spare address of the range; the old one stops
    moved = etsi(traffic("a-vip", lab.spare[0]))
    got = lab.in_app(a, app_mp1("PUT", f"applications/{a}/traffic_rules/a-vip", moved))
    assert " 200 " in got.splitlines()[0], got
    out = lab.in_app(b, http_get(lab.spare[0]))
    assert "mecorch sample container" in out, out
    for path in (f"applications/{b}/dns_rules", f"applications/{lab.ids['v']}/traffic_rules"):
        got = lab.in_app(a, app_mp1("GET", path))
        assert " 403 " in got.splitlines()[0], got


def test_vm_app_reads_its_oem_strings_and_changes_its_rules_over_mp1(lab):
    v = lab.ids["v"]
    env = lab.in_vm("env")
    assert f"MEC_APP_INSTANCE_ID={v}" in env and "MEC_APP_TOKEN=(given)" in env, env
    assert "127.0.0.1" not in env
    got = lab.in_vm(f"mp1=applications/{v}/dns_rules")
    assert " 200 " in got.splitlines()[0] and lab.names["v"] in got, got
    new_ip = lab.spare[1]
    got = lab.in_vm(f"mp1=applications/{v}/dns_rules/v-dns",
                    etsi(dns("v-dns", lab.names["v"], new_ip)))
    assert " 200 " in got.splitlines()[0], got
    assert poll(lambda: lab.dig(lab.names["v"]), lambda o: o == new_ip) == new_ip
    got = lab.in_vm(f"mp1=applications/{v}/traffic_rules/v-vip",
                    etsi(traffic("v-vip", lab.spare[1])))
    assert " 200 " in got.splitlines()[0], got
    out = poll(lambda: run("curl", "-s", "-m", "3", f"http://{lab.spare[1]}/", check=False).stdout,
               lambda o: "mecorch sample vm" in o)
    assert "mecorch sample vm" in out
    got = lab.in_vm(f"mp1=applications/{lab.ids['a']}/dns_rules")
    assert " 403 " in got.splitlines()[0], got


# -- ownership: refused, nothing applied ----------------------------------------------------

def test_every_ownership_case_is_refused_and_nothing_changes(lab):
    a, b, v = lab.ids["a"], lab.ids["b"], lab.ids["v"]
    before = lab.snapshot()
    operator = lab.api
    cases = [  # (path, rule, status, what the detail must name)
        (f"{MP1}/{a}/traffic_rules/a-vip", etsi(traffic("a-vip", "192.0.2.77")), 400,
         lab.service),
        (f"{MP1}/{a}/traffic_rules/a-vip", etsi(traffic("a-vip", lab.vip["b"])), 409, b),
        (f"{MP1}/{a}/dns_rules/a-dns", etsi(dns("a-dns", lab.names["v"], lab.vip["a"])), 409, v),
        (f"{MP1}/{a}/dns_rules/a-dns", etsi(dns("a-dns", f"a-{lab.u}.example.org",
                                                lab.vip["a"])), 400, "mec.local"),
        (f"{MP1}/{v}/traffic_rules/v-vip", etsi(traffic("v-vip", lab.vip["b"])), 409, b),
    ]
    for path, rule, status, named in cases:
        with pytest.raises(ApiError) as e:
            operator.call("PUT", path, rule)
        assert e.value.status == status and named in e.value.detail, (path, e.value.detail)
        assert lab.snapshot() == before
    # the same from an AppD/request at instantiation: refused at the POST
    c = lab.create("sample-http")
    for rules, status, named in (
            (([traffic("c", lab.vip["b"])], []), 409, b),
            # outside every host's range: placement refuses it first (409
            # naming each host's range), before the ledger's 400
            (([traffic("c", "192.0.2.78")], []), 409, lab.service),
            (([], [dns("c", lab.names["v"], lab.spare[5])]), 409, v),
            (([], [dns("c", "c.example.org", lab.spare[5])]), 400, "mec.local")):
        with pytest.raises(ApiError) as e:
            lab.instantiate(c, "CONTAINER", rules)
        assert e.value.status == status and named in e.value.detail, e.value.detail
        assert lab.snapshot() == before
    # replicas of one app may share a name (b is sample-http like a)
    shared = lab.api.wait_op(lab.instantiate(c, "CONTAINER", (
        [traffic("c", lab.spare[6])], [dns("c", lab.names["b"], lab.spare[6])])))
    assert shared["operationState"] == "COMPLETED", shared.get("error")
    lab.terminate(c)


def test_two_instantiations_racing_for_one_address_exactly_one_wins(lab):
    before = lab.snapshot()
    ids = [lab.create("sample-http") for _ in range(2)]
    results: dict[str, object] = {}

    def go(iid: str) -> None:
        try:
            results[iid] = lab.instantiate(iid, "CONTAINER",
                                           ([traffic("race", lab.spare[9])], []))
        except ApiError as e:
            results[iid] = e
    threads = [threading.Thread(target=go, args=(iid,)) for iid in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    won = [i for i in ids if isinstance(results[i], dict)]
    lost = [i for i in ids if isinstance(results[i], ApiError)]
    assert len(won) == 1 and len(lost) == 1, results
    assert results[lost[0]].status == 409 and won[0] in results[lost[0]].detail
    assert lab.api.wait_op(results[won[0]])["operationState"] == "COMPLETED"
    lab.terminate(won[0])
    assert lab.snapshot() == before
