"""Cost curves: how a single node's costs grow with the number of running
container instances, each measured at several sizes in one run.

At each size N (instances deployed through the API, concurrency 8, no
rules), with the lab's `mecorch serve` (role all):
- idle footprint of serve for one reconcile interval: RSS (mean, max) and
  CPU (% of one core over the window; the window holds one periodic
  reconciliation round, so it is the idle cost of periodic reconcile);
- one reconciliation round (`Reconciler.run_once`, the code serve runs
  every interval): serve is stopped, an Orchestrator on the same config
  and state runs rounds in this process (first, then warm), serve is
  started again (its time to ready with N instances is kept too);
- at the largest size, the observed-state lag: an app container killed
  behind mecorch's back (docker kill) until GET app_instances/{id} shows
  observedState other than RUNNING (polled every 20 ms).

`slope` (bench/run.py) gives how each cost grows per 10x of N.

Used by bench/run.py (it owns the lab); not a standalone script.
"""

from __future__ import annotations

import time

import docker

import footprint
from lab import INST, NO_RULES, Api, Lab, pct
from throughput import _pool
from mecorch.kernel import config as mconfig
from mecorch.mepm.orchestrator import Orchestrator


def _deploy(lab: Lab, app_d_id: str, n: int, concurrency: int = 8) -> tuple[list[str], list[str]]:
    api = Api(lab.api.base, token="", timeout=300)
    api.host_id, api.poll = lab.api.host_id, 0.05

    def one(_: int) -> str:
        iid, op = api.deploy(app_d_id, **NO_RULES)
        if op["operationState"] != "COMPLETED":
            raise RuntimeError(f"{iid}: deploy {op['operationState']}: "
                               f"{(op.get('error') or {}).get('detail')}")
        return iid
    _, ids, failures = _pool(list(range(n)), concurrency, one)
    return ids, failures


def _release(lab: Lab, ids: list[str], concurrency: int = 8) -> list[str]:
    api = Api(lab.api.base, token="", timeout=300)
    api.poll = 0.05

    def one(iid: str) -> None:
        if api.get(f"{INST}/{iid}")["instantiationState"] == "INSTANTIATED":
            api.terminate(iid)
        api.delete(iid)
    _, _, failures = _pool(list(ids), concurrency, one)
    return failures


def reconcile_rounds(lab: Lab, rounds: int = 3) -> dict:
    """Rounds of the reconciler in this process while serve is stopped (one
    owner of the host at a time), then serve again."""
    lab.serve.stop()
    times, changes = [], []
    orch = Orchestrator(mconfig.load(lab.cfg_path))
    try:
        for _ in range(rounds):
            t0 = time.perf_counter()
            done = orch.reconciler.run_once()
            times.append(time.perf_counter() - t0)
            changes.append(len(done))
    finally:
        orch.close()
    ready = lab.start()
    return {"first_s": round(times[0], 3), "warm_s": round(min(times[1:] or times), 3),
            "max_s": round(max(times), 3), "changes": changes, "serve_ready_s": round(ready, 3)}


def observed_lag(lab: Lab, ids: list[str], samples: int, timeout: float) -> dict:
    """Kill app containers behind mecorch's back; seconds until the API
    shows it. The killed instances are terminated afterwards."""
    dk = docker.APIClient(base_url="unix:///var/run/docker.sock", version="auto")
    lags, missed, used = [], 0, []
    try:
        for iid in ids[:samples]:
            app = dk.containers(filters={"label": [f"mecorch.instance={iid}",
                                                   "mecorch.role=app"]})[0]["Id"]
            used.append(iid)
            t0 = time.perf_counter()
            dk.kill(app)
            while True:
                state = lab.api.get(f"{INST}/{iid}").get("observedState")
                if state and state != "RUNNING":
                    lags.append(time.perf_counter() - t0)
                    break
                if time.perf_counter() - t0 > timeout:
                    missed += 1
                    break
                time.sleep(0.02)
    finally:
        dk.close()
    out = {"samples": len(used), "missed": missed, "timeout_s": timeout,
           "all_s": [round(x, 3) for x in lags]}
    if lags:
        out.update(p50_s=round(pct(lags, 50), 3), p99_s=round(pct(lags, 99), 3))
    out["p99_or_timeout_s"] = round(timeout, 3) if missed else out.get("p99_s")
    return out


def containers(lab: Lab, app_d_id: str, sizes: list[int], idle_s: float,
               lag_samples: int, interval_s: float) -> dict:
    out: dict = {"sizes": sizes, "reconcile_interval_s": interval_s, "by_size": {}}
    ids: list[str] = []
    try:
        for n in sizes:
            if n > len(ids):
                print(f"  scale: deploying up to {n} containers...", flush=True)
                t0 = time.perf_counter()
                more, failures = _deploy(lab, app_d_id, n - len(ids))
                ids += more
                if failures:
                    out.setdefault("deploy_failures", []).extend(failures[:3])
                print(f"    {len(more)} in {time.perf_counter() - t0:.1f} s", flush=True)
            row: dict = {"instances": len(ids)}
            row["idle"] = footprint.idle(lab, max(idle_s, interval_s))
            if n > 0:
                row["reconcile"] = reconcile_rounds(lab)
            out["by_size"][str(n)] = row
            print(f"    {n}: {row}", flush=True)
        if lag_samples and ids:
            out["observed_lag"] = observed_lag(lab, ids, lag_samples, interval_s + 10)
    finally:
        t0 = time.perf_counter()
        failures = _release(lab, ids)
        out["release_s"] = round(time.perf_counter() - t0, 1)
        if failures:
            out["release_failures"] = failures[:3]
    return out


def slope(points: dict[int, float]) -> float | None:
    """Growth per 10x: (cost at the largest / cost at the smallest) to the
    power 1/decades. 1.0: flat; 10: linear; 100: quadratic."""
    xs = sorted(k for k in points if k > 0 and points[k] and points[k] > 0)
    if len(xs) < 2 or xs[-1] == xs[0]:
        return None
    import math
    decades = math.log10(xs[-1] / xs[0])
    return round((points[xs[-1]] / points[xs[0]]) ** (1 / decades), 2)
