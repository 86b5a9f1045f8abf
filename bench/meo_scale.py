#!/usr/bin/env python3
"""An MEO at scale: 1,000 registered edge hosts, 10,000 instances.

A real `mecorch serve --role meo` process (its own config and state in a
temp dir, loopback only) reaches its hosts over HTTP (RemoteMepm, Mm3), as
it reaches real MEPMs. The hosts are a STAND-IN (bench/standin.py): one
process answering the Mm3 calls for all of them, each host on a port of
its own, with the real MEPM's JSON shapes and no work behind them, so
what is measured is the MEO's own cost.

Phases and what each figure is:
  register    every host through the MEO's POST /mecorch/v1/hosts (the MEO
              discovers it and asks its info once), until all are REACHABLE
  place       create + instantiate N instances through the MEO's
              /app_lcm/v1 (one client, sequential; the last --with-claims
              of an app with a DNS name, whose placement reads the claims
              every instance holds): "instantiate" is the
              time of the MEO's answer (202) to POST .../instantiate, which
              holds the planning, the placement over every host's report
              and the claims held, the reservation and the journalled op;
              the host's work follows in the MEO's workers
  rss         the MEO's VmRSS once every instance is INSTANTIATED
  listings    GET /app_lcm/v1/app_instances (default page) and GET
              /mecorch/v1/hosts, sequential
  idle cpu    the MEO process's CPU (utime+stime, all threads) over an idle
              window with every host REACHABLE: heartbeats + sync loop
  storm       the stand-in stopped (SIGTERM; it keeps its hosts' instances)
              until the MEO shows every host UNREACHABLE; then started again:
              time until every host is REACHABLE in the MEO's host list and
              the stand-in has answered every host's instance listing (the
              MEO's resync reads it) since its restart

    PYTHONPATH=$PWD /opt/mecorch/venv/bin/python bench/meo_scale.py \\
        [--hosts 1000] [--instances 10000] [--idle-s 30] [--usage] \\
        [--out bench/results-meo-scale.json]

--usage: the stand-in's host info carries each instance's figures
(`resourceUsage.byInstance`, as an MEPM reports them), new at every
heartbeat; the MEO keeps them in memory and in each host's host_states row.
"""

from __future__ import annotations

import argparse
import http.client
import json
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

from cim_overhead import pct                                # noqa: E402
from lab import cpu_s, rss_mb                               # noqa: E402
from mecorch.kernel.fileutil import sha256_file             # noqa: E402
from support import lab as testlab                          # noqa: E402
from support.corelab import CONTAINER_APPD, fake_docker_tar, make_package   # noqa: E402

INST = "/app_lcm/v1/app_instances"
HOSTS = "/mecorch/v1/hosts"
TARGETS = {"instantiate_p99_ms": 50, "idle_cpu_pct": 10, "storm_s": 60, "rss_mb": 150,
           "page_p99_ms": 50}


class Conn:
    """One kept-alive connection to the MEO (one per thread)."""

    def __init__(self, port: int):
        self.port = port
        self._local = threading.local()

    def call(self, method: str, path: str, body=None) -> tuple[int, object]:
        conn = getattr(self._local, "c", None)
        if conn is None:
            conn = self._local.c = http.client.HTTPConnection("127.0.0.1", self.port,
                                                              timeout=120)
        data = json.dumps(body).encode() if body is not None else None
        for attempt in (1, 2):
            try:
                conn.request(method, path, body=data,
                             headers={"Content-Type": "application/json"} if data else {})
                r = conn.getresponse()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # the MEO closed the kept-alive connection while it was idle
                conn.close()
                if attempt == 2:
                    raise
        raw = r.read()
        return r.status, (json.loads(raw) if raw else None)

    def ok(self, method: str, path: str, body=None, want=(200, 201, 202)) -> object:
        status, doc = self.call(method, path, body)
        if status not in want:
            raise RuntimeError(f"{method} {path}: HTTP {status}: {doc}")
        return doc


