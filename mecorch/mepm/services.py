"""The MEC 011 service registry of a host engine's apps
(/mec_service_mgmt/v1): an app publishes its services, every app of the
MEPM discovers them and is told when they come and go.

Ownership: an app registers, changes and deletes only its own services
(its Mp1 token on its own `applications/{appInstanceId}` routes; another
app's: 403 at the HTTP layer). Discovery (`services`) is open to every app
of the MEPM and to its operator.

A service's state follows its provider: the state the provider asked for
(`ServiceInfo.state`) is shown only while the provider is in service (its
rules are not withdrawn: its runtime runs, its readiness check passes,
its host is not fenced: mecorch.mepm.platform_rules); otherwise INACTIVE.
When the provider is terminated its services are removed. Each change is
an availability notification (ADDED, STATE_CHANGED, ATTRIBUTES_CHANGED,
REMOVED) to the subscriptions whose filteringCriteria match, delivered by
the stored, ordered, retried sender of the LCM notifications
(mecorch.notifications.sender) from a table of its own.

Service ids are uuid4 and never reused: a deleted service is kept as a
tombstone (a DELETE of it again is success) until its provider's record is
deleted. Everything is in the store: an MEPM restart keeps the registry,
its subscriptions and the notifications not yet delivered.

Locality (mecorch's reading of MEC 011): a service's scopeOfLocality is
MEC_HOST unless the provider says otherwise; it is local to an app on the
same edge host, or to every app of the MEPM for MEC_SYSTEM (the other
scopes, which name zones and NFVI nodes mecorch does not model, count as
MEC_HOST). `isLocal` is given relative to the app asking (absent for an
operator), and a consumedLocalOnly service is shown only to the apps it is
local to.
"""

from __future__ import annotations

import ipaddress
import logging
import threading

from mecorch.kernel import logs, outbound
from mecorch.kernel.errors import Forbidden, InvalidInput, NotFound, PreconditionFailed
from mecorch.kernel.states import InstantiationState
from mecorch.kernel.store import Store
from mecorch.kernel.timeutil import new_id
from mecorch.mepm import mp1
from mecorch.mepm.platform_rules import in_service
from mecorch.notifications.sender import Notifier
from mecorch.spec.services import (
    SUBSCRIPTION_TYPE, Criteria, Discovery, ServiceInfo, subscription_request)

log = logging.getLogger("mecorch.services")

SERVICE_MGMT = "/mec_service_mgmt/v1"
# ServiceAvailabilityNotification.notificationType: MEC 011 v2.1.1's file
# says it "Shall be set to SerAvailabilityNotificationSubscription" (later
# versions say SerAvailabilityNotification): the file is followed.
NOTIFICATION_TYPE = "SerAvailabilityNotificationSubscription"
# The one transport the platform offers: none of its own (no message bus);
# a provider serves REST over HTTP on its own addresses and says where in
# its ServiceInfo's transportInfo.endpoint.
TRANSPORTS = ({"id": "rest-http", "name": "REST", "type": "REST_HTTP", "protocol": "HTTP",
               "version": "1.1",
               "description": "REST over HTTP, served by the providing app on its own "
                              "addresses (its service address, DNS name or app-network "
                              "address): the platform relays nothing",
               "endpoint": {"uris": []}, "security": {}},)


