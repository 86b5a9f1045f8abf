"""libvirt's domain stats (`virDomainListGetStats`, what `virsh domstats`
prints) as a ResourceUsage."""

from __future__ import annotations

import libvirt

from mecorch.driverapi.model import ResourceUsage

STATS_WANTED = (libvirt.VIR_DOMAIN_STATS_CPU_TOTAL | libvirt.VIR_DOMAIN_STATS_BALLOON
                 | libvirt.VIR_DOMAIN_STATS_INTERFACE | libvirt.VIR_DOMAIN_STATS_BLOCK)


def usage_of(st: dict, at: float) -> ResourceUsage:
    """A ResourceUsage from one domain's stats (a stopped domain has no
    cpu, balloon, net or block figures: None)."""
    def total(kind: str, field: str) -> int | None:
        n = st.get(f"{kind}.count")
        if n is None:
            return None
        return sum(int(st.get(f"{kind}.{i}.{field}", 0)) for i in range(int(n)))
    cpu = st.get("cpu.time")
    avail, unused = st.get("balloon.available"), st.get("balloon.unused")
    used_kib = avail - unused if avail is not None and unused is not None \
        else st.get("balloon.rss")
    limit_kib = st.get("balloon.maximum")
    return ResourceUsage(
        at=at, cpu_seconds=cpu / 1e9 if cpu is not None else None,
        memory_bytes=used_kib * 1024 if used_kib is not None else None,
        memory_limit_bytes=limit_kib * 1024 if limit_kib is not None else None,
        net_rx_bytes=total("net", "rx.bytes"), net_tx_bytes=total("net", "tx.bytes"),
        block_read_bytes=total("block", "rd.bytes"), block_write_bytes=total("block", "wr.bytes"))
