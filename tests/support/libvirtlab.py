"""Fixtures for the libvirt VIM on the real libvirtd (connection, the VIM
config with a free subnet and private dir of the one lab,
tests/support/lab.py) and the census of domains and volumes. (Was part of
test_libvirt_vim.)"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

libvirt = pytest.importorskip("libvirt")

from drivers.libvirt_vim import xmlrender as X  # noqa: E402
from support.lab import free_subnet, leftovers, private_dir, remove_host  # noqa: E402

URI = "qemu:///system"


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


def vim_section(tag: str, avoid: tuple[str, ...] = ()) -> tuple[dict, Path]:
    """A VIM config section of its own names (pool, network, bridge, host
    id from `tag`), a free subnet not in `avoid`, a private dir."""
    base = private_dir(f"vim-{tag}")
    cidr = free_subnet()
    while cidr in avoid:
        cidr = free_subnet()
    cfg = {"driver": "libvirt", "uri": URI, "pool": f"mct-{tag}", "network": f"mct-{tag}",
           "bridge": f"mct-{tag}", "network_cidr": cidr, "accel": "tcg",
           "state_dir": str(base / "state"), "run_dir": str(base / "run"),
           "host_id": f"test-{tag}", "boot_timeout_s": 90}
    return cfg, base


def remove_vim(conn, cfg: dict, base, tag: str) -> None:
    """Teardown: the host's domains (by owner mark) and the ones named after
    `tag`, its pool and network, whatever the test did; then assert none is
    left."""
    host = {"id": cfg["host_id"], "vim": cfg}
    left = leftovers(host)                  # what the test left of the host
    for dom in conn.listAllDomains(0):
        if dom.name().startswith(X.DOMAIN_PREFIX) and tag in dom.name():
            if dom.isActive():
                dom.destroy()
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
    remove_host(host, cfg["state_dir"], cfg["run_dir"])
    shutil.rmtree(base, ignore_errors=True)
    assert not [d for d in domains(conn) if tag in d]
    assert cfg["pool"] not in [p.name() for p in conn.listAllStoragePools(0)]
    assert cfg["network"] not in [n.name() for n in conn.listAllNetworks(0)]
    assert left == [], f"left behind: {left}"


@pytest.fixture
def vim_cfg(uid, conn):
    cfg, base = vim_section(uid)
    yield cfg
    remove_vim(conn, cfg, base, uid)


@pytest.fixture
def other_vim_cfg(uid, conn, vim_cfg):
    """A second host on the same libvirtd (host id, pool, network, subnet
    and state of its own): where a relocation's copy lands."""
    tag = f"{uid}o"
    cfg, base = vim_section(tag, avoid=(vim_cfg["network_cidr"],))
    yield cfg
    remove_vim(conn, cfg, base, tag)
