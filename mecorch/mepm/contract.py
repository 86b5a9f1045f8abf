"""The MEPM contract: everything the MEO asks of one edge host.

It is ETSI MEC 010-2 at the Mm3 reference point: app package management
and app lifecycle on the host's MEPM (the same resources and bodies as the
northbound API), plus what ETSI leaves out, as a documented extension: the
host's inventory and capacity (`HostInfo`, `GET /mecorch/v1/hosts`), and
the lifting of the host's fence of apps the MEO still holds there
(`unfence`, `POST /mecorch/v1/hosts/{hostId}/unfence`).

Failure semantics every implementation keeps:
- a host that cannot be reached raises `BackendUnavailable` (never a
  different error, so the MEO can tell "unreachable" from "refused");
- an answer of the MEPM that refuses raises the same `MecorchError`
  subclass the MEPM answered (its ProblemDetails status and title), with
  its detail;
- creates and instantiates carry an idempotency key: a retry after a
  broken link returns what the first call made, never a second instance
  (the same key with another body: `IdempotencyMismatch`);
- a terminate or operate sent again while the first runs is refused
  (`Conflict`) and the first is among `ops_of`; a terminate of an instance
  already NOT_INSTANTIATED is refused (`Conflict`): the MEO follows the
  one running, or takes the instance as terminated;
- `services` is the host's registry as its operator reads it (read-only:
  the apps change it on their host);
- what the host has not: `get_instance`, `get_op` and `rules` answer
  None, `ops_of` nothing, `delete_instance` and `remove_package` succeed;
  an operation on it (and `logs` of it) is the MEPM's `NotFound`;
- answers are documents as the API carries them (JSON, no internal keys);
- one identity: a package copy the host makes takes the MEO's package id,
  an instance created with `instance_id` takes that id (the MEO's), so
  records, containers, domains, logs and errors on the host name the ids
  the OSS has. A copy or instance the host made before under an id of its
  own keeps it (the MEO maps it); an id the host already has is a
  `Conflict` (a retried create with its key returns the first one).

tests/conformance/test_mepm_contract.py (and test_mepm_data.py, for a
relocation's data, test_mepm_live.py for a live one) holds both
implementations to these rules.
"""

from __future__ import annotations

import abc
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mecorch.driverapi.contracts import Capabilities
from mecorch.kernel.states import DeploymentType
from mecorch.spec.capacity import Room


@dataclass(frozen=True)
class MannerCapacity:
    """What a host can still promise for one manner. vCPUs are allocatable
    ones (the host's cpu_allocation_ratio applied); `used` is what the MEPM
    promised (instances plus deploys in flight), as Nova's placement counts."""
    vcpu_total: float
    vcpu_used: float
    memory_mb_total: int
    memory_mb_used: int
    disk_gb_total: float
    disk_gb_used: float
    accel: str = ""             # VM: "kvm" | "tcg" once probed
    # what its driver declares it admits (Capabilities.admission()); {}: unknown
    admits: dict = field(default_factory=dict)

    def room(self) -> Room:
        """As `spec.capacity` reckons room (the host's own computation, sent)."""
        return Room(self.vcpu_total, self.memory_mb_total, self.disk_gb_total,
                    self.vcpu_used, self.memory_mb_used, self.disk_gb_used)

    def capabilities(self, manner: str) -> Capabilities | None:
        """The driver's declared capabilities as admission reads them (None
        when the host reported none)."""
        if not self.admits:
            return None
        return Capabilities.admitting(DeploymentType(manner), self.admits, self.accel)


