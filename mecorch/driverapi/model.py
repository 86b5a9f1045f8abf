"""Value objects at the driver boundary.

Every way of asking for an instance (an explicit deployment type, a TOSCA
service template, a Kubernetes-style Pod, the AppD recorded at onboarding)
reduces to one `ResourceRequest`; every compute driver answers with one
`Allocation`. Backend-specific details go in `extra` (a plain dict), never
in new fields. `Allocation.handle` is opaque to the core: it stores it and
gives it back to the driver (stop/destroy/inspect/recover after a restart).
"""

from __future__ import annotations

from dataclasses import dataclass, field, asdict
from typing import Any

from mecorch.kernel.states import DeploymentType, ObservedState


@dataclass(frozen=True)
class VolumeSpec:
    """A storage volume of the instance (ETSI virtualStorageDescriptor).

    `reserved` volumes survive the instance's deletion (deletion policy
    RETAIN); the others are removed with it.
    """
    name: str
    size_gb: float = 1.0
    mount_path: str | None = None      # containers: where it is mounted
    reserved: bool = False


@dataclass(frozen=True)
class PortSpec:
    """A port the instance serves. `host_port` publishes it on `host_ip`
    (containers only; VMs are reached by their own address)."""
    port: int
    protocol: str = "tcp"
    host_port: int | None = None
    host_ip: str = "127.0.0.1"


@dataclass(frozen=True)
class ResourceRequest:
    """What an instance needs, whatever manner it is deployed by."""
    instance_id: str
    app_d_id: str
    manner: DeploymentType
    image: str                          # registry reference or VM image id
    vcpu: float = 1.0
    memory_mb: int = 128
    disk_gb: float = 1.0                # system disk (VM) / rootfs budget
    volumes: tuple[VolumeSpec, ...] = ()
    ports: tuple[PortSpec, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    command: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    # a relocation's data from the source host (DataMovable.export_data's
    # archive, a local file): the deploy fills its volumes / disks from it
    # before the app first starts; only a DataMovable driver is given one
    seed: str | None = None
    # a live relocation's offer (LiveMovable.prepare_incoming's answer on
    # this host): the deploy adopts the instance that arrived by it instead
    # of making one; only a LiveMovable driver is given one
    incoming: dict[str, Any] | None = None


@dataclass(frozen=True)
class Address:
    """An address the instance was given on a network."""
    ip: str
    network: str
    mac: str | None = None


@dataclass(frozen=True)
class Allocation:
    """What a compute driver allocated for an instance."""
    instance_id: str
    manner: DeploymentType
    vcpu: float
    memory_mb: int
    storage: tuple[dict, ...]           # [{"name", "size_gb", "id", "reserved"}]
    addresses: tuple[Address, ...]
    handle: dict[str, Any]              # opaque, JSON-serialisable
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["manner"] = self.manner.value
        return d


@dataclass(frozen=True)
class Observation:
    """What the backend reports about one instance right now."""
    instance_id: str
    state: ObservedState
    handle: dict[str, Any]
    detail: str = ""
    # how a stopped runtime ended: a container's exit code; a VM's 0 for a
    # shutdown by its guest, None for any other end (destroyed, crashed).
    # The supervisor's OnFailure reads it (None counts as a failure).
    exit_code: int | None = None
    # a fault the backend names, in a few words ("OOM killed", "crashed",
    # "disk I/O error"): subscribers are told (AppInstanceStateChange)
    fault: str = ""


@dataclass(frozen=True)
class HostCapacity:
    """Capacity and what is in use, as the backend reports it."""
    cpu_total: float
    cpu_used: float
    memory_mb_total: int
    memory_mb_used: int
    disk_gb_total: float
    disk_gb_used: float

    def fits(self, vcpu: float, memory_mb: int, disk_gb: float) -> bool:
        return (self.cpu_used + vcpu <= self.cpu_total
                and self.memory_mb_used + memory_mb <= self.memory_mb_total
                and self.disk_gb_used + disk_gb <= self.disk_gb_total)


@dataclass(frozen=True)
class Check:
    """One line of `mecorch doctor`: a backend check done for real."""
    name: str
    ok: bool
    detail: str
    fix: str = ""


@dataclass(frozen=True)
class ResourceUsage:
    """What one instance uses now, as its backend counts it (`UsageReadable`).

    Counters are cumulative since the runtime started (CPU seconds, bytes);
    None: the backend does not tell that figure (never a guess). `at`: when
    it was read (seconds since the epoch). `cpu_percent` is the backend's own
    figure where it gives one over an interval; otherwise the core works it
    out from two successive readings of `cpu_seconds` (100 = one core)."""
    at: float
    cpu_seconds: float | None = None
    cpu_percent: float | None = None
    memory_bytes: int | None = None         # in use (Docker: without the inactive page cache)
    memory_limit_bytes: int | None = None
    net_rx_bytes: int | None = None
    net_tx_bytes: int | None = None
    block_read_bytes: int | None = None
    block_write_bytes: int | None = None
