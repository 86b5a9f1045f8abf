"""Shared test setup.

Tests that claim a driver works run it against the real daemons that
`vagrant/provision.sh` installed and started (dockerd, the registry,
libvirtd + QEMU) and against iptables/dnsmasq in network namespaces the
tests make. They never skip silently: a missing backend is a failure with
the fix in the message, because a skipped real-backend test proves nothing.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest

from support.lab import remove_mep_chains, run  # noqa: F401 - the tests' (one lab)
from support.pglab import pgdatabase, pglab, replica_stores  # noqa: F401 - PostgreSQL of the session

WORKLOADS = Path(os.environ.get("MECORCH_WORKLOADS", "/var/cache/mecorch/workloads"))
REGISTRY = os.environ.get("MECORCH_REGISTRY", "127.0.0.1:5000")
SAMPLE_CONTAINER_REF = f"{REGISTRY}/mecorch/sample-http:1.0"
PROVISION_HINT = "run `bash vagrant/provision.sh` as root first"


def _need(ok: bool, what: str) -> None:
    if not ok:
        pytest.fail(f"{what} is missing: {PROVISION_HINT}", pytrace=False)


@pytest.fixture
def uid() -> str:
    """A short unique suffix so parallel or leftover runs never collide."""
    return secrets.token_hex(4)


@pytest.fixture(scope="session")
def sample_container() -> dict:
    """The sample HTTP container built by provision: registry ref + save tar."""
    tar = WORKLOADS / "sample-http.tar"
    _need(tar.is_file(), f"sample container image {tar}")
    return {"ref": SAMPLE_CONTAINER_REF, "tar": str(tar), "registry": REGISTRY,
            "body": "mecorch sample container"}


@pytest.fixture(scope="session")
def sample_vm() -> dict:
    """The sample VM image built by provision: qcow2 + its SHA-256."""
    img = WORKLOADS / "sample-vm.qcow2"
    sha = WORKLOADS / "sample-vm.qcow2.sha256"
    _need(img.is_file() and sha.is_file(), f"sample VM image {img}")
    return {"path": str(img), "sha256": sha.read_text().split()[0],
            "body": "mecorch sample vm"}


class NotificationSink:
    """An app's notification endpoint on loopback: `url` to subscribe with,
    `got` the JSON bodies POSTed to it, `wait()` until the first arrives."""

    def __init__(self):
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, HTTPServer
        got: list = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *a):
                pass
        self.got = got
        self._server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/notify"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def wait(self, timeout_s: float = 10.0) -> list:
        import time
        deadline = time.monotonic() + timeout_s
        while not self.got and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.got

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def notification_sink():
    sink = NotificationSink()
    yield sink
    sink.close()


