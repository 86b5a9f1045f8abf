"""No client is sent to a runtime that does not run (mecorch.mepm.mep
`follow_runtime`), over in-memory drivers: an app whose runtime died, that
the operator stopped, or whose restart waits has its rules out of service
(reason "down": its DNS answer and traffic-rule destination gone at the
MEP) and back once it runs again; a reconcile round catches up a change
whose steering was missed. The fakes stream no events: the round reports
each death. (Replicas: tests/core/test_replica_claims.py; real backends:
tests/e2e/test_replicas.py.)"""

from __future__ import annotations


from support.corelab import (  # noqa: F401 (env: a fixture)
    INST, crash, create, env, instantiate, onboard, until)


def deployed(env, **body) -> str:
    onboard(env)                        # the sample's rules: a DNS name, a FORWARD rule
    iid = create(env)["id"]
    assert instantiate(env, iid, **body)["operationState"] == "COMPLETED"
    assert iid in env.mep.applied
    return iid


def out_of_service(env, iid: str) -> list:
    return (env.orch.store.get("rules", iid) or {}).get("outOfService") or []


def operate(env, iid: str, to: str) -> dict:
    op, _ = env.c.post(f"{INST}/{iid}/operate", {"changeStateTo": to, "stopType": "FORCEFUL"})
    return env.c.wait_op(op, timeout=10)



def test_a_dead_runtime_is_out_of_service_until_the_operator_starts_it(env):
    iid = deployed(env)                 # policy Never: nothing restarts it
    crash(env, iid, 137)
    assert iid not in env.mep.applied and out_of_service(env, iid) == ["down"]
    assert operate(env, iid, "STARTED")["operationState"] == "COMPLETED"
    assert iid in env.mep.applied and out_of_service(env, iid) == []


def test_an_operator_stop_takes_it_out_first_and_a_start_puts_it_back(env):
    iid = deployed(env)
    assert operate(env, iid, "STOPPED")["operationState"] == "COMPLETED"
    assert iid not in env.mep.applied and out_of_service(env, iid) == ["down"]
    env.orch.reconciler.run_once()      # a round agrees: nothing is put back
    assert iid not in env.mep.applied
    assert operate(env, iid, "STARTED")["operationState"] == "COMPLETED"
    assert iid in env.mep.applied and out_of_service(env, iid) == []


def test_a_restart_by_the_policy_puts_it_back_once_it_runs(env):
    iid = deployed(env, restartPolicy={"policy": "Always", "backoffInitialS": 0.2,
                                       "backoffMaxS": 0.2, "limit": 3})
    crash(env, iid, 1)
    # while the restart waits: out (observedState STOPPED, "restarting in")
    assert iid not in env.mep.applied and out_of_service(env, iid) == ["down"]
    until(lambda: iid in env.mep.applied, what="back in service after the restart")
    assert out_of_service(env, iid) == []


def test_a_crash_loop_stays_out_of_service(env):
    iid = deployed(env, restartPolicy={"policy": "Always", "backoffInitialS": 0.01,
                                       "backoffMaxS": 0.01, "limit": 1})
    crash(env, iid, 1)
    until(lambda: iid in env.mep.applied, what="the one restart")
    crash(env, iid, 1)
    assert env.c.get(f"{INST}/{iid}")["observedState"] == "CRASH_LOOP"
    assert iid not in env.mep.applied and out_of_service(env, iid) == ["down"]


def test_a_round_catches_up_a_missed_change(env):
    iid = deployed(env)
    crash(env, iid, 137)
    # as if the steering had failed: the rules back while the runtime is dead
    doc = env.orch.store.get("rules", iid)
    doc.pop("outOfService")
    env.orch.store.put("rules", iid, doc)
    env.mep.applied[iid] = ("x", [], [])
    lines = env.orch.reconciler.run_once()
    assert any("rules out of service (its runtime is STOPPED)" in ln for ln in lines), lines
    assert iid not in env.mep.applied and out_of_service(env, iid) == ["down"]


def test_readiness_and_down_are_separate_reasons(env):
    iid = deployed(env)
    host = env.orch.inventory.get("default")
    with env.orch.lcm.hold(iid):
        assert env.orch.mep.withdraw(host, iid, "readiness") is True
    crash(env, iid, 137)
    assert out_of_service(env, iid) == ["down", "readiness"]
    assert operate(env, iid, "STARTED")["operationState"] == "COMPLETED"
    # running again, but its readiness check has not passed: still out
    assert out_of_service(env, iid) == ["readiness"] and iid not in env.mep.applied
    with env.orch.lcm.hold(iid):
        assert env.orch.mep.restore(host, iid, "readiness") is True
    assert iid in env.mep.applied
