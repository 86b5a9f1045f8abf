"""Each instance's own figures through the MEO: `app show` (GET of one
instance), the status page and the CLI at the MEO show the figures the
instance's host last read (mecorch.mepm.usage), with the time the host read
them, as of the MEO's last heartbeat of that host (the host reports each
instance's reading with its host info: `byInstance`). In-memory: an MEO
over in-process MEPMs (support.meolab) whose container driver makes its
own figures (support.fakes.MeteredCompute); the real backends' figures are
tests/backends/test_usage_*.py."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request

from mecorch.driverapi.model import ResourceUsage
from mecorch.kernel.states import DeploymentType
from support.fakes import MeteredCompute
from support.meolab import INST, deploy, onboard, system  # noqa: F401

MiB = 1 << 20


def figures(at: float, cpu_s: float, mem: int) -> ResourceUsage:
    return ResourceUsage(at=at, cpu_seconds=cpu_s, memory_bytes=mem, memory_limit_bytes=64 * MiB,
                         net_rx_bytes=1000, net_tx_bytes=2000, block_read_bytes=4096,
                         block_write_bytes=MiB)


def beat(s) -> None:
    for entry in s.meo.registry.entries():
        s.meo.registry.beat(entry)


def test_app_show_at_the_meo_carries_the_host_s_reading_with_its_time(system):  # noqa: F811
    s = system
    cim = MeteredCompute(DeploymentType.CONTAINER, cpus=2)
    s.hosts["edge2"].inventory.get("edge2").attach("cim", cim)
    pkg = onboard(s)
    iid, op = deploy(s, pkg["appDId"], deploymentType="CONTAINER",
                     selectedMECHostInfo=[{"hostId": {"id": "edge2"}}])
    assert op["operationState"] == "COMPLETED", op
    other, op = deploy(s, pkg["appDId"], deploymentType="CONTAINER",
                       selectedMECHostInfo=[{"hostId": {"id": "edge3"}}])
    assert op["operationState"] == "COMPLETED", op
    reader = s.hosts["edge2"].usage_reader
    beat(s)
    # the host has read nothing yet: absent, not zero
    assert "resourceUsage" not in s.c.get(f"{INST}/{iid}")

    t0 = time.time() - 10
    cim.figures[iid] = figures(t0, 2.0, 24 * MiB)
    reader.read_all()
    beat(s)
    first = s.c.get(f"{INST}/{iid}")["resourceUsage"]
    # the host's own view of it, field for field, with the host's read time
    assert first == s.hosts["edge2"].lcm.view(s.hosts["edge2"].lcm.get(iid))["resourceUsage"]
    assert first["time"]["seconds"] == int(t0) and first["cpuPercent"] is None
    assert first["memoryBytes"] == 24 * MiB and first["cpuSeconds"] == 2.0

    cim.figures[iid] = figures(t0 + 4, 3.0, 30 * MiB)      # 1 s of CPU in 4 s: 25 %
    reader.read_all()
    # as of the MEO's last heartbeat of the host: the earlier reading, its time
    assert s.c.get(f"{INST}/{iid}")["resourceUsage"] == first
    beat(s)
    now = s.c.get(f"{INST}/{iid}")["resourceUsage"]
    assert now["time"]["seconds"] == int(t0 + 4)
    assert now["cpuPercent"] == 25.0 and now["memoryBytes"] == 30 * MiB
    # edge3's host never read its instances: absent there too
    assert "resourceUsage" not in s.c.get(f"{INST}/{other}")
    # the host list keeps the sum, not each instance's reading
    hosts = {h["hostId"]: h for h in s.c.get("/mecorch/v1/hosts")}
    assert hosts["edge2"]["resourceUsage"]["memoryBytes"] == 30 * MiB
    assert "byInstance" not in hosts["edge2"]["resourceUsage"]

    # the MEO's status page and CLI show it as at an MEPM
    with urllib.request.urlopen(f"{s.c.base}/status", timeout=10) as r:
        page = r.read().decode()
    row = next(r for r in page.split("<tr") if f'data-instance="{iid}"' in r)
    assert "cpu 25 %, mem 30.0 MiB / 64.0 MiB" in row
    out = subprocess.run([sys.executable, "-m", "mecorch.cli", "--api", s.c.base, "app", "show",
                          iid], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "resourceUsage: cpu 25 %, memory 30.0 MiB / 64.0 MiB" in out.stdout, out.stdout

    # the host away: the last reading stays, with its own (older) time
    s.mepms["edge2"].down.set()
    for _ in range(s.meo.registry.unreachable_after):
        beat(s)
    away = s.c.get(f"{INST}/{iid}")
    assert away["observedState"] == "UNKNOWN" and away["hostState"] == "UNREACHABLE"
    assert away["resourceUsage"] == now
    s.mepms["edge2"].down.clear()
    beat(s)

    # terminated: no figures at the MEO, though the host's report of them
    # may still be the last heartbeat's
    op, _ = s.c.post(f"{INST}/{iid}/terminate", {"terminationType": "FORCEFUL"})
    assert s.c.wait_op(op, timeout=20)["operationState"] == "COMPLETED"
    assert "resourceUsage" not in s.c.get(f"{INST}/{iid}")


def test_each_reading_crosses_the_wire_with_the_host_info():
    """What a RemoteMepm reads of its host (HostInfo.from_dict of the JSON
    the host served) keeps each instance's reading; the MEO's entry finds
    one by the host's instance id, and none (None) for another."""
    from mecorch.meo.registry import HostEntry
    from mecorch.mepm.contract import HostInfo
    one = {"time": {"seconds": 5, "nanoSeconds": 0}, "cpuPercent": 1.5, "memoryBytes": MiB}
    info = HostInfo("edge9", usage={"cpuPercent": 1.5, "instances": 1, "unavailable": 0,
                                    "byInstance": {"i-1": one}})
    entry = HostEntry("edge9", None, "in-process",
                      info=HostInfo.from_dict(json.loads(json.dumps(info.to_dict()))))
    assert entry.instance_usage("i-1") == one
    assert entry.instance_usage("i-2") is None
    assert HostEntry("edge9", None, "in-process",
                     info=HostInfo.from_dict({"hostId": "edge9"})).instance_usage("i-1") is None


