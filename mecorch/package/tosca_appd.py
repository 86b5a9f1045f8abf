"""Reading a TOSCA AppD into mecorch's AppD (ETSI MEC 010-2 field names).

Two published shapes are read, with the node-template reader that
orchestrationInfo uses (mecorch.spec.orchestration_info.tosca_nodes):

- ETSI GS MEC 037: a node derived from tosca.nodes.mec.MecApp (itself a
  tosca.nodes.nfv.VNF) whose properties, or the defaults of its node type,
  carry descriptor_id, descriptor_version, provider, product_name,
  software_version, product_info_name, product_info_description,
  mec_version and the MEC attributes in snake_case (app_traffic_rule,
  app_dns_rule, ...); a tosca.nodes.nfv.Vdu.Compute (VM) or
  tosca.nodes.nfv.Vdu.OsContainer (container) node with a
  tosca.artifacts.nfv.SwImage artifact `sw_image`; storage as
  tosca.nodes.nfv.Vdu.VirtualBlockStorage.
- EdgeGallery: a tosca.nodes.nfv.VNF node (vnfd_id, vnfd_version, provider,
  product_name, software_version, ...; the template's metadata vnfd_id and
  vnfd_version stand in when absent), a Vdu.Compute whose
  properties.sw_image_data.name names an entry of the package's
  Image/SwImageDesc.json, and the MEC attributes in camelCase on a
  tosca.nodes.nfv.app.configuration node. Bare numbers are MB (memory) and
  GB (storage), as EdgeGallery writes them.

Connection points, virtual links and deployable-unit nodes are known and
not used (networking is the MEP's business). Any other node type is refused
by name: a descriptor mecorch half-understands must not deploy. Imports
that are files of the package are read for their node_types (derived_from
chains); URLs are never fetched: the standard types are known by name.
"""

from __future__ import annotations

import json
import posixpath
import re

import yaml

from mecorch.spec import orchestration_info as oi
from mecorch.kernel import validate
from mecorch.kernel.errors import InvalidInput
from mecorch.kernel.yamlsafe import load_yaml

APP, COMPUTE, CONTAINER, VOLUME, CONFIG, IGNORED, UNSUPPORTED = (
    "app", "compute", "container", "volume", "config", "ignored", "unsupported")
ROLES = {
    "tosca.nodes.nfv.VNF": APP, "tosca.nodes.mec.MecApp": APP,
    "tosca.nodes.nfv.Vdu.Compute": COMPUTE,
    "tosca.nodes.nfv.Vdu.OsContainer": CONTAINER,
    "tosca.nodes.nfv.Vdu.VirtualBlockStorage": VOLUME,
    "tosca.nodes.nfv.app.configuration": CONFIG,
    "tosca.nodes.nfv.VduCp": IGNORED, "tosca.nodes.nfv.Cp": IGNORED,
    "tosca.nodes.nfv.VnfVirtualLink": IGNORED, "tosca.nodes.nfv.Mciop": IGNORED,
    "tosca.nodes.nfv.Vdu.OsContainerDeployableUnit": IGNORED,
    "tosca.nodes.nfv.Vdu.VirtualObjectStorage": UNSUPPORTED,
    "tosca.nodes.nfv.Vdu.VirtualFileStorage": UNSUPPORTED,
}
MAX_IMPORTS = 16
SWIMAGEDESC = "SwImageDesc.json"
MAX_SWIMAGEDESC_BYTES = 256 << 10

# snake_case MEC 037 keys whose MEC 010-2 name is not their plain camelCase
_CAMEL_SPECIAL = {"qci": "qCI", "dscp": "dSCP", "tc": "tC", "dst_ip_address": "dstIPAddress",
                  "src_mac_address": "srcMACAddress", "dst_mac_address": "dstMACAddress"}
# EdgeGallery spellings of MEC 010-2 InterfaceDescriptor keys
_EG_INTERFACE = {"srcMacAddress": "srcMACAddress", "dstMacAddress": "dstMACAddress",
                 "dstIpAddress": "dstIPAddress"}
