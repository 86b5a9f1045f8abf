#!/usr/bin/env python3
"""Overhead of the libvirt VIM driver over the same direct libvirt calls.

Deploys and terminates N VMs of the sample image through `LibvirtVIM` and
through the raw libvirt-python calls the driver makes, call for call
(`direct_deploy` / `direct_terminate`: the same XML from
`drivers.libvirt_vim.xmlrender` with the same SMBIOS OEM strings and data
disk, the same overlay size, the same network, the DHCP lease and TCP port
polled at the driver's interval, the same ACPI stop polled every 0.2 s,
undefine, volume deletes, the unused-base scan), interleaved in the same
run, on a pool and NAT network of its own that it removes at the end. Both
paths must get an HTTP answer from the guest. Prints deploy, time-to-HTTP
and terminate for both and the deploy+terminate ratio (target <= 1.05x).

    /opt/mecorch/venv/bin/python bench/vim_overhead.py [--n 5] [--accel tcg]

The only addresses it talks to are those of the VMs it started.
"""

from __future__ import annotations

import argparse
import math
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import libvirt

from drivers.libvirt_vim import LibvirtVIM
from drivers.libvirt_vim.driver import _qemu_owner, write_guest_env
from drivers.libvirt_vim.request import validate_request
from drivers.libvirt_vim import network as N
from drivers.libvirt_vim import storage as S
from drivers.libvirt_vim import xmlrender as X
from mecorch.driverapi.model import PortSpec, ResourceRequest, VolumeSpec
from mecorch.kernel.states import DeploymentType

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support.lab import free_subnet                  # noqa: E402 - the one lab

