"""The Docker CIM's config section (`hosts[].cim` with `driver: docker`):
its schema, which the core composes into the configuration's and checks
when the configuration is loaded (light to import: no docker library)."""

from __future__ import annotations

from mecorch.kernel.schema import ABSENT, NUMBER, STR, STRS, key

ROLE = "cim"
SCHEMA = (
    key("docker_host", STR, "unix:///var/run/docker.sock", "Docker Engine endpoint"),
    key("registry", STR, "127.0.0.1:5000", "the container image repository"),
    key("network", STR, "mecorch", "bridge network mecorch owns"),
    key("dns", STRS, ["gateway"], "containers' resolvers (gateway: the MEP's DNS on "
        "the network's gateway); []: Docker's default"),
    key("busybox", STR, ABSENT, "busybox binary for the pause container"),
    key("timeout_s", NUMBER, ABSENT, "Docker API timeout"),
)