# AppD attribute <- MEC 037 property of the MecApp node (beyond the VNF ones)
_MEC_ATTRS = {"app_service_required": "appServiceRequired",
              "app_service_optional": "appServiceOptional",
              "app_service_produced": "appServiceProduced",
              "app_feature_required": "appFeatureRequired",
              "app_feature_optional": "appFeatureOptional",
              "transport_dependencies": "transportDependencies",
              "app_traffic_rule": "appTrafficRule", "app_dns_rule": "appDNSRule",
              "app_latency": "appLatency"}


def plain_yaml(text: bytes | str, what: str) -> None:
    """Refuse YAML anchors, aliases, merge keys and explicit tags in a TOSCA
    AppD (after the strict loader's own limits): a descriptor from outside
    is read one way, each value written where it is used. A merge key lets
    a later key override a merged one silently, and a tag asks the reader
    to build something; neither belongs in a descriptor."""
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            line = event.start_mark.line + 1
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise InvalidInput(f"{what} line {line}: YAML anchors and aliases are not "
                                   "accepted in a TOSCA AppD (write each value where it is "
                                   "used)")
            tag = getattr(event, "tag", None)
            if tag and not (isinstance(event, yaml.ScalarEvent) and event.implicit[0]) \
                    and not isinstance(event, (yaml.DocumentStartEvent,)):
                raise InvalidInput(f"{what} line {line}: the YAML tag {tag[:60]!r} is not "
                                   "accepted in a TOSCA AppD")
            if isinstance(event, yaml.ScalarEvent) and event.value == "<<" \
                    and event.style is None:
                raise InvalidInput(f"{what} line {line}: YAML merge keys (<<) are not "
                                   "accepted in a TOSCA AppD")
    except yaml.YAMLError as e:
        raise InvalidInput(" ".join(f"{what} is not valid YAML: {e}".split())) from None
    except RecursionError:
        raise InvalidInput(f"{what} is nested too deeply") from None


def is_tosca(doc) -> bool:
    return isinstance(doc, dict) and isinstance(doc.get("tosca_definitions_version"), str)


def _safe_id(text, default: str) -> str:
    """An identifier made from a name ("ubuntu 18.04:1.0" -> "ubuntu-18.04-1.0")."""
    out = re.sub(r"[^A-Za-z0-9_.-]+", "-", str(text if text is not None else ""))[:64]
    out = re.sub(r"\.\.+", ".", out).strip("-._")
    return out or default


