#!/usr/bin/env python3
"""Time from LinuxMEP.apply_rules() to the rule taking effect.

For each of N instances (default 100, all kept until the end so the chains
and the hostsdir grow as on a busy host) one apply_rules() call sets one DNS
rule and one FORWARD traffic rule; the clock starts just before the call and
stops, per rule, at the first moment the effect is seen from a client:
- DNS: a raw UDP DNS query (built with struct, no dig fork) to mecorch's
  dnsmasq answers the new address;
- traffic: a TCP connect to the steered service address succeeds (DNAT to
  the instance's server).
The same is measured for the direct backend calls (a hosts file renamed into
the hostsdir + one `iptables-restore --noflush` of a DNAT rule) and the
ratios printed. Target: p99 under 100 ms.

Everything happens in network namespaces this script makes and removes
(edge = the MEP, client, instance); only their addresses are contacted.
Run as root: /opt/mecorch/venv/bin/python bench/mep_rule_latency.py [-n 100]
"""

from __future__ import annotations

import argparse
import ctypes
import os
import secrets
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from drivers.linux_mep import LinuxMEP            # noqa: E402
from mecorch.spec.rules import DnsRule, TrafficRule    # noqa: E402
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support.lab import Netns                          # noqa: E402 - the one lab

DNS_ADDR, DNS_PORT, APP_PORT = "10.231.1.1", 5353, 8080
SERVER = ("import socket\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
          "s.bind(('0.0.0.0', %d)); s.listen(512)\nwhile True: s.accept()[0].close()\n" % APP_PORT)
CLONE_NEWNET = 0x40000000


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def nsx(ns: str, *argv: str) -> None:
    sh("ip", "netns", "exec", ns, *argv)


def setns(fd: int) -> None:
    """Move this (single-threaded) process into the network namespace of fd."""
    if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns")


# -- a tiny DNS client (A records only) --------------------------------------------------

def dns_query(name: str, qid: int) -> bytes:
    qname = b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!HH", 1, 1)


def dns_answer(resp: bytes, qid: int) -> str | None:
    """First A record of a response to query `qid`, else None."""
    if len(resp) < 12:
        return None
    rid, flags, qd, an, _, _ = struct.unpack("!HHHHHH", resp[:12])
    if rid != qid or flags & 0xF or an == 0:
        return None
    pos = 12
    for _ in range(qd):                          # skip the question
        while resp[pos]:
            pos += resp[pos] + 1
        pos += 5
    for _ in range(an):
        pos += 2 if resp[pos] & 0xC0 else len(resp[pos:].split(b"\0", 1)[0]) + 1
        rtype, _, _, rdlen = struct.unpack("!HHIH", resp[pos:pos + 10])
        pos += 10
        if rtype == 1 and rdlen == 4:
            return socket.inet_ntoa(resp[pos:pos + 4])
        pos += rdlen
    return None


def resolves(sock: socket.socket, name: str, want: str) -> bool:
    qid = secrets.randbelow(65536)
    try:
        sock.sendto(dns_query(name, qid), (DNS_ADDR, DNS_PORT))
        return dns_answer(sock.recv(512), qid) == want
    except OSError:                              # timeout / refused
        return False


def connects(addr: str) -> bool:
    with socket.socket() as s:
        s.settimeout(0.05)
        try:
            s.connect((addr, APP_PORT))
            return True
        except OSError:
            return False


def time_to_effect(t0: float, name: str, addr: str, sock, timeout: float = 5.0) -> tuple[float, float]:
    """Seconds from t0 until the DNS answer and the TCP connect are seen."""
    t_dns = t_tcp = None
    while t_dns is None or t_tcp is None:
        if t_dns is None and resolves(sock, name, addr_of(name)):
            t_dns = time.perf_counter() - t0
        if t_tcp is None and connects(addr):
            t_tcp = time.perf_counter() - t0
        if time.perf_counter() - t0 > timeout:
            raise SystemExit(f"rule for {name}/{addr} did not take effect in {timeout} s")
    return t_dns, t_tcp


