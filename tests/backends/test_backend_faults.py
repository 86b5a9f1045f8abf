"""Backend faults on real daemons of the test's own: each backend goes away
during operations and comes back, and afterwards the state is consistent
(no op left STARTING/PROCESSING, no INSTANTIATED instance without its
runtime, no orphan), while the API kept answering other requests (every GET
within 1 s during the outage) and other backends kept working.

The shared daemons (the system dockerd, the registry on :5000, the system
libvirtd) are never stopped. Instead:
- dockerd: a private `dockerd` (own socket, data root, exec root, pid file,
  a default bridge of its own - never `--bridge=none`, which deletes the
  host's docker0 -, no iptables, its own address pool, live-restore so that
  containers outlive a daemon restart) that the test stops (SIGTERM) and
  starts again by pid;
- the registry: a private `docker-registry serve` on a free loopback port;
- dnsmasq: the MEP's own dnsmasq, killed by the pid in its pid file (the
  reconciler's round re-opens the MEP, which starts it again);
- libvirtd: it is system-wide, so mecorch reaches it through a unix-socket
  proxy (`qemu+unix:///system?socket=...`) that the test cuts: live
  connections are closed and the socket disappears, then it comes back.
  This is libvirtd going away and returning as mecorch sees it (its
  connection drops, new ones are refused); libvirtd itself and its domains
  keep running, as they do across a real libvirtd restart.

The number of faults injected is printed (pytest -s) and written to
$MECORCH_FAULTS_SUMMARY (default /var/tmp/mecorch-faults-summary.txt).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from conftest import run
from support.crashlab import INST, OPS, PKGS, VIRSH, Lab, private_registry, wait_clean
from support.lab import PrivateDockerd, dig as lab_dig

pytestmark = [pytest.mark.docker, pytest.mark.libvirt, pytest.mark.mep]

LIBVIRT_SOCK = "/var/run/libvirt/libvirt-sock"
SUMMARY = os.environ.get("MECORCH_FAULTS_SUMMARY", "/var/tmp/mecorch-faults-summary.txt")
FAULTS: list[str] = []


# ---------------------------------------------------------------- private daemons
class SocketProxy:
    """A unix-socket forwarder to libvirtd's socket that can be cut."""

    def __init__(self, path: str, target: str):
        self.path, self.target = path, target
        self._srv: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._up = threading.Event()

    def start(self) -> None:
        Path(self.path).unlink(missing_ok=True)
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(self.path)
        srv.listen(16)
        srv.settimeout(0.2)
        self._srv = srv
        self._up.set()
        threading.Thread(target=self._accept, args=(srv,), daemon=True).start()

    def stop(self) -> None:
        self._up.clear()
        with self._lock:
            srv, self._srv = self._srv, None
            conns, self._conns = self._conns, []
        if srv:
            srv.close()
        Path(self.path).unlink(missing_ok=True)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()

    def _accept(self, srv: socket.socket) -> None:
        while self._up.is_set():
            try:
                down, _ = srv.accept()
            except (socket.timeout, OSError):
                continue
            up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            up.connect(self.target)
            with self._lock:
                self._conns += [down, up]
            for a, b in ((down, up), (up, down)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class Prober:
    """GETs the API in a loop while a fault lasts: every answer must be
    200 and come within 1 s."""

    def __init__(self, lab: Lab, paths: list[str]):
        self.lab, self.paths = lab, paths
        self.worst, self.count, self.errors = 0.0, 0, []
        self._stop = threading.Event()

    def __enter__(self):
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            for p in self.paths:
                t0 = time.monotonic()
                try:
                    self.lab.c.get(p)
                except Exception as e:  # noqa: BLE001 - recorded, asserted below
                    self.errors.append(f"{p}: {e}")
                self.worst = max(self.worst, time.monotonic() - t0)
                self.count += 1
            time.sleep(0.05)

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join(timeout=10)
        assert not self.errors, self.errors[:5]
        assert self.count > 0 and self.worst < 1.0, (self.count, self.worst)


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def fab(sample_container, sample_vm):
    """The lab, wired to a private dockerd, a private registry and a
    libvirt socket proxy."""
    tag = f"{os.getpid()}-{int(time.time()) % 100000}"
    root = Path(f"/var/tmp/mecorch-faults-{tag}")
    root.mkdir(mode=0o711)
    dockerd = PrivateDockerd(root, f"fault-{tag}", "10.232.0.0/16", "10.231.0.0/16",
                             "--live-restore")
    registry = private_registry(root)
    proxy = SocketProxy(f"/run/mecorch-lvp-{tag}.sock", LIBVIRT_SOCK)
    dockerd.start()
    registry.start()
    proxy.start()
    lab = Lab("fault",
              cim={"docker_host": dockerd.host, "registry": registry.addr},
              vim={"uri": f"qemu+unix:///system?socket={proxy.path}"})
    try:
        lab.start()
        lab.onboard()
        yield {"lab": lab, "dockerd": dockerd, "registry": registry, "proxy": proxy}
    finally:
        for d in (dockerd, registry):
            if d.proc.poll() is not None:
                d.start()
        if not Path(proxy.path).exists():
            proxy.start()
        left = lab.teardown()
        # the private dockerd's objects: nothing of mecorch's may be left
        ps = dockerd.containers()
        proxy.stop()
        dockerd.stop()
        registry.stop()
        dockerd.remove()
        shutil.rmtree(root, ignore_errors=True)
        text = f"{len(FAULTS)} faults injected: " + "; ".join(FAULTS)
        print("\n" + text)
        with open(SUMMARY, "w") as f:
            f.write(text + "\n")
        assert left == [] and ps == [] and not root.exists(), (left, ps)


def probe_paths(lab: Lab, iid: str) -> list[str]:
    return [INST, OPS, PKGS, f"{INST}/{iid}",
            f"/mec_app_support/v1/applications/{iid}/dns_rules"]


def wait_failed(lab: Lab, op: dict, timeout: float = 120) -> dict:
    op = lab.c.wait_op(op, timeout=timeout)
    assert op["operationState"] == "FAILED", op
    return op


def wait_round(lab: Lab, text: str, timeout: float = 10) -> None:
    """Until the server log shows a reconciliation round saying `text`."""
    deadline = time.monotonic() + timeout
    while text not in lab.log_tail(20000):
        assert time.monotonic() < deadline, f"no {text!r} in the log:\n{lab.log_tail()}"
        time.sleep(0.2)


class _Silent(BaseHTTPRequestHandler):
    """An app's notification endpoint that never confirms termination."""

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *a):
        pass


