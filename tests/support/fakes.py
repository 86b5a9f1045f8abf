"""In-memory drivers for testing the core's logic (flows, rollback, state
rules). They prove nothing about a backend: the real-backend tests do that.

They declare none of the optional capabilities of `driverapi.contracts`
(`Watchable`, `Revivable`, `Uninstallable`, `RuleAudit`,
`DnsOnAppNetworks`): the core leaves those steps out for them, as it does
for a real driver without them; `MeteredCompute` alone reads usage figures
(`UsageReadable`) of its own making, `CarryingCompute` alone carries data
(`DataMovable`) held in memory, `LiveCompute` alone moves a running instance
(`LiveMovable`) between two fakes."""

from __future__ import annotations

import io
import ipaddress
import tarfile
import threading
import time

from mecorch.driverapi.contracts import (
    Capabilities, ComputeDriver, DataMovable, LiveMovable, PlatformDriver, UsageReadable)
from mecorch.kernel import validate
from mecorch.kernel.errors import (
    BackendError, BackendUnavailable, Conflict, ImageNotFound, ImageUnavailable,
    IntegrityError, InvalidInput, NotFound, UnsupportedAction)
from mecorch.driverapi.model import (
    Address, Allocation, Check, HostCapacity, Observation, ResourceUsage)
from mecorch.kernel.states import DeploymentType, ObservedState


class FakeCompute(ComputeDriver):
    def __init__(self, manner: DeploymentType, cpus: float = 2, memory_mb: int = 4096,
                 disk_gb: float = 100):
        super().__init__({})
        self.kind = "cim" if manner is DeploymentType.CONTAINER else "vim"
        self.manner = manner
        self.cpus, self.memory_mb, self.disk_gb = cpus, memory_mb, disk_gb
        self.images: dict[str, dict] = {}
        self.instances: dict[str, dict] = {}
        self.fail: dict[str, Exception] = {}       # verb -> error to raise
        self.calls: list[str] = []
        self.deploy_gate: threading.Event | None = None   # block deploy until set
        self.down = False          # the "backend" is unreachable: every verb fails
        self._n = 0

    def _maybe_fail(self, verb: str) -> None:
        self.calls.append(verb)
        if self.down:
            raise BackendUnavailable(f"fake backend down ({verb})")
        if verb in self.fail:
            raise self.fail[verb]

    @staticmethod
    def _id(handle) -> str:
        if not isinstance(handle, dict) or not isinstance(handle.get("id"), str):
            raise InvalidInput("handle: not a fake handle")
        return handle["id"]

    def capabilities(self):
        return Capabilities(manner=self.manner)

    def check(self):
        return [Check("fake", not self.down, "down" if self.down else "in memory")]

    def import_image(self, image, source, sha256=None):
        self._maybe_fail("import_image")
        self.images[image] = {"image": image, "available": True, "source": source}
        return self.images[image]

    def set_image_available(self, image, available):
        self.images.setdefault(image, {"image": image})["available"] = available

    def remove_image(self, image):
        self._maybe_fail("remove_image")
        self.images.pop(image, None)

    def check_image(self, image):
        rec = self.images.get(image)
        if rec is None or "source" not in rec and not rec.get("reference_ok"):
            raise ImageNotFound(f"{image} not in the fake repository")
        if not rec.get("available"):
            raise ImageUnavailable(f"{image} unavailable")
        if rec.get("corrupt"):
            raise IntegrityError(f"{image} does not match its checksum")
        return rec

    def capacity(self):
        if self.down:
            raise BackendUnavailable("fake backend down (capacity)")
        return HostCapacity(self.cpus, 0, self.memory_mb, 0, self.disk_gb, 0)

    def deploy(self, request):
        self._maybe_fail("deploy")
        if self.deploy_gate is not None:
            self.deploy_gate.wait(10)
        self._validate(request)
        self.check_image(request.image)
        self._n += 1
        ip = f"10.123.0.{self._n}"
        self.instances[request.instance_id] = {"state": ObservedState.RUNNING, "ip": ip,
                                               "request": request}
        return Allocation(request.instance_id, self.manner, request.vcpu, request.memory_mb,
                          (), (Address(ip, "fake"),), {"id": request.instance_id})

    def _validate(self, r) -> None:
        """What every real driver refuses before it makes anything."""
        if r.manner != self.manner:
            raise InvalidInput(f"manner: this fake deploys {self.manner}, not {r.manner}")
        validate.ident(r.instance_id, "instance_id")
        validate.number(r.vcpu, "vcpu", 0.01, 1024)
        validate.integer(r.memory_mb, "memory_mb", 1, 1 << 30)
        names = [validate.ident(v.name, f"volumes[{i}].name") for i, v in enumerate(r.volumes)]
        if len(set(names)) != len(names):
            raise InvalidInput("volumes: a name is used twice")

    def start(self, handle):
        self._maybe_fail("start")
        self.instances[self._id(handle)].update(state=ObservedState.RUNNING, exit_code=None,
                                                fault="")

    def stop(self, handle, timeout_s):
        self._maybe_fail("stop")
        if self._id(handle) in self.instances:
            self.instances[handle["id"]]["state"] = ObservedState.STOPPED

    def destroy(self, handle):
        self._maybe_fail("destroy")
        self.instances.pop(self._id(handle), None)

    def inspect(self, handle):
        inst = self.instances.get(self._id(handle))
        return Observation(handle["id"], inst["state"] if inst else ObservedState.MISSING, handle,
                           (inst or {}).get("fault", ""), (inst or {}).get("exit_code"),
                           (inst or {}).get("fault", ""))

    def list_instances(self):
        if self.down:
            raise BackendUnavailable("fake backend down (list_instances)")
        return [Observation(i, v["state"], {"id": i}, v.get("fault", ""), v.get("exit_code"),
                            v.get("fault", "")) for i, v in self.instances.items()]

    def crash(self, instance_id: str, exit_code: int | None, fault: str = "") -> None:
        """The runtime ends by itself (what a `docker kill` is to Docker);
        `fault`: what the backend names of it (its detail too)."""
        self.instances[instance_id].update(state=ObservedState.STOPPED, exit_code=exit_code,
                                           fault=fault)


