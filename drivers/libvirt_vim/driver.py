"""LibvirtVIM: mecorch's VIM on libvirt + QEMU.

An instance is a persistent domain `mecorch-<instance_id>` whose system
disk is a qcow2 overlay on a base copy of the repository image, plus one
qcow2 volume per data disk, all in the dir pool mecorch owns, with a virtio
NIC on the NAT network mecorch owns. The domain's <metadata> records the
instance, so `list_instances` finds it after a restart without the store.

QEMU, another user, opens the pool's volumes by path: the pool directory
(libvirt's 0711) and the dirs above it up to the first one others may
enter get search permission only (x, never r) for others; mecorch's state
dir is 0700 otherwise.

The guest's environment (its Mp1 URL, instance id and Mp1 token) is the
file <state_dir>/vm-env/<domain>.env, given to QEMU as a fw_cfg file (its
command line, which every local user can read, names the path only): 0600
and owned by the user QEMU runs as (libvirt's DAC label; libvirt does not
relabel fw_cfg files), in a 0700 directory of that user; removed with the
domain (a failed deploy's too, and by a destroy of a domain already gone).

Relocation (DataMovable): cold. `export_data` writes a shut-off
domain's disks (overlay and data disks, qcow2 files as they lie in the
pool) into one tar; a deploy given `ResourceRequest.seed` makes its volumes
as always, writes the archive's members over them and points the overlay at
this host's base of the image (module `carry`).

Live relocation (LiveMovable, module `live`): libvirt's peer-to-peer
`virDomainMigrateToURI3` with the disks copied (NON_SHARED_INC), between
two hosts' libvirtds whose networks have the same range (the guest keeps
its address). The target (`vim.live_uri`, `vim.live_address` set) prepares
its volumes, the destination XML and a DHCP host entry reserving the
guest's address; the source migrates and is left shut off, defined, its
autostart cleared (a rollback starts it; `destroy` removes it); the
target's deploy given `ResourceRequest.incoming` adopts the arrived domain.
Tested with a second libvirtd in namespaces of its own on one machine
(tests/support/livelab.py).
"""

from __future__ import annotations

import os
import re
import threading
import time
import xml.etree.ElementTree as ET
from functools import cached_property
from pathlib import Path

import libvirt

from mecorch.kernel import validate
from mecorch.driverapi.contracts import (
    Capabilities, ComputeDriver, DataMovable, LiveMovable, Uninstallable, UsageReadable,
    Watchable)
from mecorch.kernel.errors import (
    BackendError, BackendUnavailable, Conflict, InvalidInput, MecorchError, NotFound, Timeout)
from mecorch.driverapi.model import (
    Address, Allocation, Check, HostCapacity, Observation, ResourceRequest, ResourceUsage)
from mecorch.kernel.fileutil import let_others_search, unlink_quietly
from mecorch.kernel.states import DeploymentType, ObservedState

from . import accel as A
from . import carry as C
from . import live as L
from . import network as N
from . import storage as S
from . import xmlrender as X
from .errors import libvirt_errors
from .images import VMImageRepo
from .stats import STATS_WANTED, usage_of
from . import request as R
from .request import validate_request
from .settings import Settings, parse

GIB = 1 << 30
# Names mecorch gives libvirt objects: an ident plus a prefix or suffix.
_OBJECT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,199}")
_UNDEFINE_FLAGS = (libvirt.VIR_DOMAIN_UNDEFINE_NVRAM | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                   | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                   | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA)
_STATES = {libvirt.VIR_DOMAIN_RUNNING: ObservedState.RUNNING,
           libvirt.VIR_DOMAIN_BLOCKED: ObservedState.RUNNING,
           libvirt.VIR_DOMAIN_SHUTDOWN: ObservedState.RUNNING,    # shutting down
           libvirt.VIR_DOMAIN_SHUTOFF: ObservedState.STOPPED,
           libvirt.VIR_DOMAIN_CRASHED: ObservedState.STOPPED}


def _lookup_domain(conn, name: str):
    """The domain or None (raw libvirt; callers wrap in libvirt_errors)."""
    try:
        return conn.lookupByName(name)
    except libvirt.libvirtError as e:
        if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return None
        raise


def _read_meta(dom) -> X.DomainMeta | None:
    try:
        text = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, X.NS, 0)
    except libvirt.libvirtError as e:
        if e.get_error_code() in (libvirt.VIR_ERR_NO_DOMAIN_METADATA, libvirt.VIR_ERR_NO_DOMAIN):
            return None
        raise
    return X.parse_meta(text)


def _qemu_owner(conn, virt_type: str) -> tuple[int, int] | None:
    """(uid, gid) QEMU runs as: the DAC security model's base label for
    `virt_type` in libvirt's capabilities ("+64055:+64055"); None when
    there is no DAC model (QEMU runs as root)."""
    caps = ET.fromstring(conn.getCapabilities())
    for model in caps.findall("./host/secmodel"):
        if (model.findtext("model") or "") != "dac":
            continue
        for label in model.findall("baselabel"):
            if label.get("type") == virt_type and label.text:
                uid, _, gid = label.text.strip().partition(":")
                return int(uid.lstrip("+")), int(gid.lstrip("+"))
    return None


def write_guest_env(path: Path, data: bytes, owner: tuple[int, int] | None) -> None:
    """A domain's environment file (see the module docstring): 0600 from
    its creation on, then given to `owner` (the user QEMU runs as), in a
    0700 directory of that owner."""
    d = path.parent
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    if owner is not None:
        os.chown(d, *owner)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        if owner is not None:
            os.fchown(fd, *owner)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


