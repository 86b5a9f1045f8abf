"""Each container instance's own figures on the real Docker Engine, through
`mecorch serve` (its usage reader every second: orchestrator.
health_interval_s 1), against `docker stats --no-stream` read in the same
test; and a container killed at its memory limit shows "OOM killed" in its
observedStateDetail and its subscriber is told (AppInstanceStateChange).

The workload does measurable work: it fills 40 MB of its tmpfs /dev/shm
(charged to its memory), serves a 2 MB file the test fetches three times
(network), writes 20 MB with O_DIRECT (block I/O) and spins in a loop capped
at its 0.5-CPU limit (a steady 50 % of one core).

Block I/O on this machine: the kernel's cgroup v1 blkio counts nothing for
its virtio disk (no throttle rule, no CFQ/BFQ), so `docker stats` says
0B / 0B for every container and so does mecorch: the test checks they
agree, which here is 0 = 0 (the VM test compares non-zero block figures).
"""

from __future__ import annotations

import json
import re
import time
import urllib.request

import pytest

from conftest import run
from support.crashlab import Lab

pytestmark = [pytest.mark.docker, pytest.mark.mep]

WORKLOAD = """\
apiVersion: v1
kind: Pod
metadata: {name: busy}
spec:
  containers:
    - name: app
      image: mecorch/sample-http:1.0
      resources: {limits: {cpu: 500m, memory: 128Mi}}
      command:
        - /bin/sh
        - -c
        - >-
          busybox head -c 40000000 /dev/zero > /dev/shm/fill;
          busybox dd if=/dev/zero of=/tmp/blk bs=1M count=20 oflag=direct 2>/dev/null;
          busybox head -c 2000000 /dev/zero > /www/big;
          httpd -p 80 -h /www;
          echo ready > /www/ready;
          while :; do :; done
"""

GREEDY = """\
apiVersion: v1
kind: Pod
metadata: {name: greedy}
spec:
  containers:
    - name: app
      image: mecorch/sample-http:1.0
      resources: {limits: {memory: 64Mi}}
      command:
        - /bin/sh
        - -c
        - sleep 2; x=$(busybox head -c 200000000 /dev/zero | busybox tr '\\0' a); sleep 1000
"""

UNITS = {"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9, "KiB": 1024, "MiB": 1024 ** 2,
         "GiB": 1024 ** 3}


def size(text: str) -> float:
    """'41.2MiB' / '6.01MB' / '0B' as docker stats prints them -> bytes."""
    m = re.fullmatch(r"([\d.]+)\s*([A-Za-z]+)", text.strip())
    assert m, text
    return float(m[1]) * UNITS[m[2]]


def docker_stats(lab, container: str) -> dict:
    out = run(*lab.docker, "stats", "--no-stream", "--format", "{{json .}}", container).stdout
    row = json.loads(out)
    mem_used, mem_limit = row["MemUsage"].split(" / ")
    rx, tx = row["NetIO"].split(" / ")
    rd, wr = row["BlockIO"].split(" / ")
    return {"cpuPercent": float(row["CPUPerc"].rstrip("%")), "memoryBytes": size(mem_used),
            "memoryLimitBytes": size(mem_limit), "networkRxBytes": size(rx),
            "networkTxBytes": size(tx), "blockReadBytes": size(rd), "blockWriteBytes": size(wr)}


def close(ours: float, theirs: float, rel: float = 0.10, floor: float = 0.0) -> bool:
    """Within `rel` of docker's figure (docker prints 3 significant digits;
    `floor`: an absolute slack for figures near 0)."""
    return abs(ours - theirs) <= max(rel * abs(theirs), floor)


def app_container(lab, iid: str) -> str:
    cid = run(*lab.docker, "ps", "-q", "--filter", f"label=mecorch.instance={iid}",
              "--filter", "label=mecorch.role=app").stdout.strip()
    assert cid
    return cid


def deploy(lab, pod: str, n: int) -> str:
    from support.crashlab import rules_body
    iid = lab.create("sample-http")
    body = {"selectedMECHostInfo": lab.selected, "orchestrationInfo": pod,
            **rules_body("CONTAINER", n)}
    body["appDNSRule"][0]["domainName"] = f"lab-usage{n}.mec.local"
    op, _ = lab.c.post(f"/app_lcm/v1/app_instances/{iid}/instantiate", body)
    assert lab.c.wait_op(op, timeout=300)["operationState"] == "COMPLETED"
    return iid


def usage(lab, iid: str, newer_than: float = 0.0, limit_s: float = 15.0) -> dict:
    """The instance's resourceUsage once it has a CPU percent read after
    `newer_than` (Unix time)."""
    t0 = time.monotonic()
    while True:
        u = lab.c.get(f"/app_lcm/v1/app_instances/{iid}").get("resourceUsage") or {}
        at = (u.get("time") or {}).get("seconds", 0) + (u.get("time") or {}).get(
            "nanoSeconds", 0) / 1e9
        if u.get("cpuPercent") is not None and at > newer_than:
            return u
        assert time.monotonic() - t0 < limit_s, f"no reading after {limit_s}s: {u}"
        time.sleep(0.2)


