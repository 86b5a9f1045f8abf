"""Driver contracts: what the core asks of a CIM, a VIM and a MEP.

Failure semantics, which every driver implementation must keep:

- A driver raises only `mecorch.kernel.errors.MecorchError` subclasses. It maps its
  backend's exceptions in one place (one function or context manager per
  driver) so transport errors never reach the core.
- `deploy` either returns a complete `Allocation` or raises, having removed
  everything it made: a failed deploy leaves the backend as it was.
- `destroy` and `remove_rules` of something already gone succeed.
- Constructors have no side effects: no connection, no file, no daemon.
  The backend library is imported when the driver module is imported, and
  the module is imported only when the configuration names the driver (the
  driver package imports it on demand: `on_demand`; the core imports the
  package's `settings` alone, for its config schema).
- Every backend object a driver makes carries the instance id (Docker
  labels, libvirt domain metadata, iptables chain names, dnsmasq file
  names) so `list_instances` can find it after a restart without the store.

Optional capabilities (`Watchable`, `Revivable`, `Uninstallable`,
`RuleAudit`, `DnsOnAppNetworks`, `ExecInside`, `UsageReadable`, `DataMovable`) are ABCs a
driver inherits to declare them; the core checks them with `isinstance`.
"""

from __future__ import annotations

import abc
import importlib
import threading
from dataclasses import dataclass
from pathlib import Path
from importlib import metadata
from typing import Any, Callable, ClassVar, Mapping

from mecorch.kernel.errors import InvalidInput
from mecorch.kernel.schema import DRIVER_GROUP
from mecorch.driverapi.model import (
    Allocation, Check, HostCapacity, Observation, ResourceRequest, ResourceUsage)
from mecorch.kernel.states import DeploymentType

ENTRY_POINT_GROUP = DRIVER_GROUP

# {traffic rule id: ids of the replicas steering its destinations, ascending}
# (PlatformDriver.apply_rules)
Shares = Mapping[str, tuple[str, ...]]


@dataclass(frozen=True)
class Capabilities:
    """What a driver can do, stated up front rather than found by failing.

    The core reads it at admission, before the 202 (`spec.capacity.
    unfit_for`, through placement: a host whose driver cannot take the
    request is not a fit): `reserved_volumes`, `published_ports`,
    `hardware_accel` and the declared limits of one instance below (None:
    none declared). A driver's own checks in `deploy` use the same numbers,
    so they never refuse a request the core admitted."""
    manner: DeploymentType | None       # None for the MEP
    graceful_stop: bool = True          # stop() tries a clean stop first
    sized_volumes: bool = False         # VolumeSpec.size_gb is enforced
    reserved_volumes: bool = True       # VolumeSpec.reserved (RETAIN) is honoured
    published_ports: bool = False       # PortSpec.host_port is honoured (else refused)
    hardware_accel: str = ""            # VIM: "kvm" or "tcg" once probed
    vcpu_min: float | None = None       # vCPUs of one instance
    vcpu_max: float | None = None
    memory_mb_min: int | None = None    # memory of one instance, MB
    memory_mb_max: int | None = None
    disk_gb_max: float | None = None    # its system disk (root filesystem), GB
    volume_gb_max: float | None = None  # one volume, GB
    volumes_max: int | None = None      # volumes of one instance
    port_protocols: tuple[str, ...] | None = None   # PortSpec.protocol it serves

    # What admission reads besides hardware_accel: sent in a host's report
    # to an MEO (mepm/contract.py), so the MEO admits by the same numbers.
    ADMISSION: ClassVar[tuple[str, ...]] = (
        "reserved_volumes", "published_ports", "vcpu_min", "vcpu_max", "memory_mb_min",
        "memory_mb_max", "disk_gb_max", "volume_gb_max", "volumes_max", "port_protocols")

    def admission(self) -> dict[str, Any]:
        """The ADMISSION fields as plain JSON values."""
        return {k: list(v) if isinstance(v, tuple) else v
                for k in self.ADMISSION for v in [getattr(self, k)]}

    @classmethod
    def admitting(cls, manner: DeploymentType, declared: dict[str, Any],
                  hardware_accel: str = "") -> "Capabilities":
        """Capabilities from `admission()`'s values (a host's report);
        fields not given keep their defaults."""
        got = {k: declared[k] for k in cls.ADMISSION if k in declared}
        if got.get("port_protocols") is not None:
            got["port_protocols"] = tuple(got["port_protocols"])
        return cls(manner=manner, hardware_accel=hardware_accel, **got)