class Standin:
    """bench/standin.py as a subprocess, started and stopped by its pid."""

    def __init__(self, tmp: Path, hosts: int, usage: bool = False):
        self.tmp, self.hosts, self.usage = tmp, hosts, usage
        self.ports_file, self.state = tmp / "standin.ports", tmp / "standin.json"
        self.proc: subprocess.Popen | None = None

    def start(self) -> dict[str, int]:
        self.ports_file.unlink(missing_ok=True)
        log = open(self.tmp / "standin.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, str(REPO / "bench" / "standin.py"), "--hosts", str(self.hosts),
             "--ports-file", str(self.ports_file), "--state", str(self.state),
             *(["--usage"] if self.usage else [])],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        testlab.wait_for(self.ports_file.exists, 120, "the stand-in's ports", step=0.05)
        ports = dict(line.split() for line in self.ports_file.read_text().splitlines())
        self.control = int(ports.pop("control"))
        return {h: int(p) for h, p in ports.items()}

    def stats(self) -> dict:
        c = http.client.HTTPConnection("127.0.0.1", self.control, timeout=10)
        c.request("GET", "/standin/stats")
        out = json.loads(c.getresponse().read())
        c.close()
        return out

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=120)


def host_states(meo: Conn) -> dict[str, int]:
    out: dict[str, int] = {}
    for h in meo.ok("GET", HOSTS):
        out[h["state"]] = out.get(h["state"], 0) + 1
    return out


