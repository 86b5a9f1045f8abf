#!/usr/bin/env python3
"""What notifications cost an operation: container deploy (create +
instantiate + wait) and terminate latency through a real `mecorch serve`
with no subscriber, with a live one (a loopback receiver answering 204) and
with a dead one (a loopback receiver that reads each notification and never
answers, holding the sender for api.notify_timeout_s every try), interleaved
in one run (the mode rotates every deploy), p50 / p99 and the ratios
against no subscriber.

Each subscriber has every subscription type (3 app_pkgm, 3 instance state,
1 LCM operation occurrence): a deploy + terminate makes 8 notifications for
each. The dead subscriber's pile-up is reported too (notifications pending
in the outbox at the end).

    /opt/mecorch/venv/bin/python bench/notify_overhead.py [-n 15] [--out FILE]

Real backends (dockerd, the registry, iptables/dnsmasq): the lab of
bench/lab.py, with names of its own, removed at the end. Talks only to
loopback and the containers it starts.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import threading
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lab import NO_RULES, Lab, loopback_receiver, pct  # noqa: E402

APP = "bench-notify-http"
PKG_SUBS, LCM_SUBS = "/app_pkgm/v1/subscriptions", "/app_lcm/v1/subscriptions"


class Receiver:
    """A loopback callback: `live` answers 204 at once, else it never
    answers (until closed)."""

    def __init__(self, live: bool):
        self.live, self.got = live, 0
        self._closing = threading.Event()
        self.server, self.url = loopback_receiver(self._got, "/notify", "receiver")

    def _got(self, body: bytes) -> bool:
        self.got += 1
        if not self.live:
            self._closing.wait(120)
        return self.live

    def close(self) -> None:
        self._closing.set()
        self.server.shutdown()
        self.server.server_close()


def subscribe(api, url: str) -> list[str]:
    """Every subscription type for `url`; their hrefs."""
    hrefs = []
    for stype in ("AppPackageOnBoarding", "AppPacakgeOperationChange", "AppPackageDeletion"):
        sub, _ = api.post(PKG_SUBS, {"subsctiptionType": stype, "callbackUri": url})
        hrefs.append(sub["_links"]["self"]["href"])
    for state in ("NOT_INSTANTIATED", "STARTED", "STOPPED"):
        sub, _ = api.post(LCM_SUBS, {"subscriptionType": "AppInstanceStateChange",
                                     "callbackUri": url, "appInstanceState": state})
        hrefs.append(sub["_links"]["self"]["href"])
    sub, _ = api.post(LCM_SUBS, {"subscriptionType": "AppLcmOpOccStateChange",
                                 "callbackUri": url})
    return hrefs + [sub["_links"]["self"]["href"]]


def pending(lab: Lab) -> int:
    db = sqlite3.connect(f"file:{lab.tmp / 'state' / 'mecorch.db'}?mode=ro", uri=True)
    try:
        return db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
    finally:
        db.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=15, help="deploys per mode (default 15)")
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args()

    lab = Lab()
    # the dead receiver holds the sender for notify_timeout_s per try
    lab.cfg.setdefault("api", {}).update({"notify_timeout_s": 5, "notify_retry_s": 3600})
    lab.cfg_path.write_text(yaml.safe_dump(lab.cfg))
    live, dead = Receiver(live=True), Receiver(live=False)
    results: dict = {}
    try:
        lab.start()
        api = lab.api
        lab.onboard("sample-container-app", APP)
        iid, _ = api.deploy(APP, **NO_RULES)                 # warm every driver up
        api.terminate(iid)
        api.delete(iid)
        # the live and dead subscribers stay subscribed all along; a mode
        # only decides which of them are subscribed at the time
        modes = {"none": [], "live": [live], "dead": [dead]}
        times: dict[str, dict[str, list[float]]] = {m: {"deploy": [], "terminate": []}
                                                    for m in modes}
        for i in range(args.n * len(modes)):
            mode = list(modes)[i % len(modes)]
            hrefs = [h for r in modes[mode] for h in subscribe(api, r.url)]
            t0 = time.perf_counter()
            iid, op = api.deploy(APP, **NO_RULES)
            t1 = time.perf_counter()
            assert op["operationState"] == "COMPLETED", op
            api.terminate(iid)
            t2 = time.perf_counter()
            api.delete(iid)
            times[mode]["deploy"].append(t1 - t0)
            times[mode]["terminate"].append(t2 - t1)
            if mode == "dead":
                results["dead_pending_before_unsubscribe"] = max(
                    results.get("dead_pending_before_unsubscribe", 0), pending(lab))
            for h in hrefs:
                api.call("DELETE", h)
        for mode, t in times.items():
            for what, values in t.items():
                results[f"{what}_{mode}_p50_ms"] = round(pct(values, 50) * 1000, 1)
                results[f"{what}_{mode}_p99_ms"] = round(pct(values, 99) * 1000, 1)
        for mode in ("live", "dead"):
            for what in ("deploy", "terminate"):
                for p in ("p50", "p99"):
                    results[f"{what}_{mode}_over_none_{p}"] = round(
                        results[f"{what}_{mode}_{p}_ms"] / results[f"{what}_none_{p}_ms"], 3)
        results["live_notifications_received"] = live.got
        results["samples_per_mode"] = args.n
    finally:
        live.close()
        dead.close()
        problems = lab.close()
    print(f"{'':12} {'none':>10} {'live':>10} {'dead':>10} {'live/none':>10} {'dead/none':>10}")
    for what in ("deploy", "terminate"):
        for p in ("p50", "p99"):
            print(f"{what + ' ' + p:12} "
                  + "".join(f"{results[f'{what}_{m}_{p}_ms']:>8.1f}ms" for m in modes)
                  + f"{results[f'{what}_live_over_none_{p}']:>10.3f}"
                  + f"{results[f'{what}_dead_over_none_{p}']:>10.3f}")
    print(f"live subscriber got {results['live_notifications_received']} notifications; "
          f"the dead one had up to {results.get('dead_pending_before_unsubscribe', 0)} pending")
    if problems:
        print("cleanup left:", problems)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
