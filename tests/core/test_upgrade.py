"""Rolling upgrade (change_app_pkg, mecorch.mepm.upgrade) over the real core
with in-memory drivers: the steps (new runtime beside the old, ready, rules
switched, old one retired), rollback on a never-ready and an undeployable
new version, recovery of an upgrade a crash interrupted (before, during and
after the switch), the runtime-id mapping of reconciliation (a leftover
runtime is an orphan after the op, not during it) and the refusals. The
readiness checks are the test's own (the probe runner and the TCP connect
are handed in); the real ones run in tests/e2e/test_rolling_upgrade.py."""

from __future__ import annotations

import yaml

from support.corelab import (  # noqa: F401 - env is a fixture
    INST, POD, create, env, instantiate, onboard, problem, terminate)
from support.fakes import broken
from support import meolab
from support.meolab import system  # noqa: F401 - the fixture

PKGS = "/app_pkgm/v1/app_packages"


def two_versions(e, **v2_changes) -> tuple[str, str]:
    one = onboard(e)["id"]
    two = onboard(e, appDVersion="2.0", appSoftVersion="2.0", **v2_changes)["id"]
    return one, two


def deploy(e, pkg: str, **body) -> str:
    iid = e.c.post(INST, {"appDId": "sample-http", "appPkgId": pkg})[0]["id"]
    op = instantiate(e, iid, **body)
    assert op["operationState"] == "COMPLETED", op
    return iid


def change(e, iid: str, timeout: float = 20, **body) -> dict:
    op, headers = e.c.post(f"{INST}/{iid}/change_app_pkg", body)
    assert headers["Location"] == op["_links"]["self"]["href"]
    assert op["lcmOperation"] == "CHANGE_APP_PKG" and op["operationParams"] == "CHANGE_APP_PKG"
    return e.c.wait_op(op, timeout=timeout)


def ready_when(e, answer: bool) -> list:
    """The new runtime's TCP port answers (or not); returns the addresses asked."""
    asked = []
    e.orch.lcm.upgrader.connect = lambda ip, port: asked.append((ip, port)) or answer
    return asked


def target(e, iid: str) -> str:
    return e.orch.store.get("rules", iid)["targetIp"]


def usage(e, pkg: str) -> str:
    return e.c.get(f"{PKGS}/{pkg}")["usageState"]


def test_upgrade_starts_the_new_runtime_switches_the_rules_and_retires_the_old(env):
    e = env
    one, two = two_versions(e)
    iid = deploy(e, one)
    old_ip = target(e, iid)
    asked = ready_when(e, True)
    op = change(e, iid, appPkgId=two, readyTimeoutS=5)
    assert op["operationState"] == "COMPLETED", op
    # the new runtime under its own id, the old one gone
    assert set(e.cim.instances) == {f"{iid}.g1"}
    new_ip = e.cim.instances[f"{iid}.g1"]["ip"]
    assert new_ip != old_ip and asked and asked[0][0] == new_ip
    # the rules (and the MEP's applied set) steer to the new runtime
    assert target(e, iid) == new_ip
    assert e.mep.applied[iid][0] == new_ip
    view = e.c.get(f"{INST}/{iid}")
    assert view["appPkgId"] == two and view["appSoftVersion"] == "2.0"
    assert view["allocatedResources"]["network"][0]["ip"] == new_ip
    assert view["allocatedResources"]["serviceAddress"] is not None
    # the new runtime got the instance's identity and a fresh Mp1 token
    env_new = e.cim.instances[f"{iid}.g1"]["request"].env
    assert env_new["MEC_APP_INSTANCE_ID"] == iid
    assert e.orch.mep.access.app_token_owner(env_new["MEC_APP_TOKEN"]) == iid
    assert usage(e, one) == "NOT_IN_USE" and usage(e, two) == "IN_USE"
    steps = [s["step"] for s in e.orch.store.get("op_occs", op["id"])["_steps"]]
    assert steps == ["begin:deploy", "deploy", "ready", "begin:switch", "switched",
                     "begin:retire", "retired"]
    # the old one was stopped before it was destroyed (its connections end)
    assert e.cim.calls[-2:] == ["stop", "destroy"]
    # a second upgrade back: generation 2; terminate removes the current runtime
    op = change(e, iid, appPkgId=one)
    assert op["operationState"] == "COMPLETED", op
    assert set(e.cim.instances) == {f"{iid}.g2"}
    assert terminate(e, iid)["operationState"] == "COMPLETED"
    assert e.cim.instances == {} and iid not in e.mep.applied
    assert usage(e, one) == "NOT_IN_USE"