def _camel(key: str) -> str:
    if key in _CAMEL_SPECIAL:
        return _CAMEL_SPECIAL[key]
    head, *rest = key.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def _camel_tree(value):
    if isinstance(value, dict):
        return {(_camel(k) if isinstance(k, str) else k): _camel_tree(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [_camel_tree(v) for v in value]
    return value


def _eg_traffic_rules(rules):
    """EdgeGallery writes dstInterface as one mapping and MAC/IP keys in
    its own case: bring them to MEC 010-2's shape (values untouched)."""
    if not isinstance(rules, list):
        return rules
    out = []
    for rule in rules:
        if isinstance(rule, dict) and isinstance(rule.get("dstInterface"), dict):
            rule = {**rule, "dstInterface": [rule["dstInterface"]]}
        if isinstance(rule, dict) and isinstance(rule.get("dstInterface"), list):
            rule = {**rule, "dstInterface": [
                {_EG_INTERFACE.get(k, k): v for k, v in i.items()} if isinstance(i, dict) else i
                for i in rule["dstInterface"]]}
        out.append(rule)
    return out


# -- imports and node types ----------------------------------------------------

def _imported_types(doc: dict, path: str, read, where: str) -> dict:
    """node_types of the files `doc` imports that are files of the package,
    following their own imports (at most MAX_IMPORTS files in all)."""
    types: dict = {}
    todo, seen = [(doc, path)], set()
    while todo:
        cur, cur_path = todo.pop()
        at = where if cur_path == path else f"{where} (import {cur_path})"
        imports = cur.get("imports") or []
        if not isinstance(imports, list):
            raise InvalidInput(f"{at}: imports must be a list")
        for i, imp in enumerate(imports):
            name = imp.get("file") if isinstance(imp, dict) else imp
            if not isinstance(name, str) or not name:
                raise InvalidInput(f"{at}: imports[{i}] must name a file")
            if "://" in name:
                continue            # never fetched: standard types are known by name
            target = posixpath.normpath(posixpath.join(posixpath.dirname(cur_path), name))
            if target.startswith("../") or target == ".." or target.startswith("/"):
                raise InvalidInput(f"{at}: imports[{i}] {name!r} points "
                                   "outside the package")
            if target in seen:
                continue
            seen.add(target)
            if len(seen) > MAX_IMPORTS:
                raise InvalidInput(f"{where}: more than {MAX_IMPORTS} imported files")
            data = read(target)
            if data is None:
                raise InvalidInput(f"{at}: imports[{i}] {name!r} is not a file "
                                   "of the package")
            try:
                sub = load_yaml(data, f"{where} import {target}")
            except InvalidInput as e:
                raise InvalidInput(" ".join(e.detail.split())) from None
            plain_yaml(data, f"{where} import {target}")
            if not isinstance(sub, dict):
                raise InvalidInput(f"{where} import {target}: must be a TOSCA definitions file")
            nt = sub.get("node_types") or {}
            if not isinstance(nt, dict):
                raise InvalidInput(f"{where} import {target}: node_types must be a mapping")
            types.update(nt)
            todo.append((sub, target))
    return types


def _property(node: dict, node_types: dict, key: str):
    """A property of a node template, else the default its node type (or a
    type it derives from) declares: MEC 037 puts descriptor_id and the
    other VNF identity properties there."""
    props = node.get("properties")
    if isinstance(props, dict) and props.get(key) is not None:
        return props[key]
    t, seen = node.get("type"), set()
    while isinstance(t, str) and t not in seen and len(seen) < 16:
        seen.add(t)
        tdef = node_types.get(t)
        if not isinstance(tdef, dict):
            break
        pdef = (tdef.get("properties") or {}).get(key) if isinstance(
            tdef.get("properties"), dict) else None
        if isinstance(pdef, dict) and pdef.get("default") is not None:
            return pdef["default"]
        t = tdef.get("derived_from")
    return None


# -- images ----------------------------------------------------------------------

def parse_checksum(value, where: str) -> tuple[str, str] | None:
    """(hashlib algorithm, hex) from 'hex' (64: SHA-256, 128: SHA-512,
    32: MD5, the lengths EdgeGallery and NFV tools write), 'sha256:hex' or
    {algorithm, hash}."""
    if value is None or value == "":
        return None
    names = {"sha-256": "sha256", "sha256": "sha256", "sha-512": "sha512", "sha512": "sha512",
             "md5": "md5"}
    if isinstance(value, dict):
        algo = names.get(str(value.get("algorithm", "")).lower().replace("_", "-"))
        digest = value.get("hash")
    elif isinstance(value, str) and ":" in value:
        prefix, digest = value.split(":", 1)
        algo = names.get(prefix.lower())
    elif isinstance(value, str):
        digest = value
        algo = {64: "sha256", 128: "sha512", 32: "md5"}.get(len(value))
    else:
        algo = digest = None
    if algo is None or not isinstance(digest, str) \
            or not re.fullmatch(r"[0-9a-fA-F]+", digest) \
            or len(digest) != {"sha256": 64, "sha512": 128, "md5": 32}[algo]:
        raise InvalidInput(f"{where}: {str(value)[:80]!r} is not a checksum mecorch can check "
                           "(SHA-256, SHA-512 or MD5: hex, 'sha256:hex' or {algorithm, hash})")
    return algo, digest.lower()


def _version(value):
    # YAML and JSON read `version: 1.0` as a number; the AppD's is text
    return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else value


def _formats(container_format, disk_format) -> tuple:
    """NFV/EdgeGallery format names -> the AppD's (containerFormat, diskFormat)."""
    cf = container_format.strip().upper() if isinstance(container_format, str) else container_format
    df = disk_format.strip().upper() if isinstance(disk_format, str) else disk_format
    if cf in ("DOCKERIMAGE", "DOCKER"):
        cf = "DOCKER"
        if df in ("DOCKERIMAGE", "DOCKER", "", None):
            df = None
    return cf, df


def read_swimagedesc(data: bytes, where: str) -> list[dict]:
    """The EdgeGallery image descriptor list (JSON, duplicate keys refused)."""
    def pairs(items):
        d = {}
        for k, v in items:
            if k in d:
                raise InvalidInput(f"{where}: the key {k!r} appears twice")
            d[k] = v
        return d
    if len(data) > MAX_SWIMAGEDESC_BYTES:
        raise InvalidInput(f"{where} is larger than {MAX_SWIMAGEDESC_BYTES} bytes")
    try:
        doc = json.loads(data.decode("utf-8"), object_pairs_hook=pairs)
    except (UnicodeDecodeError, ValueError) as e:
        if isinstance(e, InvalidInput):
            raise
        raise InvalidInput(f"{where} is not valid JSON: {e}") from None
    except RecursionError:
        raise InvalidInput(f"{where} is nested too deeply") from None
    if not isinstance(doc, list) or not doc or not all(isinstance(d, dict) for d in doc):
        raise InvalidInput(f"{where}: must be a non-empty JSON list of image descriptors")
    return doc


def _from_swimagedesc(entry: dict, where: str) -> tuple[dict, tuple | None]:
    cf, df = _formats(entry.get("containerFormat"), entry.get("diskFormat"))
    sw = {"id": _safe_id(entry.get("id") if entry.get("id") is not None else entry.get("name"),
                         "image"),
          "name": entry.get("name"), "version": _version(entry.get("version")),
          "containerFormat": cf, "swImage": entry.get("swImage")}
    if df is not None:
        sw["diskFormat"] = df
    for key in ("minDisk", "minRam"):
        if entry.get(key) is not None:
            sw[key] = entry[key]
    checksum = parse_checksum(entry.get("checksum"), f"{where}.checksum")
    if checksum and checksum[0] == "sha256":
        sw["checksum"] = checksum[1]
    return sw, checksum


def _from_artifact(art: dict, where: str, resolve) -> tuple[dict, tuple | None]:
    props = art.get("properties") or {}
    if not isinstance(props, dict):
        raise InvalidInput(f"{where}.properties: must be a mapping")
    f = art.get("file")
    if not isinstance(f, str) or not f:
        raise InvalidInput(f"{where}.file: the software image file is missing")
    cf, df = _formats(props.get("container_format"), props.get("disk_format"))
    sw = {"id": _safe_id(props.get("name"), "image"),
          "name": props.get("name"), "version": _version(props.get("version")),
          "containerFormat": cf, "swImage": resolve(f, f"{where}.file")}
    if df is not None:
        sw["diskFormat"] = df
    if props.get("min_disk") is not None:
        w = f"{where}.properties.min_disk"
        sw["minDisk"] = oi._disk(props["min_disk"], w, plain=True)
    if props.get("min_ram") is not None:
        w = f"{where}.properties.min_ram"
        sw["minRam"] = oi._memory(props["min_ram"], w, plain=True)
    checksum = parse_checksum(props.get("checksum"), f"{where}.properties.checksum")
    if checksum and checksum[0] == "sha256":
        sw["checksum"] = checksum[1]
    return sw, checksum


def _sw_artifact(node: dict, where: str):
    arts = node.get("artifacts") or {}
    if not isinstance(arts, dict):
        raise InvalidInput(f"{where}.artifacts: must be a mapping")
    found = [(k, a) for k, a in arts.items() if isinstance(a, dict) and (
        k == "sw_image" or a.get("type") == "tosca.artifacts.nfv.SwImage")]
    if len(found) > 1:
        raise InvalidInput(f"{where}.artifacts: {len(found)} software images; mecorch runs "
                           "one image per instance")
    return (f"{where}.artifacts.{oi._key(found[0][0])}", found[0][1]) if found else None


# -- the AppD ----------------------------------------------------------------------

def _text(value, where: str, max_len: int = 128) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)      # YAML reads version: 1.0 as a number
    return validate.text(value, where, max_len)


def read(doc: dict, path: str, read_file, resolve_image, swimagedesc: list[dict] | None,
         swimagedesc_where: str = "Image/" + SWIMAGEDESC,
         shown: str | None = None) -> tuple[dict, tuple | None]:
    """(the AppD in MEC 010-2 field names, the image checksum the
    descriptor declares as (algorithm, hex) or None).

    `path` anchors relative imports, `shown` (default `path`) names the
    service template in errors; `read_file(name)` gives a file of the same archive (None if
    absent); `resolve_image(file, where)` turns an artifact's file into the
    package path of the image; `swimagedesc` is the parsed
    Image/SwImageDesc.json, when the package has one."""
    where = f"AppD {shown or path}"
    types = _imported_types(doc, path, read_file, where)
    nodes = oi.tosca_nodes(doc, where, ROLES, types)
    types = {**types, **(doc.get("node_types") or {})}
    by_role: dict[str, list] = {}
    for name, node, n_where, role in nodes:
        if role is None:
            raise InvalidInput(f"{n_where}: node type {node['type'][:100]!r} is not one mecorch "
                               "reads (known: " + ", ".join(sorted(ROLES)) + ")")
        if role == UNSUPPORTED:
            raise InvalidInput(f"{n_where}: {node['type']} is not supported "
                               "(block storage only: tosca.nodes.nfv.Vdu.VirtualBlockStorage)")
        by_role.setdefault(role, []).append((name, node, n_where))
    for role, what in ((APP, "app (derived from tosca.nodes.nfv.VNF or tosca.nodes.mec.MecApp)"),):
        if len(by_role.get(role, [])) != 1:
            raise InvalidInput(f"{where}: needs exactly one {what} node, found "
                               f"{len(by_role.get(role, []))}")
    runs = by_role.get(COMPUTE, []) + by_role.get(CONTAINER, [])
    if len(runs) != 1:
        raise InvalidInput(f"{where}: needs exactly one tosca.nodes.nfv.Vdu.Compute or "
                           f"tosca.nodes.nfv.Vdu.OsContainer node (one instance is one VM or "
                           f"one container), found {len(runs)}")
    if len(by_role.get(CONFIG, [])) > 1:
        raise InvalidInput(f"{where}: more than one tosca.nodes.nfv.app.configuration node")

    _, app, app_where = by_role[APP][0]
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}

    def ident(keys: tuple[str, ...], meta_key: str | None, field: str, required=True):
        for k in keys:
            v = _property(app, types, k)
            if v is not None:
                return v, f"{app_where}.properties.{k}"
        if meta_key and meta.get(meta_key) is not None:
            return meta[meta_key], f"{where}.metadata.{meta_key}"
        if required:
            raise InvalidInput(f"{app_where}.properties: {' or '.join(keys)} is missing "
                               f"(the AppD's {field})")
        return None, None

    appd: dict = {}
    v, w = ident(("descriptor_id", "vnfd_id"), "vnfd_id", "appDId")
    appd["appDId"] = validate.ident(v, w)
    v, w = ident(("descriptor_version", "vnfd_version"), "vnfd_version", "appDVersion")
    appd["appDVersion"] = _text(v, w)
    for keys, field in ((("provider",), "appProvider"), (("product_name",), "appName"),
                        (("software_version",), "appSoftVersion")):
        v, w = ident(keys, None, field)
        appd[field] = _text(v, w)
    v, w = ident(("product_info_name",), None, "appInfoName", required=False)
    if v is not None:
        appd["appInfoName"] = _text(v, w)
    v, w = ident(("product_info_description",), "vnfd_description", "appDescription",
                 required=False)
    if v is None and isinstance(doc.get("description"), str):
        v, w = doc["description"], f"{where}.description"
    appd["appDescription"] = _text(v if v is not None else appd["appName"], w or where, 1024)
    mec = _property(app, types, "mec_version")
    if isinstance(mec, str):
        mec = [m.strip() for m in mec.split(",")]
    # EdgeGallery's AppD states no MEC version: recorded as unspecified
    appd["mecVersion"] = mec if mec is not None else ["unspecified"]
    for prop, attr in _MEC_ATTRS.items():
        value = _property(app, types, prop)
        if value is not None:
            appd[attr] = _camel_tree(value)
    if by_role.get(CONFIG):
        _, cfg, c_where = by_role[CONFIG][0]
        props = cfg.get("properties") or {}
        if not isinstance(props, dict):
            raise InvalidInput(f"{c_where}.properties: must be a mapping")
        for attr in set(_MEC_ATTRS.values()):
            if props.get(attr) is not None:
                if attr in appd:
                    raise InvalidInput(f"{c_where}.properties.{attr}: also given on the app node")
                appd[attr] = _eg_traffic_rules(props[attr]) if attr == "appTrafficRule" \
                    else props[attr]

    name, run, r_where = runs[0]
    appd["virtualComputeDescriptor"] = _compute(name, run, r_where,
                                                by_role.get(CONTAINER) == [runs[0]])
    sw, checksum = _image(run, r_where, resolve_image, swimagedesc, swimagedesc_where)
    appd["swImageDescriptor"] = sw
    volumes = []
    for vname, vnode, v_where in by_role.get(VOLUME, []):
        vol = oi._tosca_volume(vname, vnode, v_where, plain=True)
        if vol.size_gb is None:
            raise InvalidInput(f"{v_where}.properties.virtual_block_storage_data."
                               "size_of_storage: is missing")
        volumes.append({"id": vol.name, "typeOfStorage": "BLOCK", "sizeOfStorage": vol.size_gb})
    if volumes:
        appd["virtualStorageDescriptor"] = volumes
    return appd, checksum


