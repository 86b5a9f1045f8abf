"""The NAT network mecorch owns, and waiting for a guest on it (DHCP lease,
then a TCP port). Callers wrap these in `libvirt_errors`."""

from __future__ import annotations

import socket
import time

import libvirt

from mecorch.kernel.errors import BackendError, Timeout

from . import xmlrender as X

_POLL_S = 0.25


def ensure_network(conn, name: str, bridge: str, cidr: str) -> "libvirt.virNetwork":
    """The network `name`, defined, started and autostarted when missing."""
    try:
        net = conn.networkLookupByName(name)
    except libvirt.libvirtError as e:
        if e.get_error_code() != libvirt.VIR_ERR_NO_NETWORK:
            raise
        net = conn.networkDefineXML(X.network_xml(name, bridge, cidr))
    if not net.isActive():
        net.create()
    if not net.autostart():
        net.setAutostart(1)
    return net


def lease_addresses(dom) -> list[tuple[str, str]]:
    """[(ipv4, mac)] the network's DHCP server leased to the domain."""
    out = []
    ifaces = dom.interfaceAddresses(libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE, 0)
    for info in (ifaces or {}).values():
        for a in info.get("addrs") or []:
            if a.get("type") == libvirt.VIR_IP_ADDR_TYPE_IPV4 and a.get("addr"):
                out.append((a["addr"], info.get("hwaddr")))
    return out


def wait_lease(dom, deadline: float) -> list[tuple[str, str]]:
    """Poll the DHCP lease until `deadline` (time.monotonic). Raises
    BackendError if the domain stops meanwhile, Timeout at the deadline."""
    while True:
        addrs = lease_addresses(dom)
        if addrs:
            return addrs
        if not dom.isActive():
            raise BackendError(f"domain {dom.name()} stopped before it took a DHCP lease")
        if time.monotonic() >= deadline:
            raise Timeout(f"domain {dom.name()} took no DHCP lease in time")
        time.sleep(_POLL_S)


def wait_tcp(ip: str, port: int, deadline: float) -> None:
    """Wait until a TCP connect to the guest's port succeeds."""
    while True:
        remaining = deadline - time.monotonic()
        try:
            with socket.create_connection((ip, port), timeout=max(0.2, min(1.0, remaining))):
                return
        except OSError:
            pass
        if time.monotonic() >= deadline:
            raise Timeout(f"{ip}:{port} did not accept a TCP connection in time")
        time.sleep(_POLL_S)
