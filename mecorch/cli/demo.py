"""`mecorch demo`: the whole workflow on this edge host, for real.

Starts `mecorch serve` as its own process, builds and onboards the sample
container app and the sample VM app from their packages, deploys both with
their DNS and traffic rules, shows that each answers by its DNS name and
through its traffic rule (the steered service address), terminates both
gracefully, removes the packages, and shows that nothing is left.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from mecorch.kernel.client import ApiError, Client
from mecorch.kernel.errors import MecorchError
from mecorch.package import build_package
from mecorch.kernel.fileutil import sha256_file

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
APPS = [  # (package folder, how the instantiate request decides the manner)
    ("sample-container-app", {"deploymentType": "CONTAINER"}),
    ("sample-vm-app", {"orchestrationInfo": "vm-tosca.yaml"}),
]
PKGS = "/app_pkgm/v1/app_packages"
INST = "/app_lcm/v1/app_instances"


def say(msg: str) -> None:
    print(f"==> {msg}", flush=True)


def main(cfg: dict, listen: str) -> int:
    work = Path(tempfile.mkdtemp(prefix="mecorch-demo-"))
    server = _start_server(cfg, listen, work)
    client = Client(f"http://{listen}")
    try:
        _wait_ready(client, server)
        _clean_earlier_run(client)
        instances = []
        for folder, decide in APPS:
            appd_id, pkg = _onboard(client, folder, work)
            # deployed as packaged: the host gives each a service address
            instances.append(_deploy(client, appd_id, decide, {}))
        for inst in instances:
            _show(client, cfg, inst)
        for inst in instances:
            _terminate(client, inst)
        for inst in instances:
            client.call("DELETE", f"{INST}/{inst['id']}")
        _remove_packages(client)
        _show_nothing_left(cfg, instances)
        say("demo finished: both apps were deployed, reached and removed")
        return 0
    except (MecorchError, OSError, subprocess.CalledProcessError) as e:
        print(f"demo failed: {getattr(e, 'detail', e)}", file=sys.stderr)
        print(f"server log: {work / 'serve.log'}", file=sys.stderr)
        return 1
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(work / "pkgs", ignore_errors=True)


def _start_server(cfg: dict, listen: str, work: Path) -> subprocess.Popen:
    say(f"starting the orchestrator: mecorch serve --listen {listen}")
    argv = [sys.executable, "-m", "mecorch.cli"]
    if os.environ.get("MECORCH_CONFIG"):
        argv += ["--config", os.environ["MECORCH_CONFIG"]]
    log = open(work / "serve.log", "wb")
    return subprocess.Popen(argv + ["serve", "--listen", listen], stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def _wait_ready(client: Client, server: subprocess.Popen) -> None:
    for _ in range(100):
        if server.poll() is not None:
            raise MecorchError("mecorch serve exited at start (is the port in use?)")
        try:
            client.get(PKGS)
            return
        except MecorchError:
            time.sleep(0.1)
    raise MecorchError("mecorch serve did not answer within 10 s")


def _clean_earlier_run(client: Client) -> None:
    """An interrupted earlier demo may have left its instances/packages."""
    ids = {"sample-http", "sample-vm"}
    for inst in client.get_all(INST):
        if inst["appDId"] in ids:
            if inst["instantiationState"] == "INSTANTIATED":
                op, _ = client.post(f"{INST}/{inst['id']}/terminate", {"terminationType": "FORCEFUL"})
                client.wait_op(op)
            client.call("DELETE", f"{INST}/{inst['id']}")
    _remove_packages(client, quiet=True)


def _onboard(client: Client, folder: str, work: Path) -> tuple[str, dict]:
    zpath = build_package(EXAMPLES / folder, work / "pkgs" / f"{folder}.zip")
    say(f"built package {zpath.name} ({zpath.stat().st_size // 1024} KiB); onboarding it")
    pkg, _ = client.post(PKGS, {
        "appPkgName": folder, "appPkgVersion": "1.0", "appPkgPath": str(zpath),
        "checksum": {"algorithm": "SHA-256", "hash": sha256_file(zpath)}})
    print(f"    {pkg['appDId']}: {pkg['onboardingState']}, {pkg['operationalState']}, "
          f"manner {pkg['deploymentType']}, image {pkg['softwareImages'][0]['imagePath']}")
    return pkg["appDId"], pkg


def _deploy(client: Client, appd_id: str, decide: dict, rules: dict) -> dict:
    inst, _ = client.post(INST, {"appDId": appd_id, "appInstanceName": f"demo-{appd_id}"})
    body = {"selectedMECHostInfo": [{"hostId": {"id": "default"}}], **rules}
    for key, value in decide.items():
        body[key] = (EXAMPLES / "orchestration" / value).read_text() \
            if key == "orchestrationInfo" else value
    how = ", ".join(f"{k}={v}" for k, v in decide.items())
    say(f"instantiating {appd_id} ({how})")
    t0 = time.monotonic()
    op, _ = client.post(f"{INST}/{inst['id']}/instantiate", body)
    op = client.wait_op(op, out=sys.stdout)
    if op["operationState"] != "COMPLETED":
        raise MecorchError(f"instantiate of {appd_id} failed: {op['error']['detail']}")
    info = client.get(f"{INST}/{inst['id']}")
    alloc = info["allocatedResources"]
    print(f"    {info['deploymentType']} on host {alloc['hostId']} in {time.monotonic() - t0:.1f}s: "
          f"{alloc['compute']['vcpu']:g} vCPU, {alloc['compute']['memoryMb']} MB, "
          f"addresses {', '.join(a['ip'] for a in alloc['network'])}, "
          f"storage {', '.join(s['name'] for s in alloc['storage']) or '-'}")
    return info


def _show(client: Client, cfg: dict, inst: dict) -> None:
    """Resolve the app's DNS rule with mecorch's dnsmasq, then reach the app
    through its traffic rule at the address the name resolves to."""
    mep = cfg["hosts"][0]["mep"]
    dns = client.get(f"/mec_app_support/v1/applications/{inst['id']}/dns_rules")[0]
    name, vip = dns["domainName"], dns["ipAddress"]
    answer = subprocess.run(
        ["dig", "+short", "+time=2", "+tries=2", f"@{mep['dns_listen']}", "-p", str(mep["dns_port"]),
         name], capture_output=True, text=True, check=True).stdout.strip()
    say(f"{inst['appDId']}: DNS {name} -> {answer or '(no answer)'}")
    if answer != vip:
        raise MecorchError(f"DNS rule not in effect: {name} gave {answer!r}, want {vip}")
    body = _http_get(f"http://{answer}/")
    print(f"    HTTP through the traffic rule ({answer}:80 steered to "
          f"{inst['allocatedResources']['network'][0]['ip']}): {body!r}")
    if not body.startswith("mecorch sample"):
        raise MecorchError(f"unexpected answer through the traffic rule: {body!r}")


def _http_get(url: str) -> str:
    last = None
    for _ in range(50):
        try:
            with urllib.request.urlopen(url, timeout=3) as resp:     # noqa: S310
                return resp.read(200).decode().strip()
        except OSError as e:
            last = e
            time.sleep(0.2)
    raise MecorchError(f"{url} did not answer: {last}")


def _terminate(client: Client, inst: dict) -> None:
    say(f"terminating {inst['appDId']} gracefully")
    t0 = time.monotonic()
    op, _ = client.post(f"{INST}/{inst['id']}/terminate",
                        {"terminationType": "GRACEFUL", "gracefulTerminationTimeout": 20})
    op = client.wait_op(op, out=sys.stdout)
    if op["operationState"] != "COMPLETED":
        raise MecorchError(f"terminate failed: {op['error']['detail']}")
    print(f"    terminated in {time.monotonic() - t0:.1f}s")


def _remove_packages(client: Client, quiet: bool = False) -> None:
    for pkg in client.get_all(PKGS):
        if pkg["appDId"] not in ("sample-http", "sample-vm"):
            continue
        if pkg["operationalState"] == "ENABLED":
            client.call("PATCH", f"{PKGS}/{pkg['id']}", {"operationState": "DISABLED"})
        try:
            client.call("DELETE", f"{PKGS}/{pkg['id']}")
        except ApiError as e:
            if not quiet:
                raise
            print(f"    could not delete earlier package {pkg['id']}: {e.detail}")
        if not quiet:
            say(f"deleted package {pkg['appDId']} and its image")


def _show_nothing_left(cfg: dict, instances: list[dict]) -> None:
    say("checking that nothing of the instances is left")
    leftovers = []
    for inst in instances:
        iid = inst["id"]
        ps = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=mecorch.instance={iid}"],
                            capture_output=True, text=True).stdout.split()
        if ps:
            leftovers.append(f"containers {ps}")
        doms = subprocess.run(["virsh", "-q", "-c", "qemu:///system", "list", "--all", "--name"],
                              capture_output=True, text=True).stdout.split()
        if any(iid in d for d in doms):
            leftovers.append(f"domain of {iid}")
        rules = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
        if iid in rules:
            leftovers.append(f"iptables rules of {iid}")
    print(f"    containers, domains, volumes, rules of the demo instances: "
          f"{'LEFT: ' + json.dumps(leftovers) if leftovers else 'none left'}")
    if leftovers:
        raise MecorchError("resources were left behind")