def addr_of(name: str) -> str:
    return "10.231.2.2" if name.startswith("d") else "10.231.2.3"


# -- the lab ---------------------------------------------------------------------------------

def lab_up(u: str) -> tuple[str, str, str, subprocess.Popen]:
    """The edge, client and instance namespaces (tests/support/lab.py's
    Netns), the instance's TCP server. Names: mecb-U, mecb-U-c, mecb-U-i."""
    edge, client, inst = (Netns(f"mecb-{u}{s}") for s in ("", "-c", "-i"))
    edge.veth_to(client, f"bc{u}", "10.231.1.1/24", ["10.231.1.2/24"])
    edge.veth_to(inst, f"bi{u}", "10.231.2.1/24", ["10.231.2.2/24", "10.231.2.3/24"])
    edge.exec("sysctl", "-qw", "net.ipv4.ip_forward=1")
    server = subprocess.Popen(["ip", "netns", "exec", inst.name, sys.executable, "-c", SERVER])
    return edge.name, client.name, inst.name, server


def lab_down(server: subprocess.Popen, *spaces: str) -> None:
    server.terminate()
    server.wait(5)
    for name in spaces:
        Netns.existing(name).close()


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] * 1000


def _rules(kind: str, k: int) -> tuple[str, str, DnsRule, TrafficRule]:
    """Instance k's DNS name and steered address (unique per instance and
    path: up to 1,000 instances in 10.231.3-6.x for mecorch, 10.231.20-23.x
    for the direct path) and its two rules."""
    base = 3 if kind == "d" else 20
    name, addr = f"{kind}{k}.bench.test", f"10.231.{base + k // 250}.{k % 250 + 1}"
    dns = DnsRule.from_etsi({"dnsRuleId": "d", "domainName": name, "ipAddressType": "IP_V4",
                             "ipAddress": addr_of(name), "state": "ACTIVE"})
    fwd = TrafficRule.from_etsi({
        "trafficRuleId": "f", "filterType": "FLOW", "priority": 1, "action": "FORWARD_DECAPSULATED",
        "state": "ACTIVE", "trafficFilter": [{"dstAddress": [addr], "dstPort": [str(APP_PORT)],
                                              "protocol": ["tcp"]}]})
    return name, addr, dns, fwd


