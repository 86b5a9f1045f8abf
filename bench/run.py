#!/usr/bin/env python3
"""mecorch's benchmark suite: footprint, API overhead against the direct
backend calls, throughput, rule programming, store scale and start-up,
each against its target, in one run on the real backends. Prints one table
and writes it as JSON.

    /opt/mecorch/venv/bin/python bench/run.py [--out bench/results.json] [--quick]

Run as root on a provisioned host (dockerd, the registry on 127.0.0.1:5000,
libvirtd, the sample workloads in /var/cache/mecorch/workloads). Every
`mecorch serve` it starts has a state dir, host id, docker network,
libvirt pool/network (192.168.188.0/24, TCG), iptables chain prefix and
dnsmasq port of its own, all removed at the end. It talks only to
loopback and to the containers/VMs it started. Takes about 10 minutes
(--quick: fewer samples, about 5).
"""

from __future__ import annotations

import argparse
import json
import platform
import sqlite3
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import api_overhead                       # noqa: E402
import api_rules                          # noqa: E402
import footprint                          # noqa: E402
import startup                            # noqa: E402
import store_scale                        # noqa: E402
import throughput                         # noqa: E402
from lab import Lab                       # noqa: E402
import vim_overhead as vo                 # noqa: E402

CONTAINER_APP, VM_APP = "bench-http", "bench-vm"


def _docs(lab: Lab) -> tuple[dict, dict]:
    """A real onboarded package document and a real instance record (with
    the internal fields), read from the lab's store, for store_scale."""
    db = sqlite3.connect(f"file:{lab.tmp / 'state' / 'mecorch.db'}?mode=ro", uri=True)
    try:
        pkg = json.loads(db.execute("SELECT doc FROM packages WHERE appDId=?",
                                    (CONTAINER_APP,)).fetchone()[0])
        inst = json.loads(db.execute("SELECT doc FROM instances WHERE instantiationState="
                                     "'INSTANTIATED' LIMIT 1").fetchone()[0])
    finally:
        db.close()
    return pkg, inst


def sample_docs() -> tuple[dict, dict]:
    """Real documents for store_scale without the whole lab: onboard, one
    deploy, read, clean up."""
    lab = Lab()
    try:
        lab.start()
        lab.onboard("sample-container-app", CONTAINER_APP)
        ids = footprint.deploy_many(lab, CONTAINER_APP, 1)
        docs = _docs(lab)
        footprint.release(lab, ids)
        return docs
    finally:
        lab.close()


def _part(R: dict, key: str, fn, what: str) -> None:
    print(what, flush=True)
    try:
        R[key] = fn()
    except Exception:  # noqa: BLE001 - recorded; the suite goes on
        R.setdefault("errors", []).append(f"{key}: {traceback.format_exc()}")
        traceback.print_exc()


def main_lab(args, R: dict) -> tuple[dict, dict] | None:
    # 200 live containers of 0.5 vCPU (the throughput's deploy phase) on 2
    # cores need more than the default 4x ratio
    lab = Lab(cpu_allocation_ratio=64.0)
    docs = None
    try:
        R["startup_lab_s"] = round(lab.start(), 3)
        fp = R.setdefault("footprint", {})
        print("footprint: idle, fresh (no driver loaded yet)...", flush=True)
        fp["idle_fresh"] = footprint.idle(lab, args.idle_s)
        lab.onboard("sample-container-app", CONTAINER_APP)
        if not args.no_vm:
            lab.onboard("sample-vm-app", VM_APP)
        # one deploy+terminate so every driver is open and warm
        ids = footprint.deploy_many(lab, CONTAINER_APP, 1)
        footprint.release(lab, ids)
        print("footprint: idle, 0 instances...", flush=True)
        fp["idle_0"] = footprint.idle(lab, args.idle_s)
        print(f"footprint: deploying {args.instances} containers...", flush=True)
        ids = footprint.deploy_many(lab, CONTAINER_APP, args.instances)
        docs = _docs(lab)
        print(f"footprint: idle, {args.instances} containers...", flush=True)
        fp[f"idle_{args.instances}"] = footprint.idle(lab, args.idle_s)
        fp["per_instance"] = footprint.growth(fp["idle_0"], fp[f"idle_{args.instances}"],
                                              args.instances)
        footprint.release(lab, ids)
        if not args.no_vm:
            print("footprint: 1 VM...", flush=True)
            base = footprint.idle(lab, 10)
            ids = footprint.deploy_many(lab, VM_APP, 1)
            fp["idle_1vm"] = footprint.idle(lab, 10)
            fp["per_vm"] = footprint.growth(base, fp["idle_1vm"], 1)
            footprint.release(lab, ids)

        # each part on its own: one failing does not lose the others
        _part(R, "overhead_container", lambda: api_overhead.containers(
            lab, CONTAINER_APP, args.n_container),
            f"overhead: containers, {args.n_container} interleaved...")
        if not args.no_vm:
            _part(R, "overhead_vm", lambda: api_overhead.vms(lab, VM_APP, args.n_vm),
                  f"overhead: VMs, {args.n_vm} interleaved (TCG)...")
        _part(R, "throughput_container", lambda: throughput.run(
            lab, CONTAINER_APP, args.deploys, 8),
            f"throughput: {args.deploys} containers at concurrency 8...")
        _part(R, "throughput_container_direct", lambda: throughput.direct_containers(
            lab, CONTAINER_APP, args.direct_deploys, 8),
            f"throughput: {args.direct_deploys} direct docker-py cycles at concurrency 8...")
        if not args.no_vm:
            _part(R, "throughput_vm", lambda: throughput.run(
                lab, VM_APP, args.vm_deploys, 4,
                reach=lambda ip: vo.http_get(ip, time.monotonic() + 120)),
                f"throughput: {args.vm_deploys} VMs at concurrency 4...")
        _part(R, "rules", lambda: api_rules.run(lab, CONTAINER_APP, args.n_rules),
              f"rules: {args.n_rules} DNS + traffic rule changes through Mp1...")
    except Exception:  # noqa: BLE001 - report, clean up, print what we have
        R.setdefault("errors", []).append(traceback.format_exc())
        traceback.print_exc()
    finally:
        left = lab.close()
        if left:
            R.setdefault("errors", []).append(f"left behind: {left}")
    return docs


