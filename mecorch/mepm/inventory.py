"""The inventory of edge hosts and the choice of where an instance goes.

A host's drivers are loaded and opened on first use, so a host whose VIM is
never asked for never imports libvirt. Capacity is decided the way Nova's
placement does it: the totals come from the backend (cached), the usage
from what mecorch itself promised (instances in the store plus deploys in
flight), so concurrent deploys cannot both take the last core.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from mecorch.driverapi.contracts import ComputeDriver, Driver, PlatformDriver, load_driver
from mecorch.kernel.errors import CapacityExceeded, Conflict, InvalidInput, NotFound
from mecorch.driverapi.model import HostCapacity
from mecorch.kernel.states import DeploymentType

ROLE_OF = {DeploymentType.CONTAINER: "cim", DeploymentType.VM: "vim"}
TOTALS_TTL_S = 30.0


@dataclass(frozen=True)
class Need:
    vcpu: float
    memory_mb: int
    disk_gb: float


class EdgeHost:
    def __init__(self, cfg: dict, cpu_allocation_ratio: float):
        self.id: str = cfg["id"]
        self._cfg = cfg
        self._ratio = cpu_allocation_ratio
        self._drivers: dict[str, Driver] = {}
        self._lock = threading.Lock()
        self._totals: dict[str, tuple[float, HostCapacity]] = {}

    def section(self, role: str) -> dict:
        """The host's configuration of one driver role ({} if none)."""
        return self._cfg.get(role) or {}

    def has(self, manner: DeploymentType) -> bool:
        return bool(self._cfg.get(ROLE_OF[manner]))

    def attach(self, role: str, driver: Driver) -> None:
        """Use an already built driver for `role` (embedding, core tests)."""
        with self._lock:
            self._drivers[role] = driver

    def driver(self, role: str) -> Driver:
        with self._lock:
            drv = self._drivers.get(role)
            if drv is None:
                section = self._cfg.get(role)
                if not section:
                    raise Conflict(f"edge host {self.id!r} has no {role} configured")
                drv = load_driver(role, section)
                drv.open()
                self._drivers[role] = drv
            return drv

    def compute(self, manner: DeploymentType) -> ComputeDriver:
        drv = self.driver(ROLE_OF[manner])
        assert isinstance(drv, ComputeDriver)
        return drv

    def mep(self) -> PlatformDriver | None:
        if not self._cfg.get("mep"):
            return None
        drv = self.driver("mep")
        assert isinstance(drv, PlatformDriver)
        return drv

    def totals(self, manner: DeploymentType) -> HostCapacity:
        """Backend-reported capacity, cached: hardware does not change often."""
        now = time.monotonic()
        cached = self._totals.get(manner.value)
        if cached and now - cached[0] < TOTALS_TTL_S:
            return cached[1]
        cap = self.compute(manner).capacity()
        self._totals[manner.value] = (now, cap)
        return cap

    def close(self) -> None:
        with self._lock:
            for drv in self._drivers.values():
                drv.close()
            self._drivers.clear()


class Inventory:
    """Edge hosts by id, and the ledger of what was promised on each."""

    def __init__(self, cfg: dict):
        ratio = float(cfg["orchestrator"]["cpu_allocation_ratio"])
        self.hosts = {h["id"]: EdgeHost(h, ratio) for h in cfg["hosts"]}
        self._ratio = ratio
        self._lock = threading.Lock()
        self._inflight: dict[str, tuple[str, Need]] = {}   # instance -> (host, need)

    def get(self, host_id: str) -> EdgeHost:
        host = self.hosts.get(host_id)
        if host is None:
            raise NotFound(f"unknown edge host {host_id!r}; known: {', '.join(self.hosts)}")
        return host

    def reserve(self, instance_id: str, manner: DeploymentType, need: Need,
                wanted: list[str], used: dict[str, Need], accel: bool = False) -> EdgeHost:
        """Pick a host for the instance and hold its resources until
        `release`. `wanted`: hosts named in selectedMECHostInfo (any of them
        will do), empty for "any host". `used`: per host, what instances in
        the store already hold. `accel`: the AppD asks for hardware
        acceleration, which a VM only gets from a KVM VIM. Raises
        CapacityExceeded, changing nothing."""
        candidates = [self.get(h) for h in wanted] if wanted else list(self.hosts.values())
        candidates = [h for h in candidates if h.has(manner)]
        if not candidates:
            raise InvalidInput(f"no selected edge host can run {manner.value} instances")
        with self._lock:
            reasons = []
            for host in candidates:
                why = self._why_not(host, manner, need, used.get(host.id))
                if why is None and accel and manner is DeploymentType.VM:
                    have = host.compute(manner).capabilities().hardware_accel
                    if have != "kvm":
                        why = (f"VIM is {have or 'not probed'}-only; the app asks for "
                               "hardware acceleration")
                if why is None:
                    self._inflight[instance_id] = (host.id, need)
                    return host
                reasons.append(f"{host.id}: {why}")
        raise CapacityExceeded("no edge host has room for "
                               f"{need.vcpu:g} vCPU, {need.memory_mb} MB, {need.disk_gb:g} GB "
                               f"({'; '.join(reasons)})")

    def promised(self, host_id: str, used: Need | None) -> Need:
        """What the host has promised: `used` (instances in the store) plus
        the deploys in flight there."""
        cpu, mem, disk = (used.vcpu, used.memory_mb, used.disk_gb) if used else (0.0, 0, 0.0)
        with self._lock:
            for hid, n in self._inflight.values():
                if hid == host_id:
                    cpu, mem, disk = cpu + n.vcpu, mem + n.memory_mb, disk + n.disk_gb
        return Need(cpu, mem, disk)

    @property
    def cpu_allocation_ratio(self) -> float:
        return self._ratio

    def release(self, instance_id: str) -> None:
        with self._lock:
            self._inflight.pop(instance_id, None)

    def _why_not(self, host: EdgeHost, manner: DeploymentType, need: Need,
                 used: Need | None) -> str | None:
        total = host.totals(manner)
        cpu = (used.vcpu if used else 0.0) + need.vcpu
        mem = (used.memory_mb if used else 0) + need.memory_mb
        for hid, n in self._inflight.values():
            if hid == host.id:
                cpu += n.vcpu
                mem += n.memory_mb
        cpu_cap = total.cpu_total * self._ratio
        free_disk = total.disk_gb_total - total.disk_gb_used
        if cpu > cpu_cap:
            return f"vCPU {cpu:g} of {cpu_cap:g}"
        if mem > total.memory_mb_total:
            return f"memory {mem} of {total.memory_mb_total} MB"
        if need.disk_gb > free_disk:
            return f"disk {need.disk_gb:g} GB of {free_disk:.1f} GB free"
        return None
