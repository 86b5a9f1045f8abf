"""The MEO learns its hosts' instance-state changes from their own MEC
010-2 notifications (mecorch.meo.follow, SystemLcm.refresh_instance): an
MEO over one MEPM served over HTTP on loopback (RemoteMepm; in-memory
drivers), each with its API, the host's notification sender running.

An instance stopped at the host itself (an operate sent to the MEPM, not
through the MEO) shows STOPPED at the MEO within a second or two, though
its resync (meo.sync_s) is a minute away, and the MEO's own subscriber
is told; a subscription a former MEO address left on the host for the
same route is removed when the MEO subscribes, an OSS's is kept."""

from __future__ import annotations

import threading
import time

import pytest

from mecorch.api import make_server
from mecorch.kernel import config
from mecorch.kernel.client import Client
from mecorch.meo.orchestrator import MeoOrchestrator
from mecorch.mepm.remote import RemoteMepm
from support.meolab import deploy, host, onboard, served

INST = "/app_lcm/v1/app_instances"
SUBS = "/app_lcm/v1/subscriptions"
SYNC_S = 60.0


def wait_for(predicate, timeout_s: float, what: str):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        got = predicate()
        if got:
            return got
        time.sleep(0.02)
    raise AssertionError(f"not within {timeout_s} s: {what}")


@pytest.fixture
def followed(tmp_path):
    orch, _ = host(tmp_path, "edge1", vim=False)
    orch.subscriptions.start()              # the host's notification sender
    mepm_server = make_server(orch, "127.0.0.1:0", "mepm")
    threading.Thread(target=mepm_server.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    mepm_url = f"http://127.0.0.1:{mepm_server.server_address[1]}"
    cfg = config.load()
    cfg["state_dir"] = str(tmp_path / "meo")
    cfg["hosts"] = []
    cfg["meo"]["heartbeat_s"] = 0
    cfg["meo"]["sync_s"] = SYNC_S
    meo = MeoOrchestrator(cfg)
    s, meo_server = served(meo, {"edge1": orch}, tmp_path)
    meo.lcm.follower.callback_base = s.c.base
    s.host_api = Client(mepm_url, token="")
    yield s
    for srv in (meo_server, mepm_server):
        srv.shutdown()
        srv.server_close()
    meo.close()
    orch.close()


def host_subscriptions(s) -> list[dict]:
    links = s.host_api.get(SUBS)["_links"]["subscriptions"]
    return [s.host_api.get(link["href"]) for link in links]


def test_a_stop_at_the_host_shows_at_the_meo_long_before_its_resync(followed,
                                                                    notification_sink):
    s = followed
    route = "/mecorch/v1/hosts/edge1/notifications"
    # what a replica that led before (another address) left on the host,
    # and an OSS's subscription there
    former = s.host_api.post(SUBS, {"subscriptionType": "AppInstanceStateChange",
                                    "callbackUri": f"http://127.0.0.2:9{route}"})[0]
    oss = s.host_api.post(SUBS, {"subscriptionType": "AppInstanceStateChange",
                                 "callbackUri": notification_sink.url})[0]
    s.meo.start_background()                # the resync every SYNC_S: not within the test
    s.meo.registry.attach(RemoteMepm("edge1", s.host_api.base))     # subscribes
    mine = {sub["id"]: sub for sub in host_subscriptions(s)}
    assert former["id"] not in mine and oss["id"] in mine
    assert sorted(sub["subscriptionType"] for sub in mine.values()
                  if sub["callbackUri"] == f"{s.c.base}{route}") == [
        "AppInstanceStateChange", "AppLcmOpOccStateChange"]
    # the MEO's own subscriber (an OSS of the MEO)
    meo_sink = type(notification_sink)()
    try:
        s.c.post(SUBS, {"subscriptionType": "AppInstanceStateChange",
                        "appInstanceState": "STOPPED", "callbackUri": meo_sink.url})
        pkg = onboard(s)
        iid, op = deploy(s, pkg["appDId"], deploymentType="CONTAINER")
        assert op["operationState"] == "COMPLETED", op.get("error")
        assert s.c.get(f"{INST}/{iid}")["instantiatedAppState"]["operationalState"] == \
            "STARTED"
        # stopped at the host, not through the MEO
        t0 = time.monotonic()
        host_op = s.host_api.post(f"{INST}/{iid}/operate", {"changeStateTo": "STOPPED",
                                                            "stopType": "FORCEFUL"})[0]
        assert s.host_api.wait_op(host_op, timeout=10)["operationState"] == "COMPLETED"
        wait_for(lambda: s.c.get(f"{INST}/{iid}")["instantiatedAppState"][
            "operationalState"] == "STOPPED", 5, "the MEO's copy STOPPED")
        took = time.monotonic() - t0
        print(f"host-side stop seen at the MEO after {took:.3f} s (resync every {SYNC_S:g} s)")
        assert took < SYNC_S / 10
        told = wait_for(lambda: [n for n in meo_sink.got if n["appInstanceId"] == iid], 5,
                        "the MEO's subscriber told")
        assert [n["notificationType"] for n in told] == ["STOPPED"]
        # started again at the host: the same way back
        host_op = s.host_api.post(f"{INST}/{iid}/operate", {"changeStateTo": "STARTED"})[0]
        assert s.host_api.wait_op(host_op, timeout=10)["operationState"] == "COMPLETED"
        wait_for(lambda: s.c.get(f"{INST}/{iid}")["instantiatedAppState"][
            "operationalState"] == "STARTED", 5, "the MEO's copy STARTED again")
    finally:
        meo_sink.close()
