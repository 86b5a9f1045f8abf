"""A VM's disks carried to another host by the libvirt VIM (DataMovable):
the real libvirtd + QEMU (TCG), two hosts of their own on it (host id,
pool, network, state: tests/support/libvirtlab.py), the sample VM.

The file on the data disk: the sample guest is a busybox initramfs that
serves HTTP and has no shell or write access a test could drive, so the
test writes the disk itself while the domain is shut off, with qemu-img
(as test_libvirt_vim's image tests do): an ext4 filesystem made by
`mkfs.ext4 -d` holding a random file is converted into the data disk's
qcow2 (`-n`: into the existing volume). On the target it is read back the
same way (`qemu-img convert` to raw, `debugfs` dumps the file) and compared
by SHA-256. The overlay gets a pattern past the image's end (qemu-io),
so the system disk carries something of its own too.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
import time
import urllib.request
from pathlib import Path

import pytest

libvirt = pytest.importorskip("libvirt")

from drivers.libvirt_vim import LibvirtVIM                     # noqa: E402
from drivers.libvirt_vim import xmlrender as X                 # noqa: E402
from mecorch.driverapi.contracts import DataMovable, load_driver   # noqa: E402
from mecorch.driverapi.model import PortSpec, ResourceRequest, VolumeSpec  # noqa: E402
from mecorch.kernel import errors                              # noqa: E402
from mecorch.kernel.states import DeploymentType, ObservedState  # noqa: E402

from conftest import run                                       # noqa: E402
from support.libvirtlab import (                               # noqa: E402,F401 (fixtures)
    conn, domains, other_vim_cfg, vim_cfg, volumes)

pytestmark = pytest.mark.libvirt

MIB = 1 << 20
PATTERN_AT = 512 * MIB          # in the overlay, past the 64 MiB image


def _request(iid: str, **kw) -> ResourceRequest:
    kw.setdefault("memory_mb", 192)
    return ResourceRequest(instance_id=iid, app_d_id="appd-moved", manner=DeploymentType.VM,
                           image="sample", disk_gb=1, volumes=(VolumeSpec("data", 0.25),), **kw)


def _pool_path(cfg: dict, vol: str) -> str:
    return str(Path(cfg["state_dir"]) / "pool" / vol)


def _assert_instance_gone(conn, cfg: dict, iid: str) -> None:
    assert X.domain_name(iid) not in domains(conn)
    left = [v for v in volumes(conn, cfg["pool"]) if v.startswith(f"{iid}-")]
    assert left == [], f"volumes of {iid} left behind: {left}"
    pool_dir = Path(cfg["state_dir"]) / "pool"
    files = [f for f in (os.listdir(pool_dir) if pool_dir.exists() else [])
             if f.startswith(f"{iid}-")]
    assert files == [], f"files of {iid} left behind: {files}"


def _write_file_onto(disk: str, tmp: Path) -> str:
    """An ext4 filesystem holding payload.bin (2 MiB random) written into
    the qcow2 data disk `disk`; the payload's SHA-256."""
    src = tmp / "fs-src"
    src.mkdir()
    payload = os.urandom(2 * MIB)
    (src / "payload.bin").write_bytes(payload)
    raw = tmp / "fs.raw"
    run("mkfs.ext4", "-q", "-F", "-d", str(src), str(raw), "32M")
    run("qemu-img", "convert", "-q", "-n", "-f", "raw", "-O", "qcow2", str(raw), disk)
    return hashlib.sha256(payload).hexdigest()


def _file_on(disk: str, tmp: Path) -> str:
    """SHA-256 of payload.bin on the qcow2 disk (its raw view, debugfs)."""
    raw, out = tmp / "read.raw", tmp / "read.bin"
    run("qemu-img", "convert", "-q", "-f", "qcow2", "-O", "raw", disk, str(raw))
    run("debugfs", "-R", f"dump /payload.bin {out}", str(raw))
    return hashlib.sha256(out.read_bytes()).hexdigest()