class Driver(abc.ABC):
    """Common to every driver: built from its config section, checkable."""

    kind: ClassVar[str]                 # "cim" | "vim" | "mep"

    def __init__(self, config: dict[str, Any]):
        self.config = config

    @abc.abstractmethod
    def capabilities(self) -> Capabilities: ...

    @abc.abstractmethod
    def check(self) -> list[Check]:
        """Check the backend for real (reachable, version, usable) for
        `mecorch doctor`. Never raises: a failure is a Check with ok=False
        and a fix."""

    def open(self) -> None:
        """Connect to the backend and make what the driver owns exist (its
        network, pool, chains, dnsmasq...). Idempotent; called by the core
        before first use, never by the constructor."""

    def close(self) -> None:
        """Release connections (not the backend objects). Safe to call more
        than once."""


class ComputeDriver(Driver):
    """A CIM (containers) or a VIM (virtual machines)."""

    # -- image repository ------------------------------------------------
    @abc.abstractmethod
    def import_image(self, image: str, source: str, sha256: str | None = None) -> dict:
        """Store an image in this manner's image repository under `image`
        (a registry reference or a VM image id) from `source` (a local
        file: a `docker save` tar or a qcow2/raw disk), verify `sha256` when
        given, and mark it available. Returns the repository record."""

    @abc.abstractmethod
    def set_image_available(self, image: str, available: bool) -> None:
        """Mark an image (un)available; an unavailable image is not deployed."""

    @abc.abstractmethod
    def remove_image(self, image: str) -> None:
        """Remove an image from the repository. Already gone: success."""

    @abc.abstractmethod
    def check_image(self, image: str) -> dict:
        """Raise ImageNotFound, ImageUnavailable or IntegrityError, each
        with its own message; else return the repository record."""

    # -- instances -------------------------------------------------------
    @abc.abstractmethod
    def capacity(self) -> HostCapacity:
        """Host capacity and what mecorch's instances use of it."""

    @abc.abstractmethod
    def deploy(self, request: ResourceRequest) -> Allocation:
        """Check the image, create storage, network and runtime, start it.
        All or nothing: on failure everything made so far is removed."""

    @abc.abstractmethod
    def start(self, handle: dict) -> None:
        """Start a stopped instance (ETSI operate STARTED)."""

    @abc.abstractmethod
    def stop(self, handle: dict, timeout_s: float) -> None:
        """Stop gracefully (SIGTERM / ACPI shutdown), forcefully after
        `timeout_s` (0 = at once). Already stopped or gone: success."""

    @abc.abstractmethod
    def destroy(self, handle: dict) -> None:
        """Remove the runtime, network attachment and non-reserved
        volumes. Idempotent: what is already gone is success."""

    @abc.abstractmethod
    def inspect(self, handle: dict) -> Observation:
        """Observed state of one instance (MISSING when it is gone)."""

    @abc.abstractmethod
    def list_instances(self) -> list[Observation]:
        """Every instance this driver finds on its backend by mecorch's
        labels/metadata, whether or not the store knows it."""

    def logs(self, handle: dict, tail: int | None = None) -> bytes:
        """The instance's own output (a container's stdout and stderr, a
        VM's serial console), its last `tail` lines; b"" when it wrote none."""
        from mecorch.kernel.errors import UnsupportedAction
        raise UnsupportedAction(f"the {self.kind} driver {type(self).__name__} keeps no "
                                "output of its instances")

    def app_gateway(self) -> str | None:
        """This host's address on the network the driver attaches apps to
        (its gateway), where apps reach the MEP's DNS and Mp1; None when
        there is none (the default)."""
        return None


