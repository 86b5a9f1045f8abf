"""Relocation and drain through the MEO, against the real backends: one MEO,
two MEPMs on this machine (each with dockerd's CIM, libvirt's VIM, and a
MEP of its own in a network namespace: the site, with its own service
range, so what a name answers tells which host's copy it is).

- A container app with a named volume holding a file is relocated while a
  client in each site's netns asks for its DNS name and the file every
  100 ms: afterwards the target serves the file, the source holds nothing
  of it (containers, volumes, rules, DNS), the instance's id and name are
  unchanged; the gap between the last answer on the source and the first
  on the target is printed (the downtime).
- The same for a VM with a pattern written on its data disk.
- A relocation that fails on the target (its image repository stopped)
  leaves the app serving on the source and nothing on the target.
- Drain of a host with two containers and a VM: all three serve on the
  other host, the drained host is empty and cordoned (a deploy naming no
  host never lands there); uncordon makes it placeable again.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import pytest
import yaml

from conftest import run
from support import lab, sites
from support.sites import Client, answer as _answer, dig as _dig

pytestmark = [pytest.mark.docker, pytest.mark.libvirt, pytest.mark.mep]

INST = "/app_lcm/v1/app_instances"
OPS = "/app_lcm/v1/app_lcm_op_occs"
HOSTS = sites.HOSTS
HTTP_NAME = "sample-http.mec.local"
VM_NAME = "sample-vm.mec.local"
PAYLOAD = f"relocated-{secrets.token_hex(8)}"
MIB = 1 << 20
PATTERN = "0x5a"
# a pod mounting the app's named volume under the web root: the file
# written there is what the app serves at /data/f.txt
POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "relocate"},
       "spec": {"containers": [{"name": "app", "image": "mecorch/sample-http:1.0",
                                "volumeMounts": [{"name": "data", "mountPath": "/www/data"}]}],
                "volumes": [{"name": "data", "emptyDir": {"sizeLimit": "64Mi"}}]}}


@pytest.fixture(scope="module")
def site(sample_container, sample_vm):
    with sites.two_sites("relocate", registry_on=(2,)) as s:
        yield s


# ---------------------------------------------------------------- helpers
def _deploy(c, pkg: dict, host: str | None = None, **body) -> dict:
    iid = c.post(INST, {"appDId": pkg["appDId"]})[0]["id"]
    if host:
        body["selectedMECHostInfo"] = [{"hostId": {"id": host}}]
    op = c.wait_op(c.post(f"{INST}/{iid}/instantiate", body)[0], timeout=240)
    assert op["operationState"] == "COMPLETED", op
    return c.get(f"{INST}/{iid}")


def _relocate(c, iid: str, timeout: float = 300, **body) -> dict:
    return c.wait_op(c.post(f"{INST}/{iid}/relocate", body)[0], timeout=timeout)


def _app_container(host_id: str) -> str:
    [cid] = run("docker", "ps", "-q", "--filter", f"label=mecorch.host={host_id}",
                "--filter", "label=mecorch.role=app").stdout.split()
    return cid


def _domain_disks(host_id: str) -> list[str]:
    """The files of the host's one domain's disks (pool volumes resolved)."""
    import xml.etree.ElementTree as ET
    [dom] = lab._domains_of(host_id)
    xml = ET.fromstring(run(*lab.VIRSH, "dumpxml", dom).stdout)
    out = []
    for src in xml.findall("./devices/disk[@device='disk']/source"):
        if src.get("file"):
            out.append(src.get("file"))
        elif src.get("pool"):
            out.append(run(*lab.VIRSH, "vol-path", "--pool", src.get("pool"),
                           src.get("volume")).stdout.strip())
    return out


def _terminate(c, iid: str) -> None:
    op = c.wait_op(c.post(f"{INST}/{iid}/terminate", {"terminationType": "FORCEFUL"})[0],
                   timeout=180)
    assert op["operationState"] == "COMPLETED", op
    c.call("DELETE", f"{INST}/{iid}")


# ---------------------------------------------------------------- the tests
def test_a_container_moves_with_its_volume_and_name(site):
    c, edges = site["c"], list(site["edges"].values())
    inst = _deploy(c, site["pkgs"]["sample-http"], host=edges[0]["id"],
                   deploymentType="CONTAINER", orchestrationInfo=yaml.safe_dump(POD))
    iid, src = inst["id"], inst["hostId"]
    dst = sites.other(site, src)["id"]
    run("docker", "exec", _app_container(src), "sh", "-c", f"echo {PAYLOAD} > /www/data/f.txt")
    source = sites.edge_of(site, src)
    lab.wait_for(lambda: PAYLOAD in _answer(source, HTTP_NAME, "/data/f.txt"), 20,
                 "the source serving the file")
    client = Client(edges, HTTP_NAME, "/data/f.txt", PAYLOAD)
    try:
        t0 = time.monotonic()
        op = _relocate(c, iid, hostId=dst)
        took = time.monotonic() - t0
        target = sites.edge_of(site, dst)
        lab.wait_for(lambda: bool(client.seen[dst]), 20, "the target serving the file")
    finally:
        client.stop()
    assert op["operationState"] == "COMPLETED" and op["lcmOperation"] == "RELOCATE", op
    down = client.downtime(src, dst, t0)
    print(f"container relocated {src} -> {dst} in {took:.1f} s; downtime {down:.2f} s "
          "(last answer on the source to the first on the target, clients every 100 ms)")
    view = c.get(f"{INST}/{iid}")
    assert view["id"] == iid and view["hostId"] == dst
    assert view["relocatedFrom"][-1]["hostId"] == src
    # the name answers the target's service range on the target's MEP, and
    # the file came with the volume
    assert _dig(target, HTTP_NAME).startswith(target["range"])
    assert PAYLOAD in _answer(target, HTTP_NAME, "/data/f.txt")
    # the source holds nothing of it: containers, volumes, rules, DNS
    assert _dig(source, HTTP_NAME) == ""
    assert lab.leftovers(source["host"]) == []
    assert site["procs"][source["name"]].client.get(INST) == []
    _terminate(c, iid)


def test_a_vm_moves_with_its_data_disk(site):
    c, edges = site["c"], list(site["edges"].values())
    inst = _deploy(c, site["pkgs"]["sample-vm"], host=edges[1]["id"], deploymentType="VM")
    iid, src = inst["id"], inst["hostId"]
    dst = sites.other(site, src)["id"]
    source = sites.edge_of(site, src)
    # a pattern on its data disk, written while it is stopped (the sample
    # guest has no writer of its own)
    op = c.wait_op(c.post(f"{INST}/{iid}/operate", {"changeStateTo": "STOPPED",
                                                    "stopType": "FORCEFUL"})[0], timeout=120)
    assert op["operationState"] == "COMPLETED", op
    data = [d for d in _domain_disks(src) if "data" in Path(d).name]
    assert len(data) == 1, _domain_disks(src)
    run("qemu-io", "-f", "qcow2", "-c", f"write -P {PATTERN} 0 {MIB}", data[0])
    op = c.wait_op(c.post(f"{INST}/{iid}/operate", {"changeStateTo": "STARTED"})[0],
                   timeout=240)
    assert op["operationState"] == "COMPLETED", op
    lab.wait_for(lambda: "mecorch sample vm" in _answer(source, VM_NAME, "/"), 120,
                 "the VM serving on the source")
    client = Client(edges, VM_NAME, "/", "mecorch sample vm")
    try:
        t0 = time.monotonic()
        op = _relocate(c, iid, timeout=400, hostId=dst)
        took = time.monotonic() - t0
        lab.wait_for(lambda: bool(client.seen[dst]), 120, "the target serving the VM")
    finally:
        client.stop()
    assert op["operationState"] == "COMPLETED", op
    down = client.downtime(src, dst, t0)
    print(f"VM relocated (cold) {src} -> {dst} in {took:.1f} s; downtime {down:.2f} s")
    view = c.get(f"{INST}/{iid}")
    assert view["id"] == iid and view["hostId"] == dst
    [moved] = [d for d in _domain_disks(dst) if "data" in Path(d).name]
    out = run("qemu-io", "-f", "qcow2", "-r", "-U", "-c", f"read -P {PATTERN} 0 {MIB}",
              moved).stdout
    assert "read 1048576/1048576 bytes" in out and "fail" not in out.lower(), out
    assert _dig(source, VM_NAME) == ""
    assert lab.leftovers(source["host"]) == []
    _terminate(c, iid)


def test_a_failed_relocation_leaves_the_app_serving_on_the_source(site):
    c = site["c"]
    e1, e2 = site["edges"]["edge1"], site["edges"]["edge2"]
    inst = _deploy(c, site["pkgs"]["sample-http"], host=e1["id"], deploymentType="CONTAINER")
    iid = inst["id"]
    lab.wait_for(lambda: "mecorch sample container" in _answer(e1, HTTP_NAME, "/"), 20,
                 "serving on edge1")
    site["registry"].stop()         # edge2 cannot pull the image
    try:
        op = _relocate(c, iid, hostId=e2["id"])
    finally:
        site["registry"].start()
    assert op["operationState"] == "FAILED", op
    print(f"failed relocation: {op.get('error', {}).get('detail')}")
    view = c.get(f"{INST}/{iid}")
    assert view["hostId"] == e1["id"] and view["instantiationState"] == "INSTANTIATED"
    lab.wait_for(lambda: "mecorch sample container" in _answer(e1, HTTP_NAME, "/"), 30,
                 "serving on edge1 again")
    assert lab.leftovers(e2["host"]) == []
    assert [i for i in site["procs"]["edge2"].client.get(INST)] == []
    _terminate(c, iid)


def test_drain_moves_everything_and_cordons(site):
    c = site["c"]
    e1, e2 = site["edges"]["edge1"], site["edges"]["edge2"]
    ids = [_deploy(c, site["pkgs"]["sample-http"], host=None, deploymentType="CONTAINER",
                   selectedMECHostInfo=[{"hostId": {"id": e1["id"]}},
                                        {"hostId": {"id": e2["id"]}}])["id"]
           for _ in range(2)]
    ids.append(_deploy(c, site["pkgs"]["sample-vm"], deploymentType="VM")["id"])
    # all on edge1 for the drain: those placed on edge2 are moved there first
    for iid in ids:
        if c.get(f"{INST}/{iid}")["hostId"] != e1["id"]:
            op = _relocate(c, iid, hostId=e1["id"], timeout=400)
            assert op["operationState"] == "COMPLETED", op.get("error")
    answer, _ = c.post(f"{HOSTS}/{e1['id']}/drain", {})
    assert answer["cannotMove"] == [], answer
    assert sorted(r["appInstanceId"] for r in answer["relocating"]) == sorted(ids)
    # every move ended (a failed one is reported once all are done: none is
    # left running under the teardown)
    ended = [c.wait_op({"_links": {"self": {"href": f"{OPS}/{r['opId']}"}}}, timeout=400)
             for r in answer["relocating"]]
    assert [o["operationState"] for o in ended] == ["COMPLETED"] * 3, \
        [(o["appInstanceId"], o["operationState"], (o.get("error") or {}).get("detail"))
         for o in ended]
    for iid in ids:
        assert c.get(f"{INST}/{iid}")["hostId"] == e2["id"]
    assert lab.leftovers(e1["host"]) == []
    host = next(h for h in c.get(HOSTS) if h["hostId"] == e1["id"])
    assert host["cordoned"]
    # a deploy naming no host never lands on the cordoned one
    extra = _deploy(c, site["pkgs"]["sample-http"], deploymentType="CONTAINER")
    assert extra["hostId"] == e2["id"]
    c.post(f"{HOSTS}/{e1['id']}/uncordon", {})
    assert next(h for h in c.get(HOSTS) if h["hostId"] == e1["id"])["cordoned"] is None
    # placeable again: a deploy naming it lands there
    back = _deploy(c, site["pkgs"]["sample-http"], host=e1["id"], deploymentType="CONTAINER")
    assert back["hostId"] == e1["id"]
    ids.append(back["id"])
    for iid in [*ids, extra["id"]]:
        _terminate(c, iid)
