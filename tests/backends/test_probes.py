"""Health checks on the real backends: a container app on the real Docker
Engine with a readinessProbe (httpGet) and a livenessProbe (exec, through
Docker's exec), its rules in the lab's real iptables and dnsmasq.

- readiness: the file the probe GETs is removed inside the container; within
  2 s the app's DNS name stops answering its address (dig at the MEP's
  dnsmasq) and a request to its service address no longer reaches it; a
  reconcile round (every second here) does not put it back; the file back,
  both come back within 2 s;
- liveness: the file the exec probe reads is removed; the app container is
  restarted by its restart policy (Always) (its start time changes, instance.restarted is logged) and
  passes again."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest

from conftest import run
from support.crashlab import Lab, rules_body
from support.lab import dig

pytestmark = [pytest.mark.docker, pytest.mark.mep]

N = 47                                  # the lab's service address 10.90.0.247
VIP = f"10.90.0.{200 + N}"
NAME = "lab-probe.mec.local"
POD = """\
apiVersion: v1
kind: Pod
metadata: {name: probed}
spec:
  restartPolicy: Always         # a failed liveness check restarts (Never: stays stopped)
  containers:
    - name: app
      image: mecorch/sample-http:1.0
      command: ["/bin/sh", "-c", "echo ok > /www/ready; echo ok > /www/alive; exec /bin/serve"]
      readinessProbe:
        httpGet: {path: /ready, port: 80}
        periodSeconds: 1
        failureThreshold: 1
      livenessProbe:
        exec: {command: ["cat", "/www/alive"]}
        periodSeconds: 1
        failureThreshold: 2
"""


def reaches(vip: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{vip}/", timeout=0.5) as r:
            return b"mecorch sample container" in r.read()
    except OSError:
        return False


LAB: list = []                          # the running lab, for the failure messages


def wait_for(what: str, cond, limit_s: float) -> float:
    t0 = time.monotonic()
    while not cond():
        took = time.monotonic() - t0
        assert took < limit_s, f"{what}: not after {limit_s} s\n" + \
            (LAB[0].log_tail() if LAB else "")
        time.sleep(0.05)
    return time.monotonic() - t0


def test_readiness_steers_dns_and_traffic_and_liveness_restarts():
    lab = Lab("probe", vm=False, interval_s=1)
    LAB[:] = [lab]
    try:
        lab.start()
        lab.onboard(("sample-container-app",))
        iid = lab.create("sample-http")
        body = {"selectedMECHostInfo": lab.selected, "orchestrationInfo": POD,
                **rules_body("CONTAINER", N)}
        body["appDNSRule"][0]["domainName"] = NAME
        op, _ = lab.c.post(f"/app_lcm/v1/app_instances/{iid}/instantiate", body)
        assert lab.c.wait_op(op, timeout=300)["operationState"] == "COMPLETED"
        app = run(*lab.docker, "ps", "-q", "--filter", f"label=mecorch.instance={iid}",
                  "--filter", "label=mecorch.role=app").stdout.strip()
        assert app
        wait_for("ready", lambda: (lab.c.get(f"/app_lcm/v1/app_instances/{iid}")
                                   .get("health") or {}).get("ready") is True, 10)
        assert dig(lab.dns_port, NAME) == VIP and reaches(VIP)

        # readiness fails: out of DNS and out of the traffic rule within 2 s
        run(*lab.docker, "exec", app, "/bin/busybox", "rm", "/www/ready")
        t0 = time.monotonic()
        wait_for("DNS withdrawn", lambda: dig(lab.dns_port, NAME) == "", 2)
        assert not reaches(VIP)
        took = time.monotonic() - t0
        assert took < 2, (took, lab.log_tail())
        health = lab.c.get(f"/app_lcm/v1/app_instances/{iid}")["health"]
        assert health["ready"] is False and "HTTP 404" in health["detail"], health
        time.sleep(2.5)                 # two reconcile rounds: they leave it withdrawn
        assert dig(lab.dns_port, NAME) == "" and not reaches(VIP)
        assert "instance.unready" in lab.log_tail()

        # passes again: back within 2 s
        run(*lab.docker, "exec", app, "/bin/sh", "-c", "echo ok > /www/ready")
        t0 = time.monotonic()
        wait_for("DNS restored", lambda: dig(lab.dns_port, NAME) == VIP, 2)
        wait_for("traffic restored", lambda: reaches(VIP), 2 - (time.monotonic() - t0))
        assert lab.c.get(f"/app_lcm/v1/app_instances/{iid}")["health"]["ready"] is True

        # liveness fails: the app is restarted and passes again
        started = json.loads(run(*lab.docker, "inspect", app).stdout)[0]["State"]["StartedAt"]
        run(*lab.docker, "exec", app, "/bin/busybox", "rm", "/www/alive")

        def restarted() -> bool:
            st = json.loads(run(*lab.docker, "inspect", app).stdout)[0]["State"]
            return st["Running"] and st["StartedAt"] != started
        wait_for("restarted", restarted, 10)
        # the event is logged once the restart is done (docker may show the
        # new start a moment before), among the probe's own lines
        wait_for("the restart logged", lambda: "instance.restarted" in lab.log_tail(10 ** 6), 5)
        wait_for("live again", lambda: lab.c.get(f"/app_lcm/v1/app_instances/{iid}")
                 ["health"]["live"] is True, 10)
        wait_for("serving again", lambda: dig(lab.dns_port, NAME) == VIP and reaches(VIP), 10)
        assert lab.problems({iid}) == []
    finally:
        left = lab.teardown()
    assert left == []
