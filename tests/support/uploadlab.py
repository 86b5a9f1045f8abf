"""The real API with in-memory drivers for package uploads (Lab) and a zip
of a built package. (Was part of test_package_upload.)"""

from __future__ import annotations

import hashlib
import threading

import pytest

from support.fakes import FakeCompute, FakeMep
from mecorch.kernel import config
from mecorch.api import make_server
from mecorch.kernel.client import Client
from mecorch.mepm.orchestrator import Orchestrator
from mecorch.kernel.states import DeploymentType
from support.corelab import CONTAINER_APPD, fake_docker_tar, make_package

class Lab:
    """An orchestrator with fake drivers behind a real API server; `restart`
    makes a new one on the same state directory."""

    def __init__(self, tmp, max_package_bytes=None):
        self.tmp = tmp
        self.max_package_bytes = max_package_bytes
        self.start()

    def start(self):
        cfg = config.load()
        cfg["state_dir"] = str(self.tmp / "state")
        if self.max_package_bytes:
            cfg["orchestrator"]["max_package_bytes"] = self.max_package_bytes
        self.orch = Orchestrator(cfg)
        host = self.orch.inventory.get("default")
        self.cim = FakeCompute(DeploymentType.CONTAINER)
        host.attach("cim", self.cim)
        host.attach("vim", FakeCompute(DeploymentType.VM))
        host.attach("mep", FakeMep())
        self.orch.recover()
        self.server = make_server(self.orch, "127.0.0.1:0")
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        self.port = self.server.server_address[1]
        self.c = Client(f"http://127.0.0.1:{self.port}", token="")

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.orch.close()

    def restart(self):
        self.stop()
        self.start()


@pytest.fixture
def lab(tmp_path):
    lab = Lab(tmp_path)
    yield lab
    lab.stop()


def zip_package(lab) -> tuple[bytes, dict]:
    zpath = make_package(lab.tmp, CONTAINER_APPD, fake_docker_tar())
    data = zpath.read_bytes()
    body = {"appPkgName": "oss-pkg", "appPkgVersion": "1.0", "userDefinedData": {"by": "oss"},
            "checksum": {"algorithm": "SHA-256", "hash": hashlib.sha256(data).hexdigest()}}
    return data, body
