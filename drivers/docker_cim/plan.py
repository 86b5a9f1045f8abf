"""Validate a ResourceRequest and turn it into the Docker objects to make.

Pure: no backend call, so bad input is refused before anything exists.
Object names are derived from the (validated) instance id so that a
retry or a recovery finds the same objects.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from mecorch.kernel import validate
from mecorch.kernel.errors import InvalidInput
from mecorch.driverapi.model import ResourceRequest
from mecorch.kernel.states import DeploymentType

LABEL_INSTANCE = "mecorch.instance"
LABEL_ROLE = "mecorch.role"
LABEL_HOST = "mecorch.host"
LABEL_RESERVED = "mecorch.reserved"
LABEL_VOLUME = "mecorch.volume"
LABEL_NETWORK = "mecorch.network"
# The limits an app container was created with (mecorch never changes them
# afterwards): capacity() reads them from the listing instead of inspecting
# every container on every health probe.
LABEL_NANO_CPUS = "mecorch.nano-cpus"
LABEL_MEM_BYTES = "mecorch.mem-bytes"

# What one container may ask: declared in DockerCIM.capabilities(), which
# the core reads at admission, and checked again here before anything is made.
PROTOCOLS = ("tcp", "udp", "sctp")
VCPU_MIN, VCPU_MAX = 0.01, 1024
MEMORY_MB_MIN, MEMORY_MB_MAX = 6, 1024 * 1024         # dockerd's minimum is 6 MB
DISK_GB_MAX = VOLUME_GB_MAX = 1024 * 1024


@dataclass(frozen=True)
class VolumePlan:
    name: str            # Docker volume name
    volume: str          # the request's volume name
    mount_path: str
    size_gb: float
    reserved: bool


@dataclass(frozen=True)
class Plan:
    instance_id: str
    repo: str
    tag: str
    pause_name: str
    app_name: str
    nano_cpus: int
    mem_bytes: int
    env: dict[str, str]
    command: list[str] | None
    entrypoint: list[str] | None         # Kubernetes `command` (request.extra)
    volumes: tuple[VolumePlan, ...]
    ports: dict[str, tuple[str, int]]    # "80/tcp" -> ("127.0.0.1", 8080)
    exposed: tuple[tuple[int, str], ...]  # every (port, proto) of the request


def volume_name(instance_id: str, volume: str) -> str:
    # The instance id is part of the name: two instances may both ask
    # for a volume called "data" and must not share it.
    return f"mecorch.{instance_id}.{volume}"


def _mount_path(value, field: str) -> str:
    path = validate.text(value, field, max_len=1024)
    # ':' and ',' are separators in Docker's mount syntax.
    if not path.startswith("/") or ":" in path or "," in path:
        raise InvalidInput(f"{field}: must be an absolute path without ':' or ','")
    if ".." in path.split("/") or posixpath.normpath(path) == "/":
        raise InvalidInput(f"{field}: must not be '/' or contain '..'")
    return posixpath.normpath(path)


def make_plan(req: ResourceRequest) -> Plan:
    """Validate every field that reaches Docker; raise InvalidInput."""
    if not isinstance(req, ResourceRequest):
        raise InvalidInput("request: must be a ResourceRequest")
    iid = validate.ident(req.instance_id, "instance_id")
    validate.ident(req.app_d_id, "app_d_id")
    if req.manner != DeploymentType.CONTAINER:
        raise InvalidInput(f"manner: the Docker CIM deploys containers, not {req.manner}")
    _, repo, tag = validate.split_image_ref(req.image)
    vcpu = validate.number(req.vcpu, "vcpu", VCPU_MIN, VCPU_MAX)
    memory_mb = validate.integer(req.memory_mb, "memory_mb", MEMORY_MB_MIN, MEMORY_MB_MAX)
    validate.number(req.disk_gb, "disk_gb", 0, DISK_GB_MAX)
    env = validate.env(dict(req.env))
    command = None
    if req.command:
        command = [validate.text(a, f"command[{i}]", max_len=4096)
                   for i, a in enumerate(req.command)]
    entrypoint = None
    if req.extra.get("entrypoint"):
        raw = req.extra["entrypoint"]
        if not isinstance(raw, (list, tuple)) or len(raw) > 256:
            validate.text(None, "entrypoint")        # raises: must be a list of strings
        entrypoint = [validate.text(a, f"entrypoint[{i}]", max_len=4096)
                      for i, a in enumerate(raw)]

    volumes, mounts, seen = [], set(), set()
    for i, v in enumerate(req.volumes):
        name = validate.ident(v.name, f"volumes[{i}].name")
        if name in seen:
            raise InvalidInput(f"volumes[{i}].name: {name!r} is given twice")
        seen.add(name)
        path = _mount_path(v.mount_path or f"/mnt/{name}", f"volumes[{i}].mount_path")
        if path in mounts:
            raise InvalidInput(f"volumes[{i}].mount_path: {path} is used twice")
        mounts.add(path)
        size = validate.number(v.size_gb, f"volumes[{i}].size_gb", 0, VOLUME_GB_MAX)
        if not isinstance(v.reserved, bool):
            raise InvalidInput(f"volumes[{i}].reserved: must be true or false")
        volumes.append(VolumePlan(volume_name(iid, name), name, path, size, v.reserved))

    ports, exposed = {}, []
    for i, p in enumerate(req.ports):
        port = validate.port(p.port, f"ports[{i}].port")
        if p.protocol not in PROTOCOLS:
            raise InvalidInput(f"ports[{i}].protocol: must be one of {', '.join(PROTOCOLS)}")
        key = f"{port}/{p.protocol}"
        if (port, p.protocol) in exposed:
            raise InvalidInput(f"ports[{i}]: {key} is given twice")
        exposed.append((port, p.protocol))
        if p.host_port is not None:
            host_port = validate.port(p.host_port, f"ports[{i}].host_port")
            host_ip = validate.ip_address(p.host_ip, f"ports[{i}].host_ip")
            ports[key] = (host_ip, host_port)

    return Plan(instance_id=iid, repo=repo, tag=tag,
                pause_name=f"mecorch-{iid}-pause", app_name=f"mecorch-{iid}-app",
                nano_cpus=int(round(vcpu * 1e9)), mem_bytes=memory_mb * 1024 * 1024,
                env=env, command=command, entrypoint=entrypoint, volumes=tuple(volumes),
                ports=ports, exposed=tuple(exposed))
