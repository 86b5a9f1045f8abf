#!/usr/bin/env python3
"""Where a container deploy+terminate through the REST API spends its time:
py-spy samples the lab's `mecorch serve` (every thread, idle included, so
time spent waiting on dockerd shows as the socket read it is) while the
bench's client runs N cycles; prints the share of each leaf-most mecorch,
docker-py, http and stdlib frame, and writes the collapsed stacks (for a
flame graph: flamegraph.pl or speedscope) next to --out.

    py-spy must be on PATH or given by --py-spy, e.g.
    python3 -m venv /tmp/spy && /tmp/spy/bin/pip install py-spy
    /opt/mecorch/venv/bin/python bench/profile_deploy.py --py-spy /tmp/spy/bin/py-spy --n 20

Run as root on a provisioned host (py-spy attaches with ptrace).
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from api_overhead import _api_cycle      # noqa: E402
from lab import Lab, pct                 # noqa: E402

APP = "bench-http"


def summarize(collapsed: Path, top: int = 25) -> list[tuple[str, float]]:
    """Share of samples by the innermost frame of mecorch/drivers code
    (what our code was doing, including the call it was blocked in)."""
    own: collections.Counter = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        frames = stack.split(";")
        # worker threads idle in the pool queue / the accept loop are not
        # deploy work
        if any("_worker (concurrent/futures/thread.py" in f or "serve_forever" in f
               and "process_request" not in stack for f in frames[-3:]):
            continue
        total += n
        ours = [f for f in frames if "/mecorch/" in f or "/drivers/" in f]
        leaf = frames[-1]
        key = f"{ours[-1]}  ->  {leaf}" if ours else leaf
        own[key] += n
    return [(k, 100 * v / max(1, total)) for k, v in own.most_common(top)]


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
        print(f"collapsed stacks: {args.out}\n\nshare of serve's busy-thread samples "
              "(innermost mecorch frame -> leaf):")
        for key, share in summarize(Path(args.out)):
            print(f"  {share:5.1f} %  {key}")
    finally:
        lab.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
