"""Fixtures for the libvirt VIM on the real libvirtd (connection, a free
CIDR, the VIM config) and the census of domains and volumes. (Was part
of test_libvirt_vim.)"""

from __future__ import annotations

import ipaddress
import shutil
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

libvirt = pytest.importorskip("libvirt")

from drivers.libvirt_vim import xmlrender as X  # noqa: E402
from conftest import run  # noqa: E402

URI = "qemu:///system"


def _used_cidrs(conn) -> list:
    nets = []
    for net in conn.listAllNetworks(0):
        for ip in ET.fromstring(net.XMLDesc(0)).findall("./ip"):
            if ip.get("netmask"):
                nets.append(ipaddress.ip_interface(
                    f"{ip.get('address')}/{ip.get('netmask')}").network)
    for line in run("ip", "-4", "-o", "addr", "show").stdout.splitlines():
        nets.append(ipaddress.ip_interface(line.split()[3]).network)
    return nets


def free_cidr(conn, uid: str) -> str:
    """A /24 in 192.168.200-249 no libvirt network or host interface uses,
    starting from one derived from uid."""
    used = _used_cidrs(conn)
    start = int(uid, 16) % 50
    for i in range(50):
        net = ipaddress.ip_network(f"192.168.{200 + (start + i) % 50}.0/24")
        if not any(net.overlaps(u) for u in used):
            return str(net)
    pytest.fail("no free 192.168.200-249.0/24 for the test network")


def domains(conn) -> list[str]:
    return [d.name() for d in conn.listAllDomains(0)]


def _pools(conn) -> list[str]:
    return [p.name() for p in conn.listAllStoragePools(0)]


def volumes(conn, pool: str) -> list[str]:
    if pool not in _pools(conn):
        return []
    p = conn.storagePoolLookupByName(pool)
    p.refresh(0)
    return [v.name() for v in p.listAllVolumes(0)]


@pytest.fixture
def conn():
    c = libvirt.open(URI)
    yield c
    c.close()


@pytest.fixture
def vim_cfg(uid, conn):
    base = Path(tempfile.mkdtemp(prefix=f"mecorch-vim-{uid}-", dir="/var/tmp"))
    base.chmod(0o711)
    cfg = {"driver": "libvirt", "uri": URI, "pool": f"mct-{uid}", "network": f"mct-{uid}",
           "bridge": f"mct-{uid}", "network_cidr": free_cidr(conn, uid), "accel": "tcg",
           "state_dir": str(base / "state"), "run_dir": str(base / "run"),
           "host_id": f"test-{uid}", "boot_timeout_s": 90}
    yield cfg
    # Teardown: everything named after this test, whatever the test did.
    for dom in conn.listAllDomains(0):
        if dom.name().startswith(X.DOMAIN_PREFIX) and uid in dom.name():
            if dom.isActive():
                dom.destroy()
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
    try:
        pool = conn.storagePoolLookupByName(cfg["pool"])
        if pool.isActive():
            pool.refresh(0)
            for vol in pool.listAllVolumes(0):
                vol.delete(0)
            pool.destroy()
        pool.undefine()
    except libvirt.libvirtError:
        pass
    try:
        net = conn.networkLookupByName(cfg["network"])
        if net.isActive():
            net.destroy()
        net.undefine()
    except libvirt.libvirtError:
        pass
    shutil.rmtree(base, ignore_errors=True)
    assert not [d for d in domains(conn) if uid in d]
    assert cfg["pool"] not in [p.name() for p in conn.listAllStoragePools(0)]
    assert cfg["network"] not in [n.name() for n in conn.listAllNetworks(0)]