@dataclass(frozen=True)
class HostInfo:
    host_id: str
    manners: dict[str, MannerCapacity] = field(default_factory=dict)   # "CONTAINER"/"VM"
    latency_ms: float | None = None     # declared one-way latency to its UEs
    mp1_url: str | None = None
    service_cidr: str | None = None     # its MEP's service range (mep.service_cidr)
    # its instances' figures summed (mecorch.mepm.usage.UsageReader.host_sum)
    usage: dict | None = None
    # where its VIM takes a running VM in (LiveMovable.live_endpoint):
    # {"uri", "networkCidr"}; None when it takes none. A live relocation
    # needs both hosts' with the same networkCidr (the guest keeps its address)
    live: dict | None = None

    def supports(self, manner: DeploymentType) -> bool:
        return manner.value in self.manners

    def to_dict(self) -> dict:
        return {"hostId": self.host_id, "latencyMs": self.latency_ms, "mp1Url": self.mp1_url,
                "serviceCidr": self.service_cidr, "resourceUsage": self.usage,
                "live": self.live,
                "capacity": {m: {**_camel(asdict(c)), "admits": _camel(c.admits)}
                             for m, c in self.manners.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> "HostInfo":
        manners = {}
        for m, c in (d.get("capacity") or {}).items():
            DeploymentType(m)               # an unknown manner is a broken peer
            manners[m] = MannerCapacity(
                float(c["vcpuTotal"]), float(c["vcpuUsed"]), int(c["memoryMbTotal"]),
                int(c["memoryMbUsed"]), float(c["diskGbTotal"]), float(c["diskGbUsed"]),
                str(c.get("accel") or ""), _snake(c.get("admits") or {}))
        lat = d.get("latencyMs")
        cidr = d.get("serviceCidr")
        usage = d.get("resourceUsage")
        live = d.get("live")
        if not (isinstance(live, dict) and isinstance(live.get("uri"), str)
                and isinstance(live.get("networkCidr"), str)):
            live = None                 # none, or an older host's report
        return cls(str(d["hostId"]), manners, float(lat) if lat is not None else None,
                   d.get("mp1Url"), str(cidr) if cidr else None,
                   usage if isinstance(usage, dict) else None,
                   {"uri": live["uri"], "networkCidr": live["networkCidr"]} if live else None)


def _snake(d: dict) -> dict:
    """The inverse of `_camel` for the declared capabilities."""
    names = {_camel({k: None}).popitem()[0]: k for k in Capabilities.ADMISSION}
    return {names[k]: v for k, v in d.items() if k in names}


def _camel(d: dict) -> dict:
    out = {}
    for k, v in d.items():
        head, *rest = k.split("_")
        out[head + "".join(w.capitalize() for w in rest)] = v
    return out


class Mepm(abc.ABC):
    """One edge host's MEPM, as the MEO sees it."""

    host_id: str

    @abc.abstractmethod
    def info(self) -> HostInfo:
        """The host's manners and capacity, now."""

    # ---------------------------------------------------------------- packages
    @abc.abstractmethod
    def ensure_package(self, pkg: dict, zip_path: str) -> str:
        """Make the app package (the MEO's AppPkgInfo, its zip on the MEO)
        onboarded and enabled on this host, a new copy under the MEO's id
        `pkg["id"]`; returns the host's package id. A package already there
        (by appDId and versions) is left as it is, under its own id."""

    @abc.abstractmethod
    def remove_package(self, app_d_id: str, versions: tuple) -> None:
        """Disable and delete the host's copy of the package of that appDId
        and (appDVersion, appSoftwareVersion), and no other version (gone =
        success; deletion pending on the host while instances there still
        use it)."""

    # ---------------------------------------------------------------- instances
    @abc.abstractmethod
    def create_instance(self, body: dict, key: str, instance_id: str | None = None) -> dict:
        """CreateAppInstanceRequest -> the host's AppInstanceInfo, made
        under `instance_id` (the MEO's id for it) when given."""

    @abc.abstractmethod
    def instantiate(self, instance_id: str, body: dict, key: str) -> dict:
        """InstantiateAppRequest -> the host's AppInstanceLcmOpOcc (202)."""

    @abc.abstractmethod
    def terminate(self, instance_id: str, body: dict) -> dict:
        """TerminateAppRequest -> the host's op occurrence."""

    @abc.abstractmethod
    def operate(self, instance_id: str, body: dict) -> dict:
        """OperateAppRequest -> the host's op occurrence."""

    @abc.abstractmethod
    def delete_instance(self, instance_id: str) -> None:
        """Delete a NOT_INSTANTIATED instance resource (gone = success)."""

    @abc.abstractmethod
    def get_instance(self, instance_id: str) -> dict | None:
        """The host's AppInstanceInfo, None when it has none by that id."""

    @abc.abstractmethod
    def list_instances(self) -> list[dict]:
        """Every AppInstanceInfo of the host."""

    @abc.abstractmethod
    def get_op(self, op_id: str) -> dict | None:
        """The host's op occurrence, None when it has none by that id."""

    @abc.abstractmethod
    def ops_of(self, instance_id: str) -> list[dict]:
        """The host's op occurrences of one instance."""

    # ---------------------------------------------------------------- what only the host has
    @abc.abstractmethod
    def rules(self, instance_id: str) -> dict | None:
        """The instance's MEC 011 rules as its MEP holds them (with their
        state): {"trafficRules": [...], "dnsRules": [...]}; None when the host
        has no instance by that id."""

    @abc.abstractmethod
    def logs(self, instance_id: str, tail: int | None = None) -> tuple[bytes, str]:
        """(the app's own output, its last `tail` lines; where it came from:
        "backend" or "kept" after a termination). `NotFound` when the host
        has no such instance or kept nothing of it; `UnsupportedAction` when
        its driver keeps no output."""

    @abc.abstractmethod
    def unfence(self, instance_ids: list[str]) -> dict:
        """These instances are still the MEO's on this host: those the host
        fenced (mecorch.mepm.fence: no word from the MEO for their
        lostAfter) serve again. {"unfenced": [...], "notFenced": [...],
        "busy": [...]} (busy: an LCM operation holds it; ask again later)."""

    @abc.abstractmethod
    def health(self) -> list[dict]:
        """The host's backends as its own probes last saw them:
        [{"role": "cim"|"vim"|"mep", "ok": bool, "detail": str}]."""

    @abc.abstractmethod
    def follow(self, callback_url: str, token: str) -> bool:
        """Ask the host to notify its op occurrences' state changes
        (AppLcmOpOccStateChange) and its instances' (AppInstanceStateChange,
        every state) to `callback_url` with bearer `token`; asking again
        finds the same subscriptions. The host's subscriptions for the
        same callback path at another address (a former MEO replica's, an
        old address of the MEO) are removed. True when it will; False when
        the MEO is better off reading the host (in process)."""

    # ---------------------------------------------------------------- a relocation's data
    @abc.abstractmethod
    def export_data(self, instance_id: str, into: Path) -> None:
        """Write the instance's data (its driver's archive: one uncompressed
        tar, a member per volume / disk, DataMovable) to the file `into`.
        The instance must be INSTANTIATED with operationalState STOPPED
        (Conflict otherwise); its manner's driver must be DataMovable
        (UnsupportedAction naming it otherwise). Over Mm3: `GET
        /mecorch/v1/app_instances/{id}/data` (application/x-tar, streamed)."""

    @abc.abstractmethod
    def import_data(self, instance_id: str, archive: Path) -> None:
        """Keep the archive (as `export_data` writes it) for the instance's
        next instantiate, which hands it to its driver to fill the volumes /
        disks it makes (ResourceRequest.seed). The instance must be
        NOT_INSTANTIATED (Conflict otherwise); the archive is checked (a
        tar, safe member names, at most the host's
        orchestrator.max_data_bytes: InvalidInput / PayloadTooLarge). The
        host drops it once that instantiation COMPLETES or the instance
        resource is deleted; a driver that is not DataMovable refuses the
        instantiate (UnsupportedAction). Over Mm3: `PUT
        /mecorch/v1/app_instances/{id}/data` (application/x-tar).
        (mecorch.mepm.seeds)"""

    # ---------------------------------------------------------------- a live relocation
    # The MEO drives it (mecorch.meo.relocate), the two hosts' MEPMs each do
    # their side (mecorch.mepm.live); the hosts never talk to each other but
    # backend to backend (libvirtd to libvirtd). Every value is JSON.
    @abc.abstractmethod
    def live_source(self, instance_id: str) -> dict:
        """What a target host needs to take this running instance in:
        {"driver": its driver's LiveMovable.live_source answer,
        "mp1TokenDigest": the instance's Mp1 token digest here (the guest
        keeps the token it booted with) or None}. The instance must be
        INSTANTIATED and STARTED (Conflict otherwise); its manner's driver
        LiveMovable (UnsupportedAction otherwise). Over Mm3: `GET
        /mecorch/v1/app_instances/{id}/live_source`."""

    @abc.abstractmethod
    def prepare_incoming(self, instance_id: str, body: dict, source: dict) -> dict:
        """Target: make room for the instance arriving live. `body`: the
        InstantiateAppRequest its instantiate will be given; `source`: the
        source host's `live_source` answer. The host plans the request as
        instantiate would and asks its driver (LiveMovable.prepare_incoming);
        answers the offer {"driver": the driver's offer}, to hand to the
        source's `migrate_out`. The instance must be NOT_INSTANTIATED
        (Conflict otherwise; Conflict from the driver when the move cannot
        keep the guest as it is, saying why). The host keeps the offer for
        the instance's next instantiate, which adopts the arrived instance
        (ResourceRequest.incoming) and keeps the source's Mp1 token digest;
        it is dropped once that instantiate COMPLETES, by `abort_incoming`,
        or when the instance resource is deleted. Over Mm3: `POST
        /mecorch/v1/app_instances/{id}/incoming` {"instantiateAppRequest":
        body, "source": source}."""

    @abc.abstractmethod
    def abort_incoming(self, instance_id: str) -> None:
        """Target: drop the kept offer and have the driver remove what its
        prepare made (LiveMovable.abort_incoming: volumes, address
        reservation, an arrived instance). Nothing kept, or no such
        instance: success. Over Mm3: `DELETE
        /mecorch/v1/app_instances/{id}/incoming`."""

    @abc.abstractmethod
    def migrate_out(self, instance_id: str, offer: dict) -> None:
        """Source: send the running instance to the target's offer (its
        `prepare_incoming` answer), synchronously. On success the instance
        here reads INSTANTIATED with operationalState STOPPED and is marked
        moved out: nothing on the host starts it again (supervisor, restart
        policy, reconciliation) until an operate START (a rollback), which
        clears the mark; a terminate removes it as any. On failure it still
        runs here (the driver's error). Conflict unless INSTANTIATED and
        STARTED; UnsupportedAction when its driver is not LiveMovable. Over
        Mm3: `POST /mecorch/v1/app_instances/{id}/migrate` {"offer": offer}."""

    @abc.abstractmethod
    def services(self) -> list[dict]:
        """The MEC 011 services the host's apps registered (ServiceInfo,
        as an operator discovers them on the host: no isLocal)."""

    def close(self) -> None:
        """Release connections (nothing by default)."""
