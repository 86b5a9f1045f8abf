#!/usr/bin/env python3
"""Relocation downtime, as a client sees it: one MEO, two MEPM processes on
this machine (tests/support/sites.py: each with dockerd's CIM, libvirt's
VIM, and a MEP in a network namespace of its own), an app relocated back
and forth between them while a client in each site's netns asks for the
app's DNS name and a path every 100 ms.

For each relocation (cold: the source's copy stops, its data is carried,
the target's starts):
  downtime   from the source site's last answer to the target site's first
             answer (how long neither site answered)
  outageS    the MEO's own figure (relocatedFrom[].outageS: the source's
             stop sent to the target's instantiate COMPLETED)
and, measured in the same run as the reference, a fresh deploy of the same
app on the same host through that MEPM's own API (create + instantiate
until COMPLETED, then until it answers on its site): what a relocation
costs against starting a copy from nothing. The ratio is downtime p50 /
fresh deploy p50.

Container: the sample HTTP app with a named volume holding a file (the
client asks for the file). VM: the sample VM with its data disk (the
client asks for its page); under TCG (no KVM here) most of it is boot.
Live migration is not built (cold only).

    PYTHONPATH=$PWD /opt/mecorch/venv/bin/python bench/relocate_downtime.py \\
        [--containers 6] [--vms 3] [--out bench/results-relocate.json]
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

from cim_overhead import pct                                # noqa: E402
from support import lab, sites                              # noqa: E402

INST = "/app_lcm/v1/app_instances"
PAYLOAD = f"bench-{secrets.token_hex(6)}"
POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bench"},
       "spec": {"containers": [{"name": "app", "image": "mecorch/sample-http:1.0",
                                "volumeMounts": [{"name": "data", "mountPath": "/www/data"}]}],
                "volumes": [{"name": "data", "emptyDir": {"sizeLimit": "64Mi"}}]}}
APPS = {
    "container": {"appDId": "sample-http", "name": "sample-http.mec.local",
                  "path": "/data/f.txt", "want": PAYLOAD,
                  "body": {"deploymentType": "CONTAINER", "orchestrationInfo": yaml.safe_dump(POD)}},
    "vm": {"appDId": "sample-vm", "name": "sample-vm.mec.local", "path": "/",
           "want": "mecorch sample vm", "body": {"deploymentType": "VM"}},
}


def _ok(op: dict) -> dict:
    assert op["operationState"] == "COMPLETED", op
    return op


def _deploy(c, app: dict, host: str) -> str:
    iid = c.post(INST, {"appDId": app["appDId"]})[0]["id"]
    body = {**app["body"], "selectedMECHostInfo": [{"hostId": {"id": host}}]}
    _ok(c.wait_op(c.post(f"{INST}/{iid}/instantiate", body)[0], timeout=300))
    return iid


def _remove(c, iid: str) -> None:
    _ok(c.wait_op(c.post(f"{INST}/{iid}/terminate", {"terminationType": "FORCEFUL"})[0],
                  timeout=180))
    c.call("DELETE", f"{INST}/{iid}")


def fresh_deploy(s: dict, app: dict, edge: dict) -> float:
    """A deploy of the app on `edge` through its MEPM's own API, until it
    answers on its site: the reference."""
    c = s["procs"][edge["name"]].client
    t0 = time.monotonic()
    iid = _deploy(c, {**app, "body": {k: v for k, v in app["body"].items()}}, edge["id"])
    want = "mecorch sample" if app["want"] == PAYLOAD else app["want"]
    lab.wait_for(lambda: want in sites.answer(edge, app["name"], "/"), 300,
                 "the fresh copy answering")
    took = time.monotonic() - t0
    _remove(c, iid)
    return took


def relocations(s: dict, kind: str, n: int) -> dict:
    app, c = APPS[kind], s["c"]
    edges = list(s["edges"].values())
    iid = _deploy(c, app, edges[0]["id"])
    if kind == "container":
        src = c.get(f"{INST}/{iid}")["hostId"]
        [cid] = lab.run("docker", "ps", "-q", "--filter", f"label=mecorch.host={src}",
                        "--filter", "label=mecorch.role=app").stdout.split()
        lab.run("docker", "exec", cid, "sh", "-c", f"echo {PAYLOAD} > /www/data/f.txt")
    down, outage, fresh = [], [], []
    try:
        for i in range(n):
            src = c.get(f"{INST}/{iid}")["hostId"]
            dst = sites.other(s, src)
            lab.wait_for(lambda: app["want"] in sites.answer(sites.edge_of(s, src), app["name"],
                                                             app["path"]),
                         300, "the source answering")
            client = sites.Client(edges, app["name"], app["path"], app["want"])
            try:
                t0 = time.monotonic()
                _ok(c.wait_op(c.post(f"{INST}/{iid}/relocate", {"hostId": dst["id"]})[0],
                              timeout=600))
                lab.wait_for(lambda: bool(client.seen[dst["id"]]), 300, "the target answering")
            finally:
                client.stop()
            down.append(client.downtime(src, dst["id"], t0))
            outage.append(c.get(f"{INST}/{iid}")["relocatedFrom"][-1]["outageS"])
            print(f"  {kind} {i + 1}/{n}: {src} -> {dst['id']}: downtime {down[-1]:.2f} s, "
                  f"MEO outageS {outage[-1]} s", flush=True)
    finally:
        _remove(c, iid)
    for i in range(n):
        fresh.append(fresh_deploy(s, app, edges[i % 2]))
        print(f"  {kind} fresh deploy {i + 1}/{n} on its MEPM: {fresh[-1]:.2f} s", flush=True)
    return {"n": n, "downtime_p50_s": round(pct(down, 50), 2),
            "downtime_max_s": round(max(down), 2),
            "outage_p50_s": round(pct(outage, 50), 2),
            "fresh_deploy_p50_s": round(pct(fresh, 50), 2),
            "ratio_p50": round(pct(down, 50) / pct(fresh, 50), 2),
            "downtimes_s": [round(d, 2) for d in down]}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--containers", type=int, default=6)
    ap.add_argument("--vms", type=int, default=3)
    ap.add_argument("--out", default=str(REPO / "bench" / "results-relocate.json"))
    a = ap.parse_args()
    res = {}
    with sites.two_sites("relobench") as s:
        if a.containers:
            res["container"] = relocations(s, "container", a.containers)
        if a.vms:
            res["vm"] = relocations(s, "vm", a.vms)
    print()
    print(f"{'relocation (cold)':<12} {'n':>3} {'downtime p50':>13} {'max':>7} "
          f"{'MEO outageS p50':>16} {'fresh deploy p50':>17} {'ratio':>6}")
    for kind, r in res.items():
        print(f"{kind:<12} {r['n']:>3} {r['downtime_p50_s']:>11.2f} s {r['downtime_max_s']:>5.2f} s "
              f"{r['outage_p50_s']:>14.2f} s {r['fresh_deploy_p50_s']:>15.2f} s "
              f"{r['ratio_p50']:>5.2f}x")
    Path(a.out).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