def table(R: dict) -> list[tuple[str, str, str, str]]:
    rows = []

    def add(metric, value, target, met):
        rows.append((metric, value, target, "-" if met is None else ("met" if met else "MISSED")))

    fp = R.get("footprint", {})
    for key in ("idle_fresh", "idle_0", next((k for k in fp if k.startswith("idle_")
                                              and k[5:].isdigit() and k != "idle_0"), None)):
        s = fp.get(key) if key else None
        if s:
            add(f"footprint {key}: RSS mean (max)", f"{s['rss_mb']} ({s['rss_max_mb']}) MB",
                "<= 60 MB", s["rss_max_mb"] <= 60)
            add(f"footprint {key}: CPU", f"{s['cpu_pct']} % of a core", "<= 1 %",
                s["cpu_pct"] <= 1)
    if "per_instance" in fp:
        g = fp["per_instance"]
        add("footprint: RSS growth per container", f"{g['rss_growth_mb_per_instance']} MB",
            "<= 0.5 MB", g["rss_growth_mb_per_instance"] <= 0.5)
        add("footprint: helper processes per container", str(g["descendants_growth"]),
            "0", g["descendants_growth"] == 0)
        n = next(k for k in fp if k.startswith("idle_") and k[5:].isdigit() and k != "idle_0")
        add(f"footprint: processes under serve / dnsmasq ({n})",
            f"{fp[n]['descendants']} / {fp[n]['dnsmasq']}", "0 / 1 per host",
            fp[n]["descendants"] == 0)
    if "per_vm" in fp:
        add("footprint: RSS growth per VM", f"{fp['per_vm']['rss_growth_mb_per_instance']} MB",
            "<= 0.5 MB", fp["per_vm"]["rss_growth_mb_per_instance"] <= 0.5)
    for key, t50, t99 in (("overhead_container", 1.25, 1.5), ("overhead_vm", 1.10, 1.10)):
        o = R.get(key)
        if o:
            kind = key.split("_")[1]
            add(f"overhead {kind} deploy+terminate p50 (API/direct)",
                f"{o['ratio_cycle_p50']}x ({o['api_cycle_p50_ms']:.0f}/{o['direct_cycle_p50_ms']:.0f} ms)",
                f"<= {t50}x", o["ratio_cycle_p50"] <= t50)
            add(f"overhead {kind} deploy+terminate p99 (API/direct)",
                f"{o['ratio_cycle_p99']}x ({o['api_cycle_p99_ms']:.0f}/{o['direct_cycle_p99_ms']:.0f} ms)",
                f"<= {t99}x", o["ratio_cycle_p99"] <= t99)
            add(f"overhead {kind} deploy only p50 / p99",
                f"{o['ratio_deploy_p50']}x / {o['ratio_deploy_p99']}x", "(detail)", None)
    t = R.get("throughput_container")
    d = R.get("throughput_container_direct")
    if t:
        ref = f" (direct {d['deploys_per_s']}/s)" if d else ""
        add(f"throughput containers: deploys ({t['total']} at c={t['concurrency']})",
            f"{t['deploys_per_s']}/s{ref}, {t['failures']} failed", ">= 2/s, 0 failed",
            t["deploys_per_s"] >= 2 and t["failures"] == 0)
        ref = f" (direct {d['terminates_per_s']}/s, {d['cycles_per_s']}/s)" if d else ""
        add("throughput containers: terminates, whole cycles",
            f"{t['terminates_per_s']}/s, {t['cycles_per_s']}/s{ref}", "(detail)", None)
    t = R.get("throughput_vm")
    if t:
        add(f"throughput VMs ({t['total']} at c={t['concurrency']}, TCG)",
            f"{t['deploys_per_s']}/s deploys, {t['failures']} failed",
            "0 failed (no rate target)",
            t["failures"] == 0)
    r = R.get("rules")
    if r:
        add("rules: Mp1 PUT -> DNS answer changed p50 / p99",
            f"{r['dns_effect_p50_ms']} / {r['dns_effect_p99_ms']} ms", "p99 < 100 ms",
            r["dns_effect_p99_ms"] < 100)
        add("rules: Mp1 PUT -> TCP steered p50 / p99",
            f"{r['traffic_effect_p50_ms']} / {r['traffic_effect_p99_ms']} ms", "p99 < 100 ms",
            r["traffic_effect_p99_ms"] < 100)
    s = R.get("store_scale")
    if s:
        for q in ("list_packages", "query_packages", "query_packages_state", "get_package",
                  "list_instances", "query_instances"):
            if f"{q}_p99_ms" in s:
                add(f"store {s['packages']} pkgs/{s['instances']} inst: {q} p50 / p99",
                    f"{s[f'{q}_p50_ms']} / {s[f'{q}_p99_ms']} ms ({s[f'{q}_items']} items)",
                    "p99 < 50 ms", s[f"{q}_p99_ms"] < 50)
        add("store: serve ready with that store", f"{s['startup_s']} s", "< 1 s",
            s["startup_s"] < 1)
    st = R.get("startup")
    if st:
        add(f"start-up: serve ready, median of {st['starts']}", f"{st['median_s']} s (max {st['max_s']})",
            "< 1 s", st["met"])
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results.json"))
    ap.add_argument("--quick", action="store_true", help="fewer samples (a smoke run)")
    ap.add_argument("--no-vm", action="store_true", help="skip every VM measurement")
    ap.add_argument("--only", choices=("lab", "store", "startup"),
                    help="one part only (lab: everything but the start-up series)")
    args = ap.parse_args()
    q = args.quick
    args.idle_s = 10 if q else 30
    args.instances = 20
    args.n_container = 6 if q else 30
    args.n_vm = 1 if q else 3
    args.deploys = 40 if q else 200
    args.direct_deploys = 40 if q else 200
    args.vm_deploys = 4 if q else 8
    args.n_rules = 10 if q else 50
    args.store_packages, args.store_instances = 10_000, 1_000

    R: dict = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "host": platform.node(), "quick": q}
    t0 = time.monotonic()
    docs = None
    if args.only in (None, "startup"):
        print("start-up: 5 starts...", flush=True)
        R["startup"] = startup.run(5)
    if args.only in (None, "lab"):
        docs = main_lab(args, R)
    if args.only == "store":
        docs = sample_docs()
    if docs:
        print(f"store scale: {args.store_packages} packages, {args.store_instances} instances...",
              flush=True)
        try:
            R["store_scale"] = store_scale.run(*docs, args.store_packages, args.store_instances)
        except Exception:  # noqa: BLE001
            R.setdefault("errors", []).append(traceback.format_exc())
            traceback.print_exc()
    R["duration_s"] = round(time.monotonic() - t0)
    rows = table(R)
    R["table"] = [dict(zip(("metric", "value", "target", "verdict"), r)) for r in rows]
    w = [max(len(r[i]) for r in rows + [("metric", "value", "target", "verdict")])
         for i in range(4)]
    print()
    for r in [("metric", "value", "target", "verdict")] + rows:
        print("  ".join(c.ljust(w[i]) for i, c in enumerate(r)))
    Path(args.out).write_text(json.dumps(R, indent=2) + "\n")
    print(f"\nwritten to {args.out} ({R['duration_s']} s)")
    return 1 if R.get("errors") else 0


if __name__ == "__main__":
    sys.exit(main())
