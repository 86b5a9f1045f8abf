"""Where an instance goes: the MEO's choice of edge host. Pure: the facts
(each host's reported capacity, reachability, the MEO's own reservations
not yet reported back) are handed in, so every rule is tested without a
backend or a network.

Order, as ETSI's MEO "selects an appropriate mobile edge host ... based on
a constraint":
1. an explicit `selectedMECHostInfo` restricts the candidates to those
   hosts (an unknown one is a 404);
2. a host must be reachable, support the decided manner (a host without a
   VIM takes no VM), have room for vCPU, memory and disk, and meet the
   AppD's `appLatency` when it declares its latency (and, for a VM whose
   AppD asks for hardware acceleration, have a KVM VIM);
3. among the hosts left, the one with the most free capacity after the
   placement wins (the smaller of its free vCPU and memory shares), then
   the host id, so the choice is stable.
"No host fits" is a 409 that names every host and why it was left out.
"""

from __future__ import annotations

from dataclasses import dataclass

from mecorch.kernel.errors import CapacityExceeded, NotFound
from mecorch.spec import capacity
from mecorch.spec.capacity import Need
from mecorch.kernel.states import DeploymentType
from mecorch.mepm.contract import HostInfo


@dataclass(frozen=True)
class Candidate:
    host_id: str
    reachable: bool
    info: HostInfo | None           # last reported; None: never reached
    reserved: Need = Need(0.0, 0, 0.0)   # MEO placements the host has not reported yet


def why_not(c: Candidate, manner: DeploymentType, need: Need,
            max_latency_ns: int | None = None, accel: bool = False) -> str | None:
    """Why the host cannot take the instance, or None when it can."""
    if not c.reachable or c.info is None:
        return "UNREACHABLE"
    cap = c.info.manners.get(manner.value)
    if cap is None:
        return "no VIM: takes no VM" if manner is DeploymentType.VM \
            else "no CIM: takes no container"
    if accel:
        refused = capacity.accel_refusal(cap.accel)
        if refused:
            return refused
    if max_latency_ns is not None and c.info.latency_ms is not None \
            and c.info.latency_ms * 1_000_000 > max_latency_ns:
        return (f"latency {c.info.latency_ms:g} ms over the app's maximum "
                f"{max_latency_ns / 1_000_000:g} ms")
    return room_of(c, manner).why_not(need)


def room_of(c: Candidate, manner: DeploymentType) -> capacity.Room:
    """The host's room as it reported it, less the MEO's reservations there
    that it has not reported yet."""
    return c.info.manners[manner.value].room().reserving(c.reserved)


def place(manner: DeploymentType, need: Need, candidates: list[Candidate],
          wanted: list[str] | None = None, max_latency_ns: int | None = None,
          accel: bool = False) -> str:
    """The host id the instance goes to; CapacityExceeded (409) naming every
    host's reason when none fits; NotFound (404) for an unknown wanted host."""
    by_id = {c.host_id: c for c in candidates}
    if wanted:
        unknown = [h for h in wanted if h not in by_id]
        if unknown:
            raise NotFound(f"unknown edge host {unknown[0]!r}; known: "
                           f"{', '.join(sorted(by_id)) or 'none'}")
        pool = [by_id[h] for h in dict.fromkeys(wanted)]
    else:
        pool = sorted(candidates, key=lambda c: c.host_id)
    fits, reasons = [], []
    for c in pool:
        why = why_not(c, manner, need, max_latency_ns, accel)
        if why is None:
            fits.append(c)
        else:
            reasons.append(f"{c.host_id}: {why}")
    if not fits:
        raise CapacityExceeded(
            f"no edge host fits {manner.value} {need.vcpu:g} vCPU, {need.memory_mb} MB, "
            f"{need.disk_gb:g} GB ({'; '.join(reasons) or 'no edge host is registered'})")
    return max(fits, key=lambda c: (room_of(c, manner).share_left(need),
                                    _neg(c.host_id))).host_id


def _neg(s: str) -> tuple:
    """Sort key making smaller host ids win ties under max()."""
    return tuple(-ord(ch) for ch in s)
