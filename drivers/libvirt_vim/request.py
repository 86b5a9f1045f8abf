"""Validation of a VM ResourceRequest (InvalidInput before anything exists)."""

from __future__ import annotations

import math

from mecorch.kernel import validate
from mecorch.kernel.errors import InvalidInput
from mecorch.driverapi.model import ResourceRequest
from mecorch.kernel.states import DeploymentType

GIB = 1 << 30
# What one VM may ask: declared in LibvirtVIM.capabilities(), which the core
# reads at admission, and checked again here before anything is made.
VCPU_MIN, VCPU_MAX = 0.01, 64
MEMORY_MB_MIN, MEMORY_MB_MAX = 32, 1 << 22
DISK_GB_MAX = VOLUME_GB_MAX = 4096
VOLUMES_MAX = 20
PROTOCOLS = ("tcp", "udp")


def validate_request(r: ResourceRequest) -> dict:
    """Check every field of a VM request before anything is made; returns
    the derived values (vCPU count, system disk bytes)."""
    if r.manner != DeploymentType.VM:
        raise InvalidInput(f"manner: the VIM deploys VMs, not {r.manner}")
    iid = validate.ident(r.instance_id, "instance_id")
    validate.text(r.app_d_id, "app_d_id")
    validate.ident(r.image, "image")
    vcpu = max(1, math.ceil(validate.number(r.vcpu, "vcpu", VCPU_MIN, VCPU_MAX)))
    validate.integer(r.memory_mb, "memory_mb", MEMORY_MB_MIN, MEMORY_MB_MAX)
    disk_gb = validate.number(r.disk_gb, "disk_gb", 0, DISK_GB_MAX)
    if len(r.volumes) > VOLUMES_MAX:
        raise InvalidInput(f"volumes: at most {VOLUMES_MAX} data disks")
    seen = set()
    for i, v in enumerate(r.volumes):
        validate.ident(v.name, f"volumes[{i}].name")
        validate.number(v.size_gb, f"volumes[{i}].size_gb", 0.001, VOLUME_GB_MAX)
        if v.name == "root" or v.name in seen:
            raise InvalidInput(f"volumes[{i}].name: {v.name!r} is used twice or is 'root'")
        seen.add(v.name)
    for i, p in enumerate(r.ports):
        validate.port(p.port, f"ports[{i}].port")
        if p.protocol not in PROTOCOLS:
            raise InvalidInput(f"ports[{i}].protocol: must be tcp or udp")
    # The environment reaches the guest as the fw_cfg file X.FW_CFG_ENV:
    # KEY=VALUE strings, each ended by a NUL (read in the guest from
    # /sys/firmware/qemu_fw_cfg/by_name/opt/org.mecorch/env/raw). A file,
    # not QEMU's command line: the Mp1 token is not for every local user.
    env = validate.env(dict(r.env))
    data = b"".join(f"{k}={v}".encode() + b"\0" for k, v in sorted(env.items()))
    if len(data) > 8192:
        raise InvalidInput("env: at most 8 KiB of KEY=VALUE strings reach a VM")
    return {"iid": iid, "vcpu": vcpu, "disk_bytes": int(disk_gb * GIB), "env": data}
