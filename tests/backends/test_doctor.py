"""`mecorch doctor` on the real backends: green on a provisioned host, and
red, naming the piece, when a daemon it needs is stopped."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request

import pytest
import yaml

pytestmark = [pytest.mark.docker, pytest.mark.libvirt, pytest.mark.mep]


def doctor(cfg_path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mecorch.cli", "--config", str(cfg_path),
                           "doctor"], capture_output=True, text=True, timeout=300)


@pytest.fixture
def own_registry(tmp_path):
    """A registry of the test's own on a free loopback port, stoppable."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = tmp_path / "registry.yml"
    conf.write_text(yaml.safe_dump({
        "version": 0.1, "log": {"level": "error"},
        "storage": {"filesystem": {"rootdirectory": str(tmp_path / "data")}},
        "http": {"addr": f"127.0.0.1:{port}"}}))
    proc = subprocess.Popen(["docker-registry", "serve", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1).read()
            break
        except OSError:
            time.sleep(0.1)
    yield proc, f"127.0.0.1:{port}"
    if proc.poll() is None:
        proc.terminate()
        proc.wait(timeout=10)


def test_doctor_green_then_names_the_stopped_registry(tmp_path, own_registry):
    proc, addr = own_registry
    cfg = tmp_path / "c.yaml"
    from mecorch.kernel.config import DEFAULT
    host = {**DEFAULT["hosts"][0]}
    host["cim"] = {**host["cim"], "registry": addr}
    cfg.write_text(yaml.safe_dump({"hosts": [host]}))
    ok = doctor(cfg)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "all" in ok.stdout and "checks passed" in ok.stdout
    assert "TCG" in ok.stdout or "KVM" in ok.stdout or "tcg" in ok.stdout.lower()

    proc.terminate()                     # the daemon this test started, by its pid
    proc.wait(timeout=10)
    bad = doctor(cfg)
    assert bad.returncode == 1
    failed = bad.stdout.split("check(s) failed:")[1]
    assert "container image repository" in failed and addr in failed
    assert "fix:" in failed
    assert "docker daemon" not in failed and "libvirtd" not in failed


def test_doctor_names_an_unreachable_docker_daemon(tmp_path):
    cfg = tmp_path / "c.yaml"
    from mecorch.kernel.config import DEFAULT
    host = {**DEFAULT["hosts"][0]}
    host["cim"] = {**host["cim"], "docker_host": f"unix://{tmp_path}/no-docker.sock"}
    host.pop("vim")
    host.pop("mep")
    cfg.write_text(yaml.safe_dump({"hosts": [host]}))
    bad = doctor(cfg)
    assert bad.returncode == 1
    assert "docker daemon" in bad.stdout.split("check(s) failed:")[1]
