"""The operator's view on the real backends: a `mecorch serve` lab of its
own (crashlab.Lab: host id, docker network, libvirt pool and network,
chains, dnsmasq port) with a container and a VM deployed; its status page
loaded in headless Chromium (Debian's `chromium`, installed here when
missing), checked against what the API and the backends say, and
screenshotted to tests/artifacts/status-page.png; /metrics scraped with
prometheus_client's parser; the CLI's list, host, events, rules and operate
commands; the serve log's lines.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import run
from support.crashlab import Lab
from support.page import Tables, chromium  # noqa: F401 - the page readers

pytestmark = [pytest.mark.docker, pytest.mark.libvirt, pytest.mark.mep]

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
SCREENSHOT = ARTIFACTS / "status-page.png"
@pytest.fixture(scope="module")
def lab():
    # each instance's figures read every second (its usage column)
    lab = Lab("st", interval_s=30, orchestrator={"health_interval_s": 1})
    try:
        lab.start()
        lab.onboard()
        ids = {}
        for n, (app, manner) in enumerate((("sample-http", "CONTAINER"), ("sample-vm", "VM"))):
            iid = lab.create(app)
            op = lab.c.wait_op(lab.instantiate(iid, manner, 37 + n), timeout=400)
            assert op["operationState"] == "COMPLETED", (op.get("error"), lab.log_tail())
            ids[manner] = iid
        lab.deployed = ids
        yield lab
    finally:
        left = lab.teardown()
        assert left == [], left


def cli(lab, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mecorch.cli", "--api", lab.c.base, *argv],
                          capture_output=True, text=True, timeout=300)


def test_status_page_in_chromium_shows_what_runs(lab):
    url = f"{lab.c.base}/status"
    for iid in lab.deployed.values():       # two readings: a CPU percent
        deadline = time.monotonic() + 15
        while (lab.c.get(f"/app_lcm/v1/app_instances/{iid}").get("resourceUsage") or {}) \
                .get("cpuPercent") is None:
            assert time.monotonic() < deadline, f"{iid}: no usage reading"
            time.sleep(0.2)
    r = chromium(url, "--dump-dom")
    assert r.returncode == 0 and "<title>mecorch status</title>" in r.stdout, r.stderr[-2000:]
    page = Tables()
    page.feed(r.stdout)
    t = page.tables

    (host,) = t["hosts"]
    assert host["host"] == lab.host_id
    assert host["backends"] == "cim=docker:up vim=libvirt:up mep=linux:up"
    ratio = lab.cfg["orchestrator"]["cpu_allocation_ratio"]
    assert float(host["vCPU total"]) == os.cpu_count() * ratio
    assert host["instances"] == "2"
    assert float(host["vCPU promised"]) > 0
    assert float(host["vCPU free"]) == pytest.approx(
        float(host["vCPU total"]) - float(host["vCPU promised"]))
    assert int(host["memory free"]) == int(host["memory MB"]) - int(host["memory promised"])

    pkgs = {p["appDId"]: p for p in t["packages"]}
    assert set(pkgs) == {"sample-http", "sample-vm"}
    assert {(p["manner"], p["state"], p["usage"]) for p in pkgs.values()} == {
        ("CONTAINER", "ENABLED", "IN_USE"), ("VM", "ENABLED", "IN_USE")}

    insts = {i["id"]: i for i in t["instances"]}
    for manner, iid in lab.deployed.items():
        api = lab.c.get(f"/app_lcm/v1/app_instances/{iid}")
        row = insts[iid]
        assert row["manner"] == manner and row["state"] == "INSTANTIATED"
        assert row["host"] == lab.host_id and row["operational"] == "STARTED"
        assert row["addresses"] == api["allocatedResources"]["network"][0]["ip"]
        assert row["DNS names"] == f"lab-{manner.lower()}.mec.local"
        # known from the first moment (recorded by the instantiate itself)
        assert row["observed"] == "RUNNING"
        assert row["restarts"] == "0 (Never)"
        # its backend's figures, with the time they were read
        assert row["usage"].startswith("cpu ") and " %, mem " in row["usage"], row["usage"]
        assert ", read 20" in row["usage"] and "disk r/w" in row["usage"], row["usage"]

    rules = t["rules"]
    assert sorted((r["kind"], r["rule"], r["state"]) for r in rules) == [
        ("dns", "lab-dns", "ACTIVE"), ("dns", "lab-dns", "ACTIVE"),
        ("traffic", "lab-vip", "ACTIVE"), ("traffic", "lab-vip", "ACTIVE")]
    assert any("10.90.0.237" in r["what"] for r in rules)

    ops = t["operations"]
    assert sorted((o["operation"], o["state"], o["instance"]) for o in ops) == sorted(
        ("INSTANTIATE", "COMPLETED", iid) for iid in lab.deployed.values())

    # the screenshot the README shows (a CI artifact)
    ARTIFACTS.mkdir(exist_ok=True)
    SCREENSHOT.unlink(missing_ok=True)
    r = chromium(url, f"--screenshot={SCREENSHOT}", "--window-size=1400,1000",
                 "--hide-scrollbars")
    assert r.returncode == 0, r.stderr[-2000:]
    data = SCREENSHOT.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000


def test_metrics_of_the_real_lab(lab):
    import urllib.request
    with urllib.request.urlopen(f"{lab.c.base}/metrics", timeout=30) as r:
        text = r.read().decode()
    fams = {f.name: f.samples for f in text_string_to_metric_families(text)}

    def one(fam: str, name: str, **labels) -> float:
        hits = [s.value for s in fams[fam] if s.name == name
                and all(s.labels.get(k) == v for k, v in labels.items())]
        assert len(hits) == 1, (name, labels)
        return hits[0]
    for manner in ("CONTAINER", "VM"):
        assert one("mecorch_instances", "mecorch_instances", manner=manner,
                   state="INSTANTIATED", host=lab.host_id) == 1
        assert one("mecorch_lcm_operation_duration_seconds",
                   "mecorch_lcm_operation_duration_seconds_count", operation="INSTANTIATE",
                   manner=manner, outcome="completed") == 1
    for role in ("cim", "vim", "mep"):
        assert one("mecorch_backend_up", "mecorch_backend_up", host=lab.host_id, role=role) == 1
    assert one("mecorch_rules", "mecorch_rules", kind="dns", state="ACTIVE",
               host=lab.host_id) == 2
    assert one("process_resident_memory_bytes", "process_resident_memory_bytes") > 0


def test_cli_on_the_real_lab(lab):
    cont, vm = lab.deployed["CONTAINER"], lab.deployed["VM"]
    r = cli(lab, "app", "list")
    assert r.returncode == 0, r.stderr
    rows = {ln.split()[0]: ln for ln in r.stdout.splitlines()[1:]}
    assert "lab-container.mec.local" in rows[cont] and "lab-vm.mec.local" in rows[vm]
    assert " VM " in rows[vm] and " CONTAINER " in rows[cont]

    r = cli(lab, "--output", "json", "host", "list")
    (host,) = json.loads(r.stdout)
    assert host["hostId"] == lab.host_id
    assert host["capacity"]["CONTAINER"]["vcpuTotal"] == os.cpu_count() * \
        lab.cfg["orchestrator"]["cpu_allocation_ratio"]
    assert {b["role"]: b["ok"] for b in host["backends"]} == {"cim": True, "vim": True,
                                                             "mep": True}

    r = cli(lab, "app", "rules", vm[:8])
    assert "lab-vm.mec.local" in r.stdout and "10.90.0.238" in r.stdout

    # operate the container through the CLI: docker says what happened
    def running() -> str:
        return run(*lab.docker, "ps", "-a", "--filter", f"label=mecorch.instance={cont}",
                   "--filter", "label=mecorch.role=app", "--format", "{{.State}}").stdout.strip()
    r = cli(lab, "app", "operate", cont[:8], "stop", "--forceful")
    assert r.returncode == 0, r.stderr
    assert running() == "exited"
    r = cli(lab, "app", "operate", cont[:8], "start")
    assert r.returncode == 0, r.stderr
    assert running() == "running"
    r = cli(lab, "app", "events", cont[:8])
    assert [ln.split()[1] for ln in r.stdout.splitlines()[1:]] == ["INSTANTIATE", "OPERATE",
                                                                  "OPERATE"]

    # the serve log: one line per operation and state change, with the ids
    log = lab.log_tail(200_000)
    for iid in (cont, vm):
        done = [ln for ln in log.splitlines() if " op.completed " in ln and f"instance={iid}" in ln]
        assert done and all(f"host={lab.host_id}" in ln for ln in done), log[-3000:]
    assert "package.onboarded" in log and "instance.state state=INSTANTIATED" in log


POD_WITH_OUTPUT = """\
apiVersion: v1
kind: Pod
metadata: {name: logs-app}
spec:
  containers:
    - name: app
      image: mecorch/sample-http:1.0
      command: ["/bin/sh", "-c", "echo mecorch-logs-$MEC_APP_INSTANCE_ID; exec /bin/serve"]
