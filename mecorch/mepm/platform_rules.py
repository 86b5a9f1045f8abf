"""Pushing an instance's rule set to its host's MEP driver (the platform
driver), and keeping the stored set in step with what was pushed.

The rules an instance runs under come from its AppD (appTrafficRule,
appDNSRule), are kept in the store, and are applied to the host's MEP
driver as one set; the stored set changes only when the driver accepted
the new one.

An instance is taken out of service while its readiness check fails
(mecorch.mepm.health) or its runtime does not run (mecorch.mepm.steering):
`withdraw(host, iid, reason)` removes its rules from the MEP (its DNS answer
and its traffic-rule destination) and records the reason in the stored
set's `outOfService`; `restore(host, iid, reason)` drops the reason and,
when none is left, pushes the stored set again. While it is
withdrawn the stored set still changes (an apply to a new address, an Mp1
rule update, a reconcile round) but nothing is pushed: only `restore` puts
the instance back.

Replicas (`mepm.replicas`): an instance whose FORWARD rule other
instances of its app steer too is applied with its share of them, and
when it joins (apply) or leaves (remove) the others are applied again
with theirs: the ones that stay first, the leaving one's rules removed
last, so at every moment the last replica visited takes what the others
leave (no connection falls through). Changes to one host's replicas are
made one at a time (a lock per host, taken before the ledger's, never
inside it). Taking a replica out of service (readiness) is a leave: its
stored set gets its first out-of-service reason, then
`before_leaving(host, iid)`, then its rules are removed; putting it back is
a join: the last reason dropped, then `apply`.
"""

from __future__ import annotations

import logging
import threading
from typing import Sequence

from mecorch.kernel.errors import Conflict, MecorchError, NotFound
from mecorch.mepm import replicas
from mecorch.mepm.claims import ClaimsLedger, check_targets, rule_values
from mecorch.mepm.inventory import EdgeHost
from mecorch.spec.rules import DnsRule, TrafficRule
from mecorch.kernel.store import Store, TextIn

log = logging.getLogger("mecorch.mepm.rules")


