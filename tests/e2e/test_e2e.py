"""End to end on the real backends: a `mecorch serve` process with its own
state, network, pool, chains and dnsmasq port, driven through the REST API.

Both manners are onboarded from real packages (the sample images built by
provision), deployed, reached by DNS name (mecorch's dnsmasq) and through
their traffic rule (the steered service address), and terminated; the
backends are then searched for anything of the instances that was left.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from conftest import remove_mep_chains, run
from mecorch.kernel.client import ApiError, Client
from mecorch.package import build_package
from mecorch.kernel.fileutil import sha256_file

pytestmark = [pytest.mark.docker, pytest.mark.libvirt, pytest.mark.mep]

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
INST = "/app_lcm/v1/app_instances"
PKGS = "/app_pkgm/v1/app_packages"
HOST = [{"hostId": {"id": "default"}}]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mec(sample_container, sample_vm):
    """A running `mecorch serve` with names of its own, and the two sample
    packages onboarded."""
    # QEMU runs as libvirt-qemu and must reach the pool under state_dir:
    # pytest's 0700 tmp dirs would shut it out.
    tmp = Path(tempfile.mkdtemp(prefix="mecorch-e2e-", dir="/var/tmp"))
    os.chmod(tmp, 0o711)
    tag = f"e2e{int(time.time()) % 100000}"
    dns_port, api_port = _free_port(), _free_port()
    cfg = {
        "state_dir": str(tmp / "state"), "run_dir": str(tmp / "run"),
        "hosts": [{"id": "default",
                   "cim": {"driver": "docker", "network": f"mec-{tag}"},
                   "vim": {"driver": "libvirt", "pool": f"mec-{tag}", "network": f"mec-{tag}",
                           "network_cidr": "192.168.177.0/24",
                           # the KVM probe is proven by the VIM tests and doctor
                           "accel": "tcg"},
                   "mep": {"driver": "linux", "dns_port": dns_port, "chain_prefix": "MECE2E"}}],
    }
    # the lists in `hosts` replace the default's: fill the driver defaults in
    from mecorch.kernel import config as mconfig
    base = mconfig.DEFAULT["hosts"][0]
    for role in ("cim", "vim", "mep"):
        cfg["hosts"][0][role] = {**base[role], **cfg["hosts"][0][role]}
    cfg_path = tmp / "mecorch.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    log = open(tmp / "serve.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "mecorch.cli", "--config", str(cfg_path),
                             "serve", "--listen", f"127.0.0.1:{api_port}"],
                            stdout=log, stderr=subprocess.STDOUT)
    client = Client(f"http://127.0.0.1:{api_port}", token="")
    for _ in range(100):
        try:
            client.get(PKGS)
            break
        except Exception:  # noqa: BLE001 - not up yet
            assert proc.poll() is None, (tmp / "serve.log").read_text()
            time.sleep(0.1)
    pkgs = {}
    for folder in ("sample-container-app", "sample-vm-app"):
        zpath = build_package(EXAMPLES / folder, tmp / f"{folder}.zip")
        pkg, _ = client.post(PKGS, {"appPkgName": folder, "appPkgVersion": "1.0",
                                    "appPkgPath": str(zpath),
                                    "checksum": {"algorithm": "SHA-256",
                                                 "hash": sha256_file(zpath)}})
        pkgs[pkg["appDId"]] = pkg
    yield {"c": client, "dns_port": dns_port, "tag": tag, "pkgs": pkgs, "tmp": tmp,
           "cfg": cfg}
    # teardown: every instance terminated and deleted, packages removed,
    # then the server stopped by its pid, then the infrastructure it made
    for inst in client.get(INST):
        if inst["instantiationState"] == "INSTANTIATED":
            op, _ = client.post(f"{INST}/{inst['id']}/terminate", {"terminationType": "FORCEFUL"})
            client.wait_op(op, timeout=120)
        client.call("DELETE", f"{INST}/{inst['id']}")
    for pkg in client.get(PKGS):
        if pkg["operationalState"] == "ENABLED":
            client.call("PATCH", f"{PKGS}/{pkg['id']}", {"operationState": "DISABLED"})
        client.call("DELETE", f"{PKGS}/{pkg['id']}")
    proc.terminate()
    proc.wait(timeout=30)
    _remove_infrastructure(cfg, tag, tmp)
    shutil.rmtree(tmp, ignore_errors=True)


def _remove_infrastructure(cfg: dict, tag: str, tmp: Path) -> None:
    name = f"mec-{tag}"
    run("docker", "network", "rm", name, check=False)
    for cmd in (["net-destroy", name], ["net-undefine", name],
                ["pool-destroy", name], ["pool-undefine", name]):
        run("virsh", "-c", "qemu:///system", *cmd, check=False)
    from drivers.linux_mep import LinuxMEP
    mep = LinuxMEP({**cfg["hosts"][0]["mep"], "state_dir": str(tmp / "state/hosts/default"),
                    "run_dir": str(tmp / "run/default")})
    mep.stop_services()                 # both dnsmasqs
    remove_mep_chains("MECE2E")         # every hook and chain of the prefix


def _dig(port: int, name: str) -> str:
    return run("dig", "+short", "+time=1", "+tries=3", "@127.0.0.1", "-p", str(port),
               name).stdout.strip()


def _http(url: str, tries: int = 50) -> str:
    last = None
    for _ in range(tries):
        try:
            with urllib.request.urlopen(url, timeout=3) as r:
                return r.read(200).decode().strip()
        except OSError as e:
            last = e
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer: {last}")


def _deploy(c: Client, app_d_id: str, **body) -> tuple[dict, dict]:
    inst, _ = c.post(INST, {"appDId": app_d_id})
    op, _ = c.post(f"{INST}/{inst['id']}/instantiate", {"selectedMECHostInfo": HOST, **body})
    op = c.wait_op(op, timeout=300)
    return c.get(f"{INST}/{inst['id']}"), op


def _leftovers(iid: str) -> list[str]:
    found = []
    ps = run("docker", "ps", "-aq", "--filter", f"label=mecorch.instance={iid}").stdout.split()
    vols = run("docker", "volume", "ls", "-q", "--filter",
               f"label=mecorch.instance={iid}").stdout.split()
    doms = run("virsh", "-q", "-c", "qemu:///system", "list", "--all", "--name").stdout
    if ps:
        found.append(f"containers {ps}")
    if vols:
        found.append(f"volumes {vols}")
    if iid in doms:
        found.append("domain")
    if f"mecorch:{iid}" in run("iptables-save").stdout:
        found.append("iptables rules")
    return found


@pytest.mark.parametrize("app_d_id,decide,body_text", [
    ("sample-http", {"deploymentType": "CONTAINER"}, "mecorch sample container"),
    ("sample-vm", {"orchestrationInfo": (EXAMPLES / "orchestration/vm-tosca.yaml").read_text()},
     "mecorch sample vm"),
])
def test_deploy_reach_by_dns_and_traffic_rule_then_terminate_gracefully(mec, app_d_id, decide,
                                                                          body_text,
                                                                          notification_sink):
    c = mec["c"]
    info, op = _deploy(c, app_d_id, **decide)
    assert op["operationState"] == "COMPLETED", op.get("error")
    iid = info["id"]
    alloc = info["allocatedResources"]
    assert info["deploymentType"] == ("CONTAINER" if app_d_id == "sample-http" else "VM")
    ip = alloc["network"][0]["ip"]
    assert _http(f"http://{ip}/") == body_text                 # the instance itself
    dns = c.get(f"/mec_app_support/v1/applications/{iid}/dns_rules")[0]
    assert _dig(mec["dns_port"], dns["domainName"]) == dns["ipAddress"]
    assert _http(f"http://{dns['ipAddress']}/") == body_text   # through the traffic rule
    assert c.get(f"{PKGS}/{mec['pkgs'][app_d_id]['id']}")["usageState"] == "IN_USE"

    # graceful termination: the subscribed app gets the notice; its confirm
    # ends the wait long before the timeout
    c.post(f"/mec_app_support/v1/applications/{iid}/subscriptions", {
        "subscriptionType": "AppTerminationNotificationSubscription",
        "callbackReference": notification_sink.url,
        "appInstanceId": iid})
    t0 = time.monotonic()
    op, _ = c.post(f"{INST}/{iid}/terminate",
                   {"terminationType": "GRACEFUL", "gracefulTerminationTimeout": 60})
    got = notification_sink.wait()
    assert got and got[0]["operationAction"] == "TERMINATING"
    c.post(f"/mec_app_support/v1/applications/{iid}/confirm_termination",
           {"operationAction": "TERMINATING"})
    op = c.wait_op(op, timeout=120)
    assert op["operationState"] == "COMPLETED", op.get("error")
    assert time.monotonic() - t0 < 45
    assert _leftovers(iid) == []
    assert _dig(mec["dns_port"], dns["domainName"]) == ""        # name gone with the rules
    c.call("DELETE", f"{INST}/{iid}")


def test_forceful_termination_of_a_vm_deployed_by_its_onboarded_manner(mec):
    c = mec["c"]
    info, op = _deploy(c, "sample-vm")                            # no signal: onboarding says VM
    assert op["operationState"] == "COMPLETED", op.get("error")
    assert info["deploymentType"] == "VM"
    t0 = time.monotonic()
    op, _ = c.post(f"{INST}/{info['id']}/terminate", {"terminationType": "FORCEFUL"})
    assert c.wait_op(op, timeout=120)["operationState"] == "COMPLETED"
    assert time.monotonic() - t0 < 30
    assert _leftovers(info["id"]) == []


def test_contradiction_is_400_and_nothing_made(mec):
    c = mec["c"]
    inst, _ = c.post(INST, {"appDId": "sample-http"})
    pod = (EXAMPLES / "orchestration/container-pod.yaml").read_text()
    with pytest.raises(ApiError) as e:
        c.post(f"{INST}/{inst['id']}/instantiate",
               {"selectedMECHostInfo": HOST, "deploymentType": "VM", "orchestrationInfo": pod})
    assert e.value.status == 400 and "deploymentType" in e.value.detail
    assert _leftovers(inst["id"]) == []


def test_failure_in_the_rules_step_releases_the_container(mec):
    """A traffic rule iptables cannot express fails the MEP step after the
    container was made: the container, its pause container and volumes go."""
    c = mec["c"]
    rule = {"trafficRuleId": "enc", "filterType": "FLOW", "priority": 1,
            "trafficFilter": [{"dstAddress": ["10.90.0.10"], "dstPort": ["80"]}],
            "action": "FORWARD_ENCAPSULATED",
            "dstInterface": [{"interfaceType": "TUNNEL",
                              "tunnelInfo": {"tunnelType": "GTP_U"}}]}
    info, op = _deploy(c, "sample-http", appTrafficRule=[rule])
    assert op["operationState"] == "FAILED"
    assert op["error"]["status"] == 400, op["error"]
    assert "FORWARD_ENCAPSULATED" in op["error"]["detail"], op["error"]
    assert info["instantiationState"] == "NOT_INSTANTIATED"
    assert _leftovers(info["id"]) == []


def test_capacity_refusal_changes_nothing(mec):
    c = mec["c"]
    inst, _ = c.post(INST, {"appDId": "sample-vm"})
    tosca = (EXAMPLES / "orchestration/vm-tosca.yaml").read_text().replace("256 MB", "200 GB")
    with pytest.raises(ApiError) as e:
        c.post(f"{INST}/{inst['id']}/instantiate",
               {"selectedMECHostInfo": HOST, "orchestrationInfo": tosca})
    assert e.value.status == 409, e.value.body
    assert c.get(f"{INST}/{inst['id']}")["instantiationState"] == "NOT_INSTANTIATED"
    assert _leftovers(inst["id"]) == []


def test_tampered_package_refused_nothing_kept(mec, tmp_path):
    c = mec["c"]
    zpath = build_package(EXAMPLES / "sample-container-app", tmp_path / "p.zip")
    data = bytearray(zpath.read_bytes())
    i = data.find(b"Sample HTTP server")
    data[i] = ord("X")
    zpath.write_bytes(bytes(data))
    before = c.get(PKGS)
    with pytest.raises(ApiError) as e:
        c.post(PKGS, {"appPkgName": "t", "appPkgVersion": "1", "appPkgPath": str(zpath),
                      "checksum": {"algorithm": "SHA-256", "hash": sha256_file(zpath)}})
    assert e.value.status == 422, e.value.body
    assert c.get(PKGS) == before
