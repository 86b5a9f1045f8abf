"""A single-node `mecorch serve` on the real backends (the one lab,
tests/support/lab.py) that tests can SIGKILL and restart on the same state,
deploy the sample apps on with service addresses of its own, and a census
of what the real backends hold for it, per instance.

Used by the crash, backend-fault, reboot, teardown, observed-event and
status-page tests.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

from support import lab as thelab
from support.lab import (EXAMPLES, INST, OPS, PKGS, VIRSH, Daemon,  # noqa: F401 - the tests'
                         private_registry, run)
from mecorch.package import build_package
from mecorch.kernel.fileutil import sha256_file


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
    def __init__(self, prefix: str, cidr: str | None = None, cim: dict | None = None,
                 vim: dict | None = None, interval_s: float = 2, vm: bool = True,
                 orchestrator: dict | None = None):
        self.names = thelab.Names(prefix)
        self.tmp = thelab.private_dir(prefix)
        self.tag, self.host_id, self.chain = self.names.tag, self.names.host_id, \
            self.names.chain
        host = thelab.host_config(self.names, vms=vm, cim=cim,
                                  vim={**({"network_cidr": cidr} if cidr else {}), **(vim or {})})
        self.dns_port = host["mep"]["dns_port"]
        self.cfg = thelab.lab_config(
            self.tmp, [host],
            # room for a few dozen sample instances on 2 cores
            orchestrator={"reconcile_interval_s": interval_s, "cpu_allocation_ratio": 32.0,
                          **(orchestrator or {})})
        self.serve = thelab.Serve(self.cfg, self.tmp, timeout_s=30)
        self.cfg_path, self.api_port = self.serve.config_path, self.serve.port
        self.c = self.serve.client
        self.ids: set[str] = set()          # every instance id ever created here
        self.docker = ("docker", "-H", host["cim"]["docker_host"])

    @property
    def proc(self):
        return self.serve.proc

    @property
    def hostsdir(self) -> Path:
        return self.tmp / "state" / "hosts" / self.host_id / "dns" / "hosts.d"

    @property
    def selected(self) -> list:
        return [{"hostId": {"id": self.host_id}}]

    # ------------------------------------------------------------ process
    def start(self, timeout: float = 30) -> float:
        """Start the server; returns seconds until the API answered."""
        self.serve.start(wait=False)
        return self.serve.wait_ready(timeout)

    def kill(self) -> None:
        self.serve.kill()

    def stop(self) -> None:
        self.serve.stop()

    def log_tail(self, n: int = 4000) -> str:
        return self.serve.log_tail(n)

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
            if not out_of_service(insts[iid]):
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
            if not self.serve.alive:
                self.start()
            thelab.clear(self.c)
            left = [f"{k}: {v}" for k, v in self.census().items()]
            left += thelab.leftovers(self.cfg["hosts"][0])
        finally:
            self.stop()
            self.remove_infrastructure()
            shutil.rmtree(self.tmp, ignore_errors=True)
        return left

    def remove_infrastructure(self) -> None:
        thelab.remove_host(self.cfg["hosts"][0], self.cfg["state_dir"], self.cfg["run_dir"])


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


def out_of_service(inst: dict) -> bool:
    """Whether an instance's rules should be out of service, from its view
    alone: its runtime does not run, its readiness check fails, or it is
    fenced (mecorch takes its DNS answer and traffic destination away)."""
    return inst.get("observedState") in ("STOPPED", "MISSING", "CRASH_LOOP") \
        or (inst.get("health") or {}).get("ready") is False or bool(inst.get("fenced"))
