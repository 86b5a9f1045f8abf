"""Scale of the store: list and query latency through the API with 10,000
packages recorded and 10, 1,000 and 10,000 instances (the instance curve,
paged like the packages: one request is one page of api.page_size), and
the time `mecorch serve` takes to be ready on the largest store.

The records are written straight into a fresh SQLite store with
mecorch.kernel.store.Store and the edge host's views (copies of a real onboarded package's document and of
a real instance record, each with its own id/appDId/name), then `mecorch
serve` runs on that state dir with the lab's kind of config (a host id and
names of its own). Listing and querying never touch a backend. The
instances are recorded NOT_INSTANTIATED: INSTANTIATED records without a
runtime would only be marked MISSING by the reconciler, and the bench must
not make it touch anything.

Used by bench/run.py; not a standalone script.
"""

from __future__ import annotations

import copy
import json
import secrets
import shutil
import time
import urllib.request
from pathlib import Path


from lab import INST, PKGS, Serve, new_lab_dir, pct, remove_infrastructure
from mecorch.kernel import views
from mecorch.kernel.store import Store


def populate(db: Path, pkg_doc: dict, inst_doc: dict, packages: int, instances: int,
             first_instance: int = 0) -> None:
    store = Store(db, views.MEPM)         # as mecorch serve writes its rows
    try:
        with store.transaction():
            for i in range(packages):
                d = copy.deepcopy(pkg_doc)
                pid = f"pkg{i:06d}-{secrets.token_hex(8)}"
                d.update(id=pid, appDId=f"app-{i:05d}", appName=f"app-{i:05d}",
                         appPkgName=f"app-{i:05d}")
                d["_links"] = {k: {"href": v["href"].replace(pkg_doc["id"], pid)}
                               for k, v in d.get("_links", {}).items()}
                d["usageState"] = "IN_USE" if i < 1000 else "NOT_IN_USE"
                store.put("packages", pid, d)
            for i in range(first_instance, instances):
                d = copy.deepcopy(inst_doc)
                iid = f"inst{i:05d}-{secrets.token_hex(8)}"
                d.update(id=iid, appDId=f"app-{i:05d}", appName=f"app-{i:05d}",
                         appInstanceName=f"inst-{i:05d}",
                         instantiationState="NOT_INSTANTIATED")
                for k in ("instantiatedAppState", "hostId", "deploymentType",
                          "allocatedResources", "_handle", "_need", "_opId", "_observed"):
                    d.pop(k, None)
                d["_links"] = {k: {"href": v["href"].replace(inst_doc["id"], iid)}
                               for k, v in d.get("_links", {}).items()}
                store.put("instances", iid, d)
    finally:
        store.close()


def _time(api, path: str, n: int) -> tuple[list[float], int]:
    """Request to the last byte of the answer; the answer is decoded after
    the clock stops (decoding 8 MB of JSON is the client's cost)."""
    url = api.base + path
    urllib.request.urlopen(url).read()           # warm: page cache, code paths
    out, body = [], b""
    for _ in range(n):
        t0 = time.perf_counter()
        with urllib.request.urlopen(url, timeout=60) as resp:
            body = resp.read()
        out.append(time.perf_counter() - t0)
    doc = json.loads(body)
    return out, len(doc) if isinstance(doc, list) else 1


def _time_all_pages(api, path: str, n: int) -> tuple[list[float], int, int]:
    """Every page of a paged listing, following Link rel="next" (reported
    beside the per-request figures: a client that wants all 10,000)."""
    out, items, pages = [], 0, 0
    for _ in range(n):
        t0 = time.perf_counter()
        url, items, pages = api.base + path, 0, 0
        while url:
            with urllib.request.urlopen(url, timeout=60) as resp:
                items += len(json.loads(resp.read()))
                link = resp.headers.get("Link", "")
            pages += 1
            url = api.base + link.split(";")[0].strip("<> ") if 'rel="next"' in link else None
        out.append(time.perf_counter() - t0)
    return out, items, pages