# ---------------------------------------------------------------- the faults
def test_dockerd_stopped_and_restarted(fab):
    lab, dockerd = fab["lab"], fab["dockerd"]
    witness = lab.deploy("sample-http", "CONTAINER")
    ident = run(*lab.docker, "ps", "-q", "--no-trunc", "--filter",
                f"label=mecorch.instance={witness}").stdout.split()
    started = run(*lab.docker, "inspect", "--format", "{{.State.StartedAt}}", *ident).stdout
    other = lab.create("sample-http")

    # 1. dockerd restarts while a graceful terminate waits for the app:
    #    the stop step finds no daemon, the op fails with the reason and
    #    the instance is still INSTANTIATED (its container is still there)
    cb = HTTPServer(("127.0.0.1", 0), _Silent)
    threading.Thread(target=cb.serve_forever, daemon=True).start()
    lab.c.post(f"/mec_app_support/v1/applications/{witness}/subscriptions", {
        "subscriptionType": "AppTerminationNotificationSubscription",
        "callbackReference": f"http://127.0.0.1:{cb.server_address[1]}/n",
        "appInstanceId": witness})
    op = lab.terminate(witness, graceful_s=3)
    time.sleep(1)
    with Prober(lab, probe_paths(lab, witness)):
        dockerd.stop()
        FAULTS.append("dockerd stopped during a graceful terminate")
        err = wait_failed(lab, op)["error"]
        assert err["status"] == 503 and "dockerd" in err["detail"], err
        assert lab.c.get(f"{INST}/{witness}")["instantiationState"] == "INSTANTIATED"

        # 2. while it is down: instantiate fails with the reason, nothing is
        #    left in PROCESSING, a round skips the CIM (cannot list is not
        #    "nothing exists": the witness is not marked MISSING), and the
        #    VM manner keeps working
        err = wait_failed(lab, lab.instantiate(other, "CONTAINER"))["error"]
        assert err["status"] == 503 and "dockerd" in err["detail"], err
        assert lab.c.get(f"{INST}/{other}")["instantiationState"] == "NOT_INSTANTIATED"
        wait_round(lab, "skipped CONTAINER")
        assert lab.c.get(f"{INST}/{witness}").get("observedState") != "MISSING"
        vm = lab.deploy("sample-vm", "VM")
        assert lab.busy_ops() == []
    cb.shutdown()
    dockerd.start()
    wait_clean(lab, time.monotonic(), 10.0)
    # live-restore: the container ran through the outage, untouched
    assert run(*lab.docker, "inspect", "--format", "{{.State.StartedAt}}",
               *ident).stdout == started
    for iid in (other,):
        op = lab.c.wait_op(lab.instantiate(iid, "CONTAINER"), timeout=120)
        assert op["operationState"] == "COMPLETED", op.get("error")
    for iid in (witness, other, vm):
        op = lab.c.wait_op(lab.terminate(iid), timeout=120)
        assert op["operationState"] == "COMPLETED", op.get("error")
    wait_clean(lab, time.monotonic(), 10.0)


