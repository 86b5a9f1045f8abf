#!/usr/bin/env python3
"""Does reading each instance's usage slow a deploy? Container instantiate
(POST to COMPLETED) and terminate through `mecorch serve` on the real
Docker Engine, with 10 other containers running, with the usage reader
every 0.5 s (orchestrator.usage_interval_s 0.5: 30x the default pace, each
round one one-shot `docker stats` per container) against the reader off
(usage_interval_s 0); the backend health probes at their default pace in
both (health_interval_s 15). In labs run A-B-A-B (each its own `mecorch
serve`, crashlab.Lab: host id, network, chains of its own), `--n` deploys
each. Prints the p50/max of each and the
ratio of the p50s.

    /opt/mecorch/venv/bin/python bench/stats_deploy.py [--n 6] [--others 10]

Measured here (2 cores, shared; 12 deploys each): instantiate p50 0.617 s
with the reader every 0.5 s, 0.621 s with it off (ratio 0.993); terminate
0.411 s / 0.412 s.
"""

from __future__ import annotations

import argparse
import statistics
import time

import lab
from support.crashlab import Lab

REPO = lab.REPO     # (importing lab put it and tests/ on sys.path)


def one_lab(tag: str, interval_s: float, n: int, others: int) -> tuple[list[float], list[float]]:
    lb = Lab(tag, vm=False, interval_s=60, orchestrator={"usage_interval_s": interval_s})
    deploys, terms = [], []
    try:
        lb.start()
        lb.onboard(("sample-container-app",))
        for _ in range(others):
            lb.deploy("sample-http", "CONTAINER")
        time.sleep(2 * max(interval_s, 0.5))       # the reader at work on them
        for _ in range(n):
            iid = lb.create("sample-http")
            t0 = time.perf_counter()
            op = lb.c.wait_op(lb.instantiate(iid, "CONTAINER"), timeout=300)
            deploys.append(time.perf_counter() - t0)
            assert op["operationState"] == "COMPLETED", op.get("error")
            t0 = time.perf_counter()
            op = lb.c.wait_op(lb.terminate(iid), timeout=300)
            terms.append(time.perf_counter() - t0)
            assert op["operationState"] == "COMPLETED", op.get("error")
    finally:
        left = lb.teardown()
        assert left == [], left
    return deploys, terms


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=6)
    ap.add_argument("--others", type=int, default=10)
    args = ap.parse_args()
    got = {"reader every 0.5 s": ([], []), "reader off": ([], [])}
    for rnd in range(2):
        for name, interval in (("reader every 0.5 s", 0.5), ("reader off", 0)):
            d, t = one_lab(f"sb{rnd}{int(interval * 10)}", interval, args.n, args.others)
            got[name][0].extend(d)
            got[name][1].extend(t)
    for name, (d, t) in got.items():
        print(f"{name:20s} instantiate p50 {statistics.median(d):.3f} s max {max(d):.3f} s; "
              f"terminate p50 {statistics.median(t):.3f} s max {max(t):.3f} s  (n={len(d)})")
    on, off = (statistics.median(got[k][0]) for k in got)
    print(f"instantiate p50 ratio reader on / off: {on / off:.3f}")


if __name__ == "__main__":
    main()
