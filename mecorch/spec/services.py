"""MEC 011 service management bodies (ETSI GS MEC 011 v2.1.1,
MecServiceMgmtApi.yaml), parsed once and checked: ServiceInfo (with its
TransportInfo and CategoryRef), the discovery query of `GET /services`,
and a SerAvailabilityNotificationSubscription's filteringCriteria.

Strict as the rest of mecorch: an attribute the file does not define is a
400 naming it (`validate.known_fields`) (a later version's `_links`, `transportId` or
`livenessInterval` too: this is v2.1.1), every string is bounded, and an
enum value outside the file's list is a 400 naming the field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from mecorch.kernel import validate
from mecorch.kernel.errors import InvalidInput

SERVICE_STATES = ("ACTIVE", "INACTIVE")
SERIALIZERS = ("JSON", "XML", "PROTOBUF3")
LOCALITIES = ("MEC_SYSTEM", "MEC_HOST", "NFVI_POP", "ZONE", "ZONE_GROUP", "NFVI_NODE")
TRANSPORT_TYPES = ("REST_HTTP", "MB_TOPIC_BASED", "MB_ROUTING", "MB_PUBSUB", "RPC",
                   "RPC_STREAMING", "WEBSOCKET")
GRANT_TYPES = ("OAUTH2_AUTHORIZATION_CODE", "OAUTH2_IMPLICIT_GRANT", "OAUTH2_RESOURCE_OWNER",
               "OAUTH2_CLIENT_CREDENTIALS")
CHANGE_TYPES = ("ADDED", "REMOVED", "STATE_CHANGED", "ATTRIBUTES_CHANGED")
SUBSCRIPTION_TYPE = "SerAvailabilityNotificationSubscription"

MAX_TEXT = 256              # a name, id, version, host
MAX_ITEMS = 32              # addresses, uris, filter values
MAX_OPAQUE_BYTES = 8192     # implSpecificInfo, EndPointInfo.Alternative (as JSON)

_SERVICE_FIELDS = {"serInstanceId", "serName", "serCategory", "version", "state",
                   "transportInfo", "serializer", "scopeOfLocality", "consumedLocalOnly",
                   "isLocal"}
_REQUIRED = ("serName", "version", "state", "transportInfo", "serializer")
_CATEGORY_FIELDS = ("href", "id", "name", "version")
_TRANSPORT_FIELDS = {"id", "name", "description", "type", "protocol", "version", "endpoint",
                     "security", "implSpecificInfo"}
_TRANSPORT_REQUIRED = ("id", "name", "type", "protocol", "version", "endpoint", "security")
_CRITERIA_FIELDS = {"serInstanceIds", "serNames", "serCategories", "states", "isLocal"}
_SUBSCRIPTION_FIELDS = {"subscriptionType", "callbackReference", "_links", "filteringCriteria"}


# ---------------------------------------------------------------- ServiceInfo
@dataclass(frozen=True)
class ServiceInfo:
    """A service as its provider published it. `state` is the state the
    provider asked for; what discovery shows also needs the provider in
    service (mecorch.mepm.services)."""
    ser_name: str
    version: str
    state: str
    transport: dict             # TransportInfo, checked and normalised
    serializer: str
    category: dict | None = None
    scope_of_locality: str | None = None
    consumed_local_only: bool | None = None

    @classmethod
    def parse(cls, body: Any, where: str = "ServiceInfo") -> "ServiceInfo":
        obj = _object(body, where)
        validate.known_fields(obj, _SERVICE_FIELDS, where)
        for name in _REQUIRED:
            if name not in obj:
                raise InvalidInput(f"{where}.{name} is required")
        return cls(
            ser_name=text(obj["serName"], f"{where}.serName"),
            version=text(obj["version"], f"{where}.version"),
            state=one_of(obj["state"], SERVICE_STATES, f"{where}.state"),
            transport=transport_info(obj["transportInfo"], f"{where}.transportInfo"),
            serializer=one_of(obj["serializer"], SERIALIZERS, f"{where}.serializer"),
            category=None if obj.get("serCategory") is None
            else category_ref(obj["serCategory"], f"{where}.serCategory"),
            scope_of_locality=None if obj.get("scopeOfLocality") is None
            else one_of(obj["scopeOfLocality"], LOCALITIES, f"{where}.scopeOfLocality"),
            consumed_local_only=None if obj.get("consumedLocalOnly") is None
            else boolean(obj["consumedLocalOnly"], f"{where}.consumedLocalOnly"))

    def to_etsi(self, ser_instance_id: str, state: str, is_local: bool | None) -> dict:
        """The ServiceInfo document: `state` as discovery sees it, `isLocal`
        relative to whoever asks (None: not said)."""
        doc = {"serInstanceId": ser_instance_id, "serName": self.ser_name}
        if self.category is not None:
            doc["serCategory"] = dict(self.category)
        doc.update(version=self.version, state=state, transportInfo=self.transport,
                   serializer=self.serializer)
        if self.scope_of_locality is not None:
            doc["scopeOfLocality"] = self.scope_of_locality
        if self.consumed_local_only is not None:
            doc["consumedLocalOnly"] = self.consumed_local_only
        if is_local is not None:
            doc["isLocal"] = is_local
        return doc

    def to_record(self) -> dict:
        return {"serName": self.ser_name, "version": self.version, "state": self.state,
                "transportInfo": self.transport, "serializer": self.serializer,
                "serCategory": self.category, "scopeOfLocality": self.scope_of_locality,
                "consumedLocalOnly": self.consumed_local_only}

    @classmethod
    def from_record(cls, rec: dict) -> "ServiceInfo":
        return cls(ser_name=rec["serName"], version=rec["version"], state=rec["state"],
                   transport=rec["transportInfo"], serializer=rec["serializer"],
                   category=rec.get("serCategory"),
                   scope_of_locality=rec.get("scopeOfLocality"),
                   consumed_local_only=rec.get("consumedLocalOnly"))

    def same_but_state(self, other: "ServiceInfo") -> bool:
        return self.to_record() | {"state": ""} == other.to_record() | {"state": ""}


def category_ref(value: Any, where: str) -> dict:
    obj = _object(value, where)
    validate.known_fields(obj, set(_CATEGORY_FIELDS), where)
    for name in _CATEGORY_FIELDS:
        if name not in obj:
            raise InvalidInput(f"{where}.{name} is required (CategoryRef: href, id, name, "
                               "version)")
    return {name: text(obj[name], f"{where}.{name}") for name in _CATEGORY_FIELDS}


def transport_info(value: Any, where: str) -> dict:
    obj = _object(value, where)
    validate.known_fields(obj, _TRANSPORT_FIELDS, where)
    for name in _TRANSPORT_REQUIRED:
        if name not in obj:
            raise InvalidInput(f"{where}.{name} is required")
    out = {name: text(obj[name], f"{where}.{name}") for name in ("id", "name", "protocol",
                                                                  "version")}
    if obj.get("description") is not None:
        out["description"] = text(obj["description"], f"{where}.description", 1024)
    out["type"] = one_of(obj["type"], TRANSPORT_TYPES, f"{where}.type")
    out["endpoint"] = endpoint(obj["endpoint"], f"{where}.endpoint")
    out["security"] = security(obj["security"], f"{where}.security")
    if obj.get("implSpecificInfo") is not None:
        out["implSpecificInfo"] = opaque(obj["implSpecificInfo"], f"{where}.implSpecificInfo")
    return out


def endpoint(value: Any, where: str) -> dict:
    """EndPointInfo: exactly one of uris, addresses, alternative (the
    file's oneOf)."""
    obj = _object(value, where)
    kinds = [k for k in ("uris", "addresses", "alternative") if k in obj]
    validate.known_fields(obj, {"uris", "addresses", "alternative"}, where)
    if len(kinds) != 1:
        raise InvalidInput(f"{where} must hold exactly one of uris, addresses, alternative")
    kind = kinds[0]
    if kind == "uris":
        return {"uris": [text(u, f"{where}.uris[{i}]", 2048)
                         for i, u in enumerate(_list(obj["uris"], f"{where}.uris"))]}
    if kind == "alternative":
        return {"alternative": opaque(obj["alternative"], f"{where}.alternative")}
    addresses = []
    for i, a in enumerate(_list(obj["addresses"], f"{where}.addresses")):
        at = f"{where}.addresses[{i}]"
        a = _object(a, at)
        validate.known_fields(a, {"host", "port"}, at)
        if "host" not in a or "port" not in a:
            raise InvalidInput(f"{at} needs host and port")
        port = a["port"]
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise InvalidInput(f"{at}.port must be an integer 1-65535")
        addresses.append({"host": text(a["host"], f"{at}.host"), "port": port})
    return {"addresses": addresses}


def security(value: Any, where: str) -> dict:
    obj = _object(value, where)
    validate.known_fields(obj, {"oAuth2Info"}, where)
    if obj.get("oAuth2Info") is None:
        return {}
    at = f"{where}.oAuth2Info"
    info = _object(obj["oAuth2Info"], at)
    validate.known_fields(info, {"grantTypes", "tokenEndpoint"}, at)
    if "grantTypes" not in info or "tokenEndpoint" not in info:
        raise InvalidInput(f"{at} needs grantTypes and tokenEndpoint")
    grants = [one_of(g, GRANT_TYPES, f"{at}.grantTypes[{i}]")
              for i, g in enumerate(_list(info["grantTypes"], f"{at}.grantTypes"))]
    if not 1 <= len(grants) <= 4:
        raise InvalidInput(f"{at}.grantTypes must hold 1 to 4 grant types")
    return {"oAuth2Info": {"grantTypes": grants,
                           "tokenEndpoint": text(info["tokenEndpoint"], f"{at}.tokenEndpoint",
                                                 2048)}}


# ---------------------------------------------------------------- discovery
@dataclass(frozen=True)
class Discovery:
    """The query of `GET /services` (and an app's own listing). At most one
    of ser_instance_id, ser_name, ser_category_id, as the file says; the
    arrays come as repeated parameters (form style, explode)."""
    ser_instance_ids: tuple[str, ...] = ()
    ser_names: tuple[str, ...] = ()
    ser_category_id: str | None = None
    consumed_local_only: bool | None = None
    is_local: bool | None = None
    scope_of_locality: str | None = None

    @classmethod
    def parse(cls, query: dict[str, list[str]]) -> "Discovery":
        given = [k for k in ("ser_instance_id", "ser_name", "ser_category_id") if k in query]
        if len(given) > 1:
            raise InvalidInput(f"give at most one of ser_instance_id, ser_name, "
                               f"ser_category_id (got {', '.join(given)})")

        def values(name: str) -> tuple[str, ...]:
            got = query.get(name) or []
            if len(got) > MAX_ITEMS:
                raise InvalidInput(f"{name}: at most {MAX_ITEMS} values")
            return tuple(text(v, name) for v in got)

        def single(name: str) -> str | None:
            got = query.get(name)
            if not got:
                return None
            if len(got) > 1:
                raise InvalidInput(f"{name} takes one value")
            return text(got[0], name)

        def flag(name: str) -> bool | None:
            v = single(name)
            if v is None:
                return None
            if v not in ("true", "false"):
                raise InvalidInput(f"{name} must be true or false")
            return v == "true"

        scope = single("scope_of_locality")
        return cls(ser_instance_ids=values("ser_instance_id"), ser_names=values("ser_name"),
                   ser_category_id=single("ser_category_id"),
                   consumed_local_only=flag("consumed_local_only"), is_local=flag("is_local"),
                   scope_of_locality=None if scope is None
                   else one_of(scope, LOCALITIES, "scope_of_locality"))

    def matches(self, ser_instance_id: str, info: ServiceInfo, is_local: bool) -> bool:
        if self.ser_instance_ids and ser_instance_id not in self.ser_instance_ids:
            return False
        if self.ser_names and info.ser_name not in self.ser_names:
            return False
        if self.ser_category_id is not None and \
                (info.category or {}).get("id") != self.ser_category_id:
            return False
        if self.consumed_local_only is not None and \
                bool(info.consumed_local_only) != self.consumed_local_only:
            return False
        if self.is_local is not None and is_local != self.is_local:
            return False
        # absent, a service's scope is MEC_HOST (the file's LocalityType)
        if self.scope_of_locality is not None and \
                (info.scope_of_locality or "MEC_HOST") != self.scope_of_locality:
            return False
        return True


QUERY = ("ser_instance_id", "ser_name", "ser_category_id", "consumed_local_only", "is_local",
         "scope_of_locality")


# ---------------------------------------------------------------- subscriptions
@dataclass(frozen=True)
class Criteria:
    """SerAvailabilityNotificationSubscription.filteringCriteria: every
    attribute given must match (AND); a list matches any of its values. A
    category matches by its id (a CategoryRef names one category by id; its
    other attributes describe it)."""
    ser_instance_ids: tuple[str, ...] = ()
    ser_names: tuple[str, ...] = ()
    category_ids: tuple[str, ...] = ()
    states: tuple[str, ...] = ()
    is_local: bool | None = None
    document: dict | None = None        # as given, normalised: shown back

    @classmethod
    def parse(cls, value: Any, where: str = "filteringCriteria") -> "Criteria":
        if value is None:
            return cls()
        obj = _object(value, where)
        validate.known_fields(obj, _CRITERIA_FIELDS, where)
        ids = tuple(text(v, f"{where}.serInstanceIds[{i}]")
                    for i, v in enumerate(_list(obj.get("serInstanceIds", []),
                                                f"{where}.serInstanceIds")))
        names = tuple(text(v, f"{where}.serNames[{i}]")
                      for i, v in enumerate(_list(obj.get("serNames", []), f"{where}.serNames")))
        cats = tuple(category_ref(v, f"{where}.serCategories[{i}]")
                     for i, v in enumerate(_list(obj.get("serCategories", []),
                                                 f"{where}.serCategories")))
        states = tuple(one_of(v, SERVICE_STATES, f"{where}.states[{i}]")
                       for i, v in enumerate(_list(obj.get("states", []), f"{where}.states")))
        local = None if obj.get("isLocal") is None else boolean(obj["isLocal"],
                                                                f"{where}.isLocal")
        doc: dict = {}
        for key, got in (("serInstanceIds", list(ids)), ("serNames", list(names)),
                         ("serCategories", [dict(c) for c in cats]), ("states", list(states))):
            if key in obj:
                doc[key] = got
        if local is not None:
            doc["isLocal"] = local
        return cls(ids, names, tuple(c["id"] for c in cats), states, local, doc)

    def matches(self, ser_instance_id: str, info: ServiceInfo, state: str,
                is_local: bool) -> bool:
        return ((not self.ser_instance_ids or ser_instance_id in self.ser_instance_ids)
                and (not self.ser_names or info.ser_name in self.ser_names)
                and (not self.category_ids
                     or (info.category or {}).get("id") in self.category_ids)
                and (not self.states or state in self.states)
                and (self.is_local is None or self.is_local == is_local))


def subscription_request(body: Any, instance_id: str) -> tuple[str, Criteria]:
    """(callbackReference as given, criteria) of a
    SerAvailabilityNotificationSubscription request; `_links` given by a
    client is ignored by the file's own rule (the server makes it), any
    other unknown attribute is a 400."""
    where = SUBSCRIPTION_TYPE
    obj = _object(body, where)
    validate.known_fields(obj, _SUBSCRIPTION_FIELDS, where)
    if obj.get("subscriptionType") != SUBSCRIPTION_TYPE:
        raise InvalidInput(f"subscriptionType must be {SUBSCRIPTION_TYPE}")
    if not isinstance(obj.get("callbackReference"), str):
        raise InvalidInput(f"{where}.callbackReference is required (a URI)")
    return obj["callbackReference"], Criteria.parse(obj.get("filteringCriteria"))


# ---------------------------------------------------------------- values
def text(value: Any, where: str, limit: int = MAX_TEXT) -> str:
    """The project's text (`validate.text`: bounded, no control character,
    Unicode), printable and not blank: what discovery shows and matches."""
    validate.text(value, where, limit)
    if not value.strip():
        raise InvalidInput(f"{where} must not be blank")
    if not value.isprintable():
        raise InvalidInput(f"{where} holds characters that do not print")
    return value


def one_of(value: Any, allowed: tuple[str, ...], where: str) -> str:
    if value not in allowed:
        raise InvalidInput(f"{where} must be one of {', '.join(allowed)}")
    return value


def boolean(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidInput(f"{where} must be true or false")
    return value


def opaque(value: Any, where: str) -> dict:
    """An object the file leaves free (implSpecificInfo, alternative),
    bounded in size."""
    obj = _object(value, where)
    if len(json.dumps(obj)) > MAX_OPAQUE_BYTES:
        raise InvalidInput(f"{where} is larger than {MAX_OPAQUE_BYTES} bytes as JSON")
    return obj


def _object(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise InvalidInput(f"{where} must be an object")
    return value


def _list(value: Any, where: str) -> list:
    if not isinstance(value, list):
        raise InvalidInput(f"{where} must be an array")
    if len(value) > MAX_ITEMS:
        raise InvalidInput(f"{where}: at most {MAX_ITEMS} items")
    return value


