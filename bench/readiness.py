#!/usr/bin/env python3
"""Readiness failure to withdrawn: how long a client is still sent to an app
whose readiness check fails.

One `mecorch serve` (a host of its own: docker network, chain prefix,
dnsmasq port, service range; reconcile every hour so nothing but the
prober touches the rules), one sample container with a readinessProbe
(httpGet of a file on an emptyDir volume, periodSeconds P, failureThreshold
1) and a DNS rule + FORWARD traffic rule. Each round:
- mecorch: the file is removed from the volume on the host (the moment the
  app starts failing: no docker exec in the measured time); the clock stops
  when the MEP's dnsmasq no longer answers the name (raw UDP queries every
  2 ms). The driver removes the chains before the DNS file, so the DNAT is
  gone by then (checked after each round with iptables-save). The file is
  put back and the time to answering again is taken too (restore);
- direct: the same backend work by hand on a second rule set the bench
  applied through the driver beforehand (another name and service address,
  DNAT to the same container): one `iptables-restore --noflush` removing
  its chains (rendered before the clock starts) and the DNS file unlinked,
  until dnsmasq no longer answers.
Rounds start at a random phase of the probe period. Printed: p50/p99 of
both, the ratio, and the period share: (mecorch - direct) / P, the part of
the figure that is waiting for the next probe (expected ~0.5 on average).

    /opt/mecorch/venv/bin/python bench/readiness.py [-n 10] [--period 1] [--out FILE]

Run as root on a provisioned host (dockerd, the registry, the sample
workloads). Everything it makes is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lab                                              # noqa: E402 - the benches' lab
from lab import INST, Serve, names, remove_infrastructure  # noqa: E402
from mep_rule_latency import dns_answer, dns_query      # noqa: E402 - the tiny DNS client
from support import lab as testlab                      # noqa: E402
from drivers.linux_mep import LinuxMEP, iptables         # noqa: E402
from mecorch.spec.rules import DnsRule, TrafficRule      # noqa: E402

NAME, VIP = "ready.bench.mec.local", "10.188.0.10"
DIRECT_NAME, DIRECT_VIP = "direct.bench.mec.local", "10.188.0.20"
POD = """\
apiVersion: v1
kind: Pod
metadata: {name: ready}
spec:
  containers:
    - name: app
      image: mecorch/bench-ready:1.0
      command: ["/bin/sh", "-c", "echo ok > /www/h/ready; exec /bin/serve"]
      volumeMounts: [{name: h, mountPath: /www/h}]
      readinessProbe:
        httpGet: {path: /h/ready, port: 80}
        periodSeconds: %d
        failureThreshold: 1
  volumes: [{name: h, emptyDir: {}}]
