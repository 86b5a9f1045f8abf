"""An MEO over in-process MEPMs (LocalMepm: the host engine's own data
verbs) whose fake containers carry their volumes' "data"
(`fakes.CarryingCompute`): `movable_system`, for the core tests of what
moves instances (the drain). It proves the MEO's logic only; the
real-backend tests prove the carriers."""

from __future__ import annotations

from contextlib import contextmanager

from mecorch.kernel import config
from mecorch.kernel.errors import BackendUnavailable
from mecorch.kernel.states import DeploymentType
from mecorch.meo.orchestrator import MeoOrchestrator
from mecorch.mepm.orchestrator import Orchestrator
from support.fakes import CarryingCompute, FakeMep, LiveCompute
from support.meolab import FlakyMepm, served

# a named volume for the package (onboard(..., virtualStorageDescriptor=VOLUME))
VOLUME = [{"id": "www", "typeOfStorage": "BLOCK", "sizeOfStorage": 1}]


class MovableMepm(FlakyMepm):
    """A FlakyMepm (LocalMepm: the host engine's own data verbs, over a
    CarryingCompute) that can be told to fail a verb (`fail[verb]`)."""

    def __init__(self, orch, host_id):
        super().__init__(orch, host_id)
        self.fail: dict[str, Exception] = {}

    def _check(self, verb: str) -> None:
        if self.down.is_set():
            raise BackendUnavailable(f"edge host {self.host_id!r}: link cut by the test")
        if verb in self.fail:
            raise self.fail[verb]

    def create_instance(self, body, key, instance_id=None):
        self._check("create_instance")
        return super().create_instance(body, key, instance_id)

    def export_data(self, instance_id, into):
        self._check("export_data")
        return super().export_data(instance_id, into)

    def import_data(self, instance_id, archive):
        self._check("import_data")
        return super().import_data(instance_id, archive)

    def live_source(self, instance_id):
        self._check("live_source")
        return super().live_source(instance_id)

    def prepare_incoming(self, instance_id, body, source):
        self._check("prepare_incoming")
        return super().prepare_incoming(instance_id, body, source)

    def migrate_out(self, instance_id, offer):
        self._check("migrate_out")
        return super().migrate_out(instance_id, offer)


# the guest range of the fakes' addresses (FakeCompute's 10.123.0.N)
LIVE_CIDR = "10.123.0.0/24"


def _host(tmp, hid: str, wire: dict, live_cidrs: dict):
    """An edge host with a carrying CIM (2 CPUs); "vm-..." hosts: a
    carrying VIM only (no container); "live-..." hosts: a VIM that moves
    running instances (LiveCompute, its backends' link `wire`), its guest
    range LIVE_CIDR or `live_cidrs[hid]` (None: no live endpoint)."""
    cfg = config.load()
    cfg["state_dir"] = str(tmp / hid)
    cfg["hosts"][0]["id"] = hid
    kind, manner = ("vim", DeploymentType.VM) if hid.startswith(("vm-", "live-")) \
        else ("cim", DeploymentType.CONTAINER)
    cfg["hosts"][0]["vim" if kind == "cim" else "cim"] = None
    orch = Orchestrator(cfg)
    if hid.startswith("live-"):
        cidr = live_cidrs.get(hid, LIVE_CIDR)
        compute = LiveCompute(manner, wire=wire, cpus=2, endpoint=None if cidr is None else
                              {"uri": f"fake+live://{hid}/system", "network_cidr": cidr})
    else:
        compute = CarryingCompute(manner, cpus=2)
    orch.inventory.get(hid).attach(kind, compute)
    orch.inventory.get(hid).attach("mep", FakeMep())
    return orch, compute


def movable_system(tmp, host_ids, live_cidrs: dict | None = None):
    """(the system the tests drive: `s.c`, `s.meo`, `s.hosts`, `s.cims`,
    `s.mepms` (MovableMepm); its server)."""
    hosts, cims, mepms, wire = {}, {}, {}, {}
    for hid in host_ids:
        hosts[hid], cims[hid] = _host(tmp, hid, wire, live_cidrs or {})
    cfg = config.load()
    cfg["state_dir"] = str(tmp / "meo")
    cfg["hosts"] = []
    cfg["meo"]["heartbeat_s"] = 0       # beats driven by the test
    meo = MeoOrchestrator(cfg)
    for hid, orch in hosts.items():
        mepms[hid] = MovableMepm(orch, hid)
        meo.registry.attach(mepms[hid])
    s, server = served(meo, hosts, tmp)
    s.mepms, s.cims = mepms, cims
    return s, server


@contextmanager
def movable(tmp, host_ids, live_cidrs: dict | None = None):
    """`movable_system`, closed at the end (its server, the MEO, the hosts)."""
    s, server = movable_system(tmp, host_ids, live_cidrs)
    try:
        yield s
    finally:
        server.shutdown()
        server.server_close()
        s.meo.close()
        for orch in s.hosts.values():
            orch.close()
