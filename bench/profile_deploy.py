#!/usr/bin/env python3
"""Where a container deploy+terminate through the REST API spends its time:
py-spy samples the lab's `mecorch serve` (every thread, idle included, so
time spent waiting on dockerd shows as the socket read it is) while the
bench's client runs N cycles; prints the LCM worker's wall time per cycle
inside each mecorch call (DockerCIM.* is the engine's time plus docker-py;
the rest is mecorch's own) and the API threads' time, and writes the
collapsed stacks (for a flame graph: flamegraph.pl or speedscope) to --out.

    py-spy must be on PATH or given by --py-spy, e.g.
    python3 -m venv /tmp/spy && /tmp/spy/bin/pip install py-spy
    /opt/mecorch/venv/bin/python bench/profile_deploy.py --py-spy /tmp/spy/bin/py-spy --n 20

Run as root on a provisioned host (py-spy attaches with ptrace).
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from api_overhead import _api_cycle      # noqa: E402
from lab import Lab, pct                 # noqa: E402

APP = "bench-http"


CALLS = re.compile(r"(Lcm\.\w+|MepService\.\w+|ClaimsLedger\.\w+|PlatformRules\.\w+|"
                   r"AppAccess\.\w+|Mp1Api\.\w+|TerminationNotices\.\w+|"
                   r"PackageManager\.\w+|Journal\.\w+|"
                   r"DockerCIM\.\w+|ImageRepository\.\w+|keep|_destroy|Store\.\w+) \(")


def summarize(collapsed: Path, cycles: int, rate: int) -> tuple[list, list]:
    """Wall time per cycle (ms) of the LCM worker inside each mecorch call
    (cumulative: a call's time includes the backend calls it waits on),
    and of the API request threads by their innermost mecorch frame."""
    worker: collections.Counter = collections.Counter()
    http: collections.Counter = collections.Counter()
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        frames = stack.split(";")
        thread = frames[0].split(": ", 1)[-1]
        if thread.startswith("lcm"):
            for name in {m.group(1) for f in frames for m in [CALLS.match(f)] if m}:
                worker[name] += n
        elif "process_request_thread" in stack:
            ours = [f for f in frames if "(mecorch/" in f]
            http[ours[-1] if ours else frames[-1]] += n
    per = 1000 / rate / cycles
    return ([(k, v * per) for k, v in worker.most_common(25)],
            [(k, v * per) for k, v in http.most_common(10)])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--py-spy", default=shutil.which("py-spy") or "py-spy")
    ap.add_argument("--out", default="/tmp/mecorch-deploy-profile.txt")
    ap.add_argument("--rate", type=int, default=250, help="samples per second")
    args = ap.parse_args()
    lab = Lab()
    try:
        lab.start()
        lab.onboard("sample-container-app", APP)
        for _ in range(2):
            _api_cycle(lab, APP)                    # warm: network, pull, drivers open
        spy = subprocess.Popen([args.py_spy, "record", "--pid", str(lab.serve.pid), "--idle",
                                "--threads", "--rate", str(args.rate), "--format", "raw",
                                "--output", args.out, "--nonblocking"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(1.0)                             # attached
        cycles = [_api_cycle(lab, APP) for _ in range(args.n)]
        spy.send_signal(2)                          # SIGINT: py-spy writes and exits
        spy.wait(timeout=60)
        d = [c[0] * 1e3 for c in cycles]
        t = [c[1] * 1e3 for c in cycles]
        print(f"{args.n} cycles under py-spy: deploy p50 {pct(d, 50):.0f} ms, "
              f"terminate p50 {pct(t, 50):.0f} ms")
        worker, http = summarize(Path(args.out), args.n, args.rate)
        print(f"collapsed stacks: {args.out}\n\nLCM worker, ms per cycle inside each call "
              "(cumulative):")
        for key, ms in worker:
            print(f"  {ms:8.1f}  {key}")
        print("\nAPI request threads, ms per cycle by innermost mecorch frame:")
        for key, ms in http:
            print(f"  {ms:8.1f}  {key}")
    finally:
        lab.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