class LibvirtVIM(ComputeDriver, Watchable, Uninstallable, UsageReadable, DataMovable,
                 LiveMovable):
    kind = "vim"

    def __init__(self, config: dict):
        super().__init__(config)
        self._conn = None
        self._conn_lock = threading.Lock()
        self._probe_lock = threading.Lock()
        self._opened = False

    @cached_property
    def settings(self) -> Settings:
        return parse(self.config)

    @cached_property
    def images(self) -> VMImageRepo:
        return VMImageRepo(self.settings.state_dir)

    # -- connection and owned objects -------------------------------------
    def _connect(self):
        with self._conn_lock:
            if self._conn is not None and self._conn.isAlive():
                return self._conn
            self._conn = None
            with libvirt_errors(f"connect to {self.settings.uri}"):
                self._conn = libvirt.open(self.settings.uri)
            return self._conn

    def open(self) -> None:
        s = self.settings
        conn = self._connect()
        s.console_dir.mkdir(parents=True, exist_ok=True)
        with libvirt_errors("create the mecorch pool and network"):
            S.ensure_pool(conn, s.pool, str(s.pool_dir))
            N.ensure_network(conn, s.network, s.bridge, s.network_cidr)
        let_others_search(s.pool_dir)           # QEMU reaches its volumes by path
        self._opened = True

    def close(self) -> None:
        with self._conn_lock:
            conn, self._conn = self._conn, None
            self._opened = False
        if conn is not None:
            try:
                conn.close()
            except libvirt.libvirtError:
                pass

    def _ready(self):
        """The connection, with the pool and network made (once)."""
        conn = self._connect()
        if not self._opened:
            self.open()
        return conn

    def _pool(self, conn):
        return conn.storagePoolLookupByName(self.settings.pool)

    # -- capabilities and checks ------------------------------------------
    def _accel_known(self) -> str:
        if self.settings.accel != "auto":
            return self.settings.accel
        cached = A.load(str(self.settings.accel_cache))
        return cached["accel"] if cached else ""

    def capabilities(self) -> Capabilities:
        return Capabilities(manner=DeploymentType.VM, graceful_stop=True, sized_volumes=True,
                            reserved_volumes=True, published_ports=False,
                            hardware_accel=self._accel_known(),
                            vcpu_min=R.VCPU_MIN, vcpu_max=R.VCPU_MAX,
                            memory_mb_min=R.MEMORY_MB_MIN, memory_mb_max=R.MEMORY_MB_MAX,
                            disk_gb_max=R.DISK_GB_MAX, volume_gb_max=R.VOLUME_GB_MAX,
                            volumes_max=R.VOLUMES_MAX, port_protocols=R.PROTOCOLS)

    def check(self) -> list[Check]:
        from .checks import run_checks      # doctor-only code, kept apart
        return run_checks(self)

    # -- image repository ---------------------------------------------------
    def import_image(self, image: str, source: str, sha256: str | None = None) -> dict:
        return self.images.import_image(image, source, sha256)

    def set_image_available(self, image: str, available: bool) -> None:
        self.images.set_available(image, available)

    def check_image(self, image: str) -> dict:
        return self.images.check(image)

    def remove_image(self, image: str) -> None:
        self.images.remove(image)
        try:
            self._collect_bases()
        except BackendUnavailable:
            pass        # libvirtd down: the next destroy/remove_image collects it

    def _collect_bases(self) -> None:
        """Delete base volumes of images no longer in the repository that no
        overlay uses (a running instance keeps its base)."""
        conn = self._connect()
        keep = {X.base_volume_name(i, r.get("sha256", "")) for i, r in self.images.catalog.all().items()}
        with libvirt_errors("clean up unused base volumes"):
            try:
                pool = self._pool(conn)
            except libvirt.libvirtError as e:
                if e.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_POOL:
                    return
                raise
            for name in S.unused_bases(pool, keep):
                S.delete_volume(pool, name)

    # -- deploy -------------------------------------------------------------
    def _accel_for(self, conn, pool, base) -> str:
        mode = self.settings.accel
        if mode != "auto":
            return mode
        with self._probe_lock:       # one probe at a time, then the cache
            cached = A.load(str(self.settings.accel_cache))
            if cached:
                return cached["accel"]
            result = A.probe(conn, pool, base, self.settings.network,
                             str(self.settings.console_dir), self.settings.probe_timeout_s)
            A.save(str(self.settings.accel_cache), result)
            return result["accel"]

    def probe_accel(self, image_path: str) -> dict:
        """Decide KVM or TCG now, by booting `image_path` (a bootable disk)
        under KVM, and cache the answer, so `mecorch doctor` can say which
        is used before the first deploy. Leaves nothing in the pool."""
        conn = self._ready()
        name = "probe-base.qcow2"
        with libvirt_errors("accel probe"):
            pool = self._pool(conn)
            base = S.ensure_base(conn, pool, image_path, name)
            try:
                self._accel_for(conn, pool, base)
            finally:
                S.delete_volume(pool, name)
        return A.load(str(self.settings.accel_cache)) or {"accel": self.settings.accel}

    def deploy(self, request: ResourceRequest) -> Allocation:
        if request.incoming is not None:
            return self._adopt(request)
        v = validate_request(request)
        record = self.images.check(request.image)
        s = self.settings
        conn = self._ready()
        iid, name = v["iid"], X.domain_name(v["iid"])
        root = X.root_volume_name(iid)
        data = [(X.data_volume_name(iid, vs.name), vs) for vs in request.volumes]
        seed = None
        if request.seed is not None:        # checked before anything is made
            disks = {C.ROOT: max(v["disk_bytes"], int(record.get("virtual_size") or 0))}
            disks.update({vs.name: int(vs.size_gb * GIB) for vs in request.volumes})
            seed = C.open_seed(request.seed, disks, record["sha256"])
        with libvirt_errors(f"deploy {iid}"):
            pool = self._pool(conn)
            if _lookup_domain(conn, name) is not None:
                raise Conflict(f"instance {iid}: domain {name} already exists")
            for vol in [root] + [n for n, _ in data]:
                if S.lookup_volume(pool, vol) is not None:
                    raise Conflict(f"instance {iid}: volume {vol} already exists in pool {s.pool}")
        made: list[str] = []
        dom = None
        try:
            with libvirt_errors(f"deploy {iid}"):
                base = S.ensure_base(conn, pool, str(self.images.path(request.image)),
                                     X.base_volume_name(request.image, record["sha256"]))
                accel = self._accel_for(conn, pool, base)
                meta = X.DomainMeta(iid, request.app_d_id, s.host_id, request.image, s.pool,
                                    ((root, False),) + tuple((n, vs.reserved) for n, vs in data))
                env_file = self._write_env(conn, name, A.VIRT_TYPE[accel], v["env"])
                spec = X.DomainSpec(name=name, virt_type=A.VIRT_TYPE[accel], vcpu=v["vcpu"],
                                    memory_mb=request.memory_mb, pool=s.pool,
                                    disks=(root,) + tuple(n for n, _ in data),
                                    network=s.network, console_log=self._console_log(name),
                                    meta=meta, env_file=env_file)
                # Defined before its volumes exist (libvirt checks them at
                # start): a crash in between leaves a domain whose metadata
                # names the volumes, which list_instances finds and destroy
                # removes; never volumes nothing points to.
                dom = conn.defineXML(X.domain_xml(spec))
                # libvirtd starts it again when the host boots (autostart is
                # cleared by an operator's stop, set again by start).
                dom.setAutostart(1)
                t_seed = time.monotonic()
                made_vol = S.create_overlay(pool, root, base, v["disk_bytes"])
                made.append(root)
                if seed:
                    C.seed_volume(request.seed, seed[C.ROOT], made_vol.path(),
                                  made_vol.info()[1], base.path())
                for vol, vs in data:
                    made_vol = S.create_volume(pool, vol, int(vs.size_gb * GIB))
                    made.append(vol)
                    if seed:
                        C.seed_volume(request.seed, seed[vs.name], made_vol.path(),
                                      made_vol.info()[1], None)
                if seed:
                    pool.refresh(0)         # libvirt reads the new backing and allocation
                seed_s = time.monotonic() - t_seed
                t0 = time.monotonic()
                dom.create()
                deadline = t0 + s.boot_timeout_s
                try:
                    leases = N.wait_lease(dom, deadline)
                    tcp = [p.port for p in request.ports if p.protocol == "tcp"]
                    if tcp:
                        N.wait_tcp(leases[0][0], tcp[0], deadline)
                except Timeout as e:
                    # Name the setting and show what the guest said: the
                    # console log goes with the rollback.
                    raise Timeout(f"{e.detail} (waited {s.boot_timeout_s:g} s: "
                                  f"vim.boot_timeout_s); the guest's console ended with: "
                                  f"{self._console_tail(name)}") from None
                boot_s = time.monotonic() - t0
                uuid = dom.UUIDString()
        except BaseException as e:
            self._rollback(conn, name, dom, made, e)
            raise
        return self._allocation(request, uuid, leases, {
            "accel": accel, "vcpu_count": v["vcpu"], "boot_s": round(boot_s, 2),
            "console_log": self._console_log(name), "image_sha256": record["sha256"],
            **({"seed_s": round(seed_s, 2)} if seed else {})})

    def _allocation(self, request: ResourceRequest, uuid: str,
                    addresses: list[tuple[str, str]], extra: dict) -> Allocation:
        """What a deploy (or an adoption) made: the system disk and data
        disks by the instance's volume names, its addresses, its handle."""
        iid, s = request.instance_id, self.settings
        vols = [{"name": "root", "size_gb": request.disk_gb, "id": X.root_volume_name(iid),
                 "reserved": False}]
        vols += [{"name": vs.name, "size_gb": vs.size_gb,
                  "id": X.data_volume_name(iid, vs.name), "reserved": vs.reserved}
                 for vs in request.volumes]
        handle = {"domain": X.domain_name(iid), "uuid": uuid, "pool": s.pool,
                  "instance_id": iid,
                  "volumes": [{"name": x["id"], "reserved": x["reserved"]} for x in vols]}
        return Allocation(
            instance_id=iid, manner=DeploymentType.VM, vcpu=request.vcpu,
            memory_mb=request.memory_mb, storage=tuple(vols),
            addresses=tuple(Address(ip, s.network, mac) for ip, mac in addresses),
            handle=handle, extra=extra)

    def export_data(self, handle: dict, into: Path) -> None:
        """The shut-off domain's disks as one tar at `into` (see `carry`):
        `disk/root` (the overlay, with its image's SHA-256 when the
        repository still holds those bytes) and `disk/<name>` per data disk,
        reserved ones too. Conflict while the domain runs (or when it was
        started during the copy: the archive is removed); NotFound when the
        domain or one of its volumes is gone."""
        name, vols = self._handle_parts(handle)
        conn = self._connect()
        with libvirt_errors(f"export the disks of {name}"):
            dom = _lookup_domain(conn, name)
            if dom is None:
                raise NotFound(f"domain {name} does not exist")
            if dom.isActive():
                raise Conflict(f"domain {name} is running: its disks are copied only when "
                               "it is shut off")
            meta = _read_meta(dom)
            iid = meta.instance_id if meta else str(handle.get("instance_id", ""))
            names = [n for n, _ in meta.volumes] if meta else [x["name"] for x in vols]
            pool = conn.storagePoolLookupByName(meta.pool if meta else self.settings.pool)
            disks, sha = [], None
            for vol_name in names:
                disk = X.disk_of_volume(iid, vol_name)
                if disk is None:
                    raise BackendError(f"domain {name}: volume {vol_name} is not named as a "
                                       f"disk of instance {iid}")
                vol = S.lookup_volume(pool, vol_name)
                if vol is None:
                    raise NotFound(f"domain {name}: volume {vol_name} is gone")
                disks.append((disk, vol.path()))
                if disk == C.ROOT and meta:
                    sha = self._image_sha(meta.image, X.backing_path(vol.XMLDesc(0)))
        try:
            C.write_archive(Path(into), disks, sha)
        except OSError as e:
            raise BackendError(f"export the disks of {name} into {into}: "
                               f"{e.strerror or e}") from None
        with libvirt_errors(f"export the disks of {name}"):
            if dom.isActive():
                unlink_quietly(Path(into))
                raise Conflict(f"domain {name} was started while its disks were copied")

    def _image_sha(self, image: str, backing: str | None) -> str | None:
        """The SHA-256 of the image an overlay lies on: the repository's
        record when the base it backs onto is of those bytes (its name holds
        their first 12 hex digits), else None (re-imported since)."""
        record = self.images.catalog.get(image) or {}
        sha = record.get("sha256")
        if sha and backing and os.path.basename(backing) == X.base_volume_name(image, sha):
            return sha
        return None

    def _console_tail(self, name: str, lines: int = 6) -> str:
        try:
            data = self.logs({"domain": name}, None)
        except MecorchError:
            data = b""
        last = [ln.strip() for ln in data.decode(errors="replace").splitlines() if ln.strip()]
        return " | ".join(last[-lines:])[-600:] or "(nothing)"

    def _console_log(self, name: str) -> str:
        return str(self.settings.console_dir / f"{name}.console.log")

    def _env_file(self, name: str) -> Path:
        return self.settings.env_dir / f"{name}.env"

    def _write_env(self, conn, name: str, virt_type: str, data: bytes) -> str:
        path = self._env_file(name)
        write_guest_env(path, data, _qemu_owner(conn, virt_type))
        return str(path)

    def _rollback(self, conn, name: str, dom, made: list[str], cause: BaseException) -> None:
        """Undo a failed deploy; a failure here is added to the cause's detail."""
        try:
            with libvirt_errors(f"roll back {name}"):
                if dom is not None:
                    self._remove_domain(dom)
                pool = self._pool(conn)
                for vol in reversed(made):
                    S.delete_volume(pool, vol)
            self._remove_console_log(name)
            unlink_quietly(self._env_file(name))
        except MecorchError as e:
            if isinstance(cause, MecorchError):
                cause.detail += f" (and the rollback failed: {e.detail})"
                cause.args = (cause.detail,)

    # -- live migration (LiveMovable; mechanics in module `live`) ----------------
    @cached_property
    def _incoming(self) -> L.Records:
        return L.Records(self.settings.state_dir)

    def live_endpoint(self) -> dict | None:
        s = self.settings
        return None if s.live_uri is None else {"uri": s.live_uri, "network_cidr": s.network_cidr}

    def live_source(self, handle: dict) -> dict:
        name, _ = self._handle_parts(handle)
        conn = self._connect()
        with libvirt_errors(f"live source {name}"):
            dom = _lookup_domain(conn, name)
            if dom is None:
                raise NotFound(f"domain {name} does not exist")
            if not dom.isActive():
                raise Conflict(f"domain {name} is not running: a stopped instance moves cold")
            addresses = N.lease_addresses(dom)
            if not addresses:   # moved here live: no lease of this dnsmasq until it renews
                rec = self._incoming.load(name[len(X.DOMAIN_PREFIX):]) or {}
                addresses = [(a["ip"], a["mac"]) for a in rec.get("addresses") or []]
            return L.source_facts(dom, addresses, self.settings.network_cidr)

    def prepare_incoming(self, request: ResourceRequest, source: dict) -> dict:
        v = validate_request(request)
        s = self.settings
        iid, name = v["iid"], X.domain_name(v["iid"])
        if s.live_uri is None:
            raise Conflict(f"host {s.host_id} takes no live migration: vim.live_uri is not set")
        src_root, targets, addresses = L.source_identity(source)
        if len(targets) != 1 + len(request.volumes):
            raise Conflict(f"the source domain has {len(targets)} disk(s), the request "
                           f"{1 + len(request.volumes)} (system disk and data disks)")
        L.check_range(addresses, s.network_cidr, s.network, source.get("network_cidr"))
        record = self.images.check(request.image)
        conn = self._ready()
        root = X.root_volume_name(iid)
        data = [(X.data_volume_name(iid, vs.name), vs) for vs in request.volumes]
        with libvirt_errors(f"prepare incoming {iid}"):
            pool = self._pool(conn)
            net = conn.networkLookupByName(s.network)
            if _lookup_domain(conn, name) is not None or self._incoming.load(iid) is not None:
                raise Conflict(f"instance {iid}: domain {name} or its incoming move already exists")
            for vol in [root] + [n for n, _ in data]:
                if S.lookup_volume(pool, vol) is not None:
                    raise Conflict(f"instance {iid}: volume {vol} already exists in pool {s.pool}")
            L.check_free(net, addresses, s.network)
        rec = {"domain": name, "volumes": [], "addresses": [], "image": request.image}
        self._incoming.save(iid, rec)       # first: abort_incoming finds what follows
        try:
            with libvirt_errors(f"prepare incoming {iid}"):
                base = S.ensure_base(conn, pool, str(self.images.path(request.image)),
                                     X.base_volume_name(request.image, record["sha256"]))
                paths = []
                for vol, size in [(root, None)] + [(n, vs.size_gb) for n, vs in data]:
                    rec["volumes"].append(vol)
                    self._incoming.save(iid, rec)
                    made = (S.create_overlay(pool, vol, base, v["disk_bytes"]) if size is None
                            else S.create_volume(pool, vol, int(size * GIB)))
                    paths.append(made.path())
                rec["addresses"] = addresses
                self._incoming.save(iid, rec)
                L.reserve(net, addresses)
                meta = X.DomainMeta(iid, request.app_d_id, s.host_id, request.image, s.pool,
                                    ((root, False),) + tuple((n, vs.reserved) for n, vs in data))
                env_file = self._write_env(conn, name, src_root.get("type"), v["env"])
                xml = L.dest_xml(src_root, disk_paths=paths, network=s.network, meta=meta,
                                 env_file=env_file, console_log=self._console_log(name))
        except BaseException:
            try:
                self.abort_incoming(iid)
            except MecorchError:
                pass        # the cause matters more; abort_incoming again removes the rest
            raise
        return {"uri": s.live_uri, "migrate_uri": f"tcp://{s.live_address}", "xml": xml,
                "disks": targets, "instance_id": iid, "domain": name}

    def migrate_out(self, handle: dict, offer: dict, timeout_s: float) -> None:
        name, _ = self._handle_parts(handle)
        o = L.check_offer(offer)
        timeout_s = validate.number(timeout_s, "timeout_s", 1, 86400)
        conn = self._connect()
        with libvirt_errors(f"migrate {name}"):
            dom = _lookup_domain(conn, name)
            if dom is None:
                raise NotFound(f"domain {name} does not exist")
            if not dom.isActive():
                raise Conflict(f"domain {name} is not running: nothing to migrate live")
        L.migrate(dom, o, timeout_s)
        with libvirt_errors(f"after migrating {name}"):
            # shut off here now, defined for a rollback: a host reboot must
            # not start it again beside its moved self
            dom.setAutostart(0)

    def abort_incoming(self, instance_id: str) -> None:
        iid = validate.ident(instance_id, "instance_id")
        rec = self._incoming.load(iid)
        if rec is None or rec.get("adopted"):
            return          # nothing prepared, or adopted: the instance's now (destroy)
        s = self.settings
        name = X.domain_name(iid)
        conn = self._connect()
        with libvirt_errors(f"abort incoming {iid}"):
            dom = _lookup_domain(conn, name)
            if dom is not None:
                meta = _read_meta(dom)
                if meta and meta.host_id == s.host_id and meta.instance_id == iid:
                    self._remove_domain(dom)        # it arrived (or was adopted half-way)
            pool = self._pool(conn)
            for vol in reversed(rec.get("volumes") or []):
                S.delete_volume(pool, vol)
            if rec.get("addresses"):
                L.release(conn.networkLookupByName(s.network), rec["addresses"])
        self._remove_console_log(name)
        unlink_quietly(self._env_file(name))
        self._incoming.drop(iid)
        self._collect_bases()

    def _adopt(self, request: ResourceRequest) -> Allocation:
        """deploy() of a live relocation's target: the domain that arrived
        for this prepared instance, as a deploy's Allocation; on failure
        everything of it here is removed (abort_incoming)."""
        v = validate_request(request)
        s = self.settings
        iid, name = v["iid"], X.domain_name(v["iid"])
        rec = self._incoming.load(iid)
        if rec is None:
            raise Conflict(f"instance {iid}: no incoming live migration was prepared here")
        offer = request.incoming
        if not isinstance(offer, dict) or offer.get("domain") != name \
                or offer.get("instance_id") != iid:
            raise InvalidInput(f"incoming: not the offer this host made for instance {iid}")
        conn = self._connect()
        try:
            with libvirt_errors(f"adopt {name}"):
                dom = _lookup_domain(conn, name)
                if dom is None:
                    raise Conflict(f"domain {name} has not arrived: was it migrated here?")
                meta = _read_meta(dom)
                if not meta or meta.host_id != s.host_id or meta.instance_id != iid \
                        or meta.pool != s.pool:
                    raise Conflict(f"domain {name} is not the one prepared for instance {iid} "
                                   "on this host (its metadata)")
                if not dom.isActive():
                    raise Conflict(f"domain {name} arrived but is not running")
                t0 = time.monotonic()
                ip = rec["addresses"][0]["ip"]
                tcp = [p.port for p in request.ports if p.protocol == "tcp"]
                if tcp:
                    N.wait_tcp(ip, tcp[0], t0 + s.boot_timeout_s)
                dom.setAutostart(1)
                # adopted: abort_incoming leaves it; destroy releases its
                # address reservation
                self._incoming.save(iid, {"adopted": True, "addresses": rec["addresses"]})
                uuid = dom.UUIDString()
                virt_type = ET.fromstring(dom.XMLDesc(0)).get("type")
                record = self.images.catalog.get(request.image) or {}
        except BaseException:
            try:
                self.abort_incoming(iid)
            except MecorchError:
                pass
            raise
        return self._allocation(
            request, uuid, [(a["ip"], a["mac"]) for a in rec["addresses"]],
            {"accel": "kvm" if virt_type == "kvm" else "tcg", "vcpu_count": v["vcpu"],
             "boot_s": 0.0, "adopted_s": round(time.monotonic() - t0, 2),
             "live_migrated": True, "console_log": self._console_log(name),
             "image_sha256": record.get("sha256", "")})

    # -- lifecycle -------------------------------------------------------------
    @staticmethod
    def _handle_parts(handle: dict) -> tuple[str, list[dict]]:
        """Domain name and volumes of a handle, checked: they become libvirt
        lookups and are longer than an ident (prefix/suffix added)."""
        if not isinstance(handle, dict):
            raise InvalidInput("handle: must be a mapping")
        name = handle.get("domain")
        if not (isinstance(name, str) and name.startswith(X.DOMAIN_PREFIX)
                and _OBJECT_NAME.fullmatch(name) and ".." not in name):
            raise InvalidInput("handle.domain: not a mecorch domain name")
        vols = handle.get("volumes") or []
        for i, vol in enumerate(vols):
            vname = vol.get("name") if isinstance(vol, dict) else None
            if not (isinstance(vname, str) and _OBJECT_NAME.fullmatch(vname) and ".." not in vname):
                raise InvalidInput(f"handle.volumes[{i}].name: not a volume name")
        return name, vols

    def _remove_domain(self, dom) -> None:
        """Destroy (if running) and undefine; already gone is fine."""
        for step in (dom.destroy, lambda: dom.undefineFlags(_UNDEFINE_FLAGS)):
            try:
                step()
            except libvirt.libvirtError as e:
                # Not running (destroy) or gone (either): nothing to do.
                if e.get_error_code() not in (libvirt.VIR_ERR_OPERATION_INVALID,
                                              libvirt.VIR_ERR_NO_DOMAIN):
                    raise

    def _remove_console_log(self, name: str) -> None:
        try:
            os.unlink(self._console_log(name))
        except FileNotFoundError:
            pass

    def destroy(self, handle: dict) -> None:
        name, vols = self._handle_parts(handle)
        conn = self._connect()
        with libvirt_errors(f"destroy {name}"):
            dom = _lookup_domain(conn, name)
            reserved = {v["name"]: bool(v.get("reserved")) for v in vols}
            if dom is not None:
                meta = _read_meta(dom)      # the domain knows its volumes too
                for vol, res in (meta.volumes if meta else ()):
                    reserved.setdefault(vol, res)
                self._remove_domain(dom)
            try:
                pool = self._pool(conn)
            except libvirt.libvirtError as e:
                if e.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_POOL:
                    raise
                pool = None
            if pool is not None:
                for vol, res in reserved.items():
                    if not res:
                        S.delete_volume(pool, vol)
        self._remove_console_log(name)
        unlink_quietly(self._env_file(name))      # also when the domain was already gone
        self._release_adopted(conn, name)
        self._collect_bases()

    def _release_adopted(self, conn, name: str) -> None:
        """A live-migrated instance's DHCP reservation and record, at its
        destroy (none for a deployed one)."""
        iid = name[len(X.DOMAIN_PREFIX):]
        rec = self._incoming.load(iid)
        if rec is None:
            return
        with libvirt_errors(f"release the addresses of {name}"):
            try:
                net = conn.networkLookupByName(self.settings.network)
            except libvirt.libvirtError as e:
                if e.get_error_code() != libvirt.VIR_ERR_NO_NETWORK:
                    raise
                net = None
            if net is not None:
                L.release(net, rec.get("addresses") or [])
        self._incoming.drop(iid)

    def stop(self, handle: dict, timeout_s: float) -> None:
        name, _ = self._handle_parts(handle)
        timeout_s = validate.number(timeout_s, "timeout_s", 0, 86400)
        conn = self._connect()
        with libvirt_errors(f"stop {name}"):
            dom = _lookup_domain(conn, name)
            if dom is None:
                return
            dom.setAutostart(0)     # stopped by the operator: stays off across a reboot
            if not dom.isActive():
                return
            if timeout_s > 0:
                try:
                    dom.shutdown()          # ACPI power button
                except libvirt.libvirtError as e:
                    if e.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID:
                        raise
                deadline = time.monotonic() + timeout_s
                while dom.isActive() and time.monotonic() < deadline:
                    time.sleep(0.2)
            if dom.isActive():      # the guest ignored ACPI (or timeout 0)
                try:
                    dom.destroy()
                except libvirt.libvirtError as e:
                    if e.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID:
                        raise

    def start(self, handle: dict) -> None:
        name, _ = self._handle_parts(handle)
        conn = self._connect()
        with libvirt_errors(f"start {name}"):
            dom = _lookup_domain(conn, name)
            if dom is None:
                raise NotFound(f"domain {name} does not exist")
            dom.setAutostart(1)
            if not dom.isActive():
                dom.create()

    def _observe(self, dom, handle: dict | None = None) -> Observation:
        meta = _read_meta(dom)
        state, reason = dom.state()
        observed = _STATES.get(state, ObservedState.UNKNOWN)
        iid = meta.instance_id if meta else (handle or {}).get("instance_id", "")
        h = dict(handle or {"domain": dom.name(), "uuid": dom.UUIDString(), "instance_id": iid,
                            "pool": meta.pool if meta else self.settings.pool,
                            "volumes": [{"name": n, "reserved": r}
                                        for n, r in (meta.volumes if meta else ())]})
        clean = state == libvirt.VIR_DOMAIN_SHUTOFF and reason == libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN
        why = _STATE_REASONS.get((state, reason))
        return Observation(iid, observed, h, detail=(f"{why} " if why else "")
                           + f"(libvirt state {state} reason {reason})",
                           exit_code=0 if clean else None, fault=why if why in FAULTS else "")

    def watch(self, on_change, stop: threading.Event) -> None:
        """Report each lifecycle change of a domain of this host as
        libvirt's own events say it (seconds, not a reconcile period):
        on_change(Observation) until `stop` is set. A connection of its
        own, served by libvirt's default event loop (one thread per process)."""
        _event_loop_ready()
        s = self.settings
        with libvirt_errors(f"connect to {s.uri} for events"):
            conn = libvirt.open(s.uri)
        reasons = {libvirt.VIR_DOMAIN_EVENT_STOPPED: "stopped",
                   libvirt.VIR_DOMAIN_EVENT_CRASHED: "crashed",
                   libvirt.VIR_DOMAIN_EVENT_STARTED: "started",
                   libvirt.VIR_DOMAIN_EVENT_RESUMED: "resumed",
                   libvirt.VIR_DOMAIN_EVENT_SUSPENDED: "suspended"}

        def lifecycle(_conn, dom, event, detail, _opaque):
            if event not in reasons or not dom.name().startswith(X.DOMAIN_PREFIX):
                return
            meta = _read_meta(dom)
            if not meta or meta.host_id != s.host_id or meta.pool != s.pool:
                return                      # another host's domain: not ours
            state = ObservedState.RUNNING if event in (libvirt.VIR_DOMAIN_EVENT_STARTED,
                                                       libvirt.VIR_DOMAIN_EVENT_RESUMED) \
                else ObservedState.STOPPED
            # a VM has no exit code: its guest's own shutdown counts as 0
            # (a clean end), any other stop (destroyed, crashed) as none
            clean = event == libvirt.VIR_DOMAIN_EVENT_STOPPED \
                and detail == libvirt.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN
            why = _EVENT_REASONS.get((event, detail))
            on_change(Observation(meta.instance_id, state, {},
                                  f"{reasons[event]}{f': {why}' if why else ''} "
                                  f"(libvirt event detail {detail})", 0 if clean else None,
                                  why if why in FAULTS else ""))
        try:
            with libvirt_errors("register for domain events"):
                cb = conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                                                 lifecycle, None)
            try:
                while not stop.wait(0.5) and conn.isAlive():
                    pass
            finally:
                try:
                    conn.domainEventDeregisterAny(cb)
                except libvirt.libvirtError:
                    pass
            if not stop.is_set():
                raise BackendUnavailable(f"the event connection to {s.uri} was lost")
        finally:
            try:
                conn.close()
            except libvirt.libvirtError:
                pass

    def uninstall(self, keep: dict[str, tuple[str, ...]] | None = None) -> list[str]:
        """Remove what this driver made for its host (`mecorch host
        teardown`): its NAT network and its storage pool with the volumes
        left in it (image bases), when no domain of the host is left; not
        one `keep` names (`network`, `pool`: another configured host names
        it too; the value says which). Returns what was removed, one line
        each; "kept ..." for what it left and why."""
        keep = keep or {}
        s = self.settings
        conn = self._connect()
        done = []
        with libvirt_errors("tear down the mecorch pool and network"):
            left = self._own_domains(conn)
            if left:
                raise Conflict(f"{len(left)} domain(s) of host {s.host_id} remain: terminate "
                               "their instances first")
            try:
                net = conn.networkLookupByName(s.network)
            except libvirt.libvirtError as e:
                if e.get_error_code() != libvirt.VIR_ERR_NO_NETWORK:
                    raise
                net = None
            if net is not None and "network" in keep:
                done.append(f"kept libvirt network {s.network}: {_users(keep['network'])}")
            elif net is not None:
                if net.isActive():
                    net.destroy()
                net.undefine()
                done.append(f"libvirt network {s.network}")
            try:
                pool = conn.storagePoolLookupByName(s.pool)
            except libvirt.libvirtError as e:
                if e.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_POOL:
                    raise
                pool = None
            if pool is not None and "pool" in keep:
                done.append(f"kept libvirt pool {s.pool}: {_users(keep['pool'])}")
            elif pool is not None:
                if not pool.isActive():
                    pool.create()
                vols = pool.listAllVolumes()
                for vol in vols:
                    vol.delete()
                pool.destroy()
                pool.undefine()
                done.append(f"libvirt pool {s.pool} ({len(vols)} volume(s))")
        self._opened = False
        return done

    def logs(self, handle: dict, tail: int | None = None) -> bytes:
        """The guest's serial console, as virtlogd writes it."""
        name, _ = self._handle_parts(handle)
        try:
            with open(self._console_log(name), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return b""
        except OSError as e:
            raise MecorchError(f"cannot read the console log of {name}: {e.strerror}") from None
        if tail is None:
            return data
        return b"".join(data.splitlines(keepends=True)[-tail:]) if tail > 0 else b""

    def inspect(self, handle: dict) -> Observation:
        name, _ = self._handle_parts(handle)
        conn = self._connect()
        with libvirt_errors(f"inspect {name}"):
            dom = _lookup_domain(conn, name)
            if dom is None:
                return Observation(handle.get("instance_id", ""), ObservedState.MISSING, handle,
                                   detail=f"domain {name} does not exist")
            return self._observe(dom, handle)

    def read_usage(self, handle: dict) -> ResourceUsage:
        """libvirt's domain stats (what `virsh domstats` prints) of the
        domain: cpu.time, the balloon (memory), every interface and disk.
        Memory in use: the guest's own figure (balloon.available - unused)
        when its balloon driver reports one, else the resident memory of
        the VM's QEMU process (balloon.rss), which includes QEMU's own."""
        name, _ = self._handle_parts(handle)
        conn = self._connect()
        with libvirt_errors(f"stats of {name}"):
            dom = conn.lookupByName(name)
            got = conn.domainListGetStats([dom], STATS_WANTED, 0)
        return usage_of(got[0][1] if got else {}, time.time())

    def _own_domains(self, conn) -> list[tuple[object, X.DomainMeta]]:
        """Domains whose metadata says this host and pool made them."""
        out = []
        for dom in conn.listAllDomains(0):
            if not dom.name().startswith(X.DOMAIN_PREFIX):
                continue
            meta = _read_meta(dom)
            if meta and meta.host_id == self.settings.host_id and meta.pool == self.settings.pool:
                out.append((dom, meta))
        return out

    def list_instances(self) -> list[Observation]:
        conn = self._connect()
        with libvirt_errors("list instances"):
            return [self._observe(dom) for dom, _ in self._own_domains(conn)]

    def app_gateway(self) -> str | None:
        """The NAT network's gateway (from the config; no libvirt call)."""
        return X.gateway(self.settings.network_cidr)

    def capacity(self) -> HostCapacity:
        conn = self._ready()
        with libvirt_errors("read host capacity"):
            _, mem_mb, cpus, *_ = conn.getInfo()
            vcpu_used = mem_used = 0
            for dom, _ in self._own_domains(conn):
                _, max_kib, _, nvcpu, _ = dom.info()
                vcpu_used += nvcpu
                mem_used += max_kib // 1024
            _, cap, _, avail = self._pool(conn).info()
        return HostCapacity(cpu_total=float(cpus), cpu_used=float(vcpu_used),
                            memory_mb_total=int(mem_mb), memory_mb_used=int(mem_used),
                            disk_gb_total=cap / GIB, disk_gb_used=(cap - avail) / GIB)


# What libvirt says of a domain's end or pause, in words (the faults an
# operator must see: a crash, a failed emulator, a disk I/O error such as a
# full disk, which QEMU answers by pausing the guest; a watchdog).
FAULTS = ("crashed", "guest kernel panic", "the emulator failed", "disk I/O error",
          "watchdog fired")
_EVENT_REASONS = {
    (libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN): "shut down",
    (libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_STOPPED_DESTROYED): "destroyed",
    (libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_STOPPED_CRASHED): "crashed",
    (libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_STOPPED_FAILED):
        "the emulator failed",
    (libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_STOPPED_MIGRATED):
        "migrated to another host",
    (libvirt.VIR_DOMAIN_EVENT_CRASHED, libvirt.VIR_DOMAIN_EVENT_CRASHED_PANICKED):
        "guest kernel panic",
    (libvirt.VIR_DOMAIN_EVENT_SUSPENDED, libvirt.VIR_DOMAIN_EVENT_SUSPENDED_IOERROR):
        "disk I/O error",
    (libvirt.VIR_DOMAIN_EVENT_SUSPENDED, libvirt.VIR_DOMAIN_EVENT_SUSPENDED_WATCHDOG):
        "watchdog fired",
}
_STATE_REASONS = {
    (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN): "shut down",
    (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_DESTROYED): "destroyed",
    (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_CRASHED): "crashed",
    (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_FAILED): "the emulator failed",
    (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_MIGRATED): "migrated to another host",
    (libvirt.VIR_DOMAIN_CRASHED, libvirt.VIR_DOMAIN_CRASHED_PANICKED): "guest kernel panic",
    (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_IOERROR): "disk I/O error",
    (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_WATCHDOG): "watchdog fired",
}
_EVENT_LOOP_LOCK = threading.Lock()
_EVENT_LOOP = []


def _event_loop_ready() -> None:
    """libvirt's default event loop, registered and run by one daemon thread
    per process (registered before the connections that want events)."""
    with _EVENT_LOOP_LOCK:
        if not _EVENT_LOOP:
            libvirt.virEventRegisterDefaultImpl()
            # a periodic timeout makes each run return, so the loop never
            # blocks for good on a connection that went away
            libvirt.virEventAddTimeout(1000, lambda *_: None, None)

            def run() -> None:
                while True:
                    libvirt.virEventRunDefaultImpl()
            threading.Thread(target=run, name="libvirt-events", daemon=True).start()
            _EVENT_LOOP.append(True)


def _users(hosts) -> str:
    """Why an object is kept: the other configured hosts naming it."""
    return f"host(s) {', '.join(hosts)} of the configuration use it too"
