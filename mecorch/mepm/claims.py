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
is a 409 naming that instance, unless the claim is a replica's (the
request's `shareServiceAddress`: same appDId and the same rule, so the
MEP spreads the connections over them, `mepm.replicas`); a DNS name
belongs to the first instance that claims it (409), unless every claimant
comes from the same app (same appDId: replicas share a name), and must be
one the instance may hold there (`spec.dns_names`, 400 naming it): below
the host's MEC domain (`mep.dns_domain`; the bare domain itself is the
host's, no app's), declared by the instance's own package (the names of
its AppD's appDNSRule, recorded on the package as `dnsNames`), or below
one of the host's `mep.dns_allowed_domains`; but a name another app's
instance holds is that app's 409, whether or not this one could hold it.
Claims are checked and taken under one lock, at instantiation (before
anything is made) and on every Mp1 PUT (with the apply), so of two
instantiations racing for one address exactly one wins.

Service addresses the MEP gives (mecorch departure, `spec.rules`
`asks_address`): a rule set that asks for one (a trafficFilter without
dstAddress on a host with a service range, a DNS rule without ipAddress)
is given the lowest address of the host's range that no other claim of
the host holds (a Kubernetes ClusterIP allocator's rule), under the same
lock, so two concurrent deploys never get the same one. It is written into
the stored rules (and kept as `serviceAddress`): Mp1 and `app show` show
it, a restart and the reconciliation keep it, and giving up the claims
(terminate, rollback) frees it. A full range is a 409 naming it. A
replica (shareServiceAddress) that asks for one is given the address its
app's instances on the host were given, if any (so the sample's rules,
unchanged, deploy replicas behind one address); several is a 409 asking
to name one.
"""

from __future__ import annotations

import threading
from typing import Sequence

from mecorch.spec import dns_names, rules as R
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
                  dns: Sequence[DnsRule], host: EdgeHost | None = None,
                  share: bool = False) -> None:
        """Record the instance's rule set, validated values (the planned
        request's), stored as ETSI documents (applied later by `apply`).
        With `host`, the set claims its addresses and names there: checked
        against every other claim of that host and taken atomically
        (InvalidInput / Conflict with nothing recorded). `share`: a replica
        (the request's shareServiceAddress), kept with the set so an Mp1
        change is checked the same way."""
        inst = self.store.get("instances", instance_id) or {}
        with self.lock:
            check_targets(traffic, None)
            address = None
            if host is not None:
                traffic, dns, address = self.allocate(
                    host, instance_id, traffic, dns, inst.get("appDId") if share else None)
                self.check_claims(host, instance_id, traffic, dns, inst.get("appDId"), share)
            doc = {"id": instance_id, "trafficRules": [r.to_etsi() for r in traffic],
                   "dnsRules": [r.to_etsi() for r in dns], "hostId": None, "targetIp": None,
                   "appDId": inst.get("appDId"), "claimHost": host.id if host else None,
                   "serviceAddress": address}
            if share:
                doc["shareServiceAddress"] = True
            self.store.put("rules", instance_id, doc)

    def allocate(self, host: EdgeHost, instance_id: str, traffic: Sequence[TrafficRule],
                 dns: Sequence[DnsRule], replica_of: str | None = None):
        """(traffic, dns, address): the rule set with its service address
        put where it asks for one (address None: it asks for none). The
        address the instance already holds on the host is kept (a retry);
        else, for a replica of app `replica_of`, the one the app's
        instances on the host were given (`_joined`); else the lowest free
        one of the host's range. Conflict naming the range when it is full,
        or the host when it has none. Called with the ledger lock held."""
        service = host.section("mep").get("service_cidr")
        if not R.asks_address(traffic, dns, service):
            return tuple(traffic), tuple(dns), None
        if not service:
            asking = next(r.dns_rule_id for r in dns if r.ip_address is None)
            raise Conflict(
                f"dnsRule {asking}: no ipAddress, so it answers the instance's service "
                f"address, but host {host.id} has no service range (hosts[].mep."
                f"service_cidr) to allocate one from; name the address (ipAddress)")
        version = "IP_V6" if ":" in service else "IP_V4"
        for rule in dns:
            if rule.ip_address is None and rule.ip_address_type != version:
                raise InvalidInput(
                    f"dnsRule {rule.dns_rule_id}: ipAddressType {rule.ip_address_type} asks for "
                    f"the instance's service address, but host {host.id} gives {version} "
                    f"addresses (service range {service})")
        mine = self.store.get("rules", instance_id) or {}
        address = mine.get("serviceAddress") if mine.get("claimHost") == host.id else None
        if address is None and replica_of is not None:
            address = self._joined(host, instance_id, replica_of)
        if address is None:
            held = []
            for _, other in self._claims(host.id, instance_id):
                held += _held(other)
            # the set's own fixed addresses are not given to it twice
            held += R.held_intervals(traffic, dns)
            address = R.lowest_free(service, held)
            if address is None:
                raise Conflict(
                    f"the service range {service} of host {host.id} has no free address "
                    f"left for instance {instance_id} (every one is held by an instance "
                    f"of the host); terminate one, widen hosts[].mep.service_cidr, or "
                    f"name a fixed address")
        traffic, dns = R.with_service_address(traffic, dns, address, service)
        return traffic, dns, address

    def _joined(self, host: EdgeHost, instance_id: str, app_d_id: str) -> str | None:
        """The service address a replica asking for one shares: the one the
        app's instances on the host were given (None: none yet, it is the
        first and gets one of its own). Several: Conflict naming them (the
        request must name the one it joins)."""
        given = sorted({other["serviceAddress"] for _, other in self._claims(host.id, instance_id)
                        if other.get("appDId") == app_d_id and other.get("serviceAddress")})
        if len(given) > 1:
            raise Conflict(
                f"instance {instance_id} asks to share the service address of app {app_d_id} "
                f"on host {host.id}, whose instances there hold several ({', '.join(given)}); "
                f"name the one to share (a trafficFilter dstAddress and DNS ipAddress, or "
                f"`app deploy --replica-of INSTANCE`)")
        return given[0] if given else None

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
                     dns: Sequence[DnsRule], app_d_id: str | None, share: bool = False) -> None:
        """Refuse a rule set (values) that leaves the host's service range
        or names a DNS name the instance may not hold there (InvalidInput,
        `check_names`), or takes what another instance of the host claims
        (Conflict naming it; first for a name another app holds). Each
        other claim's stored set is read once. Called with the ledger lock
        held, after `check_targets`."""
        service = host.section("mep").get("service_cidr")
        if service:
            for rule in traffic:
                bad = R.outside(rule, service)
                if bad:
                    raise InvalidInput(
                        f"trafficRule {rule.traffic_rule_id}: destination {bad} is outside "
                        f"the service range {service} of host {host.id} (trafficFilter."
                        f"dstAddress must lie in it)")
        for rule in dns:
            if rule.ip_address is None:
                raise InvalidInput(f"dnsRule {rule.dns_rule_id}: ipAddress is required here")
        others = list(self._claims(host.id, instance_id))
        # a name another app holds is refused as that app's (the 409
        # below), whether or not this one could hold it
        theirs = {rule["domainName"] for _, other in others
                  if app_d_id is None or other.get("appDId") != app_d_id
                  for rule in other.get("dnsRules") or []}
        self.check_names(host, instance_id, [r for r in dns if r.domain_name not in theirs])
        taken = R.claim_conflict(traffic, dns, app_d_id, others, share)
        if taken:
            raise Conflict(taken)

    def check_names(self, host: EdgeHost, instance_id: str, dns: Sequence[DnsRule],
                    pkg: dict | None = None) -> None:
        """Refuse (InvalidInput naming the name, the host's domains and the
        package) a DNS rule naming what the instance may not hold on the
        host (`spec.dns_names`): not below the MEC domain, not below one
        of the host's allowed domains, not granted by its package (`pkg`,
        by default the one the instance was made from)."""
        mep = host.section("mep")
        domain = mep.get("dns_domain")
        if domain is None or not dns:
            return
        if pkg is None:
            pkg = self._package_of(instance_id)
        grant = dns_names.granted(pkg)
        for rule in dns:
            why = dns_names.refusal(rule.dns_rule_id, rule.domain_name, host.id, domain,
                                    mep.get("dns_allowed_domains") or (), grant,
                                    pkg["id"] if pkg else None)
            if why:
                raise InvalidInput(why)

    def _package_of(self, instance_id: str) -> dict | None:
        """The package record an instance was made from (its appPkgId; one
        from before package versions: the newest onboarded of its app)."""
        inst = self.store.get("instances", instance_id) or {}
        if inst.get("appPkgId"):
            return self.store.get("packages", inst["appPkgId"])
        if not inst.get("appDId"):
            return None
        docs = self.store.list("packages", appDId=inst["appDId"], onboardingState="ONBOARDED")
        return docs[-1] if docs else None

    def _claims(self, host_id: str, but: str):
        """(instance id, rule set) of every claim on the host but `but`'s."""
        for doc in self.store.list("rules"):
            iid = doc.get("id")
            if iid == but:
                continue
            claim = doc.get("claimHost", doc.get("hostId"))
            if claim == host_id:
                yield iid, doc


def _held(doc: dict) -> list[tuple[int, int, int]]:
    """The address intervals a stored rule set holds: its filters'
    dstAddresses, its DNS rules' ipAddresses and its service address (its
    own even if an Mp1 PUT moved its rules off it). Read from the stored,
    normalised documents: not parsed again."""
    values = [a for rule in doc.get("trafficRules") or []
              for flt in rule.get("trafficFilter") or [] for a in flt.get("dstAddress") or []]
    values += [r["ipAddress"] for r in doc.get("dnsRules") or [] if r.get("ipAddress")]
    if doc.get("serviceAddress"):
        values.append(doc["serviceAddress"])
    return [R.address_interval(v) for v in values]


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

