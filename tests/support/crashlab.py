"""A `mecorch serve` process with names of its own (host id, docker
network, libvirt pool + network, chain prefix, dnsmasq port, state dir)
that tests can SIGKILL and restart on the same state, and a census of what
the real backends hold for it.

Used by test_crash.py and test_backend_faults.py.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import yaml

from conftest import remove_mep_chains, run
from mecorch.kernel import config as mconfig
from mecorch.kernel.client import Client
from mecorch.package import build_package
from mecorch.kernel.fileutil import sha256_file

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
INST = "/app_lcm/v1/app_instances"
OPS = "/app_lcm/v1/app_lcm_op_occs"
PKGS = "/app_pkgm/v1/app_packages"
VIRSH = ("virsh", "-q", "-c", "qemu:///system")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_cidr() -> str:
    """A 10.199.0-63.0/24 no route or libvirt network of this machine uses
    (a libvirt network refuses a subnet already routed; Docker's default
    pools take 172.17-31 and 192.168 ones)."""
    used = [ipaddress.ip_network(line.split()[0], strict=False)
            for line in run("ip", "-o", "-4", "route", "show").stdout.splitlines()
            if line.split()[0][0].isdigit()]
    for name in run(*VIRSH, "net-list", "--all", "--name").stdout.split():
        xml = run(*VIRSH, "net-dumpxml", name, check=False).stdout
        for addr in re.findall(r"<ip address='([0-9.]+)' (?:netmask|prefix)", xml):
            used.append(ipaddress.ip_network(f"{addr}/24", strict=False))
    start = os.getpid() % 64
    for i in range(64):
        net = ipaddress.ip_network(f"10.199.{(start + i) % 64}.0/24")
        if not any(net.overlaps(u) for u in used):
            return str(net)
    raise AssertionError("no free 10.199.0-63.0/24 for the lab's VM network")


def rules_body(manner: str, n: int) -> dict:
    """Rules of the lab's own (service addresses and names no other test
    uses), replacing the AppD's."""
    vip = f"10.90.0.{200 + n}"
    return {"appTrafficRule": [{
                "trafficRuleId": "lab-vip", "filterType": "FLOW", "priority": 1,
                "trafficFilter": [{"dstAddress": [vip], "dstPort": ["80"], "protocol": ["TCP"]}],
                "action": "FORWARD_DECAPSULATED", "dstInterface": [{"interfaceType": "IP"}]}],
            "appDNSRule": [{"dnsRuleId": "lab-dns", "domainName": f"lab-{manner.lower()}.mec.local",
                            "ipAddressType": "IP_V4", "ipAddress": vip}]}


