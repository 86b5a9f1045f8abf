"""One lab per implementation of the MEPM contract (mecorch/mepm/contract.py)
for the MEPM conformance suite.

Behind both is the same host engine: a host-level Orchestrator with its own
state directory and host id, on the in-memory drivers (CarryingCompute, a
FakeCompute that carries data, for the CIM; FakeCompute for the VIM;
FakeMep). The local lab reaches it in process (LocalMepm);
the remote lab through an API server of role mepm on an ephemeral loopback
port (RemoteMepm over HTTP). A lab knows:

- `mepm`            the implementation under test
- `orch`, `cim`     the host engine and its container driver, to look at
                    (and to hold a step of) what the host really did
- `package()`       the MEO's AppPkgInfo of a package and its zip
- `unreachable()`   a Mepm of the same host that cannot reach it (only the
                    remote lab: in process there is no link to lose)
- `teardown()`      stop the server, close the engine
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import threading
import time
import uuid
from pathlib import Path

import yaml

from support.fakes import CarryingCompute, FakeCompute, FakeMep
from mecorch.kernel import config
from mecorch.kernel.states import DeploymentType
from mecorch.mepm.local import LocalMepm
from mecorch.mepm.orchestrator import Orchestrator
from support.corelab import CONTAINER_APPD, fake_docker_tar, make_package


class Lab:
    name = ""
    link = False                # calls cross a link that can break

    def __init__(self, uid: str, tmp: Path):
        self.uid, self.tmp = uid, tmp
        self.host_id = f"mc-{uid}"

    def make(self):
        cfg = config.load()
        cfg["state_dir"] = str(self.tmp / "state")
        cfg["hosts"][0]["id"] = self.host_id
        cfg["hosts"][0]["cim"]["state_dir"] = str(self.tmp / "state/cim")
        self.orch = Orchestrator(cfg)
        host = self.orch.inventory.get(self.host_id)
        self.cim = CarryingCompute(DeploymentType.CONTAINER)
        host.attach("cim", self.cim)
        host.attach("vim", FakeCompute(DeploymentType.VM))
        host.attach("mep", FakeMep())
        self.start()
        self.mepm = self.connect(self.host_id)
        return self.mepm

    def start(self):
        """Make the host reachable the way this implementation reaches it."""

    def connect(self, host_id: str):
        """A Mepm of `host_id` on this lab's host engine."""
        raise NotImplementedError

    def package(self, **appd_changes) -> tuple[dict, str]:
        """The MEO's AppPkgInfo (the fields a host copy is made from) and
        the path of its zip, as the MEO keeps them."""
        appd = {**yaml.safe_load(CONTAINER_APPD.read_text()), **appd_changes}
        z = make_package(self.tmp, CONTAINER_APPD, fake_docker_tar(), **appd_changes)
        # each package its own MEO id: a host's copy takes it
        return {"id": f"meo-pkg-{self.uid}-{uuid.uuid4().hex[:8]}", "appDId": appd["appDId"],
                "appPkgName": appd["appName"], "appPkgVersion": str(appd["appDVersion"]),
                "appDVersion": str(appd["appDVersion"]),
                "appSoftwareVersion": str(appd["appSoftVersion"]),
                "checksum": {"algorithm": "SHA-256",
                             "hash": hashlib.sha256(z.read_bytes()).hexdigest()}}, str(z)

    def teardown(self):
        if getattr(self, "mepm", None) is not None:
            self.mepm.close()
        if getattr(self, "orch", None) is not None:
            self.orch.close()


class LocalLab(Lab):
    name = "local"

    def connect(self, host_id):
        return LocalMepm(self.orch, host_id)


class RemoteLab(Lab):
    name = "remote"
    link = True

    def start(self):
        from mecorch.api import make_server
        self.server = make_server(self.orch, "127.0.0.1:0", "mepm")
        # its connections, to cut the kept-alive ones too when it goes away
        self.accepted, accept = [], self.server.get_request

        def get_request():
            conn, address = accept()
            self.accepted.append(conn)
            return conn, address
        self.server.get_request = get_request
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def connect(self, host_id):
        from mecorch.mepm.remote import RemoteMepm
        return RemoteMepm(host_id, self.url, timeout_s=5)

    def unreachable(self):
        """The MEPM gone: its port closed and its connections cut (the
        kept-alive one of `mepm` included); the same URL, nothing there."""
        self.stop_server()
        return self.mepm

    def stop_server(self):
        if getattr(self, "server", None) is not None:
            self.server.shutdown()
            self.server.server_close()
            self.thread.join(5)
            for conn in self.accepted:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
            self.server = None

    def teardown(self):
        self.stop_server()
        super().teardown()


LABS = {"local": LocalLab, "remote": RemoteLab}


def wait_op(mepm, op_id: str, timeout_s: float = 10) -> dict:
    """The host's op occurrence once it ended (or as it is at `timeout_s`)."""
    deadline = time.monotonic() + timeout_s
    while True:
        op = mepm.get_op(op_id)
        if op["operationState"] in ("COMPLETED", "FAILED", "ROLLED_BACK") \
                or time.monotonic() > deadline:
            return op
        time.sleep(0.01)