class PlatformDriver(Driver):
    """The MEP data plane: DNS rules and traffic rules of instances."""

    kind = "mep"

    @abc.abstractmethod
    def apply_rules(self, instance_id: str, target_ip: str,
                    traffic_rules: list, dns_rules: list,
                    shares: Shares | None = None) -> None:
        """Make the instance's rule set exactly this (replacing what it had)
        atomically: it all takes effect or nothing changes. Rules are the
        validated objects of `mecorch.spec.rules`; `target_ip` is the
        instance's address, where FORWARD rules steer traffic to.

        `shares` (replicas behind one service address): {traffic rule id:
        the ids of the instances whose identical rule steers the same
        destinations, this one included, ascending}. The driver spreads
        NEW connections matching that rule evenly over them: each replica
        takes its part (1/(n-k) of what reaches the k-th), and what it
        does not take goes on to the next replica in ascending id order,
        the last one taking the rest, so that every connection reaches
        exactly one of them. Only this instance's own rules change: the
        core applies each replica again when the set of them changes.
        A rule not named is this instance's alone."""

    @abc.abstractmethod
    def remove_rules(self, instance_id: str) -> None:
        """Remove exactly what was added for the instance. Idempotent."""

    @abc.abstractmethod
    def rule_owners(self) -> set[str]:
        """Instance ids that have rules applied on the backend."""


# -- optional capabilities -------------------------------------------------
# A driver declares each one it has by inheriting it (`class DockerCIM(
# ComputeDriver, Watchable, Revivable, Uninstallable)`); the core asks with
# `isinstance`, never by looking a method up by name. The same failure
# semantics as above hold: only MecorchError subclasses leave a verb.

class Watchable(abc.ABC):
    """A compute driver that streams its backend's own events."""

    @abc.abstractmethod
    def watch(self, on_change: Callable[[Observation], None], stop: threading.Event) -> None:
        """Call `on_change(Observation)` for each start and death of an app
        runtime of this driver's host as the backend reports it (seconds,
        not a reconcile period), until `stop` is set; then return. Raises
        BackendError or BackendUnavailable when the stream breaks or cannot
        be opened: the core opens it again after a pause (reconciliation
        covers what the outage missed)."""


class Revivable(abc.ABC):
    """A compute driver whose instances do not come back by themselves when
    their host restarts (Docker; libvirt's domain autostart does it)."""

    @abc.abstractmethod
    def revive(self, handle: dict, check_only: bool = False) -> bool:
        """Start the instance again if its runtime stopped with its host (a
        reboot, a daemon restart), not by itself (a crash stays stopped).
        True if it was started; with `check_only`, True if it would be and
        nothing is started. Gone or running: False. The caller checks the
        operator did not stop it."""


class Uninstallable(abc.ABC):
    """A driver that makes things of its own on its backend (a network, a
    pool, chains, processes) beyond its instances' objects."""

    @abc.abstractmethod
    def uninstall(self, keep: dict[str, tuple[str, ...]] | None = None) -> list[str]:
        """Remove everything this driver made for its host (`mecorch host
        teardown`) and say what, one line each in the driver's words (what
        it names: its network, pool, chains...), but nothing marked as
        another host's, and not what `keep` names: {config key (one of its
        settings' `OWNED`): the other configured hosts naming the same
        object}; a line "kept <what>: <why>" says so. A compute driver
        raises Conflict while an instance's objects of the host remain (a
        MEP removes every instance's rules with its own); what is already
        gone is success."""


