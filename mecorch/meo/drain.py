"""Drain of an edge host at the MEO (a mecorch extension, for maintenance):
the host is cordoned (`Registry.cordon`: it takes no new placement), then
every instance INSTANTIATED there is relocated (`SystemLcm.relocate`, one
call after the other: each placement sees the room the ones before it
reserved), each as an op occurrence of its own (RELOCATE) that the OSS
follows as any op. What cannot move stays where it is and is listed with
why:

- its instantiate request named only this host (selectedMECHostInfo): the
  OSS asked for that host, so the drain does not overrule it (the operator
  may relocate it by naming another host, or terminate it);
- relocate refused to start (another operation holds the instance, no
  other host fits, ...): relocate's own reason;
- it is being instantiated onto this host (placed before the cordon, or a
  re-placement): it is not there to move yet; a drain again once that op
  ends moves it.

The answer comes once every relocation has started, not when they end;
`uncordon` makes the host placeable again (nothing moves back).
"""

from __future__ import annotations

import logging

from mecorch.kernel.errors import MecorchError
from mecorch.kernel.states import InstantiationState, LcmOperation
from mecorch.meo.lcm import SELECTED

log = logging.getLogger("mecorch.meo.drain")
DRAIN_REASON = "drained"        # the cordon's reason when the drain gives none
INSTANTIATED = InstantiationState.INSTANTIATED.value
INSTANTIATE = LcmOperation.INSTANTIATE.value


def drain(lcm, registry, host_id: str, reason: str = "") -> dict:
    """Cordon the host, then start the relocation of each of its
    INSTANTIATED instances: {"relocating": [{appInstanceId, opId}],
    "cannotMove": [{appInstanceId, reason}]} (404: an unknown host). A host
    already cordoned keeps its cordon's time and, without `reason`, its
    reason."""
    already = host_id in registry.cordons()
    registry.cordon(host_id, reason or ("" if already else DRAIN_REASON))
    relocating, cannot = [], []
    for inst in lcm.store.list("instances", hostId=host_id, instantiationState=INSTANTIATED,
                               keep=("id", SELECTED)):
        iid = inst["id"]
        if (inst.get(SELECTED) or []) == [host_id]:
            cannot.append({"appInstanceId": iid, "reason": (
                f"its instantiate request selected only edge host {host_id} "
                "(selectedMECHostInfo); relocate it naming another host, or terminate it")})
            continue
        try:
            op = lcm.relocate(iid, {})
        except MecorchError as e:
            cannot.append({"appInstanceId": iid, "reason": e.detail})
            continue
        relocating.append({"appInstanceId": iid, "opId": op["id"]})
    listed = {r["appInstanceId"] for r in relocating + cannot}
    for op in lcm.journal.in_progress():
        if op["lcmOperation"] == INSTANTIATE and op["_plan"].get("hostId") == host_id \
                and op["appInstanceId"] not in listed:
            listed.add(op["appInstanceId"])
            cannot.append({"appInstanceId": op["appInstanceId"], "reason": (
                f"being instantiated onto edge host {host_id} (op {op['id']}, placed before "
                "the cordon); drain again once it ends")})
    log.warning("edge host %s drained: %d instance(s) relocating, %d cannot move%s",
                host_id, len(relocating), len(cannot),
                "".join(f"; {c['appInstanceId']}: {c['reason']}" for c in cannot))
    return {"relocating": relocating, "cannotMove": cannot}
