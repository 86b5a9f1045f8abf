"""A lab with a dual-format AppD (container and VM) on in-memory drivers,
one of them with acceleration: the `lab` fixture, the dual package,
onboarding and the problem details. (Was part of test_decision_dual.)"""

from __future__ import annotations

import hashlib
import tempfile
import threading
from pathlib import Path

import pytest
import yaml

from support.fakes import FakeCompute, FakeMep
from mecorch.kernel import config
from mecorch.api import make_server
from mecorch.kernel.client import ApiError, Client
from mecorch.mepm.orchestrator import Orchestrator
from mecorch.package import build_package
from mecorch.kernel.states import DeploymentType
from support.corelab import PKGS, fake_docker_tar

VM, CONTAINER = DeploymentType.VM, DeploymentType.CONTAINER
REPO = Path(__file__).resolve().parents[2]
DUAL_APPD = REPO / "examples/sample-dual-app/Definitions/appd.yaml"
QCOW2 = b"QFI\xfb" + b"\0" * 508


# ---------------------------------------------------------------- through the API (fakes)
class AccelFake(FakeCompute):
    """A fake VIM reporting its acceleration, as the libvirt VIM does."""

    def __init__(self, accel: str, **kw):
        super().__init__(VM, **kw)
        self.accel = accel

    def capabilities(self):
        return dataclasses_replace(super().capabilities(), hardware_accel=self.accel)


def dataclasses_replace(obj, **kw):
    import dataclasses
    return dataclasses.replace(obj, **kw)


def dual_package(tmp: Path, **appd_changes) -> Path:
    appd = yaml.safe_load(DUAL_APPD.read_text())
    appd.update(appd_changes)
    src = Path(tempfile.mkdtemp(dir=tmp, prefix="src-dual-"))
    (src / "Artifacts").mkdir(parents=True)
    (src / "Artifacts/sample-http.tar").write_bytes(fake_docker_tar())
    (src / "Artifacts/sample-vm.qcow2").write_bytes(QCOW2)
    (src / "Definitions").mkdir()
    (src / "Definitions/appd.yaml").write_text(yaml.safe_dump(appd))
    return build_package(src, src.with_suffix(".zip"))


@pytest.fixture
def lab(tmp_path):
    """The real core and REST API with two hosts: edge-a has only a CIM,
    edge-b a CIM and a VIM (TCG); fake drivers."""
    cfg = config.load()
    cfg["state_dir"] = str(tmp_path / "state")
    # each MEP with a service range: the sample asks its host for an address
    mep = {"driver": "fake", "service_cidr": "10.90.0.0/24"}
    cfg["hosts"] = [{"id": "edge-a", "cim": {"driver": "fake", "registry": "127.0.0.1:5000"}, "mep": mep},
                    {"id": "edge-b", "cim": {"driver": "fake", "registry": "127.0.0.1:5000"}, "vim": {"driver": "fake"},
                     "mep": mep}]
    orch = Orchestrator(cfg)
    fakes = {"a-cim": FakeCompute(CONTAINER), "b-cim": FakeCompute(CONTAINER),
             "b-vim": AccelFake("tcg")}
    orch.inventory.get("edge-a").attach("cim", fakes["a-cim"])
    orch.inventory.get("edge-b").attach("cim", fakes["b-cim"])
    orch.inventory.get("edge-b").attach("vim", fakes["b-vim"])
    for h in ("edge-a", "edge-b"):
        orch.inventory.get(h).attach("mep", FakeMep())
    server = make_server(orch, "127.0.0.1:0")
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True)
    t.start()

    class Lab:
        pass
    e = Lab()
    e.orch, e.fakes, e.tmp, e.cfg = orch, fakes, tmp_path, cfg
    e.c = Client(f"http://127.0.0.1:{server.server_address[1]}", token="")
    yield e
    server.shutdown()
    server.server_close()
    orch.close()


def onboard(e, zpath: Path, **extra) -> dict:
    return e.c.post(PKGS, {"appPkgName": "dual", "appPkgVersion": "1",
                           "appPkgPath": str(zpath), **extra,
                           "checksum": {"algorithm": "SHA-256",
                                        "hash": hashlib.sha256(zpath.read_bytes()).hexdigest()}}
                    )[0]


def problem(fn, *args, **kw) -> ApiError:
    with pytest.raises(ApiError) as e:
        fn(*args, **kw)
    return e.value
