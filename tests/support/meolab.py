"""An MEO over several in-process MEPMs on in-memory drivers: the `system`
fixture, a served MEO, onboard and deploy through it. (Was part of
test_meo_core.)"""

from __future__ import annotations

import threading

import pytest

from support.fakes import FakeCompute, FakeMep
from mecorch.kernel import config
from mecorch.api import make_server
from mecorch.kernel.client import Client
from mecorch.kernel.errors import BackendUnavailable
from mecorch.meo.orchestrator import MeoOrchestrator
from mecorch.mepm.local import LocalMepm
from mecorch.mepm.orchestrator import Orchestrator
from mecorch.kernel.states import DeploymentType
from support.corelab import CONTAINER_APPD, fake_docker_tar, make_package

INST = "/app_lcm/v1/app_instances"
PKGS = "/app_pkgm/v1/app_packages"


class FlakyMepm(LocalMepm):
    """A LocalMepm whose link can be cut: every call raises
    BackendUnavailable while `down` is set (the host itself keeps running)."""

    def __init__(self, orch, host_id):
        super().__init__(orch, host_id)
        self.down = threading.Event()
        self.calls = 0

    def __getattribute__(self, name):
        attr = super().__getattribute__(name)
        if name in ("info", "ensure_package", "remove_package", "create_instance",
                    "instantiate", "terminate", "operate", "delete_instance", "get_instance",
                    "list_instances", "get_op", "ops_of", "rules", "logs", "health", "unfence",
                    "services"):
            def call(*a, **kw):
                if self.down.is_set():
                    raise BackendUnavailable(f"edge host {self.host_id!r}: link cut by the test")
                return attr(*a, **kw)
            return call
        return attr


def host(tmp, hid, vim=True, cpus=2):
    cfg = config.load()
    cfg["state_dir"] = str(tmp / hid)
    cfg["hosts"][0]["id"] = hid
    if not vim:
        cfg["hosts"][0]["vim"] = None
    orch = Orchestrator(cfg)
    host = orch.inventory.get(hid)
    cim = FakeCompute(DeploymentType.CONTAINER, cpus=cpus)
    host.attach("cim", cim)
    if vim:
        host.attach("vim", FakeCompute(DeploymentType.VM, cpus=cpus))
    host.attach("mep", FakeMep())
    return orch, cim


@pytest.fixture
def system(tmp_path):
    hosts, mepms = {}, {}
    for hid, vim, cpus in (("edge1", False, 1), ("edge2", True, 2), ("edge3", True, 2)):
        hosts[hid], _ = host(tmp_path, hid, vim, cpus)
    cfg = config.load()
    cfg["state_dir"] = str(tmp_path / "meo")
    cfg["hosts"] = []
    cfg["meo"]["heartbeat_s"] = 0       # beats driven by the test
    meo = MeoOrchestrator(cfg)
    for hid, orch in hosts.items():
        mepms[hid] = FlakyMepm(orch, hid)
        meo.registry.attach(mepms[hid])
    s, server = served(meo, hosts, tmp_path)
    s.mepms = mepms
    yield s
    server.shutdown()
    server.server_close()
    meo.close()
    for orch in hosts.values():
        orch.close()


def served(meo, hosts: dict, tmp):
    """The MEO's API on a loopback port: (the system the tests drive, its
    server)."""
    server = make_server(meo, "127.0.0.1:0", "meo")
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()

    class S:
        pass
    s = S()
    s.meo, s.hosts, s.tmp = meo, hosts, tmp
    s.c = Client(f"http://127.0.0.1:{server.server_address[1]}", token="")
    return s, server


def onboard(s, appd=CONTAINER_APPD, **changes):
    import hashlib
    image = fake_docker_tar() if appd == CONTAINER_APPD else b"QFI\xfb" + b"\0" * 508
    # no fixed service address or name: many instances of one app may run
    # on one host (the MEP refuses a second owner of an address: test_mep_*)
    changes.setdefault("appTrafficRule", [])
    changes.setdefault("appDNSRule", [])
    z = make_package(s.tmp, appd, image, **changes)
    return s.c.post(PKGS, {"appPkgName": "p", "appPkgVersion": "1", "appPkgPath": str(z),
                           "checksum": {"algorithm": "SHA-256",
                                        "hash": hashlib.sha256(z.read_bytes()).hexdigest()}})[0]


def deploy(s, app_d_id, **body):
    inst = s.c.post(INST, {"appDId": app_d_id})[0]
    op, _ = s.c.post(f"{INST}/{inst['id']}/instantiate", body)
    op = s.c.wait_op(op, timeout=20)
    return inst["id"], op
