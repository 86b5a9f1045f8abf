"""The benchmark lab: a `mecorch serve` process with names of its own on the
real backends, a fast API client, process sampling and the cleanup.

Everything it makes carries the run's tag: a state dir under /var/tmp
(mode 0711 so QEMU, running as libvirt-qemu, can read the pool), a docker
network, a libvirt pool and NAT network on a free 192.168.180-199.0/24, iptables
chains with the prefix MECBN<tag>, a dnsmasq on a free loopback port, a
service-address sink link. `Lab.close()` removes all of it. Only loopback
and the containers/VMs the lab starts are contacted.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import shutil
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))       # the one lab of the tests and the benchmarks

from mecorch.kernel.client import ApiError, Client           # noqa: E402
from mecorch.kernel.errors import MecorchError               # noqa: E402
from mecorch.package import build_package             # noqa: E402
from mecorch.kernel.fileutil import sha256_file              # noqa: E402
from cim_overhead import pct                            # noqa: E402,F401 - shared by the suite
from support import lab as testlab                      # noqa: E402
from support.lab import free_port                       # noqa: E402,F401 - the benches' too

INST = "/app_lcm/v1/app_instances"
PKGS = "/app_pkgm/v1/app_packages"
SERVICE_CIDR = "10.188.0.0/24"
NO_RULES = {"appTrafficRule": [], "appDNSRule": []}


def new_lab_dir(tag: str, **orchestrator) -> tuple[Path, dict, Path, str]:
    """A private state dir (tests/support/lab.py: QEMU must reach the pool
    in it) with its config written: (dir, config, config path, host id)."""
    tmp = testlab.private_dir(f"bench-{tag}")
    cfg = config(tmp, tag, free_port(), **orchestrator)
    cfg_path = tmp / "mecorch.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    return tmp, cfg, cfg_path, cfg["hosts"][0]["id"]


class Api(Client):
    """mecorch's client with an op wait that polls from every 5 ms (the
    200 ms of Client.wait_op would swamp the overhead being measured), over a
    keep-alive HTTP/1.1 connection per thread, as docker-py talks to
    dockerd: mecorch's Client opens a connection per call, which makes
    each 5 ms poll a TCP handshake and a server thread, CPU taken from
    the engine on a 2-core host and counted against mecorch."""

    # an OpWaiter: the end of each op as its notification tells it (Lab.notify_ops)
    waiter: "OpWaiter | None" = None

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self._local = threading.local()
        u = urllib.parse.urlsplit(self.base)
        self._hostport = (u.hostname, u.port)

    def call(self, method: str, path: str, body=None, headers: dict | None = None):
        data = json.dumps(body).encode() if body is not None else None
        hdrs = {"Accept": "application/json", **(headers or {})}
        if data is not None:
            hdrs["Content-Type"] = "application/json"
        if self.token:
            hdrs["Authorization"] = f"Bearer {self.token}"
        for attempt in (0, 1):
            conn = getattr(self._local, "conn", None)
            if conn is None:
                conn = self._local.conn = http.client.HTTPConnection(
                    *self._hostport, timeout=self.timeout)
            try:
                conn.request(method, path, body=data, headers=hdrs)
                resp = conn.getresponse()
                raw = resp.read()
                break
            except (http.client.HTTPException, OSError) as e:
                conn.close()
                self._local.conn = None
                # the server closed an idle keep-alive connection: once more
                if attempt or not isinstance(e, (http.client.RemoteDisconnected,
                                                 BrokenPipeError, ConnectionResetError)):
                    raise MecorchError(f"cannot reach mecorch at {self.base}: {e}") from None
        if resp.getheader("Connection", "").lower() == "close":
            conn.close()
            self._local.conn = None
        payload = json.loads(raw) if raw and "json" in resp.getheader("Content-Type", "") \
            else raw
        if resp.status >= 400:
            raise ApiError(resp.status, payload if isinstance(payload, dict) else {})
        return resp.status, payload, dict(resp.getheaders())

    def wait(self, op: dict, timeout: float = 300, poll: float = 0.005) -> dict:
        """Poll the op every `poll` s at first, then every 2 % of the time
        waited so far (at most 0.2 s): the end is seen within ~2 % of the
        op's own time while a 20 s VM boot is not polled 4,000 times (each
        poll is CPU the guest or the engine does not get on 2 cores)."""
        href = op["_links"]["self"]["href"]
        start = time.monotonic()
        deadline = start + timeout
        if self.waiter is not None:
            return self._wait_notified(op["id"], href, deadline)
        while True:
            cur = self.get(href)
            if cur["operationState"] in ("COMPLETED", "FAILED"):
                return cur
            now = time.monotonic()
            if now > deadline:
                raise TimeoutError(f"op {cur['id']} still {cur['operationState']}")
            time.sleep(min(0.2, max(poll, 0.02 * (now - start))))

    def _wait_notified(self, op_id: str, href: str, deadline: float) -> dict:
        """Wait for the op's COMPLETED/FAILED notification, then read the op
        once; a GET every second as well, should a notification be late."""
        while True:
            self.waiter.ended(op_id, 1.0)
            cur = self.get(href)
            if cur["operationState"] in ("COMPLETED", "FAILED"):
                self.waiter.forget(op_id)
                return cur
            if time.monotonic() > deadline:
                raise TimeoutError(f"op {cur['id']} still {cur['operationState']}")

    host_id = "default"
    poll = 0.005

    def deploy(self, app_d_id: str, **body) -> tuple[str, dict]:
        inst, _ = self.post(INST, {"appDId": app_d_id})
        op, _ = self.post(f"{INST}/{inst['id']}/instantiate",
                          {"selectedMECHostInfo": [{"hostId": {"id": self.host_id}}], **body})
        return inst["id"], self.wait(op, poll=self.poll)

    def terminate(self, iid: str, body: dict | None = None) -> dict:
        op, _ = self.post(f"{INST}/{iid}/terminate", body or {"terminationType": "FORCEFUL"})
        return self.wait(op, poll=self.poll)

    def delete(self, iid: str) -> None:
        self.call("DELETE", f"{INST}/{iid}")


def names(tag: str) -> testlab.Names:
    # a host id of its own: mecorch labels what it makes with it, and
    # another mecorch on this machine (the tests') must not see the
    # bench's containers as its own orphans, nor the bench theirs
    return testlab.Names("bench", tag=f"bench{tag}")


def config(tmp: Path, tag: str, dns_port: int, **orchestrator) -> dict:
    # a service link and range of its own: the cleanup removes the link
    host = testlab.host_config(names(tag), dns_port=dns_port,
                               mep={"service_cidr": SERVICE_CIDR,
                                    "service_interface": f"mecb-{tag}"[:15]})
    return testlab.lab_config(tmp, [host], orchestrator=orchestrator)


class Serve(testlab.Serve):
    """The lab's `mecorch serve` (tests/support/lab.py), started at once,
    with the benchmarks' keep-alive client as `api`."""

    def __init__(self, cfg_path: Path, log_path: Path, host_id: str = "default"):
        super().__init__(cfg_path, log_path.parent, name=log_path.stem,
                         ready=f"{PKGS}?filter=(eq,appDId,bench-ready-probe)",
                         client_timeout_s=120)
        self.api = Api(self.url, token="", timeout=120)
        self.api.host_id = host_id
        self.start(wait=False)

    def ready(self, timeout: float = 30) -> float:
        """Seconds from the exec to the first answer of GET app_packages
        (a query matching nothing: with a large store, listing everything
        would measure the listing, which store_scale measures)."""
        return self.wait_ready(timeout)


