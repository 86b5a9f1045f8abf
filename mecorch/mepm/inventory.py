"""The inventory of edge hosts and the choice of where an instance goes.

A host's drivers are loaded and opened on first use, so a host whose VIM is
never asked for never imports libvirt. Capacity follows the one model of
`spec.capacity`: the totals come from the backend (cached, and read before
the inventory's lock is taken, so a slow backend never holds up another
host's placement), the usage from what mecorch itself promised (instances
in the store plus deploys in flight), so concurrent deploys cannot both
take the last core.
"""

from __future__ import annotations

import logging
import threading
import time

from mecorch.driverapi.contracts import ComputeDriver, Driver, PlatformDriver, load_driver
from mecorch.kernel.errors import (
    Conflict, InvalidInput, MecorchError, NotFound, UnsupportedAction)
from mecorch.driverapi.model import HostCapacity
from mecorch.kernel.states import DeploymentType
from mecorch.spec import placement
from mecorch.spec.capacity import NOTHING, Need, Room

log = logging.getLogger("mecorch.decision")
ROLE_OF = {DeploymentType.CONTAINER: "cim", DeploymentType.VM: "vim"}
TOTALS_TTL_S = 30.0


class EdgeHost:
    def __init__(self, cfg: dict, cpu_allocation_ratio: float):
        self.id: str = cfg["id"]
        self._cfg = cfg
        self._ratio = cpu_allocation_ratio
        self._drivers: dict[str, Driver] = {}
        self._unopened: dict[str, Driver] = {}     # loaded, not opened yet (`driver`)
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

    def driver(self, role: str, opened: bool = True) -> Driver:
        """The role's driver, loaded and opened on first use. `opened`
        False: not opened if it is not yet (the fence at an MEPM's start
        removes a fenced app's rules before the MEP is opened: an opened
        MEP would serve them from its files until then); the next use
        opens it."""
        with self._lock:
            drv = self._drivers.get(role)
            if drv is None:
                drv = self._unopened.pop(role, None)
                if drv is None:
                    section = self._cfg.get(role)
                    if not section:
                        raise Conflict(f"edge host {self.id!r} has no {role} configured")
                    drv = load_driver(role, section)
                if not opened:
                    self._unopened[role] = drv
                    return drv
                drv.open()
                self._drivers[role] = drv
            return drv

    def compute_that(self, manner: DeploymentType, verbs: type, instance_id: str,
                     can: str):
        """The driver of `manner`, loaded (not opened), when it declares the
        optional `verbs` (a contract of mecorch.driverapi.contracts);
        UnsupportedAction naming the driver and what it `can`not do
        otherwise."""
        role = ROLE_OF[manner]
        drv = self.driver(role, opened=False)
        if not isinstance(drv, verbs):
            named = self.section(role).get("driver")
            name = f"{named!r} ({type(drv).__name__})" if named else type(drv).__name__
            raise UnsupportedAction(f"app instance {instance_id}: the {role} driver {name} of "
                                    f"edge host {self.id} cannot {can} (it is not "
                                    f"{verbs.__name__})")
        return drv

    def compute(self, manner: DeploymentType) -> ComputeDriver:
        drv = self.driver(ROLE_OF[manner])
        assert isinstance(drv, ComputeDriver)
        return drv

    def mep(self, opened: bool = True) -> PlatformDriver | None:
        if not self._cfg.get("mep"):
            return None
        drv = self.driver("mep", opened)
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
        # what the hosts of this process declare of their latency to UEs
        # (mepm.latency_ms; the MEO reads the same from their reports)
        lat = (cfg.get("mepm") or {}).get("latency_ms")
        self.latency_ms = float(lat) if lat is not None else None
        self._ratio = ratio
        self._lock = threading.Lock()
        self._inflight: dict[str, tuple[str, Need]] = {}   # instance -> (host, need)

    def get(self, host_id: str) -> EdgeHost:
        host = self.hosts.get(host_id)
        if host is None:
            raise NotFound(f"unknown edge host {host_id!r}; known: {', '.join(self.hosts)}")
        return host

    def reserve(self, instance_id: str, plan, used: dict[str, Need]) -> EdgeHost:
        """`reserve_explained` without the reason."""
        return self.reserve_explained(instance_id, plan, used)[0]

    def reserve_explained(self, instance_id: str, plan, used: dict[str, Need]
                          ) -> tuple[EdgeHost, str]:
        """Place the planned request (`spec.plan.Plan`) with the one
        placement engine (`spec.placement.choose`: the MEO's rules over this
        process's hosts, each host's driver capabilities and service range
        included) and hold its resources until `release`. `plan.wanted`:
        hosts named in selectedMECHostInfo or found fit by the manner policy
        (any of them will do), empty for "any host". `used`: per host, what
        instances in the store already hold. Returns the host and why it
        was chosen (and the others not); raises CapacityExceeded naming
        each host, changing nothing."""
        manner = plan.manner
        named = [self.get(h) for h in plan.wanted] if plan.wanted else list(self.hosts.values())
        hosts = [h for h in named if h.has(manner)]
        if not hosts:
            raise InvalidInput(f"no selected edge host can run {manner.value} instances")
        # The backends are asked before the lock (their answers are cached;
        # an expired cache costs a backend call that must not block others).
        totals = {h.id: h.totals(manner) for h in hosts}
        caps = {h.id: h.compute(manner).capabilities() for h in hosts}
        with self._lock:
            candidates = [placement.Candidate(
                h.id, True, {manner.value: Room.of(totals[h.id], self._ratio,
                                                   used.get(h.id, NOTHING),
                                                   self._inflight_on(h.id))},
                caps[h.id].hardware_accel, self.latency_ms, {manner.value: caps[h.id]},
                h.section("mep").get("service_cidr")) for h in hosts]
            # a host without the manner is named in the reason, not placed on
            candidates += [placement.Candidate(h.id, True) for h in named if not h.has(manner)]
            chosen, reason = placement.choose(
                manner, plan.need, candidates, list(plan.wanted), plan.max_latency_ns,
                plan.accel, plan.request, plan.fixed_addresses)
            self._inflight[instance_id] = (chosen, plan.need)
        return self.hosts[chosen], reason

    def candidates(self, used: dict[str, Need], host_ids: list[str] | None = None
                   ) -> list[placement.Candidate]:
        """Every (or each named) host as placement and the manner policy see
        it: its room for each manner it runs (instances in the store and
        deploys in flight). A backend that cannot report counts as absent
        on that host (logged): the other manner may still fit there."""
        hosts = [self.get(h) for h in host_ids] if host_ids else list(self.hosts.values())
        out = []
        for host in hosts:
            rooms, accel = {}, ""
            for m in DeploymentType:
                if not host.has(m):
                    continue
                try:
                    rooms[m.value] = self.room(host.id, m, used.get(host.id))
                    if m is DeploymentType.VM:
                        accel = host.compute(m).capabilities().hardware_accel
                except MecorchError as e:
                    rooms.pop(m.value, None)
                    log.warning("host %s: %s backend cannot report (%s): not counted for %s",
                                host.id, m.value, e.detail, m.value)
            out.append(placement.Candidate(host.id, True, rooms, accel, self.latency_ms,
                                           service_cidr=host.section("mep").get("service_cidr")))
        return out

    def room(self, host_id: str, manner: DeploymentType, used: Need | None) -> Room:
        """The host's room for `manner` now: `used` (its instances in the
        store) plus the deploys in flight there, against its backend's
        totals (a backend call when the cache expired)."""
        total = self.get(host_id).totals(manner)
        with self._lock:
            inflight = self._inflight_on(host_id)
        return Room.of(total, self._ratio, used or NOTHING, inflight)

    def promised(self, host_id: str, used: Need | None) -> Need:
        """What the host has promised: `used` (instances in the store) plus
        the deploys in flight there."""
        with self._lock:
            return (used or NOTHING) + self._inflight_on(host_id)

    @property
    def cpu_allocation_ratio(self) -> float:
        return self._ratio

    def release(self, instance_id: str) -> None:
        with self._lock:
            self._inflight.pop(instance_id, None)

    def _inflight_on(self, host_id: str) -> Need:
        """The needs of the deploys in flight on the host (lock held)."""
        out = NOTHING
        for hid, n in self._inflight.values():
            if hid == host_id:
                out = out + n
        return out
