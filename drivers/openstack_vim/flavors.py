"""A Nova flavor that fits a request.

Preference: an existing public flavor with exactly the vCPUs, RAM, root and
ephemeral disk asked for; else one mecorch creates and owns (named
`<prefix>.<vcpu>c<ram>m<disk>g<eph>e`, extra spec `mecorch:owner`); when the
cloud forbids creating flavors (a non-admin project), the smallest existing
one that is at least as large in every dimension.

Owned flavors are shared by every instance of that size and removed when no
server of this driver uses them any more (`collect_unused`).
"""

from __future__ import annotations

import threading

from mecorch.kernel.errors import CapacityExceeded, Forbidden, MecorchError

from .errors import os_errors

OWNER_SPEC = "mecorch:owner"
# Creating or deleting a flavor and a deploy picking it must not interleave
# inside one process (another process may still race: a deploy whose flavor
# vanished fails and rolls back cleanly).
lock = threading.Lock()


def flavor_name(prefix: str, vcpu: int, ram_mb: int, disk_gb: int, eph_gb: int) -> str:
    return f"{prefix}.{vcpu}c{ram_mb}m{disk_gb}g{eph_gb}e"


def _size(f) -> tuple:
    return (f.vcpus, f.ram, f.disk, f.ephemeral or 0)


def pick(conn, prefix: str, owner: str, vcpu: int, ram_mb: int, disk_gb: int,
         eph_gb: int) -> tuple[object, bool]:
    """(flavor, created_now). Call with `lock` held."""
    want = (vcpu, ram_mb, disk_gb, eph_gb)
    with os_errors("list flavors"):
        flavors = list(conn.compute.flavors(details=True, is_public=None))
    exact = [f for f in flavors if _size(f) == want and not (f.swap or 0)
             and not getattr(f, "is_disabled", False)]
    ours = [f for f in exact if f.name.startswith(prefix + ".")]
    if ours or exact:
        return (ours or exact)[0], False
    name = flavor_name(prefix, vcpu, ram_mb, disk_gb, eph_gb)
    try:
        with os_errors(f"create flavor {name}"):
            flavor = conn.compute.create_flavor(name=name, vcpus=vcpu, ram=ram_mb, disk=disk_gb,
                                                ephemeral=eph_gb, is_public=True)
            try:
                conn.compute.create_flavor_extra_specs(flavor, {OWNER_SPEC: owner})
            except BaseException:
                conn.compute.delete_flavor(flavor, ignore_missing=True)
                raise
        return flavor, True
    except MecorchError as e:
        if not (isinstance(e, Forbidden) or "403" in e.detail or "policy" in e.detail.lower()):
            raise
    # Not allowed to create flavors: the smallest one at least this large.
    bigger = [f for f in flavors if all(a >= b for a, b in zip(_size(f), want))
              and not getattr(f, "is_disabled", False)]
    if not bigger:
        raise CapacityExceeded(f"no flavor fits {vcpu} vCPU, {ram_mb} MB RAM, {disk_gb} GB root, "
                               f"{eph_gb} GB ephemeral, and this project may not create one")
    return min(bigger, key=_size), False


def collect_unused(conn, prefix: str, owner: str, keep: set[str]) -> None:
    """Delete the flavors this host created (its prefix and owner spec) that
    no server uses: `keep` holds the flavor names of every server the
    project has (Nova embeds a copy of the flavor in a server, by name).
    Call with `lock` held."""
    with os_errors("list flavors"):
        flavors = [f for f in conn.compute.flavors(details=True, is_public=None)
                   if f.name.startswith(prefix + ".")]
    for f in flavors:
        if f.name in keep:
            continue
        with os_errors(f"delete unused flavor {f.name}"):
            specs = conn.compute.fetch_flavor_extra_specs(f).extra_specs or {}
            if specs.get(OWNER_SPEC) == owner:
                conn.compute.delete_flavor(f, ignore_missing=True)