"""


def test_app_logs_while_running_and_after_termination(lab):
    # a container that writes a line of its own, and the VM's serial console
    iid = lab.create("sample-http")
    body = {"selectedMECHostInfo": lab.selected, "orchestrationInfo": POD_WITH_OUTPUT}
    from support.crashlab import rules_body
    body.update(rules_body("CONTAINER", 39))
    body["appDNSRule"][0]["domainName"] = "lab-logs.mec.local"
    op, _ = lab.c.post(f"/app_lcm/v1/app_instances/{iid}/instantiate", body)
    assert lab.c.wait_op(op, timeout=300)["operationState"] == "COMPLETED"
    line = f"mecorch-logs-{iid}"
    r = cli(lab, "app", "logs", iid[:8])
    assert r.returncode == 0 and r.stdout.strip() == line, (r.stdout, r.stderr)
    vm = lab.deployed["VM"]
    r = cli(lab, "app", "logs", vm[:8])
    console = r.stdout
    assert r.returncode == 0 and console.count("\n") > 3, r.stderr
    r = cli(lab, "app", "logs", vm[:8], "--tail", "2")
    assert r.stdout.splitlines() == console.splitlines()[-2:]

    for inst in (iid, vm):
        r = cli(lab, "app", "terminate", inst[:8], "--forceful")
        assert r.returncode == 0, r.stderr
    # the runtimes are gone; their output is kept
    assert run(*lab.docker, "ps", "-aq", "--filter", f"label=mecorch.instance={iid}").stdout == ""
    r = cli(lab, "app", "logs", iid[:8])
    assert r.returncode == 0 and r.stdout.strip() == line
    assert "kept after its termination" in r.stderr
    r = cli(lab, "app", "logs", vm[:8])
    assert r.stdout.startswith(console[:200]) and len(r.stdout) >= len(console)
    # deleting the instance deletes what was kept
    assert cli(lab, "app", "delete", iid[:8]).returncode == 0
    assert not (lab.tmp / "state" / "app-logs" / f"{iid}.log").exists()
    assert (lab.tmp / "state" / "app-logs" / f"{vm}.log").exists()