class MeteredCompute(FakeCompute, UsageReadable):
    """A FakeCompute that reads usage figures: each instance's are what
    `figures[instance id]` holds (a ResourceUsage, or an exception to raise),
    else a fixed small reading; `reads` counts the calls."""

    def __init__(self, manner: DeploymentType, **kw):
        super().__init__(manner, **kw)
        self.figures: dict[str, object] = {}
        self.reads = 0

    def read_usage(self, handle):
        self.reads += 1
        iid = self._id(handle)
        self._maybe_fail("read_usage")
        if iid not in self.instances:
            raise NotFound(f"{iid} is gone")
        got = self.figures.get(iid)
        if isinstance(got, Exception):
            raise got
        return got or ResourceUsage(at=time.time(), cpu_seconds=1.0, memory_bytes=1 << 20,
                                    memory_limit_bytes=64 << 20, net_rx_bytes=10,
                                    net_tx_bytes=20, block_read_bytes=0, block_write_bytes=0)


class CarryingCompute(FakeCompute, DataMovable):
    """A FakeCompute that carries its instances' data (`DataMovable`), for
    the core's logic of a relocation's data (mecorch.mepm.seeds): it proves
    nothing about a backend (tests/backends/test_docker_data.py does).
    `data[instance id]` = {volume name: its bytes}; a deploy makes each
    volume of the request empty, or fills it from the seed archive (a
    member per volume, named by it; one the request has not, or a volume
    with no member: InvalidInput, nothing made); `export_data` writes that
    archive of a stopped instance. `seeds` lists the seeds deploys were given."""

    def __init__(self, manner: DeploymentType, **kw):
        super().__init__(manner, **kw)
        self.data: dict[str, dict[str, bytes]] = {}
        self.seeds: list[str] = []

    def deploy(self, request):
        volumes = {v.name for v in request.volumes}
        filled = {v: b"" for v in volumes}
        if request.seed is not None:
            self.seeds.append(request.seed)
            with tarfile.open(request.seed, "r:") as t:
                got = {m.name: t.extractfile(m).read() for m in t if m.isfile()}
            odd = sorted(set(got) ^ volumes)
            if odd:
                raise InvalidInput(f"seed: volume {odd[0]!r} is in only one of the archive "
                                   "and the request")
            filled = got
        alloc = super().deploy(request)
        self.data[request.instance_id] = filled
        return alloc

    def destroy(self, handle):
        super().destroy(handle)
        self.data.pop(self._id(handle), None)

    def export_data(self, handle, into):
        inst = self.instances.get(self._id(handle))
        if inst is None:
            raise NotFound(f"{handle['id']} is gone")
        if inst["state"] is ObservedState.RUNNING:
            raise Conflict(f"{handle['id']} runs: stop it first")
        with tarfile.open(into, "w") as t:
            for name, content in sorted(self.data.get(handle["id"], {}).items()):
                info = tarfile.TarInfo(name)
                info.size = len(content)
                t.addfile(info, io.BytesIO(content))