WORKLOADS = Path("/var/cache/mecorch/workloads")
URI = "qemu:///system"
MEMORY_MB = 256                 # the sample VM AppD's
GIB = 1 << 30
UNDEFINE_FLAGS = (libvirt.VIR_DOMAIN_UNDEFINE_NVRAM | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                  | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                  | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA)


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p99 of 5 samples is the maximum)."""
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s) + 0.5) - 1))]


def http_get(ip: str, deadline: float) -> str:
    while True:
        try:
            with urllib.request.urlopen(f"http://{ip}/", timeout=2) as r:
                return r.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def sample_request(iid: str) -> ResourceRequest:
    """What mecorch asks the VIM for the sample VM app (its AppD: 1 vCPU,
    256 MB, 1 GB system disk, a 1 GB data disk, port 80) with the
    environment mecorch gives a VM (same keys and lengths)."""
    return ResourceRequest(iid, "bench", DeploymentType.VM, "sample", vcpu=1,
                           memory_mb=MEMORY_MB, disk_gb=1,
                           volumes=(VolumeSpec("sample-vm-data", 1),),
                           ports=(PortSpec(80),),
                           env={"MEC_APP_INSTANCE_ID": iid, "MEC_APP_TOKEN": "t" * 43,
                                "MEC_MP1_URL": "http://192.168.1.1:8080/mec_app_support/v1"})


def via_driver(drv: LibvirtVIM, iid: str, stop_timeout: float = 0) -> tuple[float, float, float]:
    """(deploy, time-to-HTTP, terminate) seconds through the driver."""
    t0 = time.monotonic()
    alloc = drv.deploy(sample_request(iid))
    t1 = time.monotonic()
    http_get(alloc.addresses[0].ip, t1 + 120)
    t2 = time.monotonic()
    drv.stop(alloc.handle, stop_timeout)
    drv.destroy(alloc.handle)
    return t1 - t0, t2 - t0, time.monotonic() - t2


def direct_deploy(conn, cfg: dict, base_name: str, req: ResourceRequest) -> dict:
    """The libvirt calls LibvirtVIM.deploy makes for `req`, in its order
    (drivers/libvirt_vim/driver.py): the name checks, the base lookup, the
    domain defined with the same XML (the environment as a fw_cfg file,
    written like the driver's, data disks, console log), the qcow2 overlay sized like the driver's, the data
    volumes, create, the DHCP lease and the first TCP port polled every
    network._POLL_S (0.25 s). Returns the handle direct_terminate takes."""
    iid = req.instance_id
    name, root = X.domain_name(iid), X.root_volume_name(iid)
    data = [(X.data_volume_name(iid, v.name), v) for v in req.volumes]
    pool = conn.storagePoolLookupByName(cfg["pool"])
    try:                                   # the driver's "already exists" checks
        conn.lookupByName(name)
        raise RuntimeError(f"domain {name} exists")
    except libvirt.libvirtError:
        pass
    for vol in [root] + [n for n, _ in data]:
        if S.lookup_volume(pool, vol) is not None:
            raise RuntimeError(f"volume {vol} exists")
    base = pool.storageVolLookupByName(base_name)
    meta = X.DomainMeta(iid, req.app_d_id, cfg["host_id"], req.image, cfg["pool"],
                        ((root, False),) + tuple((n, v.reserved) for n, v in data))
    env_file = Path(cfg["state_dir"]) / "vm-env" / f"{name}.env"
    write_guest_env(env_file, validate_request(req)["env"],
                    _qemu_owner(conn, X_TYPE[cfg["accel"]]))
    spec = X.DomainSpec(name=name, virt_type=X_TYPE[cfg["accel"]],
                        vcpu=max(1, math.ceil(req.vcpu)), memory_mb=req.memory_mb,
                        pool=cfg["pool"], disks=(root,) + tuple(n for n, _ in data),
                        network=cfg["network"], meta=meta, env_file=str(env_file),
                        console_log=f"{cfg['run_dir']}/vm/{name}.console.log")
    dom = conn.defineXML(X.domain_xml(spec))
    capacity = max(int(req.disk_gb * GIB), base.info()[1])
    pool.createXML(X.volume_xml(root, capacity, backing_path=base.path()), 0)
    for vol, v in data:
        pool.createXML(X.volume_xml(vol, int(v.size_gb * GIB)), 0)
    dom.create()
    deadline = time.monotonic() + 120
    leases = N.wait_lease(dom, deadline)
    tcp = [p.port for p in req.ports if p.protocol == "tcp"]
    if tcp:
        N.wait_tcp(leases[0][0], tcp[0], deadline)
    return {"dom": dom, "ip": leases[0][0], "volumes": [root] + [n for n, _ in data]}


def direct_terminate(conn, cfg: dict, h: dict, stop_timeout: float) -> None:
    """What a terminate does on the VIM (LibvirtVIM.stop, then .destroy):
    the ACPI power button and isActive polled every 0.2 s up to the
    timeout (a FORCEFUL terminate: timeout 0, no ACPI), destroy if still
    up, undefine, the volumes deleted, the pool refreshed and listed for
    unused bases (the driver's _collect_bases)."""
    dom = h["dom"]
    if dom.isActive() and stop_timeout > 0:
        dom.shutdown()
        deadline = time.monotonic() + stop_timeout
        while dom.isActive() and time.monotonic() < deadline:
            time.sleep(0.2)
    if dom.isActive():
        dom.destroy()
    dom = conn.lookupByName(dom.name())    # destroy() looks the domain up again
    dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, X.NS, 0)
    try:
        dom.destroy()
    except libvirt.libvirtError:
        pass                               # not running: the driver ignores it too
    dom.undefineFlags(UNDEFINE_FLAGS)
    pool = conn.storagePoolLookupByName(cfg["pool"])
    for vol in h["volumes"]:
        pool.storageVolLookupByName(vol).delete(libvirt.VIR_STORAGE_VOL_DELETE_NORMAL)
    os.unlink(Path(cfg["state_dir"]) / "vm-env" / f"{dom.name()}.env")
    try:
        os.unlink(f"{cfg['run_dir']}/vm/{dom.name()}.console.log")
    except FileNotFoundError:
        pass
    S.unused_bases(pool, set())


def via_libvirt(conn, cfg: dict, base_name: str, req: ResourceRequest,
                stop_timeout: float = 0) -> tuple[float, float, float]:
    """(deploy, time-to-HTTP, terminate) seconds of the direct path."""
    t0 = time.monotonic()
    h = direct_deploy(conn, cfg, base_name, req)
    t1 = time.monotonic()
    http_get(h["ip"], t1 + 120)
    t2 = time.monotonic()
    direct_terminate(conn, cfg, h, stop_timeout)
    return t1 - t0, t2 - t0, time.monotonic() - t2


X_TYPE = {"tcg": "qemu", "kvm": "kvm"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5, help="VMs per path (default 5)")
    ap.add_argument("--accel", choices=("tcg", "kvm"), default="tcg",
                    help="domain type for both paths (default tcg: KVM does not boot here)")
    ap.add_argument("--stop-timeout", type=float, default=30,
                    help="ACPI stop timeout before destroy (0: FORCEFUL, default 30)")
    args = ap.parse_args()
    image = WORKLOADS / "sample-vm.qcow2"
    sha = (WORKLOADS / "sample-vm.qcow2.sha256").read_text().split()[0]

    tag = secrets.token_hex(3)
    work = Path(tempfile.mkdtemp(prefix=f"mecorch-bench-{tag}-", dir="/var/tmp"))
    work.chmod(0o711)              # QEMU (libvirt-qemu) must reach the pool
    conn = libvirt.open(URI)
    cfg = {"uri": URI, "pool": f"mcb-{tag}", "network": f"mcb-{tag}", "bridge": f"mcb-{tag}",
           "network_cidr": free_subnet(), "accel": args.accel, "host_id": f"bench-{tag}",
           "state_dir": str(work / "state"), "run_dir": str(work / "run")}
    drv = LibvirtVIM(cfg)
    res: dict[str, list] = {"driver": [], "direct": []}
    try:
        drv.import_image("sample", str(image), sha)
        base_name = X.base_volume_name("sample", sha)
        # Warm-up (untimed): makes the pool, network and base copy, and
        # brings both code paths and the page cache to a steady state.
        via_driver(drv, f"warm-d-{tag}", args.stop_timeout)
        via_libvirt(conn, cfg, base_name, sample_request(f"warm-l-{tag}"), args.stop_timeout)
        for i in range(args.n):
            order = [("driver", lambda i=i: via_driver(drv, f"d{i}-{tag}", args.stop_timeout)),
                     ("direct", lambda i=i: via_libvirt(conn, cfg, base_name,
                                                        sample_request(f"l{i}-{tag}"),
                                                        args.stop_timeout))]
            if i % 2:
                order.reverse()          # alternate who goes first
            for name, fn in order:
                d, r, t = fn()
                res[name].append((d, r, t))
                print(f"  {name:8s} #{i}: deploy {d:6.2f} s, HTTP after {r:5.2f} s, "
                      f"terminate {t:5.2f} s", flush=True)
    finally:
        cleanup(conn, drv, cfg, tag)
        shutil.rmtree(work, ignore_errors=True)

    print(f"\nlibvirt VIM overhead, {args.n} VMs per path, accel={args.accel}")
    print(f"{'':28s}{'p50':>9s}{'p99':>9s}{'mean':>9s}")
    cyc = {k: [d + t for d, _, t in v] for k, v in res.items()}
    for name in ("driver", "direct"):
        for label, vals in (("deploy", [x[0] for x in res[name]]),
                            ("time-to-HTTP", [x[1] for x in res[name]]),
                            ("terminate", [x[2] for x in res[name]]),
                            ("deploy+terminate", cyc[name])):
            print(f"{name + ' ' + label:28s}{pct(vals, 50):8.2f}s{pct(vals, 99):8.2f}s"
                  f"{statistics.mean(vals):8.2f}s")
    ratio50 = pct(cyc["driver"], 50) / pct(cyc["direct"], 50)
    ratio99 = pct(cyc["driver"], 99) / pct(cyc["direct"], 99)
    verdict = "OK" if ratio50 <= 1.05 else "ABOVE TARGET"
    print(f"ratio driver/direct deploy+terminate: p50 {ratio50:.3f}x, p99 {ratio99:.3f}x "
          f"(target <= 1.05x: {verdict})")
    return 0


def cleanup(conn, drv: LibvirtVIM, cfg: dict, tag: str) -> None:
    """Remove every domain, volume, the pool and the network of this run."""
    for dom in conn.listAllDomains(0):
        if dom.name().startswith(X.DOMAIN_PREFIX) and dom.name().endswith(tag):
            if dom.isActive():
                dom.destroy()
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
    try:
        pool = conn.storagePoolLookupByName(cfg["pool"])
        pool.refresh(0)
        for vol in pool.listAllVolumes(0):
            vol.delete(0)
        pool.destroy()
        pool.undefine()
    except libvirt.libvirtError:
        pass
    try:
        net = conn.networkLookupByName(cfg["network"])
        net.destroy()
        net.undefine()
    except libvirt.libvirtError:
        pass
    drv.close()
    conn.close()


if __name__ == "__main__":
    sys.exit(main())
