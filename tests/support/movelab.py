"""An MEO over in-process MEPMs (LocalMepm: the host engine's own data
verbs) whose fake containers carry their volumes' "data"
(`fakes.CarryingCompute`): `movable_system`, for the core tests of what
moves instances (the drain). It proves the MEO's logic only; the
real-backend tests prove the carriers."""

from __future__ import annotations

from mecorch.kernel import config
from mecorch.kernel.states import DeploymentType
from mecorch.meo.orchestrator import MeoOrchestrator
from mecorch.mepm.orchestrator import Orchestrator
from support.fakes import CarryingCompute, FakeMep
from support.meolab import FlakyMepm, served

# a named volume for the package (onboard(..., virtualStorageDescriptor=VOLUME))
VOLUME = [{"id": "www", "typeOfStorage": "BLOCK", "sizeOfStorage": 1}]


def movable_system(tmp, host_ids):
    """(the system the tests drive: `s.c`, `s.meo`, `s.hosts`, `s.cims`,
    `s.mepms`; its server). Each host has a carrying CIM (2 CPUs), no VIM."""
    hosts, cims, mepms = {}, {}, {}
    for hid in host_ids:
        cfg = config.load()
        cfg["state_dir"] = str(tmp / hid)
        cfg["hosts"][0]["id"] = hid
        cfg["hosts"][0]["vim"] = None
        hosts[hid] = Orchestrator(cfg)
        cims[hid] = CarryingCompute(DeploymentType.CONTAINER, cpus=2)
        hosts[hid].inventory.get(hid).attach("cim", cims[hid])
        hosts[hid].inventory.get(hid).attach("mep", FakeMep())
    cfg = config.load()
    cfg["state_dir"] = str(tmp / "meo")
    cfg["hosts"] = []
    cfg["meo"]["heartbeat_s"] = 0       # beats driven by the test
    meo = MeoOrchestrator(cfg)
    for hid, orch in hosts.items():
        mepms[hid] = FlakyMepm(orch, hid)
        meo.registry.attach(mepms[hid])
    s, server = served(meo, hosts, tmp)
    s.mepms, s.cims = mepms, cims
    return s, server
