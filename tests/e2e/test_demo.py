"""The README's main job, `mecorch demo`, on the real backends: it must end
with exit 0 after reaching both apps by DNS name and traffic rule."""

from __future__ import annotations

import re
import socket
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.docker, pytest.mark.libvirt, pytest.mark.mep]


def test_demo_deploys_reaches_and_removes_both_apps():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    done = subprocess.run([sys.executable, "-m", "mecorch.cli", "demo",
                           "--listen", f"127.0.0.1:{port}"],
                          capture_output=True, text=True, timeout=600)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    # the packages carry no service address: the host gave each one of its range
    assert re.search(r"DNS sample-http\.mec\.local -> 10\.90\.0\.\d+\n", out), out
    assert re.search(r"DNS sample-vm\.mec\.local -> 10\.90\.0\.\d+\n", out), out
    assert "'mecorch sample container'" in out and "'mecorch sample vm'" in out
    assert "none left" in out
    assert "demo finished" in out
