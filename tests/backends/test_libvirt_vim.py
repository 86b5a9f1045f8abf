"""The libvirt VIM against the real libvirtd + QEMU (TCG on this machine).

Each test gets its own pool, network (a free 192.168.200-249.0/24, a bridge
name of at most 15 characters) and state directory, and the fixture removes
every domain, volume, pool and network it made, then asserts none is left.
The state directory lives under /var/tmp, not pytest's tmp_path: QEMU runs
as libvirt-qemu and cannot enter pytest's 0700 directories.

Only two tests boot the sample VM (about 10 s each under TCG, plus one
~20 s KVM probe); the rest fail before or just after the domain starts.
The ComputeDriver contract itself (no side effects in the constructor,
each image error, libvirtd down, bad input, rollback, restart, destroy of
what is gone) is in tests/conformance/; this file keeps what is libvirt's
own.
"""

from __future__ import annotations

import ipaddress
import os
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

libvirt = pytest.importorskip("libvirt")

from drivers.libvirt_vim import LibvirtVIM                     # noqa: E402
from drivers.libvirt_vim import xmlrender as X                 # noqa: E402
from mecorch.kernel import errors                                     # noqa: E402
from mecorch.driverapi.contracts import load_driver                        # noqa: E402
from mecorch.driverapi.model import PortSpec, ResourceRequest, VolumeSpec  # noqa: E402
from mecorch.kernel.states import DeploymentType, ObservedState       # noqa: E402

from conftest import run                                       # noqa: E402
from support.libvirtlab import conn, domains, vim_cfg, volumes  # noqa: E402,F401 (fixtures)

pytestmark = pytest.mark.libvirt


# -- helpers ---------------------------------------------------------------------


def _request(iid: str, image: str = "sample", **kw) -> ResourceRequest:
    kw.setdefault("memory_mb", 192)
    return ResourceRequest(instance_id=iid, app_d_id=f"appd-{iid}", manner=DeploymentType.VM,
                           image=image, **kw)


def _assert_instance_gone(conn, cfg: dict, iid: str, keep: tuple[str, ...] = ()) -> None:
    assert X.domain_name(iid) not in domains(conn)
    left = [v for v in volumes(conn, cfg["pool"]) if v.startswith(f"{iid}-") and v not in keep]
    assert left == [], f"volumes of {iid} left behind: {left}"
    pool_dir = Path(cfg["state_dir"]) / "pool"
    files = [f for f in (os.listdir(pool_dir) if pool_dir.exists() else [])
             if f.startswith(f"{iid}-") and f not in keep]
    assert files == [], f"overlay/volume files of {iid} left behind: {files}"


# -- fixtures --------------------------------------------------------------------


@pytest.fixture
def vim(vim_cfg, sample_vm):
    drv = load_driver("vim", vim_cfg)
    assert isinstance(drv, LibvirtVIM)
    drv.import_image("sample", sample_vm["path"], sample_vm["sha256"])
    yield drv
    drv.close()


# -- pure rendering (no daemon) -----------------------------------------------------

@pytest.mark.parametrize("evil", ["a'b", 'x"><disk/>', "<&>"])
def test_xml_escapes_and_metadata_roundtrips(evil):
    meta = X.DomainMeta("i1", evil, "h", "img", "pool", (("i1-root.qcow2", False),
                                                          ("i1-keep.qcow2", True)))
    xml = X.domain_xml(X.DomainSpec(name="mecorch-i1", virt_type="qemu", vcpu=2, memory_mb=256,
                                    pool="pool", disks=("i1-root.qcow2",), network="net",
                                    meta=meta))
    root = ET.fromstring(xml)
    assert len(root.findall("./devices/disk")) == 1
    md = root.find("./metadata")[0]
    assert X.parse_meta(ET.tostring(md, encoding="unicode")) == meta
    assert X.parse_meta("<other/>") is None and X.parse_meta("not xml") is None


def test_network_xml_uses_the_cidr():
    net = ET.fromstring(X.network_xml("n", "br-n", "192.168.201.0/24"))
    assert net.find("./ip").get("address") == "192.168.201.1"
    rng = net.find("./ip/dhcp/range")
    assert (rng.get("start"), rng.get("end")) == ("192.168.201.2", "192.168.201.254")


# -- the real thing ----------------------------------------------------------------------

