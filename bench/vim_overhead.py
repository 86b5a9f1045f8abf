#!/usr/bin/env python3
"""Overhead of the libvirt VIM driver over the same direct libvirt calls.

Deploys and deletes N VMs of the sample image through `LibvirtVIM` and
through the equivalent raw libvirt-python calls (same XML from
`drivers.libvirt_vim.xmlrender`: overlay volume create, defineXML, create,
DHCP lease wait, TCP wait, destroy, undefine, volume delete), interleaved
in the same run, on a pool and NAT network of its own that it removes at
the end. Prints p50/p99 of the deploy+delete cycle for both, their ratio
(target: within 1.10x) and the time to a reachable guest (HTTP answer).

    /opt/mecorch/venv/bin/python bench/vim_overhead.py [--n 5] [--accel tcg]

The only addresses it talks to are those of the VMs it started.
"""

from __future__ import annotations

import argparse
import ipaddress
import secrets
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt

from drivers.libvirt_vim import LibvirtVIM
from drivers.libvirt_vim import network as N
from drivers.libvirt_vim import xmlrender as X
from mecorch.model import PortSpec, ResourceRequest
from mecorch.states import DeploymentType

WORKLOADS = Path("/var/cache/mecorch/workloads")
URI = "qemu:///system"
MEMORY_MB = 192


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


def free_cidr(conn) -> str:
    used = []
    for net in conn.listAllNetworks(0):
        for ip in ET.fromstring(net.XMLDesc(0)).findall("./ip"):
            if ip.get("netmask"):
                used.append(ipaddress.ip_interface(f"{ip.get('address')}/{ip.get('netmask')}").network)
    for third in range(230, 250):
        net = ipaddress.ip_network(f"192.168.{third}.0/24")
        if not any(net.overlaps(u) for u in used):
            return str(net)
    sys.exit("no free 192.168.230-249.0/24 for the benchmark network")


def via_driver(drv: LibvirtVIM, iid: str) -> tuple[float, float]:
    t0 = time.monotonic()
    alloc = drv.deploy(ResourceRequest(iid, "bench", DeploymentType.VM, "sample",
                                       vcpu=1, memory_mb=MEMORY_MB, disk_gb=0,
                                       ports=(PortSpec(80),)))
    http_get(alloc.addresses[0].ip, t0 + 120)
    reachable = time.monotonic() - t0
    drv.destroy(alloc.handle)
    return time.monotonic() - t0, reachable


def via_libvirt(conn, cfg: dict, base_name: str, iid: str) -> tuple[float, float]:
    """The same objects, made and removed with the bare libvirt calls."""
    t0 = time.monotonic()
    pool = conn.storagePoolLookupByName(cfg["pool"])
    base = pool.storageVolLookupByName(base_name)
    root = X.root_volume_name(iid)
    pool.createXML(X.volume_xml(root, base.info()[1], backing_path=base.path()), 0)
    meta = X.DomainMeta(iid, "bench", cfg["host_id"], "sample", cfg["pool"], ((root, False),))
    spec = X.DomainSpec(name=X.domain_name(iid), virt_type=X_TYPE[cfg["accel"]], vcpu=1,
                        memory_mb=MEMORY_MB, pool=cfg["pool"], disks=(root,),
                        network=cfg["network"], meta=meta,
                        console_log=f"{cfg['run_dir']}/vm/{X.domain_name(iid)}.console.log")
    dom = conn.defineXML(X.domain_xml(spec))
    dom.create()
    deadline = time.monotonic() + 120
    ip = N.wait_lease(dom, deadline)[0][0]
    N.wait_tcp(ip, 80, deadline)
    http_get(ip, deadline)
    reachable = time.monotonic() - t0
    dom.destroy()
    dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
    pool.storageVolLookupByName(root).delete(0)
    return time.monotonic() - t0, reachable


X_TYPE = {"tcg": "qemu", "kvm": "kvm"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5, help="VMs per path (default 5)")
    ap.add_argument("--accel", choices=("tcg", "kvm"), default="tcg",
                    help="domain type for both paths (default tcg: KVM does not boot here)")
    args = ap.parse_args()
    image = WORKLOADS / "sample-vm.qcow2"
    sha = (WORKLOADS / "sample-vm.qcow2.sha256").read_text().split()[0]

    tag = secrets.token_hex(3)
    work = Path(tempfile.mkdtemp(prefix=f"mecorch-bench-{tag}-", dir="/var/tmp"))
    work.chmod(0o711)              # QEMU (libvirt-qemu) must reach the pool
    conn = libvirt.open(URI)
    cfg = {"uri": URI, "pool": f"mcb-{tag}", "network": f"mcb-{tag}", "bridge": f"mcb-{tag}",
           "network_cidr": free_cidr(conn), "accel": args.accel, "host_id": f"bench-{tag}",
           "state_dir": str(work / "state"), "run_dir": str(work / "run")}
    drv = LibvirtVIM(cfg)
    driver_t, direct_t, driver_r, direct_r = [], [], [], []
    try:
        drv.import_image("sample", str(image), sha)
        base_name = X.base_volume_name("sample", sha)
        # Warm-up (untimed): makes the pool, network and base copy, and
        # brings both code paths and the page cache to a steady state.
        via_driver(drv, f"warm-d-{tag}")
        via_libvirt(conn, cfg, base_name, f"warm-l-{tag}")
        for i in range(args.n):
            order = [("driver", lambda i=i: via_driver(drv, f"d{i}-{tag}")),
                     ("libvirt", lambda i=i: via_libvirt(conn, cfg, base_name, f"l{i}-{tag}"))]
            if i % 2:
                order.reverse()          # alternate who goes first
            for name, fn in order:
                cycle, reach = fn()
                (driver_t if name == "driver" else direct_t).append(cycle)
                (driver_r if name == "driver" else direct_r).append(reach)
                print(f"  {name:8s} #{i}: deploy+delete {cycle:6.2f} s, reachable after {reach:5.2f} s",
                      flush=True)
    finally:
        cleanup(conn, drv, cfg, tag)
        shutil.rmtree(work, ignore_errors=True)

    print(f"\nlibvirt VIM overhead, {args.n} VMs per path, accel={args.accel}")
    print(f"{'':24s}{'p50':>9s}{'p99':>9s}{'mean':>9s}")
    for label, vals in (("driver deploy+delete", driver_t), ("direct deploy+delete", direct_t),
                        ("driver time-to-HTTP", driver_r), ("direct time-to-HTTP", direct_r)):
        print(f"{label:24s}{pct(vals, 50):8.2f}s{pct(vals, 99):8.2f}s{statistics.mean(vals):8.2f}s")
    ratio50 = pct(driver_t, 50) / pct(direct_t, 50)
    ratio99 = pct(driver_t, 99) / pct(direct_t, 99)
    verdict = "OK" if ratio50 <= 1.10 else "ABOVE TARGET"
    print(f"ratio driver/direct: p50 {ratio50:.3f}x, p99 {ratio99:.3f}x "
          f"(target <= 1.10x: {verdict})")
    print(f"time to a reachable guest (driver, HTTP answer): p50 {pct(driver_r, 50):.2f} s, "
          f"p99 {pct(driver_r, 99):.2f} s")
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
