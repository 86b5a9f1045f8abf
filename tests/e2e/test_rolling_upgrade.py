"""Rolling upgrade (change_app_pkg) on the real backends (issue 31): a
`mecorch serve` of its own (Docker containers, the Linux MEP with a service
range and a data-plane address) and a client in a network namespace behind
the app's service address, as a UE, opening a new connection every 50 ms
through the whole upgrade.

Three versions of one app, each package shipping an image of its own: the
sample container image with a file /www/version added ("v1", "v2", "v3";
`docker commit` of the sample, saved into the package), so the version a
request reaches is the package's, not the request's. Version 3's AppD
asks for a readiness check (the `healthChecks` AppD extension) on a path
its server does not serve: it never gets ready.

- v1 -> v2 under the client: 0 failed requests, the answers switch from v1
  to v2 once (never back), the service address and DNS name unchanged,
  v1's container gone;
- v2 -> v3 under the client: the op FAILS (not ready in time), rolled back:
  0 failed requests, every answer v2, v3's container gone.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from support import lab as thelab
from support import pkglayouts as L
from support.lab import Netns, free_subnet

pytestmark = [pytest.mark.docker, pytest.mark.mep]
INST = "/app_lcm/v1/app_instances"
PKGS = "/app_pkgm/v1/app_packages"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

# Run inside the client namespace: GET /version on a new connection every
# 50 ms (no keep-alive: each is DNATed afresh) until the file `stop`
# exists; prints every answer in order ("failed: why" for a failure).
CLIENT = r"""
import json, os, socket, sys, time
addr, stop = sys.argv[1], sys.argv[2]
got = []
while not os.path.exists(stop):
    t = time.monotonic()
    try:
        with socket.create_connection((addr, 80), timeout=2) as s:
            s.sendall(b"GET /version HTTP/1.0\r\nHost: x\r\n\r\n")
            data = b""
            while chunk := s.recv(4096):
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        ok = head.split(b" ")[1:2] == [b"200"]
        got.append(body.decode().strip() if ok else "failed: " + head[:40].decode())
    except OSError as e:
        got.append(f"failed: {e}")
    time.sleep(max(0.0, 0.05 - (time.monotonic() - t)))
print(json.dumps(got))
"""


def sample_with_version(base: str, tag: str, version: str, workdir: Path) -> bytes:
    """A `docker save` tar of the sample image `base` with /www/version added."""
    ref = f"mecorch-test/upg-{tag}:{version}"
    box = f"upg-{tag}-{version}"
    thelab.run("docker", "create", "--name", box, base)
    try:
        src = workdir / f"version-{version}"
        src.write_text(version + "\n")
        src.chmod(0o644)
        thelab.run("docker", "cp", str(src), f"{box}:/www/version")
        thelab.run("docker", "commit", box, ref)
    finally:
        thelab.run("docker", "rm", "-f", box, check=False)
    try:
        return subprocess.run(["docker", "save", ref], check=True,
                              capture_output=True).stdout
    finally:
        thelab.run("docker", "rmi", ref, check=False)


def package(workdir: Path, app: str, version: str, image: bytes, ready_path: str | None):
    appd = yaml.safe_load((EXAMPLES / "sample-container-app/Definitions/appd.yaml").read_text())
    appd["appDId"] = appd["appName"] = app
    appd["appDVersion"] = appd["appSoftVersion"] = version
    appd["swImageDescriptor"].update(swImage="Artifacts/app.tar", version=version)
    appd["swImageDescriptor"].pop("checksum", None)
    appd["appDNSRule"][0]["domainName"] = f"{app}.mec.local"
    if ready_path:
        appd["healthChecks"] = {"readinessProbe": {"httpGet": {"path": ready_path, "port": 80},
                                              "periodSeconds": 1}}
    return L.sol004(workdir / f"{app}-{version}.zip",
                    yaml.safe_dump(appd, sort_keys=False).encode(), "Artifacts/app.tar", image)


@pytest.fixture(scope="module")
def lab(sample_container):
    service = free_subnet("10.97.0.0/16", 24)
    ue_net = ipaddress.ip_network(free_subnet("10.98.0.0/16", 30))
    dp, ue_ip = (str(a) for a in ue_net.hosts())
    names = thelab.Names("upg")
    lab = thelab.Lab("upg", vms=False, mep={
        "service_cidr": service, "service_interface": f"mcs{names.tag[-6:]}",
        "dns_domain": "mec.local", "dns_upstream": [], "data_plane_address": dp},
        orchestrator={"reconcile_interval_s": 0, "graceful_timeout_s": 5})
    ue = Netns(f"mcupg-{names.tag[-6:]}")
    try:
        ue.link(f"mcue{names.tag[-6:]}", f"{dp}/30", f"{ue_ip}/30")
        ue.exec("ip", "route", "add", "default", "via", dp)
        lab.start()
        lab.ue, lab.dp, lab.app = ue, dp, f"upg-{names.tag[-6:]}"
        lab.pkgs = {}
        for version, ready in (("v1", None), ("v2", None), ("v3", "/not-served")):
            z = package(lab.dir, lab.app, version, sample_with_version(
                sample_container["ref"], names.tag, version, lab.dir), ready)
            lab.pkgs[version] = L.onboard(lab.c, z, name=f"{lab.app}-{version}")["id"]
        yield lab
    finally:
        left = lab.close()
        ue.close()
    assert left == [], f"left behind after the API cleanup: {left}"


def containers(lab, iid: str) -> list[str]:
    """The runtime ids of the instance's app containers (label values)."""
    out = thelab.run("docker", "ps", "-a", "--filter", "label=mecorch.role=app",
                     "--format", '{{.Label "mecorch.instance"}}').stdout.split()
    return sorted(r for r in out if r == iid or r.startswith(iid + ".g"))


