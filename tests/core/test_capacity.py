"""The one capacity model (mecorch.spec.capacity): pure rules, and every
level that shows or uses a host's room agreeing on it with a deploy in
flight: the single node's reservation, the MEPM's host report
(`/mecorch/v1/hosts`, which `host list` prints), the MEO's placement over
that report, the manner policy's host facts, and the status page. In-memory
drivers stand in for the backends: the subject is mecorch's arithmetic."""

from __future__ import annotations

import threading
import time

import pytest

from support.fakes import FakeCompute
from mecorch.api.status import Health, hosts_view
from mecorch.driverapi.model import HostCapacity, ResourceRequest
from mecorch.kernel import config
from mecorch.kernel.errors import CapacityExceeded
from mecorch.kernel.states import DeploymentType
from mecorch.meo.registry import candidate
from mecorch.mepm import manner_policy
from mecorch.mepm.contract import HostInfo
from mecorch.mepm.inventory import Inventory
from mecorch.spec.capacity import NOTHING, Need, Room, accel_refusal, shared, shortfall
from mecorch.spec.decision import Decision
from mecorch.spec.plan import Plan
from support.corelab import INST, create, env, onboard  # noqa: F401 (env: fixture)

C = DeploymentType.CONTAINER


# ---------------------------------------------------------------- pure rules
def test_room_counts_instances_and_deploys_in_flight_and_disk_in_flight_only():
    backend = HostCapacity(4, 0, 8192, 0, 100.0, 30.0)      # 30 GB already used on disk
    room = Room.of(backend, 2.0, used=Need(3, 2048, 20.0), inflight=Need(1, 512, 5.0))
    # vCPU: 4 cores x 2 - (3 + 1); memory: 8192 - (2048 + 512)
    assert (room.free_vcpu, room.free_memory_mb) == (4.0, 5632)
    # disk: the backend's free space (a deployed instance's disk is in its
    # "used" already) less what the deploy in flight will take
    assert room.free_disk_gb == 65.0
    assert room.why_not(Need(4, 5632, 65.0)) is None
    assert room.why_not(Need(4.5, 1, 1)) == "vCPU 4.5 > 4 free"
    assert room.why_not(Need(1, 6000, 1)) == "memory 6000 MB > 5632 MB free"
    assert room.why_not(Need(1, 1, 70)) == "disk 70 GB > 65.0 GB free"
    assert room.reserving(Need(1, 100, 5.0)).why_not(Need(3.5, 1, 1)) == "vCPU 3.5 > 3 free"


def test_a_host_running_both_manners_has_the_least_room_of_its_backends():
    a = Room(8, 4096, 100, 2, 1024, 10)
    b = Room(4, 8192, 50, 2, 1024, 10)
    assert shared([a, b]) == (2, 3072, 40)
    assert shared([Room(1, 100, 1, 3, 200, 5)]) == (0.0, 0, 0.0)     # never below zero
    assert shared([]) == (0.0, 0, 0.0)


def test_one_wording_for_each_refusal():
    assert shortfall(Need(1, 1, 1), 0.5, 10, 10) == "vCPU 1 > 0.5 free"
    assert accel_refusal("kvm") is None
    assert accel_refusal("tcg") == ("its VIM is TCG-only and the AppD asks for hardware "
                                    "acceleration")
    assert "not probed for KVM yet" in accel_refusal("")


