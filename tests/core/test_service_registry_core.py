"""The MEC 011 service registry (mecorch.mepm.services) over the real REST
API and core with in-memory drivers: registration by an app with its own
Mp1 token, discovery with every filter, ownership (403/404), a service's
state following its provider (crash, operator stop, readiness, terminate)
with the availability notifications each change makes, in order, and the
registry kept across a restart. Every body is validated against
MecServiceMgmtApi.yaml. (Real backends, from inside a container and a VM:
tests/e2e/test_service_registry.py.)"""

from __future__ import annotations

import pytest

from mecorch.kernel.client import Client
from mecorch.mepm.orchestrator import Orchestrator
from support.corelab import (  # noqa: F401 (env: a fixture)
    INST, crash, env, onboard, problem, serve, terminate)
from support.corelab import create, instantiate
from support.etsischema import SRV_FILE, validate_etsi

SRV = "/mec_service_mgmt/v1"


def service(name: str = "video-analytics", cat: str = "video", **changes) -> dict:
    body = {"serName": name, "version": "1.0", "state": "ACTIVE", "serializer": "JSON",
            "serCategory": {"href": f"/catalogue/{cat}", "id": cat, "name": cat.upper(),
                            "version": "v1"},
            "transportInfo": {"id": "t1", "name": "REST", "type": "REST_HTTP",
                              "protocol": "HTTP", "version": "1.1",
                              "endpoint": {"addresses": [{"host": "10.0.0.5", "port": 8080}]},
                              "security": {}}}
    body.update(changes)
    return body


def app(env) -> tuple[str, Client]:
    """A new instantiated sample app and a client holding its Mp1 token."""
    iid = create(env)["id"]
    assert instantiate(env, iid)["operationState"] == "COMPLETED"
    token = env.cim.instances[iid]["request"].env["MEC_APP_TOKEN"]
    return iid, Client(env.c.base, token=token)


@pytest.fixture
def two(env):
    onboard(env)
    a, ca = app(env)
    b, cb = app(env)
    return env, (a, ca), (b, cb)


def sent(env) -> list[dict]:
    """Deliver what is queued now; every availability notification sent
    to the sink so far."""
    env.orch.mep.services.notifier.deliver_round()
    return env.sink.got


@pytest.fixture
def watched(two, notification_sink):
    """B subscribed (callback on loopback) to the services named
    video-analytics."""
    env, (a, ca), (b, cb) = two
    env.sink = notification_sink
    sub, headers = cb.post(f"{SRV}/applications/{b}/subscriptions", {
        "subscriptionType": "SerAvailabilityNotificationSubscription",
        "callbackReference": notification_sink.url,
        "filteringCriteria": {"serNames": ["video-analytics"]}})
    validate_etsi(SRV_FILE, "SerAvailabilityNotificationSubscription", sub)
    assert headers["Location"] == sub["_links"]["self"]["href"]
    return two


def changes(env) -> list[tuple[str, str]]:
    out = []
    for n in sent(env):
        validate_etsi(SRV_FILE, "ServiceAvailabilityNotification", n)
        out += [(r["changeType"], r["state"]) for r in n["serviceReferences"]]
    return out


# ---------------------------------------------------------------- registration and discovery
def test_an_app_registers_its_service_and_every_app_discovers_it(two):
    env, (a, ca), (b, cb) = two
    got, headers = ca.post(f"{SRV}/applications/{a}/services", service())
    validate_etsi(SRV_FILE, "ServiceInfo", got)
    sid = got["serInstanceId"]
    assert headers["Location"] == f"{SRV}/applications/{a}/services/{sid}"
    assert got["state"] == "ACTIVE" and got["serName"] == "video-analytics"
    ca.post(f"{SRV}/applications/{a}/services", service("maps", cat="location"))
    # B finds it by name, by category, by id; the operator too
    for query in ("ser_name=video-analytics", "ser_category_id=video",
                  f"ser_instance_id={sid}"):
        found = cb.get(f"{SRV}/services?{query}")
        assert [s["serInstanceId"] for s in found] == [sid], query
        for s in found:
            validate_etsi(SRV_FILE, "ServiceInfo", s)
            assert s["isLocal"] is True         # same host as B
    assert len(env.c.get(f"{SRV}/services")) == 2
    assert "isLocal" not in env.c.get(f"{SRV}/services/{sid}")
    assert cb.get(f"{SRV}/services/{sid}")["serName"] == "video-analytics"
    # several names (form style, exploded), and the other filters
    both = cb.get(f"{SRV}/services?ser_name=video-analytics&ser_name=maps")
    assert len(both) == 2
    assert cb.get(f"{SRV}/services?is_local=false") == []
    assert len(cb.get(f"{SRV}/services?scope_of_locality=MEC_HOST")) == 2
    assert cb.get(f"{SRV}/services?consumed_local_only=true") == []
    transports = cb.get(f"{SRV}/transports")
    for t in transports:
        validate_etsi(SRV_FILE, "TransportInfo", t)