def _guest_view_sha(disk: str, tmp: Path) -> str:
    """SHA-256 of what the guest sees of a disk (its raw view, through the
    backing chain)."""
    raw = tmp / "view.raw"
    run("qemu-img", "convert", "-q", "-f", "qcow2", "-O", "raw", disk, str(raw))
    h = hashlib.sha256()
    with open(raw, "rb") as f:
        while chunk := f.read(MIB):
            h.update(chunk)
    raw.unlink()
    return h.hexdigest()


def _qemu_img_info(path: str) -> dict:
    return json.loads(run("qemu-img", "info", "--output=json", "-f", "qcow2", path).stdout)


@pytest.fixture
def hosts(vim_cfg, other_vim_cfg, sample_vm):
    """Two VIMs (two host ids on this libvirtd), the sample image in each."""
    drivers = [load_driver("vim", vim_cfg), load_driver("vim", other_vim_cfg)]
    for d in drivers:
        assert isinstance(d, LibvirtVIM) and isinstance(d, DataMovable)
        d.import_image("sample", sample_vm["path"], sample_vm["sha256"])
    yield drivers
    for d in drivers:
        d.close()


def test_a_vm_moves_to_another_host_with_its_disks(hosts, vim_cfg, other_vim_cfg, conn, uid,
                                                   sample_vm, tmp_path):
    src, dst = hosts
    iid, iid2 = f"mv-{uid}", f"mv2-{uid}"
    alloc = src.deploy(_request(iid, ports=(PortSpec(80),)))
    archive = tmp_path / "disks.tar"
    with pytest.raises(errors.Conflict, match="running"):
        src.export_data(alloc.handle, archive)
    assert not archive.exists()

    src.stop(alloc.handle, 30)
    assert src.inspect(alloc.handle).state == ObservedState.STOPPED
    want = _write_file_onto(_pool_path(vim_cfg, X.data_volume_name(iid, "data")), tmp_path)
    root_src = _pool_path(vim_cfg, X.root_volume_name(iid))
    run("qemu-io", "-f", "qcow2", "-c", f"write -P 0x5a {PATTERN_AT} {MIB}", root_src)
    root_view = _guest_view_sha(root_src, tmp_path)

    t0 = time.monotonic()
    src.export_data(alloc.handle, archive)
    export_s = time.monotonic() - t0
    with tarfile.open(archive) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert sorted(members) == ["disk/data", "disk/root"]
    assert members["disk/root"].pax_headers["MECORCH.image_sha256"] == sample_vm["sha256"]
    assert members["disk/root"].size == os.path.getsize(root_src)

    # the source goes, its base with it (on another machine its path does
    # not exist): the target depends on nothing of the source's
    src.destroy(alloc.handle)
    src.remove_image("sample")
    base = X.base_volume_name("sample", sample_vm["sha256"])
    assert not os.path.exists(_pool_path(vim_cfg, base))
    with pytest.raises(errors.NotFound):
        src.export_data(alloc.handle, tmp_path / "gone.tar")
    assert not (tmp_path / "gone.tar").exists()
    _assert_instance_gone(conn, vim_cfg, iid)

    # another instance id (as the MEO's relocation makes it) on another
    # host, from the archive
    t0 = time.monotonic()
    alloc2 = dst.deploy(_request(iid2, ports=(PortSpec(80),), seed=str(archive)))
    deploy_s = time.monotonic() - t0
    ip = alloc2.addresses[0].ip
    with urllib.request.urlopen(f"http://{ip}/disks", timeout=10) as r:
        assert r.read().decode().split() == ["vda", "vdb"]          # it booted from them
    dst.stop(alloc2.handle, 30)

    # the file arrived byte-identical; the overlay lies on the target's base
    assert _file_on(_pool_path(other_vim_cfg, X.data_volume_name(iid2, "data")), tmp_path) == want
    root_dst = _pool_path(other_vim_cfg, X.root_volume_name(iid2))
    info = _qemu_img_info(root_dst)
    assert info["backing-filename"] == _pool_path(other_vim_cfg, base)
    assert info["backing-filename-format"] == "qcow2"
    pool = conn.storagePoolLookupByName(other_vim_cfg["pool"])
    assert X.backing_path(pool.storageVolLookupByName(X.root_volume_name(iid2)).XMLDesc(0)) \
        == _pool_path(other_vim_cfg, base)                         # libvirt reads it so too
    run("qemu-io", "-f", "qcow2", "-r", "-c", f"read -P 0x5a {PATTERN_AT} {MIB}", root_dst)
    assert _guest_view_sha(root_dst, tmp_path) == root_view    # the whole system disk
    print(f"\nVM disks moved: archive {archive.stat().st_size / MIB:.2f} MiB "
          f"(root {members['disk/root'].size / MIB:.2f} MiB, data "
          f"{members['disk/data'].size / MIB:.2f} MiB); export {export_s:.2f} s; seeded "
          f"deploy {deploy_s:.2f} s, of which making, filling and rebasing the disks "
          f"{alloc2.extra['seed_s']:.2f} s, boot {alloc2.extra['boot_s']:.2f} s")

    dst.destroy(alloc2.handle)
    _assert_instance_gone(conn, other_vim_cfg, iid2)


