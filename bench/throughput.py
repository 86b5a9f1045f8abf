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
    # its own client, told of each op's end by the lab's notifications
    # (Lab.notify_ops) or else polling every 50 ms: 8 clients polling every
    # 5 ms would spend the cores being measured
    api = Api(lab.api.base, token="", timeout=300)
    api.host_id, api.poll, api.waiter = lab.api.host_id, 0.05, lab.api.waiter
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
    direct docker-py calls (the same objects), same concurrency."""
    from api_overhead import DirectDocker
    direct = DirectDocker(lab, app_d_id)
    try:
        wall_d, handles, fail_d = _pool(list(range(total)), concurrency,
                                        lambda i: direct.deploy(f"{lab.tag}t{i}x{time.monotonic_ns()}"))
        wall_t, _, fail_t = _pool(handles, concurrency, direct.destroy)
    finally:
        direct.api.close()
    return {"total": total, "concurrency": concurrency, "failures": len(fail_d) + len(fail_t),
            "failure_samples": (fail_d + fail_t)[:3],
            "deploy_wall_s": round(wall_d, 1), "deploys_per_s": round(len(handles) / wall_d, 2),
            "terminate_wall_s": round(wall_t, 1),
            "terminates_per_s": round((len(handles) - len(fail_t)) / wall_t, 2),
            "cycles_per_s": round(len(handles) / (wall_d + wall_t), 2)}


def compare(lab: Lab, app_d_id: str, total: int, concurrency: int) -> dict:
    """API and direct in A-B-B-A order, total/2 each time (a load that
    drifts during the run weighs on both alike): the sums of each and the
    API/direct ratios of the rates."""
    half = max(concurrency, total // 2)
    runs: dict[str, list[dict]] = {"api": [], "direct": []}
    for name in ("api", "direct", "direct", "api"):
        fn = run if name == "api" else direct_containers
        runs[name].append(fn(lab, app_d_id, half, concurrency))
    out: dict = {"concurrency": concurrency, "order": "api,direct,direct,api"}
    for name, rs in runs.items():
        n = sum(r.get("completed", r["total"] - r["failures"]) for r in rs)
        wd = sum(r["deploy_wall_s"] for r in rs)
        wt = sum(r["terminate_wall_s"] for r in rs)
        out[name] = {"total": sum(r["total"] for r in rs), "failures": sum(r["failures"] for r in rs),
                     "failure_samples": sum((r["failure_samples"] for r in rs), [])[:3],
                     "deploys_per_s": round(n / wd, 2), "terminates_per_s": round(n / wt, 2),
                     "cycles_per_s": round(n / (wd + wt), 2),
                     "halves_deploys_per_s": [r["deploys_per_s"] for r in rs]}
    for k in ("deploys_per_s", "terminates_per_s", "cycles_per_s"):
        out[f"ratio_{k}"] = round(out["api"][k] / out["direct"][k], 3)
    return out
