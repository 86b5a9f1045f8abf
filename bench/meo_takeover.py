#!/usr/bin/env python3
"""How long the MEO's background work is without an owner when its leader
dies: three `mecorch serve --role meo` replicas on one database, the
leader SIGKILLed N times (each time started again as a replica that
follows); the time from the kill until a survivor says it leads
(GET /mecorch/v1/leader), p50 / p99 / max, against the lease length
(meo.lease_s) the replicas run with.

The bound is lease_s + lease_s/5 (a survivor takes the lease once it has
seen the same renewal for lease_s of its own clock, and it looks every
lease_s/5); a takeover also reaches every host and resumes the ops in
flight, which this measures without hosts (see tests/e2e/test_meo_replicas.py
for takeovers in the middle of real deploys).

    /opt/mecorch/venv/bin/python bench/meo_takeover.py [--kills 10] [--sqlite]

The database is a private PostgreSQL cluster this script starts and removes
(tests/support/pglab.py); --sqlite puts the replicas on one SQLite file
instead (one machine only).
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from support import lab                                 # noqa: E402

LEADER = "/mecorch/v1/leader"


def _leader(replicas: list) -> str | None:
    for p in replicas:
        if p.alive:
            try:
                if p.client.get(LEADER)["leading"]:
                    return p.name
            except Exception:   # noqa: BLE001 - one going away
                continue
    return None


def run(kills: int, sqlite: bool, lease_s: float) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="meo-takeover-"))
    token = secrets.token_hex(16)
    (tmp / "meo.token").write_text(token + "\n")
    db = None
    if not sqlite:
        from support.pglab import PgLab
        db = PgLab()
        db.make()
    replicas = []
    try:
        meo = {"heartbeat_s": 1, "lease_s": lease_s}
        if db is not None:
            meo["database"] = db.database()
        for i in range(3):
            cfg = {"role": "meo", "state_dir": str(tmp / "meo"), "run_dir": str(tmp / f"run{i}"),
                   "api": {"token_file": str(tmp / "meo.token")}, "hosts": [], "meo": meo}
            replicas.append(lab.Serve(cfg, tmp, name=f"meo{i}", role="meo", token=token))
        for p in replicas:
            p.start()
        times = []
        for k in range(kills):
            leader = lab.wait_for(lambda: _leader(replicas), 60, "a leader")
            proc = next(p for p in replicas if p.name == leader)
            proc.kill()
            t0 = time.monotonic()
            new = lab.wait_for(lambda: (lambda w: w if w and w != leader else None)(
                _leader(replicas)), 60, "another leader", step=0.02)
            took = time.monotonic() - t0
            times.append(took)
            print(f"kill {k + 1}: {leader} -> {new} in {took:.2f} s", flush=True)
            proc.start()
        times.sort()
        return {"kills": kills, "leaseS": lease_s,
                "database": "sqlite" if sqlite else "postgresql",
                "takeoverP50S": round(times[len(times) // 2], 2),
                "takeoverP99S": round(times[min(len(times) - 1, int(len(times) * 0.99))], 2),
                "takeoverMaxS": round(times[-1], 2), "boundS": round(lease_s * 1.2, 2)}
    finally:
        for p in replicas:
            p.stop()
        if db is not None:
            db.remove()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--lease-s", type=float, default=5.0)
    ap.add_argument("--sqlite", action="store_true")
    ap.add_argument("--out", default=str(REPO / "bench" / "results-meo-takeover.json"))
    args = ap.parse_args()
    got = run(args.kills, args.sqlite, args.lease_s)
    print(json.dumps(got, indent=1))
    Path(args.out).write_text(json.dumps(got, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