def test_a_new_version_that_never_gets_ready_is_rolled_back(env):
    e = env
    one, two = two_versions(e)
    iid = deploy(e, one)
    old_ip = target(e, iid)
    ready_when(e, False)
    op = change(e, iid, appPkgId=two, readyTimeoutS=1)
    assert op["operationState"] == "FAILED", op
    assert "did not get ready within 1 s" in op["error"]["detail"]
    assert "rolled back" in op["error"]["detail"]
    assert set(e.cim.instances) == {iid}            # the old one only, untouched
    assert e.cim.instances[iid]["state"].value == "RUNNING"
    assert target(e, iid) == old_ip and e.mep.applied[iid][0] == old_ip
    inst = e.orch.store.get("instances", iid)
    assert inst["appPkgId"] == one and "_runtime" not in inst
    assert "_mp1TokenNext" not in inst and "_upgradeTo" not in inst
    assert usage(e, two) == "NOT_IN_USE"


def test_a_new_version_that_stops_fails_at_once(env):
    e = env
    one, two = two_versions(e)
    iid = deploy(e, one)
    ready_when(e, False)
    real = e.cim.deploy     # the new runtime dies as soon as it was deployed

    def deploy_and_die(request):
        alloc = real(request)
        e.cim.crash(request.instance_id, 1)
        return alloc
    e.cim.deploy = deploy_and_die
    op = change(e, iid, appPkgId=two, readyTimeoutS=60)
    assert op["operationState"] == "FAILED", op
    assert "STOPPED before it got ready" in op["error"]["detail"]
    assert set(e.cim.instances) == {iid}


def test_a_new_version_that_fails_to_deploy_is_rolled_back(env):
    e = env
    one, two = two_versions(e)
    iid = deploy(e, one)
    old_ip = target(e, iid)
    e.cim.fail["deploy"] = broken("no room for the new one")
    op = change(e, iid, appPkgId=two)
    assert op["operationState"] == "FAILED", op
    assert "no room for the new one" in op["error"]["detail"]
    assert set(e.cim.instances) == {iid} and target(e, iid) == old_ip
    assert e.orch.store.get("instances", iid)["appPkgId"] == one


def test_readiness_probe_of_the_new_runtime_decides(env):
    e = env
    one, two = two_versions(e)
    pod = yaml.safe_load(POD)
    pod["spec"]["containers"][0]["readinessProbe"] = {
        "httpGet": {"path": "/ready", "port": 80}, "periodSeconds": 1, "successThreshold": 2}
    iid = deploy(e, one, orchestrationInfo=yaml.safe_dump(pod))
    # no prober runs here: the old runtime was never found ready (withdrawn)
    assert iid not in e.mep.applied
    assert e.orch.store.get("rules", iid)["outOfService"] == ["readiness"]
    seen = []

    def runner(probe, ip, inst):
        seen.append((probe.path, ip, inst["_handle"]["id"]))
        return ip != "never", "http 200"
    e.orch.lcm.upgrader.runner = runner
    op = change(e, iid, appPkgId=two)
    assert op["operationState"] == "COMPLETED", op
    new_ip = e.cim.instances[f"{iid}.g1"]["ip"]
    # probed at the new runtime's own address, until successThreshold passes
    assert seen == [("/ready", new_ip, f"{iid}.g1")] * 2
    inst = e.orch.store.get("instances", iid)
    assert inst["_health"]["ready"] is True and inst["_probes"]["readiness"]["path"] == "/ready"
    # the new runtime was found ready: it serves (its rules restored, to it)
    assert e.mep.applied[iid][0] == new_ip
    assert not e.orch.store.get("rules", iid).get("outOfService")
    e.orch.lcm.upgrader.runner = lambda probe, ip, inst: (False, "http 404")
    op = change(e, iid, appPkgId=one, readyTimeoutS=1)
    assert op["operationState"] == "FAILED" and "http 404" in op["error"]["detail"], op
    assert set(e.cim.instances) == {f"{iid}.g1"}


