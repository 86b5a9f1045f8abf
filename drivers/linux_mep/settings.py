"""The Linux MEP's config section (`hosts[].mep` with `driver: linux`): its
schema, which the core composes into the configuration's and checks when
the configuration is loaded (light to import: no subprocess, no file)."""

from __future__ import annotations

import ipaddress
import re

from mecorch.kernel import validate
from mecorch.kernel.errors import InvalidInput
from mecorch.kernel.schema import ABSENT, DEFAULT_HOST, INT, LINK_NAME, STR, STRS, host_name, key

ROLE = "mep"
SCHEMA = (
    key("dns_listen", STR, "127.0.0.1", "address dnsmasq answers on"),
    key("dns_port", INT, 5353, "port dnsmasq answers on"),
    key("chain_prefix", STR, "MECORCH", "prefix of mecorch's iptables chains (1-16 letters, "
        "digits, '_'); default: MECORCH for the host `default`, MC_<host id> for another"),
    key("netns", STR, None, "run iptables in this network namespace", nullable=True),
    key("service_cidr", STR, "10.90.0.0/24", "steered service addresses"),
    key("dns_ttl", INT, 0, "TTL dnsmasq serves"),
    key("dns_domain", STR, "mec.local",
        "the MEC domain DNS rules must lie in (never forwarded upstream); null: any",
        nullable=True),
    key("dns_allowed_domains", STRS, [],
        "further domains the apps of this host may name in DNS rules (a name below one; "
        "forwarded upstream when no rule holds it), beside the MEC domain and the names "
        "each app's own package declares"),
    key("dns_upstream", STRS, [], "resolvers for names that are not MEC rules"),
    key("data_plane_address", STR, None, "address UEs reach DNS on", nullable=True),
    key("dns_user", STR, ABSENT, "user dnsmasq runs as"),
    key("service_interface", STR, ABSENT, "the port-less bridge (a sink) service_cidr is "
        "routed to, so a steered address whose rule is gone dies here instead of leaving "
        "by the default route (1-15 letters, digits, '_', '.', '-'); made and marked as the "
        "host's own; default: mecorch-svc for the host `default`, mecsvc-<host id> for "
        "another"),
)

# The keys naming what this driver makes on the machine (not per instance):
# a host that sets none of them gets its own (`per_host`), and `mecorch host
# teardown` leaves one another configured host names too.
OWNED = ("chain_prefix", "service_interface")
_PREFIX = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,15}")


def per_host(host_id: str) -> dict:
    """The names of this host's objects when its section sets none: the
    machine's `default` host keeps today's, another host gets its own."""
    if host_id == DEFAULT_HOST:
        return {"chain_prefix": "MECORCH", "service_interface": "mecorch-svc"}
    return {"chain_prefix": host_name("MC", host_id, 16, "_", "A-Za-z0-9_"),
            "service_interface": host_name("mecsvc", host_id, 15)}


def check_section(section: dict) -> None:
    """What the schema cannot say of the names reaching command lines."""
    prefix = section.get("chain_prefix")
    if not isinstance(prefix, str) or not _PREFIX.fullmatch(prefix):
        raise InvalidInput("mep.chain_prefix: must be 1-16 letters, digits or '_', starting "
                           f"with a letter (got {prefix!r:.40})")
    link = section.get("service_interface")
    if link is not None and (not isinstance(link, str) or not re.fullmatch(LINK_NAME, link)):
        raise InvalidInput("mep.service_interface: must be a link name of 1-15 letters, digits, "
                           f"'_', '.', '-' starting with a letter or digit (got {link!r:.40})")
    domains = section.get("dns_allowed_domains") or []
    if len(domains) > 32:
        raise InvalidInput("mep.dns_allowed_domains: at most 32 domains")
    for i, domain in enumerate(domains):
        validate.domain_name(domain, f"mep.dns_allowed_domains[{i}]")
    for name in ("service_cidr",):
        value = section.get(name)
        if value is not None:
            try:
                ipaddress.ip_network(value, strict=True)
            except ValueError as e:
                raise InvalidInput(f"mep.{name}: {e}") from None


def check_hosts(sections: list[tuple[str, dict]]) -> None:
    """Hosts of one configuration that would fight over one thing: one DNS
    port, or one service range routed to two links."""
    seen: dict = {}
    ranges: list = []
    for path, s in sections:
        where = (s.get("netns"), s.get("dns_listen"), s.get("dns_port"))
        if where in seen:
            raise InvalidInput(f"{path}.dns_port: {s.get('dns_listen')}:{s.get('dns_port')} is "
                               f"{seen[where]}'s too: give each host a DNS port of its own")
        seen[where] = path
        if s.get("service_cidr"):
            net = ipaddress.ip_network(s["service_cidr"])
            for other_path, other_net, other in ranges:
                if (other.get("netns") == s.get("netns") and net.overlaps(other_net)
                        and other.get("service_interface") != s.get("service_interface")):
                    raise InvalidInput(
                        f"{path}.service_cidr: {net} overlaps {other_path}.service_cidr "
                        f"{other_net} routed to another link: give each host a range of its "
                        "own (or name one service_interface for both)")
            ranges.append((path, net, s))