def _compute(name, node: dict, where: str, container: bool) -> dict:
    if container:
        props = node.get("properties") or {}
        if not isinstance(props, dict):
            raise InvalidInput(f"{where}.properties: must be a mapping")
        cpu = props.get("cpu_resource_limit", props.get("requested_cpu_resources"))
        mem = props.get("memory_resource_limit", props.get("requested_memory_resources"))
        if cpu is None or mem is None:
            raise InvalidInput(f"{where}.properties: requested_cpu_resources (or "
                               "cpu_resource_limit) and requested_memory_resources (or "
                               "memory_resource_limit) are required")
        # SOL001: CPU resources in milli-CPU
        vcpu = oi.check_vcpu(validate.number(cpu, f"{where}.properties cpu", 1, 1 << 20) / 1000,
                             f"{where}.properties cpu")
        memory = oi._memory(mem, f"{where}.properties memory", plain=True)
    else:
        c = oi._tosca_compute(node, where, plain=True)
        vcpu, memory = c.get("vcpu"), c.get("memory_mb")
        if vcpu is None or memory is None:
            raise InvalidInput(f"{where}.capabilities.virtual_compute.properties: "
                               "virtual_cpu.num_virtual_cpu and virtual_memory.virtual_mem_size "
                               "are required")
    cid = _safe_id(name, "compute")
    return {"virtualComputeDescId": cid, "virtualCpu": {"numVirtualCpu": vcpu},
            "virtualMemory": {"virtualMemSize": memory}}


