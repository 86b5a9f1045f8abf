"""The Linux MEP's config section (`hosts[].mep` with `driver: linux`): its
schema, which the core composes into the configuration's and checks when
the configuration is loaded (light to import: no subprocess, no file)."""

from __future__ import annotations

from mecorch.kernel.schema import ABSENT, INT, STR, STRS, key

ROLE = "mep"
SCHEMA = (
    key("dns_listen", STR, "127.0.0.1", "address dnsmasq answers on"),
    key("dns_port", INT, 5353, "port dnsmasq answers on"),
    key("chain_prefix", STR, "MECORCH", "prefix of mecorch's iptables chains"),
    key("netns", STR, None, "run iptables in this network namespace", nullable=True),
    key("service_cidr", STR, "10.90.0.0/24", "steered service addresses"),
    key("dns_ttl", INT, 0, "TTL dnsmasq serves"),
    key("dns_domain", STR, "mec.local",
        "the MEC domain DNS rules must lie in (never forwarded upstream); null: any",
        nullable=True),
    key("dns_upstream", STRS, [], "resolvers for names that are not MEC rules"),
    key("data_plane_address", STR, None, "address UEs reach DNS on", nullable=True),
    key("dns_user", STR, ABSENT, "user dnsmasq runs as"),
    key("service_interface", STR, ABSENT, "link the service CIDR is routed to"),
)
