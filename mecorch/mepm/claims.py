"""The claims ledger: which instance holds which service address, port and
DNS name on a host, and where a traffic rule may send traffic.

Where a rule sends traffic: a traffic rule steers (DNATs) only to its own
instance. A `dstInterface.dstIpAddress` other than the instance's own
address (`targetIp`, the first address its deployment got) is a 400 naming
the field and the address; before the instance has an address (an AppD or
instantiate request, an Mp1 PUT while it deploys) no dstIpAddress can be
its own, so any is refused (omit it: the rule then steers to the
instance). Checked on every change (`check_targets`), whether or not the
set claims a host, and again when the set is applied to an address.
Otherwise an app could steer its service address to any address the host
reaches (another app's unpublished container) and read it through the
MEP's forwarding (issue 28, finding 1).

Ownership of addresses and names (the ledger is the store's rule sets that
are *claimed*: from instantiation until termination or rollback): a traffic
rule's destinations must lie in the host's service range (400 naming it);
a destination (address:port/protocol) another instance of the host claims
is a 409 naming that instance; a DNS name belongs to the first instance
that claims it (409), unless every claimant comes from the same app (same
appDId: replicas share a name), and must lie below the host's MEC domain
(`mep.dns_domain`, 400; the bare domain itself is the host's, no app's).
Claims are checked and taken under one lock, at instantiation (before
anything is made) and on every Mp1 PUT (with the apply), so of two
instantiations racing for one address exactly one wins.
"""

from __future__ import annotations

import threading
from typing import Sequence

from mecorch.spec import rules as R
from mecorch.kernel.errors import Conflict, InvalidInput
from mecorch.mepm.inventory import EdgeHost
from mecorch.spec.rules import DnsRule, TrafficRule
from mecorch.kernel.store import Store


class ClaimsLedger:
    def __init__(self, store: Store):
        self.store = store
        # One lock for the rule ledger: claims are checked and taken (and Mp1
        # changes applied) one at a time.
        self.lock = threading.Lock()

    def set_rules(self, instance_id: str, traffic: Sequence[TrafficRule],
                  dns: Sequence[DnsRule], host: EdgeHost | None = None) -> None:
        """Record the instance's rule set, validated values (the planned
        request's), stored as ETSI documents (applied later by `apply`).
        With `host`, the set claims its addresses and names there: checked
        against every other claim of that host and taken atomically
        (InvalidInput / Conflict with nothing recorded)."""
        inst = self.store.get("instances", instance_id) or {}
        doc = {"id": instance_id, "trafficRules": [r.to_etsi() for r in traffic],
               "dnsRules": [r.to_etsi() for r in dns], "hostId": None, "targetIp": None,
               "appDId": inst.get("appDId"), "claimHost": host.id if host else None}
        with self.lock:
            check_targets(traffic, None)
            if host is not None:
                self.check_claims(host, instance_id, traffic, dns, doc["appDId"])
            self.store.put("rules", instance_id, doc)

    def release(self, instance_id: str) -> None:
        """Give up the instance's claims (its rule set is kept, unclaimed).
        Nothing claimed: nothing to do."""
        with self.lock:
            doc = self.store.get("rules", instance_id)
            if doc and doc.get("claimHost"):
                doc["claimHost"] = None
                self.store.put("rules", instance_id, doc)

    # ------------------------------------------------------------ ownership
    def check_claims(self, host: EdgeHost, instance_id: str, traffic: Sequence[TrafficRule],
                     dns: Sequence[DnsRule], app_d_id: str | None) -> None:
        """Refuse a rule set (values) that leaves the host's service range
        or MEC domain, or claims the bare domain (InvalidInput), or takes
        what another instance of the host claims (Conflict naming it).
        Each other claim's stored set is read once. Called with the ledger
        lock held, after `check_targets`."""
        mep = host.section("mep")
        service = mep.get("service_cidr")
        domain = mep.get("dns_domain")
        if service:
            for rule in traffic:
                bad = R.outside(rule, service)
                if bad:
                    raise InvalidInput(
                        f"trafficRule {rule.traffic_rule_id}: destination {bad} is outside "
                        f"the service range {service} of host {host.id} (trafficFilter."
                        f"dstAddress must lie in it)")
        if domain:
            for rule in dns:
                if rule.domain_name == domain.lower().rstrip("."):
                    raise InvalidInput(
                        f"dnsRule {rule.dns_rule_id}: domainName {rule.domain_name} is the MEC "
                        f"domain of host {host.id} itself, which no app may claim (a name "
                        f"below it may be, e.g. app.{rule.domain_name})")
                if not R.below_domain(rule.domain_name, domain):
                    raise InvalidInput(
                        f"dnsRule {rule.dns_rule_id}: domainName {rule.domain_name} is not in "
                        f"the MEC domain {domain} of host {host.id}")
        mine = [d for rule in traffic for d in R.destinations(rule)]
        names = {r.domain_name: r.dns_rule_id for r in dns}
        for other_id, other in self._claims(host.id, instance_id):
            for rule in other["trafficRules"]:
                for theirs in R.destinations(TrafficRule.from_etsi(rule)):
                    for d in mine:
                        where = d.overlap(theirs)
                        if where:
                            raise Conflict(
                                f"trafficRule {d.rule_id}: {where} is steered by instance "
                                f"{other_id} (app {other.get('appDId')}, trafficRule "
                                f"{theirs.rule_id})")
            if app_d_id is not None and other.get("appDId") == app_d_id:
                continue            # the same app's replicas share names
            for rule in other["dnsRules"]:
                name = rule["domainName"]
                if name in names:
                    raise Conflict(
                        f"dnsRule {names[name]}: the name {name} belongs to instance "
                        f"{other_id} (app {other.get('appDId')}); only instances of that "
                        f"app may share it")

    def _claims(self, host_id: str, but: str):
        """(instance id, rule set) of every claim on the host but `but`'s."""
        for doc in self.store.list("rules"):
            iid = doc.get("id")
            if iid == but:
                continue
            claim = doc.get("claimHost", doc.get("hostId"))
            if claim == host_id:
                yield iid, doc


def rule_values(doc: dict) -> tuple[list[TrafficRule], list[DnsRule]]:
    """A stored rule set (ETSI documents) as validated values."""
    return ([TrafficRule.from_etsi(r) for r in doc["trafficRules"]],
            [DnsRule.from_etsi(r) for r in doc["dnsRules"]])


def check_targets(traffic: Sequence[TrafficRule], own: str | None) -> None:
    """Refuse a rule set steering anywhere but to its own instance: every
    dstInterface.dstIpAddress must be `own`, the instance's address
    (InvalidInput naming the rule, the field and the address). Before the
    instance has an address (`own` None) no dstIpAddress is its own."""
    for rule in traffic:
        bad = R.foreign_target(rule, own)
        if bad is None:
            continue
        if own is None:
            raise InvalidInput(
                f"trafficRule {rule.traffic_rule_id}: dstInterface.dstIpAddress {bad} "
                f"(dstIPAddress in an AppD or instantiate request) cannot be the instance's "
                f"own address: it has none yet (a rule steers only to its own instance; omit "
                f"dstIpAddress to steer to it)")
        raise InvalidInput(
            f"trafficRule {rule.traffic_rule_id}: dstInterface.dstIpAddress {bad} is not the "
            f"instance's own address {own} (a rule steers only to its own instance; omit "
            f"dstIpAddress to steer to it)")

