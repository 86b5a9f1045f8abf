"""Start-up: from the exec of `mecorch serve` to its first answer of
GET /app_pkgm/v1/app_packages, median of several starts on one state dir
(the first start makes the store; the others open it), with the lab's kind
of config (a host id and names of its own; the start-up reconciliation
round lists those, which is part of what is measured).

Used by bench/run.py; not a standalone script.
"""

from __future__ import annotations

import secrets
import shutil
import statistics


from lab import Serve, new_lab_dir, remove_infrastructure


def run(starts: int = 5) -> dict:
    tag = secrets.token_hex(3)
    tmp, cfg, cfg_path, host_id = new_lab_dir(tag)
    times = []
    try:
        for _ in range(starts):
            serve = Serve(cfg_path, tmp / "serve.log", host_id)
            try:
                times.append(serve.ready())
            finally:
                serve.stop()
    finally:
        remove_infrastructure(cfg, tag, str(tmp / "state" / "hosts" / host_id),
                              str(tmp / "run" / host_id), tmp=str(tmp))
        shutil.rmtree(tmp, ignore_errors=True)
    med = statistics.median(times)
    return {"starts": starts, "median_s": round(med, 3), "max_s": round(max(times), 3),
            "all_s": [round(t, 3) for t in times], "met": med < 1.0}
