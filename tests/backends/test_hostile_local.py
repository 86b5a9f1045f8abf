"""Hostile local users and hostile clients (issue 28, findings 5, 7, 8, 9).

- TestStateFilesPrivate (5): everything mecorch writes under its state dir
  is the owner's only (dir 0700, files 0600), new and existing alike: a
  real `mecorch serve` deploys the sample container app with a BASIC-auth
  LCM subscription, then `find STATE_DIR -perm /077` finds nothing.
- TestVmTokenOffCommandLine (7): a VM's Mp1 token reaches the guest through
  a 0600 fw_cfg file, never QEMU's command line (/proc/PID/cmdline); the
  guest still calls Mp1 with it; the file goes with the domain.
- TestTokenFileComments (8): a comment line is a comment however indented,
  in api.token_file and in an MEO's token files.
- TestListenerLimits (9): the API and the Mp1 gateway listeners hold at most
  api.max_connections connections (more are answered 503 at once, without a
  thread each) and cut off a request not complete within
  api.request_deadline_s.
"""

from __future__ import annotations

import http.client
import ipaddress
import os
import secrets
import shutil
import socket
import stat
import threading
import time
import urllib.request
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import WORKLOADS, run
from support import lab as thelab
from support.fakes import FakeCompute, FakeMep
from mecorch.kernel import config as mconfig
from mecorch.api import load_tokens, make_server, serve_app_networks
from mecorch.kernel.errors import InvalidInput, MecorchError
from mecorch.kernel.fileutil import sha256_file
from mecorch.meo.registry import _read_token
from mecorch.driverapi.model import PortSpec, ResourceRequest
from mecorch.mepm.register import _first_line
from mecorch.mepm.orchestrator import Orchestrator
from mecorch.kernel.states import DeploymentType
from support.corelab import INST

try:
    import libvirt
except ImportError:              # no libvirt bindings: TestVmTokenOffCommandLine is skipped
    libvirt = None
if libvirt is not None:
    from drivers.libvirt_vim import LibvirtVIM
    from drivers.libvirt_vim import xmlrender as X
    from support.libvirtlab import conn, vim_cfg  # noqa: F401 - fixtures: pool, network, state dir


# ---------------------------------------------------------------- finding 8
class TestTokenFileComments:
    TOKEN = "a-real-operator-token-0123456789"

    @pytest.mark.parametrize("comment", ["   # operator tokens", "\t# rotated 2026-12-01",
                                         " #short"])
    def test_an_indented_comment_is_not_a_token(self, tmp_path, comment):
        path = tmp_path / "tokens"
        path.write_text(f"{comment}\n{self.TOKEN}\n  \n")
        cfg = mconfig.load()
        cfg["api"]["token_file"] = str(path)
        assert load_tokens(cfg, "127.0.0.1") == {self.TOKEN}
        # the MEO's token file for an MEPM: the first token, not the comment
        assert _read_token(str(path), "meo.mepms[0].token_file") == self.TOKEN
        # an MEPM's token for its MEO (mepm.meo_token_file), the same way
        assert _first_line(str(path)) == self.TOKEN

    def test_a_file_of_comments_only_holds_no_token(self, tmp_path):
        path = tmp_path / "tokens"
        path.write_text("  # operator tokens, one a line (at least 16 characters)\n")
        cfg = mconfig.load()
        cfg["api"]["token_file"] = str(path)
        with pytest.raises(InvalidInput):
            load_tokens(cfg, "127.0.0.1")
        with pytest.raises(InvalidInput, match="holds no token"):
            _read_token(str(path), "mepm.meo_token_file")