def loopback_receiver(on_post, path: str, name: str) -> tuple[ThreadingHTTPServer, str]:
    """A notification receiver on 127.0.0.1: on_post(body bytes) for each
    POST, answered 204 when it returns True (else not at all). The server
    (serving from a thread of its own) and its callback URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            if on_post(self.rfile.read(int(self.headers["Content-Length"]))):
                self.send_response(204)
                self.end_headers()

        def log_message(self, *a):
            pass
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name=name, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}{path}"


class OpWaiter:
    """A loopback receiver of AppLcmOpOccNotification: how an ETSI MEC 010-2
    client learns that an operation ended, without polling. (Polling every
    5 ms cost the serve ~70 ms and the client ~60 ms of CPU per container
    deploy+terminate on a 2-core host: CPU taken from the engine and counted
    against mecorch, while the direct path polls nothing.)"""

    def __init__(self):
        self._ended: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

        def ended(body: bytes) -> bool:
            self._event(json.loads(body).get("appLcmOpOccId", "")).set()
            return True
        self.server, self.url = loopback_receiver(ended, "/ops", "op-waiter")

    def _event(self, op_id: str) -> threading.Event:
        with self._lock:
            return self._ended.setdefault(op_id, threading.Event())

    def ended(self, op_id: str, timeout: float) -> bool:
        return self._event(op_id).wait(timeout)

    def forget(self, op_id: str) -> None:
        with self._lock:
            self._ended.pop(op_id, None)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Lab:
    """A tagged state dir, config and serve process; `close` removes all."""

    def __init__(self, **orchestrator):
        self.tag = secrets.token_hex(3)
        self.tmp, self.cfg, self.cfg_path, _ = new_lab_dir(self.tag, **orchestrator)
        self.dns_port = self.cfg["hosts"][0]["mep"]["dns_port"]
        self.serve: Serve | None = None
        self.pkgs: dict[str, dict] = {}
        self.waiter: OpWaiter | None = None

    @property
    def host_id(self) -> str:
        return self.cfg["hosts"][0]["id"]

    @property
    def host_dirs(self) -> tuple[str, str]:
        return (str(self.tmp / "state" / "hosts" / self.host_id),
                str(self.tmp / "run" / self.host_id))

    def start(self) -> float:
        self.serve = Serve(self.cfg_path, self.tmp / "serve.log", self.host_id)
        self.serve.api.waiter = self.waiter     # the subscription is in the store
        return self.serve.ready()

    @property
    def api(self) -> Api:
        assert self.serve is not None
        return self.serve.api

    def notify_ops(self) -> OpWaiter:
        """Subscribe to the end (COMPLETED, FAILED) of every LCM operation:
        from now on the lab's clients wait for the notification instead of
        polling (Api.waiter)."""
        if self.waiter is None:
            self.waiter = OpWaiter()
            self.api.post("/app_lcm/v1/subscriptions", {
                "subscriptionType": "AppLcmOpOccStateChange", "callbackUri": self.waiter.url,
                "appLcmOpOccSubscriptionFilter": {"operationStates": ["COMPLETED", "FAILED"]}})
        self.api.waiter = self.waiter
        return self.waiter

    def onboard(self, folder: str, app_d_id: str) -> dict:
        """Onboard a copy of an example package under an appDId of the
        bench's own, so its registry image is not the tests' image."""
        src = REPO / "examples" / folder
        dst = self.tmp / "pkgsrc" / app_d_id
        shutil.copytree(src, dst)
        appd = dst / "Definitions" / "appd.yaml"
        doc = yaml.safe_load(appd.read_text())
        doc["appDId"] = doc["appName"] = app_d_id
        doc["swImageDescriptor"]["name"] = f"mecorch/{app_d_id}"
        appd.write_text(yaml.safe_dump(doc, sort_keys=False))
        zpath = build_package(dst, self.tmp / f"{app_d_id}.zip")
        pkg, _ = self.api.post(PKGS, {"appPkgName": app_d_id, "appPkgVersion": "1.0",
                                      "appPkgPath": str(zpath),
                                      "checksum": {"algorithm": "SHA-256",
                                                   "hash": sha256_file(zpath)}})
        self.pkgs[app_d_id] = pkg
        return pkg

    def pkg_doc(self, app_d_id: str) -> dict:
        """The onboarded package's stored document (with the internal
        fields: _appd, _image), read from the lab's store."""
        import sqlite3
        db = sqlite3.connect(f"file:{self.tmp / 'state' / 'mecorch.db'}?mode=ro", uri=True)
        try:
            row = db.execute("SELECT doc FROM packages WHERE appDId=?", (app_d_id,)).fetchone()
        finally:
            db.close()
        return json.loads(row[0])

    def close(self) -> list[str]:
        """Terminate and delete every instance, delete the packages, stop
        the server, remove the infrastructure. Returns what was left."""
        problems = []
        if self.serve is not None and self.serve.proc.poll() is None:
            api = self.api
            try:
                for inst in api.get_all(INST):
                    if inst["instantiationState"] == "INSTANTIATED":
                        api.terminate(inst["id"])
                    api.delete(inst["id"])
                for pkg in api.get(PKGS):
                    if pkg["operationalState"] == "ENABLED":
                        api.call("PATCH", f"{PKGS}/{pkg['id']}", {"operationState": "DISABLED"})
                    api.call("DELETE", f"{PKGS}/{pkg['id']}")
            except Exception as e:  # noqa: BLE001 - clean up the rest anyway
                problems.append(f"API cleanup: {e}")
            self.serve.stop()
        if self.waiter is not None:
            self.waiter.close()
        problems += remove_infrastructure(self.cfg, self.tag, *self.host_dirs,
                                          tmp=str(self.tmp))
        shutil.rmtree(self.tmp, ignore_errors=True)
        return problems


