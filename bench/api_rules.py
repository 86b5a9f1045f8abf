"""Rule programming through the API: from an Mp1 PUT of one rule (which
re-applies the instance's whole rule set) to the rule in effect, seen from
a client on this host.

- DNS: PUT the instance's DNS rule with a new ipAddress; stop the clock
  when mecorch's dnsmasq answers the new address (raw UDP query, no fork).
- traffic: PUT the traffic rule INACTIVE (untimed), then ACTIVE; stop the
  clock when a TCP connect to the steered service address succeeds (DNAT
  to the container's HTTP port; without the rule the address is a sink).

Used by bench/run.py (it owns the lab); not a standalone script.
"""

from __future__ import annotations

import secrets
import socket
import time

from lab import Lab, pct
from mep_rule_latency import dns_answer, dns_query

MP1 = "/mec_app_support/v1/applications"
VIP = "10.188.0.10"
NAME = "bench.mecb.mec.local"     # inside the default mep.dns_domain


def _resolves(sock: socket.socket, port: int, want: str) -> bool:
    qid = secrets.randbelow(65536)
    try:
        sock.sendto(dns_query(NAME, qid), ("127.0.0.1", port))
        return dns_answer(sock.recv(512), qid) == want
    except OSError:
        return False


def _connects(addr: str, port: int = 80) -> bool:
    with socket.socket() as s:
        s.settimeout(0.01)
        try:
            s.connect((addr, port))
            return True
        except OSError:
            return False


def _until(check, t0: float, timeout: float = 5.0) -> float:
    while not check():
        if time.perf_counter() - t0 > timeout:
            raise RuntimeError("rule did not take effect in 5 s")
    return time.perf_counter() - t0


def run(lab: Lab, app_d_id: str, n: int = 50) -> dict:
    api = lab.api
    dns = {"dnsRuleId": "bench-dns", "domainName": NAME, "ipAddressType": "IP_V4",
           "ipAddress": VIP, "ttl": 0}
    traffic = {"trafficRuleId": "bench-vip", "filterType": "FLOW", "priority": 1,
               "trafficFilter": [{"dstAddress": [VIP], "dstPort": ["80"], "protocol": ["TCP"]}],
               "action": "FORWARD_DECAPSULATED", "dstInterface": [{"interfaceType": "IP"}]}
    iid, op = api.deploy(app_d_id, appTrafficRule=[traffic], appDNSRule=[dns])
    if op["operationState"] != "COMPLETED":
        raise RuntimeError(f"deploy failed: {op.get('error')}")
    base = f"{MP1}/{iid}"
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(0.02)
    res: dict[str, list[float]] = {"dns_call": [], "dns_effect": [],
                                   "traffic_call": [], "traffic_effect": []}
    try:
        _until(lambda: _connects(VIP), time.perf_counter(), 10)   # deployed rule works
        rule = api.get(f"{base}/dns_rules/bench-dns")
        trule = api.get(f"{base}/traffic_rules/bench-vip")
        for i in range(n):
            addr = f"10.188.0.{20 + i % 200}"
            rule["ipAddress"] = addr
            t0 = time.perf_counter()
            api.call("PUT", f"{base}/dns_rules/bench-dns", rule)
            res["dns_call"].append(time.perf_counter() - t0)
            res["dns_effect"].append(_until(lambda: _resolves(sock, lab.dns_port, addr), t0))

            api.call("PUT", f"{base}/traffic_rules/bench-vip", {**trule, "state": "INACTIVE"})
            _until(lambda: not _connects(VIP), time.perf_counter())
            t0 = time.perf_counter()
            api.call("PUT", f"{base}/traffic_rules/bench-vip", {**trule, "state": "ACTIVE"})
            res["traffic_call"].append(time.perf_counter() - t0)
            res["traffic_effect"].append(_until(lambda: _connects(VIP), t0))
    finally:
        sock.close()
        api.terminate(iid)
        api.delete(iid)
    out = {k + s: round(pct(v, p) * 1e3, 1) for k, v in res.items()
           for s, p in (("_p50_ms", 50), ("_p99_ms", 99))}
    out["n"] = n
    out["met"] = max(out["dns_effect_p99_ms"], out["traffic_effect_p99_ms"]) < 100
    return out
