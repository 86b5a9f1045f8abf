"""Two edge sites under one MEO on this machine, for the system-level
tests and benchmarks that move apps between hosts (relocation, drain):
each site is an MEPM (`mecorch serve --role mepm`) with dockerd's CIM,
libvirt's VIM and a MEP of its own in a network namespace with its own
service range, so what a name answers tells which host's copy it is. A
client in each site's netns reaches that site's service addresses.

`two_sites(tag)` yields {"c": the MEO's client, "procs", "edges": name ->
{id, host (its config), netns, dns_port, name, range}, "pkgs": the sample
packages by appDId, "tmp", "registry" (edge2's own image repository when
asked: stopping it makes that host's deploys fail)}, and on exit removes
everything and asserts nothing is left.
"""

from __future__ import annotations

import secrets
import threading
import time
from contextlib import contextmanager

from mecorch.kernel import config as mconfig
from support import lab

HOSTS = "/mecorch/v1/hosts"
SERVICE_CIDRS = {1: "10.191.0.0/24", 2: "10.192.0.0/24"}


@contextmanager
def two_sites(prefix: str, registry_on: tuple[int, ...] = (), meo: dict | None = None):
    tmp = lab.private_dir(prefix)       # QEMU (libvirt-qemu) reaches the pools under it
    tag = secrets.token_hex(3)
    made: dict = {"netns": [], "docker_user": [], "hosts": []}
    procs: dict[str, lab.Serve] = {}
    edges: dict[str, dict] = {}
    tokens = {who: secrets.token_hex(16) for who in ("meo", "edge1", "edge2")}
    for who, token in tokens.items():
        (tmp / f"{who}.token").write_text(token + "\n")
    registry = None
    if registry_on:
        (tmp / "registry").mkdir()
        registry = lab.private_registry(tmp / "registry")
        registry.start()
    left: list[str] = []
    try:
        for k in (1, 2):
            name = f"edge{k}"
            netns = lab.Netns(f"ms{tag}{k}")
            made["netns"].append(netns)
            veth = f"vs{tag}{k}"
            link = lab.free_subnet("10.233.0.0/16").rsplit(".", 1)[0]
            netns.link(veth, f"{link}.1/24", f"{link}.2/24")
            netns.exec("ip", "route", "add", "default", "via", f"{link}.1")
            # the site's client reaches its containers over the veth
            lab.run("iptables", "-I", "DOCKER-USER", "-i", veth, "-j", "ACCEPT")
            made["docker_user"].append(veth)
            port = lab.free_port()
            entry = {"id": lab.Names(f"s{k}").host_id,
                     "cim": {"registry": registry.addr} if k in registry_on else {},
                     "vim": {"network_cidr": lab.free_subnet(), "accel": "tcg"},
                     "mep": {"netns": netns.name, "service_cidr": SERVICE_CIDRS[k]}}
            cfg = {"role": "mepm", "state_dir": str(tmp / name),
                   "run_dir": str(tmp / "run" / name),
                   "api": {"token_file": str(tmp / f"{name}.token"),
                           "mp1_url": f"http://127.0.0.1:{port}/mec_app_support/v1"},
                   "hosts": [entry]}
            procs[name] = lab.Serve(cfg, tmp, name=name, role="mepm",
                                    listen=f"127.0.0.1:{port}", token=tokens[name])
            host = mconfig.load(procs[name].config_path)["hosts"][0]     # its derived names
            made["hosts"].append((host, cfg))
            edges[name] = {"id": host["id"], "host": host, "netns": netns.name,
                           "dns_port": host["mep"]["dns_port"], "name": name,
                           "range": SERVICE_CIDRS[k].rsplit(".", 1)[0] + "."}
        meo_cfg = {"role": "meo", "state_dir": str(tmp / "meo"), "run_dir": str(tmp / "run/meo"),
                   "api": {"token_file": str(tmp / "meo.token")}, "hosts": [],
                   "meo": {"heartbeat_s": 1, "sync_s": 2, **(meo or {}),
                           "mepms": [{"id": e["id"], "url": procs[n].url,
                                      "token_file": str(tmp / f"{n}.token")}
                                     for n, e in edges.items()]}}
        procs["meo"] = lab.Serve(meo_cfg, tmp, name="meo", role="meo", token=tokens["meo"])
        for name in edges:
            procs[name].start()
        procs["meo"].start()
        c = procs["meo"].client
        lab.wait_for(lambda: len(c.get(HOSTS)) == 2 and all(
            h["state"] == "REACHABLE" for h in c.get(HOSTS)), 60, "two REACHABLE hosts")
        pkgs = lab.onboard_samples(c, tmp)
        yield {"c": c, "procs": procs, "edges": edges, "pkgs": pkgs, "tmp": tmp,
               "registry": registry}
    finally:
        left = lab.teardown_system(procs, made, tmp, timeout_s=180)
        if registry is not None:
            registry.stop()
    assert left == [], f"left behind by the MEO's cleanup: {left}"


def edge_of(s: dict, host_id: str) -> dict:
    return next(e for e in s["edges"].values() if e["id"] == host_id)


def other(s: dict, host_id: str) -> dict:
    return next(e for e in s["edges"].values() if e["id"] != host_id)


def dig(edge: dict, name: str) -> str:
    return lab.dig(edge["dns_port"], name, netns=edge["netns"], tries=1, time_s=1)


def get(edge: dict, url: str) -> str:
    return lab.run("ip", "netns", "exec", edge["netns"], "curl", "-s", "-m", "1", url,
                   check=False).stdout


def answer(edge: dict, name: str, path: str) -> str:
    """What the site's client gets: the name on its MEP, then the path."""
    ip = dig(edge, name)
    return get(edge, f"http://{ip}{path}") if ip else ""


class Client:
    """A client in each site's netns asking for `name` and `path` every
    100 ms, recording when each site answered with `want`."""

    def __init__(self, edges: list[dict], name: str, path: str, want: str):
        self.name, self.path, self.want = name, path, want
        self.seen: dict[str, list[float]] = {e["id"]: [] for e in edges}
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._ask, args=(e,), daemon=True)
                         for e in edges]
        for t in self._threads:
            t.start()

    def _ask(self, edge: dict) -> None:
        while not self._stop.is_set():
            at = time.monotonic()
            if self.want in answer(edge, self.name, self.path):
                self.seen[edge["id"]].append(at)
            self._stop.wait(max(0.0, 0.1 - (time.monotonic() - at)))

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)

    def downtime(self, source: str, target: str, since: float) -> float:
        """From the source's last answer (after `since`) to the target's
        first one after it: how long no site answered."""
        last = max((t for t in self.seen[source] if t >= since), default=since)
        first = min(t for t in self.seen[target] if t > last)
        return first - last
