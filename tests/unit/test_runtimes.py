"""Runtime ids of rolling upgrades (mecorch.mepm.runtimes): the one place
that maps a backend object's id to its instance."""

from mecorch.driverapi.model import Observation
from mecorch.kernel.states import ObservedState
from mecorch.mepm import runtimes

IID = "0b6f3c52-5f0e-4c1e-9d0b-2f7f8e9a1c3d"


def test_runtime_ids_map_back_to_their_instance():
    assert runtimes.runtime_id(IID, 0) == IID
    assert runtimes.runtime_id(IID, 3) == f"{IID}.g3"
    for rid in (IID, f"{IID}.g1", f"{IID}.g12"):
        assert runtimes.owner(rid) == IID
    # only what an upgrade makes is stripped
    for other in (f"{IID}.g0", f"{IID}.g", f"{IID}.gx", f"{IID}g1", "app.g01"):
        assert runtimes.owner(other) == other


def test_current_runtime_and_observations():
    inst = {"id": IID}
    assert runtimes.current(inst) == IID and runtimes.is_current(inst, IID)
    inst["_runtime"] = f"{IID}.g2"
    assert runtimes.is_current(inst, f"{IID}.g2") and not runtimes.is_current(inst, IID)
    assert not runtimes.is_current(None, IID)
    obs = Observation(f"{IID}.g2", ObservedState.RUNNING, {"id": "x"}, "up")
    mapped = runtimes.as_instance(obs)
    assert mapped.instance_id == IID and mapped.handle == {"id": "x"} and mapped.detail == "up"
    plain = Observation(IID, ObservedState.RUNNING, {})
    assert runtimes.as_instance(plain) is plain