# ---------------------------------------------------------------- every level agrees
def _wait(pred, what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_every_level_agrees_on_free_room_with_a_deploy_in_flight(env):  # noqa: F811
    onboard(env)
    done = create(env)["id"]
    op, _ = env.c.post(f"{INST}/{done}/instantiate", {})
    env.c.wait_op(op, timeout=10)
    env.cim.deploy_gate = threading.Event()
    pending = create(env)["id"]
    try:
        env.c.post(f"{INST}/{pending}/instantiate", {"appTrafficRule": [], "appDNSRule": []})
        _wait(lambda: env.cim.calls.count("deploy") == 2, "the second deploy to start")
        orch = env.orch
        used = orch.lcm.used_by_host()
        need = Need(**orch.store.get("instances", done)["_need"])
        backend = env.cim.capacity()
        ratio = orch.inventory.cpu_allocation_ratio
        # the single node's own reckoning: one deployed, one in flight
        node = orch.inventory.room("default", C, used.get("default"))
        assert node.free_vcpu == pytest.approx(backend.cpu_total * ratio - 2 * need.vcpu)
        assert node.free_memory_mb == backend.memory_mb_total - 2 * need.memory_mb
        assert node.free_disk_gb == pytest.approx(
            backend.disk_gb_total - backend.disk_gb_used - need.disk_gb)
        want = (round(node.free_vcpu, 3), node.free_memory_mb, round(node.free_disk_gb, 1))

        # the MEPM's report (GET /mecorch/v1/hosts: `host list`)
        listed = {h["hostId"]: h for h in env.c.get("/mecorch/v1/hosts")}
        reported = HostInfo.from_dict(listed["default"]).manners[C.value].room()
        # the MEO's placement over that report
        meo = candidate("default", True, HostInfo.from_dict(listed["default"]),
                        NOTHING).rooms[C.value]
        # the manner policy's facts (both backends of the host share its room)
        facts = manner_policy.host_facts(orch.inventory, [], used)[0]
        # the status page
        health = Health(orch)
        health.probe_all()
        page = hosts_view(orch, health)[0]["capacity"]

        for name, got in (
                ("host report", (reported.free_vcpu, reported.free_memory_mb,
                                 reported.free_disk_gb)),
                ("MEO placement", (meo.free_vcpu, meo.free_memory_mb, meo.free_disk_gb)),
                ("manner policy", (facts.free_vcpu, facts.free_memory_mb, facts.free_disk_gb)),
                ("status page", (page["vcpuFree"], page["memoryMbFree"], page["diskGbFree"]))):
            assert (round(got[0], 3), got[1], round(got[2], 1)) == want, name
    finally:
        env.cim.deploy_gate.set()
    _wait(lambda: orch.store.get("instances", pending)["instantiationState"] == "INSTANTIATED",
          "the held deploy to finish")


class _SlowCapacity(FakeCompute):
    """A backend whose capacity read hangs until released."""

    def __init__(self):
        super().__init__(DeploymentType.CONTAINER)
        self.release = threading.Event()
        self.asked = threading.Event()

    def capacity(self):
        self.asked.set()
        self.release.wait(10)
        return super().capacity()


def test_a_slow_backend_does_not_hold_up_placement_on_another_host(tmp_path):
    """The backend's capacity is read before the inventory's lock: a host
    whose backend hangs delays only the placements that ask it."""
    cfg = config.load()
    base = cfg["hosts"][0]
    cfg["hosts"] = [{**base, "id": "slow"}, {**base, "id": "quick"}]
    inv = Inventory(cfg)
    slow, quick = _SlowCapacity(), FakeCompute(DeploymentType.CONTAINER)
    inv.get("slow").attach("cim", slow)
    inv.get("quick").attach("cim", quick)
    small = Need(0.5, 64, 1.0)
    held = threading.Thread(target=inv.reserve, args=("a", _plan(small, "slow"), {}))
    held.start()
    try:
        assert slow.asked.wait(5)
        t0 = time.monotonic()
        assert inv.reserve("b", _plan(small, "quick"), {}).id == "quick"
        assert time.monotonic() - t0 < 1.0
    finally:
        slow.release.set()
        held.join(10)
    assert inv.promised("slow", None) == small and inv.promised("quick", None) == small
    with pytest.raises(CapacityExceeded, match="quick: memory 5000 MB > 4032 MB free"):
        inv.reserve("c", _plan(Need(0.5, 5000, 1.0), "quick"), {"quick": NOTHING})


def _plan(need: Need, host: str) -> Plan:
    """A planned container request of `need` that wants `host`."""
    request = ResourceRequest("i", "app", C, "127.0.0.1:5000/a/b:1", need.vcpu,
                              need.memory_mb, need.disk_gb)
    return Plan(Decision(C, "deploymentType"), request, need, (), (), (host,), False, None)