def test_registry_stopped_and_restarted(fab):
    lab, registry = fab["lab"], fab["registry"]
    iid = lab.create("sample-http")
    with Prober(lab, probe_paths(lab, iid)):
        registry.stop()
        FAULTS.append("registry stopped before an instantiate")
        err = wait_failed(lab, lab.instantiate(iid, "CONTAINER"))["error"]
        assert err["status"] == 503 and "registry" in err["detail"], err
        assert lab.problems() == []
    registry.start()
    op = lab.c.wait_op(lab.instantiate(iid, "CONTAINER"), timeout=120)
    assert op["operationState"] == "COMPLETED", op.get("error")
    op = lab.c.wait_op(lab.terminate(iid), timeout=120)
    assert op["operationState"] == "COMPLETED", op.get("error")
    wait_clean(lab, time.monotonic(), 10.0)


def test_libvirtd_unreachable_during_a_vm_boot_and_back(fab):
    lab, proxy = fab["lab"], fab["proxy"]
    witness = lab.deploy("sample-vm", "VM")
    name = f"mecorch-{witness}"
    ident = (run(*VIRSH, "domuuid", name).stdout, run(*VIRSH, "domid", name).stdout)
    iid = lab.create("sample-vm")
    op = lab.instantiate(iid, "VM")
    time.sleep(3)                       # the domain is defined and booting
    assert f"mecorch-{iid}" in run(*VIRSH, "list", "--all", "--name").stdout
    with Prober(lab, probe_paths(lab, witness)):
        proxy.stop()
        FAULTS.append("libvirtd unreachable during a VM boot")
        err = wait_failed(lab, op)["error"]
        assert err["status"] == 503 and "libvirtd unreachable" in err["detail"], err
        assert lab.c.get(f"{INST}/{iid}")["instantiationState"] == "NOT_INSTANTIATED"
        wait_round(lab, "skipped VM")
        assert lab.c.get(f"{INST}/{witness}").get("observedState") != "MISSING"
        # the rollback could not reach libvirtd: the domain is still there,
        # for the reconciler to remove once it can
        assert f"mecorch-{iid}" in run(*VIRSH, "list", "--all", "--name").stdout
        # containers keep working meanwhile
        c = lab.deploy("sample-http", "CONTAINER")
        assert lab.busy_ops() == []
    proxy.start()
    wait_clean(lab, time.monotonic(), 10.0)         # the orphan domain is gone
    assert (run(*VIRSH, "domuuid", name).stdout, run(*VIRSH, "domid", name).stdout) == ident
    op = lab.c.wait_op(lab.instantiate(iid, "VM"), timeout=300)
    assert op["operationState"] == "COMPLETED", op.get("error")
    for i in (iid, witness, c):
        op = lab.c.wait_op(lab.terminate(i), timeout=120)
        assert op["operationState"] == "COMPLETED", op.get("error")
    wait_clean(lab, time.monotonic(), 10.0)


def _dig(port: int, name: str) -> str:
    return lab_dig(port, name)


def test_dnsmasq_killed_is_started_again(fab):
    lab = fab["lab"]
    witness = lab.deploy("sample-http", "CONTAINER")
    assert _dig(lab.dns_port, "lab-container.mec.local") == "10.90.0.200"
    pid_file = lab.tmp / "run" / lab.host_id / "dnsmasq.pid"
    pid = int(pid_file.read_text())
    with Prober(lab, probe_paths(lab, witness)):
        os.kill(pid, signal.SIGKILL)
        FAULTS.append("the MEP's dnsmasq killed")
        t0 = time.monotonic()
        # a rule change while it is down still lands (in its hostsdir)
        other = lab.create("sample-vm")
        vm_op = lab.instantiate(other, "VM", 1)
        while _dig(lab.dns_port, "lab-container.mec.local") != "10.90.0.200":
            assert time.monotonic() - t0 < 10, "dnsmasq did not come back"
            time.sleep(0.3)
    assert int(pid_file.read_text()) != pid
    assert lab.c.wait_op(vm_op, timeout=300)["operationState"] == "COMPLETED"
    assert _dig(lab.dns_port, "lab-vm.mec.local") == "10.90.0.201"
    for i in (witness, other):
        op = lab.c.wait_op(lab.terminate(i), timeout=120)
        assert op["operationState"] == "COMPLETED", op.get("error")
    wait_clean(lab, time.monotonic(), 10.0)