class Lab:
    def __init__(self, prefix: str, chain: str, cidr: str | None = None, cim: dict | None = None,
                 vim: dict | None = None, interval_s: float = 2, vm: bool = True):
        # QEMU runs as libvirt-qemu and must reach the pool under state_dir.
        self.tmp = Path(tempfile.mkdtemp(prefix=f"mecorch-{prefix}-", dir="/var/tmp"))
        os.chmod(self.tmp, 0o711)
        self.tag = f"{prefix}{int(time.time()) % 100000}"
        self.host_id = f"h{self.tag}"
        # names of its own even when the same test runs twice at once
        self.chain = f"{chain}{os.getpid() % 10000}"[:16]
        cidr = cidr or free_cidr()
        self.api_port, self.dns_port = free_port(), free_port()
        base = mconfig.DEFAULT["hosts"][0]
        host = {"id": self.host_id,
                "cim": {**base["cim"], "network": f"mec-{self.tag}", **(cim or {})},
                "mep": {**base["mep"], "dns_port": self.dns_port, "chain_prefix": self.chain}}
        if vm:
            host["vim"] = {**base["vim"], "pool": f"mec-{self.tag}", "network": f"mec-{self.tag}",
                           "network_cidr": cidr, "accel": "tcg", **(vim or {})}
        self.cfg = {"state_dir": str(self.tmp / "state"), "run_dir": str(self.tmp / "run"),
                    # room for a few dozen sample instances on 2 cores
                    "orchestrator": {"reconcile_interval_s": interval_s,
                                     "cpu_allocation_ratio": 32.0},
                    "hosts": [host]}
        self.cfg_path = self.tmp / "mecorch.yaml"
        self.cfg_path.write_text(yaml.safe_dump(self.cfg))
        self.c = Client(f"http://127.0.0.1:{self.api_port}", token="", timeout=30)
        self.proc: subprocess.Popen | None = None
        self.ids: set[str] = set()          # every instance id ever created here
        self.log = open(self.tmp / "serve.log", "ab")
        self.docker = ("docker", "-H", host["cim"]["docker_host"])

    @property
    def hostsdir(self) -> Path:
        return self.tmp / "state" / "hosts" / self.host_id / "dns" / "hosts.d"

    @property
    def selected(self) -> list:
        return [{"hostId": {"id": self.host_id}}]

    # ------------------------------------------------------------ process
    def start(self, timeout: float = 30) -> float:
        """Start the server; returns seconds until the API answered."""
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mecorch.cli", "--config", str(self.cfg_path), "serve",
             "--listen", f"127.0.0.1:{self.api_port}"], stdout=self.log, stderr=subprocess.STDOUT)
        while True:
            try:
                self.c.get(OPS)
                return time.monotonic() - t0
            except Exception:  # noqa: BLE001 - not up yet
                if self.proc.poll() is not None:
                    raise AssertionError("mecorch serve exited:\n" + self.log_tail())
                if time.monotonic() - t0 > timeout:
                    raise AssertionError("mecorch serve did not answer:\n" + self.log_tail())
                time.sleep(0.05)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self, n: int = 4000) -> str:
        self.log.flush()
        return (self.tmp / "serve.log").read_text(errors="replace")[-n:]

    # ------------------------------------------------------------ API helpers
    def onboard(self, folders=("sample-container-app", "sample-vm-app")) -> None:
        for folder in folders:
            zpath = build_package(EXAMPLES / folder, self.tmp / f"{folder}.zip")
            self.c.post(PKGS, {"appPkgName": folder, "appPkgVersion": "1.0",
                               "appPkgPath": str(zpath),
                               "checksum": {"algorithm": "SHA-256", "hash": sha256_file(zpath)}})

    def create(self, app_d_id: str) -> str:
        inst, _ = self.c.post(INST, {"appDId": app_d_id})
        self.ids.add(inst["id"])
        return inst["id"]

    def instantiate(self, iid: str, manner: str, n: int | None = None, headers=None) -> dict:
        """`n` picks the instance's service address (rules_body); by default
        one no other deployed instance of the lab steers (an address has one
        owner), the same again for a retry of the same instance."""
        # one at a time up to the 202: a concurrent twin would see the
        # address as free until this op occurrence exists
        with self._address_lock:
            if n is None:
                n = self._address_of(iid)
            else:
                self._held()[iid] = n
            op, _ = self.c.post(f"{INST}/{iid}/instantiate",
                                {"selectedMECHostInfo": self.selected, "deploymentType": manner,
                                 **rules_body(manner, n)}, headers)
        return op

    _address_lock = threading.Lock()

    def _held(self) -> dict[str, int]:
        """instance -> the n of its service address, as instantiated here"""
        if not hasattr(self, "_addresses"):
            self._addresses = {}
        return self._addresses

    def _address_of(self, iid: str) -> int:
        """The instance's last n while no other deployed (or deploying)
        instance holds it, else the smallest free one."""
        held = self._held()
        live = {i["id"] for i in self.c.get(INST) if i["instantiationState"] == "INSTANTIATED"}
        live |= {o["appInstanceId"] for o in self.c.get("/app_lcm/v1/app_lcm_op_occs")
                 if o["operationState"] in ("STARTING", "PROCESSING")}
        taken = {n for other, n in held.items() if other in live and other != iid}
        if held.get(iid) is None or held[iid] in taken:
            held[iid] = next(n for n in range(0, 55) if n not in taken)
        return held[iid]

    def deploy(self, app_d_id: str, manner: str, timeout: float = 300) -> str:
        iid = self.create(app_d_id)
        op = self.c.wait_op(self.instantiate(iid, manner), timeout=timeout)
        assert op["operationState"] == "COMPLETED", op.get("error")
        return iid

    def terminate(self, iid: str, graceful_s: int | None = None) -> dict:
        body = {"terminationType": "FORCEFUL"} if graceful_s is None else \
            {"terminationType": "GRACEFUL", "gracefulTerminationTimeout": graceful_s}
        return self.c.post(f"{INST}/{iid}/terminate", body)[0]

    def busy_ops(self) -> list[dict]:
        return [o for o in self.c.get(OPS) if o["operationState"] in ("STARTING", "PROCESSING")]

    def instantiated(self) -> set[str]:
        return {i["id"] for i in self.c.get(INST) if i["instantiationState"] == "INSTANTIATED"}

    # ------------------------------------------------------------ backend census
    def census(self) -> dict[str, dict[str, int]]:
        """Per instance id: how many objects of each kind the backends hold
        for this lab (containers by role, volumes, domains, pool volumes,
        iptables jumps, DNS files)."""
        out: dict[str, dict[str, int]] = {}

        def add(iid: str, kind: str) -> None:
            out.setdefault(iid, {}).setdefault(kind, 0)
            out[iid][kind] += 1
        ps = run(*self.docker, "ps", "-a", "--filter", f"label=mecorch.host={self.host_id}",
                 "--format", '{{.Label "mecorch.instance"}} {{.Label "mecorch.role"}}').stdout
        for line in ps.split("\n"):
            if line.strip():
                iid, role = line.split()
                add(iid, f"container:{role}")
        vols = run(*self.docker, "volume", "ls", "--filter", f"label=mecorch.host={self.host_id}",
                   "--format", '{{.Label "mecorch.instance"}}').stdout
        for iid in vols.split():
            add(iid, "docker-volume")
        if "vim" in self.cfg["hosts"][0]:
            names = run(*VIRSH, "list", "--all", "--name").stdout.split()
            for iid in self.ids:
                if f"mecorch-{iid}" in names:
                    add(iid, "domain")
            pool = self.cfg["hosts"][0]["vim"]["pool"]
            vl = run(*VIRSH, "vol-list", pool, check=False).stdout
            for line in vl.split("\n"):
                name = line.split()[0] if line.strip() else ""
                for iid in self.ids:
                    if name.startswith(iid):
                        add(iid, "pool-volume")
        saved = run("iptables-save").stdout
        for line in saved.split("\n"):
            top = line.startswith((f"-A {self.chain}-RAW ", f"-A {self.chain}-PRE "))
            if top and '--comment "mecorch:' in line:
                add(line.split('--comment "mecorch:')[1].split('"')[0], "iptables")
        if self.hostsdir.is_dir():
            for name in os.listdir(self.hostsdir):
                add(name.lstrip("."), "dns-file")
        return out

    def problems(self, expect: set[str] | None = None) -> list[str]:
        """What is wrong now: objects of instances not INSTANTIATED
        (orphans), INSTANTIATED instances without exactly one runtime
        (vanished or duplicated), op occurrences not ended."""
        found = []
        insts = {i["id"]: i for i in self.c.get(INST)}
        live = {i for i, d in insts.items() if d["instantiationState"] == "INSTANTIATED"}
        if expect is not None and live != expect:
            found.append(f"INSTANTIATED {sorted(live)} != expected {sorted(expect)}")
        for op in self.busy_ops():
            found.append(f"op {op['id']} still {op['operationState']}")
        census = self.census()
        for iid, kinds in census.items():
            if iid not in live:
                found.append(f"orphan objects of {iid}: {kinds}")
        for iid in live:
            kinds = census.get(iid, {})
            manner = insts[iid].get("deploymentType")
            want = {"container:app": 1, "container:pause": 1} if manner == "CONTAINER" \
                else {"domain": 1,      # its root disk and data disks
                      "pool-volume": len(insts[iid]["allocatedResources"]["storage"])}
            want.update({"iptables": 2, "dns-file": 1})    # raw + nat jump, one hosts file
            if kinds != want:
                found.append(f"INSTANTIATED {iid} ({manner}) has {kinds}, want {want}")
        return found

    # ------------------------------------------------------------ teardown
    def teardown(self) -> list[str]:
        """Terminate and delete everything, stop the server, remove the
        infrastructure; returns what was left behind (should be [])."""
        left = []
        try:
            if self.proc is None or self.proc.poll() is not None:
                self.start()
            for inst in self.c.get(INST):
                if inst["instantiationState"] == "INSTANTIATED":
                    op = self.terminate(inst["id"])
                    self.c.wait_op(op, timeout=120)
                self.c.call("DELETE", f"{INST}/{inst['id']}")
            for pkg in self.c.get(PKGS):
                if pkg["operationalState"] == "ENABLED":
                    self.c.call("PATCH", f"{PKGS}/{pkg['id']}", {"operationState": "DISABLED"})
                self.c.call("DELETE", f"{PKGS}/{pkg['id']}")
            left = [f"{k}: {v}" for k, v in self.census().items()]
        finally:
            self.stop()
            self.remove_infrastructure()
            self.log.close()
            shutil.rmtree(self.tmp, ignore_errors=True)
        return left

    def remove_infrastructure(self) -> None:
        host = self.cfg["hosts"][0]
        run(*self.docker, "network", "rm", host["cim"]["network"], check=False)
        if "vim" in host:
            name = host["vim"]["network"]
            for cmd in (["net-destroy", name], ["net-undefine", name],
                        ["pool-destroy", host["vim"]["pool"]],
                        ["pool-undefine", host["vim"]["pool"]]):
                run(*VIRSH, *cmd, check=False)
        from drivers.linux_mep import LinuxMEP
        mep = LinuxMEP({**host["mep"], "state_dir": str(self.tmp / "state/hosts" / self.host_id),
                        "run_dir": str(self.tmp / "run" / self.host_id)})
        mep.stop_services()                 # both dnsmasqs
        remove_mep_chains(self.chain)       # every hook and chain of the prefix


