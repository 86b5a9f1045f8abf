"""The impure half of choosing a dual-format app's manner: gather the host
facts the pure policy (`decision.choose_manner`) needs, and call it.

Facts are a snapshot: the final, atomic room check is still the
inventory's reservation of the chosen manner on one of the hosts the policy
found fit. A host's cores, memory and disk are shared by its containers and
its VMs, so its free room is the least any of its backends reports, less
what mecorch already promised there.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mecorch.spec import decision
from mecorch.spec.decision import HostFacts
from mecorch.mepm.inventory import Inventory
from mecorch.spec import placement
from mecorch.spec.capacity import Need, need_of
from mecorch.kernel.states import DeploymentType


def host_facts(inventory: Inventory, host_ids: list[str],
               used: dict[str, Need]) -> list[HostFacts]:
    """HostFacts of the named hosts (all of them when `host_ids` is empty),
    as placement sees them (`Inventory.candidates`)."""
    return [placement.facts(c) for c in inventory.candidates(used, host_ids)]


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
