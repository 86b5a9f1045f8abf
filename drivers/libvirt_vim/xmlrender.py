"""Pure renderers of the libvirt XML mecorch uses, and the parser of the
metadata it puts on its domains. No libvirt import, no I/O: every function
takes plain values (already validated) and returns text, so the benchmark
and the driver define exactly the same objects.

ElementTree does the escaping, so no value is ever pasted into markup.
"""

from __future__ import annotations

import ipaddress
import xml.etree.ElementTree as ET
from dataclasses import dataclass

# The namespace of mecorch's <metadata> element on its domains.
NS = "https://mecorch.dev/xmlns/libvirt-vim/1"
NS_PREFIX = "mecorch"
ET.register_namespace(NS_PREFIX, NS)

DOMAIN_PREFIX = "mecorch-"
# libvirt's namespace for options passed to a network's dnsmasq.
NS_DNSMASQ = "http://libvirt.org/schemas/network/dnsmasq/1.0"
ET.register_namespace("dnsmasq", NS_DNSMASQ)


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrib) -> ET.Element:
    el = ET.SubElement(parent, tag, {k: str(v) for k, v in attrib.items()})
    if text is not None:
        el.text = str(text)
    return el


def _text(root: ET.Element) -> str:
    return ET.tostring(root, encoding="unicode")


# -- names -------------------------------------------------------------------

def domain_name(instance_id: str) -> str:
    return DOMAIN_PREFIX + instance_id


def root_volume_name(instance_id: str) -> str:
    return f"{instance_id}-root.qcow2"


def data_volume_name(instance_id: str, name: str) -> str:
    return f"{instance_id}-{name}.qcow2"


def disk_of_volume(instance_id: str, volume: str) -> str | None:
    """The app's own name of one of an instance's volumes (the inverse of
    the two above): "root" for the system disk, the descriptor's name for
    a data disk; None for a volume not named as this instance's."""
    if volume == root_volume_name(instance_id):
        return "root"
    head, tail = f"{instance_id}-", ".qcow2"
    if volume.startswith(head) and volume.endswith(tail) and len(volume) > len(head + tail):
        return volume[len(head):-len(tail)]
    return None


def base_volume_name(image_id: str, sha256: str) -> str:
    # The checksum prefix makes a re-imported image (same id, new bytes) get
    # a new base, so overlays of running instances keep their own base.
    return f"base-{image_id}-{sha256[:12]}.qcow2"


# -- network and pool --------------------------------------------------------

def gateway(cidr: str) -> str:
    """The network's gateway: its first host address (.1)."""
    return str(next(ipaddress.ip_network(cidr, strict=False).hosts()))


def network_xml(name: str, bridge: str, cidr: str) -> str:
    """A NAT network with DHCP over the whole CIDR but the gateway (.1).

    libvirt's own DNS is off: the MEP's dnsmasq answers DNS on the gateway
    (port 53) with the DNS rules and upstream forwarding, and the DHCP
    leases name the gateway as the guests' DNS server."""
    net = ipaddress.ip_network(cidr, strict=False)
    hosts = list(net.hosts()) if net.num_addresses <= 65536 else None
    if hosts is None or len(hosts) < 3:
        raise ValueError(f"network {cidr} is too small or too large")
    root = ET.Element("network")
    _sub(root, "name", name)
    _sub(root, "forward", mode="nat")
    _sub(root, "bridge", name=bridge, stp="on", delay="0")
    _sub(root, "dns", enable="no")
    ip = _sub(root, "ip", address=hosts[0], netmask=net.netmask)
    dhcp = _sub(ip, "dhcp")
    _sub(dhcp, "range", start=hosts[1], end=hosts[-1])
    opts = _sub(root, f"{{{NS_DNSMASQ}}}options")
    _sub(opts, f"{{{NS_DNSMASQ}}}option", value=f"dhcp-option=option:dns-server,{hosts[0]}")
    return _text(root)


def pool_xml(name: str, path: str) -> str:
    root = ET.Element("pool", type="dir")
    _sub(root, "name", name)
    target = _sub(root, "target")
    _sub(target, "path", path)
    perms = _sub(target, "permissions")
    # 0711: QEMU (another user) can reach the files it is given, not list them.
    _sub(perms, "mode", "0711")
    return _text(root)


def volume_xml(name: str, capacity_bytes: int, fmt: str = "qcow2",
               backing_path: str | None = None, backing_fmt: str = "qcow2") -> str:
    root = ET.Element("volume")
    _sub(root, "name", name)
    _sub(root, "capacity", str(int(capacity_bytes)), unit="bytes")
    _sub(root, "allocation", "0", unit="bytes")
    target = _sub(root, "target")
    _sub(target, "format", type=fmt)
    perms = _sub(target, "permissions")
    _sub(perms, "mode", "0600")
    if backing_path:
        bs = _sub(root, "backingStore")
        _sub(bs, "path", backing_path)
        _sub(bs, "format", type=backing_fmt)
    return _text(root)


# -- domain ------------------------------------------------------------------