def test_container_figures_match_docker_stats():
    lab = Lab("usd", vm=False, interval_s=60, orchestrator={"health_interval_s": 1})
    try:
        lab.start()
        lab.onboard(("sample-container-app",))
        iid = deploy(lab, WORKLOAD, 45)
        ip = lab.c.get(f"/app_lcm/v1/app_instances/{iid}")["allocatedResources"]["network"][0]["ip"]
        t0 = time.monotonic()
        while True:                         # the workload has filled and serves
            try:
                with urllib.request.urlopen(f"http://{ip}/ready", timeout=2):
                    break
            except OSError:
                assert time.monotonic() - t0 < 30, "the workload did not get ready"
                time.sleep(0.5)
        for _ in range(3):                  # 6 MB out of the container
            with urllib.request.urlopen(f"http://{ip}/big", timeout=10) as r:
                assert len(r.read()) == 2_000_000
        time.sleep(1.5)                     # the loop at its cap for a whole reading
        cid = app_container(lab, iid)
        theirs = docker_stats(lab, cid)     # ~2 s: the CLI waits for its second sample
        ours = usage(lab, iid, newer_than=time.time() - 1.0)
        print(f"\nmecorch: {json.dumps(ours)}\ndocker stats: {json.dumps(theirs)}")
        assert 40 <= theirs["cpuPercent"] <= 60, theirs         # the workload is steady
        assert close(ours["cpuPercent"], theirs["cpuPercent"]), (ours, theirs)
        assert close(ours["memoryBytes"], theirs["memoryBytes"]), (ours, theirs)
        assert ours["memoryBytes"] >= 40_000_000                # the 40 MB it filled
        assert ours["memoryLimitBytes"] == 128 * 1024 ** 2 == theirs["memoryLimitBytes"]
        assert ours["networkTxBytes"] >= 6_000_000
        assert close(ours["networkTxBytes"], theirs["networkTxBytes"]), (ours, theirs)
        # a few hundred bytes in (the requests): docker prints kB with 3 digits
        assert close(ours["networkRxBytes"], theirs["networkRxBytes"], floor=100), (ours, theirs)
        assert close(ours["blockReadBytes"], theirs["blockReadBytes"], floor=0), (ours, theirs)
        assert close(ours["blockWriteBytes"], theirs["blockWriteBytes"], floor=0), (ours, theirs)
        # `mecorch app show` prints it on one line with the time read
        from mecorch.cli.commands import usage_text
        show = run("/opt/mecorch/venv/bin/python", "-m", "mecorch.cli", "--api", lab.c.base,
                   "app", "show", iid).stdout
        line = next(ln for ln in show.splitlines() if ln.startswith("resourceUsage: "))
        assert line.startswith("resourceUsage: cpu ") and "memory" in line and "(read " in line
        assert usage_text(ours).startswith("cpu ")
        # /metrics: the instance's series, labelled instance and host
        with urllib.request.urlopen(f"{lab.c.base}/metrics", timeout=10) as r:
            metrics = r.read().decode()
        want = f'mecorch_instance_memory_bytes{{host="{lab.host_id}",instance="{iid}"}}'
        assert want in metrics
        # the host's sum (one instance: its own figures)
        host = next(h for h in lab.c.get("/mecorch/v1/hosts") if h["hostId"] == lab.host_id)
        assert host["resourceUsage"]["instances"] == 1
        assert host["resourceUsage"]["memoryBytes"] > 0
        # terminated: its series go at the next round
        op = lab.terminate(iid)
        assert lab.c.wait_op(op, timeout=120)["operationState"] == "COMPLETED"
        time.sleep(2.5)
        with urllib.request.urlopen(f"{lab.c.base}/metrics", timeout=10) as r:
            assert f'instance="{iid}"' not in r.read().decode().split(
                "# HELP mecorch_instance_cpu_percent")[1]
    finally:
        left = lab.teardown()
    assert left == []


def test_container_killed_at_its_memory_limit_shows_oom_killed_and_is_notified(
        notification_sink):
    lab = Lab("uso", vm=False, interval_s=60, orchestrator={"health_interval_s": 1})
    try:
        lab.start()
        lab.onboard(("sample-container-app",))
        lab.c.post("/app_lcm/v1/subscriptions", {
            "subscriptionType": "AppInstanceStateChange", "callbackUri": notification_sink.url})
        iid = deploy(lab, GREEDY, 46)
        t0 = time.monotonic()
        while True:
            info = lab.c.get(f"/app_lcm/v1/app_instances/{iid}")
            if info.get("observedState") == "STOPPED":
                break
            assert time.monotonic() - t0 < 30, f"not killed: {info}\n{lab.log_tail()}"
            time.sleep(0.2)
        assert info["observedStateDetail"] == "exited, exit code 137, OOM killed", info
        oom = run(*lab.docker, "inspect", "-f", "{{.State.OOMKilled}}",
                  app_container_any(lab, iid)).stdout.strip()
        assert oom == "true"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            told = [n for n in notification_sink.got if n.get("appInstanceId") == iid
                    and n.get("notificationType") == "STOPPED"]
            if told:
                break
            time.sleep(0.2)
        assert told, notification_sink.got
        assert told[0]["observedStateDetail"] == "exited, exit code 137, OOM killed"
        assert told[0]["observedState"] == "STOPPED"
    finally:
        left = lab.teardown()
    assert left == []


def app_container_any(lab, iid: str) -> str:
    """The app container, running or not."""
    cid = run(*lab.docker, "ps", "-aq", "--filter", f"label=mecorch.instance={iid}",
              "--filter", "label=mecorch.role=app").stdout.strip()
    assert cid
    return cid
