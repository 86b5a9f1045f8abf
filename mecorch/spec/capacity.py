"""The one capacity model: what a request needs of a host, what a host can
still promise, and why a request does not fit. Pure: the callers hand in
the backend's totals and what is promised; every level (the single node's
inventory, the MEPM's host report, the MEO's placement, the manner policy,
the status page) computes room with these functions, so they agree.

The rules, as Nova's placement counts:
- vCPU and memory: allocatable (cores x `cpu_allocation_ratio`, memory as
  reported) less what mecorch promised: the instances in the store plus
  the deploys in flight (reservations).
- disk: the backend's own free space (images and other tenants use it
  too, and a deployed instance's disk is already in it) less the disk of
  deploys in flight, which the backend does not see yet.
A host's cores, memory and disk are shared by its containers and VMs, so
where both run its room is the least either backend reports.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Need:
    """What one instance takes: its vCPUs, memory and disk (root disk plus
    every volume)."""
    vcpu: float
    memory_mb: int
    disk_gb: float

    def __add__(self, other: "Need") -> "Need":
        return Need(self.vcpu + other.vcpu, self.memory_mb + other.memory_mb,
                    self.disk_gb + other.disk_gb)


NOTHING = Need(0.0, 0, 0.0)


def need_of(request) -> Need:
    """The Need of a `driverapi.model.ResourceRequest`."""
    return Need(request.vcpu, request.memory_mb,
                request.disk_gb + sum(v.size_gb for v in request.volumes))


def total(needs) -> Need:
    out = NOTHING
    for n in needs:
        out = out + n
    return out


@dataclass(frozen=True)
class Room:
    """What one host can promise for one manner, and what it promised."""
    vcpu_total: float           # allocatable: cores x cpu_allocation_ratio
    memory_mb_total: int
    disk_gb_total: float
    vcpu_used: float            # instances + deploys in flight
    memory_mb_used: int
    disk_gb_used: float         # the backend's own + deploys in flight

    @classmethod
    def of(cls, capacity, ratio: float, used: Need, inflight: Need) -> "Room":
        """From a backend's `HostCapacity`, the CPU allocation ratio, the
        instances' needs (`used`) and the deploys in flight."""
        return cls(capacity.cpu_total * ratio, capacity.memory_mb_total,
                   capacity.disk_gb_total, used.vcpu + inflight.vcpu,
                   used.memory_mb + inflight.memory_mb,
                   capacity.disk_gb_used + inflight.disk_gb)

    def reserving(self, more: Need) -> "Room":
        """The room once `more` is promised too (an MEO's reservations the
        host has not reported yet)."""
        return Room(self.vcpu_total, self.memory_mb_total, self.disk_gb_total,
                    self.vcpu_used + more.vcpu, self.memory_mb_used + more.memory_mb,
                    self.disk_gb_used + more.disk_gb)

    @property
    def free_vcpu(self) -> float:
        return self.vcpu_total - self.vcpu_used

    @property
    def free_memory_mb(self) -> int:
        return self.memory_mb_total - self.memory_mb_used

    @property
    def free_disk_gb(self) -> float:
        return self.disk_gb_total - self.disk_gb_used

    def why_not(self, need: Need) -> str | None:
        return shortfall(need, self.free_vcpu, self.free_memory_mb, self.free_disk_gb)

    def share_left(self, need: Need) -> float:
        """The smaller of the vCPU and memory shares left after `need`: the
        placement's "most free" measure."""
        cpu = (self.free_vcpu - need.vcpu) / self.vcpu_total if self.vcpu_total else 0.0
        mem = (self.free_memory_mb - need.memory_mb) / self.memory_mb_total \
            if self.memory_mb_total else 0.0
        return min(cpu, mem)


def shared(rooms: list[Room]) -> tuple[float, int, float]:
    """(free vCPU, memory MB, disk GB) of a host whose backends report
    `rooms` (its containers and VMs share one machine: the least of each),
    never below zero."""
    if not rooms:
        return 0.0, 0, 0.0
    return (max(min(r.free_vcpu for r in rooms), 0.0),
            max(min(r.free_memory_mb for r in rooms), 0),
            max(min(r.free_disk_gb for r in rooms), 0.0))


def shortfall(need: Need, free_vcpu: float, free_memory_mb: float,
              free_disk_gb: float) -> str | None:
    """Why `need` does not fit the free room, in the one wording every
    level uses; None when it fits."""
    if need.vcpu > free_vcpu:
        return f"vCPU {need.vcpu:g} > {free_vcpu:g} free"
    if need.memory_mb > free_memory_mb:
        return f"memory {need.memory_mb:g} MB > {free_memory_mb:g} MB free"
    if need.disk_gb > free_disk_gb:
        return f"disk {need.disk_gb:g} GB > {free_disk_gb:.1f} GB free"
    return None


def accel_refusal(vm_accel: str) -> str | None:
    """Why a VIM cannot take a VM whose AppD asks for hardware
    acceleration (None when it is KVM): the one wording of every level."""
    if vm_accel == "kvm":
        return None
    what = "TCG-only" if vm_accel == "tcg" else "not probed for KVM yet"
    return f"its VIM is {what} and the AppD asks for hardware acceleration"


_ROLE = {"VM": "VIM", "CONTAINER": "CIM"}


def unfit_for(caps, request) -> str | None:
    """Why a driver declaring `caps` (`driverapi.contracts.Capabilities`)
    cannot take `request` (a `ResourceRequest`), in the one wording every
    level uses; None when it can. Read at admission, before the 202."""
    role = "its " + _ROLE.get(getattr(caps.manner, "value", ""), "driver")

    def outside(what: str, value, low, high, unit: str = "") -> str | None:
        if low is not None and value < low:
            return f"{what} {value:g}{unit} is below {role}'s minimum of {low:g}{unit}"
        if high is not None and value > high:
            return f"{what} {value:g}{unit} is over {role}'s maximum of {high:g}{unit}"
        return None

    why = (outside("vCPU", request.vcpu, caps.vcpu_min, caps.vcpu_max)
           or outside("memory", request.memory_mb, caps.memory_mb_min, caps.memory_mb_max,
                      " MB")
           or outside("disk", request.disk_gb, None, caps.disk_gb_max, " GB"))
    if why:
        return why
    if caps.volumes_max is not None and len(request.volumes) > caps.volumes_max:
        return f"{len(request.volumes)} volumes are over {role}'s maximum of {caps.volumes_max}"
    for v in request.volumes:
        why = outside(f"volume {v.name}", v.size_gb, None, caps.volume_gb_max, " GB")
        if why:
            return why
        if v.reserved and not caps.reserved_volumes:
            return (f"volume {v.name} is to be retained (RETAIN), but {role} keeps no "
                    f"volume beyond its instance")
    for p in request.ports:
        if p.host_port is not None and not caps.published_ports:
            return f"port {p.port}/{p.protocol} asks for host port {p.host_port}, but " \
                   f"{role} publishes no host ports"
        if caps.port_protocols is not None and p.protocol not in caps.port_protocols:
            return f"port {p.port}/{p.protocol}: {role} serves only " \
                   f"{', '.join(caps.port_protocols)}"
    return None
