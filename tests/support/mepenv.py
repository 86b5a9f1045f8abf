"""The real API with in-memory drivers shaped for MEP rules (Env), and the
traffic/DNS rule bodies, descriptors and refusals the hostile MEP tests
send. (Was part of test_hostile_mep.)"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import tarfile
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

REPO = Path(__file__).resolve().parents[2]
CONTAINER_APPD = REPO / "examples/sample-container-app/Definitions/appd.yaml"
VM_APPD = REPO / "examples/sample-vm-app/Definitions/appd.yaml"
INST = "/app_lcm/v1/app_instances"
PKGS = "/app_pkgm/v1/app_packages"
MP1 = "/mec_app_support/v1/applications"
SERVICE = "10.90.0.0/24"          # the default host's service range
HOST = [{"hostId": {"id": "default"}}]


def traffic(vip="10.90.0.10", port="80", rule_id="sample-http-vip", **flt) -> dict:
    f = {"dstAddress": [vip] if vip else None, "dstPort": [port] if port else None,
         "protocol": ["TCP"], **flt}
    return {"trafficRuleId": rule_id, "filterType": "FLOW", "priority": 1,
            "trafficFilter": [{k: v for k, v in f.items() if v is not None}],
            "action": "FORWARD_DECAPSULATED", "state": "ACTIVE",
            "dstInterface": {"interfaceType": "IP"}}


def dns(name="sample-http.mec.local", ip="10.90.0.10", rule_id="sample-http-dns") -> dict:
    return {"dnsRuleId": rule_id, "domainName": name, "ipAddressType": "IP_V4",
            "ipAddress": ip, "state": "ACTIVE"}


def descriptor(rule: dict) -> dict:
    return {k: v for k, v in rule.items() if k != "state"}


def _image(appd_path: Path) -> bytes:
    if appd_path != CONTAINER_APPD:
        return b"QFI\xfb" + b"\0" * 508
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("manifest.json")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"{}"))
    return buf.getvalue()


class Env:
    def __init__(self, tmp: Path):
        cfg = config.load()
        cfg["state_dir"] = str(tmp / "state")
        cfg["hosts"][0]["mep"]["dns_domain"] = "mec.local"
        cfg["hosts"][0]["mep"]["service_cidr"] = SERVICE
        self.orch = Orchestrator(cfg)
        host = self.orch.inventory.get("default")
        self.cim, self.vim, self.mep = (FakeCompute(DeploymentType.CONTAINER),
                                        FakeCompute(DeploymentType.VM), FakeMep())
        host.attach("cim", self.cim)
        host.attach("vim", self.vim)
        host.attach("mep", self.mep)
        self.server = make_server(self.orch, "127.0.0.1:0")
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        self.c = Client(f"http://127.0.0.1:{self.server.server_address[1]}", token="")
        self.tmp = tmp
        for appd in (CONTAINER_APPD, VM_APPD):
            self.onboard(appd)

    def onboard(self, appd_path: Path, appd: dict | None = None) -> None:
        """Onboard the AppD at `appd_path` (or `appd` in its place, with the
        image that path's app has)."""
        if appd is None:
            # the samples as they were, with a fixed service address each
            # (the ledger's refusals are about fixed addresses; the samples
            # now ask their host for one: test_service_addresses.py)
            appd = yaml.safe_load(appd_path.read_text())
            vip = "10.90.0.10" if appd_path == CONTAINER_APPD else "10.90.0.11"
            appd["appTrafficRule"][0]["trafficFilter"][0]["dstAddress"] = [vip]
            appd["appDNSRule"][0]["ipAddress"] = vip
        src = Path(tempfile.mkdtemp(dir=self.tmp))
        sw = appd["swImageDescriptor"]["swImage"]
        (src / sw).parent.mkdir(parents=True)
        (src / sw).write_bytes(_image(appd_path))
        (src / "Definitions").mkdir()
        (src / "Definitions/appd.yaml").write_text(yaml.safe_dump(appd))
        zpath = build_package(src, src.with_suffix(".zip"))
        self.c.post(PKGS, {"appPkgName": appd["appDId"], "appPkgVersion": "1",
                           "appPkgPath": str(zpath),
                           "checksum": {"algorithm": "SHA-256",
                                        "hash": hashlib.sha256(zpath.read_bytes()).hexdigest()}})

    def create(self, app_d_id="sample-http") -> str:
        return self.c.post(INST, {"appDId": app_d_id})[0]["id"]

    def instantiate(self, iid: str, **body) -> dict:
        return self.c.post(f"{INST}/{iid}/instantiate", {"selectedMECHostInfo": HOST, **body})[0]

    def deploy(self, app_d_id="sample-http", **body) -> str:
        iid = self.create(app_d_id)
        op = self.c.wait_op(self.instantiate(iid, **body), timeout=10)
        assert op["operationState"] == "COMPLETED", op.get("error")
        return iid

    def state(self) -> tuple:
        """What a refusal must not change: the MEP's applied rules and the
        store's rule sets."""
        return (copy.deepcopy(self.mep.applied),
                json.dumps(self.orch.store.list("rules"), sort_keys=True))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.orch.close()


def refused(fn, *args, **kw) -> ApiError:
    with pytest.raises(ApiError) as info:
        fn(*args, **kw)
    return info.value
