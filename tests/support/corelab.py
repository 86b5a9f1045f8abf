"""The real REST API and core (Orchestrator) with in-memory drivers: the
`env` fixture, the API paths, the example AppDs and descriptors, a package
built around a fake image, and the create/instantiate/terminate calls.
(Was part of test_core_orchestration.)"""

from __future__ import annotations

import hashlib
import io
import tarfile
import tempfile
import threading
import time
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

REPO = Path(__file__).resolve().parents[2]
CONTAINER_APPD = REPO / "examples/sample-container-app/Definitions/appd.yaml"
VM_APPD = REPO / "examples/sample-vm-app/Definitions/appd.yaml"
POD = (REPO / "examples/orchestration/container-pod.yaml").read_text()
TOSCA = (REPO / "examples/orchestration/vm-tosca.yaml").read_text()
INST = "/app_lcm/v1/app_instances"
PKGS = "/app_pkgm/v1/app_packages"


def fake_docker_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        data = b"{}"
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def make_package(tmp: Path, appd_path: Path, image_bytes: bytes, **appd_changes) -> Path:
    """A real package zip built by `build_package` around a tiny fake image."""
    appd = yaml.safe_load(appd_path.read_text())
    appd.update(appd_changes)
    src = Path(tempfile.mkdtemp(dir=tmp, prefix=f"src-{appd['appDId']}-"))
    (src / "Definitions").mkdir(parents=True)
    sw = appd["swImageDescriptor"]["swImage"]
    (src / sw).parent.mkdir(parents=True, exist_ok=True)
    (src / sw).write_bytes(image_bytes)
    appd["swImageDescriptor"].pop("checksum", None)
    (src / "Definitions" / appd_path.name).write_text(yaml.safe_dump(appd))
    return build_package(src, src.with_suffix(".zip"))


@pytest.fixture
def env(tmp_path):
    yield from node_env(tmp_path)


def node_env(tmp_path, mep_keys: dict | None = None):
    """The `env` fixture's single node, served (a generator: one Env, then
    the shutdown); `mep_keys`: keys of its MEP section set (the allowed DNS
    domains...)."""
    cfg = config.load()
    cfg["state_dir"] = str(tmp_path / "state")
    cfg["hosts"][0]["cim"]["state_dir"] = str(tmp_path / "state/cim")
    cfg["hosts"][0]["mep"].update(mep_keys or {})
    orch = Orchestrator(cfg)
    host = orch.inventory.get("default")
    cim, vim, mep = FakeCompute(DeploymentType.CONTAINER), FakeCompute(DeploymentType.VM), FakeMep()
    host.attach("cim", cim)
    host.attach("vim", vim)
    host.attach("mep", mep)
    server, client = serve(orch)

    class Env:
        pass
    e = Env()
    e.orch, e.cim, e.vim, e.mep, e.c, e.tmp = orch, cim, vim, mep, client, tmp_path
    yield e
    server.shutdown()
    server.server_close()
    orch.close()


def serve(orch, role: str | None = None):
    """The API of `orch` (its role's router; the default: the single node)
    on a free loopback port, in a thread: (server, client)."""
    server = make_server(orch, "127.0.0.1:0", role) if role else make_server(orch, "127.0.0.1:0")
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    return server, Client(f"http://127.0.0.1:{server.server_address[1]}", token="")


def onboard_with(c: Client, tmp: Path, appd_path=CONTAINER_APPD, **changes) -> dict:
    """A package of the sample AppD (with `changes`) onboarded through `c`."""
    image = fake_docker_tar() if appd_path == CONTAINER_APPD else b"QFI\xfb" + b"\0" * 508
    zpath = make_package(tmp, appd_path, image, **changes)
    body = {"appPkgName": "p", "appPkgVersion": "1", "appPkgPath": str(zpath),
            "checksum": {"algorithm": "SHA-256",
                         "hash": hashlib.sha256(zpath.read_bytes()).hexdigest()}}
    return c.post(PKGS, body)[0]


def deploy(c: Client, app_d_id: str, **body) -> tuple[str, dict]:
    """A new instance of `app_d_id` instantiated with `body`: (id, its op, ended)."""
    inst = c.post(INST, {"appDId": app_d_id})[0]
    op, _ = c.post(f"{INST}/{inst['id']}/instantiate", body)
    return inst["id"], c.wait_op(op, timeout=20)


def onboard(e, appd_path=CONTAINER_APPD, **changes) -> dict:
    return onboard_with(e.c, e.tmp, appd_path, **changes)


def create(e, app_d_id="sample-http") -> dict:
    return e.c.post(INST, {"appDId": app_d_id})[0]


def instantiate(e, iid, **body) -> dict:
    body.setdefault("selectedMECHostInfo", [{"hostId": {"id": "default"}}])
    op, headers = e.c.post(f"{INST}/{iid}/instantiate", body)
    assert headers["Location"] == op["_links"]["self"]["href"]
    return e.c.wait_op(op, timeout=10)


def terminate(e, iid, **body) -> dict:
    body.setdefault("terminationType", "FORCEFUL")
    op, _ = e.c.post(f"{INST}/{iid}/terminate", body)
    return e.c.wait_op(op, timeout=20)


def problem(fn, *args, **kw) -> ApiError:
    with pytest.raises(ApiError) as info:
        fn(*args, **kw)
    return info.value


def until(check, limit_s: float = 5.0, what: str = "") -> None:
    """Poll `check` every 10 ms until it is true; fail after `limit_s`."""
    t0 = time.monotonic()
    while not check():
        assert time.monotonic() - t0 < limit_s, f"not within {limit_s}s: {what}"
        time.sleep(0.01)


def crash(e, iid: str, code: int | None = 137) -> None:
    """`crash_on` the env's single node."""
    crash_on(e.orch, e.cim, iid, code)


def crash_on(orch, cim, iid: str, code: int | None = 137) -> None:
    """The runtime of `iid` (a host's instance id) dies; a round of `orch`
    sees it (the fakes have no events). A round that finds the instance
    held (the supervisor finishing its last restart) leaves it to the next
    one, as on a real host: rounds until the death is recorded (stopped, or
    counted and maybe restarted already)."""
    def view() -> dict:
        return orch.lcm.view(orch.store.get("instances", iid))
    before = view().get("lastExitTime")
    cim.crash(iid, code)

    def seen() -> bool:
        orch.reconciler.run_once()
        v = view()
        return v.get("observedState") != "RUNNING" or v.get("lastExitTime") != before
    until(seen, what="the death recorded by a round")
