"""What the host engine's LCM operations (mepm/lcm.py, mepm/upgrade.py) do
when a step fails: undo what was made, every step tried, and end the op
with a MecorchError whatever was raised."""

from __future__ import annotations

import logging

from mecorch.driverapi.contracts import ComputeDriver
from mecorch.kernel.errors import MecorchError

log = logging.getLogger("mecorch.lcm")


def destroy(compute: ComputeDriver, runtime: str, handle: dict | None) -> None:
    """Destroy by handle, or, when the handle was never recorded (a crash
    inside deploy), by what the backend finds under the runtime's id (the
    instance id, or a rolling upgrade's `<id>.g<n>`: mepm/runtimes.py)."""
    if handle:
        compute.destroy(handle)
        return
    for obs in compute.list_instances():
        if obs.instance_id == runtime:
            compute.destroy(obs.handle)


def best_effort(what: str, fn, *args) -> None:
    """One step of an undo: its failure is logged, the next step still runs."""
    try:
        fn(*args)
    except Exception as e:   # noqa: BLE001 - undo must try every step
        log.error("%s failed during rollback: %s", what, e)


def internal(e: Exception) -> MecorchError:
    """An unexpected exception as the error an op ends with (logged here,
    with its traceback)."""
    log.exception("internal error")
    return MecorchError(f"internal error: {type(e).__name__}: {e}")