# ---------------------------------------------------------------- finding 9
class _Listeners:
    """The real API server with in-memory drivers (as test_access.Served),
    the given api.* limits, and an Mp1 listener as on an app network's
    gateway (127.0.0.2 here, the API's port)."""

    def __init__(self, tmp: Path, cap: int, deadline_s: float):
        cfg = mconfig.load()
        cfg["state_dir"] = str(tmp / "state")
        cfg["api"]["max_connections"] = cap
        cfg["api"]["request_deadline_s"] = deadline_s
        self.orch = Orchestrator(cfg)
        host = self.orch.inventory.get("default")
        host.attach("cim", FakeCompute(DeploymentType.CONTAINER))
        host.attach("vim", FakeCompute(DeploymentType.VM))
        host.attach("mep", FakeMep())
        self.server = make_server(self.orch, "127.0.0.1:0")
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        self.port = self.server.server_address[1]
        self.orch.mep.app_gateways = lambda: ["127.0.0.2"]
        self.mp1 = serve_app_networks(self.orch, self.port)
        assert [s.server_address[0] for s in self.mp1] == ["127.0.0.2"]

    def close(self) -> None:
        for s in [self.server, *self.mp1]:
            s.shutdown()
            s.server_close()
        self.orch.close()


def _get(addr: str, port: int, path: str) -> tuple[int, bytes]:
    with socket.create_connection((addr, port), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        resp = http.client.HTTPResponse(s)
        resp.begin()
        return resp.status, resp.read()


def _answer(s: socket.socket) -> int | None:
    """The status a connection was answered with, or None: closed unanswered."""
    resp = http.client.HTTPResponse(s)
    try:
        resp.begin()
    except (http.client.RemoteDisconnected, ConnectionResetError):
        return None
    return resp.status


class TestListenerLimits:
    CAP, DEADLINE = 20, 2.0

    @pytest.fixture
    def lab(self, tmp_path):
        lab = _Listeners(tmp_path, self.CAP, self.DEADLINE)
        yield lab
        lab.close()

    @pytest.mark.parametrize("where", ["api", "mp1"])
    def test_idle_connections_over_the_cap_hold_no_thread(self, lab, where):
        """cap+50 idle connections: the threads stay at most the cap; the 50
        over it are answered 503 at once; the idle ones are cut off at the
        deadline; then a well-formed request is answered."""
        addr = "127.0.0.1" if where == "api" else "127.0.0.2"
        path = INST if where == "api" else "/mec_app_support/v1/applications/x/dns_rules"
        assert _get(addr, lab.port, path)[0] in (200, 401)      # starts the deadline thread
        before = threading.active_count()
        t0 = time.monotonic()
        conns = [socket.create_connection((addr, lab.port), timeout=10)
                 for _ in range(self.CAP + 50)]
        try:
            time.sleep(0.5)
            grown = threading.active_count() - before
            print(f"\n{where}: {len(conns)} idle connections: {grown} more threads")
            assert grown <= self.CAP, grown
            busy = []
            for c in conns[self.CAP:]:
                c.settimeout(1)
                busy.append(_answer(c))
            assert busy == [503] * 50, busy
            # the idle ones within the cap: cut off at the deadline (408)
            for c in conns[:self.CAP]:
                c.settimeout(self.DEADLINE + 5)
                assert _answer(c) in (408, None)
            cut = time.monotonic() - t0
            print(f"{where}: idle connections cut off after {cut:.2f} s "
                  f"(deadline {self.DEADLINE} s)")
            assert cut < self.DEADLINE + 2, cut
        finally:
            for c in conns:
                c.close()
        assert _get(addr, lab.port, path)[0] in (200, 401)

    # (An Mp1 listener refuses a request without an app token before its
    # body is read: only its request line and headers can drip there.)
    @pytest.mark.parametrize("where,drip_from", [("api", "line"), ("mp1", "line"),
                                                 ("api", "body")])
    def test_a_dripping_request_is_cut_off_at_the_deadline(self, lab, where, drip_from):
        """A byte every 0.1 s (from the request line on, or after whole
        headers) never trips the per-read timeout (30 s); the whole request
        is cut off at its deadline with a 408."""
        addr = "127.0.0.1" if where == "api" else "127.0.0.2"
        body = b'{"appDId": "' + b"x" * 400 + b'"}'
        data = (f"POST {INST} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nX-Pad: {'p' * 40}\r\n\r\n").encode() + body
        with socket.create_connection((addr, lab.port), timeout=10) as s:
            t0 = time.monotonic()
            sent = 0 if drip_from == "line" else data.index(b"\r\n\r\n") + 5
            s.sendall(data[:sent])
            try:
                while sent < len(data) and time.monotonic() - t0 < self.DEADLINE + 6:
                    s.sendall(data[sent:sent + 1])
                    sent += 1
                    time.sleep(0.1)
            except OSError:
                pass
            status = _answer(s)
            took = time.monotonic() - t0
        print(f"\n{where}, dripping from its {drip_from}: answered {status} after {took:.2f} s, "
              f"{sent} of {len(data)} bytes sent")
        assert status == 408, status
        assert took < self.DEADLINE + 2, took

    @pytest.mark.parametrize("key,value", [("max_connections", 0), ("max_connections", 1.5),
                                           ("request_deadline_s", 0), ("request_deadline_s", -1)])
    def test_the_limits_are_checked(self, tmp_path, key, value):
        path = tmp_path / "c.yaml"
        path.write_text(f"api: {{{key}: {value}}}\n")
        with pytest.raises(InvalidInput, match=f"api.{key}"):
            mconfig.load(str(path))


# ---------------------------------------------------------------- finding 7
# The sample VM built by the current vagrant/workloads/build-vm-image.sh
# (provision rebuilds the cached one when the script changed);
# MECORCH_SAMPLE_VM points at another build of it.
SAMPLE_VM = Path(os.environ.get("MECORCH_SAMPLE_VM", WORKLOADS / "sample-vm.qcow2"))
BUILD_SCRIPT = Path(__file__).resolve().parents[2] / "vagrant/workloads/build-vm-image.sh"


class _Mp1Recorder(ThreadingHTTPServer):
    """Stands in for Mp1 on the VM network's gateway: answers 200 and
    records each request's path and Authorization header."""

    def __init__(self, address):
        self.seen: list[tuple[str, str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                outer.seen.append((self.path, self.headers.get("Authorization", "")))
                body = b"[]"
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        super().__init__(address, Handler)


def _qemu_cmdline(name: str) -> str:
    pid = Path(f"/run/libvirt/qemu/{name}.pid").read_text().strip()
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


@pytest.mark.libvirt
@pytest.mark.skipif(libvirt is None, reason="no libvirt bindings")
class TestVmTokenOffCommandLine:
    @pytest.fixture
    def vm_image(self):
        assert SAMPLE_VM.is_file(), f"{SAMPLE_VM} missing: run bash vagrant/provision.sh"
        key = Path(f"{SAMPLE_VM}.key")
        assert key.is_file() and key.read_text().strip() == sha256_file(BUILD_SCRIPT), (
            f"{SAMPLE_VM} was built by an older build-vm-image.sh: run bash "
            "vagrant/provision.sh (it rebuilds the cached image when the script changed) "
            "or point MECORCH_SAMPLE_VM at a current build")
        return {"path": str(SAMPLE_VM),
                "sha256": Path(f"{SAMPLE_VM}.sha256").read_text().split()[0]}

    def test_the_token_reaches_the_guest_but_not_qemus_command_line(self, vim_cfg, conn, uid,
                                                                    vm_image):
        drv = LibvirtVIM(vim_cfg)
        # as in `mecorch serve` (umask 077): the state dirs are 0700, and
        # QEMU (another user) still reaches the pool and the token file
        old_umask = os.umask(0o077)
        try:
            drv.import_image("sample", vm_image["path"], vm_image["sha256"])
            drv.open()
        finally:
            os.umask(old_umask)
        assert stat.S_IMODE(Path(vim_cfg["state_dir"]).stat().st_mode) == 0o701   # search only
        gateway = str(next(ipaddress.ip_network(vim_cfg["network_cidr"]).hosts()))
        mp1 = _Mp1Recorder((gateway, 0))
        threading.Thread(target=mp1.serve_forever, daemon=True).start()
        iid, token = f"tok-{uid}", secrets.token_urlsafe(32)
        name = X.domain_name(iid)
        env_file = Path(vim_cfg["state_dir"]) / "vm-env" / f"{name}.env"
        try:
            alloc = drv.deploy(ResourceRequest(
                instance_id=iid, app_d_id="sample-vm", manner=DeploymentType.VM, image="sample",
                memory_mb=192, ports=(PortSpec(80),),
                env={"MEC_APP_INSTANCE_ID": iid, "MEC_APP_TOKEN": token,
                     "MEC_MP1_URL": f"http://{gateway}:{mp1.server_address[1]}"
                                    "/mec_app_support/v1"}))
            # what every local user can read: the path, never the token
            cmdline = _qemu_cmdline(name)
            assert token not in cmdline, "the Mp1 token is on QEMU's command line"
            assert f"name=opt/org.mecorch/env,file={env_file}" in cmdline, cmdline
            ps = run("ps", "-eo", "args").stdout
            assert token not in ps
            # the file: 0600, QEMU's user's, in a 0700 directory of that user
            st, dst = env_file.stat(), env_file.parent.stat()
            qemu_uid = int(_qemu_label(conn).split(":")[0].lstrip("+"))
            assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o600, qemu_uid)
            assert (stat.S_IMODE(dst.st_mode), dst.st_uid) == (0o700, qemu_uid)
            assert token.encode() in env_file.read_bytes()
            # the guest has its token and calls Mp1 with it
            ip = alloc.addresses[0].ip
            with urllib.request.urlopen(f"http://{ip}/cgi-bin/mec?env", timeout=30) as r:
                told = r.read().decode()
            assert f"MEC_APP_INSTANCE_ID={iid}" in told and "MEC_APP_TOKEN=(given)" in told, told
            path = f"applications/{iid}/dns_rules"
            with urllib.request.urlopen(f"http://{ip}/cgi-bin/mec?mp1={path}", timeout=30) as r:
                got = r.read().decode()
            assert " 200 " in got.splitlines()[0], got
            assert (f"/mec_app_support/v1/{path}", f"Bearer {token}") in mp1.seen, mp1.seen
            drv.destroy(alloc.handle)
            assert not env_file.exists(), "the token file outlived its domain"
            # destroy of what is already gone removes a file left behind too
            env_file.write_bytes(b"MEC_APP_TOKEN=left\0")
            drv.destroy(alloc.handle)
            assert not env_file.exists()
        finally:
            mp1.shutdown()
            mp1.server_close()
            drv.close()

    def test_a_failed_deploy_leaves_no_token_file(self, vim_cfg, conn, uid, vm_image):
        """Rolled back (the guest's port is never reached within 1 s): the
        domain and its token file are gone."""
        drv = LibvirtVIM(dict(vim_cfg, boot_timeout_s=1))
        drv.import_image("sample", vm_image["path"], vm_image["sha256"])
        iid = f"rb-{uid}"
        with pytest.raises(MecorchError):
            drv.deploy(ResourceRequest(
                instance_id=iid, app_d_id="sample-vm", manner=DeploymentType.VM, image="sample",
                memory_mb=192, ports=(PortSpec(80),), env={"MEC_APP_TOKEN": "t" * 43}))
        assert X.domain_name(iid) not in [d.name() for d in conn.listAllDomains(0)]
        env_dir = Path(vim_cfg["state_dir"]) / "vm-env"
        assert not list(env_dir.glob("*.env")) if env_dir.exists() else True
        drv.close()


def _qemu_label(conn) -> str:
    caps = ET.fromstring(conn.getCapabilities())
    for model in caps.findall("./host/secmodel"):
        if model.findtext("model") == "dac":
            return model.find("baselabel[@type='qemu']").text
    return "+0:+0"


# ---------------------------------------------------------------- finding 5
def _readable_by_others(root: Path) -> list[str]:
    """`find ROOT -perm /077`: what a group or other user may read, write or enter."""
    out = run("find", str(root), "-perm", "/077").stdout.split()
    return sorted(out)


@pytest.mark.docker
@pytest.mark.mep
class TestStateFilesPrivate:
    """A real `mecorch serve` (container host with the Linux MEP): the
    sample container app deployed with an LCM subscription that has BASIC
    credentials, then terminated (its logs kept): nothing under the state
    or run dir is readable by anyone but root, what an older mecorch left
    0644/0755 included, and user `nobody` cannot read the database or its
    WAL (where the subscription's password is)."""

    def test_nothing_under_the_state_dir_is_readable_by_others(self, tmp_path_factory, uid,
                                                              notification_sink):
        from mecorch.package import build_package
        names = thelab.Names("priv")
        tmp = thelab.private_dir("private")
        state, rundir = tmp / "state", tmp / "run"
        # what an older mecorch (umask 022) left behind
        (state / "packages").mkdir(parents=True)
        (state / "packages" / "old.zip").write_bytes(b"PK")
        os.chmod(state, 0o755)
        os.chmod(state / "packages", 0o755)
        os.chmod(state / "packages" / "old.zip", 0o644)
        from support.meplab import dns, traffic
        service = thelab.free_subnet("10.93.0.0/16", 24)
        vip = str(next(ipaddress.ip_network(service).hosts()))
        link = f"mcp{names.tag}"[:15]
        host_cfg = thelab.host_config(names, vms=False, mep={"service_cidr": service,
                                                             "service_interface": link})
        host = host_cfg["id"]
        cfg = thelab.lab_config(tmp, [host_cfg], orchestrator={"reconcile_interval_s": 0})
        server = thelab.Serve(cfg, tmp, client_timeout_s=60)
        api = server.client
        password = f"pw-{secrets.token_hex(8)}"
        left = None
        try:
            server.start()
            api.post("/app_lcm/v1/subscriptions", {
                "subscriptionType": "AppLcmOpOccStateChange",
                "callbackUri": notification_sink.url,
                "authentication": {"authType": ["BASIC"], "paramsBasic": {
                    "userName": "oss", "password": password}}})
            zpath = build_package(EXAMPLES / "sample-container-app", tmp / "sample.zip")
            api.call("POST", "/app_pkgm/v1/app_packages", {
                "appPkgName": "sample", "appPkgVersion": "1.0", "appPkgPath": str(zpath),
                "checksum": {"algorithm": "SHA-256", "hash": sha256_file(zpath)}})
            inst = api.post(INST, {"appDId": "sample-http"})[0]
            op = api.post(f"{INST}/{inst['id']}/instantiate", {
                "selectedMECHostInfo": [{"hostId": {"id": host}}],
                "deploymentType": "CONTAINER",
                "appTrafficRule": [traffic("vip", vip)],       # (hostsdir file, chains)
                "appDNSRule": [dns("dns", f"priv-{uid}.mec.local", vip)]})[0]
            assert api.wait_op(op, timeout=300)["operationState"] == "COMPLETED"
            assert notification_sink.wait()
            files = {p.name for p in state.iterdir()}
            assert {"mecorch.db", "mecorch.db-wal"} <= files, files
            assert password.encode() in b"".join(
                (state / f).read_bytes() for f in ("mecorch.db", "mecorch.db-wal"))
            for where in (state, rundir):
                assert _readable_by_others(where) == [], "after the deploy"
            for f in ("mecorch.db", "mecorch.db-wal", "mecorch.db-shm"):
                r = run("runuser", "-u", "nobody", "--", "cat", str(state / f), check=False)
                assert r.returncode != 0 and password not in r.stdout, f
            op = api.post(f"{INST}/{inst['id']}/terminate", {"terminationType": "FORCEFUL"})[0]
            assert api.wait_op(op, timeout=120)["operationState"] == "COMPLETED"
            assert list((state / "app-logs").iterdir()), "the app's logs were kept"
            for where in (state, rundir):
                assert _readable_by_others(where) == [], "after the terminate"
        finally:
            try:
                if server.alive:
                    thelab.clear(api)
                    left = thelab.leftovers(host_cfg)
            finally:
                server.stop()
                thelab.remove_host(host_cfg, state, rundir)
                shutil.rmtree(tmp, ignore_errors=True)
        assert left == [], f"the host left {left}"


EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