def test_boot_reach_check_and_destroy(vim, vim_cfg, conn, sample_vm, uid):
    """Deploy the sample VM (accel=auto: the KVM probe runs once first),
    reach its HTTP service, check vCPU/memory/disks in libvirt, stop, start,
    destroy; nothing of the instance but its reserved volume remains."""
    vim = LibvirtVIM(dict(vim_cfg, accel="auto"))       # same repository, fresh cache
    iid = f"vm-{uid}"
    req = _request(iid, vcpu=1.5, memory_mb=192, disk_gb=1,
                   volumes=(VolumeSpec("data", 0.25), VolumeSpec("keep", 0.125, reserved=True)),
                   ports=(PortSpec(80),))
    alloc = vim.deploy(req)

    # The guest answers on the address the DHCP lease gave it.
    ip = alloc.addresses[0].ip
    assert ipaddress.ip_address(ip) in ipaddress.ip_network(vim_cfg["network_cidr"])
    with urllib.request.urlopen(f"http://{ip}/", timeout=10) as r:
        assert r.read().decode().strip() == sample_vm["body"]
    with urllib.request.urlopen(f"http://{ip}/disks", timeout=10) as r:
        assert r.read().decode().split() == ["vda", "vdb", "vdc"]

    # What libvirt says the domain is.
    dom = conn.lookupByName(X.domain_name(iid))
    root = ET.fromstring(dom.XMLDesc(0))
    assert root.get("type") in ("kvm", "qemu")
    assert int(root.findtext("vcpu")) == 2                      # ceil(1.5)
    assert int(root.find("memory").text) == 192 * 1024          # KiB
    disks = X.domain_disks(dom.XMLDesc(0))
    assert [d["volume"] for d in disks] == [f"{iid}-root.qcow2", f"{iid}-data.qcow2",
                                            f"{iid}-keep.qcow2"]
    assert all(d["pool"] == vim_cfg["pool"] for d in disks)
    pool = conn.storagePoolLookupByName(vim_cfg["pool"])
    overlay = pool.storageVolLookupByName(f"{iid}-root.qcow2")
    assert X.backing_path(overlay.XMLDesc(0)).endswith(".qcow2")
    assert "/base-sample-" in X.backing_path(overlay.XMLDesc(0))
    assert overlay.info()[1] == 1 << 30                         # disk_gb=1 > 64 MiB base
    assert pool.storageVolLookupByName(f"{iid}-data.qcow2").info()[1] == (1 << 30) // 4

    # Accel probe result: cached, reported in capabilities and doctor.
    accel = alloc.extra["accel"]
    assert accel in ("kvm", "tcg")
    assert root.get("type") == {"kvm": "kvm", "tcg": "qemu"}[accel]
    assert vim.capabilities().hardware_accel == accel
    assert (Path(vim_cfg["state_dir"]) / "accel-probe.json").is_file()
    checks = {c.name: c for c in vim.check()}
    assert checks["vim.accel"].detail.startswith(accel)
    for name in ("vim.libvirtd", "vim.pool", "vim.network", "vim.qemu-img", "vim.pool-dir"):
        assert checks[name].ok, checks[name]

    # Found by metadata, counted in capacity.
    found = {o.instance_id: o for o in vim.list_instances()}
    assert found[iid].state == ObservedState.RUNNING
    assert {v["name"] for v in found[iid].handle["volumes"]} == {
        f"{iid}-root.qcow2", f"{iid}-data.qcow2", f"{iid}-keep.qcow2"}
    cap = vim.capacity()
    assert cap.cpu_used >= 2 and cap.memory_mb_used >= 192 and cap.disk_gb_total > 0

    # Graceful stop (this guest honours ACPI), start, then a stop the
    # guest cannot honour yet (still booting): it ends in destroy.
    vim.stop(alloc.handle, 30)
    assert vim.inspect(alloc.handle).state == ObservedState.STOPPED
    vim.start(alloc.handle)
    assert vim.inspect(alloc.handle).state == ObservedState.RUNNING
    vim.stop(alloc.handle, 0.5)
    assert vim.inspect(alloc.handle).state == ObservedState.STOPPED
    vim.stop(alloc.handle, 5)                                   # already stopped: fine

    vim.destroy(alloc.handle)
    assert vim.inspect(alloc.handle).state == ObservedState.MISSING
    vim.destroy(alloc.handle)                                   # idempotent
    _assert_instance_gone(conn, vim_cfg, iid, keep=(f"{iid}-keep.qcow2",))
    assert f"{iid}-keep.qcow2" in volumes(conn, vim_cfg["pool"])   # reserved survives
    pool.storageVolLookupByName(f"{iid}-keep.qcow2").delete(0)
    assert not Path(alloc.extra["console_log"]).exists()
    assert iid not in {o.instance_id for o in vim.list_instances()}