def remove_infrastructure(cfg: dict, tag: str, state_dir: str, run_dir: str,
                          tmp: str) -> list[str]:
    """What the lab's host made (tests/support/lab.py: instances by owner
    mark, network, pool, dnsmasq, chains), what the direct paths made (by
    the bench's label, or disks under the lab's dir), the lab's service
    link. Returns what the host still held before the forced removal."""
    host = cfg["hosts"][0]
    left = testlab.leftovers(host)
    ids = testlab.run("docker", "ps", "-aq", "--filter", f"label=mecorch.bench={tag}",
                      check=False).stdout.split()
    if ids:
        testlab.run("docker", "rm", "-f", *ids, check=False)
    for dom in testlab.run(*testlab.VIRSH, "list", "--all", "--name",
                           check=False).stdout.split():
        if tmp in testlab.run(*testlab.VIRSH, "dumpxml", dom, check=False).stdout:
            testlab.run(*testlab.VIRSH, "destroy", dom, check=False)
            testlab.run(*testlab.VIRSH, "undefine", dom, "--nvram", check=False)
    testlab.remove_host(host, cfg["state_dir"], cfg["run_dir"])
    testlab.run("ip", "link", "del", host["mep"]["service_interface"], check=False)
    return left


# ------------------------------------------------------------------ process sampling
CLK_TCK = os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_s(pid: int) -> float:
    """utime + stime of the process (all its threads), seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def descendants(pid: int) -> list[int]:
    """Every process below pid (children, grandchildren...)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


def sample(pid: int, seconds: float, every: float = 1.0) -> dict:
    """RSS (mean, max) and CPU (% of one core over the whole period)."""
    rss = []
    c0, t0 = cpu_s(pid), time.monotonic()
    while time.monotonic() - t0 < seconds:
        rss.append(rss_mb(pid))
        time.sleep(every)
    cpu = (cpu_s(pid) - c0) / (time.monotonic() - t0) * 100
    return {"rss_mb": round(sum(rss) / len(rss), 1), "rss_max_mb": round(max(rss), 1),
            "cpu_pct": round(cpu, 2), "threads": threads(pid),
            "descendants": len(descendants(pid)), "seconds": seconds}