def curve(sizes: list[int], probes: int = 20) -> dict:
    """Rule apply to effect with N instances holding rules, for each N in
    `sizes` (ascending), on LinuxMEP driven directly (no REST API, no
    containers: the MEP alone), against the direct backend calls at the
    same size (a hosts file + one iptables-restore --noflush per instance,
    as many held). At each size the last `probes` instances added are the
    measured ones (each apply made while N - 1 or so are held)."""
    u = secrets.token_hex(3)
    tmp = Path(tempfile.mkdtemp(prefix="mecb-"))
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    edge, client, inst, server = lab_up(u)
    mep = LinuxMEP({"driver": "linux", "dns_listen": DNS_ADDR, "dns_port": DNS_PORT,
                    "chain_prefix": f"MC{u[:4].upper()}", "netns": edge,
                    "state_dir": str(tmp / "state"), "run_dir": str(tmp / "run"),
                    "host_id": f"bench{u}"})
    out: dict = {"sizes": sizes, "probes": probes,
                 "driven": "LinuxMEP.apply_rules directly (the MEP alone, in a netns), "
                           "1 DNS + 1 DNAT rule per instance", "by_size": {}}
    have = 0
    sock = None

    def driver(k: int, measure: bool):
        name, addr, dns, fwd = _rules("d", k)
        t0 = time.perf_counter()
        mep.apply_rules(f"bench-{k}", "10.231.2.2", [fwd], [dns])
        call = time.perf_counter() - t0
        return (call, *time_to_effect(t0, name, addr, sock)) if measure else None

    def direct(k: int, measure: bool):
        name, addr, _, _ = _rules("x", k)
        t0 = time.perf_counter()
        f = mep.hosts_dir / f".direct-{k}"
        f.write_text(f"{addr_of(name)} {name}\n")
        os.replace(f, mep.hosts_dir / f"direct-{k}")
        subprocess.run(["ip", "netns", "exec", edge, "iptables-restore", "-w", "5", "--noflush"],
                       input=f"*nat\n-A BENCH-DIRECT -d {addr}/32 -p tcp -m tcp --dport {APP_PORT} "
                             f"-j DNAT --to-destination 10.231.2.3\nCOMMIT\n",
                       text=True, check=True, capture_output=True)
        call = time.perf_counter() - t0
        return (call, *time_to_effect(t0, name, addr, sock)) if measure else None

    try:
        mep.open()
        nsx(edge, "iptables", "-t", "nat", "-N", "BENCH-DIRECT")
        nsx(edge, "iptables", "-t", "nat", "-I", "PREROUTING", "1", "-j", "BENCH-DIRECT")
        fd = os.open(f"/var/run/netns/{client}", os.O_RDONLY)
        setns(fd)                                # probes from the client's side (this thread)
        os.close(fd)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.settimeout(0.05)
        time.sleep(0.3)
        for n in sizes:
            t0 = time.perf_counter()
            while have < max(have, n - probes):
                driver(have, False)
                direct(have, False)
                have += 1
            fill_s = time.perf_counter() - t0
            res: dict[str, list] = {"driver": [], "direct": []}
            while have < n:
                order = (("driver", driver), ("direct", direct))
                for who, fn in (order if have % 2 == 0 else order[::-1]):
                    res[who].append(fn(have, True))
                have += 1
            row = {"held": have, "fill_s": round(fill_s, 1)}
            for who, rows in res.items():
                for i, what in enumerate(("call", "dns", "tcp")):
                    vals = [r[i] for r in rows]
                    row[f"{who}_{what}_p50_ms"] = round(pct(vals, 50), 1)
                    row[f"{who}_{what}_p99_ms"] = round(pct(vals, 99), 1)
                row[f"{who}_effect_p99_ms"] = max(row[f"{who}_dns_p99_ms"], row[f"{who}_tcp_p99_ms"])
            row["ratio_effect_p99"] = round(row["driver_effect_p99_ms"]
                                            / max(0.1, row["direct_effect_p99_ms"]), 2)
            out["by_size"][str(n)] = row
            print(f"    rules with {n} held: {row}", flush=True)
        t0 = time.perf_counter()
        for k in range(have):
            mep.remove_rules(f"bench-{k}")
        out["remove_all_s"] = round(time.perf_counter() - t0, 1)
        out["left_behind"] = sorted(mep.rule_owners() - {f"direct-{k}" for k in range(have)})
    finally:
        setns(home)                              # back home for teardown
        os.close(home)
        if sock is not None:
            sock.close()
        mep.stop_services()
        lab_down(server, edge, client, inst)
        subprocess.run(["rm", "-rf", str(tmp)])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=100, help="rules (instances) to apply")
    ap.add_argument("--curve", default="", help="sizes, e.g. 10,100,1000: the cost curve instead")
    args = ap.parse_args()
    if args.curve:
        import json
        print(json.dumps(curve([int(x) for x in args.curve.split(",")]), indent=1))
        return
    n = args.n
    u = secrets.token_hex(3)
    tmp = Path(tempfile.mkdtemp(prefix="mecb-"))
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    edge, client, inst, server = lab_up(u)
    mep = LinuxMEP({"driver": "linux", "dns_listen": DNS_ADDR, "dns_port": DNS_PORT,
                    "chain_prefix": "MECB", "netns": edge, "state_dir": str(tmp / "state"),
                    "run_dir": str(tmp / "run"), "host_id": "bench"})
    results = {"driver": {"call": [], "dns": [], "tcp": []}, "direct": {"call": [], "dns": [], "tcp": []}}
    try:
        mep.open()
        nsx(edge, "iptables", "-t", "nat", "-N", "BENCH-DIRECT")
        nsx(edge, "iptables", "-t", "nat", "-I", "PREROUTING", "1", "-j", "BENCH-DIRECT")
        fd = os.open(f"/var/run/netns/{client}", os.O_RDONLY)
        setns(fd)                                # probes run from the client's side
        os.close(fd)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.settimeout(0.05)
        time.sleep(0.3)
        for k in range(n):
            # mecorch: one apply_rules per instance (DNS + FORWARD rule).
            name, addr = f"d{k}.bench.test", f"10.231.3.{k % 250 + 1}"
            dns = DnsRule.from_etsi({"dnsRuleId": "d", "domainName": name, "ipAddressType": "IP_V4",
                                     "ipAddress": addr_of(name), "state": "ACTIVE"})
            fwd = TrafficRule.from_etsi({
                "trafficRuleId": "f", "filterType": "FLOW", "priority": 1, "action": "FORWARD_DECAPSULATED",
                "state": "ACTIVE", "trafficFilter": [{"dstAddress": [addr], "dstPort": [str(APP_PORT)],
                                                      "protocol": ["tcp"]}]})
            t0 = time.perf_counter()
            mep.apply_rules(f"bench-{k}", "10.231.2.2", [fwd], [dns])
            results["driver"]["call"].append(time.perf_counter() - t0)
            t_dns, t_tcp = time_to_effect(t0, name, addr, sock)
            results["driver"]["dns"].append(t_dns)
            results["driver"]["tcp"].append(t_tcp)
            # direct: the same two effects with the bare backend calls.
            name, addr = f"x{k}.bench.test", f"10.231.4.{k % 250 + 1}"
            t0 = time.perf_counter()
            f = mep.hosts_dir / f".direct-{k}"
            f.write_text(f"{addr_of(name)} {name}\n")
            os.replace(f, mep.hosts_dir / f"direct-{k}")
            subprocess.run(["ip", "netns", "exec", edge, "iptables-restore", "-w", "5", "--noflush"],
                           input=f"*nat\n-A BENCH-DIRECT -d {addr}/32 -p tcp -m tcp --dport {APP_PORT} "
                                 f"-j DNAT --to-destination 10.231.2.3\nCOMMIT\n",
                           text=True, check=True, capture_output=True)
            results["direct"]["call"].append(time.perf_counter() - t0)
            t_dns, t_tcp = time_to_effect(t0, name, addr, sock)
            results["direct"]["dns"].append(t_dns)
            results["direct"]["tcp"].append(t_tcp)
        t0 = time.perf_counter()
        for k in range(n):
            mep.remove_rules(f"bench-{k}")
        remove_s = time.perf_counter() - t0
        left = mep.rule_owners() - {f"direct-{k}" for k in range(n)}
    finally:
        setns(home)                              # back home for teardown
        os.close(home)
        mep.stop_services()
        lab_down(server, edge, client, inst)
        subprocess.run(["rm", "-rf", str(tmp)])

    print(f"LinuxMEP rule latency, {n} instances (1 DNS + 1 FORWARD rule each), "
          f"iptables in a netns, dnsmasq hostsdir")
    print(f"{'':28}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    for who in ("driver", "direct"):
        for what, label in (("call", "apply call returns"), ("dns", "DNS answer changed"),
                            ("tcp", "TCP steered (DNAT)")):
            v = results[who][what]
            print(f"{who + ': ' + label:28}{pct(v, 50):9.1f}{pct(v, 99):9.1f}{max(v) * 1000:9.1f}")
    for what in ("call", "dns", "tcp"):
        print(f"ratio driver/direct p50 {what}: "
              f"{statistics.median(results['driver'][what]) / statistics.median(results['direct'][what]):.2f}")
    worst = max(pct(results["driver"]["dns"], 99), pct(results["driver"]["tcp"], 99))
    print(f"remove_rules of {n} instances: {remove_s * 1000:.0f} ms total; left behind: {sorted(left) or 'nothing'}")
    print(f"target p99 < 100 ms: {'MET' if worst < 100 else 'MISSED'} (worst p99 {worst:.1f} ms)")


if __name__ == "__main__":
    main()
