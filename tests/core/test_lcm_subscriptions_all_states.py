"""An AppInstanceStateChange subscription without appInstanceState matches
all states (ETSI GS MEC 010-2 AppInstSubscriptionRequest: "If this
attribute is absent, match all states"): it is made, shown as asked
(without appInstanceState or notificationType), is not the duplicate of a
one-state subscription (and is of another all-states one), and is notified
of NOT_INSTANTIATED, STARTED and STOPPED through a real HTTP receiver on
loopback, on a single node and on an MEO. An invalid state is still a 400.
Real HTTP server, in-memory drivers."""

from __future__ import annotations

import http.client
import json
import time

import pytest

from mecorch.kernel.client import ApiError
from support.corelab import INST, create, env, instantiate, onboard, terminate
from support.meolab import deploy as meo_deploy
from support.meolab import onboard as meo_onboard
from support.meolab import system

__all__ = ["env", "system"]         # the fixtures, used by name

SUBS = "/app_lcm/v1/subscriptions"


def subscribe(c, url: str, **extra) -> dict:
    return c.post(SUBS, {"subscriptionType": "AppInstanceStateChange", "callbackUri": url,
                         **extra})[0]


def states_of(sink, iid: str, count: int, timeout_s: float = 10.0) -> list[str]:
    """The notificationTypes `sink` received for `iid`, once it has `count`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = [n["notificationType"] for n in list(sink.got) if n.get("appInstanceId") == iid]
        if len(got) >= count:
            return got
        time.sleep(0.05)
    return got


def test_absent_state_is_made_and_shown_as_asked(env):
    sub = subscribe(env.c, "http://127.0.0.1:9/cb")
    assert "appInstanceState" not in sub and "notificationType" not in sub
    assert env.c.get(sub["_links"]["self"]["href"]) == sub
    listed = env.c.get(SUBS)["_links"]["subscriptions"]
    assert listed == [{"href": sub["_links"]["self"]["href"],
                       "subscriptionType": "AppInstanceStateChange"}]


def test_all_states_and_one_state_are_different_subscriptions(env):
    every = subscribe(env.c, "http://127.0.0.1:9/cb")
    one = subscribe(env.c, "http://127.0.0.1:9/cb", appInstanceState="STARTED")
    assert one["id"] != every["id"] and one["notificationType"] == "STARTED"
    # the same all-states subscription again: 303 to the first
    host, port = env.c.base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("POST", SUBS, body=json.dumps({"subscriptionType": "AppInstanceStateChange",
                                                "callbackUri": "http://127.0.0.1:9/cb"}),
                 headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    resp.read()
    conn.close()
    assert resp.status == 303 and resp.headers["Location"] == every["_links"]["self"]["href"]


@pytest.mark.parametrize("state", ["RUNNING", "", "started", 1, ["STARTED"], {}])
def test_an_invalid_state_is_still_refused(env, state):
    with pytest.raises(ApiError) as e:
        subscribe(env.c, "http://127.0.0.1:9/cb", appInstanceState=state)
    assert e.value.status == 400 and "appInstanceState" in e.value.body["detail"]
    assert env.c.get(SUBS)["_links"]["subscriptions"] == []


def test_all_states_are_notified(env, notification_sink):
    env.orch.subscriptions.start()          # the notification sender
    every = subscribe(env.c, notification_sink.url)
    stopped_only = subscribe(env.c, notification_sink.url, appInstanceState="STOPPED")
    pkg = onboard(env)
    iid = create(env, pkg["appDId"])["id"]
    assert instantiate(env, iid)["operationState"] == "COMPLETED"
    op, _ = env.c.post(f"{INST}/{iid}/operate", {"changeStateTo": "STOPPED",
                                                  "stopType": "FORCEFUL"})
    assert env.c.wait_op(op, timeout=10)["operationState"] == "COMPLETED"
    assert terminate(env, iid)["operationState"] == "COMPLETED"
    got = states_of(notification_sink, iid, 4)
    by_sub = {}
    for n in notification_sink.got:
        by_sub.setdefault(n["subscriptionId"], []).append(n["notificationType"])
    assert by_sub[every["id"]] == ["STARTED", "STOPPED", "NOT_INSTANTIATED"], got
    assert by_sub[stopped_only["id"]] == ["STOPPED"], got


def test_all_states_are_notified_by_an_meo(system, notification_sink):
    s = system
    s.meo.subscriptions.start()
    every = subscribe(s.c, notification_sink.url)
    pkg = meo_onboard(s)
    iid, op = meo_deploy(s, pkg["appDId"], deploymentType="CONTAINER")
    assert op["operationState"] == "COMPLETED"
    op, _ = s.c.post(f"{INST}/{iid}/operate", {"changeStateTo": "STOPPED",
                                                "stopType": "FORCEFUL"})
    assert s.c.wait_op(op, timeout=20)["operationState"] == "COMPLETED"
    op, _ = s.c.post(f"{INST}/{iid}/terminate", {"terminationType": "FORCEFUL"})
    assert s.c.wait_op(op, timeout=20)["operationState"] == "COMPLETED"
    got = states_of(notification_sink, iid, 3)
    assert got == ["STARTED", "STOPPED", "NOT_INSTANTIATED"]
    assert {n["subscriptionId"] for n in notification_sink.got} == {every["id"]}