def timed(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def ms(values: list[float], p: float) -> float:
    return round(pct(values, p) * 1e3, 2)


def run(a) -> dict:
    res: dict = {"hosts": a.hosts, "instances": a.instances,
                 "standin": "bench/standin.py: ONE process answering Mm3 for every host "
                            "(real MEPM JSON shapes, no work behind them)",
                 "meo_config": {"heartbeat_s": a.heartbeat_s}}
    with tempfile.TemporaryDirectory(prefix="mecorch-meo-scale-") as d:
        tmp = Path(d)
        standin = Standin(tmp, a.hosts, a.usage)
        res["usage_reported"] = a.usage
        meo_proc = None
        try:
            t0 = time.perf_counter()
            ports = standin.start()
            print(f"stand-in (not an MEPM: bench/standin.py) up with {len(ports)} hosts in "
                  f"{time.perf_counter() - t0:.1f} s")
            meo_cfg = {"heartbeat_s": a.heartbeat_s}
            meo_cfg.update(json.loads(a.meo_config or "{}"))
            res["meo_config"] = meo_cfg
            cfg = {"role": "meo", "state_dir": str(tmp / "meo"), "run_dir": str(tmp / "run-meo"),
                   "hosts": [], "meo": meo_cfg}
            meo_proc = testlab.Serve(cfg, tmp, name="meo", role="meo", client_timeout_s=120)
            meo_proc.start()
            meo = Conn(meo_proc.port)

            # ---------------------------------------------------- register
            t0 = time.perf_counter()
            reg = []

            def register(item):
                hid, port = item
                t = time.perf_counter()
                meo.ok("POST", HOSTS, {"hostId": hid, "url": f"http://127.0.0.1:{port}"})
                reg.append(time.perf_counter() - t)
            with ThreadPoolExecutor(4) as pool:
                list(pool.map(register, ports.items()))
            testlab.wait_for(lambda: host_states(meo).get("REACHABLE") == a.hosts, 300,
                             "every host REACHABLE", step=0.5)
            res["register_all_s"] = round(time.perf_counter() - t0, 1)
            res["register_p50_ms"], res["register_p99_ms"] = ms(reg, 50), ms(reg, 99)
            print(f"registered {a.hosts} hosts in {res['register_all_s']} s "
                  f"(each p50 {res['register_p50_ms']} ms, p99 {res['register_p99_ms']} ms)")

            # ---------------------------------------------------- place
            zpath = make_package(tmp, CONTAINER_APPD, fake_docker_tar(), appDId="bench-scale",
                                 appTrafficRule=[], appDNSRule=[])
            meo.ok("POST", "/app_pkgm/v1/app_packages", {
                "appPkgName": "bench-scale", "appPkgVersion": "1.0", "appPkgPath": str(zpath),
                "checksum": {"algorithm": "SHA-256", "hash": sha256_file(zpath)}})
            # the last --with-claims instances are of an app with a DNS name:
            # their placement reads the claims every instance holds (_held)
            zpath = make_package(tmp, CONTAINER_APPD, fake_docker_tar(),
                                 appDId="bench-scale-dns", appTrafficRule=[])
            meo.ok("POST", "/app_pkgm/v1/app_packages", {
                "appPkgName": "bench-scale-dns", "appPkgVersion": "1.0",
                "appPkgPath": str(zpath),
                "checksum": {"algorithm": "SHA-256", "hash": sha256_file(zpath)}})
            plain = a.instances - a.with_claims
            created, placed = [], []
            t0 = time.perf_counter()
            for i in range(a.instances):
                t = time.perf_counter()
                inst = meo.ok("POST", INST, {"appDId": "bench-scale" if i < plain
                                             else "bench-scale-dns"})
                t1 = time.perf_counter()
                meo.ok("POST", f"{INST}/{inst['id']}/instantiate",
                       {"deploymentType": "CONTAINER"})
                placed.append(time.perf_counter() - t1)
                created.append(t1 - t)
                if (i + 1) % 1000 == 0:
                    last = placed[-1000:]
                    print(f"  {i + 1:>6} instances: instantiate p50 {ms(last, 50)} ms "
                          f"p99 {ms(last, 99)} ms (these 1000), "
                          f"{time.perf_counter() - t0:.0f} s so far", flush=True)
            res["place_all_s"] = round(time.perf_counter() - t0, 1)
            res["create_p50_ms"], res["create_p99_ms"] = ms(created, 50), ms(created, 99)
            res["instantiate_p50_ms"] = ms(placed, 50)
            res["instantiate_p99_ms"] = ms(placed, 99)
            res["instantiate_p99_by_1000_ms"] = [ms(placed[i:i + 1000], 99)
                                                 for i in range(0, len(placed), 1000)]
            res["plain_instantiate_p50_ms"] = ms(placed[:plain], 50)
            res["plain_instantiate_p99_ms"] = ms(placed[:plain], 99)
            if a.with_claims:
                res["claims_instances"] = a.with_claims
                res["claims_instantiate_p50_ms"] = ms(placed[plain:], 50)
                res["claims_instantiate_p99_ms"] = ms(placed[plain:], 99)
                print(f"  the last {a.with_claims} (an app with a DNS name: the held claims "
                      f"read): instantiate p50 {res['claims_instantiate_p50_ms']} ms p99 "
                      f"{res['claims_instantiate_p99_ms']} ms")
            t0 = time.perf_counter()

            def all_done():
                ops = meo.ok("GET", "/app_lcm/v1/app_lcm_op_occs?filter="
                             "(in,operationState,STARTING,PROCESSING)")
                return not ops
            testlab.wait_for(all_done, 1800, "every instantiate to end", step=1)
            res["drain_after_last_s"] = round(time.perf_counter() - t0, 1)
            failed = meo.ok("GET", "/app_lcm/v1/app_lcm_op_occs?filter=(eq,operationState,FAILED)")
            res["failed_ops"] = len(failed)
            spread = {}
            for h in meo.ok("GET", HOSTS):
                used = h["capacity"]["CONTAINER"]["vcpuUsed"]
                spread[round(used / 0.5)] = spread.get(round(used / 0.5), 0) + 1
            res["instances_per_host"] = {str(k): v for k, v in sorted(spread.items())}
            print(f"placed {a.instances} in {res['place_all_s']} s; all ended "
                  f"{res['drain_after_last_s']} s after the last; failed {len(failed)}; "
                  f"instances per host (count: hosts) {res['instances_per_host']}")

            # ---------------------------------------------------- rss, listings
            time.sleep(a.settle_s)
            res["rss_mb"] = round(rss_mb(meo_proc.pid), 1)
            page = timed(lambda: meo.ok("GET", INST), 200)
            res["page_p50_ms"], res["page_p99_ms"] = ms(page, 50), ms(page, 99)
            res["page_items"] = len(meo.ok("GET", INST))
            hl = timed(lambda: meo.ok("GET", HOSTS), 50)
            res["host_list_p50_ms"], res["host_list_p99_ms"] = ms(hl, 50), ms(hl, 99)
            # GET of one instance (its figures from its host's last report)
            one = meo.ok("GET", INST)[0]["id"]
            got = timed(lambda: meo.ok("GET", f"{INST}/{one}"), 200)
            res["get_one_p50_ms"], res["get_one_p99_ms"] = ms(got, 50), ms(got, 99)
            res["get_one_has_figures"] = "resourceUsage" in meo.ok("GET", f"{INST}/{one}")

            # ---------------------------------------------------- idle cpu
            assert host_states(meo).get("REACHABLE") == a.hosts
            c0, t0 = cpu_s(meo_proc.pid), time.perf_counter()
            time.sleep(a.idle_s)
            res["idle_cpu_pct"] = round((cpu_s(meo_proc.pid) - c0)
                                        / (time.perf_counter() - t0) * 100, 1)
            res["idle_window_s"] = a.idle_s
            res["rss_after_idle_mb"] = round(rss_mb(meo_proc.pid), 1)

            # ---------------------------------------------------- reconnect storm
            if a.no_storm:
                return res
            t0 = time.perf_counter()
            standin.stop()
            testlab.wait_for(lambda: host_states(meo).get("UNREACHABLE") == a.hosts, 600,
                             "every host UNREACHABLE", step=0.5)
            res["all_unreachable_s"] = round(time.perf_counter() - t0, 1)
            t0 = time.perf_counter()
            standin.start()
            testlab.wait_for(lambda: host_states(meo).get("REACHABLE") == a.hosts, 600,
                             "every host REACHABLE again", step=0.25)
            res["storm_reachable_s"] = round(time.perf_counter() - t0, 1)
            testlab.wait_for(lambda: standin.stats()["listed"] == a.hosts, 600,
                             "every host resynced", step=0.25)
            res["storm_s"] = round(time.perf_counter() - t0, 1)
            res["storm_subscribed"] = standin.stats()["subscribed"]
            res["rss_end_mb"] = round(rss_mb(meo_proc.pid), 1)
        finally:
            if meo_proc is not None:
                meo_proc.stop()
                res["meo_log_errors"] = [line for line in meo_proc.log_tail(200000).splitlines()
                                         if " ERROR " in line][:5]
            standin.stop()
    return res


def report(res: dict) -> None:
    rows = [
        ("instantiate answer (POST .../instantiate) p99", res.get("instantiate_p99_ms"), "ms",
         f"< {TARGETS['instantiate_p99_ms']} ms", res.get("instantiate_p50_ms")),
        (f"  first {res['instances'] - (res.get('claims_instances') or 0)} (no claims) p99",
         res.get("plain_instantiate_p99_ms"), "ms", f"< {TARGETS['instantiate_p99_ms']} ms",
         res.get("plain_instantiate_p50_ms")),
        (f"  last {res.get('claims_instances')} (an app with a DNS name) p99",
         res.get("claims_instantiate_p99_ms"), "ms", f"< {TARGETS['instantiate_p99_ms']} ms",
         res.get("claims_instantiate_p50_ms")),
        ("MEO idle CPU, all hosts REACHABLE", res.get("idle_cpu_pct"), "% core",
         f"< {TARGETS['idle_cpu_pct']} %", None),
        ("reconnect storm: all REACHABLE + resynced", res.get("storm_s"), "s",
         f"< {TARGETS['storm_s']} s", res.get("storm_reachable_s")),
        ("MEO RSS with all instances", res.get("rss_mb"), "MB", f"<= {TARGETS['rss_mb']} MB",
         None),
        ("page of instances (default page) p99", res.get("page_p99_ms"), "ms",
         f"< {TARGETS['page_p99_ms']} ms", res.get("page_p50_ms")),
        ("host list p99", res.get("host_list_p99_ms"), "ms", "(reported)",
         res.get("host_list_p50_ms")),
        ("GET of one instance p99", res.get("get_one_p99_ms"), "ms", "(reported)",
         res.get("get_one_p50_ms")),
    ]
    print()
    print(f"MEO with {res['hosts']} hosts (STAND-IN: bench/standin.py, not MEPMs) and "
          f"{res['instances']} instances; meo config {res.get('meo_config')}")
    print(f"{'figure':<46} {'value':>10} {'unit':<7} {'target':<10} {'p50 / detail'}")
    for name, val, unit, target, extra in rows:
        print(f"{name:<46} {val!s:>10} {unit:<7} {target:<10} {'' if extra is None else extra}")
    print(f"(storm: every host UNREACHABLE {res.get('all_unreachable_s')} s after the "
          f"stand-in stopped; REACHABLE again after {res.get('storm_reachable_s')} s)")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hosts", type=int, default=1000)
    ap.add_argument("--instances", type=int, default=10000)
    ap.add_argument("--with-claims", type=int, default=200,
                    help="of the instances, the last ones of an app with a DNS name")
    ap.add_argument("--heartbeat-s", type=float, default=2.0)
    ap.add_argument("--meo-config", default="", help="JSON merged into the MEO's meo: section")
    ap.add_argument("--idle-s", type=float, default=30.0)
    ap.add_argument("--no-storm", action="store_true", help="end after the idle window")
    ap.add_argument("--settle-s", type=float, default=5.0)
    ap.add_argument("--usage", action="store_true",
                    help="the stand-in reports each instance's figures with its host info "
                         "(new at every heartbeat: the worst case for the MEO)")
    ap.add_argument("--out", default=str(REPO / "bench" / "results-meo-scale.json"))
    a = ap.parse_args()
    res = run(a)
    report(res)
    Path(a.out).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
