"""Pushing an instance's rule set to its host's MEP driver (the platform
driver), and keeping the stored set in step with what was pushed.

The rules an instance runs under come from its AppD (appTrafficRule,
appDNSRule), are kept in the store, and are applied to the host's MEP
driver as one set; the stored set changes only when the driver accepted
the new one.

An instance whose readiness check fails (mecorch.mepm.health) is taken out
of service: `withdraw` removes its rules from the MEP (its DNS answer and
its traffic-rule destination) and marks the stored set `"inService": false`;
`restore` pushes the stored set again and clears the mark. While it is
withdrawn the stored set still changes (an apply to a new address, an Mp1
rule update, a reconcile round) but nothing is pushed: only `restore` puts
the instance back.
"""

from __future__ import annotations

from typing import Sequence

from mecorch.kernel.errors import Conflict, NotFound
from mecorch.mepm.claims import ClaimsLedger, check_targets, rule_values
from mecorch.mepm.inventory import EdgeHost
from mecorch.spec.rules import DnsRule, TrafficRule
from mecorch.kernel.store import Store


class PlatformRules:
    def __init__(self, store: Store, ledger: ClaimsLedger):
        self.store = store
        self.ledger = ledger

    def apply(self, host: EdgeHost, instance_id: str, target_ip: str | None) -> None:
        doc = self.stored(instance_id)
        doc.update(hostId=host.id, targetIp=target_ip)
        traffic, dns = rule_values(doc)         # the stored set, read once
        # Against the address the set is applied to now (a set stored before
        # this check existed, or an instance that moved, is refused here).
        check_targets(traffic, target_ip)
        if in_service(doc):
            self.push(host, instance_id, target_ip, traffic, dns)
        self.store.put("rules", instance_id, doc)

    def withdraw(self, host: EdgeHost, instance_id: str, open_mep: bool = True) -> bool:
        """Take the instance out of service: the MEP drops its rules, the
        stored set is kept, marked `inService: false`. False if it was out
        already. The caller holds the instance (Lcm.hold). `open_mep` False:
        an MEP not opened yet is not (mecorch.mepm.fence at start)."""
        with self.ledger.lock:
            doc = self.stored(instance_id)
            if not in_service(doc):
                return False
            mep = host.mep(opened=open_mep)
            if mep is not None:
                mep.remove_rules(instance_id)
            doc["inService"] = False
            self.store.put("rules", instance_id, doc)
        return True

    def restore(self, host: EdgeHost, instance_id: str) -> bool:
        """Put a withdrawn instance back: push its stored set again (if it is
        applied on this host) and clear the mark. False if it was in
        service. The caller holds the instance (Lcm.hold)."""
        with self.ledger.lock:
            doc = self.stored(instance_id)
            if in_service(doc):
                return False
            if doc.get("hostId") == host.id and doc.get("targetIp"):
                traffic, dns = rule_values(doc)
                self.push(host, instance_id, doc["targetIp"], traffic, dns)
            doc.pop("inService", None)
            self.store.put("rules", instance_id, doc)
        return True

    def remove(self, host: EdgeHost, instance_id: str) -> None:
        mep = host.mep()
        if mep is not None:
            mep.remove_rules(instance_id)
        with self.ledger.lock:
            doc = self.store.get("rules", instance_id)
            if doc:
                doc["hostId"] = None
                doc["claimHost"] = None
                doc.pop("inService", None)      # a new deployment starts in service
                self.store.put("rules", instance_id, doc)

    def forget(self, instance_id: str) -> None:
        self.store.delete("rules", instance_id)
        for sub in self.store.list("subscriptions", appInstanceId=instance_id):
            self.store.delete("subscriptions", sub["id"])

    def push(self, host: EdgeHost, instance_id: str, target_ip: str | None,
             traffic: Sequence[TrafficRule], dns: Sequence[DnsRule]) -> None:
        for rule in dns:
            if rule.ip_address is None:     # never given a service address
                raise Conflict(f"dnsRule {rule.dns_rule_id} of instance {instance_id} has no "
                               f"ipAddress and no service address was allocated for it")
        mep = host.mep()
        if mep is None:
            if traffic or dns:
                raise Conflict(f"edge host {host.id!r} has no MEP configured for the rules")
            return
        mep.apply_rules(instance_id, target_ip, list(traffic), list(dns))

    def stored(self, instance_id: str) -> dict:
        """The instance's stored rule set (an empty one if it has none yet;
        NotFound if the instance does not exist)."""
        doc = self.store.get("rules", instance_id)
        if doc is None:
            if self.store.get("instances", instance_id) is None:
                raise NotFound(f"app instance {instance_id!r} does not exist")
            doc = {"id": instance_id, "trafficRules": [], "dnsRules": [], "hostId": None,
                   "targetIp": None}
        return doc


def in_service(doc: dict | None) -> bool:
    """A stored rule set is in service unless withdrawn (`inService` false)."""
    return (doc or {}).get("inService") is not False
