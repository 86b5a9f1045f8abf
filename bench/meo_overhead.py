#!/usr/bin/env python3
"""The MEO's cost as the system grows, and its hop to an MEPM.

1. Placement + dispatch with 1, 10 and 100 registered MEPMs. The MEPMs are
   in-process (LocalMepm over host-level Orchestrators) on the IN-MEMORY
   drivers of tests/support/fakes.py: what is measured is the MEO's own work
   (decision, placement over N hosts' reports, journal, package copy on
   first use, dispatch, following the host's op), not a backend. Each
   figure is against the same deploy made directly on the host's LCM in
   the same run (the in-process path), so the ratio is the MEO's share.
   `place` alone (the pure function over N candidates) is timed too.
2. On the real backends: container deploy + terminate through an MEO
   process over HTTP to a real MEPM process, against the same deploy made
   through that MEPM's own API (the single-node path: one process, no hop),
   interleaved in one run. Both make the same docker objects (the MEPM
   does the work in both cases); the difference is the MEO's hop. The MEO
   learns that the host's op ended from the host's own notification
   (mecorch.meo.follow), as it does with every MEPM it reaches over HTTP.

    /opt/mecorch/venv/bin/python bench/meo_overhead.py [--quick] [--out bench/results-meo.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))


from cim_overhead import pct                                # noqa: E402
from lab import NO_RULES, PKGS, Api, Lab, testlab           # noqa: E402
from mecorch.kernel import config                                  # noqa: E402
from mecorch.kernel.fileutil import sha256_file                    # noqa: E402
from mecorch.spec.capacity import Need                              # noqa: E402
from mecorch.spec import placement                           # noqa: E402
from mecorch.meo.orchestrator import MeoOrchestrator        # noqa: E402
from mecorch.mepm.local import LocalMepm                    # noqa: E402
from mecorch.mepm.orchestrator import Orchestrator               # noqa: E402
from mecorch.kernel.states import DeploymentType                   # noqa: E402


# ---------------------------------------------------------------- 1. in memory
def _fake_system(tmp: Path, n: int):
    from support.fakes import FakeCompute, FakeMep
    hosts = []
    for i in range(n):
        cfg = config.load()
        cfg["state_dir"] = str(tmp / f"h{i}")
        cfg["hosts"][0]["id"] = f"edge{i:03d}"
        cfg["hosts"][0]["vim"] = None
        cfg["orchestrator"]["reconcile_interval_s"] = 0
        orch = Orchestrator(cfg)
        host = orch.inventory.get(f"edge{i:03d}")
        host.attach("cim", FakeCompute(DeploymentType.CONTAINER, cpus=64, memory_mb=1 << 20))
        host.attach("mep", FakeMep())
        hosts.append(orch)
    cfg = config.load()
    cfg["state_dir"] = str(tmp / "meo")
    cfg["hosts"] = []
    cfg["meo"]["heartbeat_s"] = 0
    meo = MeoOrchestrator(cfg)
    for orch in hosts:
        meo.registry.attach(LocalMepm(orch, next(iter(orch.inventory.hosts))))
    return meo, hosts


def _fake_package(tmp: Path) -> dict:
    from support.corelab import CONTAINER_APPD, fake_docker_tar, make_package
    z = make_package(tmp, CONTAINER_APPD, fake_docker_tar(), appTrafficRule=[], appDNSRule=[])
    return {"appPkgName": "bench", "appPkgVersion": "1", "appPkgPath": str(z),
            "checksum": {"algorithm": "SHA-256",
                         "hash": hashlib.sha256(z.read_bytes()).hexdigest()}}


def _wait_done(get_op, op_id: str) -> dict:
    while True:
        op = get_op(op_id)
        if op["operationState"] in ("COMPLETED", "FAILED"):
            return op
        time.sleep(0.001)


def in_memory(n_hosts: int, deploys: int) -> dict:
    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="mecorch-meo-bench-") as d:
        tmp = Path(d)
        meo, hosts = _fake_system(tmp, n_hosts)
        try:
            body = _fake_package(tmp)
            pkg = meo.packages.onboard(dict(body))
            for orch in hosts:
                orch.packages.onboard(dict(body))
            # warm-up: the package copy on each host is a first-use cost
            accepted, done, direct = [], [], []
            for i in range(deploys):
                # through the MEO: placement over every host's report, dispatch
                inst = meo.lcm.create({"appDId": pkg["appDId"]})
                t0 = time.perf_counter()
                op = meo.lcm.instantiate(inst["id"], {"deploymentType": "CONTAINER"})
                t1 = time.perf_counter()
                op = _wait_done(meo.lcm.op, op["id"])
                t2 = time.perf_counter()
                assert op["operationState"] == "COMPLETED", op
                accepted.append(t1 - t0)
                done.append(t2 - t0)
                # the same deploy on one host's LCM directly
                orch = hosts[i % n_hosts]
                hid = next(iter(orch.inventory.hosts))
                inst = orch.lcm.create({"appDId": pkg["appDId"]})
                t0 = time.perf_counter()
                op = orch.lcm.instantiate(inst["id"], {
                    "deploymentType": "CONTAINER", "selectedMECHostInfo": [{"hostId": {"id": hid}}]})
                op = _wait_done(orch.lcm.op, op["id"])
                direct.append(time.perf_counter() - t0)
                assert op["operationState"] == "COMPLETED", op
            cands = meo.registry.candidates()
            t0 = time.perf_counter()
            for _ in range(200):
                placement.place(DeploymentType.CONTAINER, Need(0.5, 64, 0.1), cands)
            place_us = (time.perf_counter() - t0) / 200 * 1e6
            spread = len({i["hostId"] for i in meo.lcm.list() if i.get("hostId")})
        finally:
            meo.close()
            for orch in hosts:
                orch.close()
    logging.disable(logging.NOTSET)
    first = done[:n_hosts]          # each host's first deploy copies the package there
    steady = done[n_hosts:] or done
    return {"hosts": n_hosts, "deploys": deploys, "hosts_used": spread,
            "place_us": round(place_us, 1),
            "accepted_p50_ms": round(pct(accepted, 50) * 1e3, 2),
            "accepted_p99_ms": round(pct(accepted, 99) * 1e3, 2),
            "meo_deploy_p50_ms": round(pct(steady, 50) * 1e3, 2),
            "meo_deploy_p99_ms": round(pct(steady, 99) * 1e3, 2),
            "first_use_p50_ms": round(pct(first, 50) * 1e3, 2),
            "direct_deploy_p50_ms": round(pct(direct, 50) * 1e3, 2),
            "direct_deploy_p99_ms": round(pct(direct, 99) * 1e3, 2)}


# ---------------------------------------------------------------- 2. real backends
def _cycle(api: Api, app_d_id: str) -> float:
    t0 = time.perf_counter()
    iid, op = api.deploy(app_d_id, **NO_RULES)
    if op["operationState"] != "COMPLETED":
        raise RuntimeError(f"deploy failed: {op.get('error')}")
    op = api.terminate(iid)
    if op["operationState"] != "COMPLETED":
        raise RuntimeError(f"terminate failed: {op.get('error')}")
    api.delete(iid)
    return time.perf_counter() - t0


def real(n: int) -> dict:
    lab = Lab()
    # an MEO's MEPM (role mepm): it takes the MEO's ids for what it makes
    # (X-Mecorch-Meo-Id), which a single node refuses; its own API serves
    # the direct path as a node's does
    lab.cfg["role"] = "mepm"
    lab.cfg_path.write_text(yaml.safe_dump(lab.cfg))
    meo_proc = None
    try:
        lab.start()
        lab.onboard("sample-container-app", "bench-meo-http")
        cfg = {"role": "meo", "state_dir": str(lab.tmp / "meo"),
               "run_dir": str(lab.tmp / "run-meo"),
               "hosts": [], "meo": {"heartbeat_s": 1, "mepms": [
                   {"id": lab.host_id, "url": f"http://127.0.0.1:{lab.serve.port}"}]}}
        meo_proc = testlab.Serve(cfg, lab.tmp, name="meo", role="meo", client_timeout_s=120)
        meo_proc.start()
        meo = Api(meo_proc.url, token="", timeout=120)
        meo.host_id = lab.host_id
        testlab.wait_for(lambda: all(h["state"] == "REACHABLE"
                                     for h in meo.get("/mecorch/v1/hosts")),
                         30, "the MEO to reach the MEPM", step=0.05)
        zpath = lab.tmp / "bench-meo-http.zip"
        meo.post(PKGS, {"appPkgName": "bench-meo-http", "appPkgVersion": "1.0",
                        "appPkgPath": str(zpath),
                        "checksum": {"algorithm": "SHA-256", "hash": sha256_file(zpath)}})
        # The MEO's copy of the package on the MEPM is a second package of
        # the same appDId there: the direct path deploys the lab's own.
        _cycle(meo, "bench-meo-http")               # warm-up (+ first-use copy)
        _cycle(lab.api, "bench-meo-http")
        res = {"meo": [], "direct": []}
        for i in range(n):
            order = [("meo", meo), ("direct", lab.api)]
            for name, api in (order if i % 2 == 0 else order[::-1]):
                res[name].append(_cycle(api, "bench-meo-http"))
        out = {"n": n}
        for name, vals in res.items():
            out[f"{name}_cycle_p50_ms"] = round(pct(vals, 50) * 1e3, 1)
            out[f"{name}_cycle_p99_ms"] = round(pct(vals, 99) * 1e3, 1)
        out["ratio_p50"] = round(out["meo_cycle_p50_ms"] / out["direct_cycle_p50_ms"], 3)
        out["ratio_p99"] = round(out["meo_cycle_p99_ms"] / out["direct_cycle_p99_ms"], 3)
        return out
    finally:
        if meo_proc is not None:
            meo_proc.stop()
        problems = lab.close()
        if problems:
            print("cleanup:", problems, file=sys.stderr)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=str(REPO / "bench" / "results-meo.json"))
    ap.add_argument("--no-real", action="store_true", help="only the in-memory part")
    a = ap.parse_args()
    results = {"in_memory": [], "real": None}
    print(f"{'MEPMs':>6} {'place':>9} {'accepted p50/p99 ms':>20} {'MEO deploy p50/p99':>19} "
          f"{'direct p50/p99':>15} {'first use':>10} {'hosts used':>10}")
    for n_hosts in (1, 10, 100):
        deploys = max(n_hosts * 2, 40 if a.quick else 100)
        r = in_memory(n_hosts, deploys)
        results["in_memory"].append(r)
        print(f"{n_hosts:>6} {r['place_us']:>7.1f}us {r['accepted_p50_ms']:>9.2f}/"
              f"{r['accepted_p99_ms']:<9.2f} {r['meo_deploy_p50_ms']:>8.2f}/"
              f"{r['meo_deploy_p99_ms']:<9.2f} {r['direct_deploy_p50_ms']:>6.2f}/"
              f"{r['direct_deploy_p99_ms']:<7.2f} {r['first_use_p50_ms']:>8.2f}ms "
              f"{r['hosts_used']:>10}")
    print("(in-memory drivers: the MEO's own cost; the MEO follows an in-process host's op "
          "by polling, 5 ms backing off to 20 ms: a read of its store)")
    if not a.no_real:
        r = real(6 if a.quick else 20)
        results["real"] = r
        print(f"real container deploy+terminate, n={r['n']}: MEO->MEPM over HTTP p50 "
              f"{r['meo_cycle_p50_ms']} ms / p99 {r['meo_cycle_p99_ms']} ms; the MEPM's own "
              f"API p50 {r['direct_cycle_p50_ms']} ms / p99 {r['direct_cycle_p99_ms']} ms; "
              f"ratio p50 {r['ratio_p50']}x, p99 {r['ratio_p99']}x")
    Path(a.out).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