def under_load(lab, addr: str, action):
    """Run `action` while the client requests `addr` every 50 ms (from 1 s
    before to 1 s after); returns (what action returned, the answers)."""
    stop = lab.dir / "stop-client"
    stop.unlink(missing_ok=True)
    client = subprocess.Popen(["ip", "netns", "exec", lab.ue.name, "python3", "-c", CLIENT,
                               addr, str(stop)], stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(1)
        result = action()
        time.sleep(1)
    finally:
        stop.touch()
    out, _ = client.communicate(timeout=60)
    return result, json.loads(out)


def change(lab, iid: str, version: str, ready_s: int) -> dict:
    op, _ = lab.c.post(f"{INST}/{iid}/change_app_pkg",
                       {"appPkgId": lab.pkgs[version], "readyTimeoutS": ready_s})
    return lab.c.wait_op(op, timeout=120)


def test_rolling_upgrade_under_load_and_a_broken_version_rolled_back(lab):
    iid = lab.c.post(INST, {"appDId": lab.app, "appPkgId": lab.pkgs["v1"]})[0]["id"]
    op, _ = lab.c.post(f"{INST}/{iid}/instantiate", {"selectedMECHostInfo": lab.selected})
    op = lab.c.wait_op(op, timeout=120)
    assert op["operationState"] == "COMPLETED", (op.get("error"), lab.serve.log_tail())
    addr = lab.c.get(f"{INST}/{iid}")["allocatedResources"]["serviceAddress"]
    name = f"{lab.app}.mec.local"
    assert thelab.dig(53, name, server=lab.dp, netns=lab.ue.name, tries=20) == addr

    t0 = time.monotonic()
    op, got = under_load(lab, addr, lambda: change(lab, iid, "v2", 60))
    took = time.monotonic() - t0 - 2
    assert op["operationState"] == "COMPLETED", (op.get("error"), lab.serve.log_tail())
    failed = [g for g in got if g not in ("v1", "v2")]
    print(f"\nv1 -> v2 in {took:.1f} s: {len(got)} requests, "
          f"{got.count('v1')} v1, {got.count('v2')} v2, {len(failed)} failed")
    assert failed == [], failed[:5]
    assert got[0] == "v1" and got[-1] == "v2"
    switch = got.index("v2")
    assert set(got[switch:]) == {"v2"}, "an answer from v1 after v2 served"
    view = lab.c.get(f"{INST}/{iid}")
    assert view["appPkgId"] == lab.pkgs["v2"] and view["appSoftVersion"] == "v2"
    assert view["allocatedResources"]["serviceAddress"] == addr
    assert thelab.dig(53, name, server=lab.dp, netns=lab.ue.name, tries=2) == addr
    assert containers(lab, iid) == [f"{iid}.g1"]

    t0 = time.monotonic()
    op, got = under_load(lab, addr, lambda: change(lab, iid, "v3", 4))
    took = time.monotonic() - t0 - 2
    assert op["operationState"] == "FAILED", op
    assert "did not get ready within 4 s" in op["error"]["detail"], op["error"]
    assert "rolled back" in op["error"]["detail"]
    print(f"v2 -> v3 (never ready) rolled back in {took:.1f} s: {len(got)} requests, "
          f"{dict((v, got.count(v)) for v in set(got))}")
    assert set(got) == {"v2"}, [g for g in got if g != "v2"][:5]
    assert lab.c.get(f"{INST}/{iid}")["appPkgId"] == lab.pkgs["v2"]
    assert containers(lab, iid) == [f"{iid}.g1"]
    assert thelab.dig(53, name, server=lab.dp, netns=lab.ue.name, tries=2) == addr
