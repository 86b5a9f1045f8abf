"""Live migration's mechanics (LibvirtVIM's LiveMovable): pure rewriting of
the domain XML, the offer's checks, the DHCP reservation, the migration
call with its timeout, and the record a target keeps of a prepared move.

What libvirt (9.0) requires, learned on two libvirtds (tests/support/livelab.py):
- peer to peer (`VIR_MIGRATE_PEER2PEER`): the source's libvirtd connects to
  the offer's `uri`; QEMU's stream and the NBD storage copy go to
  `migrate_uri` (tcp://<target address>);
- the destination XML keeps the source's domain NAME and UUID (libvirt
  refuses another: "Target domain name ... does not match source"); the
  target's own name is `VIR_MIGRATE_PARAM_DEST_NAME`. Its disk sources,
  network, fw_cfg file, console log and <metadata> may be this host's;
  devices (MAC, disk targets, PCI addresses) stay the source's;
- `VIR_MIGRATE_NON_SHARED_INC` copies each disk's top layer only and libvirt
  does not pre-create the target's disks for it ("pre-creation of storage
  targets for incremental storage migration is not supported"), nor finds
  a `type='volume'` disk there: the target makes its volumes first (the
  overlay on its own base of the image) and the dest XML names them as
  `type='file'` paths;
- after success the source domain is shut off (reason "migrated"), still
  defined and still autostarted: the driver clears autostart.
"""

from __future__ import annotations

import ipaddress
import json
import re
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt

from mecorch.kernel import validate
from mecorch.kernel.errors import Conflict, InvalidInput, Timeout
from mecorch.kernel.fileutil import unlink_quietly

from . import xmlrender as X
from .errors import migration_errors

FLAGS = (libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER
         | libvirt.VIR_MIGRATE_NON_SHARED_INC | libvirt.VIR_MIGRATE_PERSIST_DEST)
_DISK_TARGET = re.compile(r"vd[a-z]{1,2}")
_MIGRATE_URI = re.compile(r"tcp://([0-9.]{7,15})(:[0-9]{1,5})?")
_URI = re.compile(r"qemu\+(tcp|tls|ssh)://[A-Za-z0-9\[\]:.-]{1,260}/system")
_NET_UPDATE = libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE | libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG


# -- source ------------------------------------------------------------------

def source_facts(dom, addresses: list[tuple[str, str]], cidr: str) -> dict:
    """live_source's answer for a running domain: its migratable XML, its
    leased IPv4 addresses and this host's range (named in a refusal)."""
    return {"xml": dom.XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE),
            "addresses": [{"ip": ip, "mac": mac} for ip, mac in addresses],
            "network_cidr": cidr}


def check_offer(offer) -> dict:
    """The fields of a target's offer that reach libvirt, checked."""
    if not isinstance(offer, dict):
        raise InvalidInput("offer: must be a mapping")
    uri = offer.get("uri")
    if not isinstance(uri, str) or not _URI.fullmatch(uri):
        raise InvalidInput("offer.uri: not a qemu+tcp|tls|ssh://<host>/system URI")
    m = _MIGRATE_URI.fullmatch(str(offer.get("migrate_uri")))
    if not m:
        raise InvalidInput("offer.migrate_uri: must be tcp://<IPv4 address>[:port]")
    validate.ip_address(m.group(1), "offer.migrate_uri", 4)
    disks = offer.get("disks")
    if not (isinstance(disks, list) and disks
            and all(isinstance(d, str) and _DISK_TARGET.fullmatch(d) for d in disks)):
        raise InvalidInput("offer.disks: must be a list of disk targets (vda, vdb, ...)")
    name = offer.get("domain")
    if not (isinstance(name, str) and name.startswith(X.DOMAIN_PREFIX)):
        raise InvalidInput("offer.domain: not a mecorch domain name")
    validate.ident(name[len(X.DOMAIN_PREFIX):], "offer.domain")
    xml = offer.get("xml")
    if not isinstance(xml, str) or len(xml) > 1 << 20:
        raise InvalidInput("offer.xml: must be a domain XML text")
    return {"uri": uri, "migrate_uri": offer["migrate_uri"], "disks": disks, "domain": name,
            "xml": xml}