class PlatformRules:
    def __init__(self, store: Store, ledger: ClaimsLedger):
        self.store = store
        self.ledger = ledger
        self._locks: dict[str, threading.RLock] = {}
        self._locks_guard = threading.Lock()

    def _group(self, host_id: str) -> threading.RLock:
        """The lock of the host's replica sets."""
        with self._locks_guard:
            return self._locks.setdefault(host_id, threading.RLock())

    def apply(self, host: EdgeHost, instance_id: str, target_ip: str | None) -> None:
        with self._group(host.id):
            doc = self.stored(instance_id)
            doc.update(hostId=host.id, targetIp=target_ip)
            traffic, dns = rule_values(doc)         # the stored set, read once
            # Against the address the set is applied to now (a set stored before
            # this check existed, or an instance that moved, is refused here).
            check_targets(traffic, target_ip)
            if not in_service(doc):             # withdrawn: stored, pushed by restore
                self.store.put("rules", instance_id, doc)
                return
            before = self.mates(host.id, instance_id)
            self.push(host, instance_id, target_ip, traffic, dns)
            self.store.put("rules", instance_id, doc)
            self.respread(host, before | self.mates(host.id, instance_id))

    def withdraw(self, host: EdgeHost, instance_id: str, reason: str,
                 open_mep: bool = True) -> bool:
        """Take the instance out of service for `reason` (one of REASONS):
        recorded in the stored set's `outOfService`; the first reason makes
        it a leave (its replicas take its part, then the MEP drops its
        rules; the stored set is kept). True when this took it out. The
        caller holds the instance (Lcm.hold). `open_mep` False: an MEP not
        opened yet is not opened for it (mecorch.mepm.fence at an MEPM's
        start; replicas to re-spread open it all the same)."""
        _check_reason(reason)
        with self._group(host.id):
            with self.ledger.lock:
                doc = self.stored(instance_id)
                was_in = in_service(doc)
                reasons = set(doc.get(OUT) or ())
                if reason in reasons:
                    return False
                doc[OUT] = sorted(reasons | {reason})
                self.store.put("rules", instance_id, doc)
            mep = host.mep(opened=open_mep)
            if was_in and mep is not None:
                self.before_leaving(host, instance_id)
                mep.remove_rules(instance_id)
        return was_in

    def restore(self, host: EdgeHost, instance_id: str, reason: str) -> bool:
        """`reason` no longer holds; once no reason is left the instance is
        put back (a join: `apply`, which gives its replicas their new
        parts). True when this put it back. The caller holds the instance
        (Lcm.hold)."""
        _check_reason(reason)
        with self._group(host.id):
            with self.ledger.lock:
                doc = self.stored(instance_id)
                reasons = set(doc.get(OUT) or ())
                if reason not in reasons:
                    return False
                reasons.discard(reason)
                if reasons:
                    doc[OUT] = sorted(reasons)
                else:
                    doc.pop(OUT, None)
                self.store.put("rules", instance_id, doc)
            if reasons:
                return False                # still out for another reason
            if doc.get("hostId") == host.id and doc.get("targetIp"):
                try:
                    self.apply(host, instance_id, doc["targetIp"])
                except BaseException:
                    with self.ledger.lock:      # still out: tried again next time
                        doc = self.stored(instance_id)
                        doc[OUT] = sorted(set(doc.get(OUT) or ()) | {reason})
                        self.store.put("rules", instance_id, doc)
                    raise
        return True

    def remove(self, host: EdgeHost, instance_id: str) -> None:
        mep = host.mep()
        with self._group(host.id):
            if mep is not None:
                self.before_leaving(host, instance_id)
                mep.remove_rules(instance_id)
            self._unplace(instance_id)

    def before_leaving(self, host: EdgeHost, instance_id: str) -> None:
        """The instance's replicas on the host take its part of the
        connections (applied again without it): called, under the host's
        lock, before its rules are removed, by a terminate (`remove`) and
        by a readiness withdrawal. Without it the one visited last before
        it would keep passing connections on to rules that are gone."""
        with self._group(host.id):
            self.respread(host, self.mates(host.id, instance_id), leaving=instance_id)

    def _unplace(self, instance_id: str) -> None:
        """The stored set is no longer applied nor claimed anywhere."""
        with self.ledger.lock:
            doc = self.store.get("rules", instance_id)
            if doc:
                doc["hostId"] = None
                doc["claimHost"] = None
                doc.pop(OUT, None)              # a new deployment starts in service
                self.store.put("rules", instance_id, doc)

    def forget(self, instance_id: str) -> None:
        self.store.delete("rules", instance_id)
        for sub in self.store.list("subscriptions", appInstanceId=instance_id):
            self.store.delete("subscriptions", sub["id"])

    def push(self, host: EdgeHost, instance_id: str, target_ip: str | None,
             traffic: Sequence[TrafficRule], dns: Sequence[DnsRule],
             leaving: str | None = None) -> None:
        """Apply the set to the host's MEP, with the instance's share of
        the replicas it has there (`leaving`: one not counted, whose rules
        are about to go)."""
        for rule in dns:
            if rule.ip_address is None:     # never given a service address
                raise Conflict(f"dnsRule {rule.dns_rule_id} of instance {instance_id} has no "
                               f"ipAddress and no service address was allocated for it")
        mep = host.mep()
        if mep is None:
            if traffic or dns:
                raise Conflict(f"edge host {host.id!r} has no MEP configured for the rules")
            return
        shares = self.shares(host.id, instance_id, [r.to_etsi() for r in traffic], leaving)
        if shares:
            mep.apply_rules(instance_id, target_ip, list(traffic), list(dns), shares)
        else:
            # the call every MEP driver has always had, for a set of its own
            mep.apply_rules(instance_id, target_ip, list(traffic), list(dns))

    # ------------------------------------------------------------ replicas
    def placed(self, host_id: str, leaving: str | None = None,
               app_d_id: str | None = None) -> list[dict]:
        """The stored sets applied on the host (the leaving one's
        excepted); with `app_d_id`, only that app's, selected by SQLite
        (an apply on a host of 1,000 instances decodes its replicas' sets,
        not every one)."""
        match = TextIn(("appDId",), (app_d_id,)) if app_d_id else None
        return [d for d in self.store.list("rules", match, hostId=host_id)
                if d.get("id") != leaving]

    def _app(self, instance_id: str) -> str | None:
        doc = self.store.get("rules", instance_id) or self.store.get("instances", instance_id)
        return (doc or {}).get("appDId")

    def shares(self, host_id: str, instance_id: str, rules: list[dict],
               leaving: str | None = None) -> dict[str, tuple[str, ...]]:
        """{rule id: replica ids} of the instance's rules (ETSI documents)
        on the host: what its MEP driver is told (`replicas.shares`)."""
        app = self._app(instance_id)
        if app is None or not replicas.spreadable(rules):
            return {}           # nothing to share: no listing at all
        return replicas.shares(self.placed(host_id, leaving, app), host_id, instance_id,
                               app, rules)

    def mates(self, host_id: str, instance_id: str) -> set[str]:
        """The in-service replicas the instance's stored set shares a rule with."""
        rules = (self.store.get("rules", instance_id) or {}).get("trafficRules") or []
        return {i for ids in self.shares(host_id, instance_id, rules).values()
                for i in ids} - {instance_id}

    def respread(self, host: EdgeHost, ids: set[str], leaving: str | None = None) -> None:
        """Apply each of `ids` (instances applied on the host, in service)
        again with its share as it is now, in ascending id (the order that
        keeps the driver's jump order sorted). One that fails is logged and
        left to reconciliation (its rules stay in place with the old share,
        which still delivers every connection; `rules_applied` sees the
        difference): the change of the others is not undone for it."""
        with self._group(host.id):
            for iid in sorted(ids):
                doc = self.store.get("rules", iid)
                if not doc or not replicas.in_service(doc, host.id) or iid == leaving:
                    continue
                try:
                    traffic, dns = rule_values(doc)
                    self.push(host, iid, doc.get("targetIp"), traffic, dns, leaving)
                except MecorchError as e:
                    log.warning("replica %s on host %s not given its new share: %s",
                                iid, host.id, e.detail)

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


# Why an instance's rules may be out of service (the stored set's
# `outOfService`, a list): its readiness check fails (mepm.health), its
# runtime is not running (died, stopped by the operator, being restarted:
# mepm.steering), its host lost its MEO (fenced).
OUT = "outOfService"
REASONS = ("readiness", "down", "fenced")


def _check_reason(reason: str) -> None:
    if reason not in REASONS:
        raise ValueError(f"out-of-service reason {reason!r} is not one of {REASONS}")


def in_service(doc: dict | None) -> bool:
    """A stored rule set is in service unless withdrawn for some reason."""
    return not (doc or {}).get(OUT)
