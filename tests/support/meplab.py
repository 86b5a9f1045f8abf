"""A `mecorch serve` on the real backends for the MEP clients (Lab), the
Mp1 calls an app makes, and the traffic/DNS rule bodies. (Was part of
test_mep_clients.)"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import secrets
import shutil
import time
import urllib.request
from pathlib import Path

from mecorch.kernel import config
from mecorch.kernel.fileutil import sha256_file
from mecorch.package import build_package
from conftest import WORKLOADS, run
from support import lab as thelab
from support.lab import free_subnet

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
INST = "/app_lcm/v1/app_instances"
MP1 = "/mec_app_support/v1/applications"
# The VM image with the MEC client (vagrant/workloads/build-vm-image.sh);
# MECORCH_SAMPLE_VM points at another build of it.
SAMPLE_VM = Path(os.environ.get("MECORCH_SAMPLE_VM", WORKLOADS / "sample-vm.qcow2"))


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
    """A `mecorch serve` of the one lab (tests/support/lab.py) with names of
    its own (host id, docker network, libvirt pool + network, chain prefix,
    service range and link, dnsmasq port) and a UE namespace behind the
    data-plane address. With `vm_callbacks`, the VMs' network is in
    api.callback_networks: a VM app may subscribe with a callback on itself.
    (Not the containers' network: Docker picks its subnet, and one given
    in cim.subnet leaves the network without the gateway address the
    containers' DNS needs - Docker reports no Gateway then.)"""

    def __init__(self, tmp: Path, vm_callbacks: bool = False):
        u = secrets.token_hex(3)
        self.u, self.tmp = u, tmp
        names = thelab.Names("mc", tag=f"mc{u}")
        self.service = free_subnet("10.97.0.0/16", 24)
        svc = list(ipaddress.ip_network(self.service).hosts())
        self.vip = {"a": str(svc[9]), "b": str(svc[10]), "v": str(svc[11])}
        self.spare = [str(a) for a in svc[20:40]]
        self.names = {k: f"{k}-{u}.mec.local" for k in ("a", "b", "v")}
        ue_net = ipaddress.ip_network(free_subnet("10.98.0.0/16", 30))
        self.dp, self.ue_ip = (str(a) for a in ue_net.hosts())
        self.ue_ns, self.ue_link = f"mc12ue-{u}", f"mcue{u}"
        self.ue: thelab.Netns | None = None
        self.prefix = names.chain
        vim: dict = {"boot_timeout_s": 300}
        sections: dict = {"orchestrator": {"reconcile_interval_s": 0}}
        if vm_callbacks:
            vim["network_cidr"] = free_subnet()
            sections["api"] = {"callback_networks": [
                *config.DEFAULT["api"]["callback_networks"], vim["network_cidr"]]}
        self.host_cfg = thelab.host_config(
            names, vim=vim,
            mep={"service_cidr": self.service, "service_interface": f"mcs{u}",
                 "dns_domain": "mec.local", "dns_upstream": [], "data_plane_address": self.dp})
        self.host, self.dns_port = names.host_id, self.host_cfg["mep"]["dns_port"]
        self.cfg = thelab.lab_config(tmp, [self.host_cfg], **sections)
        self.serve = thelab.Serve(self.cfg, tmp, timeout_s=120, client_timeout_s=60)
        self.port, self.api = self.serve.port, self.serve.client
        self.ids: dict[str, str] = {}

    # -- set up and tear down --------------------------------------------------------
    def up(self) -> None:
        self.ue = thelab.Netns(self.ue_ns)
        self.ue.link(self.ue_link, f"{self.dp}/30", f"{self.ue_ip}/30")
        self.ue.exec("ip", "route", "add", "default", "via", self.dp)
        self.serve.start()
        self.onboard()

    def log(self) -> str:
        return self.serve.log_tail()

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

    def down(self) -> list[str]:
        """Everything through the API (terminate, delete), the server, then
        the host's infrastructure and the UE namespace: what the backends
        still held for the host before the forced removal ([] when clean)."""
        try:
            if not self.serve.alive:
                self.serve.start()
            thelab.clear(self.api, timeout_s=300)
        except Exception:       # noqa: BLE001 - clean up what can be cleaned
            pass
        self.serve.stop()
        left = thelab.leftovers(self.host_cfg)
        thelab.remove_host(self.host_cfg, self.cfg["state_dir"], self.cfg["run_dir"])
        if self.ue is not None:
            self.ue.close()
        return left

    # -- probes ------------------------------------------------------------------------
    def in_app(self, iid: str, script: str) -> str:
        return in_app(iid, script)

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


@contextlib.contextmanager
def running(name: str, apps: tuple[tuple[str, str, str], ...], **lab_options):
    """A Lab up with `apps` deployed ((key, appDId, manner) each), taken
    down at the end, which must leave nothing behind. The sample VM image
    must be the current build script's (it reads its fw_cfg environment
    and carries the MEC client: the build records the script's hash)."""
    assert SAMPLE_VM.is_file(), f"{SAMPLE_VM} missing: run bash vagrant/provision.sh"
    script = Path(__file__).resolve().parents[2] / "vagrant/workloads/build-vm-image.sh"
    key = Path(f"{SAMPLE_VM}.key")
    assert key.is_file() and key.read_text().strip() == sha256_file(script), (
        f"{SAMPLE_VM} was built by an older build-vm-image.sh: run bash vagrant/provision.sh "
        "(it rebuilds the cached image when the script changed)")
    tmp = thelab.private_dir(name)      # QEMU (libvirt-qemu) reads the pool under it
    lab = Lab(tmp, **lab_options)
    try:
        lab.up()
        for app in apps:
            lab.deploy(*app)
        yield lab
    finally:
        left = lab.down()
        shutil.rmtree(tmp, ignore_errors=True)
    assert left == [], f"left behind after the API cleanup: {left}"


def in_app(iid: str, script: str) -> str:
    """Run a busybox shell script inside the instance's app container."""
    r = run("docker", "exec", f"mecorch-{iid}-app", "/bin/busybox", "sh", "-c", script,
            check=False, timeout=60)
    return r.stdout + r.stderr


MP1_BASE = "mec_app_support/v1"          # what MEC_MP1_URL ends in
SRV_BASE = "mec_service_mgmt/v1"        # the MEC 011 service management API beside it


def app_mp1(method: str, path: str, body: dict | None = None, base: str = MP1_BASE) -> str:
    """A busybox script an app runs to call its Mp1 (or, with base=SRV_BASE,
    the service management API on the same host:port) with its own env:
    the HTTP answer, whole. `path` may carry a query (URL-encoded); the
    body is ASCII (json.dumps), so ${#b} counts its bytes."""
    payload = json.dumps(body) if body is not None else ""
    for what, text in (("path", path), ("body", payload), ("base", base)):
        if "'" in text:     # each goes into the script single-quoted
            raise ValueError(f"{what} holds a single quote: {text!r}")
    return (f"u=${{MEC_MP1_URL#http://}}; hp=${{u%%/*}}; base=/${{u#*/}}; "
            f"base=${{base%/{MP1_BASE}}}/{base}; b='{payload}'; "
            f"{{ printf '{method} %s/%s HTTP/1.0\\r\\nHost: %s\\r\\n"
            f"Authorization: Bearer %s\\r\\nContent-Type: application/json\\r\\n"
            f"Content-Length: %s\\r\\n\\r\\n%s' \"$base\" '{path}' \"$hp\" "
            f"\"$MEC_APP_TOKEN\" \"${{#b}}\" \"$b\"; }} | nc -w 5 \"${{hp%:*}}\" \"${{hp##*:}}\"")


def poll(probe, check, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if check(got) or time.monotonic() > deadline:
            return got
        time.sleep(0.2)
