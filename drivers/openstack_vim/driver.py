"""OpenStackVIM: mecorch's VIM on an OpenStack cloud, through openstacksdk.

An instance is a Nova server `mecorch-<instance_id>` booted from the
instance's Glance image, on a Neutron port `mecorch-<instance_id>` that the
driver makes on the configured network, with a flavor that fits the request
(see `flavors`). Data disks (one per virtual storage descriptor) are
ephemeral local disks of the server (block device mappings with a blank
source, sized through the flavor's ephemeral disk): the test cloud has no
Cinder, so reserved (RETAIN) volumes are refused rather than silently lost.
The server's metadata records the instance, the edge host and the app, so
`list_instances` finds it after a restart without the store.

The VM lives on the cloud's network, not on the edge host: mecorch's MEP
(iptables and dnsmasq on the edge host) can steer traffic to it only where
the edge host routes to that network (a provider network, a floating IP);
`Allocation.addresses` is the Neutron port's fixed address.
"""

from __future__ import annotations

import math
import re
import threading
import time
from functools import cached_property

import openstack

from mecorch.kernel import validate
from mecorch.driverapi.contracts import Capabilities, ComputeDriver, UsageReadable
from mecorch.kernel.errors import (
    BackendError, CapacityExceeded, Conflict, InvalidInput, MecorchError, NotFound,
    UnsupportedAction)
from mecorch.driverapi.model import (
    Address, Allocation, Check, HostCapacity, Observation, ResourceRequest, ResourceUsage)
from mecorch.kernel.states import DeploymentType, ObservedState

from . import flavors as F
from .errors import diagnostics_errors, os_errors
from .images import GlanceImages
from .settings import Settings, parse

GIB = 1 << 30
PREFIX = "mecorch-"
META_INSTANCE, META_HOST, META_APP = "mecorch_instance", "mecorch_host", "mecorch_app"
_UUID = re.compile(r"[0-9a-fA-F-]{32,36}")
_STATES = {"ACTIVE": ObservedState.RUNNING, "SHUTOFF": ObservedState.STOPPED,
           "SUSPENDED": ObservedState.STOPPED,
           "PAUSED": ObservedState.STOPPED, "SHELVED": ObservedState.STOPPED,
           "SHELVED_OFFLOADED": ObservedState.STOPPED}
DELETE_WAIT_S = 180
# What one VM may ask: declared in OpenStackVIM.capabilities(), which the
# core reads at admission, and checked again here before anything is made
# (a reserved volume and a host port are declared unsupported there too).
VCPU_MIN, VCPU_MAX = 0.01, 256
MEMORY_MB_MIN, MEMORY_MB_MAX = 32, 1 << 22
DISK_GB_MAX = VOLUME_GB_MAX = 65536
VOLUMES_MAX = 20
PROTOCOLS = ("tcp", "udp")


def server_name(iid: str) -> str:
    return PREFIX + iid


def validate_request(r: ResourceRequest) -> dict:
    """Every field checked before anything exists; returns derived sizes."""
    if r.manner != DeploymentType.VM:
        raise InvalidInput(f"manner: the VIM deploys VMs, not {r.manner}")
    iid = validate.ident(r.instance_id, "instance_id")
    validate.text(r.app_d_id, "app_d_id")
    validate.ident(r.image, "image")
    vcpu = max(1, math.ceil(validate.number(r.vcpu, "vcpu", VCPU_MIN, VCPU_MAX)))
    memory = validate.integer(r.memory_mb, "memory_mb", MEMORY_MB_MIN, MEMORY_MB_MAX)
    disk_gb = validate.number(r.disk_gb, "disk_gb", 0, DISK_GB_MAX)
    if len(r.volumes) > VOLUMES_MAX:
        raise InvalidInput(f"volumes: at most {VOLUMES_MAX} data disks")
    seen, sizes = set(), []
    for i, v in enumerate(r.volumes):
        validate.ident(v.name, f"volumes[{i}].name")
        size = validate.number(v.size_gb, f"volumes[{i}].size_gb", 0.001, VOLUME_GB_MAX)
        if v.name == "root" or v.name in seen:
            raise InvalidInput(f"volumes[{i}].name: {v.name!r} is used twice or is 'root'")
        if v.reserved:
            raise UnsupportedAction(
                f"volumes[{i}].reserved: this cloud's VIM keeps data disks on the server "
                "(no Cinder), so a volume that outlives the instance cannot be made")
        seen.add(v.name)
        sizes.append(max(1, math.ceil(size)))           # Nova sizes disks in whole GB
    for i, p in enumerate(r.ports):
        validate.port(p.port, f"ports[{i}].port")
        if p.protocol not in PROTOCOLS:
            raise InvalidInput(f"ports[{i}].protocol: must be tcp or udp")
        if p.host_port is not None:
            raise UnsupportedAction(f"ports[{i}].host_port: a VM is reached by its own "
                                    "address, not a published host port")
    return {"iid": iid, "vcpu": vcpu, "memory_mb": memory,
            "disk_gb": max(1, math.ceil(disk_gb)), "volume_gb": sizes}