def test_refusals_name_the_field_or_the_reason(env):
    e = env
    one, two = two_versions(e)
    other = onboard(e, appDId="other-app", appName="other")["id"]
    iid = deploy(e, one)
    url = f"{INST}/{iid}/change_app_pkg"
    err = problem(e.c.post, url, {"appPkgId": two, "readyTimeout": 5})
    assert err.status == 400 and "readyTimeout" in err.detail
    err = problem(e.c.post, url, {})
    assert err.status == 400 and "appPkgId" in err.detail
    err = problem(e.c.post, url, {"appPkgId": two, "readyTimeoutS": 0})
    assert err.status == 400 and "readyTimeoutS" in err.detail
    err = problem(e.c.post, url, [two])
    assert err.status == 400 and "ChangeAppPkgRequest" in err.detail
    err = problem(e.c.post, url, {"appPkgId": one})
    assert err.status == 409 and "already runs" in err.detail
    err = problem(e.c.post, url, {"appPkgId": other})
    assert err.status == 404 and "sample-http" in err.detail
    e.c.call("PATCH", f"{PKGS}/{two}", {"operationState": "DISABLED"})
    err = problem(e.c.post, url, {"appPkgId": two})
    assert err.status == 409 and "DISABLED" in err.detail
    e.c.call("PATCH", f"{PKGS}/{two}", {"operationState": "ENABLED"})
    # a VM-only version of a container instance
    vm_only = onboard(e, appDVersion="3.0")["id"]
    doc = e.orch.store.get("packages", vm_only)
    doc.update(_manners=["VM"], _manner="VM")
    e.orch.store.put("packages", vm_only, doc)
    err = problem(e.c.post, url, {"appPkgId": vm_only})
    assert err.status == 409 and "no CONTAINER deployment" in err.detail
    # volumes: old and new would share the data
    inst = e.orch.store.get("instances", iid)
    kept = dict(inst)
    inst["allocatedResources"]["storage"] = [{"name": "data"}]
    e.orch.store.put("instances", iid, inst)
    err = problem(e.c.post, url, {"appPkgId": two})
    assert err.status == 409 and "volumes" in err.detail
    # instantiated before requests were kept
    inst.pop("_request")
    e.orch.store.put("instances", iid, inst)
    err = problem(e.c.post, url, {"appPkgId": two})
    assert err.status == 409 and "terminate and instantiate" in err.detail
    e.orch.store.put("instances", iid, kept)
    # stopped by its operator: nothing serves to switch from
    op, _ = e.c.post(f"{INST}/{iid}/operate", {"changeStateTo": "STOPPED"})
    assert e.c.wait_op(op, timeout=10)["operationState"] == "COMPLETED"
    err = problem(e.c.post, url, {"appPkgId": two})
    assert err.status == 409 and "STOPPED" in err.detail
    # not instantiated
    fresh = create(e)["id"]
    err = problem(e.c.post, f"{INST}/{fresh}/change_app_pkg", {"appPkgId": two})
    assert err.status == 409 and "NOT_INSTANTIATED" in err.detail
    # an id too long for its runtime id to stay an identifier
    long_id = "a" * 62
    e.orch.lcm.create({"appDId": "sample-http", "appPkgId": one}, instance_id=long_id)
    assert instantiate(e, long_id)["operationState"] == "COMPLETED"
    err = problem(e.c.post, f"{INST}/{long_id}/change_app_pkg", {"appPkgId": two})
    assert err.status == 409 and "too long" in err.detail
    assert set(e.cim.instances) == {iid, long_id}       # nothing was made


# ---------------------------------------------------------------- crashes
def interrupted(e, iid: str, pkg: str):
    """Start an upgrade whose worker never runs (the process "dies" at
    once); returns (op, request, host) as the worker would have got them."""
    got = []
    lcm = e.orch.lcm
    pool_submit = lcm._pool.submit
    lcm._pool.submit = lambda fn, *args: got.append(args)
    try:
        e.c.post(f"{INST}/{iid}/change_app_pkg", {"appPkgId": pkg})
    finally:
        lcm._pool.submit = pool_submit
    (_, _, op, request, host), = got
    return op, request, host


def crash(e, op: dict, iid: str) -> None:
    """What a restart of mecorch forgets: the op running in this process."""
    with e.orch.lcm._busy_lock:
        e.orch.lcm._live.discard(op["id"])
        e.orch.lcm._busy.discard(iid)


