"""Hostile peers against mecorch's own HTTP client (issue 28, findings 2, 3
and 6): a subscriber that redirects the termination notice elsewhere, one
that drips its answer a byte every few seconds to keep its app from being
terminated (on a host, and through an MEO), an app making thousands of Mp1
subscriptions, bearer tokens between MEO and MEPM sent in clear, and a
package server (http appPkgPath) that redirects or drips the zip.

The subject is mecorch's client (mecorch.kernel.outbound) and its LCM, so the
cases run through the real REST API with in-memory drivers (Env of
tests/support/mepenv.py; the MEO system of tests/support/meolab.py; the
Lab of tests/support/uploadlab.py); one real-container check is at the
end. Every
peer is a server on loopback this test starts; no other address is ever
contacted (a non-loopback URL appears only where it is refused before any
connection, or where the connection is stubbed out)."""

from __future__ import annotations

import hashlib
import ipaddress
import socket
import threading
import time
from pathlib import Path

import pytest

from support.mepenv import INST, MP1, Env
from support.corelab import CONTAINER_APPD, PKGS, fake_docker_tar, make_package
from support.uploadlab import Lab
from support.meolab import host as meo_host, deploy as meo_deploy, onboard as meo_onboard
from support.meolab import served as meo_served
from support.meolab import system  # noqa: F401 - a fixture
from mecorch.kernel import config, outbound
from mecorch.api import _tls_context, make_server
from mecorch.kernel.client import ApiError
from mecorch.meo.orchestrator import MeoOrchestrator
from mecorch.kernel.errors import InvalidInput
from mecorch.meo.registry import Registry
from mecorch.mepm.register import Registration
from mecorch.mepm.remote import RemoteMepm
from mecorch.kernel.store import Store

DRIP_S = 3.0            # the dripping subscriber sends one byte this often


