"""DockerCIM: the container infrastructure manager on the Docker Engine.

An instance is a pause container (owns the network namespace, the address
on mecorch's bridge network and the published ports) and an app container
started inside that namespace, plus its named volumes. Every object is
labelled with the instance id and host id, so `list_instances` finds them
after a restart without the store.

docker-py's low-level `APIClient` is used rather than `DockerClient`: the
high-level models re-inspect an object after every create, which would
double the number of daemon round trips of a deploy.
"""

from __future__ import annotations

import ipaddress

import math
import os
import re
import threading
import time
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import docker.utils

from mecorch.kernel import validate
from mecorch.driverapi.catalog import ImageCatalog
from mecorch.driverapi.contracts import (
    Capabilities, ComputeDriver, DataMovable, ExecInside, Revivable, Uninstallable,
    UsageReadable, Watchable)
from mecorch.kernel.errors import (
    BackendError, Conflict, InvalidInput, MecorchError, NotFound, Timeout)
from mecorch.driverapi.model import (
    Address, Allocation, Check, HostCapacity, Observation, ResourceRequest, ResourceUsage)
from mecorch.kernel.states import DeploymentType, ObservedState

from . import carry, pause, settings
from . import plan as P
from .backend import backend_errors, connect, drain, gone_ok, list_containers
from .stats import usage_of
from .plan import (LABEL_HOST, LABEL_INSTANCE, LABEL_MEM_BYTES, LABEL_NANO_CPUS,
                   LABEL_NETWORK, LABEL_RESERVED, LABEL_ROLE, LABEL_VOLUME, Plan, VolumePlan,
                   make_plan, volume_name)
from .images import ImageRepository

MiB = 1024 * 1024
GiB = 1024 * MiB
# How much earlier than its pause container an app container may have
# stopped and still count as stopped with the host: dockerd's shutdown stops
# them together, each within its stop timeout (10 s by default).
REVIVE_SLACK_S = 20
OOM_KILLED = "OOM killed"     # in a detail: the kernel killed it at its memory limit
DATA_MAX_BYTES = 16 * GiB     # one volume carried by a relocation (cim.data_max_bytes)
_STATES = {"running": ObservedState.RUNNING, "created": ObservedState.STOPPED,
           "exited": ObservedState.STOPPED, "dead": ObservedState.STOPPED}


