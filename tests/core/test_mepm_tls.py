"""MEO to MEPM over TLS with bearer tokens both ways (in-memory drivers
behind a real HTTPS server on loopback)."""

from __future__ import annotations

import threading
import time

import pytest

from support.certs import self_signed
from support.fakes import FakeCompute, FakeMep
from mecorch.kernel import config
from mecorch.api import _tls_context, make_server
from mecorch.kernel.errors import BackendUnavailable, InvalidInput, Unauthorized
from mecorch.mepm.remote import RemoteMepm
from mecorch.mepm.orchestrator import Orchestrator
from mecorch.kernel.states import DeploymentType


@pytest.fixture
def mepm(tmp_path):
    cert, key = self_signed(tmp_path, ["127.0.0.1"], "mepm.test")
    (tmp_path / "tokens").write_text("mepm-token-0123456789abcdef\n")
    cfg = config.load()
    cfg["state_dir"] = str(tmp_path / "state")
    cfg["hosts"][0]["id"] = "tls-edge"
    cfg["api"].update(tls_cert=cert, tls_key=key, token_file=str(tmp_path / "tokens"))
    orch = Orchestrator(cfg)
    host = orch.inventory.get("tls-edge")
    host.attach("cim", FakeCompute(DeploymentType.CONTAINER))
    host.attach("vim", FakeCompute(DeploymentType.VM))
    host.attach("mep", FakeMep())
    server = make_server(orch, "127.0.0.1:0", "mepm")
    server.keepalive_idle = 0.3         # idle kept-alive connections closed soon
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    yield f"https://127.0.0.1:{server.server_address[1]}", cert, orch, tmp_path
    server.shutdown()
    server.server_close()
    orch.close()


def test_host_info_over_tls_with_a_token(mepm):
    url, ca, *_ = mepm
    remote = RemoteMepm("tls-edge", url, "mepm-token-0123456789abcdef", ca)
    info = remote.info()
    assert info.host_id == "tls-edge" and set(info.manners) == {"CONTAINER", "VM"}
    assert info.manners["CONTAINER"].vcpu_total == 2 * 4.0       # fake cores x ratio
    assert remote.discover() == ["tls-edge"]


def test_a_connection_the_mepm_closed_while_idle_is_opened_again(mepm):
    """Over TLS a kept-alive connection the server closed shows as an SSL
    EOF on the next request: the client opens a new one and the call works
    (a POST too: the server closed it before any request came)."""
    url, ca, orch, tmp = mepm
    from support.corelab import CONTAINER_APPD, fake_docker_tar, make_package
    import hashlib
    z = make_package(tmp, CONTAINER_APPD, fake_docker_tar())
    orch.packages.onboard({"appPkgName": "p", "appPkgVersion": "1", "appPkgPath": str(z),
                           "checksum": {"algorithm": "SHA-256",
                                        "hash": hashlib.sha256(z.read_bytes()).hexdigest()}})
    remote = RemoteMepm("tls-edge", url, "mepm-token-0123456789abcdef", ca)
    remote.info()
    first = remote._idle[-1].sock
    for _ in range(2):
        time.sleep(0.8)                 # past the server's keepalive_idle
        assert remote.info().host_id == "tls-edge"
        time.sleep(0.8)
        made = remote.create_instance({"appDId": "sample-http"}, key=f"idle-{time.time()}")
        assert made["id"]
    assert remote._idle[-1].sock is not first


def test_wrong_token_and_unknown_ca_are_refused(mepm):
    url, ca, *_ = mepm
    with pytest.raises(Unauthorized):
        RemoteMepm("tls-edge", url, "not-the-token-0123456789", ca).info()
    with pytest.raises(BackendUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
        RemoteMepm("tls-edge", url, "mepm-token-0123456789abcdef").info()


def test_an_mepm_off_loopback_needs_tls():
    cfg = config.load()
    with pytest.raises(InvalidInput, match="an MEPM listening on 10.20.30.40 needs api.tls_cert"):
        _tls_context(cfg, "10.20.30.40", "mepm")
    assert _tls_context(cfg, "127.0.0.1", "mepm") is None


def test_listings_follow_every_page(mepm):
    url, ca, orch, tmp = mepm
    remote = RemoteMepm("tls-edge", url, "mepm-token-0123456789abcdef", ca)
    orch.cfg["api"]["page_size"] = 2
    from support.corelab import CONTAINER_APPD, fake_docker_tar, make_package
    import hashlib
    z = make_package(tmp, CONTAINER_APPD, fake_docker_tar())
    orch.packages.onboard({"appPkgName": "p", "appPkgVersion": "1", "appPkgPath": str(z),
                           "checksum": {"algorithm": "SHA-256",
                                        "hash": hashlib.sha256(z.read_bytes()).hexdigest()}})
    made = {remote.create_instance({"appDId": "sample-http"}, key=f"k{i}")["id"]
            for i in range(5)}
    assert {i["id"] for i in remote.list_instances()} == made
