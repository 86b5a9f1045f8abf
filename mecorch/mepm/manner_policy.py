"""The impure half of choosing a dual-format app's manner: gather the host
facts the pure policy (`decision.choose_manner`) needs, and call it.

Facts are a snapshot: the final, atomic room check is still the
inventory's reservation of the chosen manner on one of the hosts the policy
found fit. A host's cores, memory and disk are shared by its containers and
its VMs, so its free room is the least any of its backends reports, less
what mecorch already promised there.
"""

from __future__ import annotations

from dataclasses import dataclass

from mecorch.spec import decision
from mecorch.spec.decision import HostFacts
from mecorch.mepm.inventory import Inventory
from mecorch.spec import placement
from mecorch.spec.capacity import Need
from mecorch.kernel.states import DeploymentType


def host_facts(inventory: Inventory, host_ids: list[str],
               used: dict[str, Need]) -> list[HostFacts]:
    """HostFacts of the named hosts (all of them when `host_ids` is empty),
    as placement sees them (`Inventory.candidates`)."""
    return [placement.facts(c) for c in inventory.candidates(used, host_ids)]


@dataclass
class PolicyChooser:
    """The manner policy of one instantiation (a `spec.plan.Chooser`):
    gathers the facts only when the policy is needed, from the needs the
    plan computed for each manner, and names the hosts that fit the chosen
    manner, so the reservation goes to one of them."""
    inventory: Inventory
    orchestrator_cfg: dict
    app_d_id: str
    wanted: list[str]
    used: dict[str, Need]

    def __call__(self, manners: tuple[DeploymentType, ...], needs: dict[DeploymentType, Need],
                 accel: bool) -> tuple[DeploymentType, str, list[str]]:
        facts = host_facts(self.inventory, self.wanted, self.used)
        pref, source = decision.preference_for(self.orchestrator_cfg, self.app_d_id)
        manner, reason = decision.choose_manner(manners, facts, pref, needs, accel,
                                                source or "the configured preference")
        fit = [h.host_id for h in facts
               if decision.can_run(h, manner, accel and manner is DeploymentType.VM)
               is None and decision.room_for(h, needs[manner]) is None]
        return manner, reason, fit