def diagnostics_usage(d: dict, at: float) -> ResourceUsage:
    """A ResourceUsage from Nova's diagnostics (2.48): CPU time in ns per
    vCPU, memory in MiB, per-disk and per-NIC byte counters; a figure the
    hypervisor's driver does not fill is None, not 0."""
    def total(rows, key: str) -> int | None:
        vals = [r.get(key) for r in rows or () if isinstance(r, dict)]
        return int(sum(vals)) if vals and None not in vals else None
    cpu = total(d.get("cpu_details"), "time")
    mem = d.get("memory_details") or {}
    mib = 1 << 20
    return ResourceUsage(
        at=at, cpu_seconds=cpu / 1e9 if cpu is not None else None,
        memory_bytes=int(mem["used"] * mib) if mem.get("used") is not None else None,
        memory_limit_bytes=int(mem["maximum"] * mib) if mem.get("maximum") is not None else None,
        net_rx_bytes=total(d.get("nic_details"), "rx_octets"),
        net_tx_bytes=total(d.get("nic_details"), "tx_octets"),
        block_read_bytes=total(d.get("disk_details"), "read_bytes"),
        block_write_bytes=total(d.get("disk_details"), "write_bytes"))


def _handle_parts(handle: dict) -> tuple[str, str | None, str | None]:
    """(instance id, server id, port id) of a handle, checked: they become
    API paths."""
    if not isinstance(handle, dict):
        raise InvalidInput("handle: must be a mapping")
    iid = validate.ident(handle.get("instance_id"), "handle.instance_id")
    ids = []
    for key in ("server_id", "port_id"):
        v = handle.get(key)
        if v is not None and not (isinstance(v, str) and _UUID.fullmatch(v)):
            raise InvalidInput(f"handle.{key}: not an OpenStack id")
        ids.append(v)
    return iid, ids[0], ids[1]


