"""The real HTTP API in this process with in-memory drivers (Served), plain
HTTP calls to it, onboarding through it. (Was part of test_access.) A
`mecorch serve` process is tests/support/lab.py's `Serve`; `free_port` here
is the lab's; `stop` is a subprocess's stop for test_hostile_yaml's serve."""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from support.fakes import FakeCompute, FakeMep
from mecorch.kernel import config as mconfig
from mecorch.api import make_server
from mecorch.mepm.orchestrator import Orchestrator
from mecorch.kernel.states import DeploymentType
from support.corelab import INST, onboard
from support import lab

REPO = Path(__file__).resolve().parents[2]

HOST = [{"hostId": {"id": "default"}}]


# ---------------------------------------------------------------- helpers
def call(base: str, method: str, path: str, body=None, token: str | None = None,
         headers: dict | None = None) -> tuple[int, dict, dict]:
    """(status, JSON body or {}, headers) of one request."""
    data = json.dumps(body).encode() if body is not None else None
    hdrs = {"Content-Type": "application/json"} if data is not None else {}
    if token is not None:
        hdrs["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={**hdrs, **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            raw, status, h = r.read(), r.status, dict(r.headers)
    except urllib.error.HTTPError as e:
        raw, status, h = e.read(), e.code, dict(e.headers)
    body = json.loads(raw) if raw and "json" in h.get("Content-Type", "") else {}
    if status >= 400:
        assert h["Content-Type"] == "application/problem+json", (status, raw[:200])
        assert body["status"] == status and body["detail"], body
    return status, body, h


class Served:
    """The real HTTP API with in-memory drivers (as tests/support/corelab.py's
    `env`), optionally with operator tokens."""

    def __init__(self, tmp: Path, tokens: list[str] | None = None):
        cfg = mconfig.load()
        cfg["state_dir"] = str(tmp / "state")
        if tokens:
            (tmp / "tokens").write_text("\n".join(tokens) + "\n")
            cfg["api"]["token_file"] = str(tmp / "tokens")
        self.orch = Orchestrator(cfg)
        host = self.orch.inventory.get("default")
        self.cim, self.vim = FakeCompute(DeploymentType.CONTAINER), FakeCompute(DeploymentType.VM)
        self.mep = FakeMep()
        host.attach("cim", self.cim)
        host.attach("vim", self.vim)
        host.attach("mep", self.mep)
        self.server = make_server(self.orch, "127.0.0.1:0")
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.tmp = tmp
        self.operator = tokens[0] if tokens else None

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.orch.close()

    def __call__(self, method, path, body=None, token=None, **kw):
        return call(self.base, method, path, body, token, **kw)

    def wait(self, op: dict, token=None) -> dict:
        for _ in range(200):
            _, cur, _ = self("GET", op["_links"]["self"]["href"], token=token)
            if cur["operationState"] in ("COMPLETED", "FAILED"):
                return cur
            time.sleep(0.05)
        raise AssertionError(f"op {op['id']} did not end")

    def deployed_instance(self, token=None) -> tuple[str, str]:
        """A new INSTANTIATED container instance: (id, its Mp1 token as the
        app got it in its environment)."""
        status, inst, _ = self("POST", INST, {"appDId": "sample-http"}, token)
        assert status == 201, inst
        # the AppD's traffic rule with a service address of this instance's
        # own: one address is steered by one instance only
        self.deployed = getattr(self, "deployed", 0) + 1
        rule = yaml.safe_load((REPO / "examples/sample-container-app/Definitions/appd.yaml")
                              .read_text())["appTrafficRule"][0]
        rule["trafficFilter"][0]["dstAddress"] = [f"10.90.0.{100 + self.deployed}"]
        status, op, _ = self("POST", f"{INST}/{inst['id']}/instantiate",
                             {"selectedMECHostInfo": HOST, "appTrafficRule": [rule]}, token)
        assert status == 202, op
        assert self.wait(op, token)["operationState"] == "COMPLETED"
        env = self.cim.instances[inst["id"]]["request"].env
        assert env["MEC_APP_INSTANCE_ID"] == inst["id"]
        assert env["MEC_MP1_URL"] == "http://127.0.0.1:8080/mec_app_support/v1"
        return inst["id"], env["MEC_APP_TOKEN"]


def onboard_via(s: Served, tmp: Path) -> None:
    """Onboard the sample container package (through the real client)."""
    from mecorch.kernel.client import Client

    class E:
        pass
    e = E()
    e.tmp, e.c = tmp, Client(s.base, token=s.operator or "")
    onboard(e)


free_port = lab.free_port          # the lab's (test_hostile_yaml imports it from here)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
