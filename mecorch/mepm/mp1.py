"""The Mp1 calls an app makes about itself (MEC 011 app support): its
traffic and DNS rules, and its termination subscriptions.

An app can read and change only its own rules; every change is validated
(`mecorch.spec.rules`) before anything is applied, checked against the
claims ledger (`mecorch.mepm.claims`), and the stored set changes only
when the driver accepted the new one (`mecorch.mepm.platform_rules`).

An app may hold at most api.mp1_max_subscriptions termination
subscriptions, each with a callback in api.callback_networks (the notices
themselves: `mecorch.mepm.termination`).
"""

from __future__ import annotations

import ipaddress
import json
import threading

from mecorch.kernel import logs, outbound
from mecorch.kernel.errors import InvalidInput, NotFound, PreconditionFailed
from mecorch.mepm.claims import ClaimsLedger, check_targets, rule_values
from mecorch.mepm.inventory import Inventory
from mecorch.mepm.platform_rules import PlatformRules, in_service
from mecorch.spec.rules import DnsRule, TrafficRule, with_service_address
from mecorch.kernel.store import Store
from mecorch.kernel.timeutil import new_id

MP1 = "/mec_app_support/v1"
KINDS = {"traffic_rules": ("trafficRules", "trafficRuleId", TrafficRule),
         "dns_rules": ("dnsRules", "dnsRuleId", DnsRule)}