class LiveCompute(CarryingCompute, LiveMovable):
    """A CarryingCompute that moves a running instance to another host
    (`LiveMovable`), for the core's logic of a live relocation
    (mecorch.mepm.live, mecorch.meo.relocate). It is a fake: it proves only
    that logic, never a backend (tests/backends/test_libvirt_live.py does).

    `wire` stands for the backends' own link (two hosts' libvirtds): one
    dict shared by the fakes of a test's hosts, {live uri: {domain: what
    arrived there}}. `endpoint` is what `live_endpoint()` answers ({"uri",
    "network_cidr"}; None: not configured, no incoming taken); its uri is
    this fake's place in `wire`. `prepare_incoming` keeps its offer in
    `prepared`; `migrate_out` puts the running instance (its address, its
    data) under the offer's uri and leaves it here STOPPED, kept, as a
    shut-off domain; a deploy given `incoming` (its own prepare's offer)
    adopts what arrived, keeping the guest's address and data, and lists
    the offer in `incomings`; an arrival not adopted yet is listed by
    `list_instances` (running) and removed by `destroy`, as libvirt's
    migrated domain; `abort_incoming` removes the offer and an arrival. Each verb fails as `fail[verb]` says, as FakeCompute's."""

    def __init__(self, manner: DeploymentType = DeploymentType.VM, wire: dict | None = None,
                 endpoint: dict | None = None, **kw):
        super().__init__(manner, **kw)
        self.wire: dict[str, dict] = {} if wire is None else wire
        self.endpoint = endpoint
        self.prepared: dict[str, dict] = {}
        self.incomings: list[dict] = []
        if endpoint is not None:
            self.wire.setdefault(endpoint["uri"], {})

    def live_endpoint(self):
        return dict(self.endpoint) if self.endpoint is not None else None

    def _running(self, handle) -> dict:
        inst = self.instances.get(self._id(handle))
        if inst is None:
            raise NotFound(f"{handle['id']} is gone")
        if inst["state"] is not ObservedState.RUNNING:
            raise Conflict(f"{handle['id']} is not running: a stopped instance moves cold")
        return inst

    def live_source(self, handle):
        self._maybe_fail("live_source")
        inst = self._running(handle)
        return {"xml": f"<domain name='{handle['id']}'/>", "addresses": [inst["ip"]]}

    def prepare_incoming(self, request, source):
        self._maybe_fail("prepare_incoming")
        if self.endpoint is None:
            raise Conflict("this host takes no live incoming: no live endpoint configured")
        self._validate(request)
        self.check_image(request.image)
        net = ipaddress.ip_network(self.endpoint["network_cidr"])
        for a in source.get("addresses") or []:
            if ipaddress.ip_address(a) not in net:
                raise Conflict(f"the guest's address {a} is outside this host's network {net}")
        offer = {"uri": self.endpoint["uri"], "migrate_uri": "tcp://fake",
                 "xml": source.get("xml"), "disks": sorted(v.name for v in request.volumes),
                 "instance_id": request.instance_id, "domain": request.instance_id}
        self.prepared[request.instance_id] = offer
        return dict(offer)

    def migrate_out(self, handle, offer, timeout_s):
        self._maybe_fail("migrate_out")
        inst = self._running(handle)
        there = self.wire.get(offer.get("uri"))
        if there is None:
            raise BackendError(f"cannot reach the backend at {offer.get('uri')!r}")
        there[offer["domain"]] = {"ip": inst["ip"], "from": handle["id"],
                                  "data": dict(self.data.get(handle["id"], {}))}
        inst["state"] = ObservedState.STOPPED       # shut off here, still defined

    def deploy(self, request):
        if request.incoming is None:
            return super().deploy(request)
        self._maybe_fail("deploy")
        self.incomings.append(dict(request.incoming))
        self._validate(request)
        iid = request.instance_id
        offer = self.prepared.pop(iid, None)
        arrived = self.wire.get((self.endpoint or {}).get("uri"), {}).pop(
            (offer or {}).get("domain"), None)
        if offer is None or offer != request.incoming:
            raise Conflict(f"incoming: not this host's offer for {iid}")
        if arrived is None:
            raise BackendError(f"incoming: nothing arrived for {iid}")
        self.instances[iid] = {"state": ObservedState.RUNNING, "ip": arrived["ip"],
                               "request": request}
        self.data[iid] = arrived["data"]
        return Allocation(iid, self.manner, request.vcpu, request.memory_mb, (),
                          (Address(arrived["ip"], "fake"),), {"id": iid})

    def _arrived(self) -> dict:
        return self.wire.get((self.endpoint or {}).get("uri"), {})

    def list_instances(self):
        # an arrival is listed before its adoption, as libvirt lists the
        # migrated domain (running, this host's marks)
        return super().list_instances() + [
            Observation(d, ObservedState.RUNNING, {"id": d}) for d in self._arrived()
            if d not in self.instances]

    def destroy(self, handle):
        super().destroy(handle)
        self._arrived().pop(self._id(handle), None)

    def abort_incoming(self, instance_id):
        self._maybe_fail("abort_incoming")
        offer = self.prepared.pop(instance_id, None)
        if self.endpoint is not None:
            self.wire.get(self.endpoint["uri"], {}).pop((offer or {}).get("domain", instance_id),
                                                         None)


