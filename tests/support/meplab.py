"""A `mecorch serve` on the real backends for the MEP clients (Lab), the
Mp1 calls an app makes, and the traffic/DNS rule bodies. (Was part of
test_mep_clients.)"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from mecorch.kernel.client import ApiError, Client
from mecorch.kernel.fileutil import sha256_file
from mecorch.package import build_package
from conftest import WORKLOADS, run

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
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
