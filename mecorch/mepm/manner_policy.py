"""The impure half of choosing a dual-format app's manner: gather the host
facts the pure policy (`decision.choose_manner`) needs, and call it.

Facts are a snapshot: the final, atomic room check is still the
inventory's reservation of the chosen manner on one of the hosts the policy
found fit. A host's cores, memory and disk are shared by its containers and
its VMs, so its free room is the least any of its backends reports, less
what mecorch already promised there.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from mecorch.spec import decision
from mecorch.spec.decision import HostFacts
from mecorch.kernel.errors import MecorchError
from mecorch.mepm.inventory import Inventory, Need
from mecorch.kernel.states import DeploymentType

log = logging.getLogger("mecorch.decision")


def host_facts(inventory: Inventory, host_ids: list[str], used: dict[str, Need],
               cpu_allocation_ratio: float) -> list[HostFacts]:
    """HostFacts of the named hosts (all of them when `host_ids` is empty).
    A backend that cannot report counts as absent on that host (logged):
    the other manner may still be deployable there or elsewhere."""
    hosts = [inventory.get(h) for h in host_ids] if host_ids else list(inventory.hosts.values())
    out = []
    for host in hosts:
        can = {m: host.has(m) for m in DeploymentType}
        free_cpu = free_mem = free_disk = None
        accel = ""
        u = used.get(host.id, Need(0.0, 0, 0.0))
        for m in DeploymentType:
            if not can[m]:
                continue
            try:
                total = host.totals(m)
                if m is DeploymentType.VM:
                    accel = host.compute(m).capabilities().hardware_accel
            except MecorchError as e:
                log.warning("host %s: %s backend cannot report (%s): not counted for %s",
                            host.id, m.value, e.detail, m.value)
                can[m] = False
                continue
            cpu = total.cpu_total * cpu_allocation_ratio - u.vcpu
            mem = total.memory_mb_total - u.memory_mb
            disk = total.disk_gb_total - total.disk_gb_used
            free_cpu = cpu if free_cpu is None else min(free_cpu, cpu)
            free_mem = mem if free_mem is None else min(free_mem, mem)
            free_disk = disk if free_disk is None else min(free_disk, disk)
        out.append(HostFacts(host.id, can[DeploymentType.CONTAINER], can[DeploymentType.VM],
                             accel, max(free_cpu or 0.0, 0.0), max(free_mem or 0, 0),
                             max(free_disk or 0.0, 0.0)))
    return out


def need_of(request) -> Need:
    """What a ResourceRequest takes from a host (as Lcm reserves it)."""
    return Need(request.vcpu, request.memory_mb,
                request.disk_gb + sum(v.size_gb for v in request.volumes))


@dataclass
class PolicyChooser:
    """The `choose` callback of decision.decide_manner for one
    instantiation: gathers the facts only when the policy is needed, and
    remembers which hosts fit the chosen manner (`fit_hosts`), so the
    reservation goes to one of them."""
    inventory: Inventory
    orchestrator_cfg: dict
    instance_id: str
    app_d_id: str
    appd: dict
    images: dict[str, str]                  # manner value -> stored image
    body: dict
    wanted: list[str]
    used: dict[str, Need]
    fit_hosts: list[str] = field(default_factory=list)

    def __call__(self, manners: tuple[DeploymentType, ...]) -> tuple[DeploymentType, str]:
        needs = {m: need_of(decision.resource_request(self.instance_id, self.appd, m,
                                                      self.images[m.value], self.body))
                 for m in manners}
        accel = DeploymentType.VM in manners and decision.accel_required(self.appd)
        facts = host_facts(self.inventory, self.wanted, self.used,
                           float(self.orchestrator_cfg.get("cpu_allocation_ratio", 1.0)))
        pref, source = decision.preference_for(self.orchestrator_cfg, self.app_d_id)
        manner, reason = decision.choose_manner(manners, facts, pref, needs, accel,
                                                source or "the configured preference")
        self.fit_hosts = [h.host_id for h in facts
                          if decision.can_run(h, manner, accel and manner is DeploymentType.VM)
                          is None and decision.room_for(h, needs[manner]) is None]
        return manner, reason
