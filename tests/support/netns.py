"""The Linux MEP in network namespaces (Lab: edge, app and client
namespaces), commands in a namespace, and the rules it is driven with.
(Was part of test_linux_mep.)"""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
from pathlib import Path

from drivers.linux_mep import LinuxMEP
from mecorch.spec.rules import DnsRule, TrafficRule
from conftest import run
from support.lab import Netns, wait_for

SERVICE = "10.231.3.80"
INSTANCE_A, INSTANCE_B = "10.231.2.2", "10.231.2.3"
PORT = 8080

SERVER = r"""
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("reached " + self.connection.getsockname()[0]).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("0.0.0.0", int(sys.argv[1])), H).serve_forever()
"""


def ns(name: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return run("ip", "netns", "exec", name, *argv, check=check)


class Lab:
    def __init__(self, tmp: Path):
        u = secrets.token_hex(4)
        self.edge, self.client, self.inst = f"mect-{u}", f"mect-{u}-c", f"mect-{u}-i"
        self.links = (f"mc{u}", f"mi{u}")       # veth names (edge side), < 16 chars
        self.tmp = tmp
        self.server: subprocess.Popen | None = None
        self.driver: LinuxMEP | None = None

    def up(self) -> None:
        self.spaces = [Netns(name) for name in (self.edge, self.client, self.inst)]
        edge, client, inst = self.spaces
        edge.veth_to(client, self.links[0], "10.231.1.1/24", ["10.231.1.2/24"])
        edge.veth_to(inst, self.links[1], "10.231.2.1/24", ["10.231.2.2/24", "10.231.2.3/24"])
        edge.exec("sysctl", "-qw", "net.ipv4.ip_forward=1")
        self.server = subprocess.Popen(
            ["ip", "netns", "exec", self.inst, sys.executable, "-c", SERVER, str(PORT)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.driver = LinuxMEP({
            "driver": "linux", "dns_listen": "10.231.1.1", "dns_port": 5353,
            "chain_prefix": "MECT", "netns": self.edge, "state_dir": str(self.tmp / "state"),
            "run_dir": str(self.tmp / "run"), "host_id": "test"})
        wait_for(lambda: ns(self.inst, "curl", "-s", "-m", "1", f"http://{INSTANCE_A}:{PORT}/",
                            check=False).returncode == 0, 10,
                 "the sample instance server", step=0.1)

    def down(self) -> None:
        if self.driver is not None:
            self.driver.stop_services()
        if self.server is not None:
            self.server.terminate()
            self.server.wait(10)
        for space in getattr(self, "spaces", []):
            space.close()

    # -- probes ---------------------------------------------------------------------
    def dig(self, name: str, qtype: str = "A") -> str:
        return ns(self.client, "dig", "+short", "+time=1", "+tries=1", "@10.231.1.1",
                  "-p", "5353", name, qtype, check=False).stdout.strip()

    def get(self, addr: str = SERVICE, port: int = PORT) -> str | None:
        """Body of GET http://addr:port/ from the client ns, None if unreachable."""
        r = ns(self.client, "curl", "-s", "-m", "1", f"http://{addr}:{port}/", check=False)
        return r.stdout if r.returncode == 0 else None

    def snapshot(self) -> tuple[str, dict]:
        """Every iptables rule in the edge ns (no counters) and every file
        of the hostsdir with its content."""
        tables = "".join(ns(self.edge, "iptables-save", "-t", t).stdout for t in ("raw", "nat", "filter"))
        rules = "\n".join(l for l in tables.splitlines() if not l.startswith("#"))
        hosts = self.driver.hosts_dir
        files = {p.name: p.read_text() for p in hosts.iterdir()} if hosts.is_dir() else {}
        return rules, files


def poll(probe, want, timeout: float = 3.0):
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got == want or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def dns(rule_id="d1", name="app.mect.test", ip="10.231.2.2", state="ACTIVE", **kw) -> DnsRule:
    return DnsRule.from_etsi({"dnsRuleId": rule_id, "domainName": name, "ipAddressType": "IP_V4",
                              "ipAddress": ip, "state": state, **kw})


def forward(rule_id="f1", priority=10, action="FORWARD_DECAPSULATED", dst=SERVICE,
            port=PORT, state="ACTIVE", **kw) -> TrafficRule:
    return TrafficRule.from_etsi({
        "trafficRuleId": rule_id, "filterType": "FLOW", "priority": priority,
        "trafficFilter": [{"dstAddress": [dst], "dstPort": [str(port)], "protocol": ["tcp"]}],
        "action": action, "state": state, **kw})