class ServiceRegistry:
    def __init__(self, store: Store, cfg: dict, max_services: int, max_subscriptions: int):
        self.store = store
        self.max_services = max_services
        self.max_subscriptions = max_subscriptions
        self.callback_networks = [ipaddress.ip_network(n)
                                  for n in cfg["api"]["callback_networks"]]
        self._lock = threading.RLock()
        self.notifier = Notifier(store, cfg, self._subscription, self._sharing,
                                 self._mark_failing, self._drop, outbox="service_outbox")

    def start(self) -> None:
        self.notifier.start()

    def stop(self) -> None:
        self.notifier.stop()

    # ------------------------------------------------------------ a provider's own
    def register(self, instance_id: str, body) -> dict:
        inst = self._provider(instance_id)
        info = ServiceInfo.parse(body)
        if body.get("serInstanceId") is not None:      # a dict: parsed above
            raise InvalidInput("serInstanceId is assigned by the MEC platform: leave it out "
                               "of a registration")
        with self._lock:
            mine = self._records(instance_id)
            same = [r for r in mine if r["info"]["serName"] == info.ser_name]
            if same:
                raise InvalidInput(f"app instance {instance_id} has registered serName "
                                   f"{info.ser_name!r} already (serInstanceId "
                                   f"{same[0]['id']}): change it by PUT")
            if len(mine) >= self.max_services:
                raise InvalidInput(f"app instance {instance_id} already has {len(mine)} "
                                   f"services, the most api.mp1_max_services "
                                   f"({self.max_services}) allows")
            sid = new_id()
            rec = {"id": sid, "appInstanceId": instance_id, "hostId": inst.get("hostId"),
                   "info": info.to_record(), "shown": None}
            rec["shown"] = self._state(rec)
            self.store.put("services", sid, rec)
            self._notify(rec, "ADDED")
        logs.event("service.registered", instance=instance_id, service=sid,
                   name=info.ser_name)
        return self.view(rec, instance_id)

    def update(self, instance_id: str, service_id: str, body,
               if_match: str | None = None) -> dict:
        self._provider(instance_id)
        info = ServiceInfo.parse(body)
        given = body.get("serInstanceId")
        if given is not None and given != service_id:
            raise InvalidInput(f"serInstanceId in the body ({str(given)[:64]!r}) differs from "
                               f"the one in the URI ({service_id!r})")
        with self._lock:
            rec = self._own(instance_id, service_id)
            if if_match is not None and if_match.strip('"') != etag(self.view(rec)):
                raise PreconditionFailed("the service changed since it was read "
                                         "(ETag mismatch)")
            old, was = ServiceInfo.from_record(rec["info"]), rec["shown"]
            rec["info"] = info.to_record()
            rec["shown"] = self._state(rec)
            self.store.put("services", service_id, rec)
            if not info.same_but_state(old):
                self._notify(rec, "ATTRIBUTES_CHANGED")
            elif rec["shown"] != was:
                self._notify(rec, "STATE_CHANGED")
        return self.view(rec, instance_id)

    def delete(self, instance_id: str, service_id: str) -> None:
        """Deleting a service already deleted is success (its tombstone)."""
        with self._lock:
            rec = self.store.get("services", service_id)
            if rec is None or rec["appInstanceId"] != instance_id:
                raise NotFound(f"service {service_id!r} of app instance {instance_id} "
                               "does not exist")
            if not rec.get("deleted"):
                self._remove(rec)

    def own(self, instance_id: str, query: dict[str, list[str]]) -> list[dict]:
        """The app's own services (`applications/{id}/services`), filtered
        as discovery is."""
        self._instance(instance_id)
        wanted = Discovery.parse(query)
        return [self.view(r, instance_id) for r in self._records(instance_id)
                if wanted.matches(r["id"], self._info(r), True)]

    def own_one(self, instance_id: str, service_id: str) -> dict:
        self._instance(instance_id)
        with self._lock:
            return self.view(self._own(instance_id, service_id), instance_id)

    # ------------------------------------------------------------ discovery
    def discover(self, query: dict[str, list[str]], consumer: str | None) -> list[dict]:
        """`services`: every live service the asking app may see (an
        operator: all), filtered."""
        wanted = Discovery.parse(query)
        if consumer is None and wanted.is_local is not None:
            raise InvalidInput("is_local is relative to the app asking: it needs an app's "
                               "Mp1 token")
        host = self._host_of(consumer)
        out = []
        for rec in self._records():
            local = self._local(rec, host) if consumer else True
            if self._info(rec).consumed_local_only and not local:
                continue
            if wanted.matches(rec["id"], self._info(rec), local):
                out.append(self.view(rec, consumer))
        return out

    def of_host(self, host_id: str) -> list[dict]:
        """Every live service of one edge host, as its operator sees them."""
        return [self.view(r) for r in self._records() if r.get("hostId") == host_id]

    def one(self, service_id: str, consumer: str | None) -> dict:
        rec = self.store.get("services", service_id)
        if rec is None or rec.get("deleted") or (
                consumer and self._info(rec).consumed_local_only
                and not self._local(rec, self._host_of(consumer))):
            raise NotFound(f"service {service_id!r} does not exist")
        return self.view(rec, consumer)

    def view(self, rec: dict, consumer: str | None = None) -> dict:
        local = self._local(rec, self._host_of(consumer)) if consumer else None
        return self._info(rec).to_etsi(rec["id"], rec["shown"], local)

    # ------------------------------------------------------------ the provider's life
    def provider_changed(self, instance_id: str) -> None:
        """The provider went out of service or came back: its services'
        shown state follows (STATE_CHANGED where it changed)."""
        with self._lock:
            for rec in self._records(instance_id):
                state = self._state(rec)
                if state != rec["shown"]:
                    rec["shown"] = state
                    self.store.put("services", rec["id"], rec)
                    self._notify(rec, "STATE_CHANGED")

    def provider_gone(self, instance_id: str) -> None:
        """The provider no longer runs on its host (terminated, rolled
        back): its services are removed (REMOVED) and its own availability
        subscriptions end (nothing is left to notify)."""
        with self._lock:
            for rec in self._records(instance_id):
                self._remove(rec)
            self._end_subscriptions(instance_id)

    def forget(self, instance_id: str) -> None:
        """The provider's record is deleted: its tombstones go too."""
        with self._lock:
            self.provider_gone(instance_id)
            for rec in self.store.list("services", appInstanceId=instance_id):
                self.store.delete("services", rec["id"])

    # ------------------------------------------------------------ subscriptions
    def subscribe(self, instance_id: str, body) -> dict:
        self._instance(instance_id)
        callback, criteria = subscription_request(body, instance_id)
        # Callbacks only to allowed networks (loopback by default), as the
        # other Mp1 and LCM callbacks.
        callback = outbound.check_url(callback, self.callback_networks, "callbackReference")
        sid = new_id()
        doc = {"id": sid, "appInstanceId": instance_id, "callbackUri": callback,
               "filteringCriteria": criteria.document}
        with self._lock:
            have = len(self.store.list("service_subscriptions", appInstanceId=instance_id,
                                       keep=("id",)))
            if have >= self.max_subscriptions:
                raise InvalidInput(f"app instance {instance_id} already has {have} service "
                                   f"availability subscriptions, the most "
                                   f"api.mp1_max_subscriptions ({self.max_subscriptions}) "
                                   "allows")
            self.store.put("service_subscriptions", sid, doc)
        return subscription_view(doc)

    def subscriptions(self, instance_id: str) -> dict:
        self._instance(instance_id)
        subs = self.store.list("service_subscriptions", appInstanceId=instance_id)
        return {"_links": {
            "self": {"href": f"{SERVICE_MGMT}/applications/{instance_id}/subscriptions"},
            "subscriptions": [{"href": _sub_href(s), "rel": SUBSCRIPTION_TYPE} for s in subs]}}

    def subscription(self, instance_id: str, sub_id: str) -> dict:
        self._instance(instance_id)
        doc = self.store.get("service_subscriptions", sub_id)
        if doc is None or doc["appInstanceId"] != instance_id:
            raise NotFound(f"subscription {sub_id!r} of app instance {instance_id} "
                           "does not exist")
        return subscription_view(doc)

    def unsubscribe(self, instance_id: str, sub_id: str) -> None:
        self.subscription(instance_id, sub_id)
        with self._lock:
            self.store.delete("service_subscriptions", sub_id)
        self.notifier.forget(sub_id)

    # ------------------------------------------------------------ inside
    def _instance(self, instance_id: str) -> dict:
        inst = self.store.get("instances", instance_id)
        if inst is None:
            raise NotFound(f"app instance {instance_id!r} does not exist")
        return inst

    def _provider(self, instance_id: str) -> dict:
        """Only an instantiated app provides services (ETSI's 403: not
        allowed in the resource's current status)."""
        inst = self._instance(instance_id)
        if inst.get("instantiationState") != InstantiationState.INSTANTIATED.value:
            raise Forbidden(f"app instance {instance_id} is "
                            f"{inst.get('instantiationState')}: only an instantiated app "
                            "provides services")
        return inst

    def _records(self, instance_id: str | None = None) -> list[dict]:
        rows = self.store.list("services", appInstanceId=instance_id) \
            if instance_id is not None else self.store.list("services")
        return [r for r in rows if not r.get("deleted")]

    def _own(self, instance_id: str, service_id: str) -> dict:
        rec = self.store.get("services", service_id)
        if rec is None or rec.get("deleted") or rec["appInstanceId"] != instance_id:
            raise NotFound(f"service {service_id!r} of app instance {instance_id} "
                           "does not exist")
        return rec

    @staticmethod
    def _info(rec: dict) -> ServiceInfo:
        return ServiceInfo.from_record(rec["info"])

    def _state(self, rec: dict) -> str:
        """ACTIVE only when the provider asked for it and is in service."""
        if rec["info"]["state"] != "ACTIVE":
            return "INACTIVE"
        inst = self.store.get("instances", rec["appInstanceId"])
        if inst is None or inst.get("instantiationState") != \
                InstantiationState.INSTANTIATED.value:
            return "INACTIVE"
        return "ACTIVE" if in_service(self.store.get("rules", rec["appInstanceId"])) \
            else "INACTIVE"

    def _host_of(self, instance_id: str | None) -> str | None:
        if instance_id is None:
            return None
        return (self.store.get("instances", instance_id) or {}).get("hostId")

    def _local(self, rec: dict, host: str | None) -> bool:
        if self._info(rec).scope_of_locality == "MEC_SYSTEM":
            return True
        return host is not None and rec.get("hostId") == host

    def _remove(self, rec: dict) -> None:
        rec["deleted"] = True
        rec["shown"] = "INACTIVE"
        self.store.put("services", rec["id"], rec)
        self._notify(rec, "REMOVED")
        logs.event("service.removed", instance=rec["appInstanceId"], service=rec["id"])

    def _end_subscriptions(self, instance_id: str) -> None:
        for doc in self.store.list("service_subscriptions", appInstanceId=instance_id):
            self.store.delete("service_subscriptions", doc["id"])
            self.notifier.forget(doc["id"])

    def _notify(self, rec: dict, change: str) -> None:
        """Queue a ServiceAvailabilityNotification to each subscription the
        change matches (its state: after the change). Called with the lock
        held, so notifications are queued in the order of the changes."""
        info = self._info(rec)
        for sub in self.store.list("service_subscriptions"):
            consumer_host = self._host_of(sub["appInstanceId"])
            local = self._local(rec, consumer_host)
            if info.consumed_local_only and not local:
                continue
            criteria = Criteria.parse(sub.get("filteringCriteria"))
            if not criteria.matches(rec["id"], info, rec["shown"], local):
                continue
            nid = new_id()
            self.notifier.enqueue(nid, sub["id"], {
                "notificationType": NOTIFICATION_TYPE,
                "serviceReferences": [{
                    "link": {"href": f"{SERVICE_MGMT}/services/{rec['id']}"},
                    "serName": info.ser_name, "serInstanceId": rec["id"],
                    "state": rec["shown"], "changeType": change}],
                "_links": {"subscription": {"href": _sub_href(sub)}}})

    # the sender's view of the subscriptions
    def _subscription(self, sub_id: str) -> dict | None:
        return self.store.get("service_subscriptions", sub_id)

    def _sharing(self, callback: str) -> list[str]:
        return [d["id"] for d in self.store.list("service_subscriptions", keep=("id", "callbackUri"))
                if d["callbackUri"] == callback]

    def _mark_failing(self, sub_id: str, failure: dict | None) -> None:
        """A failing callback is logged by the sender; MEC 011's
        subscription has no place to show it."""

    def _drop(self, sub_id: str, reason: str) -> None:
        with self._lock:
            doc = self.store.get("service_subscriptions", sub_id)
            if doc is not None:
                self.store.delete("service_subscriptions", sub_id)
                log.warning("service availability subscription %s of app instance %s "
                            "dropped: its callback kept failing (%s)", sub_id,
                            doc["appInstanceId"], reason)


def subscription_view(doc: dict) -> dict:
    out = {"subscriptionType": SUBSCRIPTION_TYPE, "callbackReference": doc["callbackUri"],
           "_links": {"self": {"href": _sub_href(doc)}}}
    if doc.get("filteringCriteria") is not None:
        out["filteringCriteria"] = doc["filteringCriteria"]
    return out


def _sub_href(doc: dict) -> str:
    return f"{SERVICE_MGMT}/applications/{doc['appInstanceId']}/subscriptions/{doc['id']}"


def etag(view: dict) -> str:
    """The entity tag of a ServiceInfo, for If-Match on PUT: the rules' own
    (`mp1.etag`), of the view without isLocal (which depends on who asks)."""
    return mp1.etag({k: v for k, v in view.items() if k != "isLocal"})
