"""The storage pool mecorch owns and the volumes in it. Callers wrap these
in `libvirt_errors`; these helpers only speak libvirt."""

from __future__ import annotations

import os
import threading

import libvirt

from . import xmlrender as X

GIB = 1 << 30
_base_lock = threading.Lock()


def ensure_pool(conn: "libvirt.virConnect", name: str, path: str) -> "libvirt.virStoragePool":
    """The dir pool `name` at `path`, defined, built, started and autostarted."""
    try:
        pool = conn.storagePoolLookupByName(name)
    except libvirt.libvirtError as e:
        if e.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_POOL:
            raise
        os.makedirs(path, mode=0o711, exist_ok=True)
        pool = conn.storagePoolDefineXML(X.pool_xml(name, path), 0)
        pool.build(0)           # makes the directory with the pool's mode
    if not pool.isActive():
        pool.create(0)
    if not pool.autostart():
        pool.setAutostart(1)
    return pool


def lookup_volume(pool, name: str):
    """The volume or None."""
    try:
        return pool.storageVolLookupByName(name)
    except libvirt.libvirtError as e:
        if e.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
            return None
        raise


def delete_volume(pool, name: str) -> bool:
    """Delete a volume; gone already is fine. True if it was deleted."""
    vol = lookup_volume(pool, name)
    if vol is None:
        return False
    try:
        vol.delete(libvirt.VIR_STORAGE_VOL_DELETE_NORMAL)
    except libvirt.libvirtError as e:
        if e.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_VOL:
            raise
        return False
    return True


def ensure_base(conn, pool, image_path: str, name: str) -> "libvirt.virStorageVolume":
    """The base volume `name`: a copy of the repository image, uploaded once
    and reused by every overlay of that image."""
    with _base_lock:
        vol = lookup_volume(pool, name)
        if vol is not None:
            return vol
        size = os.path.getsize(image_path)
        # Made as a raw file of exactly the image's length, filled with the
        # qcow2 bytes, then the pool is refreshed so libvirt reads it as qcow2.
        vol = pool.createXML(X.volume_xml(name, size, fmt="raw"), 0)
        try:
            stream = conn.newStream(0)
            with open(image_path, "rb") as f:
                vol.upload(stream, 0, size, 0)
                stream.sendAll(lambda _s, n, fh: fh.read(n), f)
                stream.finish()
            pool.refresh(0)
            return pool.storageVolLookupByName(name)
        except BaseException:
            try:
                vol.delete(0)
            except libvirt.libvirtError:
                pass
            raise


def create_overlay(pool, name: str, base, size_bytes: int):
    """A qcow2 overlay backed by `base`, at least as large as the base."""
    _, base_capacity, _ = base.info()
    capacity = max(int(size_bytes), int(base_capacity))
    return pool.createXML(X.volume_xml(name, capacity, backing_path=base.path()), 0)


def create_volume(pool, name: str, size_bytes: int):
    return pool.createXML(X.volume_xml(name, int(size_bytes)), 0)


def unused_bases(pool, keep: set[str]) -> list[str]:
    """Base volumes no overlay in the pool backs onto and not in `keep`."""
    pool.refresh(0)
    vols = pool.listAllVolumes(0)
    used = set()
    bases = []
    for v in vols:
        # a concurrent destroy may delete a listed volume before it is
        # read: gone is fine (it backs nothing any more)
        try:
            if v.name().startswith("base-"):
                bases.append((v.name(), v.path()))
            else:
                path = X.backing_path(v.XMLDesc(0))
                if path:
                    used.add(path)
        except libvirt.libvirtError as e:
            if e.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_VOL:
                raise
    return [name for name, path in bases if name not in keep and path not in used]
