#!/usr/bin/env python3
"""/metrics scrape time with 200 instances, each with its usage figures
(mecorch.mepm.usage), target under 1 s.

The scale is the core's, not a backend's: the node is the tests' in-memory
single node (support.corelab: the real REST API, store and LCM) whose
container driver is support.fakes.MeteredCompute (figures of its own making,
no dockerd): 200 instances instantiated through the API, two usage rounds
(so each has a CPU percent), then N scrapes of /metrics over loopback,
timed from the request to the last byte, and each scrape checked to hold
one memory series per instance. Also timed: one usage round over the 200
(the reader's own cost, without a backend's) and GET of one instance.
The real drivers' cost per reading was measured apart: Docker's one-shot
stats ~7 ms per container here, libvirt's domain stats well under that.

    /opt/mecorch/venv/bin/python bench/stats_scrape.py [--instances 200] [--scrapes 20]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import lab
from mecorch.driverapi.model import ResourceUsage  # noqa: E402
from mecorch.kernel.states import DeploymentType  # noqa: E402
from support.corelab import INST, instantiate, node_env, onboard  # noqa: E402
from support.fakes import MeteredCompute  # noqa: E402

REPO = lab.REPO     # (importing lab put it and tests/ on sys.path)


def timed_get(url: str) -> tuple[float, bytes]:
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=30) as r:
        body = r.read()
    return time.perf_counter() - t0, body


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--instances", type=int, default=200)
    ap.add_argument("--scrapes", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="mecorch-stats-bench-") as tmp:
        gen = node_env(Path(tmp))
        e = next(gen)
        try:
            cim = MeteredCompute(DeploymentType.CONTAINER, cpus=1000, memory_mb=1 << 20,
                                 disk_gb=1 << 20)
            e.orch.inventory.get("default").attach("cim", cim)
            onboard(e)
            t0 = time.perf_counter()

            def one(_):
                iid = e.c.post(INST, {"appDId": "sample-http"})[0]["id"]
                assert instantiate(e, iid)["operationState"] == "COMPLETED"
                return iid
            with ThreadPoolExecutor(8) as pool:
                ids = list(pool.map(one, range(args.instances)))
            print(f"{len(ids)} instances instantiated in {time.perf_counter() - t0:.1f} s")
            now = time.time()
            for n, iid in enumerate(ids):
                cim.figures[iid] = ResourceUsage(
                    at=now, cpu_seconds=n, memory_bytes=(n + 1) << 20,
                    memory_limit_bytes=64 << 20, net_rx_bytes=n, net_tx_bytes=2 * n,
                    block_read_bytes=0, block_write_bytes=n)
            e.orch.usage_reader.read_all()
            for iid in ids:             # a second reading, 1 s later: a CPU percent
                u = cim.figures[iid]
                cim.figures[iid] = ResourceUsage(**{**u.__dict__, "at": u.at + 1,
                                                    "cpu_seconds": u.cpu_seconds + 0.25})
            rounds = []
            for _ in range(5):
                t0 = time.perf_counter()
                assert e.orch.usage_reader.read_all() == len(ids)
                rounds.append(time.perf_counter() - t0)
            url = f"{e.c.base}/metrics"
            timed_get(url)              # the collector's first build
            times = []
            for _ in range(args.scrapes):
                took, body = timed_get(url)
                text = body.decode()
                series = text.count("mecorch_instance_memory_bytes{")
                assert series == len(ids), series
                times.append(took)
            one_get = [timed_get(f"{e.c.base}{INST}/{ids[0]}")[0] for _ in range(20)]
            times.sort()
            p95 = times[min(len(times) - 1, int(0.95 * len(times)))]
            print(f"/metrics with {len(ids)} instances: {len(body)} bytes, "
                  f"{text.count(chr(10))} lines")
            print(f"scrape: median {statistics.median(times) * 1000:.1f} ms, p95 "
                  f"{p95 * 1000:.1f} ms, max {times[-1] * 1000:.1f} ms (target < 1000 ms): "
                  f"{'PASS' if times[-1] < 1.0 else 'FAIL'}")
            print(f"usage round over {len(ids)} (fake driver): median "
                  f"{statistics.median(rounds) * 1000:.1f} ms")
            print(f"GET one instance: median {statistics.median(one_get) * 1000:.1f} ms")
        finally:
            gen.close()


if __name__ == "__main__":
    main()