def test_bad_queries_and_bodies_are_400_naming_the_field(two):
    env, (a, ca), (b, cb) = two
    for query, needle in (("ser_name=x&ser_category_id=y", "at most one of"),
                          ("is_local=yes", "is_local"), ("scope_of_locality=CITY",
                                                         "scope_of_locality"),
                          ("sername=x", "sername")):
        e = problem(cb.get, f"{SRV}/services?{query}")
        assert e.status == 400 and needle in e.body["detail"], (query, e.body)
    for body, needle in ((service(state="UP"), "state"),
                         (service(serialiser="JSON"), "serialiser"),
                         (service(transportInfo={"id": "t"}), "transportInfo.name"),
                         (service(serInstanceId="mine"), "assigned by the MEC platform"),
                         (service(serName="x" * 300), "serName"),
                         ({**service(), "version": 1}, "version")):
        e = problem(ca.post, f"{SRV}/applications/{a}/services", body)
        assert e.status == 400 and needle in e.body["detail"], (body, e.body)
        validate_etsi(SRV_FILE, "ProblemDetails", e.body)
    ca.post(f"{SRV}/applications/{a}/services", service())
    e = problem(ca.post, f"{SRV}/applications/{a}/services", service())
    assert e.status == 400 and "PUT" in e.body["detail"]


def test_an_app_touches_only_its_own_services(two):
    env, (a, ca), (b, cb) = two
    theirs = cb.post(f"{SRV}/applications/{b}/services", service("b-svc"))[0]["serInstanceId"]
    path = f"{SRV}/applications/{b}/services/{theirs}"
    for call in (lambda: ca.call("PUT", path, service("b-svc", state="INACTIVE")),
                 lambda: ca.call("DELETE", path),
                 lambda: ca.post(f"{SRV}/applications/{b}/services", service("x")),
                 lambda: ca.get(f"{SRV}/applications/{b}/subscriptions")):
        e = problem(call)
        assert e.status == 403, e.body
    # A's own route with B's service id: not A's, so not found
    assert problem(ca.get, f"{SRV}/applications/{a}/services/{theirs}").status == 404
    # the operator's unknown app id
    assert problem(env.c.get, f"{SRV}/applications/nope/services").status == 404
    assert problem(env.c.post, f"{SRV}/applications/nope/services", service()).status == 404
    assert cb.get(path)["state"] == "ACTIVE"


def test_put_changes_the_service_with_if_match_and_delete_is_idempotent(watched):
    env, (a, ca), (b, cb) = watched
    got = ca.post(f"{SRV}/applications/{a}/services", service())[0]
    path = f"{SRV}/applications/{a}/services/{got['serInstanceId']}"
    _, _, headers = ca.call("GET", path)
    tag = headers["ETag"]
    changed = ca.call("PUT", path, service(version="2.0"), {"If-Match": tag})[1]
    assert changed["version"] == "2.0"
    e = problem(ca.call, "PUT", path, service(version="3.0"), {"If-Match": tag})
    assert e.status == 412
    ca.call("PUT", path, service(version="2.0", state="INACTIVE"))
    assert cb.get(f"{SRV}/services?ser_name=video-analytics")[0]["state"] == "INACTIVE"
    assert ca.call("DELETE", path)[0] == 204
    assert ca.call("DELETE", path)[0] == 204           # already gone: success
    assert problem(ca.get, path).status == 404
    assert cb.get(f"{SRV}/services") == []
    assert changes(env) == [("ADDED", "ACTIVE"), ("ATTRIBUTES_CHANGED", "ACTIVE"),
                            ("STATE_CHANGED", "INACTIVE"), ("REMOVED", "INACTIVE")]


# ---------------------------------------------------------------- the provider's life
def test_the_service_follows_its_provider_down_back_and_gone(watched):
    env, (a, ca), (b, cb) = watched
    sid = ca.post(f"{SRV}/applications/{a}/services", service())[0]["serInstanceId"]

    def state() -> str:
        return cb.get(f"{SRV}/services/{sid}")["state"]
    crash(env, a, 137)                      # policy Never: it stays down
    assert state() == "INACTIVE"
    op, _ = env.c.post(f"{INST}/{a}/operate", {"changeStateTo": "STARTED"})
    assert env.c.wait_op(op, timeout=10)["operationState"] == "COMPLETED"
    assert state() == "ACTIVE"
    op, _ = env.c.post(f"{INST}/{a}/operate", {"changeStateTo": "STOPPED",
                                               "stopType": "FORCEFUL"})
    env.c.wait_op(op, timeout=10)
    assert state() == "INACTIVE"
    # readiness withdraws the provider too (the host engine's own call)
    op, _ = env.c.post(f"{INST}/{a}/operate", {"changeStateTo": "STARTED"})
    env.c.wait_op(op, timeout=10)
    host = env.orch.inventory.get("default")
    with env.orch.lcm.hold(a):
        env.orch.mep.withdraw(host, a, "readiness")
    assert state() == "INACTIVE"
    with env.orch.lcm.hold(a):
        env.orch.mep.restore(host, a, "readiness")
    assert state() == "ACTIVE"
    assert terminate(env, a)["operationState"] == "COMPLETED"
    assert problem(cb.get, f"{SRV}/services/{sid}").status == 404
    assert changes(env) == [("ADDED", "ACTIVE"),
                            ("STATE_CHANGED", "INACTIVE"), ("STATE_CHANGED", "ACTIVE"),
                            ("STATE_CHANGED", "INACTIVE"), ("STATE_CHANGED", "ACTIVE"),
                            ("STATE_CHANGED", "INACTIVE"), ("STATE_CHANGED", "ACTIVE"),
                            # a terminate takes it out of service before it stops
                            ("STATE_CHANGED", "INACTIVE"), ("REMOVED", "INACTIVE")]


