#!/usr/bin/env python3
"""An idle MEO's footprint, in one run: a single MEO on SQLite (the
default, no database server), and three replicas on PostgreSQL (the
leader and a replica that follows), each `mecorch serve --role meo` with
one real MEPM (`--role mepm`, docker) registered from its config: RSS
(mean, max) and CPU (% of one core) over an idle window, measured by
/proc of each process.

`--repo DIR` runs the single SQLite MEO from another checkout too (e.g.
a worktree of the commit before a change), in the same run, so "keeps
today's figures" is a comparison, not a recollection.

    /opt/mecorch/venv/bin/python bench/meo_idle.py [--seconds 30] [--repo /work/old]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

from lab import sample                                  # noqa: E402
from mecorch.kernel import config as mconfig            # noqa: E402
from support import lab                                 # noqa: E402

LEADER = "/mecorch/v1/leader"


def _meo(tmp: Path, name: str, mepm: lab.Serve, host_id: str, token: str, extra: dict,
         repo: Path | None = None) -> lab.Serve:
    cfg = {"role": "meo", "state_dir": str(tmp / extra.pop("state", name)),
           "run_dir": str(tmp / f"run-{name}"),
           "api": {"token_file": str(tmp / "meo.token")}, "hosts": [],
           "meo": {"mepms": [{"id": host_id, "url": mepm.url}], **extra}}
    env = None
    if repo is not None:            # another checkout's mecorch
        # its mecorch before the one this checkout installed, and not the
        # working directory's (PYTHONSAFEPATH): `-m` would put it first
        env = {**os.environ, "PYTHONPATH": str(repo), "PYTHONSAFEPATH": "1"}
    p = lab.Serve(cfg, tmp, name=name, role="meo", token=token, env=env)
    p.start()
    lab.wait_for(lambda: all(h["state"] == "REACHABLE" for h in p.client.get("/mecorch/v1/hosts")),
                 30, f"{name} to reach the MEPM")
    return p


def run(seconds: float, repo: Path | None) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="meo-idle-"))
    token = secrets.token_hex(16)
    (tmp / "meo.token").write_text(token + "\n")
    entry = {"id": lab.Names("mi").host_id, "cim": {}, "mep": {"service_cidr": "10.186.0.0/24"}}
    mepm_cfg = {"role": "mepm", "state_dir": str(tmp / "edge"), "run_dir": str(tmp / "run-edge"),
                "hosts": [entry]}
    procs: list[lab.Serve] = []
    pg = host = None
    out: dict = {"seconds": seconds}
    try:
        mepm = lab.Serve(mepm_cfg, tmp, name="edge", role="mepm")
        mepm.start()
        procs.append(mepm)
        host = mconfig.load(mepm.config_path)["hosts"][0]      # with its derived names
        host_id = host["id"]
        runs = [("sqlite", {}, None)]
        if repo is not None:
            runs.insert(0, ("sqlite_before", {}, repo))
        for label, extra, from_repo in runs:
            p = _meo(tmp, label, mepm, host_id, token, dict(extra), from_repo)
            procs.append(p)
            time.sleep(3)
            out[label] = sample(p.pid, seconds)
            p.stop()
        from support.pglab import PgLab
        pg = PgLab()
        pg.make()
        database = pg.database()
        replicas = [_meo(tmp, f"pg{i}", mepm, host_id, token,
                         {"database": database, "state": "pgstate"}) for i in range(3)]
        procs += replicas
        leader = lab.wait_for(lambda: next((p for p in replicas
                                            if p.client.get(LEADER)["leading"]), None),
                              30, "a leader")
        follower = next(p for p in replicas if p is not leader)
        time.sleep(3)
        out["pg_leader"] = sample(leader.pid, seconds)
        out["pg_follower"] = sample(follower.pid, seconds)
        return out
    finally:
        for p in reversed(procs):
            p.stop()
        if pg is not None:
            pg.remove()
        if host is not None:
            lab.remove_host(host, mepm_cfg["state_dir"], mepm_cfg["run_dir"])
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--repo", type=Path, help="another checkout: its SQLite MEO measured too")
    ap.add_argument("--out", default=str(REPO / "bench" / "results-meo-idle.json"))
    a = ap.parse_args()
    got = run(a.seconds, a.repo)
    for k, v in got.items():
        if isinstance(v, dict):
            print(f"{k:>14}: RSS {v['rss_mb']} MB (max {v['rss_max_mb']}), CPU {v['cpu_pct']} %, "
                  f"{v['threads']} threads")
    Path(a.out).write_text(json.dumps(got, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