def test_new_figures_alone_ride_the_state_refresh_not_every_beat(system, monkeypatch):  # noqa: F811
    """The host's row for the other replicas (host_states) is written when
    its state changes, not when only its figures did (new at every usage
    round): they go with the next refresh (STATE_REFRESH_S)."""
    from mecorch.meo import registry as R
    s = system
    cim = MeteredCompute(DeploymentType.CONTAINER, cpus=2)
    s.hosts["edge2"].inventory.get("edge2").attach("cim", cim)
    pkg = onboard(s)
    iid, op = deploy(s, pkg["appDId"], deploymentType="CONTAINER",
                     selectedMECHostInfo=[{"hostId": {"id": "edge2"}}])
    assert op["operationState"] == "COMPLETED", op
    reader, entry = s.hosts["edge2"].usage_reader, s.meo.registry.get("edge2")

    def written() -> dict:
        return ((s.meo.store.get("host_states", "edge2")["info"] or {}).get("resourceUsage")
                or {}).get("byInstance") or {}
    cim.figures[iid] = figures(time.time() - 5, 1.0, 10 * MiB)
    reader.read_all()
    s.meo.registry._written.pop("edge2", None)      # as if never written
    s.meo.registry.beat(entry)
    assert written()[iid]["memoryBytes"] == 10 * MiB
    cim.figures[iid] = figures(time.time(), 2.0, 20 * MiB)
    reader.read_all()
    s.meo.registry.beat(entry)
    assert written()[iid]["memoryBytes"] == 10 * MiB       # figures alone: not written
    assert s.c.get(f"{INST}/{iid}")["resourceUsage"]["memoryBytes"] == 20 * MiB   # leader: new
    monkeypatch.setattr(R, "STATE_REFRESH_S", 0.0)
    s.meo.registry.beat(entry)
    assert written()[iid]["memoryBytes"] == 20 * MiB       # with the refresh
    # a replica that does not lead reads the row: the same reading
    follower = R.HostEntry("edge2", None, "config")
    follower.take_state(s.meo.store.get("host_states", "edge2"))
    assert follower.instance_usage(iid) == s.c.get(f"{INST}/{iid}")["resourceUsage"]
