"""The Docker CIM's config section (`hosts[].cim` with `driver: docker`):
its schema, which the core composes into the configuration's and checks
when the configuration is loaded (light to import: no docker library)."""

from __future__ import annotations

import ipaddress
import re

from mecorch.kernel.errors import InvalidInput
from mecorch.kernel.schema import ABSENT, DEFAULT_HOST, INT, NUMBER, STR, STRS, host_name, key

ROLE = "cim"
SCHEMA = (
    key("docker_host", STR, "unix:///var/run/docker.sock", "Docker Engine endpoint"),
    key("registry", STR, "127.0.0.1:5000", "the container image repository"),
    key("network", STR, "mecorch", "bridge network mecorch makes and marks as the host's "
        "(label mecorch.host); default: mecorch for the host `default`, mecorch-<host id> "
        "for another"),
    key("subnet", STR, None, "its IPv4 subnet (CIDR); null: Docker picks a free one",
        nullable=True),
    key("dns", STRS, ["gateway"], "containers' resolvers (gateway: the MEP's DNS on "
        "the network's gateway); []: Docker's default"),
    key("busybox", STR, ABSENT, "busybox binary for the pause container"),
    key("timeout_s", NUMBER, ABSENT, "Docker API timeout"),
    key("data_max_bytes", INT, ABSENT, "largest named volume a relocation carries, in bytes "
        "(default 16 GiB)"),
)

OWNED = ("network",)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def per_host(host_id: str) -> dict:
    """The network's name when the section sets none: the machine's
    `default` host keeps today's, another host gets its own."""
    return {"network": "mecorch" if host_id == DEFAULT_HOST else host_name("mecorch", host_id, 64)}


def check_section(section: dict) -> None:
    net = section.get("network")
    if not isinstance(net, str) or not _NAME.fullmatch(net):
        raise InvalidInput("cim.network: must be 1-64 letters, digits, '_', '.', '-' starting "
                           f"with a letter or digit (got {net!r:.40})")
    subnet = section.get("subnet")
    if subnet is not None:
        try:
            parsed = ipaddress.ip_network(subnet, strict=True)
        except ValueError as e:
            raise InvalidInput(f"cim.subnet: {e}") from None
        if parsed.version != 4 or parsed.prefixlen > 29:
            raise InvalidInput(f"cim.subnet: must be an IPv4 network of at least a /29 "
                               f"(got {subnet})")
