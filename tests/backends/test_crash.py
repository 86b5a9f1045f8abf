"""Crash safety on the real backends: `mecorch serve` is SIGKILLed at many
points during instantiate and terminate, for containers and VMs, and
restarted on the same state. After every restart:

- reconciliation is done within 10 s (every op occurrence ended COMPLETED
  or FAILED, polled through the API);
- nothing is orphaned: no container, docker volume, domain, pool volume,
  iptables jump (`mecorch:<id>` in the lab's chains) or DNS hosts file of an
  instance that is not INSTANTIATED;
- nothing is duplicated: every INSTANTIATED instance has exactly one app +
  pause container or one domain (with its volumes), two rule jumps and one
  DNS file;
- running instances are untouched: a witness container and a witness VM,
  deployed before the first kill, keep their container ids and
  State.StartedAt / domain uuid and domain id (a domain's id changes when
  it is started again) across all kills.

Kill points are deterministic: k * delta seconds after the POST, delta
derived from an un-killed run of the same operation (so the kills land
throughout it), plus kills right after the POST returns. A rolled-back
instance is instantiated again afterwards (proof the rollback left nothing
in the way); those instances are the targets of the terminate kills.

The counts are printed (pytest -s) and written to
$MECORCH_CRASH_SUMMARY (default /var/tmp/mecorch-crash-summary.txt).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import run
from support.crashlab import INST, VIRSH, Lab, private_registry, rules_body, wait_clean

pytestmark = [pytest.mark.docker, pytest.mark.libvirt, pytest.mark.mep]

POINTS = 20                 # kill points per operation type and manner
EARLY = (0.0, 0.0, 0.005)   # right after the POST returns
GRACEFUL_S = 2              # terminate's graceful timeout (busybox VMs ignore ACPI)
VM_BATCH = 5                # VMs re-deployed at once for the terminate kills
APPS = {"CONTAINER": "sample-http", "VM": "sample-vm"}
SUMMARY = os.environ.get("MECORCH_CRASH_SUMMARY", "/var/tmp/mecorch-crash-summary.txt")


def kill_points(duration: float) -> list[float]:
    """POINTS delays: a few right after the POST, the rest spread evenly
    over the measured duration (the last just before its end)."""
    rest = POINTS - len(EARLY)
    return list(EARLY) + [duration * (k + 1) / (rest + 1) for k in range(rest)]


def identity(lab: Lab, iid: str, manner: str) -> dict:
    """What changes if a runtime is re-made or restarted."""
    if manner == "CONTAINER":
        ids = run("docker", "ps", "-aq", "--no-trunc", "--filter",
                  f"label=mecorch.instance={iid}").stdout.split()
        out = run("docker", "inspect", "--format", "{{.Id}} {{.State.StartedAt}} {{.State.Status}}",
                  *ids).stdout
        return {"containers": sorted(out.split("\n"))}
    name = f"mecorch-{iid}"
    return {"uuid": run(*VIRSH, "domuuid", name).stdout.strip(),
            "domid": run(*VIRSH, "domid", name).stdout.strip(),
            "state": run(*VIRSH, "domstate", name).stdout.strip()}


@pytest.fixture(scope="module")
def lab(sample_container, sample_vm):
    root = Path(tempfile.mkdtemp(prefix="mecorch-crash-reg-", dir="/var/tmp"))
    registry = private_registry(root)
    registry.start()
    lab = Lab("crash", interval_s=2,
              cim={"registry": registry.addr})
    try:
        lab.start()
        lab.onboard()
        yield lab
    finally:
        left = lab.teardown()
        registry.stop()
        shutil.rmtree(root, ignore_errors=True)
    assert left == [], left


@pytest.fixture(scope="module")
def stats():
    s = {"kills": {}, "reconcile_s": [], "t0": time.monotonic(), "measured": {}}
    yield s
    lines = [f"{op} {manner}: {n} kills survived" for (op, manner), n in sorted(s["kills"].items())]
    worst = max(s["reconcile_s"]) if s["reconcile_s"] else 0
    total = sum(s["kills"].values())
    lines.append(f"how the killed ops ended: {s.get('outcomes')}")
    lines.append(f"total: {total} kills survived; reconciled after restart in at most "
                 f"{worst:.2f}s (mean {sum(s['reconcile_s']) / max(1, total):.2f}s); "
                 f"measured durations {s['measured']}; file runtime "
                 f"{time.monotonic() - s['t0']:.0f}s")
    text = "\n".join(lines)
    print("\n" + text)
    with open(SUMMARY, "w") as f:
        f.write(text + "\n")


@pytest.fixture(scope="module")
def witnesses(lab, stats):
    """One running container and one running VM that every kill must leave
    alone; then, per manner, the un-killed measurements: an instantiate
    (warm: the image is already pulled / in the pool, as for the kills) and
    a terminate of that instance."""
    out = {}
    for manner, app in APPS.items():
        iid = lab.deploy(app, manner)
        out[manner] = (iid, identity(lab, iid, manner))
        t0 = time.monotonic()
        other = lab.deploy(app, manner)
        stats["measured"][f"instantiate {manner}"] = round(time.monotonic() - t0, 2)
        t0 = time.monotonic()
        op = lab.c.wait_op(lab.terminate(other, GRACEFUL_S), timeout=120)
        stats["measured"][f"terminate {manner}"] = round(time.monotonic() - t0, 2)
        assert op["operationState"] == "COMPLETED", op.get("error")
    return out


def crash_cycle(lab: Lab, stats: dict, witnesses: dict, key: tuple, post, delay: float) -> None:
    """POST, wait `delay`, SIGKILL, restart, and check everything."""
    t0 = time.monotonic()
    op = post()
    left = delay - (time.monotonic() - t0)
    if left > 0:
        time.sleep(left)
    lab.kill()
    restart = time.monotonic()
    lab.start()
    expect = None
    took = wait_clean(lab, restart, 10.0, expect)
    for manner, (iid, ident) in witnesses.items():
        assert iid in lab.instantiated(), f"witness {manner} {iid} is gone"
        assert identity(lab, iid, manner) == ident, f"witness {manner} was touched"
    stats["reconcile_s"].append(took)
    stats["kills"][key] = stats["kills"].get(key, 0) + 1
    # how the killed op ended: undone by recovery, finished by recovery, or
    # already over before the kill
    ended = lab.c.get(op["_links"]["self"]["href"])
    how = "rolled back" if "interrupted" in (ended.get("error") or {}).get("detail", "") \
        else ended["operationState"]
    outcome = stats.setdefault("outcomes", {}).setdefault(" ".join(key), {})
    outcome[how] = outcome.get(how, 0) + 1


@pytest.mark.parametrize("manner", ["CONTAINER", "VM"])
def test_kill_during_instantiate(lab, stats, witnesses, manner):
    duration = stats["measured"][f"instantiate {manner}"]
    targets = []
    for n, delay in enumerate(kill_points(duration)):
        iid = lab.create(APPS[manner])
        crash_cycle(lab, stats, witnesses, ("instantiate", manner),
                    lambda: lab.instantiate(iid, manner), delay)
        targets.append(iid)
    lab.targets = getattr(lab, "targets", {})
    lab.targets[manner] = targets
    if manner == "CONTAINER":
        redeploy(lab, manner, targets, 1)
    # (VMs are deployed again in batches by test_kill_during_terminate)


def redeploy(lab: Lab, manner: str, iids: list[str], batch: int) -> None:
    """Instantiate the rolled-back instances again: nothing of their first
    try may be in the way (a leftover domain or volume would be a 409 or a
    FAILED op)."""
    redo = [i for i in iids if i not in lab.instantiated()]
    with ThreadPoolExecutor(batch) as pool:
        ops = list(pool.map(lambda i: lab.c.wait_op(lab.instantiate(i, manner), timeout=300),
                            redo))
    assert [o["operationState"] for o in ops] == ["COMPLETED"] * len(redo), \
        [o.get("error") for o in ops]
    assert wait_clean(lab, time.monotonic(), 10.0) < 10


@pytest.mark.parametrize("manner", ["CONTAINER", "VM"])
def test_kill_during_terminate(lab, stats, witnesses, manner):
    targets = lab.targets[manner]       # made by test_kill_during_instantiate
    assert len(targets) == POINTS
    duration = stats["measured"][f"terminate {manner}"]
    batch = 1 if manner == "CONTAINER" else VM_BATCH
    for n, delay in enumerate(kill_points(duration)):
        if n % batch == 0:
            redeploy(lab, manner, targets[n:n + batch], batch)
        iid = targets[n]
        crash_cycle(lab, stats, witnesses, ("terminate", manner),
                    lambda: lab.terminate(iid, GRACEFUL_S), delay)
        # a terminate is finished by recovery, never undone
        assert iid not in lab.instantiated()
    assert wait_clean(lab, time.monotonic(), 10.0) < 10


def test_periodic_reconciliation_removes_orphans_and_marks_missing(lab, witnesses):
    """Objects made behind mecorch's back under its labels (an orphan) and
    a runtime removed behind its back (MISSING), seen by the periodic
    round, not a restart; the running witnesses are not touched."""
    iid = lab.deploy("sample-http", "CONTAINER")
    ids = run("docker", "ps", "-aq", "--filter", f"label=mecorch.instance={iid}").stdout.split()
    run("docker", "rm", "-f", *ids)
    deadline = time.monotonic() + 10
    while lab.c.get(f"{INST}/{iid}").get("observedState") != "MISSING":
        assert time.monotonic() < deadline, lab.c.get(f"{INST}/{iid}")
        time.sleep(0.3)
    info = lab.c.get(f"{INST}/{iid}")
    assert info["instantiationState"] == "INSTANTIATED"     # the record is kept
    op = lab.c.wait_op(lab.terminate(iid), timeout=60)      # and can be ended
    assert op["operationState"] == "COMPLETED", op.get("error")
    # an orphan: a labelled container of an instance mecorch does not have
    ghost = str(uuid.uuid4())
    run("docker", "run", "-d", "--name", f"mecorch-ghost-{ghost}",
        "--label", f"mecorch.instance={ghost}", "--label", f"mecorch.host={lab.host_id}",
        "--label", "mecorch.role=app", "--network", "none", "mecorch/pause:1")
    lab.ids.add(ghost)
    assert lab.census().get(ghost) == {"container:app": 1}
    t0 = time.monotonic()
    wait_clean(lab, t0, 10.0)
    for manner, (wid, ident) in witnesses.items():
        assert identity(lab, wid, manner) == ident


def test_instantiate_retry_with_the_same_idempotency_key(lab, witnesses):
    """A client retry (same Idempotency-Key) gets the same op occurrence,
    202 with the same Location, and never a second deployment: retried
    concurrently, after the op ended, and after a crash right after the
    first POST."""
    iid = lab.create("sample-http")
    key = {"Idempotency-Key": f"retry-{iid}"}
    # service addresses of their own (one address, one owner)
    body = {"selectedMECHostInfo": lab.selected, "deploymentType": "CONTAINER",
            **rules_body("CONTAINER", 50)}
    url = f"{INST}/{iid}/instantiate"
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: lab.c.call("POST", url, body, key), range(4)))
    assert {a[0] for a in answers} == {202}
    assert len({a[1]["id"] for a in answers}) == 1
    assert len({a[2]["Location"] for a in answers}) == 1
    op = lab.c.wait_op(answers[0][1], timeout=60)
    assert op["operationState"] == "COMPLETED", op.get("error")
    status, again, headers = lab.c.call("POST", url, body, key)       # after the end
    assert (status, again["id"], again["operationState"]) == (202, op["id"], "COMPLETED")
    assert headers["Location"] == answers[0][2]["Location"]
    with pytest.raises(Exception) as e:                                # a new key: 409
        lab.c.call("POST", url, body, {"Idempotency-Key": f"other-{iid}"})
    assert getattr(e.value, "status", None) == 409
    with pytest.raises(Exception) as e:                                # same key, other body
        lab.c.call("POST", url, {**body, "deploymentType": "VM"}, key)
    assert getattr(e.value, "status", None) == 422
    ops = [o for o in lab.c.get("/app_lcm/v1/app_lcm_op_occs") if o["appInstanceId"] == iid]
    assert len(ops) == 1
    assert lab.census()[iid]["container:app"] == 1

    # a crash right after the POST: the retry after the restart answers the
    # same (now ended) op occurrence and makes nothing
    other = lab.create("sample-http")
    key = {"Idempotency-Key": f"retry-{other}"}
    url = f"{INST}/{other}/instantiate"
    body = {**body, **rules_body("CONTAINER", 51)}
    first = lab.c.call("POST", url, body, key)[1]
    lab.kill()
    lab.start()
    status, again, _ = lab.c.call("POST", url, body, key)
    assert status == 202 and again["id"] == first["id"]
    assert again["operationState"] in ("COMPLETED", "FAILED")
    assert len([o for o in lab.c.get("/app_lcm/v1/app_lcm_op_occs")
                if o["appInstanceId"] == other]) == 1
    wait_clean(lab, time.monotonic(), 10.0)
    for i in (iid, other):
        if i in lab.instantiated():
            assert lab.c.wait_op(lab.terminate(i), timeout=60)["operationState"] == "COMPLETED"
    wait_clean(lab, time.monotonic(), 10.0)
