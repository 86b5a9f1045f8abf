"""Capacity of the cloud as the VIM sees it: Placement's inventories and
usages, capped by the project's compute quota.

Placement's listing needs the admin role; a project without it sees only
its quota (then `*_total` is the quota and `*_used` what the project uses).
"""

from __future__ import annotations

from openstack import exceptions as sdk_exc

from mecorch.kernel.errors import BackendError, MecorchError
from mecorch.driverapi.model import HostCapacity

from .errors import os_errors

UNLIMITED = float("inf")


def _placement_free(conn) -> dict[str, tuple[float, float]] | None:
    """{resource class: (total, used)} over every resource provider, or None
    when Placement is not readable by this project."""
    out: dict[str, list[float]] = {}
    try:
        with os_errors("read Placement inventories"):
            for rp in conn.placement.resource_providers():
                for inv in conn.placement.resource_provider_inventories(rp):
                    total = (inv.total - (inv.reserved or 0)) * (inv.allocation_ratio or 1.0)
                    out.setdefault(inv.resource_class, [0.0, 0.0])[0] += total
                resp = conn.placement.get(f"/resource_providers/{rp.id}/usages")
                sdk_exc.raise_from_response(resp)
                for rc, used in (resp.json().get("usages") or {}).items():
                    out.setdefault(rc, [0.0, 0.0])[1] += used
    except MecorchError as e:
        if "403" in e.detail or "policy" in e.detail.lower():
            return None
        raise
    return {rc: (t, u) for rc, (t, u) in out.items()}


def _quota(conn) -> dict[str, tuple[float, float]]:
    """{cores|ram: (limit, in use)}; limit -1 (unlimited) is infinity."""
    with os_errors("read the compute quota"):
        q = conn.compute.get_quota_set(conn.current_project_id, usage=True)
    usage = getattr(q, "usage", None) or {}
    out = {}
    for key in ("cores", "ram"):
        limit = getattr(q, key, None)
        limit = UNLIMITED if limit is None or limit < 0 else float(limit)
        out[key] = (limit, float(usage.get(key, 0) or 0))
    return out


def read_capacity(conn) -> HostCapacity:
    placement = _placement_free(conn)
    quota = _quota(conn)

    def dim(rc: str, qkey: str | None) -> tuple[float, float]:
        total, used = (placement or {}).get(rc, (UNLIMITED, 0.0))
        if qkey is not None:
            qlimit, qused = quota[qkey]
            free = min(total - used, qlimit - qused)
            if total == UNLIMITED:
                total, used = qlimit, qused
            else:
                used = total - max(0.0, free)
        if total == UNLIMITED:
            raise BackendError("the cloud states no limit for " + rc + " (no Placement "
                               "access and an unlimited quota): cannot size it")
        return total, used

    cpu = dim("VCPU", "cores")
    mem = dim("MEMORY_MB", "ram")
    disk = dim("DISK_GB", None) if placement and "DISK_GB" in placement else (1e6, 0.0)
    return HostCapacity(cpu_total=cpu[0], cpu_used=cpu[1], memory_mb_total=int(mem[0]),
                        memory_mb_used=int(mem[1]), disk_gb_total=disk[0],
                        disk_gb_used=disk[1])
