"""An app instance's own output, for `mecorch app logs` and
GET /app_lcm/v1/app_instances/{id}/logs (a mecorch extension): a
container's stdout and stderr, a VM's serial console log.

While the instance is deployed they are read from the backend (the
driver's `logs`). When it is terminated, the last MAX_KEPT_BYTES are kept
in `<state_dir>/app-logs/<instance id>.log` before the backend's objects
are removed, so the output of a run that crashed or was stopped stays
readable until the instance is deleted (or deployed again).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from mecorch.kernel.errors import MecorchError, NotFound, UnsupportedAction

log = logging.getLogger("mecorch.applogs")
MAX_KEPT_BYTES = 1 << 20
MAX_TAIL = 100_000


def tail_lines(data: bytes, tail: int | None) -> bytes:
    """The last `tail` lines of `data` (all of it for None)."""
    if tail is None:
        return data
    lines = data.splitlines(keepends=True)
    return b"".join(lines[-tail:]) if tail > 0 else b""


def kept_path(logs_dir: Path, instance_id: str) -> Path:
    return logs_dir / f"{instance_id}.log"


def keep(logs_dir: Path, compute, instance_id: str, handle: dict | None) -> None:
    """Save the instance's output before its runtime is removed. Best
    effort: a failure is logged, never stops the termination."""
    if not handle:
        return
    try:
        data = compute.logs(handle, None)
    except UnsupportedAction:
        return                  # a driver that keeps no output: nothing to keep
    except MecorchError as e:
        log.warning("logs of %s not kept: %s", instance_id, e.detail)
        return
    except Exception as e:     # noqa: BLE001 - termination goes on
        log.warning("logs of %s not kept: %s: %s", instance_id, type(e).__name__, e)
        return
    logs_dir.mkdir(parents=True, exist_ok=True)
    path = kept_path(logs_dir, instance_id)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data[-MAX_KEPT_BYTES:])
    os.replace(tmp, path)


def forget(logs_dir: Path, instance_id: str) -> None:
    try:
        kept_path(logs_dir, instance_id).unlink()
    except FileNotFoundError:
        pass


def read(lcm, logs_dir: Path, instance_id: str, tail: int | None) -> tuple[bytes, str]:
    """(output, where it came from: "backend" or "kept") of the instance."""
    from mecorch.kernel.states import DeploymentType, InstantiationState
    inst = lcm.get(instance_id)
    if inst["instantiationState"] == InstantiationState.INSTANTIATED.value and inst.get("_handle"):
        host = lcm.inventory.get(inst["hostId"])
        compute = host.compute(DeploymentType(inst["deploymentType"]))
        return tail_lines(compute.logs(inst["_handle"], tail), tail), "backend"
    path = kept_path(logs_dir, instance_id)
    try:
        return tail_lines(path.read_bytes(), tail), "kept"
    except FileNotFoundError:
        raise NotFound(f"app instance {instance_id} is not deployed and no output of an "
                       "earlier run was kept") from None