class OpenStackVIM(ComputeDriver, UsageReadable):
    kind = "vim"

    def __init__(self, config: dict):
        super().__init__(config)
        self._local = threading.local()     # one Connection per thread
        self._conns: list = []
        self._conns_lock = threading.Lock()
        self._network_id: str | None = None

    @cached_property
    def settings(self) -> Settings:
        return parse(self.config)

    @cached_property
    def images(self) -> GlanceImages:
        return GlanceImages(self._connect, self.settings.host_id, self.settings.state_dir)

    # -- connection ---------------------------------------------------------
    def _new_connection(self):
        s = self.settings
        opts = {"api_timeout": s.api_timeout_s}
        if s.region:
            opts["region_name"] = s.region
        with os_errors(f"configure the connection to {s.describe()}"):
            if s.cloud:
                cfg = openstack.config.OpenStackConfig(
                    config_files=[s.clouds_yaml] if s.clouds_yaml else None,
                    load_envvars=False)
                region = cfg.get_one(cloud=s.cloud, **opts)
            else:
                cfg = openstack.config.OpenStackConfig(load_yaml_config=False,
                                                       load_envvars=False)
                region = cfg.get_one(auth=dict(s.auth), auth_type=s.auth_type,
                                     identity_api_version="3", **opts)
            return openstack.connection.Connection(config=region)

    def _connect(self):
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._new_connection()
            self._local.conn = conn
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    def open(self) -> None:
        """Authenticate and find the configured network (nothing is made:
        the cloud's network and quotas are the operator's)."""
        self._network()

    def close(self) -> None:
        with self._conns_lock:
            conns, self._conns = self._conns, []
        self._local = threading.local()
        for conn in conns:
            try:
                conn.close()
            except Exception:       # noqa: BLE001 - closing must not fail
                pass

    def _network(self) -> str:
        if self._network_id is None:
            s = self.settings
            with os_errors(f"find network {s.network}"):
                net = self._connect().network.find_network(s.network, ignore_missing=True)
            if net is None:
                raise BackendError(f"vim.network: the cloud has no network {s.network!r} "
                                   f"({s.describe()})")
            self._network_id = net.id
        return self._network_id

    # -- capabilities and checks -------------------------------------------
    def capabilities(self) -> Capabilities:
        return Capabilities(manner=DeploymentType.VM, graceful_stop=True, sized_volumes=True,
                            reserved_volumes=False, published_ports=False,
                            hardware_accel="",
                            vcpu_min=VCPU_MIN, vcpu_max=VCPU_MAX,
                            memory_mb_min=MEMORY_MB_MIN, memory_mb_max=MEMORY_MB_MAX,
                            disk_gb_max=DISK_GB_MAX, volume_gb_max=VOLUME_GB_MAX,
                            volumes_max=VOLUMES_MAX, port_protocols=PROTOCOLS)

    def check(self) -> list[Check]:
        from .checks import run_checks          # doctor-only code, kept apart
        return run_checks(self)

    # -- image repository ----------------------------------------------------
    def import_image(self, image: str, source: str, sha256: str | None = None) -> dict:
        return self.images.import_image(image, source, sha256)

    def set_image_available(self, image: str, available: bool) -> None:
        self.images.set_available(image, available)

    def check_image(self, image: str) -> dict:
        return self.images.check(image)

    def remove_image(self, image: str) -> None:
        self.images.remove(image)

    # -- deploy ----------------------------------------------------------------
    def deploy(self, request: ResourceRequest) -> Allocation:
        v = validate_request(request)
        record = self.images.check(request.image)
        s = self.settings
        iid, name = v["iid"], server_name(v["iid"])
        conn = self._connect()
        network_id = self._network()
        with os_errors(f"deploy {iid}"):
            if list(conn.compute.servers(name=f"^{re.escape(name)}$")):
                raise Conflict(f"instance {iid}: server {name} already exists")
            if list(conn.network.ports(name=name)):
                raise Conflict(f"instance {iid}: port {name} already exists")
        image_gb = math.ceil(max(record.get("min_disk") or 0,
                                 (self._virtual_size(conn, record) or 0) / GIB))
        root_gb = max(v["disk_gb"], image_gb, 1)
        eph_gb = sum(v["volume_gb"])
        meta = {META_INSTANCE: iid, META_HOST: s.host_id, META_APP: request.app_d_id[:255]}
        made_flavor = port = server = None
        t0 = time.monotonic()
        try:
            with F.lock:
                flavor, created = F.pick(conn, s.flavor_prefix, s.host_id, v["vcpu"],
                                         v["memory_mb"], root_gb, eph_gb)
                made_flavor = flavor if created else None
            with os_errors(f"deploy {iid}: create port"):
                port = conn.network.create_port(
                    network_id=network_id, name=name,
                    description=f"{self._port_description_prefix()}{iid}")
            bdm = [{"boot_index": 0, "uuid": record["glance_id"], "source_type": "image",
                    "destination_type": "local", "delete_on_termination": True}]
            bdm += [{"boot_index": -1, "source_type": "blank", "destination_type": "local",
                     "volume_size": gb, "delete_on_termination": True}
                    for gb in v["volume_gb"]]
            attrs = {"name": name, "image_id": record["glance_id"], "flavor_id": flavor.id,
                     "networks": [{"port": port.id}], "metadata": meta,
                     "block_device_mapping": bdm}
            if s.availability_zone:
                attrs["availability_zone"] = s.availability_zone
            with os_errors(f"deploy {iid}: create server"):
                server = conn.compute.create_server(**attrs)
            self._wait_active(conn, server, iid, s.boot_timeout_s)
            boot_s = time.monotonic() - t0
            with os_errors(f"deploy {iid}: read port"):
                port = conn.network.get_port(port.id)
        except BaseException as e:
            self._rollback(conn, iid, server, port, made_flavor, e)
            raise
        addresses = tuple(Address(ip["ip_address"], s.network, port.mac_address)
                          for ip in port.fixed_ips or ())
        vols = [{"name": "root", "size_gb": float(root_gb), "id": f"{name}:root",
                 "reserved": False}]
        vols += [{"name": vs.name, "size_gb": float(gb), "id": f"{name}:ephemeral{i}",
                  "reserved": False}
                 for i, (vs, gb) in enumerate(zip(request.volumes, v["volume_gb"]))]
        handle = {"instance_id": iid, "server_id": server.id, "port_id": port.id,
                  "server": name, "flavor": flavor.name}
        return Allocation(
            instance_id=iid, manner=DeploymentType.VM, vcpu=request.vcpu,
            memory_mb=request.memory_mb, storage=tuple(vols), addresses=addresses,
            handle=handle,
            extra={"cloud": s.describe(), "server_id": server.id, "flavor": flavor.name,
                   "vcpu_count": v["vcpu"], "boot_s": round(boot_s, 2),
                   "image_id": record["glance_id"], "image_hash": record["hash_value"]})

    @staticmethod
    def _virtual_size(conn, record: dict) -> int | None:
        with os_errors("read image size"):
            img = conn.image.get_image(record["glance_id"])
        return getattr(img, "virtual_size", None) or img.size

    def _wait_active(self, conn, server, iid: str, timeout_s: float) -> None:
        """openstacksdk's own waiter; a scheduling failure is capacity."""
        try:
            with os_errors(f"deploy {iid}: wait for ACTIVE"):
                conn.compute.wait_for_server(server, status="ACTIVE", failures=["ERROR"],
                                             interval=2, wait=timeout_s)
        except BackendError as e:
            fault = self._fault(conn, server.id)
            if "no valid host" in fault.lower():
                raise CapacityExceeded(f"instance {iid}: no compute host of the cloud has "
                                       f"room for it ({fault})") from None
            if fault:
                e.detail += f" (server fault: {fault})"
                e.args = (e.detail,)
            raise

    @staticmethod
    def _fault(conn, server_id: str) -> str:
        try:
            srv = conn.compute.get_server(server_id)
        except Exception:       # noqa: BLE001 - only adds detail to an error
            return ""
        fault = getattr(srv, "fault", None) or {}
        return str(fault.get("message", ""))[:300] if isinstance(fault, dict) else ""

    def _rollback(self, conn, iid: str, server, port, flavor, cause: BaseException) -> None:
        """Undo a failed deploy; a failure here is added to the cause's detail."""
        try:
            self._remove(conn, iid, server.id if server else None, port.id if port else None)
            if flavor is not None:
                with F.lock:
                    self._collect_flavors(conn)
        except MecorchError as e:
            if isinstance(cause, MecorchError):
                cause.detail += f" (and the rollback failed: {e.detail})"
                cause.args = (cause.detail,)

    # -- lifecycle -----------------------------------------------------------------
    def _find_server(self, conn, iid: str, server_id: str | None):
        """The server of the instance (by id, else by name), or None; never
        another host's server."""
        with os_errors(f"look up the server of {iid}"):
            srv = conn.compute.find_server(server_id, ignore_missing=True) if server_id else None
            if srv is None:
                found = list(conn.compute.servers(name=f"^{re.escape(server_name(iid))}$"))
                srv = found[0] if found else None
            if srv is not None and srv.name != server_name(iid):
                srv = None
            if srv is not None:
                srv = conn.compute.get_server(srv.id)
        if srv is not None and (srv.metadata or {}).get(META_HOST) != self.settings.host_id:
            return None
        return srv

    def _remove(self, conn, iid: str, server_id: str | None, port_id: str | None) -> None:
        """Delete the server (and wait until it is gone), then the port.

        When the server cannot be deleted (Nova down), its port is kept
        too: deleting the port of a server that is still building makes
        nova-compute wait minutes for a device detach. `list_instances`
        reports both (the server by its metadata, a port without server as
        MISSING), so the reconciler removes them once the cloud is back."""
        srv = self._find_server(conn, iid, server_id)
        with os_errors(f"delete the server of {iid}"):
            if srv is not None:
                conn.compute.delete_server(srv, ignore_missing=True)
                conn.compute.wait_for_delete(srv, interval=1, wait=DELETE_WAIT_S)
        with os_errors(f"delete the port of {iid}"):
            ports = [conn.network.find_port(port_id, ignore_missing=True)] if port_id else []
            ports += list(conn.network.ports(name=server_name(iid)))
            for p in {p.id: p for p in ports if p is not None}.values():
                if p.name == server_name(iid) and (p.description or "").startswith(
                        self._port_description_prefix()):
                    conn.network.delete_port(p, ignore_missing=True)

    def _port_description_prefix(self) -> str:
        return f"mecorch host={self.settings.host_id} instance="

    def _collect_flavors(self, conn) -> None:
        with os_errors("list servers for flavors in use"):
            used = {(srv.flavor or {}).get("original_name") or (srv.flavor or {}).get("name")
                    for srv in conn.compute.servers(details=True)}
        F.collect_unused(conn, self.settings.flavor_prefix, self.settings.host_id,
                         {u for u in used if u})

    def destroy(self, handle: dict) -> None:
        iid, server_id, port_id = _handle_parts(handle)
        conn = self._connect()
        self._remove(conn, iid, server_id, port_id)
        with F.lock:
            self._collect_flavors(conn)

    def stop(self, handle: dict, timeout_s: float) -> None:
        """ACPI shutdown through Nova (os-stop). Nova itself powers the guest
        off when it ignores ACPI for its `shutdown_timeout`; the driver waits
        `timeout_s` plus `vim.stop_grace_s` for that."""
        iid, server_id, _ = _handle_parts(handle)
        timeout_s = validate.number(timeout_s, "timeout_s", 0, 86400)
        conn = self._connect()
        srv = self._find_server(conn, iid, server_id)
        if srv is None or srv.status == "SHUTOFF":
            return
        with os_errors(f"stop {iid}"):
            if srv.status != "ACTIVE":
                srv = conn.compute.wait_for_server(srv, status="ACTIVE", failures=["ERROR"],
                                                   interval=1, wait=self.settings.stop_grace_s)
            conn.compute.stop_server(srv)
            conn.compute.wait_for_server(srv, status="SHUTOFF", failures=["ERROR"], interval=1,
                                         wait=timeout_s + self.settings.stop_grace_s)

    def start(self, handle: dict) -> None:
        iid, server_id, _ = _handle_parts(handle)
        conn = self._connect()
        srv = self._find_server(conn, iid, server_id)
        if srv is None:
            raise NotFound(f"instance {iid}: its server does not exist")
        if srv.status == "ACTIVE":
            return
        with os_errors(f"start {iid}"):
            conn.compute.start_server(srv)
            conn.compute.wait_for_server(srv, status="ACTIVE", failures=["ERROR"], interval=1,
                                         wait=self.settings.boot_timeout_s)

    def _observe(self, srv, handle: dict | None = None) -> Observation:
        meta = srv.metadata or {}
        iid = meta.get(META_INSTANCE) or (handle or {}).get("instance_id", "")
        h = dict(handle or {"instance_id": iid, "server_id": srv.id, "port_id": None,
                            "server": srv.name})
        state = _STATES.get(srv.status, ObservedState.UNKNOWN)
        return Observation(iid, state, h, detail=f"nova status {srv.status}")

    def inspect(self, handle: dict) -> Observation:
        iid, server_id, _ = _handle_parts(handle)
        srv = self._find_server(self._connect(), iid, server_id)
        if srv is None:
            return Observation(iid, ObservedState.MISSING, handle,
                               detail=f"server {server_name(iid)} does not exist")
        return self._observe(srv, handle)

    def read_usage(self, handle: dict) -> ResourceUsage:
        """Nova's server diagnostics (microversion 2.48: the same fields for
        every hypervisor), where the cloud's policy allows them to this user
        (by default only to admins: then UnsupportedAction, saying so)."""
        iid, server_id, _ = _handle_parts(handle)
        if server_id is None:
            raise NotFound(f"instance {iid} has no server")
        with diagnostics_errors(f"diagnostics of server {server_name(iid)}"):
            d = self._connect().compute.get_server_diagnostics(server_id)
        return diagnostics_usage(d.to_dict(computed=False), time.time())

    def _own_servers(self, conn) -> list:
        with os_errors("list servers"):
            return [srv for srv in conn.compute.servers(details=True, name=f"^{PREFIX}")
                    if (srv.metadata or {}).get(META_HOST) == self.settings.host_id
                    and (srv.metadata or {}).get(META_INSTANCE)]

    def list_instances(self) -> list[Observation]:
        """Servers with this host's metadata, and ports of this host whose
        server is gone (a deploy cut short while Nova was down): MISSING,
        so the reconciler removes them."""
        conn = self._connect()
        prefix = self._port_description_prefix()
        with os_errors("list ports"):
            ports = {p.description[len(prefix):]: p.id for p in conn.network.ports()
                     if (p.name or "").startswith(PREFIX)
                     and (p.description or "").startswith(prefix)}
        out = []
        for srv in self._own_servers(conn):
            obs = self._observe(srv)
            obs.handle["port_id"] = ports.pop(obs.instance_id, None)
            out.append(obs)
        for iid, port_id in ports.items():
            out.append(Observation(iid, ObservedState.MISSING,
                                   {"instance_id": iid, "server_id": None, "port_id": port_id},
                                   detail="a port of this host without its server"))
        return out

    # -- capacity ---------------------------------------------------------------------
    def capacity(self) -> HostCapacity:
        """Placement's inventories minus its usages (the whole cloud's, not
        only mecorch's), capped by what the project's quota still allows:
        `*_used` is `*_total` minus what can still be had."""
        from .capacity import read_capacity
        return read_capacity(self._connect())