def migrate(dom, offer: dict, timeout_s: float) -> float:
    """Send the running `dom` to the offer's libvirtd (peer to peer, its
    disks copied); abort the job after `timeout_s`. Seconds it took."""
    params = {libvirt.VIR_MIGRATE_PARAM_DEST_XML: offer["xml"],
              libvirt.VIR_MIGRATE_PARAM_DEST_NAME: offer["domain"],
              libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS: list(offer["disks"]),
              libvirt.VIR_MIGRATE_PARAM_URI: offer["migrate_uri"]}
    out: dict = {}

    def send() -> None:
        try:
            dom.migrateToURI3(offer["uri"], params, FLAGS)
        except libvirt.libvirtError as e:
            out["error"] = e
    t0 = time.monotonic()
    worker = threading.Thread(target=send, name=f"migrate-{dom.name()}", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        with migration_errors(f"abort the migration of {dom.name()}", offer["uri"]):
            try:
                dom.abortJob()
            except libvirt.libvirtError as e:
                if e.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID:   # ended meanwhile
                    raise
        worker.join(60)
        if "error" in out or worker.is_alive():
            raise Timeout(f"migration of {dom.name()} to {offer['uri']} did not end within "
                          f"{timeout_s:g} s: aborted, the instance runs here")
    if "error" in out:
        with migration_errors(f"migrate {dom.name()}", offer["uri"]):
            raise out["error"]
    return time.monotonic() - t0


# -- target ------------------------------------------------------------------

def source_identity(source) -> tuple[ET.Element, list[str], list[dict]]:
    """The source's XML (parsed), its disk targets in order, its addresses
    [{"ip", "mac"}] (checked)."""
    if not isinstance(source, dict) or not isinstance(source.get("xml"), str):
        raise InvalidInput("source.xml: must be the source domain's XML")
    try:
        root = ET.fromstring(source["xml"])
    except ET.ParseError as e:
        raise InvalidInput(f"source.xml: not XML: {e}") from None
    if root.tag != "domain" or root.get("type") not in ("qemu", "kvm"):
        raise InvalidInput("source.xml: not a QEMU domain")
    targets = [t.get("dev") for t in root.findall("./devices/disk/target")]
    if not targets or not all(isinstance(t, str) and _DISK_TARGET.fullmatch(t) for t in targets):
        raise InvalidInput("source.xml: its disks' targets must be vda, vdb, ...")
    addrs = source.get("addresses")
    if not isinstance(addrs, list) or not addrs:
        raise InvalidInput("source.addresses: the guest's leased addresses are needed")
    out = []
    for i, a in enumerate(addrs):
        if not isinstance(a, dict):
            raise InvalidInput(f"source.addresses[{i}]: must be a mapping")
        mac = a.get("mac")
        if not isinstance(mac, str) or not re.fullmatch(r"([0-9a-f]{2}:){5}[0-9a-f]{2}", mac):
            raise InvalidInput(f"source.addresses[{i}].mac: not a MAC address")
        out.append({"ip": validate.ip_address(a.get("ip"), f"source.addresses[{i}].ip", 4),
                    "mac": mac})
    return root, targets, out


def check_range(addresses: list[dict], cidr: str, network: str, source_cidr) -> None:
    """Conflict unless every guest address is a DHCP address of this host's
    network (the same range as the source's)."""
    net = ipaddress.ip_network(cidr)
    gw = X.gateway(cidr)
    for a in addresses:
        ip = ipaddress.ip_address(a["ip"])
        if ip not in net or a["ip"] == gw or ip in (net.network_address, net.broadcast_address):
            theirs = f" (the source's range {_cidr_or_none(source_cidr)})" \
                if _cidr_or_none(source_cidr) else ""
            raise Conflict(f"the guest's address {a['ip']}{theirs} is not one of this host's "
                           f"network {network} range {cidr}: a live migration keeps the "
                           "guest's address, so both hosts need the same range (move it cold)")


def _cidr_or_none(value) -> str | None:
    """The source's range as it said it, when it is one (named in a refusal)."""
    try:
        return str(ipaddress.ip_network(value, strict=False)) if isinstance(value, str) else None
    except ValueError:
        return None


def check_free(net, addresses: list[dict], network: str) -> None:
    """Conflict when another guest holds one of the addresses here (a lease
    or a DHCP host entry of another MAC)."""
    for lease in net.DHCPLeases() or []:
        for a in addresses:
            if lease.get("ipaddr") == a["ip"] and (lease.get("mac") or "").lower() != a["mac"]:
                raise Conflict(f"the guest's address {a['ip']} is leased to another guest "
                               f"({lease.get('mac')}) on this host's network {network}")
    for host in ET.fromstring(net.XMLDesc(0)).findall("./ip/dhcp/host"):
        for a in addresses:
            if host.get("ip") == a["ip"] and (host.get("mac") or "").lower() != a["mac"]:
                raise Conflict(f"the guest's address {a['ip']} is reserved for another guest "
                               f"({host.get('mac')}) on this host's network {network}")


def _host_xml(a: dict) -> str:
    el = ET.Element("host", {"mac": a["mac"], "ip": a["ip"]})
    return ET.tostring(el, encoding="unicode")


def reserve(net, addresses: list[dict]) -> list[dict]:
    """A DHCP host entry per address (MAC -> IP), so this network's dnsmasq
    gives the address to that guest only; the ones added."""
    made = []
    current = {(h.get("mac", "").lower(), h.get("ip"))
               for h in ET.fromstring(net.XMLDesc(0)).findall("./ip/dhcp/host")}
    for a in addresses:
        if (a["mac"], a["ip"]) in current:
            continue
        net.update(libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST,
                   libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST, -1, _host_xml(a), _NET_UPDATE)
        made.append(a)
    return made


def release(net, addresses: list[dict]) -> None:
    """Remove the DHCP host entries of `addresses`; gone is fine."""
    current = {(h.get("mac", "").lower(), h.get("ip"))
               for h in ET.fromstring(net.XMLDesc(0)).findall("./ip/dhcp/host")}
    for a in addresses:
        if (a["mac"], a["ip"]) in current:
            net.update(libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE,
                       libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST, -1, _host_xml(a), _NET_UPDATE)


def dest_xml(root: ET.Element, *, disk_paths: list[str], network: str, meta: X.DomainMeta,
             env_file: str, console_log: str) -> str:
    """The source's domain XML rewritten to this host: its disks as this
    host's files (in the source's target order), its NICs on this host's
    network, its fw_cfg file and console log this host's, its metadata this
    host's. Name, UUID, MACs, disk targets and addresses are kept."""
    root = ET.fromstring(ET.tostring(root))         # a copy
    disks = root.findall("./devices/disk")
    for disk, path in zip(disks, disk_paths, strict=True):
        disk.set("type", "file")
        src = disk.find("source")
        if src is None:
            src = ET.SubElement(disk, "source")
        src.attrib.clear()
        src.set("file", path)
        for bs in disk.findall("backingStore"):     # the target's chain is its own
            disk.remove(bs)
    for src in root.findall("./devices/interface/source"):
        src.attrib.clear()
        src.set("network", network)
    for entry in root.findall("./sysinfo[@type='fwcfg']/entry"):
        if entry.get("name") == X.FW_CFG_ENV:
            entry.set("file", env_file)
    for log in root.findall("./devices/serial/log") + root.findall("./devices/console/log"):
        log.set("file", console_log)
    md = root.find("metadata")
    if md is None:
        md = ET.SubElement(root, "metadata")
    for child in list(md):
        if child.tag.startswith(f"{{{X.NS}}}"):
            md.remove(child)
    md.append(meta.to_xml())
    return ET.tostring(root, encoding="unicode")


# -- the target's record of a prepared move -----------------------------------

class Records:
    """<state_dir>/incoming/<instance id>.json: what prepare_incoming made
    (volumes, addresses reserved, domain name), read by the adoption and by
    abort_incoming."""

    def __init__(self, state_dir: Path):
        self.dir = state_dir / "incoming"

    def path(self, iid: str) -> Path:
        return self.dir / f"{validate.ident(iid, 'instance_id')}.json"

    def save(self, iid: str, record: dict) -> None:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.path(iid).with_suffix(".tmp")
        tmp.write_text(json.dumps(record))
        tmp.replace(self.path(iid))

    def load(self, iid: str) -> dict | None:
        try:
            return json.loads(self.path(iid).read_text())
        except FileNotFoundError:
            return None

    def drop(self, iid: str) -> None:
        unlink_quietly(self.path(iid))