class Peer:
    """A loopback TCP server: each connection's request is read and
    recorded (its request line), then `behaviour(conn)` answers it."""

    def __init__(self, behaviour, host: str = "127.0.0.1"):
        self.behaviour = behaviour
        self.hits: list[str] = []
        self.stop = threading.Event()
        self.sock = socket.socket()
        self.sock.bind((host, 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.url = f"http://{host}:{self.sock.getsockname()[1]}"
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(5)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            while len(body) < length:
                body += conn.recv(4096)
            self.hits.append(head.split(b"\r\n")[0].decode())
            self.behaviour(self, conn)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.sock.close()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass


def answer(status: int, extra: str = ""):
    def go(peer: Peer, conn: socket.socket) -> None:
        conn.sendall(f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n"
                     f"{extra}\r\n".encode())
    return go


def drip(peer: Peer, conn: socket.socket) -> None:
    """One byte of a status line every DRIP_S, never finishing."""
    for byte in b"HTTP/1.1 200 OK slowly" * 100:
        if peer.stop.is_set():
            return
        conn.sendall(bytes([byte]))
        if peer.stop.wait(DRIP_S):
            return


@pytest.fixture
def env(tmp_path):
    e = Env(tmp_path)
    yield e
    e.server.shutdown()
    e.server.server_close()
    e.orch.close()


@pytest.fixture
def peers():
    made: list[Peer] = []

    def make(behaviour, host="127.0.0.1") -> Peer:
        made.append(Peer(behaviour, host))
        return made[-1]
    yield make
    for p in made:
        p.close()


def subscribe(env: Env, iid: str, callback: str) -> dict:
    return env.c.post(f"{MP1}/{iid}/subscriptions", {
        "subscriptionType": "AppTerminationNotificationSubscription",
        "callbackReference": callback, "appInstanceId": iid})[0]


def terminate(env: Env, iid: str, kind: str, timeout: int | None = None) -> dict:
    body = {"terminationType": kind}
    if timeout is not None:
        body["gracefulTerminationTimeout"] = timeout
    return env.c.post(f"{INST}/{iid}/terminate", body)[0]


def wait_state(env, op: dict, states: tuple, timeout: float) -> dict:
    """`op` as `env.c` (an Env's or an MEO system's client) shows it once in
    one of `states`, or after `timeout`."""
    end = time.monotonic() + timeout
    while True:
        cur = env.c.get(op["_links"]["self"]["href"])
        if cur["operationState"] in states or time.monotonic() > end:
            return cur
        time.sleep(0.05)


def refused_config(tmp_path: Path, text: str, match: str) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(text)
    with pytest.raises(InvalidInput, match=match):
        config.load(f)


# ---------------------------------------------------------------- finding 2
class TestNoticeRedirectsRefused:
    def test_a_302_is_an_answer_not_followed(self, peers):
        target = peers(answer(200))
        redirector = peers(answer(302, f"Location: {target.url}/ssrf-hit\r\n"))
        got = outbound.request(redirector.url + "/cb", "POST", 5, b"{}")
        assert got.status == 302
        assert target.hits == []

    def test_a_termination_notice_redirected_to_another_loopback_port_goes_no_further(
            self, env, peers):
        """The attack of the review: the subscriber answers 302 to another
        address (here another loopback port: any loopback port and path,
        the tokenless API included, was reachable this way)."""
        target = peers(answer(200))
        redirector = peers(answer(302, f"Location: {target.url}/ssrf-hit\r\n"))
        iid = env.deploy()
        subscribe(env, iid, redirector.url + "/cb")
        op = env.c.wait_op(terminate(env, iid, "GRACEFUL", 2), timeout=15)
        assert op["operationState"] == "COMPLETED", op.get("error")
        assert [h.split()[0] for h in redirector.hits] == ["POST"]
        assert target.hits == []                    # the redirect was not followed

    def test_a_destination_outside_the_allowed_networks_is_refused(self):
        only = [ipaddress.ip_network("127.0.0.1/32")]
        with pytest.raises(InvalidInput, match="callbackReference address 127.0.0.2 is not"):
            outbound.check_url("http://127.0.0.2:9/cb", only, "callbackReference")
        with pytest.raises(InvalidInput, match="must name an IP address"):
            outbound.check_url("http://example.invalid/cb", only, "callbackReference")
        assert outbound.check_url("http://localhost:9/cb", only, "x") == "http://localhost:9/cb"

    def test_a_stored_callback_outside_narrowed_networks_gets_no_notice(self, env, peers):
        """The check is made again at each POST: a callback stored when the
        networks were wider is not posted to once they are narrowed."""
        other = peers(answer(200), host="127.0.0.2")
        iid = env.deploy()
        subscribe(env, iid, other.url + "/cb")
        env.orch.mep.callback_networks = [ipaddress.ip_network("127.0.0.1/32")]
        op = env.c.wait_op(terminate(env, iid, "GRACEFUL", 2), timeout=15)
        assert op["operationState"] == "COMPLETED"
        assert other.hits == []


# ---------------------------------------------------------------- finding 3
class TestTerminationBounded:
    def test_the_client_cuts_a_dripping_peer_off_at_its_total_deadline(self, peers):
        slow = peers(drip)
        t0 = time.monotonic()
        with pytest.raises(outbound.DeadlineExceeded):
            outbound.request(slow.url + "/cb", "POST", 2, b"{}")
        took = time.monotonic() - t0
        assert 1.9 < took < 3.0, took

    def test_a_body_dripped_after_connection_close_headers_is_cut_off_too(self, peers):
        """http.client hands the socket to the response when the answer
        says Connection: close: the watchdog still reaches it."""
        slow = peers(serve_zip(b"x" * 1000, every_s=0.2))
        t0 = time.monotonic()
        with pytest.raises(outbound.DeadlineExceeded):
            outbound.request(slow.url + "/cb", "POST", 2, b"{}")
        took = time.monotonic() - t0
        assert 1.9 < took < 3.0, took

    def test_a_maximally_slow_subscriber_cannot_hold_a_graceful_terminate(self, env, peers):
        """One header byte every 3 s, never finishing; gracefulTerminationTimeout
        5: the terminate completes within 5 + 5 s (notices and wait share the
        graceful deadline; subscribers are posted to in parallel)."""
        slow = [peers(drip) for _ in range(3)]
        iid = env.deploy()
        for s in slow:
            subscribe(env, iid, s.url + "/cb")
        t0 = time.monotonic()
        op = wait_state(env, terminate(env, iid, "GRACEFUL", 5), ("COMPLETED", "FAILED"), 15)
        took = time.monotonic() - t0
        print(f"graceful terminate with 3 dripping subscribers: {took:.2f} s")
        assert op["operationState"] == "COMPLETED", (op["operationState"], took)
        assert took < 10, took
        assert all(len(s.hits) == 1 for s in slow)      # each got its notice, at once


class TestForcefulPreemptsGraceful:
    def test_forceful_during_a_held_graceful_terminate_is_accepted_and_completes(
            self, env, peers):
        slow = peers(drip)
        iid = env.deploy()
        subscribe(env, iid, slow.url + "/cb")
        graceful = terminate(env, iid, "GRACEFUL", 600)
        assert wait_state(env, graceful, ("PROCESSING",), 5)["operationState"] == "PROCESSING"
        time.sleep(1)                   # the notice is being dripped back
        t0 = time.monotonic()
        status, forceful, _ = env.c.call("POST", f"{INST}/{iid}/terminate",
                                      {"terminationType": "FORCEFUL"})
        assert status == 202
        forceful = wait_state(env, forceful, ("COMPLETED", "FAILED"), 10)
        took = time.monotonic() - t0
        print(f"FORCEFUL preempting a held GRACEFUL terminate: {took:.2f} s")
        assert forceful["operationState"] == "COMPLETED", forceful.get("error")
        assert took < 3, took
        graceful = env.c.get(graceful["_links"]["self"]["href"])
        assert graceful["operationState"] == "FAILED"
        assert f"superseded by FORCEFUL terminate {forceful['id']}" in \
            graceful["error"]["detail"]
        inst = env.c.get(f"{INST}/{iid}")
        assert inst["instantiationState"] == "NOT_INSTANTIATED"
        # the next operation may start at once (nothing left holding it)
        env.c.wait_op(env.instantiate(iid), timeout=10)

    def test_a_second_forceful_while_one_supersedes_is_a_409(self, env, peers):
        slow = peers(drip)
        iid = env.deploy()
        subscribe(env, iid, slow.url + "/cb")
        graceful = terminate(env, iid, "GRACEFUL", 600)
        wait_state(env, graceful, ("PROCESSING",), 5)
        # the first supersedes; the second is refused, whether the first
        # is still running (already superseded) or done (NOT_INSTANTIATED)
        first = terminate(env, iid, "FORCEFUL")
        with pytest.raises(ApiError) as e:
            terminate(env, iid, "FORCEFUL")
        assert e.value.status == 409
        assert env.c.wait_op(first, timeout=10)["operationState"] == "COMPLETED"


    def test_forceful_while_the_graceful_one_is_stopping_the_app_completes_with_it(
            self, env):
        """Past the notices the graceful terminate is stopping the app (its
        stop bounded by the time left): a FORCEFUL terminate is still
        accepted, and both end COMPLETED when the release is done."""
        stopping, go_on = threading.Event(), threading.Event()
        real_stop = env.cim.stop

        def held_stop(handle, timeout_s):
            stopping.set()
            go_on.wait(10)
            return real_stop(handle, timeout_s)
        env.cim.stop = held_stop
        iid = env.deploy()
        graceful = terminate(env, iid, "GRACEFUL", 30)
        assert stopping.wait(5)
        status, forceful, _ = env.c.call("POST", f"{INST}/{iid}/terminate",
                                         {"terminationType": "FORCEFUL"})
        assert status == 202
        go_on.set()
        assert env.c.wait_op(forceful, timeout=10)["operationState"] == "COMPLETED"
        assert env.c.wait_op(graceful, timeout=10)["operationState"] == "COMPLETED"
        assert env.c.get(f"{INST}/{iid}")["instantiationState"] == "NOT_INSTANTIATED"

    def test_forceful_after_the_graceful_one_released_the_app_completes_with_it(self, env):
        """Released (the instance NOT_INSTANTIATED, its host and manner gone
        from it) but not yet ended: a FORCEFUL terminate then takes the
        graceful op's host and manner and ends with it (it was a 500: the
        API fuzz sent one in that window)."""
        released, go_on = threading.Event(), threading.Event()
        real = env.orch.packages.refresh_usage

        def held(*a, **kw):                 # the graceful worker, after the release
            released.set()
            go_on.wait(10)
            return real(*a, **kw)
        iid = env.deploy()
        env.orch.packages.refresh_usage = held
        try:
            graceful = terminate(env, iid, "GRACEFUL", 30)
            assert released.wait(5)
            assert env.c.get(f"{INST}/{iid}")["instantiationState"] == "NOT_INSTANTIATED"
            status, forceful, _ = env.c.call("POST", f"{INST}/{iid}/terminate",
                                             {"terminationType": "FORCEFUL"})
            assert status == 202, forceful
        finally:
            go_on.set()
            env.orch.packages.refresh_usage = real
        assert env.c.wait_op(forceful, timeout=10)["operationState"] == "COMPLETED"
        assert env.c.wait_op(graceful, timeout=10)["operationState"] == "COMPLETED"


@pytest.fixture
def meo_over_http(tmp_path):
    """An MEO over one MEPM reached over HTTP (its API served on loopback,
    RemoteMepm: the MEO<->MEPM calls through mecorch.kernel.outbound), in-memory
    drivers; shaped as tests/support/meolab.py's system."""
    host, _ = meo_host(tmp_path, "edge1")
    server = make_server(host, "127.0.0.1:0", "mepm")
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    cfg = config.load()
    cfg["state_dir"] = str(tmp_path / "meo")
    cfg["hosts"] = []
    cfg["meo"]["heartbeat_s"] = 0
    meo = MeoOrchestrator(cfg)
    meo.registry.attach(RemoteMepm("edge1", f"http://127.0.0.1:{server.server_address[1]}"))
    s, api = meo_served(meo, {"edge1": host}, tmp_path)
    yield s
    for srv in (api, server):
        srv.shutdown()
        srv.server_close()
    meo.close()
    host.close()


class TestForcefulPreemptsGracefulThroughTheMeo:
    """The same through an MEO (tests/support/meolab.py's system: an MEO over
    in-process MEPMs on in-memory drivers; and over one MEPM reached over
    HTTP): the MEO's forwarded GRACEFUL terminate is bounded by its timeout,
    and a FORCEFUL one through the MEO supersedes it there as on the host."""

    @staticmethod
    def _held(s, peers):
        pkg = meo_onboard(s)
        iid, op = meo_deploy(s, pkg["appDId"], deploymentType="CONTAINER")
        assert op["operationState"] == "COMPLETED", op.get("error")
        remote = s.meo.lcm.get(iid)["_hostInstance"]
        host = s.hosts[remote["hostId"]]
        slow = peers(drip)
        host.mep.subscribe(remote["id"], {
            "subscriptionType": "AppTerminationNotificationSubscription",
            "callbackReference": slow.url + "/cb", "appInstanceId": remote["id"]})
        return s, iid, host, remote["id"], slow

    def test_a_maximally_slow_subscriber_cannot_hold_the_meos_graceful_terminate(
            self, request, peers):
        s, iid, host, _, slow = self._held(request.getfixturevalue("system"), peers)
        t0 = time.monotonic()
        graceful = s.c.post(f"{INST}/{iid}/terminate", {
            "terminationType": "GRACEFUL", "gracefulTerminationTimeout": 5})[0]
        graceful = wait_state(s, graceful, ("COMPLETED", "FAILED", "ROLLED_BACK"), 15)
        took = time.monotonic() - t0
        print(f"graceful terminate through the MEO, dripping subscriber: {took:.2f} s")
        assert graceful["operationState"] == "COMPLETED", graceful.get("error")
        assert took < 10, took
        assert len(slow.hits) == 1
        assert s.c.get(f"{INST}/{iid}")["instantiationState"] == "NOT_INSTANTIATED"

    @pytest.mark.parametrize("over", ["system", "meo_over_http"])
    def test_forceful_through_the_meo_supersedes_its_graceful_terminate(
            self, over, request, peers, notification_sink):
        s, iid, host, rid, slow = self._held(request.getfixturevalue(over), peers)
        s.meo.subscriptions.start()
        s.c.post("/app_lcm/v1/subscriptions", {"subscriptionType": "AppLcmOpOccStateChange",
                                               "callbackUri": notification_sink.url})
        graceful = s.c.post(f"{INST}/{iid}/terminate", {
            "terminationType": "GRACEFUL", "gracefulTerminationTimeout": 5})[0]
        end = time.monotonic() + 5
        while not slow.hits and time.monotonic() < end:     # the host is notifying
            time.sleep(0.05)
        assert slow.hits
        assert wait_state(s, graceful, ("PROCESSING",), 15)["operationState"] == "PROCESSING"
        t0 = time.monotonic()
        status, forceful, _ = s.c.call("POST", f"{INST}/{iid}/terminate",
                                       {"terminationType": "FORCEFUL"})
        assert status == 202, (status, forceful)
        forceful = wait_state(s, forceful, ("COMPLETED", "FAILED", "ROLLED_BACK"), 10)
        took = time.monotonic() - t0
        print(f"FORCEFUL through the MEO ({over}) preempting its GRACEFUL terminate: "
              f"{took:.2f} s")
        assert forceful["operationState"] == "COMPLETED", forceful.get("error")
        assert took < 3, took
        graceful = wait_state(s, graceful, ("COMPLETED", "FAILED", "ROLLED_BACK"), 10)
        assert graceful["operationState"] == "FAILED", graceful
        assert f"superseded by FORCEFUL terminate {forceful['id']}" in \
            graceful["error"]["detail"]
        assert s.c.get(f"{INST}/{iid}")["instantiationState"] == "NOT_INSTANTIATED"
        # on the host: its graceful op superseded by one FORCEFUL op (no second)
        ended = sorted(o["operationState"] for o in host.lcm.ops()
                       if o["appInstanceId"] == rid and o["lcmOperation"] == "TERMINATE")
        assert ended == ["COMPLETED", "FAILED"], ended
        # the OSS is told of both ends, as for any op
        end = time.monotonic() + 5
        want = {(graceful["id"], "FAILED"), (forceful["id"], "COMPLETED")}
        while time.monotonic() < end:
            got = {(n.get("appLcmOpOccId"), n.get("notificationType"))
                   for n in notification_sink.got}
            if want <= got:
                break
            time.sleep(0.05)
        assert want <= got, notification_sink.got
        # nothing left holding the instance: a second FORCEFUL is a plain 409
        with pytest.raises(ApiError) as e:
            s.c.post(f"{INST}/{iid}/terminate", {"terminationType": "FORCEFUL"})
        assert e.value.status == 409 and "NOT_INSTANTIATED" in str(e.value)


def serve_zip(data: bytes, every_s: float = 0.0):
    """Answer 200 with the zip; with `every_s`, one byte that often."""
    def go(peer: Peer, conn: socket.socket) -> None:
        conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Type: application/zip\r\n"
                     f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode())
        if not every_s:
            conn.sendall(data)
            return
        for byte in data:
            conn.sendall(bytes([byte]))
            if peer.stop.wait(every_s):
                return
    return go


@pytest.fixture
def lab(tmp_path, monkeypatch):
    """test_package_upload's Lab (real API, in-memory drivers) with
    orchestrator.package_fetch_timeout_s 2."""
    real = config.load

    def load(*a, **kw):
        cfg = real(*a, **kw)
        cfg["orchestrator"]["package_fetch_timeout_s"] = 2
        return cfg
    monkeypatch.setattr(config, "load", load)
    lab = Lab(tmp_path)
    yield lab
    lab.stop()


class TestPackageFetchThroughOutbound:
    @staticmethod
    def _body(url: str, data: bytes) -> dict:
        return {"appPkgName": "p", "appPkgVersion": "1", "appPkgPath": url,
                "checksum": {"algorithm": "SHA-256", "hash": hashlib.sha256(data).hexdigest()}}

    @staticmethod
    def _nothing_kept(lab) -> None:
        assert lab.c.get(PKGS) == []
        left = lab.tmp / "state" / "packages"
        assert not left.exists() or list(left.iterdir()) == []

    @staticmethod
    def _zip(lab) -> bytes:
        return make_package(lab.tmp, CONTAINER_APPD, fake_docker_tar()).read_bytes()

    def test_a_302_to_another_loopback_port_is_refused_naming_appPkgPath(self, lab, peers):
        data = self._zip(lab)
        target = peers(serve_zip(data))
        redirector = peers(answer(302, f"Location: {target.url}/pkg.zip\r\n"))
        with pytest.raises(ApiError) as e:
            lab.c.post(PKGS, self._body(redirector.url + "/pkg.zip", data))
        assert e.value.status == 400
        assert "appPkgPath" in str(e.value) and "HTTP 302" in str(e.value), str(e.value)
        assert [h.split()[0] for h in redirector.hits] == ["GET"]
        assert target.hits == []                    # the redirect was not followed
        self._nothing_kept(lab)

    def test_a_server_dripping_the_zip_is_cut_off_at_the_deadline(self, lab, peers):
        data = self._zip(lab)
        slow = peers(serve_zip(data, every_s=0.2))     # minutes for the whole zip
        t0 = time.monotonic()
        with pytest.raises(ApiError) as e:
            lab.c.post(PKGS, self._body(slow.url + "/pkg.zip", data))
        took = time.monotonic() - t0
        print(f"dripped package download cut off after {took:.2f} s (deadline 2 s)")
        assert e.value.status == 400
        assert "appPkgPath" in str(e.value) and \
            "orchestrator.package_fetch_timeout_s" in str(e.value), str(e.value)
        assert 1.9 < took < 4, took
        self._nothing_kept(lab)

    def test_a_normal_loopback_url_still_onboards(self, lab, peers):
        data = self._zip(lab)
        server = peers(serve_zip(data))
        pkg = lab.c.post(PKGS, self._body(server.url + "/pkg.zip", data))[0]
        assert pkg["onboardingState"] == "ONBOARDED", pkg
        assert [h.split()[0] for h in server.hits] == ["GET"]

    def test_the_deadline_is_a_validated_config_key(self, tmp_path):
        assert config.load()["orchestrator"]["package_fetch_timeout_s"] == 600
        refused_config(tmp_path, "orchestrator: {package_fetch_timeout_s: 0}\n",
                       "orchestrator.package_fetch_timeout_s must be a number above 0")


class TestMp1SubscriptionCap:
    def test_over_the_cap_is_a_400_naming_it(self, env, peers):
        sink = peers(answer(204))
        iid = env.deploy()
        for _ in range(16):                         # the default cap
            subscribe(env, iid, sink.url + "/cb")
        with pytest.raises(ApiError) as e:
            subscribe(env, iid, sink.url + "/cb")
        assert e.value.status == 400
        assert "api.mp1_max_subscriptions (16)" in e.value.body["detail"]
        # the cap is per instance: another app instance still subscribes
        other = env.deploy(appTrafficRule=[], appDNSRule=[])
        subscribe(env, other, sink.url + "/cb")

    def test_the_cap_is_a_validated_config_key(self, tmp_path):
        assert config.load()["api"]["mp1_max_subscriptions"] == 16
        refused_config(tmp_path, "api: {mp1_max_subscriptions: many}\n",
                       "api.mp1_max_subscriptions must be an integer")


# ---------------------------------------------------------------- finding 6
class TestTokensOnlyOverTlsOrLoopback:
    def test_an_mepm_refuses_an_http_meo_url_off_loopback_at_config_load(self, tmp_path):
        f = tmp_path / "mepm.yaml"
        f.write_text("role: mepm\nmepm: {meo_url: 'http://10.0.0.1:8080'}\n")
        with pytest.raises(InvalidInput, match=r"mepm.meo_url http://10.0.0.1:8080 is plain "
                                               r"http .* use https://"):
            config.load(f)
        f.write_text("role: mepm\nmepm: {meo_url: 'http://127.0.0.1:8080'}\n")
        assert config.load(f)["mepm"]["meo_url"] == "http://127.0.0.1:8080"   # loopback
        f.write_text("role: mepm\nmepm: {meo_url: 'https://10.0.0.1:8443'}\n")
        assert config.load(f)["mepm"]["meo_url"] == "https://10.0.0.1:8443"

    def test_an_meo_refuses_an_http_mepm_url_off_loopback_in_its_config(self, tmp_path):
        f = tmp_path / "meo.yaml"
        f.write_text("role: meo\nhosts: []\nmeo: {mepms: [{id: e1, url: 'http://10.0.0.11:8080'}]}\n")
        with pytest.raises(InvalidInput, match=r"meo.mepms\[0\].url http://10.0.0.11:8080"):
            config.load(f)

    def test_the_registration_refuses_to_carry_a_token_in_clear(self, tmp_path):
        """Past config.load too (a config made in code): `serve` stops when
        the Registration is made, before its thread could connect."""
        (tmp_path / "tokens").write_text("mepm-token-0123456789abcdef\n")
        cfg = config.load()
        cfg["api"]["token_file"] = str(tmp_path / "tokens")
        cfg["mepm"]["meo_url"] = "http://10.178.0.2:8000"

        class Server:
            server_address = ("127.0.0.1", 9)
        with pytest.raises(InvalidInput, match="mepm.meo_url http://10.178.0.2:8000 is plain"):
            Registration(cfg, Server())

    def test_the_registry_refuses_an_http_mepm_url_off_loopback(self, tmp_path, monkeypatch):
        """POST /mecorch/v1/hosts with an http:// URL off loopback is a 400
        naming `url`. The MEPM's answer is stubbed: without the check the
        MEO would call it (and send the token in clear), here nothing
        leaves the machine."""
        asked = []
        monkeypatch.setattr(RemoteMepm, "discover", lambda self: asked.append(self.url) or
                            [self.host_id])
        monkeypatch.setattr(Registry, "beat", lambda self, entry: True)
        store = Store(tmp_path / "s.db")
        registry = Registry(store, {"meo": {"heartbeat_s": 0}})
        with pytest.raises(InvalidInput) as e:
            registry.register({"hostId": "e1", "url": "http://10.178.0.2:8000",
                               "token": "mepm-token-0123456789abcdef"})
        assert e.value.status == 400 and e.value.detail.startswith(
            "url http://10.178.0.2:8000 is plain http")
        assert asked == [] and store.get("hosts", "e1") is None
        registry.register({"hostId": "e1", "url": "http://127.0.0.1:9", "token": "t"})
        assert asked == ["http://127.0.0.1:9"]          # loopback http still works
        registry.stop()
        store.close()

    def test_an_meo_off_loopback_needs_tls(self):
        cfg = config.load()
        with pytest.raises(InvalidInput, match="an MEO listening on 10.20.30.40 needs "
                                               "api.tls_cert"):
            _tls_context(cfg, "10.20.30.40", "meo")
        assert _tls_context(cfg, "127.0.0.1", "meo") is None        # loopback: http


# ---------------------------------------------------------------- real backend
@pytest.mark.docker
def test_a_real_container_is_terminated_in_time_despite_a_dripping_subscriber(
        tmp_path, sample_container, peers):
    """A real `mecorch serve` (Docker only: no VM, no MEP, so it is cheap)
    and the sample container: a GRACEFUL terminate with gracefulTerminationTimeout
    5 and a subscriber dripping its answer ends within 5 + 5 s, the
    container gone."""
    from conftest import run
    from mecorch.kernel.fileutil import sha256_file
    from mecorch.package import build_package
    from support.lab import (EXAMPLES, Names, Serve, clear, host_config, lab_config, leftovers,
                             remove_host)

    names = Names("mc28")
    host_id = names.host_id
    host = {k: v for k, v in host_config(names, vms=False, cim={"dns": []}).items()
            if k != "mep"}                                          # no VM, no MEP
    cfg = lab_config(tmp_path, [host], orchestrator={"reconcile_interval_s": 0})
    serve = Serve(cfg, tmp_path, client_timeout_s=60)
    c = serve.client
    slow = None
    try:
        serve.start()
        zpath = build_package(EXAMPLES / "sample-container-app", tmp_path / "app.zip")
        c.post("/app_pkgm/v1/app_packages", {
            "appPkgName": "sample-container-app", "appPkgVersion": "1.0",
            "appPkgPath": str(zpath), "checksum": {"algorithm": "SHA-256",
                                                   "hash": sha256_file(zpath)}})
        iid = c.post(INST, {"appDId": "sample-http"})[0]["id"]
        op = c.wait_op(c.post(f"{INST}/{iid}/instantiate", {
            "selectedMECHostInfo": [{"hostId": {"id": host_id}}],
            "appTrafficRule": [], "appDNSRule": []})[0], timeout=120)
        assert op["operationState"] == "COMPLETED", op.get("error")
        assert run("docker", "ps", "-q", "--filter", f"label=mecorch.host={host_id}").stdout.strip()
        slow = peers(drip)
        c.post(f"{MP1}/{iid}/subscriptions", {
            "subscriptionType": "AppTerminationNotificationSubscription",
            "callbackReference": slow.url + "/cb", "appInstanceId": iid})
        t0 = time.monotonic()
        op = c.wait_op(c.post(f"{INST}/{iid}/terminate", {
            "terminationType": "GRACEFUL", "gracefulTerminationTimeout": 5})[0], timeout=30)
        took = time.monotonic() - t0
        print(f"real container, GRACEFUL 5 s with a dripping subscriber: {took:.2f} s")
        assert op["operationState"] == "COMPLETED", op.get("error")
        assert took < 10, took
        assert slow.hits                                    # the notice was sent
        assert run("docker", "ps", "-aq", "--filter",
                   f"label=mecorch.host={host_id}").stdout.strip() == ""
        c.call("DELETE", f"{INST}/{iid}")
    finally:
        if slow is not None:
            slow.close()            # a terminate it still holds (without the fix) goes on
        try:
            if serve.alive:
                clear(c, timeout_s=60)
        except Exception as e:  # noqa: BLE001 - the server must be stopped whatever failed
            print(f"cleanup: {e}")
        serve.stop(30)
        left = leftovers(host)
        remove_host(host, cfg["state_dir"], cfg["run_dir"])     # what a failed run left
    assert left == []
