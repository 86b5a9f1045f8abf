"""Observed state follows Docker's own events within seconds, not the
reconcile period: on the real Docker Engine, an app container that exits
with code 3 shows STOPPED with that exit code in `mecorch app list` within
5 s (the lab reconciles only every 60 s), and RUNNING again once started."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from conftest import run
from support.crashlab import Lab, rules_body

pytestmark = [pytest.mark.docker, pytest.mark.mep]

CRASHABLE = """\
apiVersion: v1
kind: Pod
metadata: {name: crashable}
spec:
  containers:
    - name: app
      image: mecorch/sample-http:1.0
      command: ["/bin/sh", "-c", "trap 'exit 3' USR1; /bin/serve & wait"]
"""


def app_list_row(lab, iid: str) -> str:
    r = subprocess.run([sys.executable, "-m", "mecorch.cli", "--api", lab.c.base, "app", "list"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return next(ln for ln in r.stdout.splitlines() if ln.startswith(iid))


def wait_for(lab, iid: str, text: str, limit_s: float = 5.0) -> float:
    t0 = time.monotonic()
    while True:
        row = app_list_row(lab, iid)
        if text in row:
            return time.monotonic() - t0
        assert time.monotonic() - t0 < limit_s, f"after {limit_s}s: {row}\n{lab.log_tail()}"
        time.sleep(0.2)


def test_crashed_container_shows_stopped_with_exit_code_within_seconds():
    lab = Lab("ev", vm=False, interval_s=60)
    try:
        lab.start()
        lab.onboard(("sample-container-app",))
        iid = lab.create("sample-http")
        body = {"selectedMECHostInfo": lab.selected, "orchestrationInfo": CRASHABLE,
                **rules_body("CONTAINER", 41)}
        body["appDNSRule"][0]["domainName"] = "lab-crash.mec.local"
        op, _ = lab.c.post(f"/app_lcm/v1/app_instances/{iid}/instantiate", body)
        assert lab.c.wait_op(op, timeout=300)["operationState"] == "COMPLETED"
        app = run(*lab.docker, "ps", "-q", "--filter", f"label=mecorch.instance={iid}",
                  "--filter", "label=mecorch.role=app").stdout.strip()
        assert app
        time.sleep(1)                   # the watch is up before the crash
        run(*lab.docker, "kill", "--signal", "USR1", app)
        took = wait_for(lab, iid, "STOPPED (exited, exit code 3)")
        info = lab.c.get(f"/app_lcm/v1/app_instances/{iid}")
        assert info["observedState"] == "STOPPED"
        assert info["observedStateDetail"] == "exited, exit code 3"
        assert info["instantiationState"] == "INSTANTIATED"
        assert "instance.observed" in lab.log_tail() and "exit code 3" in lab.log_tail()
        run(*lab.docker, "start", app)
        wait_for(lab, iid, "RUNNING")
        assert took < 5
    finally:
        left = lab.teardown()
    assert left == []


@pytest.mark.libvirt
def test_destroyed_vm_shows_stopped_within_seconds():
    from support.crashlab import VIRSH
    lab = Lab("evm", interval_s=60)
    try:
        lab.start()
        lab.onboard(("sample-vm-app",))
        iid = lab.create("sample-vm")
        op, _ = lab.c.post(f"/app_lcm/v1/app_instances/{iid}/instantiate",
                           {"selectedMECHostInfo": lab.selected, "deploymentType": "VM",
                            "appTrafficRule": [], "appDNSRule": []})
        assert lab.c.wait_op(op, timeout=400)["operationState"] == "COMPLETED"
        time.sleep(1)
        run(*VIRSH, "destroy", f"mecorch-{iid}")
        took = wait_for(lab, iid, "STOPPED (stopped")
        info = lab.c.get(f"/app_lcm/v1/app_instances/{iid}")
        assert info["observedState"] == "STOPPED" and "libvirt event" in info["observedStateDetail"]
        run(*VIRSH, "start", f"mecorch-{iid}")
        wait_for(lab, iid, "RUNNING")
        assert took < 5
    finally:
        left = lab.teardown()
    assert left == []