class Mp1Api:
    def __init__(self, store: Store, inventory: Inventory, ledger: ClaimsLedger,
                 rules: PlatformRules, subs_lock: threading.Lock,
                 callback_networks: list, max_subscriptions: int):
        self.store = store
        self.inventory = inventory
        self.ledger = ledger
        self.rules = rules
        self.subs_lock = subs_lock
        self.callback_networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = \
            callback_networks
        self.max_subscriptions = max_subscriptions

    # ------------------------------------------------------------ Mp1 rules
    def list_rules(self, instance_id: str, kind: str) -> list[dict]:
        return self.rules.stored(instance_id)[KINDS[kind][0]]

    def get_rule(self, instance_id: str, kind: str, rule_id: str) -> dict:
        key, id_field, _ = KINDS[kind]
        for rule in self.rules.stored(instance_id)[key]:
            if rule[id_field] == rule_id:
                return rule
        raise NotFound(f"{kind[:-1].replace('_', ' ')} {rule_id!r} of instance "
                       f"{instance_id} does not exist")

    def put_rule(self, instance_id: str, kind: str, rule_id: str, body,
                 if_match: str | None = None) -> dict:
        """Replace one rule (MEC 011 PUT): validate, apply the whole new set
        to the backend if the instance is deployed, then store it."""
        key, id_field, cls = KINDS[kind]
        current = self.get_rule(instance_id, kind, rule_id)
        if if_match is not None and if_match.strip('"') != etag(current):
            raise PreconditionFailed("the rule changed since it was read (ETag mismatch)")
        new = cls.from_etsi(body, kind[:-1]).to_etsi()
        if new[id_field] != rule_id:
            raise InvalidInput(f"{id_field} in the body ({new[id_field]!r}) differs from the "
                               f"one in the URI ({rule_id!r})")
        with self.ledger.lock:
            doc = self.rules.stored(instance_id)
            placed = doc.get("hostId")
            # the replicas it spreads a rule with before the change
            before = self.rules.mates(placed, instance_id) if placed else set()
            claim = doc.get("claimHost", doc.get("hostId"))
            if doc.get("serviceAddress") and claim:
                # a rule that asks for the service address keeps the one held
                new = _with_address(kind, new, doc["serviceAddress"],
                                    self.inventory.get(claim).section("mep").get("service_cidr"))
            doc[key] = [new if r[id_field] == rule_id else r for r in doc[key]]
            traffic, dns = rule_values(doc)     # the new set, read once
            # Checked (where it sends traffic; then against the other claims)
            # with the lock held, then applied: nothing is applied or stored
            # when refused.
            check_targets(traffic, doc.get("targetIp"))
            if claim:
                self.ledger.check_claims(self.inventory.get(claim), instance_id, traffic, dns,
                                  doc.get("appDId"), bool(doc.get("shareServiceAddress")))
            # withdrawn (failed readiness): stored only, pushed by restore
            if doc.get("hostId") and in_service(doc):
                self.rules.push(self.inventory.get(doc["hostId"]), instance_id, doc["targetIp"],
                           traffic, dns)
            self.store.put("rules", instance_id, doc)
        if placed:
            # replicas it joined or left with the change get their new share
            # (after the ledger's lock: the replicas' lock is never taken in it)
            self.rules.respread(self.inventory.get(placed),
                                before | self.rules.mates(placed, instance_id))
        logs.event("rule.changed", kind=kind[:-1], rule=rule_id, instance=instance_id,
                   host=doc.get("hostId"), state=new.get("state"))
        return new

    # ------------------------------------------------------------ subscriptions
    def subscribe(self, instance_id: str, body) -> dict:
        instance_record(self.store, instance_id)
        if not isinstance(body, dict):
            raise InvalidInput("body must be an AppTerminationNotificationSubscription")
        if body.get("subscriptionType") != "AppTerminationNotificationSubscription":
            raise InvalidInput("subscriptionType must be AppTerminationNotificationSubscription")
        if body.get("appInstanceId", instance_id) != instance_id:
            raise InvalidInput("appInstanceId in the body must be the instance of the URI")
        # Callbacks go only to allowed networks (loopback by default): the
        # MEP must not become a way to reach arbitrary hosts.
        callback = outbound.check_url(body.get("callbackReference"), self.callback_networks,
                                      "callbackReference")
        sid = new_id()
        doc = {"subscriptionType": "AppTerminationNotificationSubscription",
               "callbackReference": callback, "appInstanceId": instance_id,
               "_links": {"self": {"href": _sub_href(instance_id, sid)}}, "id": sid}
        # Capped per instance: each subscription is one POST at termination,
        # and an app must not be able to make that thousands.
        with self.subs_lock:
            have = len(self.store.list("subscriptions", appInstanceId=instance_id,
                                       keep=("id",)))
            if have >= self.max_subscriptions:
                raise InvalidInput(f"app instance {instance_id} already has {have} Mp1 "
                                   f"subscriptions, the most api.mp1_max_subscriptions "
                                   f"({self.max_subscriptions}) allows")
            self.store.put("subscriptions", sid, doc)
        return _public_sub(doc)

    def subscriptions(self, instance_id: str) -> dict:
        instance_record(self.store, instance_id)
        subs = self.store.list("subscriptions", appInstanceId=instance_id)
        return {"_links": {
            "self": {"href": f"{MP1}/applications/{instance_id}/subscriptions"},
            # MEC 011 v2.1.1 names the type `rel` (required); later versions
            # call it subscriptionType: both are given.
            "subscriptions": [{"href": s["_links"]["self"]["href"],
                               "rel": s["subscriptionType"],
                               "subscriptionType": s["subscriptionType"]} for s in subs]}}

    def subscription(self, instance_id: str, sid: str) -> dict:
        doc = self.store.get("subscriptions", sid)
        if doc is None or doc["appInstanceId"] != instance_id:
            raise NotFound(f"subscription {sid!r} of instance {instance_id} does not exist")
        return _public_sub(doc)

    def unsubscribe(self, instance_id: str, sid: str) -> None:
        self.subscription(instance_id, sid)
        self.store.delete("subscriptions", sid)


def _with_address(kind: str, rule: dict, address: str, service_range: str | None) -> dict:
    """The rule (ETSI document) with the instance's service address put
    where it asks for one (`spec.rules.with_service_address`)."""
    if kind == "dns_rules":
        _, dns = with_service_address((), (DnsRule.from_etsi(rule),), address, service_range)
        return dns[0].to_etsi()
    traffic, _ = with_service_address((TrafficRule.from_etsi(rule),), (), address, service_range)
    return traffic[0].to_etsi()


def instance_record(store: Store, instance_id: str) -> dict:
    inst = store.get("instances", instance_id)
    if inst is None:
        raise NotFound(f"app instance {instance_id!r} does not exist")
    return inst


def etag(doc: dict) -> str:
    """A stable entity tag of a rule, for If-Match on PUT."""
    import hashlib
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def _sub_href(instance_id: str, sid: str) -> str:
    return f"{MP1}/applications/{instance_id}/subscriptions/{sid}"


def _public_sub(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k != "id"}