def test_reconcile_leaves_a_runtime_being_upgraded_alone_and_removes_a_leftover(env):
    e = env
    one, two = two_versions(e)
    iid = deploy(e, one)
    op, request, host = interrupted(e, iid, two)
    e.cim.deploy(request)               # the new runtime exists, the op runs
    lines = e.orch.reconciler.run_once()
    assert set(e.cim.instances) == {iid, f"{iid}.g1"}, lines
    assert e.orch.store.get("instances", iid)["_observed"]["state"] == "RUNNING"
    crash(e, op, iid)
    lines = e.orch.reconciler.run_once()
    assert f"rolled back change of package of {iid} to {two}" in lines
    assert set(e.cim.instances) == {iid}
    assert e.orch.store.get("op_occs", op["id"])["operationState"] == "FAILED"
    # a completed upgrade, then the old runtime shows up again (a remove
    # that failed): an orphan, removed; the current runtime is adopted
    ready_when(e, True)
    assert change(e, iid, appPkgId=two)["operationState"] == "COMPLETED"
    # (g1 again: the rolled-back upgrade made no generation)
    e.cim.instances[iid] = {"state": e.cim.instances[f"{iid}.g1"]["state"], "ip": "10.1.1.1"}
    lines = e.orch.reconciler.run_once()
    assert any("removed orphaned CONTAINER objects of instance " + iid in line
               and "not its current one" in line for line in lines), lines
    assert set(e.cim.instances) == {f"{iid}.g1"}
    # the current runtime's death is the instance's (mapped to its id)
    e.cim.crash(f"{iid}.g1", 1)
    e.orch.reconciler.run_once()
    observed = e.orch.store.get("instances", iid)["_observed"]
    assert observed["state"] == "STOPPED", observed


def test_recovery_before_the_switch_rolls_back(env):
    e = env
    one, two = two_versions(e)
    iid = deploy(e, one)
    old_ip = target(e, iid)
    op, request, host = interrupted(e, iid, two)
    j = e.orch.lcm.journal
    j.step(op, "begin:deploy")
    alloc = e.cim.deploy(request)
    j.step(op, "deploy", handle=alloc.handle, ip=alloc.addresses[0].ip)
    j.step(op, "ready", detail="ready")
    j.step(op, "begin:switch")
    e.orch.mep.apply(host, iid, alloc.addresses[0].ip)    # the rules moved; the record not
    crash(e, op, iid)
    lines = e.orch.lcm.recover()
    assert lines == [f"rolled back change of package of {iid} to {two}"]
    assert set(e.cim.instances) == {iid}
    assert target(e, iid) == old_ip and e.mep.applied[iid][0] == old_ip
    done = e.orch.store.get("op_occs", op["id"])
    assert done["operationState"] == "FAILED" and "interrupted" in done["error"]["detail"]
    inst = e.orch.store.get("instances", iid)
    assert inst["appPkgId"] == one and "_mp1TokenNext" not in inst
    assert usage(e, two) == "NOT_IN_USE"


def test_recovery_after_the_switch_finishes(env):
    e = env
    one, two = two_versions(e)
    iid = deploy(e, one)
    op, request, host = interrupted(e, iid, two)
    up = e.orch.lcm.upgrader
    j = e.orch.lcm.journal
    j.step(op, "begin:deploy")
    alloc = e.cim.deploy(request)
    ip = alloc.addresses[0].ip
    j.step(op, "deploy", handle=alloc.handle, ip=ip)
    j.step(op, "begin:switch")
    e.orch.mep.apply(host, iid, ip)
    up._switched(op, alloc, ip, host)       # the record names the new runtime
    crash(e, op, iid)
    lines = e.orch.lcm.recover()
    assert lines == [f"finished change of package of {iid} to {two}"]
    assert set(e.cim.instances) == {f"{iid}.g1"}
    assert e.orch.store.get("op_occs", op["id"])["operationState"] == "COMPLETED"
    assert target(e, iid) == ip
    assert e.c.get(f"{INST}/{iid}")["appPkgId"] == two