def _image(node: dict, where: str, resolve, swimagedesc, sid_where: str):
    art = _sw_artifact(node, where)
    if art:
        return _from_artifact(art[1], art[0], resolve)
    name_w = f"{where}.properties.sw_image_data.name"
    named = oi._at(node, ("properties", "sw_image_data", "name"), where)
    if swimagedesc is None:
        raise InvalidInput(f"{where}: has no sw_image artifact"
                           + (f", and {name_w} names {named!r} but the package has no "
                              f"{sid_where}" if named is not None else
                              f" and the package has no {sid_where}"))
    if named is None:
        if len(swimagedesc) != 1:
            raise InvalidInput(f"{name_w}: is missing and {sid_where} lists "
                               f"{len(swimagedesc)} images: say which one the app runs")
        return _from_swimagedesc(swimagedesc[0], f"{sid_where}[0]")
    names = [n.strip() for n in validate.text(named, name_w, 1024).split(",")]
    if len(names) != 1:
        raise InvalidInput(f"{name_w}: names {len(names)} images ({named}); mecorch runs one "
                           "image per instance")
    hits = [i for i, e in enumerate(swimagedesc) if e.get("name") == names[0]]
    if len(hits) != 1:
        raise InvalidInput(f"{name_w}: {names[0]!r} is "
                           + ("not" if not hits else "more than once")
                           + f" in {sid_where} (it lists "
                           + ", ".join(repr(e.get("name")) for e in swimagedesc[:8]) + ")")
    return _from_swimagedesc(swimagedesc[hits[0]], f"{sid_where}[{hits[0]}]")