"""


def rules(name: str, vip: str) -> dict:
    return {"appTrafficRule": [{
                "trafficRuleId": "vip", "filterType": "FLOW", "priority": 1,
                "trafficFilter": [{"dstAddress": [vip], "dstPort": ["80"], "protocol": ["TCP"]}],
                "action": "FORWARD_DECAPSULATED", "dstInterface": [{"interfaceType": "IP"}]}],
            "appDNSRule": [{"dnsRuleId": "dns", "domainName": name, "ipAddressType": "IP_V4",
                            "ipAddress": vip}]}


class Dns:
    def __init__(self, port: int):
        self.port = port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(0.05)

    def answer(self, name: str) -> str | None:
        qid = secrets.randbelow(65536)
        try:
            self.sock.sendto(dns_query(name, qid), ("127.0.0.1", self.port))
            return dns_answer(self.sock.recv(512), qid)
        except OSError:
            return None

    def until(self, name: str, want: str | None, t0: float, limit_s: float = 30) -> float:
        while True:
            if self.answer(name) == want:
                return time.perf_counter() - t0
            if time.perf_counter() - t0 > limit_s:
                raise TimeoutError(f"{name} still not {want} after {limit_s} s")
            time.sleep(0.002)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] * 1000


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=10)
    ap.add_argument("--period", type=int, default=1, help="the probe's periodSeconds")
    ap.add_argument("--out")
    a = ap.parse_args()
    tag = secrets.token_hex(3)
    tmp = testlab.private_dir(f"bench-{tag}")
    host = testlab.host_config(names(tag), vms=False,
                               mep={"service_cidr": lab.SERVICE_CIDR,
                                    "service_interface": f"mecb-{tag}"[:15]})
    cfg = testlab.lab_config(tmp, [host], orchestrator={"reconcile_interval_s": 3600})
    cfg_path = tmp / "mecorch.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    state_dir, run_dir = (str(tmp / "state" / "hosts" / host["id"]),
                          str(tmp / "run" / host["id"]))
    serve = None
    out: dict = {}
    try:
        serve = Serve(cfg_path, tmp / "serve.log", host["id"])
        serve.ready()
        api = serve.api
        # the benches' onboarding (an appDId and image name of its own), on this serve
        lab.Lab.onboard(SimpleNamespace(tmp=tmp, api=api, pkgs={}), "sample-container-app",
                        "bench-ready")
        inst, _ = api.post(INST, {"appDId": "bench-ready"})
        iid = inst["id"]
        op, _ = api.post(f"{INST}/{iid}/instantiate", {
            "selectedMECHostInfo": [{"hostId": {"id": host["id"]}}],
            "orchestrationInfo": POD % a.period, **rules(NAME, VIP)})
        assert api.wait(op)["operationState"] == "COMPLETED", op
        info = api.get(f"{INST}/{iid}")
        ip = info["allocatedResources"]["network"][0]["ip"]
        app = testlab.run("docker", "ps", "-q", "--filter", f"label=mecorch.instance={iid}",
                          "--filter", "label=mecorch.role=app").stdout.strip()
        mounts = json.loads(testlab.run("docker", "inspect", app).stdout)[0]["Mounts"]
        ready = Path(next(m["Source"] for m in mounts if m["Destination"] == "/www/h")) / "ready"
        dns = Dns(host["mep"]["dns_port"])
        dns.until(NAME, VIP, time.perf_counter())

        mep = LinuxMEP({**host["mep"], "host_id": host["id"], "state_dir": state_dir,
                        "run_dir": run_dir})
        d_traffic = [TrafficRule.from_etsi({**r, "state": "ACTIVE"})
                     for r in rules(DIRECT_NAME, DIRECT_VIP)["appTrafficRule"]]
        d_dns = [DnsRule.from_etsi({**r, "state": "ACTIVE"}) for r in
                 rules(DIRECT_NAME, DIRECT_VIP)["appDNSRule"]]
        ours, direct, back, period_wait = [], [], [], []
        for i in range(a.n):
            # mecorch: the app fails at a random phase of the probe period
            time.sleep(random.uniform(0, a.period))
            t0 = time.perf_counter()
            ready.unlink()
            took = dns.until(NAME, None, t0)
            ours.append(took)
            saved = testlab.run("iptables-save").stdout
            assert f"-d {VIP}/32" not in saved, "the DNAT outlived the DNS answer"
            t0 = time.perf_counter()
            ready.write_text("ok\n")
            back.append(dns.until(NAME, VIP, t0))
            # direct: the same removal by hand, on a set applied for it
            did = f"direct-{i}"
            mep.apply_rules(did, ip, d_traffic, d_dns)
            dns.until(DIRECT_NAME, DIRECT_VIP, time.perf_counter())
            # rendered before the clock (the driver's own reading; private,
            # but this is the by-hand path's preparation, not its cost)
            text = iptables.transition(mep._read(did), mep.prefix, did, {})
            t0 = time.perf_counter()
            subprocess.run(["iptables-restore", "--noflush", "-w"], input=text, text=True,
                           check=True, capture_output=True)
            (mep.hosts_dir / did).unlink()
            direct.append(dns.until(DIRECT_NAME, None, t0))
            mep._applied.pop(did, None)
            print(f"round {i + 1}/{a.n}: mecorch {took * 1000:.0f} ms, direct "
                  f"{direct[-1] * 1000:.1f} ms, restore {back[-1] * 1000:.0f} ms", flush=True)
        med_direct = statistics.median(direct)
        period_wait = [(t - med_direct) / a.period for t in ours]
        out = {"n": a.n, "period_s": a.period,
               "withdraw_ms": {"p50": pct(ours, 50), "p99": pct(ours, 99)},
               "direct_ms": {"p50": pct(direct, 50), "p99": pct(direct, 99)},
               "restore_ms": {"p50": pct(back, 50), "p99": pct(back, 99)},
               "ratio_p50": pct(ours, 50) / pct(direct, 50),
               "ratio_p99": pct(ours, 99) / pct(direct, 99),
               "period_share": {"mean": statistics.mean(period_wait),
                                "p50": statistics.median(period_wait),
                                "max": max(period_wait)}}
        print(json.dumps(out, indent=2))
        if a.out:
            Path(a.out).write_text(json.dumps(out, indent=2) + "\n")
    finally:
        left = []
        if serve is not None and serve.proc.poll() is None:
            try:
                for inst in serve.api.get_all(INST):
                    if inst["instantiationState"] == "INSTANTIATED":
                        serve.api.terminate(inst["id"])
                    serve.api.delete(inst["id"])
            except Exception as e:  # noqa: BLE001 - clean up the rest anyway
                left.append(f"API cleanup: {e}")
            serve.stop()
        left += remove_infrastructure(cfg, tag, state_dir, run_dir, tmp=str(tmp))
        testlab.run("rm", "-rf", str(tmp), check=False)
        if left:
            print("left behind (removed):", left, file=sys.stderr)
    return 0


if __name__ == "__main__":
    os.umask(0o077)
    sys.exit(main())