def _seed(tmp: Path, name: str, root: str, data: str | None, extra: dict | None = None) -> str:
    path = tmp / name
    with tarfile.open(path, "w") as tar:
        tar.add(root, "disk/root")
        if data is not None:
            tar.add(data, "disk/data")
        for arc, f in (extra or {}).items():
            tar.add(f, arc)
    return str(path)


def test_a_bad_seed_is_refused_and_leaves_nothing(hosts, vim_cfg, conn, uid, sample_vm,
                                                  tmp_path):
    """Each seed is refused with InvalidInput naming what is wrong, before
    the domain boots; whatever the deploy made of the instance is gone."""
    vim = hosts[0]

    def qcow2(name: str, *opts: str, size: str = "") -> str:
        p = str(tmp_path / name)
        run("qemu-img", "create", "-q", "-f", "qcow2", *opts, p, *([size] if size else []))
        return p

    # a root overlay as a source host leaves it: on its own copy of the image
    root = qcow2("root.qcow2", "-F", "qcow2", "-b", sample_vm["path"], size="1G")
    data = qcow2("data.qcow2", size="256M")
    (tmp_path / "junk").write_bytes(b"not a disk" * 1000)
    cases = [
        (_seed(tmp_path, "missing.tar", root, None), "no member disk/data"),
        (_seed(tmp_path, "extra.tar", root, data, {"disk/logs": data}),
         "member 'disk/logs' names no disk"),
        (_seed(tmp_path, "junk.tar", root, str(tmp_path / "junk")), "disk/data"),
        (_seed(tmp_path, "backed.tar", root, qcow2("evil.qcow2", "-F", "raw", "-b",
                                                   "/etc/hostname")),
         "disk/data is backed by '/etc/hostname'"),
        (_seed(tmp_path, "big.tar", root, qcow2("big.qcow2", size="1G")),
         "disk/data is a disk of 1073741824 bytes, more than the 268435456"),
        (_seed(tmp_path, "rawroot.tar", str(tmp_path / "junk"), data), "disk/root"),
    ]
    for i, (seed, says) in enumerate(cases):
        bad = f"bad{i}-{uid}"
        with pytest.raises(errors.InvalidInput, match=says) as e:
            vim.deploy(_request(bad, seed=seed))
        assert str(e.value).startswith("seed:"), e.value
        _assert_instance_gone(conn, vim_cfg, bad)
    assert not [d for d in domains(conn) if uid in d]
