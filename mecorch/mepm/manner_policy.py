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
from mecorch.mepm.inventory import Inventory
from mecorch.spec import capacity
from mecorch.spec.capacity import Need, need_of
from mecorch.kernel.states import DeploymentType

log = logging.getLogger("mecorch.decision")


def host_facts(inventory: Inventory, host_ids: list[str],
               used: dict[str, Need]) -> list[HostFacts]:
    """HostFacts of the named hosts (all of them when `host_ids` is empty),
    their room by `spec.capacity` (instances in the store and deploys in
    flight). A backend that cannot report counts as absent on that host
    (logged): the other manner may still be deployable there or elsewhere."""
    hosts = [inventory.get(h) for h in host_ids] if host_ids else list(inventory.hosts.values())
    out = []
    for host in hosts:
        can = {m: host.has(m) for m in DeploymentType}
        rooms, accel = [], ""
        for m in DeploymentType:
            if not can[m]:
                continue
            try:
                rooms.append(inventory.room(host.id, m, used.get(host.id)))
                if m is DeploymentType.VM:
                    accel = host.compute(m).capabilities().hardware_accel
            except MecorchError as e:
                log.warning("host %s: %s backend cannot report (%s): not counted for %s",
                            host.id, m.value, e.detail, m.value)
                can[m] = False
        out.append(HostFacts(host.id, can[DeploymentType.CONTAINER], can[DeploymentType.VM],
                             accel, *capacity.shared(rooms)))
    return out


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
        facts = host_facts(self.inventory, self.wanted, self.used)
        pref, source = decision.preference_for(self.orchestrator_cfg, self.app_d_id)
        manner, reason = decision.choose_manner(manners, facts, pref, needs, accel,
                                                source or "the configured preference")
        self.fit_hosts = [h.host_id for h in facts
                          if decision.can_run(h, manner, accel and manner is DeploymentType.VM)
                          is None and decision.room_for(h, needs[manner]) is None]
        return manner, reason