class RuleAudit(abc.ABC):
    """A MEP driver that can tell whether an instance's rules are in place
    as `apply_rules` left them (after a reboot the chains are gone while the
    DNS files remain): reconciliation applies again only what is missing."""

    @abc.abstractmethod
    def snapshot(self) -> Any:
        """One read of the backend's rules, to answer several
        `rules_applied` questions in a row (one read per reconcile round,
        not one per instance). Opaque to the core."""

    @abc.abstractmethod
    def rules_applied(self, instance_id: str, target_ip: str, traffic_rules: list,
                      dns_rules: list, saved: Any = None,
                      shares: Shares | None = None) -> bool:
        """The instance's rules (validated values, as `apply_rules` takes
        them, with the same `shares`) are in place exactly, the replicas'
        part and order included; `saved`: a `snapshot()` to read instead
        of the backend. Changes nothing."""


class DnsOnAppNetworks(abc.ABC):
    """A MEP driver that answers DNS rules on more addresses than its own
    listener: the app networks' gateways, which containers and VMs get as
    their resolver."""

    @abc.abstractmethod
    def serve_dns_on(self, addresses: list[str]) -> None:
        """Answer DNS rules on port 53 of `addresses` (besides what the
        driver's config names); the set replaces the previous one.
        Idempotent: the same set changes nothing."""


class ExecInside(abc.ABC):
    """A compute driver that can run a command inside an instance's runtime
    (a container's exec): what an `exec` health check needs
    (mecorch.mepm.health; a driver without it gets no exec probe run: the
    check fails, saying so)."""

    @abc.abstractmethod
    def exec_in(self, handle: dict, command: list[str], timeout_s: float) -> int:
        """Run `command` (argv, no shell) inside the instance's running app
        and return its exit code; Timeout when it has not ended after
        `timeout_s` (it is left to end by itself, as Kubernetes does);
        Conflict when the app is not running; NotFound when it is gone."""


class UsageReadable(abc.ABC):
    """A compute driver that reads what one instance uses (CPU, memory,
    network and block I/O) from its backend's own counters (Docker's stats,
    libvirt's domain stats, Nova's server diagnostics). Read in the
    background on the host's health schedule (mecorch.mepm.usage), never
    on a deploy's path; one call should be cheap (Docker's one-shot stats:
    no waiting for a second sample)."""

    @abc.abstractmethod
    def read_usage(self, handle: dict) -> ResourceUsage:
        """One reading of the instance's runtime. NotFound when it is gone;
        UnsupportedAction, saying why, when the backend will not tell (a
        cloud refusing diagnostics to this user): the core shows the figures
        as unavailable with that reason; BackendError / BackendUnavailable
        as any verb. A stopped runtime: its figures that the backend still
        gives (counters), None for the others."""


class DataMovable(abc.ABC):
    """A compute driver that can carry an instance's data to another host:
    what a relocation needs (mecorch.meo.relocate). The data is what the
    app wrote: a container's named volumes, a VM's disks (its system
    disk's overlay on the image, its data disks). The carrier is one
    uncompressed tar archive, one member per volume / disk, named by the
    app's own name for it (the descriptor's volume name; for a VM
    `disk/<name>`), so the target's driver finds each under its own
    object names (another host id, another instance id)."""

    @abc.abstractmethod
    def export_data(self, handle: dict, into: Path) -> None:
        """Write the instance's data to the file `into` (a tar archive, as
        above). The instance must be stopped (Conflict when it runs: a
        copy of a running app's data is not consistent); NotFound when it
        is gone. An instance with no data writes an empty archive."""

    # The import side is `ResourceRequest.seed`: a deploy given a seed
    # archive fills the volumes / disks it makes from it before the app
    # first starts, and a deploy that fails removes them as any deploy.

