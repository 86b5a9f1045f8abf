"""`mecorch doctor` on the real backends: green on a provisioned host, and
red, naming the piece, when a daemon it needs is stopped."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from support.lab import private_registry

pytestmark = [pytest.mark.docker, pytest.mark.libvirt, pytest.mark.mep]


def doctor(cfg_path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mecorch.cli", "--config", str(cfg_path),
                           "doctor"], capture_output=True, text=True, timeout=300)


@pytest.fixture
def own_registry(tmp_path):
    """A registry of the test's own on a free loopback port, stoppable (the
    lab's private_registry)."""
    reg = private_registry(tmp_path)
    reg.start()
    yield reg, reg.addr
    reg.stop(timeout=10)


def test_doctor_green_then_names_the_stopped_registry(tmp_path, own_registry):
    reg, addr = own_registry
    cfg = tmp_path / "c.yaml"
    from mecorch.kernel.config import DEFAULT
    host = {**DEFAULT["hosts"][0]}
    host["cim"] = {**host["cim"], "registry": addr}
    cfg.write_text(yaml.safe_dump({"hosts": [host]}))
    ok = doctor(cfg)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "all" in ok.stdout and "checks passed" in ok.stdout
    assert "TCG" in ok.stdout or "KVM" in ok.stdout or "tcg" in ok.stdout.lower()

    reg.stop(timeout=10)                 # the daemon this test started, by its pid
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