def _serve(cfg_path: Path, tmp: Path, host_id: str) -> tuple[Serve, float]:
    serve = Serve(cfg_path, tmp / "serve.log", host_id)
    try:
        return serve, serve.ready(timeout=120)
    except BaseException:
        serve.stop()
        raise


def _measure(out: dict, api, queries: dict, n: int, suffix: str = "") -> float:
    worst = 0.0
    for name, path in queries.items():
        vals, size = _time(api, path, n)
        out[f"{name}{suffix}_p50_ms"] = round(pct(vals, 50) * 1e3, 1)
        out[f"{name}{suffix}_p99_ms"] = round(pct(vals, 99) * 1e3, 1)
        out[f"{name}{suffix}_items"] = size
        worst = max(worst, pct(vals, 99))
    return worst


def run(pkg_doc: dict, inst_doc: dict, packages: int = 10_000,
        instance_sizes: tuple[int, ...] = (10, 1_000, 10_000), n: int = 30) -> dict:
    tag = secrets.token_hex(3)
    tmp, cfg, cfg_path, host_id = new_lab_dir(tag)
    db = tmp / "state" / "mecorch.db"
    out: dict = {"packages": packages, "instance_sizes": list(instance_sizes), "n": n,
                 "instances_curve": {}}
    have = 0
    serve = None
    try:
        for k, size in enumerate(instance_sizes):
            t0 = time.perf_counter()
            populate(db, pkg_doc, inst_doc, packages if k == 0 else 0, size, have)
            have = size
            out.setdefault("populate_s", []).append(round(time.perf_counter() - t0, 1))
            serve, ready = _serve(cfg_path, tmp, host_id)
            api = serve.api
            row: dict = {"serve_ready_s": round(ready, 3)}
            _measure(row, api, {"list_instances": INST,
                                "query_instances": f"{INST}?filter=(eq,appDId,app-00004)",
                                "query_instances_name":
                                    f"{INST}?filter=(eq,appInstanceName,inst-{size - 1:05d})"}, n)
            vals, items, pages = _time_all_pages(api, INST, 3)
            row["all_instance_pages_p50_ms"] = round(pct(vals, 50) * 1e3, 1)
            row["all_instance_pages_items"], row["all_instance_pages"] = items, pages
            out["instances_curve"][str(size)] = row
            print(f"    store with {size} instances: {row}", flush=True)
            if k == len(instance_sizes) - 1:
                out["instances"] = size
                out["startup_s"] = round(ready, 3)
                mid = f"app-{packages * 4242 // 10_000:05d}"      # app-04242 of 10,000
                queries = {
                    "list_packages": PKGS,
                    "query_packages": f"{PKGS}?filter=(eq,appName,{mid})",
                    "query_packages_state": f"{PKGS}?filter=(eq,usageState,IN_USE)",
                    "list_instances": INST,
                    "query_instances": f"{INST}?filter=(eq,appDId,app-{size * 424 // 10_000:05d})",
                }
                one = api.get(f"{PKGS}?filter=(eq,appName,{mid})")[0]["id"]
                queries["get_package"] = f"{PKGS}/{one}"
                worst = _measure(out, api, queries, n)
                out["worst_p99_ms"] = round(worst * 1e3, 1)
                vals, items, pages = _time_all_pages(api, PKGS, max(3, n // 10))
                out["all_package_pages_p50_ms"] = round(pct(vals, 50) * 1e3, 1)
                out["all_package_pages_items"] = items
                out["all_package_pages"] = pages
                out["met"] = worst < 0.050
            serve.stop()
            serve = None
    finally:
        if serve is not None:
            serve.stop()
        remove_infrastructure(cfg, tag, str(tmp / "state" / "hosts" / host_id),
                              str(tmp / "run" / host_id), tmp=str(tmp))
        shutil.rmtree(tmp, ignore_errors=True)
    return out