class FakeMep(PlatformDriver):
    """The platform contract in memory. `applied` is its "backend": a new
    FakeMep given the same dict finds what an earlier one applied (as a
    LinuxMEP finds its chains after a restart). `cannot_express`: actions
    this MEP refuses (UnsupportedAction, nothing changed); `down`: every
    verb fails as an unreachable backend would."""

    def __init__(self, applied: dict | None = None, cannot_express: frozenset = frozenset()):
        super().__init__({})
        self.applied: dict[str, tuple] = {} if applied is None else applied
        self.shares: dict[str, dict] = {}
        self.cannot_express = cannot_express
        self.fail: Exception | None = None
        self.down = False

    def capabilities(self):
        return Capabilities(manner=None)

    def check(self):
        return [Check("fake", not self.down, "down" if self.down else "in memory")]

    def _reachable(self, verb: str) -> None:
        if self.down:
            raise BackendUnavailable(f"fake MEP down ({verb})")

    def apply_rules(self, instance_id, target_ip, traffic_rules, dns_rules, shares=None):
        self._reachable("apply_rules")
        for rule in traffic_rules:
            if rule.active and rule.action in self.cannot_express:
                raise UnsupportedAction(f"trafficRule {rule.traffic_rule_id}: this fake MEP "
                                        f"cannot express {rule.action}")
        if self.fail:
            raise self.fail
        self.applied[instance_id] = (target_ip, list(traffic_rules), list(dns_rules))
        # the replicas each rule was last spread over ({} when none)
        self.shares[instance_id] = {k: tuple(v) for k, v in (shares or {}).items()}

    def remove_rules(self, instance_id):
        self._reachable("remove_rules")
        self.applied.pop(instance_id, None)
        self.shares.pop(instance_id, None)

    def rule_owners(self):
        # as a real backend: an instance whose set has no ACTIVE rule has
        # nothing applied (no chain, no DNS file)
        self._reachable("rule_owners")
        return {iid for iid, (_, traffic, dns) in self.applied.items()
                if any(r.active for r in [*traffic, *dns])}


def broken(what: str = "injected failure") -> Exception:
    return BackendError(what)