def wait_clean(lab: Lab, since: float, limit_s: float = 10.0,
               expect: set[str] | None = None) -> float:
    """Poll until the lab has no problem; returns the seconds since `since`
    it took, failing with the problems if it takes more than `limit_s`."""
    while True:
        found = lab.problems(expect)
        took = time.monotonic() - since
        if not found:
            return took
        if took > limit_s:
            raise AssertionError(f"not reconciled {took:.1f}s after restart: {found}\n"
                                 + lab.log_tail())
        time.sleep(0.3)


class Daemon:
    """A daemon this test starts and stops by its pid."""

    def __init__(self, name: str, argv: list[str], ready, log: Path):
        self.name, self.argv, self.ready, self.log = name, argv, ready, log
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not self.ready():
            assert self.proc.poll() is None, f"{self.name} exited: {self.log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, f"{self.name} not ready"
            time.sleep(0.1)

    def stop(self, timeout: float = 60) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)


def private_registry(root: Path) -> Daemon:
    """A container registry of the test's own on a free loopback port (the
    shared one on :5000 holds the same image names for other tests: a
    package deleted there would pull an image from under them)."""
    port = free_port()
    conf = root / "registry.yml"
    conf.write_text(yaml.safe_dump({
        "version": 0.1, "log": {"level": "error"},
        "storage": {"filesystem": {"rootdirectory": str(root / "registry")}},
        "http": {"addr": f"127.0.0.1:{port}"}}))

    def up() -> bool:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1).read()
            return True
        except OSError:
            return False
    reg = Daemon("registry", ["docker-registry", "serve", str(conf)], up, root / "registry.log")
    reg.addr = f"127.0.0.1:{port}"
    return reg