class DockerCIM(ComputeDriver, Watchable, Revivable, Uninstallable, ExecInside, UsageReadable,
                DataMovable):
    kind = "cim"

    def __init__(self, config: dict[str, Any]):
        super().__init__(config)
        self.docker_host = validate.text(
            config.get("docker_host", "unix:///var/run/docker.sock"), "cim.docker_host", 1024)
        self.registry_host = validate.text(config.get("registry", "127.0.0.1:5000"),
                                           "cim.registry", 255)
        if validate.split_image_ref(f"{self.registry_host}/x")[0] != self.registry_host:
            raise InvalidInput("cim.registry: must be host:port, e.g. 127.0.0.1:5000")
        self.host_id = validate.ident(config.get("host_id", "default"), "cim.host_id")
        # The network: the section's, else the host's own (as the
        # configuration names it); its subnet: the section's, else Docker's pick
        self.network = config.get("network") or settings.per_host(self.host_id)["network"]
        self.subnet = config.get("subnet")
        settings.check_section({"network": self.network, "subnet": self.subnet})
        # The containers' resolvers (Docker's `dns` option; on a user-defined
        # network Docker's embedded DNS at 127.0.0.11 forwards to them):
        # "gateway" is the network's gateway, where the MEP answers DNS rules.
        dns = config.get("dns", ["gateway"])
        if not isinstance(dns, list) or len(dns) > 3:
            raise InvalidInput("cim.dns: must be a list of up to 3 IP addresses or 'gateway'")
        self.dns = [d if d == "gateway" else validate.ip_address(d, f"cim.dns[{i}]")
                    for i, d in enumerate(dns)]
        self.busybox = validate.text(config.get("busybox", "/bin/busybox"), "cim.busybox", 1024)
        self.timeout_s = validate.number(config.get("timeout_s", 60), "cim.timeout_s", 1, 3600)
        # the largest volume a relocation carries (export_data, a deploy's seed)
        self.data_max_bytes = validate.integer(config.get("data_max_bytes", DATA_MAX_BYTES),
                                               "cim.data_max_bytes", 0, 1 << 50)
        state_dir = Path(config.get("state_dir", "/var/lib/mecorch"))
        self.catalog = ImageCatalog(state_dir / "container-images.json")
        self.images = ImageRepository(self.registry_host, self.catalog, self._client)
        self.registry = self.images.registry
        self._api = None
        self._network_id: str | None = None
        self._gateway: str | None = None
        self._pause_ready = False
        self._lock = threading.Lock()

    # -- connection ----------------------------------------------------------
    def _client(self):
        with self._lock:
            if self._api is None:
                with backend_errors(f"connect to dockerd at {self.docker_host}"):
                    self._api = connect(self.docker_host, self.timeout_s)
            return self._api

    def open(self) -> None:
        api = self._client()
        if not self._pause_ready:
            self._ensure_pause_image(api)
            self._pause_ready = True
        self._ensure_network(api)

    def close(self) -> None:
        with self._lock:
            if self._api is not None:
                self._api.close()
            self._api, self._network_id, self._pause_ready = None, None, False

    def capabilities(self) -> Capabilities:
        # The local volume driver has no size limit on overlay2/extfs, so
        # VolumeSpec.size_gb is recorded but not enforced.
        return Capabilities(manner=DeploymentType.CONTAINER, graceful_stop=True,
                            sized_volumes=False, reserved_volumes=True, published_ports=True,
                            vcpu_min=P.VCPU_MIN, vcpu_max=P.VCPU_MAX,
                            memory_mb_min=P.MEMORY_MB_MIN, memory_mb_max=P.MEMORY_MB_MAX,
                            disk_gb_max=P.DISK_GB_MAX, volume_gb_max=P.VOLUME_GB_MAX,
                            port_protocols=P.PROTOCOLS)

    def check(self) -> list[Check]:
        """For `mecorch doctor`: every probe is real; nothing raises."""
        checks = []
        try:
            api = self._client()
            with backend_errors("docker version"):
                ver, info = api.version(), api.info()
            checks.append(Check("docker daemon", True, f"Docker Engine {ver.get('Version')} "
                                f"(API {ver.get('ApiVersion')}) at {self.docker_host}"))
            bridge = "bridge" in (info.get("Plugins") or {}).get("Network", [])
            with backend_errors(f"look up network {self.network}"):
                have = any(n["Name"] == self.network for n in api.networks(names=[self.network]))
            checks.append(Check(
                "docker network driver", bridge,
                (f"bridge driver present; network {self.network} "
                 + ("exists" if have else "will be created on first use"))
                if bridge else "no bridge network driver",
                "" if bridge else "start dockerd with bridge networking"))
            backing = dict(info.get("DriverStatus") or []).get("Backing Filesystem", "?")
            checks.append(Check("volume sizes", True,
                                f"not enforced: local volumes on {info.get('Driver')}/{backing} "
                                "have no size limit (sized_volumes=False)"))
        except MecorchError as e:
            checks.append(Check("docker daemon", False, e.detail,
                                f"start dockerd so that {self.docker_host} answers"))
        try:
            with backend_errors(f"registry {self.registry_host}"):
                self.registry.ping()
            checks.append(Check("container image repository", True,
                                f"registry API v2 at {self.registry.scheme}://{self.registry_host}"))
        except MecorchError as e:
            checks.append(Check("container image repository", False, e.detail,
                                f"start the registry on {self.registry_host}"))
        static = pause.is_static_elf(self.busybox)
        checks.append(Check("pause image source", static,
                            f"{self.busybox} is a static executable" if static
                            else f"{self.busybox} is missing or not statically linked",
                            "" if static else "apt-get install busybox-static"))
        return checks

    def _ensure_pause_image(self, api) -> None:
        if gone_ok("inspect the pause image", api.inspect_image, pause.PAUSE_IMAGE):
            return
        data = pause.rootfs_tar(self.busybox)
        with backend_errors(f"build the pause image {pause.PAUSE_IMAGE}"):
            api.import_image_from_data(data, repository=pause.PAUSE_REPO, tag=pause.PAUSE_TAG,
                                       changes=pause.import_changes())

    def _ensure_network(self, api) -> str:
        """Id of mecorch's bridge network, created when missing. Cached:
        a failed deploy clears the cache so a removed network is re-made."""
        if self._network_id:
            return self._network_id
        for _ in range(2):
            with backend_errors(f"look up network {self.network}"):
                # The name filter matches substrings: keep the exact name.
                nets = [n for n in api.networks(names=[self.network]) if n["Name"] == self.network]
            if nets:
                if nets[0].get("Driver") != "bridge":
                    raise Conflict(f"network {self.network} exists with driver "
                                   f"{nets[0].get('Driver')}, not bridge")
                # The network is marked with the host id that made it: another
                # edge host's network is never taken over (its containers
                # would be reached, and removed, as if they were ours).
                owner = (nets[0].get("Labels") or {}).get(LABEL_HOST)
                if owner and owner != self.host_id:
                    raise Conflict(f"network {self.network} belongs to edge host {owner!r}, "
                                   f"not {self.host_id!r}: give cim.network another name")
                have = [c.get("Subnet") for c in (nets[0].get("IPAM") or {}).get("Config") or []]
                if self.subnet and self.subnet not in have:
                    raise Conflict(f"network {self.network} has subnet {', '.join(have) or 'none'}"
                                   f", not cim.subnet {self.subnet}: remove it (`mecorch host "
                                   "teardown`) or set cim.subnet to its subnet")
                self._gateway = _gateway_of(nets[0])
                self._network_id = nets[0]["Id"]
                return self._network_id
            try:
                with backend_errors(f"create network {self.network}"):
                    ipam = ({"Driver": "default", "Config": [{"Subnet": self.subnet}]}
                            if self.subnet else None)
                    net = api.create_network(self.network, driver="bridge", check_duplicate=True,
                                             ipam=ipam, labels={LABEL_NETWORK: "true",
                                                                LABEL_HOST: self.host_id})
                with backend_errors(f"inspect network {self.network}"):
                    self._gateway = _gateway_of(api.inspect_network(net["Id"]))
                self._network_id = net["Id"]
                return self._network_id
            except Conflict:
                continue        # created concurrently by another process: look again
        raise Conflict(f"network {self.network}: could not be found or created")

    def app_gateway(self) -> str | None:
        """The gateway address of mecorch's network (the bridge's address on
        this host), the network made if missing."""
        self._ensure_network(self._client())
        return self._gateway

    def _resolvers(self) -> list[str] | None:
        out = []
        for d in self.dns:
            if d == "gateway":
                if not self._gateway:
                    raise BackendError(f"network {self.network} has no gateway address "
                                       "for the containers' DNS (cim.dns: gateway)")
                d = self._gateway
            out.append(d)
        return out or None

    # -- image repository (see images.py) --------------------------------------
    def check_image(self, image: str) -> dict:
        return self.images.check(image)

    def set_image_available(self, image: str, available: bool) -> None:
        self.images.set_available(image, available)

    def import_image(self, image: str, source: str, sha256: str | None = None) -> dict:
        return self.images.import_tar(image, source, sha256)

    def remove_image(self, image: str) -> None:
        self.images.remove(image)

    # -- deploy ----------------------------------------------------------------
    def deploy(self, request: ResourceRequest) -> Allocation:
        plan = make_plan(request)
        # a relocation's data: checked against the plan before anything is made
        seed = carry.members(request.seed, plan, self.data_max_bytes) \
            if request.seed is not None else None
        digest = self.check_image(request.image)["digest"]
        self.open()
        api = self._client()
        made: list[tuple[str, str]] = []          # what to undo, in order made
        try:
            image = f"{self.registry_host}/{plan.repo}@{digest}"
            with backend_errors(f"pull {image}"):     # the call itself can fail too
                drain(f"pull {image}", api.pull(f"{self.registry_host}/{plan.repo}",
                                                  tag=digest, stream=True, decode=True))
            # The pause container first: it carries the instance's labels,
            # so a crash before the app exists leaves something
            # list_instances finds (with the labelled volumes), never
            # volumes alone.
            pause_id = self._create_pause(api, plan, made)
            storage = self._create_volumes(api, plan, made)
            if seed is not None:
                kept = [v.volume for v in plan.volumes if ("volume", v.name) not in made]
                if kept:
                    raise Conflict(f"seed: volume {kept[0]!r} of instance {plan.instance_id} "
                                   "exists already (a reserved volume kept from an earlier "
                                   "life): a seed fills only volumes the deploy makes")
            app_id = self._create_app(api, plan, image, pause_id, made, request, seed)
            with backend_errors(f"inspect {plan.pause_name}"):
                nets = api.inspect_container(pause_id)["NetworkSettings"]["Networks"]
            net = nets.get(self.network)
            if not net or not net.get("IPAddress"):
                raise BackendError(f"{plan.pause_name}: no address on network {self.network}")
        except BaseException as e:
            # The network or pause image may have been removed behind our
            # back: look again on the next deploy.
            self._network_id, self._pause_ready = None, False
            self._rollback(api, made, e)
            raise
        handle = {"instance_id": plan.instance_id, "host_id": self.host_id,
                  "network": self.network, "image": request.image, "digest": digest,
                  "app": {"id": app_id, "name": plan.app_name},
                  "pause": {"id": pause_id, "name": plan.pause_name},
                  "volumes": [{"name": v.name, "reserved": v.reserved} for v in plan.volumes]}
        return Allocation(
            instance_id=plan.instance_id, manner=DeploymentType.CONTAINER,
            vcpu=plan.nano_cpus / 1e9, memory_mb=plan.mem_bytes // MiB, storage=storage,
            addresses=(Address(net["IPAddress"], self.network, net.get("MacAddress") or None),),
            handle=handle,
            extra={"ports": {k: list(v) for k, v in plan.ports.items()},
                   "image_digest": digest, "sized_volumes": False})

    def _labels(self, plan: Plan, role: str) -> dict[str, str]:
        return {LABEL_INSTANCE: plan.instance_id, LABEL_HOST: self.host_id, LABEL_ROLE: role}

    def _create_volumes(self, api, plan: Plan, made: list) -> tuple[dict, ...]:
        storage = []
        for v in plan.volumes:
            found = gone_ok(f"inspect volume {v.name}", api.inspect_volume, v.name)
            if found is not None:
                # A reserved volume kept from an earlier life of this
                # instance is reused (and not undone on failure).
                if (found.get("Labels") or {}).get(LABEL_INSTANCE) != plan.instance_id:
                    raise Conflict(f"volume {v.name} exists and does not belong to "
                                   f"instance {plan.instance_id}")
            else:
                labels = {**self._labels(plan, "volume"), LABEL_VOLUME: v.volume,
                          LABEL_RESERVED: "true" if v.reserved else "false"}
                with backend_errors(f"create volume {v.name}"):
                    api.create_volume(v.name, driver="local", labels=labels)
                made.append(("volume", v.name))
            storage.append({"name": v.volume, "id": v.name, "size_gb": v.size_gb,
                            "reserved": v.reserved, "mount_path": v.mount_path,
                            "size_enforced": False})
        return tuple(storage)

    def _create_pause(self, api, plan: Plan, made: list) -> str:
        # Ports are published here: the app has no network of its own.
        # unless-stopped: the namespace (address, published ports) comes
        # back with dockerd after a host reboot; the app container has no
        # restart policy (a crash must stay visible as STOPPED with its exit
        # code), it is started again by `revive` (mecorch serve at start).
        with backend_errors(f"create {plan.pause_name}"):
            host_config = api.create_host_config(network_mode=self.network,
                                                 port_bindings=plan.ports or None,
                                                 dns=self._resolvers(),
                                                 restart_policy={"Name": "unless-stopped"})
            cid = api.create_container(pause.PAUSE_IMAGE, name=plan.pause_name,
                                       labels=self._labels(plan, "pause"),
                                       ports=list(plan.exposed) or None,
                                       host_config=host_config)["Id"]
        made.append(("container", cid))
        with backend_errors(f"start {plan.pause_name}"):
            api.start(cid)
        return cid

    def _create_app(self, api, plan: Plan, image: str, pause_id: str, made: list,
                    request: ResourceRequest, seed: dict | None = None) -> str:
        labels = {**self._labels(plan, "app"), "mecorch.image": request.image,
                  LABEL_NANO_CPUS: str(plan.nano_cpus), LABEL_MEM_BYTES: str(plan.mem_bytes)}
        with backend_errors(f"create {plan.app_name}"):
            host_config = api.create_host_config(
                network_mode=f"container:{pause_id}", nano_cpus=plan.nano_cpus,
                mem_limit=plan.mem_bytes,
                binds={v.name: {"bind": v.mount_path, "mode": "rw"} for v in plan.volumes} or None)
            cid = api.create_container(image, command=plan.command, entrypoint=plan.entrypoint,
                                       name=plan.app_name,
                                       environment=plan.env or None, labels=labels,
                                       host_config=host_config)["Id"]
        made.append(("container", cid))
        if seed is not None:        # before its first start: the app finds its data there
            carry.fill(api, cid, plan, request.seed, seed)
        with backend_errors(f"start {plan.app_name}"):
            api.start(cid)
        return cid

    def _rollback(self, api, made: list, error: BaseException) -> None:
        left = []
        for kind, ident in reversed(made):
            try:
                if kind == "container":
                    gone_ok(f"remove container {ident[:12]}", api.remove_container,
                             ident, force=True)
                else:
                    gone_ok(f"remove volume {ident}", api.remove_volume, ident)
            except MecorchError as e:
                left.append(e.detail)
        if left and isinstance(error, MecorchError):
            error.detail = f"{error.detail} (rollback incomplete: {'; '.join(left)})"
            error.args = (error.detail,)

    # -- instances -------------------------------------------------------------
    @staticmethod
    def _ref(handle: dict, role: str) -> str | None:
        obj = handle.get(role) or {}
        ref = obj.get("id") or obj.get("name")
        return validate.ident(ref, f"handle.{role}") if ref else None

    def _check_handle(self, handle) -> str:
        if not isinstance(handle, dict):
            raise InvalidInput("handle: must be the mapping deploy returned")
        return validate.ident(handle.get("instance_id"), "handle.instance_id")

    def stop(self, handle: dict, timeout_s: float) -> None:
        # Only the app stops: the pause container keeps the namespace, so
        # the instance keeps its address (and the MEP rules pointing at it).
        self._check_handle(handle)
        wait = math.ceil(validate.number(timeout_s, "timeout_s", 0, 86400))
        app = self._ref(handle, "app")
        if app:
            api = self._client()
            gone_ok(f"stop {app[:12]}", api.stop, app, timeout=wait)

    def start(self, handle: dict) -> None:
        iid = self._check_handle(handle)
        api = self._client()
        for role in ("pause", "app"):    # the namespace first, then what joins it
            ref = self._ref(handle, role)
            try:
                if not ref:
                    raise NotFound(role)
                with backend_errors(f"start {ref[:12]}"):
                    api.start(ref)      # already running: a no-op
            except NotFound:
                raise NotFound(f"instance {iid}: its {role} container is gone") from None

    def revive(self, handle: dict, check_only: bool = False) -> bool:
        """After a host reboot (or a dockerd restart): start the app
        container again when it died with its host, not by itself. Docker
        keeps a container's last finish time across a start, so: its pause
        container (restart policy unless-stopped) started again after the
        app finished, and the app finished no earlier than REVIVE_SLACK_S
        before the pause's previous run ended (dockerd stops both at once;
        the slack covers its stop timeout). A crashed app (it finished
        while its pause kept running, or long before) stays stopped. The
        caller checks the operator did not stop it. True if started (with
        `check_only`: if it would be; nothing is started)."""
        iid = self._check_handle(handle)
        api = self._client()
        app, pause_ref = self._ref(handle, "app"), self._ref(handle, "pause")
        if not app or not pause_ref:
            return False
        app_info = gone_ok(f"inspect {app[:12]}", api.inspect_container, app)
        pause_info = gone_ok(f"inspect {pause_ref[:12]}", api.inspect_container, pause_ref)
        if app_info is None or pause_info is None or app_info["State"]["Running"]:
            return False
        if not pause_info["State"]["Running"] and not check_only:
            with backend_errors(f"start {pause_ref[:12]} of {iid}"):
                api.start(pause_ref)
            pause_info = gone_ok(f"inspect {pause_ref[:12]}", api.inspect_container, pause_ref)
            if pause_info is None:
                return False
        # Times of the one daemon clock, parsed (their fractions vary in length).
        app_end = _instant(app_info["State"]["FinishedAt"])
        if pause_info["State"]["Running"] and app_end > _instant(pause_info["State"]["StartedAt"]) \
                or app_end < _instant(pause_info["State"]["FinishedAt"]) - REVIVE_SLACK_S:
            return False
        if check_only:
            return True
        with backend_errors(f"start {app[:12]} of {iid}"):
            api.start(app)
        return True

    def destroy(self, handle: dict) -> None:
        self._check_handle(handle)
        api = self._client()
        for role in ("app", "pause"):
            ref = self._ref(handle, role)
            if ref:
                gone_ok(f"remove {ref[:12]}", api.remove_container, ref, force=True)
        for v in handle.get("volumes") or []:
            if not v.get("reserved"):
                name = validate.ident(v.get("name"), "handle.volumes.name")
                gone_ok(f"remove volume {name}", api.remove_volume, name)

    def logs(self, handle: dict, tail: int | None = None) -> bytes:
        """The app container's stdout and stderr, as Docker keeps them."""
        self._check_handle(handle)
        app = self._ref(handle, "app")
        if not app:
            return b""
        with backend_errors(f"logs of {app[:12]}"):
            return self._client().logs(app, stdout=True, stderr=True,
                                       tail="all" if tail is None else int(tail))

    def export_data(self, handle: dict, into: Path) -> None:
        """The named volumes of the stopped app container, one archive
        (layout: drivers/docker_cim/carry.py), through Docker's archive API
        on the container itself. Conflict while it runs; NotFound when it
        is gone. An instance without volumes writes an empty archive."""
        iid = self._check_handle(handle)
        app = self._ref(handle, "app")
        api = self._client()
        info = gone_ok(f"inspect {app[:12]}", api.inspect_container, app) if app else None
        if info is None:
            raise NotFound(f"instance {iid}: its app container is gone")
        if info["State"].get("Status") not in ("created", "exited", "dead"):
            raise Conflict(f"instance {iid}: its app container is {info['State'].get('Status')}"
                           ": stop it first (a running app's data is not a consistent copy)")
        prefix = volume_name(iid, "")
        volumes = sorted((VolumePlan(m["Name"], m["Name"][len(prefix):], m["Destination"], 0,
                                     False)
                          for m in info.get("Mounts") or []
                          if m.get("Type") == "volume" and m.get("Name", "").startswith(prefix)),
                         key=lambda v: v.volume)
        carry.export(api, app, volumes, Path(into), self.data_max_bytes)

    def exec_in(self, handle: dict, command: list[str], timeout_s: float) -> int:
        """Docker's exec in the app container (an exec health check). The
        exec is started detached and its end polled: docker-py's blocking
        start has no timeout of its own."""
        iid = self._check_handle(handle)
        argv = [validate.text(a, f"command[{i}]", 4096) for i, a in enumerate(command)]
        app = self._ref(handle, "app")
        if not app or not argv:
            raise NotFound(f"instance {iid}: no app container to run a command in")
        api = self._client()
        # (the daemon's 409 for a container not running becomes Conflict)
        with backend_errors(f"exec in {app[:12]}"):
            ex = api.exec_create(app, argv, stdout=False, stderr=False)
            api.exec_start(ex["Id"], detach=True)
            deadline = time.monotonic() + timeout_s
            while True:
                info = api.exec_inspect(ex["Id"])
                if not info.get("Running"):
                    return int(info.get("ExitCode") or 0)
                if time.monotonic() >= deadline:
                    raise Timeout(f"instance {iid}: {argv[0][:40]} did not end within "
                                  f"{timeout_s:g} s")
                time.sleep(0.02)

    def uninstall(self, keep: dict[str, tuple[str, ...]] | None = None) -> list[str]:
        """Remove what this driver made for its host (`mecorch host
        teardown`): its bridge network, when no container of the host is
        left, the network is marked as this host's (label mecorch.host)
        and `keep` does not name it (another configured host names it too;
        the value says which). Returns what was removed, one line each;
        "kept ..." for what it left and why."""
        keep = keep or {}
        api = self._client()
        with backend_errors("list mecorch containers"):
            left = list_containers(api, {"label": [f"{LABEL_HOST}={self.host_id}"]})
        if left:
            raise Conflict(f"{len(left)} container(s) of host {self.host_id} remain: "
                           "terminate their instances first")
        done = []
        with backend_errors(f"look up network {self.network}"):
            nets = [n for n in api.networks(names=[self.network]) if n["Name"] == self.network]
        for net in nets:
            labels = net.get("Labels") or {}
            if labels.get(LABEL_NETWORK) != "true":
                done.append(f"kept docker network {self.network}: not made by mecorch")
            elif labels.get(LABEL_HOST) != self.host_id:
                done.append(f"kept docker network {self.network}: marked as host "
                            f"{labels.get(LABEL_HOST)!r}'s")
            elif "network" in keep:
                done.append(f"kept docker network {self.network}: {_users(keep['network'])}")
            else:
                gone_ok(f"remove network {self.network}", api.remove_network, net["Id"])
                done.append(f"docker network {self.network}")
        self._network_id = None
        return done

    def watch(self, on_change, stop: threading.Event) -> None:
        """Report each start and death of an app container of this host as
        Docker's own events say it (seconds, not a reconcile period):
        on_change(Observation) with the exit code in its detail, until
        `stop` is set. Raises BackendError when the stream breaks."""
        api = connect(self.docker_host, None)         # a stream: no read timeout
        flt = {"type": "container", "event": ["start", "die"],
               "label": [f"{LABEL_HOST}={self.host_id}", f"{LABEL_ROLE}=app"]}
        with backend_errors("docker events"):
            stream = api.events(decode=True, filters=flt)
        done = threading.Event()

        def close_on_stop() -> None:       # the stream blocks: close it from here
            while not done.is_set():
                if stop.wait(0.5):
                    stream.close()
                    return
        threading.Thread(target=close_on_stop, name="docker-events-close", daemon=True).start()
        try:
            with backend_errors("docker events"):
                for ev in stream:
                    attrs = (ev.get("Actor") or {}).get("Attributes") or {}
                    iid = attrs.get(LABEL_INSTANCE)
                    if not iid:
                        continue
                    if ev.get("Action") == "start":
                        on_change(Observation(iid, ObservedState.RUNNING, {}, "running"))
                    else:
                        code = _exit_code(attrs.get("exitCode"))
                        detail = f"exited, exit code {attrs.get('exitCode', '?')}"
                        fault = OOM_KILLED if code and self._oom_killed(ev.get("id") or "") \
                            else ""
                        if fault:
                            detail += f", {fault}"
                        on_change(Observation(iid, ObservedState.STOPPED, {}, detail, code,
                                              fault))
        except MecorchError:
            if not stop.is_set():
                raise
        finally:
            done.set()
            api.close()

    def _oom_killed(self, container: str) -> bool:
        """Docker's State.OOMKilled of a container that just died (its
        die event does not say it); gone meanwhile or unreadable: False."""
        if not re.fullmatch(r"[0-9a-f]{12,64}", container):
            return False
        try:
            info = gone_ok(f"inspect {container[:12]}", self._client().inspect_container,
                           container)
        except MecorchError:
            return False
        return bool(info and info["State"].get("OOMKilled"))

    def read_usage(self, handle: dict) -> ResourceUsage:
        """Docker's stats of the app container, one sample (`one-shot`: the
        daemon does not wait a second for a second one; the core works the
        CPU percent out of two readings). Memory as `docker stats` shows it:
        the usage less the inactive page cache. Network: the namespace the
        app shares with its pause container. Block I/O: the blkio counters
        (Docker reports none where the kernel accounts none)."""
        self._check_handle(handle)
        app = self._ref(handle, "app")
        if not app:
            raise NotFound("the instance has no app container")
        api = self._client()
        # one-shot needs API 1.41 (Docker 20.10, Debian 12's); an older
        # daemon samples twice, a second apart (in the reader's thread)
        one_shot = True if not docker.utils.version_lt(api.api_version, "1.41") else None
        with backend_errors(f"stats of {app[:12]}"):
            s = api.stats(app, stream=False, one_shot=one_shot)
        return usage_of(s, time.time())

    def inspect(self, handle: dict) -> Observation:
        iid = self._check_handle(handle)
        app = self._ref(handle, "app")
        info = gone_ok(f"inspect {app[:12]}", self._client().inspect_container, app) \
            if app else None
        if info is None:
            return Observation(iid, ObservedState.MISSING, handle, "app container is gone")
        st = info["State"]
        detail = f"{st['Status']}, exit code {st.get('ExitCode')}" + \
            (f", {OOM_KILLED}" if st.get("OOMKilled") else "")
        state = _STATES.get(st["Status"], ObservedState.UNKNOWN)
        ended = state is not ObservedState.RUNNING
        return Observation(iid, state, handle, detail,
                           _exit_code(st.get("ExitCode")) if ended else None,
                           OOM_KILLED if ended and st.get("OOMKilled") else "")

    def list_instances(self) -> list[Observation]:
        api = self._client()
        flt = {"label": [f"{LABEL_HOST}={self.host_id}", LABEL_INSTANCE]}
        with backend_errors("list mecorch containers"):
            containers = list_containers(api, flt)
        with backend_errors("list mecorch volumes"):
            volumes = api.volumes(filters=flt).get("Volumes") or []
        by_id: dict[str, dict] = defaultdict(lambda: {"app": None, "pause": None})
        for c in containers:
            labels = c.get("Labels") or {}
            role = labels.get(LABEL_ROLE)
            if role in ("app", "pause"):
                by_id[labels[LABEL_INSTANCE]][role] = c
        vols = defaultdict(list)
        for v in volumes:
            labels = v.get("Labels") or {}
            vols[labels[LABEL_INSTANCE]].append(
                {"name": v["Name"], "reserved": labels.get(LABEL_RESERVED) == "true"})
        out = []
        for iid, parts in sorted(by_id.items()):
            handle = {"instance_id": iid, "host_id": self.host_id, "network": self.network,
                      "volumes": vols.get(iid, [])}
            for role, c in parts.items():
                if c:
                    handle[role] = {"id": c["Id"], "name": c["Names"][0].lstrip("/")}
            # The running pause container's address now: dockerd gives a
            # restarted container the first free one, not necessarily its
            # old one (reconciliation makes the rules follow it).
            net = ((((parts["pause"] or {}).get("NetworkSettings") or {}).get("Networks")
                    or {}).get(self.network) or {})
            if (parts["pause"] or {}).get("State") == "running" and net.get("IPAddress"):
                handle["address"] = {"ip": net["IPAddress"], "mac": net.get("MacAddress") or None}
            app = parts["app"]
            if app is None:
                out.append(Observation(iid, ObservedState.MISSING, handle,
                                       "app container is gone (pause container left)"))
            else:
                status = app.get("Status", "")
                code = re.match(r"Exited \((-?\d+)\)", status)       # "Exited (137) 5 s ago"
                # killed (137): by its memory limit? (the summary does not say)
                fault = OOM_KILLED if code and code[1] == "137" \
                    and self._oom_killed(app["Id"]) else ""
                out.append(Observation(iid, _STATES.get(app["State"], ObservedState.UNKNOWN),
                                       handle, f"{status}, {fault}" if fault else status,
                                       int(code[1]) if code else None, fault))
        return out

    def capacity(self) -> HostCapacity:
        api = self._client()
        with backend_errors("docker info"):
            info = api.info()
            apps = list_containers(api, {"label": [f"{LABEL_ROLE}=app", LABEL_INSTANCE]})
        cpu_used = mem_used = 0
        for c in apps:
            limits = _label_limits(c.get("Labels") or {})
            if limits is None:      # made by a mecorch before the limit labels
                hc = gone_ok(f"inspect {c['Id'][:12]}", api.inspect_container, c["Id"])
                # removed meanwhile: it uses nothing
                limits = ((hc["HostConfig"].get("NanoCpus") or 0,
                           hc["HostConfig"].get("Memory") or 0) if hc else (0, 0))
            cpu_used += limits[0]
            mem_used += limits[1]
        root = info.get("DockerRootDir", "/var/lib/docker")
        try:
            fs = os.statvfs(root)
        except OSError as e:
            raise BackendError(f"capacity: cannot read the filesystem of Docker's data root "
                               f"{root} ({e.strerror}); is the daemon on another machine?")
        return HostCapacity(
            cpu_total=float(info["NCPU"]), cpu_used=cpu_used / 1e9,
            memory_mb_total=info["MemTotal"] // MiB, memory_mb_used=mem_used // MiB,
            disk_gb_total=fs.f_blocks * fs.f_frsize / GiB,
            disk_gb_used=(fs.f_blocks - fs.f_bfree) * fs.f_frsize / GiB)


