"""A fault the backend names as a runtime ends (a container OOM killed, a
VM crashed or paused on a disk error: Observation.fault) reaches the
AppInstanceStateChange subscribers with observedStateDetail saying which,
also when its event was missed and a reconciliation round finds it; a plain
death (a crash without a named fault) is not told, as before. The real
backends' faults: tests/backends/test_usage_docker.py (OOM) and
test_usage_libvirt.py (QEMU killed)."""

from __future__ import annotations

import time

from support.corelab import INST, env, instantiate, onboard  # noqa: F401


def told(e, sink, iid: str, limit_s: float = 5.0) -> list[dict]:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        got = [n for n in sink.got if n.get("appInstanceId") == iid
               and n.get("notificationType") == "STOPPED"]
        if got:
            return got
        time.sleep(0.05)
    return []


def test_a_fault_found_by_a_round_is_told_and_a_plain_death_is_not(  # noqa: F811
        env, notification_sink):
    e = env
    e.orch.subscriptions.start()            # the notification sender
    e.c.post("/app_lcm/v1/subscriptions", {"subscriptionType": "AppInstanceStateChange",
                                           "callbackUri": notification_sink.url})
    onboard(e)
    plain, greedy = (e.c.post(INST, {"appDId": "sample-http"})[0]["id"] for _ in range(2))
    for iid in (plain, greedy):
        assert instantiate(e, iid)["operationState"] == "COMPLETED"
    notification_sink.got.clear()           # the instantiations' own
    e.cim.crash(plain, 1)
    e.cim.crash(greedy, 137, "OOM killed")
    e.orch.reconciler.run_once()
    info = e.c.get(f"{INST}/{greedy}")
    assert info["observedState"] == "STOPPED" and info["observedStateDetail"] == "OOM killed"
    (note,) = told(e, notification_sink, greedy)
    assert note["observedStateDetail"] == "OOM killed" and note["observedState"] == "STOPPED"
    assert e.c.get(f"{INST}/{plain}")["observedState"] == "STOPPED"
    assert told(e, notification_sink, plain, limit_s=1.0) == []
    e.orch.reconciler.run_once()            # seen again: not told twice
    time.sleep(0.5)
    assert len(told(e, notification_sink, greedy)) == 1
