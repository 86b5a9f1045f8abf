"""Northbound subscriptions and their notifications (ETSI GS MEC 010-2):

- app_pkgm: AppPkgSubscription (AppPackageOnBoarding,
  AppPacakgeOperationChange, AppPackageDeletion; ETSI's spellings) with
  `appPkgFilter`, notified by AppPkgNotification (AppPackageOnBoarded,
  AppPacakgeEnabled, AppPacakgeDisabled, AppPackageDeleted);
- app_lcm: AppInstSubscriptionRequest (AppInstanceStateChange: one
  appInstanceState, NOT_INSTANTIATED, STARTED or STOPPED, or none: "If this
  attribute is absent, match all states") and
  AppLcmOpOccSubscriptionRequest (AppLcmOpOccStateChange, with operation
  states and types), both with an AppInstanceSubscriptionFilter, notified by
  AppInstNotification and AppLcmOpOccNotification.

Subscriptions are stored (table oss_subscriptions) and read from the store
for each match, never cached: replicas of an MEO share the store, and one
must notify a subscription another accepted. A change is matched on the
thread that made it, and each notification is stored in the outbox for
mecorch.notifications.sender.

mecorch extensions: `authentication` (the NFV-SOL 013
SubscriptionAuthentication shape; BASIC, or BEARER with paramsBearer.token),
never shown back; `deliveryFailure` on a subscription whose callback fails.
An AppInstanceStateChange subscription to all states is shown without
`notificationType` (ETSI's AppInstSubscriptionInfo requires one state and
has no way to say "all"), as it was asked: without `appInstanceState`.
A subscription with the same type, callback and filter as an existing one
is not made twice: the answer is 303 See Other to the existing one
(NFV-SOL 013 5.5.2.3.2 / SOL 005).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import time

from mecorch.kernel import filters, validate
from mecorch.kernel.errors import InvalidInput, NotFound
from mecorch.kernel.events import Events
from mecorch.kernel.journal import LCM
from mecorch.notifications.sender import Notifier
from mecorch.kernel.outbound import check_url
from mecorch.package.manager import PKGM
from mecorch.kernel.store import Store
from mecorch.kernel.timeutil import new_id, timestamp

log = logging.getLogger("mecorch.notify")

PKG_TYPES = {       # subscription type -> the notification types it gets
    "AppPackageOnBoarding": ("AppPackageOnBoarded",),
    "AppPacakgeOperationChange": ("AppPacakgeEnabled", "AppPacakgeDisabled"),
    "AppPackageDeletion": ("AppPackageDeleted",),
}
PKG_EVENTS = {"ONBOARDED": "AppPackageOnBoarded", "ENABLED": "AppPacakgeEnabled",
              "DISABLED": "AppPacakgeDisabled", "DELETED": "AppPackageDeleted"}
INST_TYPE, OP_TYPE = "AppInstanceStateChange", "AppLcmOpOccStateChange"
INST_STATES = ("NOT_INSTANTIATED", "STARTED", "STOPPED")
OP_STATES = ("STARTING", "PROCESSING", "COMPLETED", "FAILED")
# CHANGE_APP_PKG: mecorch's rolling upgrade, RELOCATE: the MEO's move of an
# instance to another edge host (extensions of ETSI's enum)
OP_TYPES = ("INSTANTIATE", "OPERATE", "TERMINATE", "CHANGE_APP_PKG", "RELOCATE")
SELECTORS = ("VOID", "APP_IDENTITY", "APP_NAME", "APP_D_ID", "APP_FROM_PROVIDER")
MAX_SUBSCRIPTIONS = 1000
_MAX_ITEMS = 64
# notification types named in an app_lcm filter: the ETSI enum has one
_OP_NOTIFICATION_TYPES = ("AppLcmOperationOccurrenceNotification",)
PKGM_SUBS, LCM_SUBS = f"{PKGM}/subscriptions", f"{LCM}/subscriptions"


class Duplicate(Exception):
    """The subscription exists already (answered 303 See Other)."""

    def __init__(self, existing: dict):
        super().__init__(existing["id"])
        self.existing = existing


class Subscriptions(Events):
    def __init__(self, store: Store, cfg: dict):
        self.store = store
        self.networks = [ipaddress.ip_network(n) for n in cfg["api"]["callback_networks"]]
        # no lock of its own: the store's transaction is the one lock (a
        # lock of this object taken around store reads, and the store's
        # taken around a change's notifications, deadlocked two threads)
        self.notifier = Notifier(store, cfg, self._stored, self._sharing, self._mark_failing,
                                 self._drop)

    # ------------------------------------------------------------ the API
    def create(self, api: str, body, query_type: str | None = None) -> dict:
        """A new subscription of `api` ("pkgm" or "lcm"); Duplicate if the
        same one exists."""
        if not isinstance(body, dict):
            raise InvalidInput("body must be a subscription request object")
        doc = _parse_pkgm(body) if api == "pkgm" else _parse_lcm(body, query_type)
        doc["callbackUri"] = check_url(body.get("callbackUri"), self.networks, "callbackUri")
        auth = parse_authentication(body.get("authentication"))
        key = _identity(api, doc)
        with self.store.transaction():
            # one at a time across replicas: a twin request is a Duplicate
            self.store.lock("oss_subscriptions")
            subs = self._subs
            for other in subs.values():
                if other["_key"] == key:
                    raise Duplicate(self.info(other))
            if len(subs) >= MAX_SUBSCRIPTIONS:
                raise InvalidInput(f"at most {MAX_SUBSCRIPTIONS} subscriptions")
            sid = new_id()
            base = PKGM_SUBS if api == "pkgm" else LCM_SUBS
            doc.update({"id": sid, "api": api, "_key": key,
                        "_links": {"self": {"href": f"{base}/{sid}"}}})
            if auth:
                doc["_auth"] = auth
            self.store.put("oss_subscriptions", sid, doc)
        return self.info(doc)

    @property
    def _subs(self) -> dict[str, dict]:
        # a few hundred microseconds for tens of subscriptions: a change
        # matches them a handful of times per operation
        return {d["id"]: d for d in self.store.list("oss_subscriptions")}

    def list(self, api: str, subscription_type: str | None = None) -> dict:
        base = PKGM_SUBS if api == "pkgm" else LCM_SUBS
        # the ETSI files spell the link's type key differently per API
        type_key = "subsctiptionType" if api == "pkgm" else "subscriptionType"
        subs = [s for s in self._subs.values() if s["api"] == api
                and subscription_type in (None, s["subscriptionType"])]
        if api == "lcm" and subscription_type is not None \
                and subscription_type not in (INST_TYPE, OP_TYPE):
            raise InvalidInput(f"subscriptionType must be {INST_TYPE} or {OP_TYPE}")
        return {"_links": {"self": {"href": base}, "subscriptions": [
            {"href": s["_links"]["self"]["href"], type_key: s["subscriptionType"]}
            for s in subs]}}

    def get(self, api: str, sid: str, subscription_type: str | None = None) -> dict:
        return self.info(self._find(api, sid, subscription_type))

    def delete(self, api: str, sid: str) -> None:
        with self.store.transaction():
            self._find(api, sid)
            self.store.delete("oss_subscriptions", sid)
        self.notifier.forget(sid)

    def info(self, doc: dict) -> dict:
        """The SubscriptionInfo: the public fields (never the credentials)."""
        return {k: v for k, v in doc.items() if not k.startswith("_") and k != "api"} \
            | {"_links": doc["_links"]}

    def _find(self, api: str, sid: str, subscription_type: str | None = None) -> dict:
        doc = self.store.get("oss_subscriptions", sid)
        if doc is None or doc["api"] != api \
                or subscription_type not in (None, doc["subscriptionType"]):
            raise NotFound(f"subscription {sid!r} does not exist")
        return doc

    # ------------------------------------------------------------ the sender's view
    def start(self) -> None:
        self.notifier.start()

    def stop(self) -> None:
        self.notifier.stop()

    def _stored(self, sid: str) -> dict | None:
        return self.store.get("oss_subscriptions", sid)

    def _sharing(self, callback: str) -> list[str]:
        return [s["id"] for s in self._subs.values() if s["callbackUri"] == callback]

    def _mark_failing(self, sid: str, failure: dict | None) -> None:
        """Show (or clear, None) a delivery failure on the subscription."""
        with self.store.transaction():
            doc = self.store.get("oss_subscriptions", sid)
            if doc is None:
                return
            if failure is None:
                doc.pop("deliveryFailure", None)
            else:
                doc["deliveryFailure"] = {
                    "since": _iso(failure["since"]), "attempts": failure["attempts"],
                    "lastError": failure["lastError"]}
            self.store.put("oss_subscriptions", sid, doc)

    def _drop(self, sid: str, reason: str) -> None:
        self.store.delete("oss_subscriptions", sid)

    # ------------------------------------------------------------ events
    def package(self, kind: str, doc: dict) -> None:
        ntype = PKG_EVENTS[kind]
        for sub in self._matching("pkgm"):
            if ntype not in PKG_TYPES[sub["subscriptionType"]]:
                continue
            if sub.get("appPkgFilter") and not any(
                    filters.apply([doc], f) for f in sub["appPkgFilter"]):
                continue
            nid = new_id()
            self.notifier.enqueue(nid, sub["id"], {
                "id": nid, "notificationType": ntype, "subscriptionId": sub["id"],
                "timeStamp": timestamp(), "appPkgId": doc["id"],
                "appDId": doc.get("appDId", ""),
                "operationalState": doc.get("operationalState", "DISABLED"),
                "_links": {"subscription": sub["_links"]["self"]}})

    def instance(self, doc: dict, state: str | None = None) -> None:
        extra = {}
        if state is not None:
            # mecorch extension: why a STARTED instance is notified STOPPED
            # (its runtime kept dying: observedState CRASH_LOOP)
            # (a host's record keeps them private; an MEO's copies its view)
            seen, rs = doc.get("_observed") or {}, doc.get("_restart") or {}
            extra = {k: v for k, v in (
                ("observedState", seen.get("state", doc.get("observedState"))),
                ("observedStateDetail", seen.get("detail", doc.get("observedStateDetail"))),
                ("restartCount", rs.get("total", doc.get("restartCount"))),
                ("lastExitCode", rs.get("lastExitCode", doc.get("lastExitCode"))))
                     if v is not None}
        state = state or _instance_state(doc)
        for sub in self._matching("lcm"):
            # no notificationType: every state (appInstanceState was absent)
            if sub["subscriptionType"] != INST_TYPE \
                    or sub.get("notificationType", state) != state \
                    or not _selects(sub.get("appInstanceSubscriptionFilter"), doc):
                continue
            nid = new_id()
            self.notifier.enqueue(nid, sub["id"], {
                "id": nid, "notificationType": state, "subscriptionId": sub["id"],
                "timeStamp": timestamp(), "appInstanceId": doc["id"],
                "appPkgId": doc.get("appPkgId", ""), "appDId": doc.get("appDId", ""),
                **extra, "_links": {"subscription": sub["_links"]["self"]}})

    def operation(self, op: dict) -> None:
        subs = [s for s in self._matching("lcm") if s["subscriptionType"] == OP_TYPE]
        if not subs:
            return
        inst = None
        for sub in subs:
            f = sub.get("appLcmOpOccSubscriptionFilter") or {}
            if op["operationState"] not in f.get("operationStates", OP_STATES) \
                    or op["operationParams"] not in f.get("operationTypes", OP_TYPES):
                continue
            if f.get("appInstanceSubscriptionFilter"):
                if inst is None:
                    inst = self.store.get("instances", op["appInstanceId"]) \
                        or {"id": op["appInstanceId"]}
                if not _selects(f["appInstanceSubscriptionFilter"], inst):
                    continue
            nid = new_id()
            self.notifier.enqueue(nid, sub["id"], {
                "id": nid, "notificationType": op["operationState"],
                "subscriptionId": sub["id"], "timeStamp": timestamp(),
                "appLcmOpOccId": op["id"], "appInstanceId": op["appInstanceId"],
                "_links": {"appInstance": op["_links"]["appInstance"],
                           "subscription": sub["_links"]["self"],
                           "appLcmOpOcc": op["_links"]["self"]}})

    def _matching(self, api: str) -> list[dict]:
        return [s for s in self._subs.values() if s["api"] == api]


# ---------------------------------------------------------------- requests
def _parse_pkgm(body: dict) -> dict:
    """AppPkgSubscription. ETSI spells the type key `subsctiptionType` in
    the request (and `subscriptionType` in the answer): both are taken."""
    allowed = {"callbackUri", "subsctiptionType", "subscriptionType", "appPkgFilter",
               "authentication"}
    _no_extra(body, allowed, "AppPkgSubscription")
    if "subsctiptionType" in body and "subscriptionType" in body \
            and body["subsctiptionType"] != body["subscriptionType"]:
        raise InvalidInput("subsctiptionType and subscriptionType differ")
    stype = body.get("subsctiptionType", body.get("subscriptionType"))
    if not isinstance(stype, str) or stype not in PKG_TYPES:
        raise InvalidInput(f"subsctiptionType must be one of {', '.join(PKG_TYPES)}")
    doc = {"subscriptionType": stype}
    if "appPkgFilter" in body:
        flt = _strings(body["appPkgFilter"], "appPkgFilter")
        for expr in flt:
            filters.check(expr, "AppPkgInfo")            # malformed or unknown: 400
        if flt:
            doc["appPkgFilter"] = flt
    return doc


def _parse_lcm(body: dict, query_type: str | None) -> dict:
    stype = body.get("subscriptionType")
    if query_type is not None and query_type != stype:
        raise InvalidInput(f"the subscriptionType query parameter ({query_type[:64]}) and the "
                           "body's differ")
    if stype == INST_TYPE:
        _no_extra(body, {"subscriptionType", "callbackUri", "appInstanceState",
                         "appInstanceSubscriptionFilter", "authentication"},
                  "AppInstSubscriptionRequest")
        doc = {"subscriptionType": stype}
        state = body.get("appInstanceState")
        # ETSI: "If this attribute is absent, match all states."
        if state is not None:
            if state not in INST_STATES:
                raise InvalidInput(f"appInstanceState (the state to be notified of) must be "
                                   f"one of {', '.join(INST_STATES)}, or absent for all states")
            doc.update(notificationType=state, appInstanceState=state)
        if body.get("appInstanceSubscriptionFilter") is not None:
            doc["appInstanceSubscriptionFilter"] = _selector(
                body["appInstanceSubscriptionFilter"], "appInstanceSubscriptionFilter")
        return doc
    if stype == OP_TYPE:
        _no_extra(body, {"subscriptionType", "callbackUri", "appLcmOpOccSubscriptionFilter",
                         "authentication"}, "AppLcmOpOccSubscriptionRequest")
        doc = {"subscriptionType": stype}
        f = body.get("appLcmOpOccSubscriptionFilter")
        if f is not None:
            name = "appLcmOpOccSubscriptionFilter"
            if not isinstance(f, dict):
                raise InvalidInput(f"{name} must be an object")
            _no_extra(f, {"appInstanceSubscriptionFilter", "notificationTypes",
                          "operationStates", "operationTypes"}, name)
            out = {}
            for key, allowed in (("notificationTypes", _OP_NOTIFICATION_TYPES),
                                 ("operationStates", OP_STATES),
                                 ("operationTypes", OP_TYPES)):
                if key in f:
                    # ETSI types each as one enum value; a list of them is taken too
                    values = [f[key]] if isinstance(f[key], str) else _strings(
                        f[key], f"{name}.{key}")
                    bad = [v for v in values if v not in allowed]
                    if bad or not values:
                        raise InvalidInput(f"{name}.{key} must be among {', '.join(allowed)}")
                    out[key] = sorted(set(values))
            if f.get("appInstanceSubscriptionFilter") is not None:
                out["appInstanceSubscriptionFilter"] = _selector(
                    f["appInstanceSubscriptionFilter"], f"{name}.appInstanceSubscriptionFilter")
            doc["appLcmOpOccSubscriptionFilter"] = out
        return doc
    raise InvalidInput(f"subscriptionType must be {INST_TYPE} or {OP_TYPE}")


def _selector(f, name: str) -> dict:
    """AppInstanceSubscriptionFilter."""
    if not isinstance(f, dict):
        raise InvalidInput(f"{name} must be an object")
    _no_extra(f, {"appInstSelectorType", "appInstances", "appsFromProviders"}, name)
    kind = f.get("appInstSelectorType")
    if kind not in SELECTORS:
        raise InvalidInput(f"{name}.appInstSelectorType must be one of {', '.join(SELECTORS)}")
    out: dict = {"appInstSelectorType": kind}
    if kind in ("APP_IDENTITY", "APP_NAME", "APP_D_ID"):
        out["appInstances"] = _strings(f.get("appInstances"), f"{name}.appInstances")
        if not out["appInstances"]:
            raise InvalidInput(f"{name}.appInstances is required for {kind}")
    elif kind == "APP_FROM_PROVIDER":
        providers = f.get("appsFromProviders")
        if not isinstance(providers, list) or not 0 < len(providers) <= _MAX_ITEMS:
            raise InvalidInput(f"{name}.appsFromProviders must be a list of 1 to {_MAX_ITEMS} "
                               "providers for APP_FROM_PROVIDER")
        out["appsFromProviders"] = []
        for i, p in enumerate(providers):
            where = f"{name}.appsFromProviders[{i}]"
            if not isinstance(p, dict):
                raise InvalidInput(f"{where} must be an object")
            _no_extra(p, {"appProvider", "appProducts"}, where)
            item = {"appProvider": validate.text(p.get("appProvider"), f"{where}.appProvider",
                                                 128)}
            if p.get("appProducts") is not None:
                prod = p["appProducts"]
                if not isinstance(prod, dict):
                    raise InvalidInput(f"{where}.appProducts must be an object")
                _no_extra(prod, {"appName", "versions"}, f"{where}.appProducts")
                item["appProducts"] = {"appName": validate.text(
                    prod.get("appName"), f"{where}.appProducts.appName", 128)}
                if prod.get("versions") is not None:
                    item["appProducts"]["versions"] = prod["versions"]
            out["appsFromProviders"].append(item)
    elif f.get("appInstances") or f.get("appsFromProviders"):
        raise InvalidInput(f"{name}: VOID selects every instance; it takes no list")
    return out


def _selects(f: dict | None, inst: dict) -> bool:
    if not f or f["appInstSelectorType"] == "VOID":
        return True
    kind = f["appInstSelectorType"]
    if kind == "APP_IDENTITY":
        return inst.get("id") in f["appInstances"]
    if kind == "APP_NAME":
        return inst.get("appName") in f["appInstances"]
    if kind == "APP_D_ID":
        return inst.get("appDId") in f["appInstances"]
    for p in f["appsFromProviders"]:
        if p["appProvider"] == inst.get("appProvider") and (
                "appProducts" not in p or p["appProducts"]["appName"] == inst.get("appName")):
            return True
    return False


def parse_authentication(auth) -> dict | None:
    """The NFV-SOL 013 SubscriptionAuthentication mecorch can honour:
    {"authType": ["BASIC"], "paramsBasic": {"userName", "password"}}, or
    {"authType": ["BEARER"], "paramsBearer": {"token"}} (mecorch's own
    type: a static bearer token). Stored, sent with each notification,
    never shown back."""
    if auth is None:
        return None
    if not isinstance(auth, dict):
        raise InvalidInput("authentication must be an object")
    _no_extra(auth, {"authType", "paramsBasic", "paramsBearer", "paramsOauth2ClientCredentials"},
              "authentication")
    kinds = auth.get("authType")
    if not isinstance(kinds, list) or len(kinds) != 1:
        raise InvalidInput("authentication.authType must be a list of one type, BASIC or BEARER")
    if kinds[0] == "BASIC":
        p = auth.get("paramsBasic")
        if not isinstance(p, dict) or set(p) != {"userName", "password"}:
            raise InvalidInput("authentication.paramsBasic must be {userName, password}")
        user = validate.text(p["userName"], "authentication.paramsBasic.userName", 256)
        if ":" in user:
            raise InvalidInput("authentication.paramsBasic.userName must not contain ':'")
        return {"type": "BASIC", "userName": user,
                "password": validate.text(p["password"], "authentication.paramsBasic.password",
                                          256)}
    if kinds[0] == "BEARER":
        p = auth.get("paramsBearer")
        if not isinstance(p, dict) or set(p) != {"token"}:
            raise InvalidInput("authentication.paramsBearer must be {token}")
        token = validate.text(p["token"], "authentication.paramsBearer.token", 512)
        if not token.isascii() or " " in token:
            raise InvalidInput("authentication.paramsBearer.token must be ASCII without spaces")
        return {"type": "BEARER", "token": token}
    raise InvalidInput(f"authentication.authType {str(kinds[0])[:40]!r} is not supported "
                       "(BASIC or BEARER)")


def _no_extra(obj: dict, allowed: set[str], what: str) -> None:
    extra = set(obj) - allowed
    if extra:
        raise InvalidInput(f"{what} has no field(s) {', '.join(sorted(map(str, extra)))[:200]}")


def _strings(value, name: str) -> list[str]:
    if not isinstance(value, list) or len(value) > _MAX_ITEMS:
        raise InvalidInput(f"{name} must be a list of at most {_MAX_ITEMS} strings")
    return [validate.text(v, f"{name}[{i}]", 1024) for i, v in enumerate(value)]


def _identity(api: str, doc: dict) -> str:
    """What makes two subscriptions the same: API, type, callback, filter."""
    return json.dumps([api, doc], sort_keys=True)


def _instance_state(doc: dict) -> str:
    if doc.get("instantiationState") != "INSTANTIATED":
        return "NOT_INSTANTIATED"
    return (doc.get("instantiatedAppState") or {}).get("operationalState", "STARTED")


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
