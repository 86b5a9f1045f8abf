"""The MEP service: each instance's traffic and DNS rules, the Mp1 calls an
app makes about itself (MEC 011 app support), and termination notices.

The rules an instance runs under come from its AppD (appTrafficRule,
appDNSRule), are kept in the store, and are applied to the host's MEP
driver as one set. An app can read and change only its own rules; every
change is validated (`mecorch.spec.rules`) before anything is applied, and the
stored set changes only when the driver accepted the new one.

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

Each instantiation issues the instance an Mp1 token (random; only its
SHA-256 is stored, in the instance record as `_mp1Token`) that the app gets
in its environment (`app_env`); the API lets that token reach the
instance's own Mp1 resources and nothing else (mecorch.kernel.http).

An app may hold at most api.mp1_max_subscriptions termination
subscriptions, each with a callback in api.callback_networks. A graceful
termination posts the notices in parallel through mecorch.kernel.outbound (no
redirect followed, each POST bounded as a whole) and waits for
confirm_termination; notices and wait together never outlast the graceful
timeout, and a FORCEFUL terminate cuts the wait short (mecorch.mepm.lcm).
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import ipaddress
import json
import logging
import secrets
import threading
import time
from typing import Sequence

from mecorch.kernel import logs, outbound
from mecorch.spec import rules as R
from mecorch.kernel.errors import (
    Conflict, InvalidInput, MecorchError, NotFound, PreconditionFailed)
from mecorch.driverapi.contracts import DnsOnAppNetworks
from mecorch.mepm.inventory import EdgeHost, Inventory
from mecorch.spec.rules import DnsRule, TrafficRule
from mecorch.kernel.states import DeploymentType
from mecorch.kernel.store import Store
from mecorch.kernel.timeutil import new_id

log = logging.getLogger("mecorch.mep")
MP1 = "/mec_app_support/v1"
CANCEL_POLL_S = 0.1         # how soon a superseded termination stops waiting
KINDS = {"traffic_rules": ("trafficRules", "trafficRuleId", TrafficRule),
         "dns_rules": ("dnsRules", "dnsRuleId", DnsRule)}


class MepService:
    def __init__(self, store: Store, inventory: Inventory, cfg: dict):
        self.store = store
        self.inventory = inventory
        self.callback_networks = [ipaddress.ip_network(n)
                                  for n in cfg["api"]["callback_networks"]]
        # Where apps reach Mp1: api.mp1_url if set, else the listen address
        # (loopback by default, which a bridged container cannot reach).
        self.cfg_mp1_url = cfg["api"].get("mp1_url")
        self.mp1_url = self.cfg_mp1_url or f"http://{cfg['api']['listen']}{MP1}"
        self.mp1_port = int(cfg["api"]["listen"].rpartition(":")[2] or 8080)
        # App-network gateway addresses Mp1 is served on (mecorch.api.serve_app_networks
        # adds them): an app on such a network is given that address.
        self.mp1_gateways: set[str] = set()
        # One lock for the rule ledger: claims are checked and taken (and Mp1
        # changes applied) one at a time.
        self._lock = threading.Lock()
        # Mp1 subscriptions and the terminations waiting on them (not the
        # ledger's lock: a notice never waits behind a rule change)
        self._subs_lock = threading.Lock()
        self._termination: dict[str, _TerminationWait] = {}
        self.max_subscriptions = int(cfg["api"]["mp1_max_subscriptions"])
        self.notify_timeout_s = float(cfg["api"]["notify_timeout_s"])

    # ------------------------------------------------------------ rule sets
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
        with self._lock:
            check_targets(traffic, None)
            if host is not None:
                self.check_claims(host, instance_id, traffic, dns, doc["appDId"])
            self.store.put("rules", instance_id, doc)

    def release(self, instance_id: str) -> None:
        """Give up the instance's claims (its rule set is kept, unclaimed).
        Nothing claimed: nothing to do."""
        with self._lock:
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

    def apply(self, host: EdgeHost, instance_id: str, target_ip: str | None) -> None:
        doc = self._rules(instance_id)
        doc.update(hostId=host.id, targetIp=target_ip)
        traffic, dns = rule_values(doc)         # the stored set, read once
        # Against the address the set is applied to now (a set stored before
        # this check existed, or an instance that moved, is refused here).
        check_targets(traffic, target_ip)
        self._push(host, instance_id, target_ip, traffic, dns)
        self.store.put("rules", instance_id, doc)

    def remove(self, host: EdgeHost, instance_id: str) -> None:
        mep = host.mep()
        if mep is not None:
            mep.remove_rules(instance_id)
        with self._lock:
            doc = self.store.get("rules", instance_id)
            if doc:
                doc["hostId"] = None
                doc["claimHost"] = None
                self.store.put("rules", instance_id, doc)

    def forget(self, instance_id: str) -> None:
        self.store.delete("rules", instance_id)
        for sub in self.store.list("subscriptions", appInstanceId=instance_id):
            self.store.delete("subscriptions", sub["id"])

    def _push(self, host: EdgeHost, instance_id: str, target_ip: str | None,
              traffic: Sequence[TrafficRule], dns: Sequence[DnsRule]) -> None:
        mep = host.mep()
        if mep is None:
            if traffic or dns:
                raise Conflict(f"edge host {host.id!r} has no MEP configured for the rules")
            return
        mep.apply_rules(instance_id, target_ip, list(traffic), list(dns))

    def _rules(self, instance_id: str) -> dict:
        doc = self.store.get("rules", instance_id)
        if doc is None:
            if self.store.get("instances", instance_id) is None:
                raise NotFound(f"app instance {instance_id!r} does not exist")
            doc = {"id": instance_id, "trafficRules": [], "dnsRules": [], "hostId": None,
                   "targetIp": None}
        return doc

    # ------------------------------------------------------------ Mp1 tokens
    @staticmethod
    def new_app_token() -> tuple[str, str]:
        """(token, what to store: its SHA-256). The token is 256 random
        bits, so a fast hash is enough: there is nothing to brute-force."""
        token = secrets.token_urlsafe(32)
        return token, token_digest(token)

    def app_env(self, instance_id: str, token: str, host: EdgeHost | None = None,
                manner: DeploymentType | None = None) -> dict[str, str]:
        """What an app instance is told about its Mp1 (environment variables
        of a container; SMBIOS OEM strings of a VM)."""
        return {"MEC_APP_INSTANCE_ID": instance_id, "MEC_APP_TOKEN": token,
                "MEC_MP1_URL": self.app_mp1_url(host, manner)}

    def app_mp1_url(self, host: EdgeHost | None, manner: DeploymentType | None) -> str:
        """api.mp1_url when set; else the gateway of the app's network when
        Mp1 is served there; else the listen address."""
        gateway = self.gateway(host, manner) if host and manner and \
            not self.cfg_mp1_url else None
        if gateway and gateway in self.mp1_gateways:
            return f"http://{gateway}:{self.mp1_port}{MP1}"
        return self.mp1_url

    @staticmethod
    def gateway(host: EdgeHost, manner: DeploymentType) -> str | None:
        """The host's address on the app network of `manner`, or None."""
        if not host.has(manner):
            return None
        try:
            return host.compute(manner).app_gateway()
        except MecorchError as e:
            log.warning("no gateway of the %s network of host %s: %s", manner.value,
                        host.id, e.detail)
            return None

    def app_gateways(self) -> list[str]:
        """Every host's app-network gateway addresses (where Mp1 and DNS are
        served to apps)."""
        found = []
        for host in self.inventory.hosts.values():
            for manner in DeploymentType:
                gw = self.gateway(host, manner)
                if gw and gw not in found:
                    found.append(gw)
        return found

    def serve_dns_everywhere(self) -> None:
        """`serve_dns` on every host with a MEP; a failure is logged (the
        rules still work on the MEP's own listener)."""
        for host in self.inventory.hosts.values():
            if host.section("mep"):
                try:
                    self.serve_dns(host)
                except MecorchError as e:
                    log.warning("DNS not served on host %s's app networks: %s", host.id,
                                e.detail)

    def serve_dns(self, host: EdgeHost) -> None:
        """Have the host's MEP answer DNS on its app-network gateways too
        (and its data-plane address, which the MEP knows from its config).
        A MEP without that ability (no `DnsOnAppNetworks`: a fake) is left
        alone."""
        mep = host.mep()
        if isinstance(mep, DnsOnAppNetworks):
            mep.serve_dns_on([gw for gw in (self.gateway(host, m) for m in DeploymentType) if gw])

    def app_token_owner(self, token: str) -> str | None:
        """The instance an Mp1 token was issued to (and not yet revoked by
        its termination), or None."""
        digest = token_digest(token)
        for inst in self.store.list("instances", keep=("id", "_mp1Token")):
            stored = inst.get("_mp1Token")
            if stored and hmac.compare_digest(stored, digest):
                return inst["id"]
        return None

    # ------------------------------------------------------------ Mp1 rules
    def list_rules(self, instance_id: str, kind: str) -> list[dict]:
        return self._rules(instance_id)[KINDS[kind][0]]

    def get_rule(self, instance_id: str, kind: str, rule_id: str) -> dict:
        key, id_field, _ = KINDS[kind]
        for rule in self._rules(instance_id)[key]:
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
        with self._lock:
            doc = self._rules(instance_id)
            doc[key] = [new if r[id_field] == rule_id else r for r in doc[key]]
            traffic, dns = rule_values(doc)     # the new set, read once
            claim = doc.get("claimHost", doc.get("hostId"))
            # Checked (where it sends traffic; then against the other claims)
            # with the lock held, then applied: nothing is applied or stored
            # when refused.
            check_targets(traffic, doc.get("targetIp"))
            if claim:
                self.check_claims(self.inventory.get(claim), instance_id, traffic, dns,
                                  doc.get("appDId"))
            if doc.get("hostId"):
                self._push(self.inventory.get(doc["hostId"]), instance_id, doc["targetIp"],
                           traffic, dns)
            self.store.put("rules", instance_id, doc)
        logs.event("rule.changed", kind=kind[:-1], rule=rule_id, instance=instance_id,
                   host=doc.get("hostId"), state=new.get("state"))
        return new

    # ------------------------------------------------------------ subscriptions
    def subscribe(self, instance_id: str, body) -> dict:
        self._instance(instance_id)
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
        with self._subs_lock:
            have = len(self.store.list("subscriptions", appInstanceId=instance_id,
                                       keep=("id",)))
            if have >= self.max_subscriptions:
                raise InvalidInput(f"app instance {instance_id} already has {have} Mp1 "
                                   f"subscriptions, the most api.mp1_max_subscriptions "
                                   f"({self.max_subscriptions}) allows")
            self.store.put("subscriptions", sid, doc)
        return _public_sub(doc)

    def subscriptions(self, instance_id: str) -> dict:
        self._instance(instance_id)
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

    # ------------------------------------------------------------ termination
    def notify_termination(self, instance_id: str, timeout_s: float,
                           action: str = "TERMINATING",
                           cancel: threading.Event | None = None) -> bool:
        """Send AppTerminationNotification to the app's subscriptions and
        wait for confirm_termination. True if confirmed; no subscription, or
        none that took its notice, means nothing to wait for (False).

        All of it, the notices and the wait, ends within `timeout_s` (the
        graceful timeout): the notices are posted in parallel, each bounded
        by the time left (and api.notify_timeout_s) as a whole, so no
        subscriber, however slow, holds the termination longer. `cancel`
        set (a FORCEFUL terminate superseding this one) ends the wait
        within CANCEL_POLL_S (False)."""
        subs = self.store.list("subscriptions", appInstanceId=instance_id)
        if not subs or timeout_s <= 0:
            return False
        end = time.monotonic() + timeout_s
        wait = _TerminationWait()
        with self._subs_lock:
            self._termination[instance_id] = wait
        try:
            for sub in subs:
                threading.Thread(target=self._notice, args=(instance_id, sub, action,
                                                            timeout_s, end, wait),
                                 name=f"mp1-notice-{instance_id[:8]}", daemon=True).start()
            while not wait.confirmed:
                left = end - time.monotonic()
                if left <= 0 or (cancel is not None and cancel.is_set()):
                    return False
                if wait.finished == len(subs) and not wait.delivered:
                    return False            # nobody took the notice: nobody will confirm
                wait.wake.wait(min(left, CANCEL_POLL_S))
                wait.wake.clear()
            return True
        finally:
            with self._subs_lock:
                self._termination.pop(instance_id, None)

    def _notice(self, instance_id: str, sub: dict, action: str, timeout_s: float,
                end: float, wait: "_TerminationWait") -> None:
        """POST one termination notice (its own thread), through
        mecorch.kernel.outbound: the callback checked again, no redirect followed
        (a 3xx is a notice not taken), the whole POST bounded by the
        graceful deadline."""
        url = sub["callbackReference"]
        note = {"notificationType": "AppTerminationNotification",
                "operationAction": action, "maxGracefulTimeout": int(timeout_s),
                "_links": {"subscription": {"href": sub["_links"]["self"]["href"]},
                           "confirmTermination": {
                               "href": f"{MP1}/applications/{instance_id}/confirm_termination"}}}
        delivered = False
        try:
            url = outbound.check_url(url, self.callback_networks, "callbackReference")
            answer = outbound.request(url, "POST",
                                      min(self.notify_timeout_s, end - time.monotonic()),
                                      json.dumps(note).encode(),
                                      {"Content-Type": "application/json"})
            delivered = 200 <= answer.status < 300
            if not delivered:
                log.warning("termination notice to %s answered HTTP %d (redirects are not "
                            "followed)", url, answer.status)
        except InvalidInput as e:
            log.warning("termination notice not sent: %s", e.detail)
        except (OSError, http.client.HTTPException) as e:
            log.warning("termination notice to %s failed: %s", url, e)
        finally:
            with self._subs_lock:
                wait.finished += 1
                wait.delivered += delivered
            wait.wake.set()

    def confirm_termination(self, instance_id: str, body) -> None:
        self._instance(instance_id)
        if not isinstance(body, dict) or body.get("operationAction") not in ("TERMINATING",
                                                                              "STOPPING"):
            raise InvalidInput("operationAction must be TERMINATING or STOPPING")
        with self._subs_lock:
            wait = self._termination.get(instance_id)
        if wait is None:
            raise Conflict(f"no termination of instance {instance_id} is in progress")
        wait.confirmed = True
        wait.wake.set()

    def confirm_ready(self, instance_id: str, body) -> None:
        inst = self._instance(instance_id)
        if not isinstance(body, dict) or body.get("indication") != "READY":
            raise InvalidInput("indication must be READY")
        inst["_ready"] = True
        self.store.put("instances", instance_id, inst)

    # ------------------------------------------------------------ helpers
    def _instance(self, instance_id: str) -> dict:
        inst = self.store.get("instances", instance_id)
        if inst is None:
            raise NotFound(f"app instance {instance_id!r} does not exist")
        return inst


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


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def etag(doc: dict) -> str:
    """A stable entity tag of a rule, for If-Match on PUT."""
    import hashlib
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def _sub_href(instance_id: str, sid: str) -> str:
    return f"{MP1}/applications/{instance_id}/subscriptions/{sid}"


def _public_sub(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k != "id"}


class _TerminationWait:
    """One notify_termination under way: what its notice threads and
    confirm_termination tell it (counters changed under MepService._subs_lock)."""

    def __init__(self):
        self.finished = 0           # notices whose POST ended, taken or not
        self.delivered = 0          # of them, answered 2xx
        self.confirmed = False
        self.wake = threading.Event()