# ---------------------------------------------------------------- CLI
def cli(e, capsys, *argv: str) -> tuple[int, str, str]:
    from mecorch import cli as the_cli
    rc = the_cli.main(["--api", e.c.base, *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_upgrades_one_instance_or_every_instance_of_an_app_on_a_host(env, capsys):
    e = env
    one, two = two_versions(e)
    ids = [deploy(e, one) for _ in range(3)]
    ready_when(e, True)
    rc, out, err = cli(e, capsys, "app", "upgrade", ids[0][:8], "--package", two[:12],
                       "--ready-timeout", "5")
    assert rc == 0, err
    assert out.strip() == f"{ids[0]}: {two} (2.0)"
    # the others, one at a time; the one already on `two` is left out
    rc, out, err = cli(e, capsys, "app", "upgrade", "--app", "sample-http", "--host",
                       "default", "--package", two)
    assert rc == 0, err
    assert sorted(out.split("\n")[:-1]) == sorted(f"{i}: {two} (2.0)" for i in ids[1:])
    assert err.count("upgrading ") == 2
    # back to `one`, with the second never ready: stops there
    calls = []

    def connect(ip, port):
        calls.append(ip)
        return len(calls) == 1
    e.orch.lcm.upgrader.connect = connect
    rc, out, err = cli(e, capsys, "app", "upgrade", "--app", "sample-http", "--host",
                       "default", "--package", one, "--ready-timeout", "1")
    assert rc == 1
    assert "did not get ready" in err and "stopped: 1 of 3 upgraded, 1 not tried" in err
    pkgs = sorted(e.c.get(f"{INST}/{i}")["appPkgId"] for i in ids)
    assert pkgs == sorted([one, two, two])
    rc, _, err = cli(e, capsys, "app", "upgrade", "--package", two)
    assert rc == 2 and "--app APPDID with --host" in err
    rc, _, err = cli(e, capsys, "app", "upgrade", "--app", "sample-http", "--package", two)
    assert rc == 2 and "--app needs --host" in err


# ---------------------------------------------------------------- MEO
def test_meo_refuses_with_501_naming_the_host_level_operation(system):
    s = system
    pkg = meolab.onboard(s)
    iid, op = meolab.deploy(s, pkg["appDId"], deploymentType="CONTAINER")
    assert op["operationState"] == "COMPLETED", op
    err = problem(s.c.post, f"{INST}/{iid}/change_app_pkg", {"appPkgId": pkg["id"]})
    assert err.status == 501
    assert "MEPM of the instance's host" in err.detail and "change_app_pkg" in err.detail
    # the instance has the same id at its host, where the operation is offered
    host = s.c.get(f"{INST}/{iid}")["hostId"]
    assert s.hosts[host].store.get("instances", iid)["instantiationState"] == "INSTANTIATED"
    err = problem(s.c.post, f"{INST}/nope/change_app_pkg", {"appPkgId": pkg["id"]})
    assert err.status == 404


def test_watcher_events_of_a_replaced_runtime_are_not_the_instance_s(env):
    """Docker's events name runtimes: the old runtime's stop, seen during
    the upgrade (kept while it is held) or after it, is not the instance's
    state; the current runtime's death is, under the instance's id."""
    import time
    from mecorch.driverapi.model import Observation
    from mecorch.kernel.states import DeploymentType, ObservedState
    from mecorch.mepm.watch import Watcher
    e = env
    one, two = two_versions(e)
    iid = deploy(e, one)
    ready_when(e, True)
    host = e.orch.inventory.get("default")
    watcher = Watcher(e.orch)
    watcher.start()                 # the fakes stream nothing: only the keeper runs
    try:
        with e.orch.lcm.hold(iid):      # as during the op: kept
            watcher._changed(host, DeploymentType.CONTAINER,
                             Observation(iid, ObservedState.STOPPED, {}, "exit 0", 0))
        assert change(e, iid, appPkgId=two)["operationState"] == "COMPLETED"
        watcher._changed(host, DeploymentType.CONTAINER,
                         Observation(iid, ObservedState.STOPPED, {}, "exit 0", 0))
        time.sleep(0.4)                 # the keeper looked at the kept one
        observed = e.orch.store.get("instances", iid)["_observed"]
        assert observed["state"] == "RUNNING", observed
        e.orch.supervisor.close()       # its restart is not this test's
        watcher._changed(host, DeploymentType.CONTAINER,
                         Observation(f"{iid}.g1", ObservedState.STOPPED, {}, "exit 3", 3))
        observed = e.orch.store.get("instances", iid)["_observed"]
        assert observed["state"] == "STOPPED" and observed["detail"] == "exit 3", observed
    finally:
        watcher.stop()


def test_an_instance_whose_runtime_died_serves_again_from_its_new_version(env):
    """Its rules were out of service ("down": the runtime stopped); the new
    version runs and was found ready, so they are back, to it."""
    e = env
    one, two = two_versions(e)
    iid = deploy(e, one)
    e.cim.crash(iid, 1)
    e.orch.reconciler.run_once()
    assert "down" in e.orch.store.get("rules", iid)["outOfService"]
    assert iid not in e.mep.applied
    ready_when(e, True)
    assert change(e, iid, appPkgId=two)["operationState"] == "COMPLETED"
    assert not e.orch.store.get("rules", iid).get("outOfService")
    assert e.mep.applied[iid][0] == e.cim.instances[f"{iid}.g1"]["ip"]
    assert set(e.cim.instances) == {f"{iid}.g1"}