def _instant(text: str) -> float:
    """Docker's RFC 3339 time (nanoseconds, 'Z') as seconds since the epoch;
    the zero time (never) is 0."""
    date, _, frac = text.rstrip("Z").partition(".")
    try:
        whole = datetime.strptime(date, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc)
    except ValueError:
        return 0.0
    return max(0.0, whole.timestamp() + float(f"0.{frac or 0}"))


def _gateway_of(net: dict) -> str | None:
    """The IPv4 gateway of a network as Docker inspects it. A network made
    with a subnet and no gateway (cim.subnet) reports none, though Docker
    gave the bridge the subnet's first address: that one, then."""
    for cfg in (net.get("IPAM") or {}).get("Config") or []:
        gw = cfg.get("Gateway")
        if gw and ":" not in gw:
            return gw.split("/")[0]
    for cfg in (net.get("IPAM") or {}).get("Config") or []:
        subnet = cfg.get("Subnet") or ""
        if subnet and ":" not in subnet:
            return str(next(ipaddress.ip_network(subnet, strict=False).hosts()))
    return None


def _label_limits(labels: dict) -> tuple[int, int] | None:
    """(NanoCpus, Memory bytes) from an app container's limit labels; None
    when it has none (or they do not read as numbers: then the container is
    inspected, its HostConfig is the truth)."""
    try:
        return int(labels[LABEL_NANO_CPUS]), int(labels[LABEL_MEM_BYTES])
    except (KeyError, ValueError):
        return None


def _users(hosts) -> str:
    """Why an object is kept: the other configured hosts naming it."""
    return f"host(s) {', '.join(hosts)} of the configuration use it too"


def _exit_code(value) -> int | None:
    """An exit code as Docker gives it (an int, or a string in events)."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