def test_import_refuses_bad_uploads(vim_cfg, sample_vm, tmp_path):
    drv = LibvirtVIM(vim_cfg)
    repo = Path(vim_cfg["state_dir"]) / "vm-images"
    with pytest.raises(errors.IntegrityError):
        drv.import_image("bad-sum", sample_vm["path"], "0" * 64)
    junk = tmp_path / "junk.img"
    junk.write_bytes(b"")
    with pytest.raises(errors.InvalidInput):
        drv.import_image("junk", str(junk))
    backed = tmp_path / "backed.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", sample_vm["path"],
        str(backed))
    with pytest.raises(errors.InvalidInput, match="backing"):
        drv.import_image("backed", str(backed))
    with pytest.raises(errors.InvalidInput):
        drv.import_image("../evil", sample_vm["path"])
    assert sorted(os.listdir(repo)) == []                       # nothing kept
    # A raw disk is accepted and stored as qcow2.
    raw = tmp_path / "disk.raw"
    run("qemu-img", "convert", "-q", "-O", "raw", sample_vm["path"], str(raw))
    rec = drv.import_image("rawdisk", str(raw))
    assert rec["format"] == "qcow2" and rec["source_format"] == "raw"
    assert drv.check_image("rawdisk")["available"] is True
    assert drv._conn is None                                     # the repository needs no libvirtd


def test_invalid_requests_change_nothing(vim, vim_cfg, conn, uid):
    bad = [                      # libvirt's own limits (the generic ones: conformance)
        _request(f"x-{uid}", memory_mb=8),
        _request(f"x-{uid}", volumes=(VolumeSpec("root"),)),
    ]
    for req in bad:
        with pytest.raises(errors.InvalidInput):
            vim.deploy(req)
    with pytest.raises(errors.InvalidInput):
        vim.destroy({"domain": "not-ours"})
    assert not [d for d in domains(conn) if uid in d]


def test_failures_half_way_roll_back(vim, vim_cfg, conn, uid):
    vim.open()
    pool = conn.storagePoolLookupByName(vim_cfg["pool"])
    # 1. A volume name that collides with one already there: refused before
    #    anything is made, and the existing volume is untouched.
    iid = f"clash-{uid}"
    pool.createXML(X.volume_xml(f"{iid}-data.qcow2", 1 << 20), 0)
    with pytest.raises(errors.Conflict):
        vim.deploy(_request(iid, volumes=(VolumeSpec("data", 0.01),)))
    assert volumes(conn, vim_cfg["pool"]) == [f"{iid}-data.qcow2"]
    pool.storageVolLookupByName(f"{iid}-data.qcow2").delete(0)

    # 2. Absurd memory: the base, overlay, data volume and domain are made,
    #    QEMU cannot start; all of the instance is removed.
    iid = f"huge-{uid}"
    with pytest.raises(errors.BackendError, match="memory"):
        vim.deploy(_request(iid, memory_mb=1 << 22, volumes=(VolumeSpec("data", 0.01),)))
    _assert_instance_gone(conn, vim_cfg, iid)

    # 3. The guest boots but is not reachable in time: Timeout, and the
    #    running domain is destroyed and undefined.
    short = LibvirtVIM(dict(vim_cfg, boot_timeout_s=1))
    iid = f"slow-{uid}"
    with pytest.raises(errors.Timeout):
        short.deploy(_request(iid, volumes=(VolumeSpec("data", 0.01, reserved=True),)))
    _assert_instance_gone(conn, vim_cfg, iid)                   # reserved too: it was new
    short.close()
    # Only the shared base copy stays, for the next deploy of the image.
    assert [v.startswith("base-sample-") for v in volumes(conn, vim_cfg["pool"])] == [True]
    assert not [d for d in domains(conn) if uid in d]