class LiveMovable(abc.ABC):
    """A compute driver that moves a RUNNING instance to the same kind of
    backend on another host without stopping it: libvirt's peer-to-peer
    live migration with its storage copied (what a live relocation needs,
    mecorch.meo.relocate). The guest keeps its memory, its devices (MACs,
    disk targets) and its addresses, so both hosts' guest networks must
    have the same range: a move that cannot keep the guest's address is
    refused by the target, never done with a guest left unreachable.

    Three steps, the two hosts' MEPMs between them (mecorch.mepm.live):
    the target's `prepare_incoming` makes the room and answers an offer;
    the source's `migrate_out` sends the running instance to it; the
    target's `deploy` given `ResourceRequest.incoming` (that offer) adopts
    the arrived instance as its own, as a deploy's Allocation.
    `abort_incoming` undoes a prepare whose migration did not happen or
    whose adoption failed. Every value handed between hosts is JSON."""

    @abc.abstractmethod
    def live_endpoint(self) -> dict | None:
        """Where another host's backend sends a running instance to this
        one: {"uri": the backend URI the source's backend connects to,
        "network_cidr": the guests' address range}; None when this host is
        not configured for live migration (it then takes no incoming)."""

    @abc.abstractmethod
    def live_source(self, handle: dict) -> dict:
        """What a target needs to take the running instance in:
        {"xml": the running domain's description (its device identity),
        "addresses": [its guest IPv4 addresses]}. Conflict when it is not
        running (a stopped instance moves cold); NotFound when it is gone."""

    @abc.abstractmethod
    def prepare_incoming(self, request: ResourceRequest, source: dict) -> dict:
        """Target: make `request`'s volumes (the system disk an overlay on
        this host's copy of the image, the data disks at the source's sizes)
        and the domain description for them with the source's device
        identity, and reserve the guest's addresses on this host's network.
        Answers the offer (JSON): {"uri", "migrate_uri", "xml", "disks"}.
        Conflict naming why when the move cannot keep the guest as it is
        (its address outside this host's range or held by another guest,
        no live endpoint configured); nothing is left when it fails."""

    @abc.abstractmethod
    def migrate_out(self, handle: dict, offer: dict, timeout_s: float) -> None:
        """Source: send the running instance to the offer's backend, its
        storage copied. On success it runs there, and here its domain is
        shut off, still defined, its disks kept (a rollback starts it again
        here; `destroy` removes it). On failure or after `timeout_s` the
        migration is aborted and the instance still runs here
        (BackendError / Timeout naming why)."""

    @abc.abstractmethod
    def abort_incoming(self, instance_id: str) -> None:
        """Target: remove what `prepare_incoming` made for `instance_id`
        (its volumes, its address reservation, a domain that arrived).
        Removing what is gone is success."""


OPTIONAL = (Watchable, Revivable, Uninstallable, RuleAudit, DnsOnAppNetworks, ExecInside,
            UsageReadable, DataMovable, LiveMovable)


def on_demand(package: str, cls: str) -> Callable[[str], type]:
    """A driver package's module `__getattr__`: its driver class, imported
    from `<package>.driver` (with the backend library) when first asked for
    (the entry point loads it so), never with the package: the core imports
    the package's `settings` for its config schema, and nothing else."""
    def __getattr__(name: str) -> type:
        if name != cls:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return vars(importlib.import_module(f"{package}.driver"))[cls]
    return __getattr__


_KINDS = {"cim": ComputeDriver, "vim": ComputeDriver, "mep": PlatformDriver}


def load_driver(kind: str, config: dict[str, Any]) -> Driver:
    """Build the driver named by `config["driver"]` for role `kind`.

    Drivers are looked up through the `mecorch.drivers` entry points, so
    only the named driver's module (and its backend library) is imported.
    """
    name = config.get("driver")
    if kind not in _KINDS:
        raise InvalidInput(f"unknown driver role {kind!r}")
    eps = {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    if name not in eps:
        raise InvalidInput(
            f"no {kind} driver named {name!r}; installed: {', '.join(sorted(eps)) or 'none'}")
    cls = eps[name].load()
    if not (isinstance(cls, type) and issubclass(cls, _KINDS[kind])) or cls.kind != kind:
        raise InvalidInput(f"driver {name!r} is not a {kind} driver")
    return cls(config)
