"""Footprint of a running `mecorch serve`: RSS (VmRSS of /proc/PID/status,
sampled every second) and CPU (utime+stime of /proc/PID/stat over the
period, all threads) while idle, with 0 instances and with N instances;
growth per instance; the processes below the serve process (there should
be none per instance: mecorch's one helper is the host's dnsmasq, started
once and detached).

Used by bench/run.py (it owns the lab); not a standalone script.
"""

from __future__ import annotations

import time
from pathlib import Path

from lab import NO_RULES, Lab, descendants, sample
from mecorch.kernel.http import KEEPALIVE_IDLE_S
from mecorch.kernel.workers import IDLE_S

SETTLE_S = max(IDLE_S, KEEPALIVE_IDLE_S) + 2


def dnsmasq_count(lab: Lab) -> int:
    """Live dnsmasq processes started for the lab (by its pid file)."""
    pid_file = Path(lab.host_dirs[1]) / "dnsmasq.pid"
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0
    return 1 if Path(f"/proc/{pid}").exists() else 0


def idle(lab: Lab, seconds: float) -> dict:
    # idle: after the last request's LCM workers and kept-alive connections
    # ended (mecorch.kernel.workers.IDLE_S, api.http.KEEPALIVE_IDLE_S), not during
    time.sleep(SETTLE_S)
    out = sample(lab.serve.pid, seconds)
    out["dnsmasq"] = dnsmasq_count(lab)
    return out


def deploy_many(lab: Lab, app_d_id: str, n: int, **body) -> list[str]:
    ids = []
    for _ in range(n):
        iid, op = lab.api.deploy(app_d_id, **(body or NO_RULES))
        if op["operationState"] != "COMPLETED":
            raise RuntimeError(f"deploy failed: {op.get('error')}")
        ids.append(iid)
    return ids


def release(lab: Lab, ids: list[str]) -> None:
    for iid in ids:
        lab.api.terminate(iid)
        lab.api.delete(iid)


def growth(base: dict, loaded: dict, n: int) -> dict:
    return {"rss_growth_mb_per_instance": round((loaded["rss_mb"] - base["rss_mb"]) / n, 3),
            "descendants_growth": loaded["descendants"] - base["descendants"],
            "threads_growth": loaded["threads"] - base["threads"]}


def helper_pids(lab: Lab) -> list[int]:
    return descendants(lab.serve.pid)
