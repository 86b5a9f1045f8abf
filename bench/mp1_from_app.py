"""Mp1 rule change to effect, measured from inside an app container (issue 12).

A `mecorch serve` lab (bench/lab.py: its own host id, docker network,
dnsmasq port; here also a chain prefix and service range of its own, so a
concurrent bench/run.py lab on MECBN / 10.188.0.0/24 cannot touch it)
deploys two container apps: the app whose rules change (its traffic rule
steers its service address to itself: a rule may steer only to its own
instance) and a client. A prober runs in the client container's network
namespace (`nsenter --net` into its pause container), with the app's own
MEC_MP1_URL and MEC_APP_TOKEN (read from the app container's environment),
so every packet takes the path the app's own would: Mp1 on the app
network's gateway (the same for both), DNS through a container's default
resolver (Docker's 127.0.0.11, which forwards to the MEP's dnsmasq on the
gateway), TCP through the steering rule of the app's service address to
the app (from the client: a bridge does not send a frame back out the port
it came in by, so an app cannot reach itself through its own service
address).

- DNS: the prober PUTs its DNS rule with a new ipAddress and stops the clock
  when its resolver answers the new address.
- traffic: it PUTs its traffic rule INACTIVE (untimed, until the address
  stops answering), then ACTIVE, and stops the clock when a TCP connect to
  the service address succeeds.
- direct: the same two changes made by calling the MEP driver
  (LinuxMEP.apply_rules) in this process for a rule set of its own, seen by
  the same prober: what the backends alone take. Printed as ratios.

Target: p99 of both Mp1 paths under 100 ms.

    /opt/mecorch/venv/bin/python bench/mp1_from_app.py [--n 50] [--json FILE]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import subprocess
import sys
import time

import yaml

from lab import REPO, Lab, pct

from mecorch.spec.rules import DnsRule, TrafficRule            # noqa: E402 - lab puts REPO on the path

TARGET_MS = 100.0
APP = "mp1bench"
NAME, DIRECT_NAME = "mp1bench.mec.local", "direct.mp1bench.mec.local"
SERVICE = "10.187.{}.0/24"

# Runs in the app's network namespace: stdlib only, one JSON command per line.
PROBER = r'''
import http.client, json, random, socket, struct, sys, time
url, token = sys.argv[1], sys.argv[2]
hostport, _, base = url[len("http://"):].partition("/")
host, _, port = hostport.rpartition(":")
base = "/" + base
conn = http.client.HTTPConnection(host, int(port), timeout=5)
dns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
dns.settimeout(0.02)

def answer(name):
    qid = random.randrange(65536)
    q = b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0"
    try:
        dns.sendto(struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + q + struct.pack("!HH", 1, 1),
                   ("127.0.0.11", 53))
        r = dns.recv(512)
    except OSError:
        return None
    rid, flags, qd, an = struct.unpack("!HHHH", r[:8])
    if rid != qid or flags & 0xF or not an:
        return None
    pos = 12 + len(q) + 4
    for _ in range(an):
        pos += 2 if r[pos] & 0xC0 else len(r[pos:].split(b"\0", 1)[0]) + 1
        rtype, _, _, rdlen = struct.unpack("!HHIH", r[pos:pos + 10])
        pos += 10
        if rtype == 1 and rdlen == 4:
            return socket.inet_ntoa(r[pos:pos + 4])
        pos += rdlen

def connects(addr):
    with socket.socket() as s:
        s.settimeout(0.02)
        try:
            s.connect((addr, 80))
            return True
        except OSError:
            return False

def until(check, timeout=5.0):
    t0 = time.perf_counter()
    while not check():
        if time.perf_counter() - t0 > timeout:
            raise SystemExit("timed out")
    return time.perf_counter()

def put(path, body):
    conn.request("PUT", base + path, json.dumps(body),
                 {"Authorization": "Bearer " + token, "Content-Type": "application/json"})
    r = conn.getresponse()
    text = r.read()
    if r.status != 200:
        raise SystemExit(f"PUT {path}: {r.status} {text[:600]!r}")

for line in sys.stdin:
    cmd = json.loads(line)
    op = cmd["op"]
    if op == "put":                       # untimed
        put(cmd["path"], cmd["body"])
        out = None
    elif op == "mp1":                     # timed: PUT, then until the effect shows
        t0 = time.perf_counter()
        put(cmd["path"], cmd["body"])
        t1 = time.perf_counter()
        if cmd["wait"] == "dns":
            t2 = until(lambda: answer(cmd["name"]) == cmd["ip"])
        else:
            t2 = until(lambda: connects(cmd["addr"]) == cmd["up"])
        out = {"call": t1 - t0, "effect": t2 - t0}
    elif op == "wait_dns":
        out = until(lambda: answer(cmd["name"]) == cmd["ip"])
    elif op == "wait_tcp":
        out = until(lambda: connects(cmd["addr"]) == cmd["up"])
    print(json.dumps(out), flush=True)
'''


def traffic_rule(rule_id: str, vip: str, state: str = "ACTIVE") -> dict:
    """Steering `vip` to the rule's own instance (no dstIpAddress: it may
    name no other)."""
    return {"trafficRuleId": rule_id, "filterType": "FLOW", "priority": 1, "state": state,
            "trafficFilter": [{"dstAddress": [vip], "dstPort": ["80"], "protocol": ["tcp"]}],
            "action": "FORWARD_DECAPSULATED", "dstInterface": {"interfaceType": "IP"}}


def dns_rule(rule_id: str, name: str, ip: str) -> dict:
    return {"dnsRuleId": rule_id, "domainName": name, "ipAddressType": "IP_V4",
            "ipAddress": ip, "ttl": 0, "state": "ACTIVE"}


def descriptor(rule: dict) -> dict:
    return {k: v for k, v in rule.items() if k != "state"}


class Prober:
    def __init__(self, pause_pid: int, url: str, token: str):
        self.proc = subprocess.Popen(
            ["nsenter", f"--net=/proc/{pause_pid}/ns/net", sys.executable, "-c", PROBER,
             url, token], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def __call__(self, **cmd):
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"prober ended (exit {self.proc.wait()})")
        return json.loads(line)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(10)


def container_env(name: str) -> dict[str, str]:
    out = subprocess.run(["docker", "inspect", "-f", "{{json .Config.Env}}", name],
                         capture_output=True, text=True, check=True).stdout
    return dict(e.split("=", 1) for e in json.loads(out))


def own_lab() -> Lab:
    """bench/lab.py's lab (a chain prefix of its own) with a service range
    of its own."""
    lab = Lab(reconcile_interval_s=0)     # the direct rule set is no orphan to remove
    mep = lab.cfg["hosts"][0]["mep"]
    mep["service_cidr"] = SERVICE.format(int(lab.tag, 16) % 250)
    lab.cfg_path.write_text(yaml.safe_dump(lab.cfg))
    return lab


def measure(lab: Lab, n: int) -> dict:
    api = lab.api
    net = ipaddress.ip_network(lab.cfg["hosts"][0]["mep"]["service_cidr"])
    VIP, ALT, DIRECT_VIP, DIRECT_ALT = (str(net[i]) for i in (30, 31, 40, 41))
    lab.onboard("sample-container-app", APP)
    client, op = api.deploy(APP, deploymentType="CONTAINER", appTrafficRule=[], appDNSRule=[])
    if op["operationState"] != "COMPLETED":
        raise RuntimeError(f"deploy failed: {op.get('error')}")
    iid, op = api.deploy(APP, deploymentType="CONTAINER",
                         appTrafficRule=[descriptor(traffic_rule("vip", VIP))],
                         appDNSRule=[descriptor(dns_rule("dns", NAME, VIP))])
    if op["operationState"] != "COMPLETED":
        raise RuntimeError(f"deploy failed: {op.get('error')}")
    target = api.get(f"/app_lcm/v1/app_instances/{iid}")["allocatedResources"]["network"][0]["ip"]
    env = container_env(f"mecorch-{iid}-app")          # the app's own Mp1 URL and token
    pause_pid = int(subprocess.run(["docker", "inspect", "-f", "{{.State.Pid}}",
                                    f"mecorch-{client}-pause"], capture_output=True, text=True,
                                   check=True).stdout)
    from drivers.linux_mep import LinuxMEP
    state_dir, run_dir = lab.host_dirs
    mep = LinuxMEP({**lab.cfg["hosts"][0]["mep"], "state_dir": state_dir, "run_dir": run_dir,
                    "host_id": lab.host_id})
    prober = Prober(pause_pid, env["MEC_MP1_URL"], env["MEC_APP_TOKEN"])
    path = f"/applications/{iid}"
    res: dict[str, list[float]] = {k: [] for k in (
        "mp1_dns_call", "mp1_dns_effect", "mp1_tcp_call", "mp1_tcp_effect",
        "direct_dns_effect", "direct_tcp_effect")}
    direct_id = f"direct-{lab.tag}"
    try:
        prober(op="wait_tcp", addr=VIP, up=True)          # the deployed rule works
        direct_tr = [TrafficRule.from_etsi(traffic_rule("d", DIRECT_VIP))]
        mep.apply_rules(direct_id, target, direct_tr,
                        [DnsRule.from_etsi(dns_rule("d", DIRECT_NAME, DIRECT_VIP))])
        prober(op="wait_tcp", addr=DIRECT_VIP, up=True)
        for i in range(n):
            # interleaved, so drift hits both paths alike
            ip = ALT if i % 2 == 0 else VIP
            got = prober(op="mp1", path=f"{path}/dns_rules/dns", body=dns_rule("dns", NAME, ip),
                         wait="dns", name=NAME, ip=ip)
            res["mp1_dns_call"].append(got["call"])
            res["mp1_dns_effect"].append(got["effect"])
            prober(op="put", path=f"{path}/traffic_rules/vip",
                   body=traffic_rule("vip", VIP, "INACTIVE"))
            prober(op="wait_tcp", addr=VIP, up=False)
            got = prober(op="mp1", path=f"{path}/traffic_rules/vip",
                         body=traffic_rule("vip", VIP), wait="tcp", addr=VIP, up=True)
            res["mp1_tcp_call"].append(got["call"])
            res["mp1_tcp_effect"].append(got["effect"])
            # direct: the MEP driver alone, a rule set of its own, the same
            # steps (a DNS change with the traffic rule unchanged; then the
            # traffic rule off, untimed, and on again)
            dip = DIRECT_ALT if i % 2 == 0 else DIRECT_VIP
            dns_obj = DnsRule.from_etsi(dns_rule("d", DIRECT_NAME, dip))
            t0 = time.perf_counter()
            mep.apply_rules(direct_id, target, direct_tr, [dns_obj])
            res["direct_dns_effect"].append(prober(op="wait_dns", name=DIRECT_NAME, ip=dip) - t0)
            mep.apply_rules(direct_id, target, [], [dns_obj])
            prober(op="wait_tcp", addr=DIRECT_VIP, up=False)
            t0 = time.perf_counter()
            mep.apply_rules(direct_id, target, direct_tr, [dns_obj])
            res["direct_tcp_effect"].append(prober(op="wait_tcp", addr=DIRECT_VIP, up=True) - t0)
    finally:
        prober.close()
        mep.remove_rules(direct_id)
    return res


def report(res: dict, n: int) -> dict:
    ms = {k: {"p50": round(pct(v, 50) * 1000, 2), "p99": round(pct(v, 99) * 1000, 2)}
          for k, v in res.items()}
    out = {"n": n, "ms": ms, "target_ms": TARGET_MS,
           "ratio": {kind: {p: round(ms[f"mp1_{kind}_effect"][p] / ms[f"direct_{kind}_effect"][p],
                                     2) for p in ("p50", "p99")} for kind in ("dns", "tcp")},
           "ok": all(ms[f"mp1_{k}_effect"]["p99"] < TARGET_MS for k in ("dns", "tcp"))}
    print(f"{'from inside an app container':34} {'p50 ms':>8} {'p99 ms':>8}")
    for key in res:
        print(f"{key:34} {ms[key]['p50']:8.2f} {ms[key]['p99']:8.2f}")
    for kind in ("dns", "tcp"):
        r = out["ratio"][kind]
        print(f"Mp1 {kind} / direct MEP driver: p50 x{r['p50']}, p99 x{r['p99']}")
    print(f"target: Mp1 PUT to effect p99 < {TARGET_MS:.0f} ms: {'met' if out['ok'] else 'MISSED'}")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--json", help="write the figures to this file")
    args = ap.parse_args()
    lab = own_lab()
    left: list[str] = []
    try:
        lab.start()
        res = measure(lab, args.n)
    finally:
        left = lab.close()          # its host's chains, dnsmasq, network: the one lab's removal
    out = report(res, args.n)
    out["left_behind"] = left
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    if left:
        print(f"LEFT BEHIND: {left}")
    return 0 if out["ok"] and not left else 1


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