def test_filters_of_a_subscription_select_what_is_notified(two, notification_sink):
    env, (a, ca), (b, cb) = two
    env.sink = notification_sink
    cb.post(f"{SRV}/applications/{b}/subscriptions", {
        "subscriptionType": "SerAvailabilityNotificationSubscription",
        "callbackReference": notification_sink.url,
        "filteringCriteria": {"serCategories": [{"href": "/c", "id": "location",
                                                 "name": "L", "version": "1"}],
                              "states": ["INACTIVE"]}})
    ca.post(f"{SRV}/applications/{a}/services", service())         # other category
    maps = ca.post(f"{SRV}/applications/{a}/services",
                   service("maps", cat="location"))[0]["serInstanceId"]
    ca.call("PUT", f"{SRV}/applications/{a}/services/{maps}",
            service("maps", cat="location", state="INACTIVE"))
    got = sent(env)
    assert [(r["serName"], r["changeType"]) for n in got for r in n["serviceReferences"]] \
        == [("maps", "STATE_CHANGED")]


def test_subscriptions_are_the_app_s_own_and_checked(two, notification_sink):
    env, (a, ca), (b, cb) = two
    base = f"{SRV}/applications/{b}/subscriptions"
    for body, needle in (
            ({"subscriptionType": "X", "callbackReference": notification_sink.url}, "X"),
            ({"subscriptionType": "SerAvailabilityNotificationSubscription",
              "callbackReference": "http://192.0.2.1/cb"}, "callbackReference"),
            ({"subscriptionType": "SerAvailabilityNotificationSubscription",
              "callbackReference": notification_sink.url,
              "filteringCriteria": {"serName": ["x"]}}, "serName")):
        e = problem(cb.post, base, body)
        assert e.status == 400, e.body
    sub = cb.post(base, {"subscriptionType": "SerAvailabilityNotificationSubscription",
                         "callbackReference": notification_sink.url})[0]
    listing = cb.get(base)
    validate_etsi(SRV_FILE, "MecServiceMgmtApiSubscriptionLinkList", listing)
    assert [s["href"] for s in listing["_links"]["subscriptions"]] == \
        [sub["_links"]["self"]["href"]]
    assert problem(ca.get, sub["_links"]["self"]["href"]).status == 403
    assert cb.call("DELETE", sub["_links"]["self"]["href"])[0] == 204
    assert problem(cb.get, sub["_links"]["self"]["href"]).status == 404


def test_the_registry_survives_a_restart(two, notification_sink):
    env, (a, ca), (b, cb) = two
    sid = ca.post(f"{SRV}/applications/{a}/services", service())[0]["serInstanceId"]
    sub = cb.post(f"{SRV}/applications/{b}/subscriptions", {
        "subscriptionType": "SerAvailabilityNotificationSubscription",
        "callbackReference": notification_sink.url})[0]
    again = Orchestrator(env.orch.cfg)          # the same store, a second process's view
    server, client = serve(again)
    try:
        assert [s["serInstanceId"] for s in client.get(f"{SRV}/services")] == [sid]
        assert client.get(sub["_links"]["self"]["href"])["callbackReference"] == \
            notification_sink.url
    finally:
        server.shutdown()
        server.server_close()
        again.store.close()


def test_is_local_needs_an_app_s_token(two):
    env, (a, ca), (b, cb) = two
    ca.post(f"{SRV}/applications/{a}/services", service())
    e = problem(env.c.get, f"{SRV}/services?is_local=true")
    assert e.status == 400 and "app's Mp1 token" in e.body["detail"]


def test_a_provider_without_rules_is_followed_too(env):
    """An app whose package declares no traffic or DNS rule still has its
    services follow it."""
    onboard(env, appTrafficRule=[], appDNSRule=[])
    a, ca = app(env)
    sid = ca.post(f"{SRV}/applications/{a}/services", service())[0]["serInstanceId"]
    crash(env, a, 137)
    assert env.c.get(f"{SRV}/services/{sid}")["state"] == "INACTIVE"
    op, _ = env.c.post(f"{INST}/{a}/operate", {"changeStateTo": "STARTED"})
    assert env.c.wait_op(op, timeout=10)["operationState"] == "COMPLETED"
    assert env.c.get(f"{SRV}/services/{sid}")["state"] == "ACTIVE"
