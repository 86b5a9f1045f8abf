"""A dual-format app end to end on the real backends.

One `mecorch serve` with two edge hosts of its own: edge-a has only a
container engine (no `vim` section), edge-b has Docker and libvirt/QEMU
(TCG). The sample dual-format package (examples/sample-dual-app: the busybox
HTTP server as a `docker save` tar and as a qcow2 VM) is onboarded once:
both images land in their repositories (the registry, the libvirt pool)
and both manners are recorded. Then, from that one package:

- the same request body, naming no manner, deploys a container on edge-a
  (no VIM there) and a VM on edge-b (the configured preference is vm);
  the reason is on the instance, on the op occurrence and in
  `mecorch app show`;
- `deploymentType: 0` deploys a VM and `deploymentType: "1"` a container;
- a terminate request naming the other manner is refused (400) and changes
  nothing; naming the right one (deployMethod) terminates.

Each instance is reached over HTTP at the address its backend gave it, and
the backends are searched for anything of it after termination. The body
carries no traffic/DNS rules (`appTrafficRule: []`, `appDNSRule: []`):
edge-a has no MEP, and the rules are test_e2e.py's business.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.request

import pytest

from conftest import REGISTRY, run
from mecorch.kernel.client import ApiError, Client
from mecorch.kernel.fileutil import sha256_file
from mecorch.package import build_package
from support.lab import http_get
from support.lab import (EXAMPLES, INST, PKGS, Names, Serve, clear, host_config, lab_config,
                         leftovers, private_dir, remove_host)

pytestmark = [pytest.mark.docker, pytest.mark.libvirt]

DUAL = EXAMPLES / "sample-dual-app"
NO_RULES = {"appTrafficRule": [], "appDNSRule": []}


def _no_mep(host: dict) -> dict:
    """A lab host without the MEP section: these edge hosts have no MEP."""
    return {k: v for k, v in host.items() if k != "mep"}


@pytest.fixture(scope="module")
def lab(sample_container, sample_vm):
    # QEMU runs as libvirt-qemu and must reach the pool under state_dir.
    tmp = private_dir("dual")
    na, nb = Names("duala"), Names("dualb")
    hosts = [_no_mep(host_config(na, vms=False)), _no_mep(host_config(nb))]
    a, b = na.host_id, nb.host_id
    names = {"net_a": na.network, "net_b": nb.network, "vim": nb.pool}
    cfg = lab_config(tmp, hosts,
                     orchestrator={"prefer": "vm", "reconcile_interval_s": 0})
    serve = Serve(cfg, tmp)
    c = serve.client
    try:
        serve.start()
        zpath = build_package(DUAL, tmp / "sample-dual.zip")
        pkg, _ = c.post(PKGS, {"appPkgName": f"dual-{na.tag}", "appPkgVersion": "1.0",
                               "appPkgPath": str(zpath),
                               "checksum": {"algorithm": "SHA-256",
                                            "hash": sha256_file(zpath)}})
        yield {"c": c, "url": serve.url, "a": a, "b": b, "pkg": pkg, "names": names,
               "tmp": tmp, "cfg_path": serve.config_path}
    finally:
        try:
            if not serve.alive:
                serve.start()
            clear(c)
        finally:
            serve.stop()
            left = [x for h in hosts for x in leftovers(h)]
            for h in hosts:
                remove_host(h, cfg["state_dir"], cfg["run_dir"])
            shutil.rmtree(tmp, ignore_errors=True)
    assert left == []


def _http(url: str, tries: int = 100) -> str:
    return http_get(url, tries, step_s=0.3)


def _body(host: str, **extra) -> dict:
    return {"selectedMECHostInfo": [{"hostId": {"id": host}}], **NO_RULES, **extra}


def _deploy(c: Client, body: dict) -> tuple[dict, dict]:
    inst, _ = c.post(INST, {"appDId": "sample-dual"})
    op, _ = c.post(f"{INST}/{inst['id']}/instantiate", body)
    op = c.wait_op(op, timeout=300)
    assert op["operationState"] == "COMPLETED", op.get("error")
    return c.get(f"{INST}/{inst['id']}"), op


def _containers(iid: str) -> list[str]:
    return run("docker", "ps", "-aq", "--filter", f"label=mecorch.instance={iid}").stdout.split()


def _domain(iid: str) -> bool:
    return iid in run("virsh", "-q", "-c", "qemu:///system", "list", "--all",
                      "--name").stdout


def _check_runs(info: dict, manner: str, host: str, body_text: str) -> None:
    iid = info["id"]
    assert (info["deploymentType"], info["hostId"]) == (manner, host), info
    assert info["allocatedResources"]["hostId"] == host
    ip = info["allocatedResources"]["network"][0]["ip"]
    assert _http(f"http://{ip}/") == body_text
    if manner == "CONTAINER":
        assert _containers(iid) and not _domain(iid)
        labels = json.loads(run("docker", "inspect", _containers(iid)[0]).stdout)[0][
            "Config"]["Labels"]
        assert labels.get("mecorch.host") == host, labels
        assert info["allocatedResources"]["compute"] == {"vcpu": 0.5, "memoryMb": 64}
    else:
        assert _domain(iid) and not _containers(iid)
        assert info["allocatedResources"]["compute"] == {"vcpu": 1, "memoryMb": 256}


def _terminate(c: Client, info: dict) -> None:
    """A terminate naming the other manner is a 400 that changes nothing;
    the right one (as the alias deployMethod, in the bit form) ends it."""
    iid, manner = info["id"], info["deploymentType"]
    other = "vm" if manner == "CONTAINER" else "container"
    with pytest.raises(ApiError) as e:
        c.post(f"{INST}/{iid}/terminate", {"terminationType": "FORCEFUL",
                                           "deploymentType": other})
    assert e.value.status == 400
    assert f"says {other.upper()} but app instance {iid} was deployed as {manner}" \
        in e.value.detail
    assert c.get(f"{INST}/{iid}")["instantiationState"] == "INSTANTIATED"
    op, _ = c.post(f"{INST}/{iid}/terminate", {"terminationType": "FORCEFUL",
                                               "deployMethod": 1 if manner == "CONTAINER"
                                               else 0})
    assert c.wait_op(op, timeout=120)["operationState"] == "COMPLETED"
    assert not _containers(iid) and not _domain(iid)
    c.call("DELETE", f"{INST}/{iid}")


def test_onboarding_stores_both_images(lab, sample_vm):
    pkg = lab["pkg"]
    assert pkg["deploymentTypes"] == ["CONTAINER", "VM"]
    ref, vm_image = (i["imagePath"] for i in pkg["softwareImages"])
    repo, tag = ref.removeprefix(f"{REGISTRY}/").rsplit(":", 1)
    with urllib.request.urlopen(f"http://{REGISTRY}/v2/{repo}/tags/list", timeout=10) as r:
        assert tag in json.load(r)["tags"]                          # in the registry
    # in edge-b's VM image repository (edge-a has none: no VIM)
    stored = lab["tmp"] / "state" / "hosts" / lab["b"] / "vm-images" / f"{vm_image}.qcow2"
    assert sha256_file(stored) == sample_vm["sha256"]
    assert not (lab["tmp"] / "state" / "hosts" / lab["a"] / "vm-images").exists()


def test_same_body_container_without_vim_and_vm_with_one(lab, sample_container, sample_vm):
    c = lab["c"]
    # edge-a: no VIM, so the policy can only choose a container
    info, op = _deploy(c, _body(lab["a"]))
    _check_runs(info, "CONTAINER", lab["a"], sample_container["body"])
    reason = info["decisionReason"]
    assert reason.startswith("CONTAINER: only that manner fits")
    assert f"no host can take VM ({lab['a']}: no VIM)" in reason
    assert op["decisionReason"] == reason
    shown = subprocess.run([sys.executable, "-m", "mecorch.cli", "--api", lab["url"],
                            "-o", "json", "app", "show", info["id"]], capture_output=True, text=True,
                           check=True).stdout
    assert reason in json.loads(shown)["decisionReason"]
    _terminate(c, info)

    # edge-b: both fit, and the configured preference is vm
    info, op = _deploy(c, _body(lab["b"]))
    _check_runs(info, "VM", lab["b"], sample_vm["body"])
    assert info["decisionReason"] == op["decisionReason"]
    assert info["decisionReason"].startswith("VM: both manners fit")
    assert "orchestrator.prefer prefers vm" in info["decisionReason"]
    _terminate(c, info)


@pytest.mark.parametrize("value, manner", [(0, "VM"), ("1", "CONTAINER")])
def test_bits_in_the_request_deploy_a_vm_and_a_container(lab, value, manner, sample_container,
                                                          sample_vm):
    info, op = _deploy(lab["c"], _body(lab["b"], deploymentType=value))
    text = sample_vm["body"] if manner == "VM" else sample_container["body"]
    _check_runs(info, manner, lab["b"], text)
    assert info["decisionReason"].startswith(
        f"deploymentType says {manner} (the app is dual-format: its package holds a container "
        f"image and a VM image); placed on {lab['b']}: ")
    _terminate(lab["c"], info)


def test_refusals_change_nothing(lab):
    c = lab["c"]
    inst, _ = c.post(INST, {"appDId": "sample-dual"})
    for body, says in (
            (_body(lab["a"], deploymentType="vm"), "no selected edge host can run VM"),
            (_body(lab["b"], deploymentType="kvm"), "accepted: "),
            (_body(lab["b"], deploymentType=0, deployMethod="container"),
             "deploymentType says VM but deployMethod says CONTAINER")):
        with pytest.raises(ApiError) as e:
            c.post(f"{INST}/{inst['id']}/instantiate", body)
        assert e.value.status == 400 and says in e.value.detail, e.value.detail
    assert c.get(f"{INST}/{inst['id']}")["instantiationState"] == "NOT_INSTANTIATED"
    assert not _containers(inst["id"]) and not _domain(inst["id"])
    c.call("DELETE", f"{INST}/{inst['id']}")
