"""Validating an AppD (ETSI MEC 010-2 6.2.1.2) and deriving the app's
deployment manner from its software image descriptor.

The NFV types the AppD refers to (virtualComputeDescriptor,
swImageDescriptor, virtualStorageDescriptor) follow ETSI GS NFV-IFA 011
field names; units: virtualMemSize and minRam in MB, minDisk, size and
sizeOfStorage in GB. One documented deviation: `numVirtualCpu` may be
fractional (0.5) for a container app; a VM app needs a whole number.

Manner: containerFormat DOCKER -> CONTAINER; containerFormat BARE with
diskFormat QCOW2 or RAW -> VM; anything else is refused.

Dual-format apps (a mecorch extension): swImageDescriptor may be a list of
two SwImageDesc, one per manner (a `docker save` tar and a qcow2/raw disk);
each may carry its own virtualComputeDescriptor and virtualStorageDescriptor
(the needs of that manner, replacing the AppD's top-level ones for it).

Every attribute is checked before the AppD is stored and served as the
package's AppD: those mecorch reads for their values, the others for their
MEC 010-2 type (ATTRIBUTES) or, inside the NFV structures, the type
mecorch.package.schema gives them. Keys are closed at every level (an
unknown one is refused naming it), texts and lists bounded.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from mecorch.spec import probes, restart, rules
from mecorch.kernel import validate
from mecorch.kernel.errors import InvalidInput
from mecorch.kernel.states import DeploymentType
from mecorch.package.schema import NFV_SCHEMAS

REQUIRED = ("appDId", "appName", "appProvider", "appSoftVersion", "appDVersion",
            "mecVersion", "appDescription", "virtualComputeDescriptor", "swImageDescriptor")
# Every top-level AppD attribute of MEC 010-2: an unknown key is most likely
# a misspelt one, which would otherwise be ignored silently.
KNOWN = set(REQUIRED) | {
    "appInfoName", "appServiceRequired", "appServiceOptional", "appServiceProduced",
    "appFeatureRequired", "appFeatureOptional", "transportDependencies",
    "appTrafficRule", "appDNSRule", "appLatency", "terminateAppInstanceOpConfig",
    "changeAppInstanceStateOpConfig", "virtualStorageDescriptor", "appExtCpd",
    probes.APPD_FIELD,                  # mecorch extension: health checks
    # mecorch extension (mecorch.spec.restart): what to do when the app dies
    "restartPolicy"}
CONTAINER_FORMATS = {"AKI", "AMI", "ARI", "BARE", "DOCKER", "OVA", "OVF"}
DISK_FORMATS = {"AKI", "AMI", "ARI", "ISO", "QCOW2", "RAW", "VDI", "VHD", "VHDX", "VMDK"}
TRAFFIC_ACTIONS = {"DROP", "FORWARD_DECAPSULATED", "FORWARD_AS_IS", "PASSTHROUGH",
                   "DUPLICATED_DECAPSULATED", "DUPLICATE_AS_IS"}
# MEC 010-2 DNSRuleDescriptor, TrafficRuleDescriptor, InterfaceDescriptor
DNS_RULE_FIELDS = ("dnsRuleId", "domainName", "ipAddressType", "ipAddress", "ttl")
TRAFFIC_RULE_FIELDS = ("trafficRuleId", "filterType", "priority", "trafficFilter", "action",
                       "dstInterface")
INTERFACE_FIELDS = ("interfaceType", "tunnelInfo", "srcMACAddress", "dstMACAddress",
                    "dstIPAddress")
# Where a swImage that is not a package file cannot be an image reference:
# it looks like a file name, so "not in the package" is the clear error.
FILE_SUFFIXES = (".tar", ".qcow2", ".img", ".raw", ".iso")


@dataclass(frozen=True)
class ImageInfo:
    """The software image of the app. `path` (a file in the package) or
    `reference` (a container image reference) is set, never both. `sha256`
    is the declared checksum, or for a file its manifest hash (verified
    equal when both exist)."""
    id: str
    name: str
    version: str
    container_format: str
    disk_format: str | None
    path: str | None = None
    reference: str | None = None
    sha256: str | None = None
    size: int | None = None             # bytes of the file in the package
    min_disk_gb: float | None = None
    min_ram_mb: float | None = None
    manner: DeploymentType | None = None    # the manner this image deploys by


def _mapping(value, field: str) -> dict:
    if not isinstance(value, dict):
        raise InvalidInput(f"{field}: must be a mapping")
    return value


def _list(value, field: str, max_items: int = 64) -> list:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > max_items:
        raise InvalidInput(f"{field}: must be a list of at most {max_items} items")
    return value


def _enum(value, field: str, allowed: set[str]) -> str:
    if not isinstance(value, str) or value.upper() not in allowed:
        raise InvalidInput(f"{field}: {value!r} is not one of {', '.join(sorted(allowed))}")
    return value.upper()


def _unique_ids(items: list[dict], key: str, field: str) -> None:
    ids = [item[key] for item in items]
    dup = {i for i in ids if ids.count(i) > 1}
    if dup:
        raise InvalidInput(f"{field}: {key} {', '.join(sorted(dup))} used more than once")


def _closed(value: dict, schema: dict, field: str, read: tuple[str, ...],
            extra: tuple[str, ...] = ()) -> dict:
    """An NFV structure has the keys its schema (mecorch.package.schema)
    gives, and `extra`; an unknown one is refused naming it. Those mecorch
    does not read itself (`read`) are checked for their schema type."""
    props = schema["properties"]
    validate.known_fields(value, (*props, *extra), field)
    for key, v in value.items():
        if key not in read and key not in extra and v is not None:
            _typed(v, props[key], f"{field}.{key}")
    return value


def _typed(value, schema: dict, field: str, depth: int = 4) -> None:
    """A value of an NFV attribute mecorch keeps but does not read: its
    schema type, texts and lists bounded; an array without an item schema
    holds scalars or small mappings (IFA 011 key-value structures)."""
    kind = schema.get("type")
    if kind == "string" or kind is None and isinstance(value, str):
        validate.text(value, field, 256)
    elif kind == "number" or kind is None and isinstance(value, (int, float)) \
            and not isinstance(value, bool):
        validate.number(value, field, 0 if kind else -1e12, 1e9 if kind else 1e12)
    elif kind == "boolean" or kind is None and isinstance(value, bool):
        if not isinstance(value, bool):
            raise InvalidInput(f"{field}: must be true or false")
    elif (kind == "array" or kind is None and isinstance(value, list)) and depth > 0:
        for i, item in enumerate(_list(value, field, 16)):
            _typed(item, schema.get("items", {}), f"{field}[{i}]", depth - 1)
    elif kind in (None, "object") and isinstance(value, dict) and depth > 0:
        if len(value) > 16:
            raise InvalidInput(f"{field}: must have at most 16 fields")
        for k, v in value.items():
            validate.text(k, f"{field} (a field name)", 64)
            _typed(v, {}, f"{field}.{k}", depth - 1)
    else:
        raise InvalidInput(f"{field}: must be " + (f"a {kind}" if kind else
                                                   "a text, a number, true/false or a "
                                                   "small mapping of those"))


def checksum(value, field: str) -> str | None:
    """NFV checksum: 'hex', 'sha256:hex' or {algorithm: SHA-256, hash: hex}."""
    if value is None:
        return None
    if isinstance(value, dict):
        algo = str(value.get("algorithm", "")).upper().replace("_", "-")
        if algo not in ("SHA-256", "SHA256"):
            raise InvalidInput(f"{field}.algorithm: only SHA-256 is supported")
        return validate.sha256(value.get("hash"), f"{field}.hash")
    if isinstance(value, str) and value.lower().startswith("sha256:"):
        value = value[7:]
    return validate.sha256(value, field)


def compute(vcd, manner: DeploymentType) -> dict:
    f = "virtualComputeDescriptor"
    schema = NFV_SCHEMAS["VirtualComputeDescription"]
    vcd = _closed(_mapping(vcd, f), schema, f, ("virtualComputeDescId", "virtualCpu",
                                                "virtualMemory"))
    vcpu = _closed(_mapping(vcd.get("virtualCpu"), f"{f}.virtualCpu"),
                   schema["properties"]["virtualCpu"], f"{f}.virtualCpu", ("numVirtualCpu",))
    mem = _closed(_mapping(vcd.get("virtualMemory"), f"{f}.virtualMemory"),
                  schema["properties"]["virtualMemory"], f"{f}.virtualMemory",
                  ("virtualMemSize",))
    validate.ident(vcd.get("virtualComputeDescId"), f"{f}.virtualComputeDescId")
    n = validate.number(vcpu.get("numVirtualCpu"), f"{f}.virtualCpu.numVirtualCpu", 0.01, 256)
    if manner is DeploymentType.VM and n != int(n):
        raise InvalidInput(f"{f}.virtualCpu.numVirtualCpu: a VM needs a whole number "
                           f"of vCPUs, not {n:g}")
    mb = validate.number(mem.get("virtualMemSize"), f"{f}.virtualMemory.virtualMemSize",
                         4, 1 << 20)
    return {"vcpu": n, "memory_mb": int(mb)}


SW_IMAGE_READ = ("id", "name", "version", "checksum", "containerFormat", "diskFormat",
                 "minDisk", "minRam", "size", "swImage")


def software_image(swd, extra: tuple[str, ...] = ()) -> tuple[DeploymentType, dict]:
    """(manner, validated swImageDescriptor fields); `extra`: the other
    keys it may have (a dual-format image's own needs)."""
    f = "swImageDescriptor"
    swd = _closed(_mapping(swd, f), NFV_SCHEMAS["SwImageDescriptor"], f, SW_IMAGE_READ, extra)
    out = {"id": validate.ident(swd.get("id"), f"{f}.id"),
           "name": validate.text(swd.get("name"), f"{f}.name", 128),
           "version": validate.text(swd.get("version"), f"{f}.version", 64),
           "checksum": checksum(swd.get("checksum"), f"{f}.checksum")}
    cf = _enum(swd.get("containerFormat"), f"{f}.containerFormat", CONTAINER_FORMATS)
    df = swd.get("diskFormat")
    df = None if df is None else _enum(df, f"{f}.diskFormat", DISK_FORMATS)
    if cf == "DOCKER" and df in (None, "RAW"):
        manner = DeploymentType.CONTAINER
    elif cf == "BARE" and df in ("QCOW2", "RAW"):
        manner = DeploymentType.VM
    else:
        raise InvalidInput(
            f"{f}: containerFormat {cf} with diskFormat {df} is not deployable: use "
            "containerFormat DOCKER (a container app) or containerFormat BARE with "
            "diskFormat QCOW2 or RAW (a VM app)")
    for key, lo, hi in (("minDisk", 0, 16384), ("minRam", 0, 1 << 20), ("size", 0, 16384)):
        if swd.get(key) is not None:
            out[key] = validate.number(swd[key], f"{f}.{key}", lo, hi)
    swimage = swd.get("swImage")
    out["swImage"] = validate.text(swimage, f"{f}.swImage", 255)
    out["containerFormat"], out["diskFormat"] = cf, df
    return manner, out


def image_location(swimage: str, manner: DeploymentType, files: set[str]) -> tuple[str, str]:
    """('file', member) when swImage names a package file, else
    ('reference', ref) for a container image reference."""
    f = "swImageDescriptor.swImage"
    if swimage in files:
        return "file", swimage
    # A VM image is always a file; so is anything shaped like a file path
    # ("Artifacts/x", "x.tar"): saying "not in the package" is the clear error.
    looks_like_path = (swimage.split("/")[0][:1].isupper() and "/" in swimage
                       or swimage.lower().endswith(FILE_SUFFIXES))
    if manner is DeploymentType.VM or looks_like_path:
        raise InvalidInput(f"{f}: {swimage!r} is not a file in the package"
                           + ("" if manner is DeploymentType.VM else
                              " (and not an image reference)"))
    return "reference", validate.image_ref(swimage, f)


def check_image_head(head: bytes, path: str, manner: DeploymentType, disk_format: str | None):
    """The file's first bytes match its declared format: a `docker save`
    tar (ustar header), a qcow2 (QFI\\xfb magic); a raw disk has no magic."""
    f = "swImageDescriptor.swImage"
    if manner is DeploymentType.CONTAINER and head[257:262] != b"ustar":
        raise InvalidInput(f"{f}: {path} is not a tar archive (a `docker save` tar is expected)")
    if disk_format == "QCOW2" and head[:4] != b"QFI\xfb":
        raise InvalidInput(f"{f}: {path} is not a qcow2 image (diskFormat QCOW2)")
    if disk_format == "RAW" and manner is DeploymentType.VM and head[:4] == b"QFI\xfb":
        raise InvalidInput(f"{f}: {path} is a qcow2 image but diskFormat says RAW")


def storage(value) -> list[dict]:
    f = "virtualStorageDescriptor"
    out = []
    for i, vsd in enumerate(_list(value, f, 16)):
        g = f"{f}[{i}]"
        vsd = _closed(_mapping(vsd, g), NFV_SCHEMAS["VirtualStorageDescriptor"], g,
                      ("id", "typeOfStorage", "sizeOfStorage"))
        out.append({"id": validate.ident(vsd.get("id"), f"{g}.id"),
                    "typeOfStorage": _enum(vsd.get("typeOfStorage"), f"{g}.typeOfStorage",
                                           {"BLOCK", "OBJECT", "FILE"}),
                    "size_gb": validate.number(vsd.get("sizeOfStorage"),
                                               f"{g}.sizeOfStorage", 0.001, 16384)})
    _unique_ids(out, "id", f)
    return out


def dns_rules(value) -> None:
    f = "appDNSRule"
    rules = _list(value, f)
    for i, rule in enumerate(rules):
        g = f"{f}[{i}]"
        rule = _mapping(rule, g)
        validate.known_fields(rule, DNS_RULE_FIELDS, g)
        validate.ident(rule.get("dnsRuleId"), f"{g}.dnsRuleId")
        validate.domain_name(rule.get("domainName"), f"{g}.domainName")
        kind = _enum(rule.get("ipAddressType"), f"{g}.ipAddressType", {"IP_V4", "IP_V6"})
        if rule.get("ipAddress") is not None:   # none: the host gives one (spec/rules.py)
            validate.ip_address(rule["ipAddress"], f"{g}.ipAddress",
                                4 if kind == "IP_V4" else 6)
        if rule.get("ttl") is not None:
            validate.integer(rule["ttl"], f"{g}.ttl", 0, 2**31 - 1)
    _unique_ids(rules, "dnsRuleId", f)


def traffic_rules(value) -> None:
    """Shape and values. Filters are checked by mecorch.spec.rules (MEC 011,
    the same values the MEP accepts; MEC 010-2's `tag` is MEC 011's
    `token`); what the MEP can express is the driver's own check."""
    f = "appTrafficRule"
    rules_ = _list(value, f)
    for i, rule in enumerate(rules_):
        g = f"{f}[{i}]"
        rule = _mapping(rule, g)
        validate.known_fields(rule, TRAFFIC_RULE_FIELDS, g)
        validate.ident(rule.get("trafficRuleId"), f"{g}.trafficRuleId")
        _enum(rule.get("filterType"), f"{g}.filterType", {"FLOW", "PACKET"})
        validate.integer(rule.get("priority"), f"{g}.priority", 0, 255)
        _enum(rule.get("action"), f"{g}.action", TRAFFIC_ACTIONS)
        filters = _list(rule.get("trafficFilter"), f"{g}.trafficFilter", rules.MAX_FILTERS)
        if not filters:
            raise InvalidInput(f"{g}.trafficFilter: at least one filter is required")
        for j, flt in enumerate(filters):
            flt = _mapping(flt, f"{g}.trafficFilter[{j}]")
            rules.TrafficFilter.from_etsi({"token" if k == "tag" else k: v
                                           for k, v in flt.items()},
                                          f"{g}.trafficFilter[{j}]")
        for j, itf in enumerate(_list(rule.get("dstInterface"), f"{g}.dstInterface", 2)):
            h = f"{g}.dstInterface[{j}]"
            itf = _mapping(itf, h)
            validate.known_fields(itf, INTERFACE_FIELDS, h)
            _enum(itf.get("interfaceType"), f"{h}.interfaceType", {"TUNNEL", "MAC", "IP"})
            if itf.get("tunnelInfo") is not None:
                rules.TunnelInfo.from_etsi(itf["tunnelInfo"], f"{h}.tunnelInfo")
            if itf.get("dstIPAddress") is not None:
                validate.ip_address(itf["dstIPAddress"], f"{h}.dstIPAddress")
            for key in ("srcMACAddress", "dstMACAddress"):
                if itf.get(key) is not None:
                    rules.mac_address(itf[key], f"{h}.{key}")
    _unique_ids(rules_, "trafficRuleId", f)


# -- the other AppD attributes -------------------------------------------------
# Each is checked against its MEC 010-2 type (6.2.1.x; the types MEC 010-2
# takes from MEC 011 and, for the two OpConfigs, NFV-IFA 011) before the
# AppD is stored and served: closed keys (an unknown one is refused naming
# it), texts and lists bounded. A check is a function (value, field path).

def _str(max_len: int = 256):
    return lambda v, f: validate.text(v, f, max_len)


def _int(lo: int, hi: int):
    return lambda v, f: validate.integer(v, f, lo, hi)


def _one_of(*allowed: str):
    def check(v, f):
        if not isinstance(v, str) or v not in allowed:
            raise InvalidInput(f"{f}: {str(v)[:64]!r} is not one of {', '.join(allowed)}")
    return check


def _list_of(item, lo: int = 0, hi: int = 16):
    def check(v, f):
        if not isinstance(v, list) or not lo <= len(v) <= hi:
            raise InvalidInput(f"{f}: must be a list of {lo} to {hi} items")
        for i, x in enumerate(v):
            item(x, f"{f}[{i}]")
    return check


def _struct(required: dict, optional: dict | None = None):
    fields = {**required, **(optional or {})}

    def check(v, f):
        _mapping(v, f)
        validate.known_fields(v, fields, f)
        missing = [k for k in required if v.get(k) is None]
        if missing:
            raise InvalidInput(f"{f}: required field(s) missing: {', '.join(missing)}")
        for k, sub in fields.items():
            if v.get(k) is not None:
                sub(v[k], f"{f}.{k}")
    return check


def _bool(v, f):
    if not isinstance(v, bool):
        raise InvalidInput(f"{f}: must be true or false")


_URI = _str(2048)
# MEC 011 CategoryRef, SecurityInfo, TransportTypes, SerializerTypes
_CATEGORY = _struct({"href": _URI, "id": _str(), "name": _str(), "version": _str()})
_SECURITY = _struct({}, {"oAuth2Info": _struct({}, {
    "grantTypes": _list_of(_one_of("OAUTH2_AUTHORIZATION_CODE", "OAUTH2_IMPLICIT_GRANT",
                                   "OAUTH2_RESOURCE_OWNER", "OAUTH2_CLIENT_CREDENTIALS"),
                           0, 4),
    "tokenEndpoint": _URI})})
_SERIALIZERS = _list_of(_one_of("JSON", "XML", "PROTOBUF3"), 1, 3)
# 6.2.1.19 TransportDescriptor, 6.2.1.18 TransportDependency
_TRANSPORT = _struct({"type": _one_of("REST_HTTP", "MB_TOPIC_BASED", "MB_ROUTING",
                                      "MB_PUBSUB", "RPC", "RPC_STREAMING", "WEBSOCKET"),
                      "protocol": _str(64), "version": _str(64), "security": _SECURITY})
_TRANSPORT_DEPENDENCY = _struct({"transport": _TRANSPORT, "serializers": _SERIALIZERS,
                                 "labels": _list_of(_str(128), 1, 16)})
# 6.2.1.17 ServiceDependency (requestedPermissions: "left for the data
# model design stage"; mecorch takes names of permissions)
_SERVICE_DEPENDENCY = _struct(
    {"serName": _str(128), "version": _str(64)},
    {"serCategory": _CATEGORY, "serTransportDependencies": _list_of(_TRANSPORT_DEPENDENCY),
     "requestedPermissions": _list_of(_str(128), 0, 64)})
# 6.2.1.16 ServiceDescriptor: transportsSupported is a list of {transport,
# serializers} as the table gives it (0..N)
_SERVICE_DESCRIPTOR = _struct(
    {"serName": _str(128), "version": _str(64)},
    {"serCategory": _CATEGORY,
     "transportsSupported": _list_of(_struct({"transport": _TRANSPORT,
                                              "serializers": _SERIALIZERS}))})
# 6.2.1.8 FeatureDependency
_FEATURE = _struct({"featureName": _str(128), "version": _str(64)})
_SECONDS = _int(0, 86400)
_PARAMETERS = _list_of(_str(256), 0, 32)
# 6.2.1.6 AppExternalCpd: the Cpd attributes of NFV-IFA 011 under
# inherited_attributes (as MEC 010-2's OpenAPI has it)
_EXT_CPD = _struct(
    {"inherited_attributes": _struct(
        {"cpdId": validate.ident,
         "layerProtocol": _list_of(_one_of("Ethernet", "MPLS", "ODU2", "IPV4", "IPV6",
                                           "Pseudo-Wire"), 1, 6)},
        {"cpRole": _str(64), "description": _str(1024), "trunkMode": _bool})},
    {"virtualNetworkInterfaceRequirements": _list_of(_struct(
        {"supportMandatory": _bool},
        {"name": _str(128), "description": _str(1024),
         "networkInterfaceRequirements": _list_of(_str(256), 0, 32)}))})

ATTRIBUTES = {
    "appServiceRequired": _list_of(_SERVICE_DEPENDENCY, 0, 64),
    "appServiceOptional": _list_of(_SERVICE_DEPENDENCY, 0, 64),
    "appServiceProduced": _list_of(_SERVICE_DESCRIPTOR, 0, 64),
    "appFeatureRequired": _list_of(_FEATURE, 0, 64),
    "appFeatureOptional": _list_of(_FEATURE, 0, 64),
    "transportDependencies": _list_of(_TRANSPORT_DEPENDENCY, 0, 16),
    # 6.2.1.14 LatencyDescriptor: maxLatency in ns, Uint32
    "appLatency": _struct({"maxLatency": _int(0, 2**32 - 1)}),
    # NFV-IFA 011 TerminateVnfOpConfig and OperateVnfOpConfig, in seconds
    "terminateAppInstanceOpConfig": _struct(
        {"minGracefulTerminationTimeout": _SECONDS},
        {"maxRecommendedGracefulTerminationTimeout": _SECONDS, "parameter": _PARAMETERS}),
    "changeAppInstanceStateOpConfig": _struct(
        {"minGracefulStopTimeout": _SECONDS},
        {"maxRecommendedGracefulStopTimeout": _SECONDS, "parameter": _PARAMETERS}),
    "appExtCpd": _list_of(_EXT_CPD, 0, 16),
    probes.APPD_FIELD: probes.check_appd,
}


IMAGE_NEEDS = ("virtualComputeDescriptor", "virtualStorageDescriptor")


def software_images(appd: dict) -> list[dict]:
    """Every software image of the AppD with its manner and its own needs:
    [{manner, sw_image, compute, storage}], in AppD order. A list of
    swImageDescriptor (dual-format) holds at most one image per manner."""
    f = "swImageDescriptor"
    entries = appd[f] if isinstance(appd[f], list) else [appd[f]]
    if not 1 <= len(entries) <= 2:
        raise InvalidInput(f"{f}: a list must hold one or two images (one per manner)")
    out = []
    for i, entry in enumerate(entries):
        where = f"{f}[{i}]" if isinstance(appd[f], list) else f
        try:
            manner, sw = software_image(entry, IMAGE_NEEDS if isinstance(appd[f], list)
                                        else ())
            own = entry if isinstance(appd[f], list) else {}
            vcd = own.get("virtualComputeDescriptor") or appd["virtualComputeDescriptor"]
            vsd = own.get("virtualStorageDescriptor", appd.get("virtualStorageDescriptor"))
            item = {"manner": manner, "sw_image": sw, "compute": compute(vcd, manner),
                    "storage": storage(vsd)}
        except InvalidInput as e:
            if where == f:
                raise
            raise InvalidInput(e.detail.replace(f, where, 1)
                               if e.detail.startswith(f) else f"{where}: {e.detail}") from None
        if any(o["manner"] is manner for o in out):
            raise InvalidInput(f"{where}: a second {manner.value} image; a dual-format AppD "
                               "has one image per manner")
        out.append(item)
    if len({o["sw_image"]["id"] for o in out}) < len(out):
        raise InvalidInput(f"{f}: the images need distinct ids")
    return out


def validate_appd(appd) -> dict:
    """Check an AppD; return what the rest of mecorch needs from it:
    {app_d_id, manner, sw_image (validated fields), compute, storage} of
    its first image, and `images`: every image with its manner and needs."""
    appd = _mapping(appd, "AppD")
    missing = [k for k in REQUIRED if appd.get(k) in (None, "", [], {})]
    if missing:
        raise InvalidInput(f"AppD: required field(s) missing: {', '.join(missing)}")
    unknown = sorted(map(str, (k for k in appd if k not in KNOWN)))
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(KNOWN), n=1, cutoff=0.6)
        raise InvalidInput(f"AppD: unknown field(s) {', '.join(unknown)} "
                           "(not an ETSI MEC 010-2 AppD attribute"
                           + (f"; did you mean {close[0]!r}?)" if close else ")"))
    app_d_id = validate.ident(appd["appDId"], "appDId")
    for key in ("appName", "appProvider", "appSoftVersion", "appDVersion"):
        validate.text(appd[key], key, 128)
    validate.text(appd["appDescription"], "appDescription", 1024)
    if appd.get("appInfoName") is not None:
        validate.text(appd["appInfoName"], "appInfoName", 128)
    versions = _list(appd["mecVersion"], "mecVersion", 16)
    for i, v in enumerate(versions):
        validate.text(v, f"mecVersion[{i}]", 32)
    images = software_images(appd)
    first = images[0]
    result = {"app_d_id": app_d_id, "manner": first["manner"], "sw_image": first["sw_image"],
              "compute": first["compute"], "storage": first["storage"], "images": images}
    dns_rules(appd.get("appDNSRule"))
    traffic_rules(appd.get("appTrafficRule"))
    restart.check_appd(appd)
    for key, check in ATTRIBUTES.items():
        if appd.get(key) is not None:
            check(appd[key], key)
    return result