@dataclass(frozen=True)
class DomainMeta:
    """What mecorch records on the domain so it can find it after a restart."""
    instance_id: str
    app_d_id: str
    host_id: str
    image: str
    pool: str
    volumes: tuple[tuple[str, bool], ...] = ()     # (volume name, reserved)

    def to_xml(self) -> ET.Element:
        el = ET.Element(f"{{{NS}}}instance")
        for key in ("instance_id", "app_d_id", "host_id", "image", "pool"):
            _sub(el, f"{{{NS}}}{key}", getattr(self, key))
        for vol, reserved in self.volumes:
            _sub(el, f"{{{NS}}}volume", name=vol, reserved="yes" if reserved else "no")
        return el


def parse_meta(text: str) -> DomainMeta | None:
    """The DomainMeta in `text` (the element libvirt returns for our
    namespace), or None if it is not ours or is malformed."""
    try:
        el = ET.fromstring(text)
    except ET.ParseError:
        return None
    # libvirt hands the element back without its namespace (the API call
    # already selected it by namespace), so match local names.
    def local(e: ET.Element) -> str:
        return e.tag.rsplit("}", 1)[-1]

    if local(el) != "instance":
        return None

    def get(key: str) -> str:
        child = next((c for c in el if local(c) == key), None)
        return (child.text or "") if child is not None else ""

    iid = get("instance_id")
    if not iid:
        return None
    vols = tuple((v.get("name", ""), v.get("reserved") == "yes")
                 for v in el if local(v) == "volume" and v.get("name"))
    return DomainMeta(iid, get("app_d_id"), get("host_id"), get("image"),
                      get("pool"), vols)


@dataclass(frozen=True)
class DomainSpec:
    name: str
    virt_type: str                      # "kvm" | "qemu" (TCG)
    vcpu: int
    memory_mb: int
    pool: str
    disks: tuple[str, ...]              # volume names; the first one boots
    network: str
    console_log: str | None = None
    meta: DomainMeta | None = None
    # A file QEMU gives the guest as the fw_cfg file FW_CFG_ENV: what the
    # guest is told without a network call (its Mp1 URL, instance id and
    # token). QEMU's command line names the path only.
    env_file: str | None = None


FW_CFG_ENV = "opt/org.mecorch/env"


def domain_xml(spec: DomainSpec) -> str:
    root = ET.Element("domain", type=spec.virt_type)
    _sub(root, "name", spec.name)
    if spec.meta is not None:
        md = _sub(root, "metadata")
        md.append(spec.meta.to_xml())
    _sub(root, "memory", spec.memory_mb, unit="MiB")
    _sub(root, "vcpu", spec.vcpu, placement="static")
    if spec.env_file:
        sysinfo = _sub(root, "sysinfo", type="fwcfg")
        _sub(sysinfo, "entry", name=FW_CFG_ENV, file=spec.env_file)
    os_el = _sub(root, "os")
    _sub(os_el, "type", "hvm", arch="x86_64")
    _sub(os_el, "boot", dev="hd")
    feats = _sub(root, "features")
    _sub(feats, "acpi")                 # ACPI shutdown needs it
    _sub(feats, "apic")
    _sub(root, "clock", offset="utc")
    _sub(root, "on_poweroff", "destroy")
    _sub(root, "on_reboot", "restart")
    _sub(root, "on_crash", "destroy")
    dev = _sub(root, "devices")
    for i, vol in enumerate(spec.disks):
        disk = _sub(dev, "disk", type="volume", device="disk")
        _sub(disk, "driver", name="qemu", type="qcow2")
        _sub(disk, "source", pool=spec.pool, volume=vol)
        _sub(disk, "target", dev="vd" + "abcdefghijklmnopqrstuvwxyz"[i], bus="virtio")
    nic = _sub(dev, "interface", type="network")
    _sub(nic, "source", network=spec.network)
    _sub(nic, "model", type="virtio")
    serial = _sub(dev, "serial", type="pty")
    if spec.console_log:
        # Written by virtlogd (root), so the log directory needs no QEMU access.
        _sub(serial, "log", file=spec.console_log, append="off")
    _sub(serial, "target", port="0")
    console = _sub(dev, "console", type="pty")
    _sub(console, "target", type="serial", port="0")
    _sub(dev, "memballoon", model="none")
    return _text(root)


def domain_disks(xml_desc: str) -> list[dict]:
    """[{"target", "pool", "volume", "file"}] of a domain's XMLDesc."""
    out = []
    for disk in ET.fromstring(xml_desc).findall("./devices/disk"):
        src = disk.find("source")
        tgt = disk.find("target")
        out.append({"target": tgt.get("dev") if tgt is not None else None,
                    "pool": src.get("pool") if src is not None else None,
                    "volume": src.get("volume") if src is not None else None,
                    "file": src.get("file") if src is not None else None})
    return out


def backing_path(vol_xml_desc: str) -> str | None:
    """The backing file path of a volume's XMLDesc, if any."""
    el = ET.fromstring(vol_xml_desc).find("./backingStore/path")
    return el.text if el is not None else None


def interface_macs(xml_desc: str) -> list[str]:
    return [m.get("address") for m in ET.fromstring(xml_desc).findall("./devices/interface/mac")
            if m.get("address")]
