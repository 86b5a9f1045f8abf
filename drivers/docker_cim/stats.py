"""Docker's stats document (`GET /containers/{id}/stats`, one-shot) as a
ResourceUsage: the figures `docker stats` prints, read the way it reads
them (cgroup v1 or v2)."""

from __future__ import annotations

from mecorch.driverapi.model import ResourceUsage


def usage_of(s: dict, at: float) -> ResourceUsage:
    """A ResourceUsage from Docker's stats document (cgroup v1 or v2)."""
    cpu = ((s.get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage")
    mem = s.get("memory_stats") or {}
    used = mem.get("usage")
    if used is not None:
        # what the docker CLI subtracts: the inactive file cache
        stats = mem.get("stats") or {}
        cache = stats.get("total_inactive_file", stats.get("inactive_file"))
        if cache is not None and cache < used:
            used -= cache
    nets = (s.get("networks") or {}).values()
    blk: dict[str, int] = {}
    for row in (s.get("blkio_stats") or {}).get("io_service_bytes_recursive") or []:
        op = str(row.get("op", "")).lower()
        blk[op] = blk.get(op, 0) + int(row.get("value") or 0)
    running = bool(mem)          # a stopped container's stats are empty
    return ResourceUsage(
        at=at, cpu_seconds=cpu / 1e9 if cpu is not None and running else None,
        memory_bytes=used, memory_limit_bytes=mem.get("limit"),
        net_rx_bytes=sum(int(n.get("rx_bytes") or 0) for n in nets) if running else None,
        net_tx_bytes=sum(int(n.get("tx_bytes") or 0) for n in nets) if running else None,
        block_read_bytes=blk.get("read", 0) if running else None,
        block_write_bytes=blk.get("write", 0) if running else None)
