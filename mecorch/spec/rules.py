"""MEP rule value objects: ETSI MEC 011 `DnsRule` and `TrafficRule`.

Pure: no I/O. `from_etsi(dict)` validates every field (allow-lists, via
`mecorch.kernel.validate`) and raises `InvalidInput` naming the field, e.g.
`trafficRule.trafficFilter[0].dstPort[1]: ...`; `to_etsi()` gives back the
spec's JSON shape (field names and enums of MecAppSupportApi.yaml), with
values normalised (addresses canonical, domain names lower-case without a
trailing dot), but for protocols: a TrafficFilter's `protocol` is compared
(claims, the MEP's rules) by its normalised value (names lower-case,
numbers without leading zeros) and given back as the client spelled it
(`"TCP"` stays `"TCP"`), as an ETSI client reading back what it PUT
expects.

Conventions, the same for every object here:
- Unknown fields are REFUSED (InvalidInput naming the field), never
  ignored: a client that sends a field it believes has an effect must hear
  that it has none.
- Arrays take at most `MAX_ITEMS` entries; a rule at most `MAX_FILTERS`
  filters: a rule set stays small enough to render and apply at once.
- A rule whose action a backend cannot express (ENCAPSULATED, DUPLICATE_*,
  tunnel or token filters, ...) is NOT refused here: it is well formed. The
  driver refuses it with `UnsupportedAction`. Anything malformed is refused
  here.

Spec interpretations (the YAML leaves these open):
- `priority` is 0..255 with 0 the highest priority (MEC 011: "Value
  indicates the priority in descending order, i.e. with 0 as the highest
  priority and 255 as the lowest").
- A TrafficFilter with no match field at all would match every packet: it is
  refused as malformed (a rule must say what it matches); so is a rule with
  an empty `trafficFilter` list.
- Addresses are "an IP address, an address plus mask (CIDR) or a range"
  (`a-b`); ports are "a port or a range" (`80`, `8000-8080`); both are
  strings, as in the schema. Protocols are names (tcp, udp, sctp, icmp,
  icmpv6, gre, esp, ah) or protocol numbers 0-255 as decimal strings.
- `dstInterface` is one DestinationInterface object in the schema, but its
  description asks for two values for DUPLICATE_*: an object or an array of
  one or two objects is accepted; `to_etsi` gives an object when there is
  one, an array when there are two. A DROP rule must have none (the
  description says "If the action is DROP, no value shall be provided").
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, field as dataclass_field
from typing import Any, Callable

from mecorch.kernel import validate
from mecorch.kernel.errors import InvalidInput

MAX_ITEMS = 16          # entries per TrafficFilter array
MAX_FILTERS = 16        # TrafficFilters per TrafficRule

STATES = ("ACTIVE", "INACTIVE")
IP_ADDRESS_TYPES = ("IP_V4", "IP_V6")
FILTER_TYPES = ("FLOW", "PACKET")
ACTIONS = ("DROP", "FORWARD_DECAPSULATED", "FORWARD_ENCAPSULATED", "PASSTHROUGH",
           "DUPLICATE_DECAPSULATED", "DUPLICATE_ENCAPSULATED")
INTERFACE_TYPES = ("TUNNEL", "MAC", "IP")
TUNNEL_TYPES = ("GTP_U", "GRE")
PROTOCOL_NAMES = ("tcp", "udp", "sctp", "icmp", "icmpv6", "gre", "esp", "ah")

# Starts with a letter or digit so it can never read as an option.
_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._~+/=-]{0,255}")
_MAC = re.compile(r"[0-9A-Fa-f]{2}([-:])[0-9A-Fa-f]{2}(?:\1[0-9A-Fa-f]{2}){4}")
_PORT_RANGE = re.compile(r"([0-9]{1,5})(?:-([0-9]{1,5}))?")


def _fail(field: str, why: str):
    raise InvalidInput(f"{field}: {why}")


def _mapping(data: Any, field: str, allowed: tuple[str, ...],
             required: tuple[str, ...]) -> dict:
    """`data` as a dict with only `allowed` keys and every `required` one."""
    if not isinstance(data, dict):
        _fail(field, "must be an object")
    for key in data:
        if key not in allowed:
            # repr() so a hostile key (newline, NUL...) prints escaped.
            shown = repr(key[:40]) if isinstance(key, str) else repr(key)
            _fail(field, f"unknown field {shown} (allowed: {', '.join(allowed)})")
    for key in required:
        if key not in data or data[key] is None:
            _fail(f"{field}.{key}", "is required")
    return data


def _enum(value: Any, field: str, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        _fail(field, f"must be one of {', '.join(choices)}")
    return value


def _array(value: Any, field: str, item: Callable[[Any, str], str]) -> tuple[str, ...]:
    """An optional array of strings, each checked by `item`."""
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > MAX_ITEMS:
        _fail(field, f"must be an array of at most {MAX_ITEMS} strings")
    return tuple(item(v, f"{field}[{i}]") for i, v in enumerate(value))


# -- item validators -----------------------------------------------------------

def address(value: Any, field: str) -> str:
    """An IP address, a CIDR network or a range `a-b`, normalised."""
    if not isinstance(value, str) or not 1 <= len(value) <= 91:
        _fail(field, "must be an IP address, CIDR network or range a-b")
    if "-" in value:
        lo_s, _, hi_s = value.partition("-")
        lo = ipaddress.ip_address(validate.ip_address(lo_s, field))
        hi = ipaddress.ip_address(validate.ip_address(hi_s, field))
        if lo.version != hi.version or lo > hi:
            _fail(field, "range must be low-high of the same IP version")
        return f"{lo}-{hi}"
    if "/" in value:
        return validate.network(value, field)
    return validate.ip_address(value, field)


def port_range(value: Any, field: str) -> str:
    """A port `80` or a range `8000-8080` (1-65535), normalised."""
    m = _PORT_RANGE.fullmatch(value) if isinstance(value, str) else None
    if not m:
        _fail(field, "must be a port or a range like 8000-8080 (as a string)")
    lo = validate.port(int(m.group(1)), field)
    if m.group(2) is None:
        return str(lo)
    hi = validate.port(int(m.group(2)), field)
    if lo > hi:
        _fail(field, "range must be low-high")
    return f"{lo}-{hi}"


def protocol(value: Any, field: str) -> str:
    if isinstance(value, str) and value.lower() in PROTOCOL_NAMES:
        return value.lower()
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 3:
        return str(validate.integer(int(value), field, 0, 255))
    _fail(field, f"must be one of {', '.join(PROTOCOL_NAMES)} or a number 0-255")


def token(value: Any, field: str) -> str:
    if not isinstance(value, str) or not _TOKEN.fullmatch(value):
        _fail(field, "must be 1-256 characters of letters, digits and ._~+/=-, starting with a letter or digit")
    return value


def mac_address(value: Any, field: str) -> str:
    if not isinstance(value, str) or not _MAC.fullmatch(value):
        _fail(field, "must be a MAC address like 02-00-00-00-00-00")
    return value.lower()


# -- DNS rules -------------------------------------------------------------------

@dataclass(frozen=True)
class DnsRule:
    """ETSI DnsRule. `ttl` None means "not given" (the MEP's default).
    `ip_address` None (mecorch departure: ipAddress omitted) means "the
    instance's service address", which the host's MEP allocates from its
    service range (`with_service_address`); a rule is never applied so."""
    dns_rule_id: str
    domain_name: str
    ip_address_type: str
    ip_address: str | None
    state: str = "ACTIVE"
    ttl: int | None = None

    FIELDS = ("dnsRuleId", "domainName", "ipAddressType", "ipAddress", "ttl", "state")
    REQUIRED = ("dnsRuleId", "domainName", "ipAddressType", "state")

    @property
    def active(self) -> bool:
        return self.state == "ACTIVE"

    @classmethod
    def from_etsi(cls, data: Any, field: str = "dnsRule") -> "DnsRule":
        d = _mapping(data, field, cls.FIELDS, cls.REQUIRED)
        kind = _enum(d["ipAddressType"], f"{field}.ipAddressType", IP_ADDRESS_TYPES)
        ttl = d.get("ttl")
        return cls(
            dns_rule_id=validate.ident(d["dnsRuleId"], f"{field}.dnsRuleId"),
            domain_name=validate.domain_name(d["domainName"], f"{field}.domainName"),
            ip_address_type=kind,
            ip_address=None if d.get("ipAddress") is None else validate.ip_address(
                d["ipAddress"], f"{field}.ipAddress", version=4 if kind == "IP_V4" else 6),
            state=_enum(d["state"], f"{field}.state", STATES),
            ttl=None if ttl is None else validate.integer(ttl, f"{field}.ttl", 0, 2**31 - 1),
        )

    def to_etsi(self) -> dict:
        out = {"dnsRuleId": self.dns_rule_id, "domainName": self.domain_name,
               "ipAddressType": self.ip_address_type, "ipAddress": self.ip_address,
               "state": self.state}
        if self.ip_address is None:
            del out["ipAddress"]
        if self.ttl is not None:
            out["ttl"] = self.ttl
        return out


# -- traffic rules -----------------------------------------------------------------

# TrafficFilter: ETSI name -> (attribute, item validator) for the array fields.
# (Module level: inside the class, `protocol` and `token` would be the fields.)
_FILTER_ARRAYS = {
    "srcAddress": ("src_address", address),
    "dstAddress": ("dst_address", address),
    "srcPort": ("src_port", port_range),
    "dstPort": ("dst_port", port_range),
    "protocol": ("protocol", protocol),
    "token": ("token", token),
    "srcTunnelAddress": ("src_tunnel_address", address),
    "tgtTunnelAddress": ("tgt_tunnel_address", address),
    "srcTunnelPort": ("src_tunnel_port", port_range),
    "dstTunnelPort": ("dst_tunnel_port", port_range),
}
# ETSI name -> (attribute, low, high) for the integer fields.
_FILTER_INTEGERS = {"qCI": ("qci", 0, 255), "dSCP": ("dscp", 0, 63), "tC": ("tc", 0, 255)}



@dataclass(frozen=True)
class TrafficFilter:
    """ETSI TrafficFilter: every non-empty field must match (AND); within a
    field any entry may match (OR)."""
    src_address: tuple[str, ...] = ()
    dst_address: tuple[str, ...] = ()
    src_port: tuple[str, ...] = ()
    dst_port: tuple[str, ...] = ()
    protocol: tuple[str, ...] = ()
    token: tuple[str, ...] = ()
    src_tunnel_address: tuple[str, ...] = ()
    tgt_tunnel_address: tuple[str, ...] = ()
    src_tunnel_port: tuple[str, ...] = ()
    dst_tunnel_port: tuple[str, ...] = ()
    qci: int | None = None
    dscp: int | None = None
    tc: int | None = None
    # `protocol` as the client spelled it ("TCP"), given back by `to_etsi`;
    # every comparison (equality, claims, the MEP's rendering) reads the
    # normalised `protocol` ("tcp"), so it takes no part in equality
    protocol_as_sent: tuple[str, ...] = dataclass_field(default=(), compare=False)

    @classmethod
    def from_etsi(cls, data: Any, field: str = "trafficFilter") -> "TrafficFilter":
        d = _mapping(data, field, tuple(_FILTER_ARRAYS) + tuple(_FILTER_INTEGERS), ())
        kw: dict[str, Any] = {}
        for name, (attr, item) in _FILTER_ARRAYS.items():
            kw[attr] = _array(d.get(name), f"{field}.{name}", item)
        if kw["protocol"]:
            kw["protocol_as_sent"] = tuple(d["protocol"])      # each one valid (above)
        for name, (attr, lo, hi) in _FILTER_INTEGERS.items():
            if d.get(name) is not None:
                kw[attr] = validate.integer(d[name], f"{field}.{name}", lo, hi)
        flt = cls(**kw)
        if flt.is_empty():
            _fail(field, "must name at least one thing to match (an empty filter matches all traffic)")
        return flt

    def is_empty(self) -> bool:
        return not any(getattr(self, attr) for attr, _ in _FILTER_ARRAYS.values()) and all(
            getattr(self, attr) is None for attr, _, _ in _FILTER_INTEGERS.values())

    def to_etsi(self) -> dict:
        out: dict[str, Any] = {}
        for name, (attr, _) in _FILTER_ARRAYS.items():
            if getattr(self, attr):
                out[name] = list(getattr(self, attr))
        if self.protocol:
            out["protocol"] = list(self.protocol_as_sent or self.protocol)
        for name, (attr, _, _) in _FILTER_INTEGERS.items():
            if getattr(self, attr) is not None:
                out[name] = getattr(self, attr)
        return out


@dataclass(frozen=True)
class TunnelInfo:
    tunnel_type: str
    tunnel_dst_address: str | None = None
    tunnel_src_address: str | None = None

    @classmethod
    def from_etsi(cls, data: Any, field: str = "tunnelInfo") -> "TunnelInfo":
        d = _mapping(data, field, ("tunnelType", "tunnelDstAddress", "tunnelSrcAddress"),
                     ("tunnelType",))
        def opt(name):
            v = d.get(name)
            return None if v is None else validate.ip_address(v, f"{field}.{name}")
        return cls(_enum(d["tunnelType"], f"{field}.tunnelType", TUNNEL_TYPES),
                   opt("tunnelDstAddress"), opt("tunnelSrcAddress"))

    def to_etsi(self) -> dict:
        out = {"tunnelType": self.tunnel_type}
        if self.tunnel_dst_address is not None:
            out["tunnelDstAddress"] = self.tunnel_dst_address
        if self.tunnel_src_address is not None:
            out["tunnelSrcAddress"] = self.tunnel_src_address
        return out


@dataclass(frozen=True)
class DestinationInterface:
    """ETSI DestinationInterface (the brief's "InterfaceDescriptor")."""
    interface_type: str
    tunnel_info: TunnelInfo | None = None
    src_mac_address: str | None = None
    dst_mac_address: str | None = None
    dst_ip_address: str | None = None

    FIELDS = ("interfaceType", "tunnelInfo", "srcMacAddress", "dstMacAddress", "dstIpAddress")

    @classmethod
    def from_etsi(cls, data: Any, field: str = "dstInterface") -> "DestinationInterface":
        d = _mapping(data, field, cls.FIELDS, ("interfaceType",))
        def opt(name, check):
            v = d.get(name)
            return None if v is None else check(v, f"{field}.{name}")
        return cls(
            interface_type=_enum(d["interfaceType"], f"{field}.interfaceType", INTERFACE_TYPES),
            tunnel_info=opt("tunnelInfo", TunnelInfo.from_etsi),
            src_mac_address=opt("srcMacAddress", mac_address),
            dst_mac_address=opt("dstMacAddress", mac_address),
            dst_ip_address=opt("dstIpAddress", validate.ip_address),
        )

    def to_etsi(self) -> dict:
        out: dict[str, Any] = {"interfaceType": self.interface_type}
        if self.tunnel_info is not None:
            out["tunnelInfo"] = self.tunnel_info.to_etsi()
        for name, value in (("srcMacAddress", self.src_mac_address),
                            ("dstMacAddress", self.dst_mac_address),
                            ("dstIpAddress", self.dst_ip_address)):
            if value is not None:
                out[name] = value
        return out


@dataclass(frozen=True)
class TrafficRule:
    traffic_rule_id: str
    filter_type: str
    priority: int
    traffic_filter: tuple[TrafficFilter, ...]
    action: str
    state: str = "ACTIVE"
    dst_interface: tuple[DestinationInterface, ...] = ()

    FIELDS = ("trafficRuleId", "filterType", "priority", "trafficFilter", "action",
              "dstInterface", "state")
    REQUIRED = ("trafficRuleId", "filterType", "priority", "trafficFilter", "action", "state")

    @property
    def active(self) -> bool:
        return self.state == "ACTIVE"

    @classmethod
    def from_etsi(cls, data: Any, field: str = "trafficRule") -> "TrafficRule":
        d = _mapping(data, field, cls.FIELDS, cls.REQUIRED)
        filters = d["trafficFilter"]
        if not isinstance(filters, list) or not 1 <= len(filters) <= MAX_FILTERS:
            _fail(f"{field}.trafficFilter", f"must be an array of 1 to {MAX_FILTERS} filters")
        action = _enum(d["action"], f"{field}.action", ACTIONS)
        return cls(
            traffic_rule_id=validate.ident(d["trafficRuleId"], f"{field}.trafficRuleId"),
            filter_type=_enum(d["filterType"], f"{field}.filterType", FILTER_TYPES),
            priority=validate.integer(d["priority"], f"{field}.priority", 0, 255),
            traffic_filter=tuple(TrafficFilter.from_etsi(f, f"{field}.trafficFilter[{i}]")
                                 for i, f in enumerate(filters)),
            action=action,
            state=_enum(d["state"], f"{field}.state", STATES),
            dst_interface=_interfaces(d.get("dstInterface"), f"{field}.dstInterface", action),
        )

    def to_etsi(self) -> dict:
        out: dict[str, Any] = {
            "trafficRuleId": self.traffic_rule_id, "filterType": self.filter_type,
            "priority": self.priority,
            "trafficFilter": [f.to_etsi() for f in self.traffic_filter],
            "action": self.action, "state": self.state}
        if len(self.dst_interface) == 1:
            out["dstInterface"] = self.dst_interface[0].to_etsi()
        elif self.dst_interface:
            out["dstInterface"] = [i.to_etsi() for i in self.dst_interface]
        return out


def _interfaces(value: Any, field: str, action: str) -> tuple[DestinationInterface, ...]:
    if value is None:
        return ()
    if action == "DROP":
        _fail(field, "must not be given for a DROP rule")
    if isinstance(value, dict):
        return (DestinationInterface.from_etsi(value, field),)
    if not isinstance(value, list) or not 1 <= len(value) <= 2:
        _fail(field, "must be an object or an array of one or two objects")
    return tuple(DestinationInterface.from_etsi(v, f"{field}[{i}]") for i, v in enumerate(value))


# -- rule sets -----------------------------------------------------------------------

def unique_ids(rules: list, attr: str, field: str) -> None:
    """Refuse a rule set in which two rules share an id."""
    seen: set[str] = set()
    for rule in rules:
        rid = getattr(rule, attr)
        if rid in seen:
            _fail(field, f"duplicate id {rid!r}")
        seen.add(rid)


def instance_rules(appd: dict, request: dict
                   ) -> tuple[tuple["TrafficRule", ...], tuple[DnsRule, ...]]:
    """An instance's rules, validated (state ACTIVE): the AppD's
    appTrafficRule / appDNSRule descriptors, or the InstantiateAppRequest's
    own arrays, which replace them."""
    traffic_src = request.get("appTrafficRule", appd.get("appTrafficRule") or [])
    dns_src = request.get("appDNSRule", appd.get("appDNSRule") or [])
    if not isinstance(traffic_src, list) or not isinstance(dns_src, list):
        raise InvalidInput("appTrafficRule and appDNSRule must be arrays")
    traffic = [TrafficRule.from_etsi({"state": "ACTIVE", **_descriptor(d)},
                                     f"appTrafficRule[{i}]")
               for i, d in enumerate(traffic_src)]
    dns = [DnsRule.from_etsi({"state": "ACTIVE", **_descriptor(d)}, f"appDNSRule[{i}]")
           for i, d in enumerate(dns_src)]
    unique_ids(traffic, "traffic_rule_id", "appTrafficRule")
    unique_ids(dns, "dns_rule_id", "appDNSRule")
    return tuple(traffic), tuple(dns)


# MEC 010-2's InterfaceDescriptor (an AppD's or an InstantiateAppRequest's
# rule descriptor) spells these as MEC 011's DestinationInterface does not.
_INTERFACE_NAMES = {"dstIPAddress": "dstIpAddress", "dstMACAddress": "dstMacAddress",
                    "srcMACAddress": "srcMacAddress"}


def _descriptor(d) -> dict:
    """A rule descriptor (MEC 010-2: an AppD's or an instantiate request's)
    as the MEC 011 rule it becomes, minus `state`: its dstInterface is an
    array of InterfaceDescriptors (one object in the rule), whose
    dstIPAddress / dstMACAddress / srcMACAddress are the rule's
    dstIpAddress / dstMacAddress / srcMacAddress (MEC 011's spelling is
    taken too; both for one field is refused)."""
    if not isinstance(d, dict):
        raise InvalidInput("a rule descriptor must be an object")
    d = dict(d)
    if isinstance(d.get("dstInterface"), list) and len(d["dstInterface"]) == 1:
        d["dstInterface"] = d["dstInterface"][0]
    if d.get("dstInterface") == []:
        d.pop("dstInterface")
    itf = d.get("dstInterface")
    if isinstance(itf, dict):
        itf = dict(itf)
        for name, mp1_name in _INTERFACE_NAMES.items():
            if name in itf:
                if mp1_name in itf:
                    raise InvalidInput(f"dstInterface names both {name} and {mp1_name}: "
                                       f"one field, give it once")
                itf[mp1_name] = itf.pop(name)
        d["dstInterface"] = itf
    return d


# -- what a rule set claims: addresses and names ---------------------------------
#
# Ownership is decided on these pure values (mecorch.mepm.claims holds the ledger):
# a traffic rule claims every (destination address, port, protocol) its
# filters match; a DNS rule claims its name. Two instances may not claim
# overlapping destinations (one DNAT would shadow the other).

_PROTOCOL_NUMBERS = {"6": "tcp", "17": "udp", "132": "sctp", "1": "icmp", "58": "icmpv6",
                     "47": "gre", "50": "esp", "51": "ah"}
ALL_PORTS = ((0, 65535),)


@dataclass(frozen=True)
class Destination:
    """One box of destinations a TrafficFilter matches: an address interval,
    port intervals (ALL_PORTS when the filter names none) and protocols
    (None: every protocol)."""
    rule_id: str
    version: int
    lo: int
    hi: int
    ports: tuple[tuple[int, int], ...]
    protocols: frozenset | None

    def overlap(self, other: "Destination") -> str | None:
        """A destination both match, as text (`10.90.0.10:80/tcp`), or None."""
        if self.version != other.version or self.hi < other.lo or other.hi < self.lo:
            return None
        if self.protocols is None:
            protos = other.protocols
        elif other.protocols is None:
            protos = self.protocols
        else:
            protos = self.protocols & other.protocols
            if not protos:
                return None
        port = None
        for lo1, hi1 in self.ports:
            for lo2, hi2 in other.ports:
                if max(lo1, lo2) <= min(hi1, hi2):
                    port = max(lo1, lo2)
                    break
            if port is not None:
                break
        if port is None:
            return None
        addr = ipaddress.ip_address(max(self.lo, other.lo))
        shown = f"[{addr}]" if addr.version == 6 else str(addr)
        both_all = self.ports == ALL_PORTS and other.ports == ALL_PORTS
        proto = "any protocol" if protos is None else "/".join(sorted(protos))
        return f"{shown} ({proto}, every port)" if both_all else f"{shown}:{port}/{proto}"


def address_interval(value: str) -> tuple[int, int, int]:
    """(IP version, lowest, highest) of a normalised address, CIDR or range."""
    if "-" in value:
        lo_s, _, hi_s = value.partition("-")
        lo, hi = ipaddress.ip_address(lo_s), ipaddress.ip_address(hi_s)
        return lo.version, int(lo), int(hi)
    net = ipaddress.ip_network(value, strict=False)
    return net.version, int(net.network_address), int(net.broadcast_address)


def _port_interval(value: str) -> tuple[int, int]:
    lo, _, hi = value.partition("-")
    return int(lo), int(hi or lo)


def destinations(rule: TrafficRule) -> list[Destination]:
    """Every destination box the rule's filters match. A filter without
    dstAddress matches every address (version 4 and 6)."""
    out = []
    for flt in rule.traffic_filter:
        protos = frozenset(_PROTOCOL_NUMBERS.get(p, p) for p in flt.protocol) or None
        if protos is None and flt.dst_port:
            protos = frozenset(("tcp", "udp"))      # as the MEP renders a port alone
        ports = tuple(_port_interval(p) for p in flt.dst_port) or ALL_PORTS
        addrs = [address_interval(a) for a in flt.dst_address] or [
            (4, 0, 2**32 - 1), (6, 0, 2**128 - 1)]
        for version, lo, hi in addrs:
            out.append(Destination(rule.traffic_rule_id, version, lo, hi, ports, protos))
    return out


def outside(rule: TrafficRule, service_range: str) -> str | None:
    """The first destination address of the rule that is not inside
    `service_range` (a CIDR), or None when all are. A filter without
    dstAddress is reported as "every address"."""
    net = ipaddress.ip_network(service_range)
    for flt in rule.traffic_filter:
        if not flt.dst_address:
            return "every address (the filter names no dstAddress)"
        for value in flt.dst_address:
            version, lo, hi = address_interval(value)
            if version != net.version or lo < int(net.network_address) \
                    or hi > int(net.broadcast_address):
                return value
    return None


def below_domain(name: str, domain: str) -> bool:
    """`name` is a name below `domain` (both normalised, lower-case). The
    domain itself is not below it: the MEC domain is the host's, no app's
    to claim (issue 28, finding 10)."""
    domain = domain.lower().rstrip(".")
    return name.endswith("." + domain)


def foreign_target(rule: TrafficRule, own: str | None) -> str | None:
    """The first dstInterface.dstIpAddress of the rule that is not `own`
    (the instance's own address; None when it has none yet), or None when
    every one is. Where traffic is sent (DNATed to) must be the rule's own
    instance: any other address would let an app steer its service address
    to something it does not own (issue 28, finding 1). A rule naming no
    dstIpAddress steers to its instance."""
    mine = ipaddress.ip_address(own) if own else None
    for iface in rule.dst_interface:
        addr = iface.dst_ip_address
        if addr is not None and ipaddress.ip_address(addr) != mine:
            return addr
    return None


# -- service addresses the MEP allocates -----------------------------------------
#
# mecorch departure from MEC 010-2/011 (neither has the notion): a rule set
# may ask for a service address without naming one, so one package deploys
# unchanged on hosts with different service ranges. On a host with a
# service range (`mep.service_cidr`):
# - a TrafficFilter that names no dstAddress (but a port, protocol, ...)
#   matches the instance's service address (before, it meant "every
#   address", which such a host refuses as outside its range);
# - a DnsRule without ipAddress answers the instance's service address.
# The host's MEP allocates one address per instance (as a Kubernetes
# Service gets one ClusterIP for all its ports): the lowest of the range
# no instance of the host holds (mecorch.mepm.claims), and writes it into
# the stored rules, so Mp1 and `app show` show it, a restart and the
# reconciliation keep it, and terminate frees it. On a host without a
# range a filter without dstAddress keeps matching every address, and a
# DNS rule without ipAddress is refused (nothing to allocate from).

def asks_address(traffic, dns, service_range: str | None) -> bool:
    """Does the rule set ask its host for a service address?"""
    if any(r.ip_address is None for r in dns):
        return True
    return bool(service_range) and any(
        not flt.dst_address for rule in traffic for flt in rule.traffic_filter)


def with_service_address(traffic, dns, addr: str, service_range: str | None = None):
    """The rule set with `addr` put where it asks for its service address:
    in each DNS rule without ipAddress and, on a host with a range, each
    filter without dstAddress."""
    from dataclasses import replace
    out_traffic = tuple(rule if not service_range else replace(rule, traffic_filter=tuple(
        flt if flt.dst_address else replace(flt, dst_address=(addr,))
        for flt in rule.traffic_filter)) for rule in traffic)
    out_dns = tuple(r if r.ip_address is not None else replace(r, ip_address=addr)
                    for r in dns)
    return out_traffic, out_dns


def fixed_addresses(traffic) -> tuple[str, ...]:
    """Every dstAddress the rules name (an address, CIDR or range): the
    addresses that bind the instance to hosts whose range holds them."""
    return tuple(dict.fromkeys(a for rule in traffic for flt in rule.traffic_filter
                               for a in flt.dst_address))


def held_intervals(traffic, dns) -> list[tuple[int, int, int]]:
    """(version, lo, hi) of every address a rule set holds: its filters'
    dstAddresses and its DNS rules' ipAddresses."""
    out = [address_interval(a) for a in fixed_addresses(traffic)]
    for r in dns:
        if r.ip_address is not None:
            ip = ipaddress.ip_address(r.ip_address)
            out.append((ip.version, int(ip), int(ip)))
    return out


def lowest_free(service_range: str, held) -> str | None:
    """The lowest address of `service_range` (its network and broadcast
    addresses excepted, as a Kubernetes Service IP allocator does) that no
    interval of `held` covers, or None when none is left."""
    net = ipaddress.ip_network(service_range)
    lo, hi = int(net.network_address), int(net.broadcast_address)
    if net.num_addresses > 2:
        lo, hi = lo + 1, hi - 1 if net.version == 4 else hi
    spans = sorted((a, b) for v, a, b in held if v == net.version and b >= lo and a <= hi)
    cand = lo
    for a, b in spans:
        if a > cand:
            break
        cand = max(cand, b + 1)
    return str(ipaddress.ip_address(cand)) if cand <= hi else None


def in_range(value: str, service_range: str) -> bool:
    """Is the address, CIDR or range `value` wholly inside `service_range`?"""
    net = ipaddress.ip_network(service_range)
    version, lo, hi = address_interval(value)
    return version == net.version and lo >= int(net.network_address) \
        and hi <= int(net.broadcast_address)


def with_fixed_addresses(traffic) -> tuple["TrafficRule", ...]:
    """The traffic rules with only their filters that name their
    destination addresses (dstAddress): what a rule set claims before its
    host gives it an address (a filter without one asks the host, which
    alone can check what it gets). A rule left with no filter is left out."""
    from dataclasses import replace
    out = []
    for rule in traffic:
        named = tuple(flt for flt in rule.traffic_filter if flt.dst_address)
        if named:
            out.append(replace(rule, traffic_filter=named))
    return tuple(out)


def replica_key(rule: dict) -> str:
    """What replicas of one app must have in common to share a rule's
    destinations (an ETSI TrafficRule document, normalised): the rule but
    its dstInterface (each steers to its own instance) and its state. Two
    instances with the same key match the same connections, so the MEP
    can spread them over both. Protocols compare normalised ("TCP" is
    "tcp": a document keeps them as the client spelled them)."""
    filters = [{**flt, "protocol": [protocol(p, "protocol") for p in flt["protocol"]]}
               if isinstance(flt, dict) and flt.get("protocol") else flt
               for flt in rule.get("trafficFilter") or []]
    return json.dumps([filters, rule.get("filterType"),
                       rule.get("priority"), rule.get("action")], sort_keys=True)


def claim_conflict(traffic, dns, app_d_id: str | None, others,
                   share: bool = False) -> str | None:
    """Why a rule set (values) cannot be claimed on a host where `others`
    ((instance id, stored rule set: ETSI `trafficRules`, `dnsRules` and its
    `appDId`) of the host's other instances) hold claims, or None: a
    destination (address:port/protocol) another instance steers, or a DNS
    name another app's instance has. Instances of the same app share
    names; with `share` (a replica: the request's `shareServiceAddress`,
    or the other's stored flag) destinations too, when both steer them
    with the same rule (`replica_key`: the MEP spreads connections over
    them). The one
    wording of both levels: the host's ledger (`mepm.claims`) and the MEO
    before its 202 (`meo.lcm`, over what it last knew of the host)."""
    mine = [d for rule in traffic for d in destinations(rule)]
    keys = {r.traffic_rule_id: replica_key(r.to_etsi()) for r in traffic}
    names = {r.domain_name: r.dns_rule_id for r in dns}
    for other_id, other in others:
        same_app = app_d_id is not None and other.get("appDId") == app_d_id
        # a pair shares when either asked to be a replica: the instance
        # joined keeps its Mp1 changes checked as before
        replica = same_app and (share or bool(other.get("shareServiceAddress")))
        for rule in other.get("trafficRules") or []:
            key = replica_key(rule)
            for theirs in destinations(TrafficRule.from_etsi(rule)):
                for d in mine:
                    where = d.overlap(theirs)
                    if not where or (replica and keys[d.rule_id] == key):
                        continue
                    hint = (" (a replica shares a destination only with the same rule: "
                            "trafficFilter, filterType, priority and action alike)" if replica
                            else " (an instance of the same app shares it as a replica: "
                            "shareServiceAddress)" if same_app else "")
                    return (f"trafficRule {d.rule_id}: {where} is steered by instance "
                            f"{other_id} (app {other.get('appDId')}, trafficRule "
                            f"{theirs.rule_id}){hint}")
        if same_app:
            continue            # the same app's replicas share names
        for rule in other.get("dnsRules") or []:
            name = rule["domainName"]
            if name in names:
                return (f"dnsRule {names[name]}: the name {name} belongs to instance "
                        f"{other_id} (app {other.get('appDId')}); only instances of that "
                        f"app may share it")
    return None
