"""Replicas behind one service address: which instances of a host spread
the connections of one destination, computed from the stored rule sets.

Several instances of one app on a host may claim the same destinations
(`spec.rules.claim_conflict`: same appDId and the same rule,
`replica_key`). The replicas of an instance's FORWARD rule are the
instances whose rules are applied on the host (stored `hostId`: the
rules are applied as the last step of instantiation and removed as the
first of termination), in service (no `outOfService` reason: a replica
withdrawn for failing readiness or a dead runtime takes no connections), of the same
app, with an ACTIVE rule of the same key. The MEP driver is told them per
rule (`shares`, ascending ids: the order it visits them in), and each
replica is applied again when that set changes (`PlatformRules`), since
every replica's part depends on how many there are.
"""

from __future__ import annotations

from typing import Iterable

from mecorch.spec.rules import replica_key

FORWARD = "FORWARD_DECAPSULATED"


def in_service(doc: dict, host_id: str) -> bool:
    """The stored rule set is applied on the host and takes connections."""
    return doc.get("hostId") == host_id and not doc.get("outOfService")


def _spread_keys(rules: Iterable[dict]) -> dict[str, str]:
    """{rule id: key} of the ACTIVE FORWARD rules (the ones spread)."""
    return {r["trafficRuleId"]: replica_key(r) for r in rules or []
            if r.get("action") == FORWARD and r.get("state", "ACTIVE") == "ACTIVE"}


def spreadable(rules: Iterable[dict]) -> bool:
    """Has the set a rule replicas could spread (an ACTIVE FORWARD rule)?"""
    return bool(_spread_keys(rules))


def shares(docs: Iterable[dict], host_id: str, instance_id: str, app_d_id: str | None,
           rules: list[dict]) -> dict[str, tuple[str, ...]]:
    """{rule id: replica ids, ascending, the instance's own included} for
    each of the instance's FORWARD rules (`rules`: its ETSI documents) that
    another in-service instance of the same app on the host steers with
    the same rule; rules it steers alone are left out. `docs`: the stored
    rule sets of the host (the instance's own and a leaving one's are
    skipped by the caller or here by id)."""
    mine = _spread_keys(rules)
    if not mine or app_d_id is None:
        return {}
    found: dict[str, set[str]] = {rid: {instance_id} for rid in mine}
    for doc in docs:
        if doc.get("id") == instance_id or doc.get("appDId") != app_d_id \
                or not in_service(doc, host_id):
            continue
        theirs = set(_spread_keys(doc.get("trafficRules")).values())
        for rid, key in mine.items():
            if key in theirs:
                found[rid].add(doc["id"])
    return {rid: tuple(sorted(ids)) for rid, ids in found.items() if len(ids) > 1}
