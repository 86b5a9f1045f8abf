"""`mecorch doctor` prints each driver's checks as they run, not after all
of them: against a Docker endpoint of the test's own that accepts and never
answers (a hung daemon), the first line is out while the check still waits
for its timeout."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time

import yaml


def test_doctor_streams_its_checks(tmp_path):
    path = tmp_path / "hung-docker.sock"
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(str(path))
    srv.listen(8)
    held: list[socket.socket] = []

    def accept():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            held.append(conn)               # never answered
    threading.Thread(target=accept, daemon=True).start()
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"state_dir": str(tmp_path / "state"),
                                   "run_dir": str(tmp_path / "run"),
                                   "hosts": [{"id": "hung", "cim": {
                                       "docker_host": f"unix://{path}", "timeout_s": 3,
                                       "registry": "127.0.0.1:9"}}]}))
    proc = subprocess.Popen([sys.executable, "-m", "mecorch.cli", "--config", str(cfg), "doctor"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        t0 = time.monotonic()
        first = proc.stdout.readline()
        took = time.monotonic() - t0
        assert first.strip() == "checking hung/cim (docker) ..."
        assert proc.poll() is None and took < 2.5, took     # still waiting on the daemon
        rest = proc.stdout.read()
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        srv.close()
        for c in held:
            c.close()
    assert proc.returncode == 1
    lines = rest.splitlines()
    # no open(): the doctor makes nothing; the daemon's check names it
    assert lines[0].startswith("  FAIL  docker daemon: "), rest
    assert any(ln.startswith("  FAIL  docker daemon: ") for ln in lines), rest
    assert any(ln.startswith("  (") and ln.endswith(" s)") for ln in lines), rest
    assert "check(s) failed:" in rest and "fix:" in rest
