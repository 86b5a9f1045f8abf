"""Concurrent deployments through the REST API, in two phases with
`concurrency` client threads each: deploy `total` instances (create ->
instantiate -> wait for the op), then terminate FORCEFUL and delete them
all. Deploys per second = completed deployments / wall time of the deploy
phase; the terminate phase and the whole cycle get their own rates.
`direct_containers` runs the same two phases with the bare docker-py calls
of bench/api_overhead.py: the backend's own ceiling on this machine.

Used by bench/run.py (it owns the lab); not a standalone script.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

from lab import NO_RULES, Api, Lab, pct


def _pool(items: list, concurrency: int, fn: Callable) -> tuple[float, list, list[str]]:
    """fn over items with `concurrency` threads: (wall s, results, failures)."""
    lock = threading.Lock()
    todo = list(items)
    done: list = []
    failures: list[str] = []

    def worker() -> None:
        while True:
            with lock:
                if not todo:
                    return
                item = todo.pop(0)
            try:
                r = fn(item)
                with lock:
                    done.append(r)
            except Exception as e:  # noqa: BLE001 - counted and reported
                with lock:
                    failures.append(str(e)[:200])

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0, done, failures


def run(lab: Lab, app_d_id: str, total: int, concurrency: int, reach=None) -> dict:
    # its own client polling ops every 50 ms, as a real client would: 8
    # clients polling every 5 ms would spend the cores being measured
    api = Api(lab.api.base, token="", timeout=300)
    api.host_id, api.poll = lab.api.host_id, 0.05
    made: list[str] = []

    def deploy(_: int) -> float:
        t0 = time.perf_counter()
        iid, op = api.deploy(app_d_id, **NO_RULES)
        made.append(iid)
        if op["operationState"] != "COMPLETED":
            raise RuntimeError(f"deploy {op['operationState']}: "
                               f"{(op.get('error') or {}).get('detail')}")
        took = time.perf_counter() - t0
        if reach is not None:
            info = api.get(f"/app_lcm/v1/app_instances/{iid}")
            reach(info["allocatedResources"]["network"][0]["ip"])
        return took

    def terminate(iid: str) -> None:
        if api.get(f"/app_lcm/v1/app_instances/{iid}")["instantiationState"] == "INSTANTIATED":
            op = api.terminate(iid)
            if op["operationState"] != "COMPLETED":
                raise RuntimeError(f"terminate {op['operationState']}: "
                                   f"{(op.get('error') or {}).get('detail')}")
        api.delete(iid)

    wall_d, took, fail_d = _pool(list(range(total)), concurrency, deploy)
    wall_t, _, fail_t = _pool(list(made), concurrency, terminate)
    return {"total": total, "concurrency": concurrency, "completed": len(took),
            "failures": len(fail_d) + len(fail_t), "failure_samples": (fail_d + fail_t)[:3],
            "deploy_wall_s": round(wall_d, 1), "deploys_per_s": round(len(took) / wall_d, 2),
            "terminate_wall_s": round(wall_t, 1),
            "terminates_per_s": round((len(made) - len(fail_t)) / wall_t, 2),
            "cycles_per_s": round(len(took) / (wall_d + wall_t), 2),
            "deploy_p50_ms": round(pct(took, 50) * 1e3) if took else None,
            "deploy_p99_ms": round(pct(took, 99) * 1e3) if took else None}


def direct_containers(lab: Lab, app_d_id: str, total: int, concurrency: int) -> dict:
    """The backend's own ceiling: the same two phases with bench/api_overhead.py's
    direct docker-py calls, same concurrency."""
    from api_overhead import DirectDocker
    image = lab.pkgs[app_d_id]["softwareImages"][0]["imagePath"]
    direct = DirectDocker(image, lab.cfg["hosts"][0]["cim"]["network"], lab.tag)
    try:
        wall_d, handles, fail_d = _pool(list(range(total)), concurrency,
                                        lambda i: direct.deploy(f"mecb-{lab.tag}-t{i}"))
        wall_t, _, fail_t = _pool(handles, concurrency, direct.destroy)
    finally:
        direct.api.close()
    return {"total": total, "concurrency": concurrency, "failures": len(fail_d) + len(fail_t),
            "deploys_per_s": round(len(handles) / wall_d, 2),
            "terminates_per_s": round((len(handles) - len(fail_t)) / wall_t, 2),
            "cycles_per_s": round(len(handles) / (wall_d + wall_t), 2)}
