"""The MEC 011 service registry (/mec_service_mgmt/v1) for real apps, on
the real backends: a `mecorch serve` of its own (meplab.Lab, the VMs'
network allowed for callbacks) with a container app A
(sample-http) and a VM app V (sample-vm). Every call is made from inside
the apps, through their gateway (where MEC_MP1_URL points), with their own
Mp1 token; every answer is checked against the ETSI schemas of
MecServiceMgmtApi.yaml. What is shown, in this order:

- V subscribes to availability notices of "video-analytics" (callback: the
  VM's own /cgi-bin/notify) and registers a service of its own, before A
  registers "video-analytics" (201, Location, serInstanceId);
- V gets an ADDED notice, and discovers A's service by name, by category,
  by instance id and by its resource; the transports are listed;
- A's token on V's routes (its services, its subscriptions) is a 403, V's
  own service stays as it was; V's service id on A's own route is a 404;
  an unknown app instance id is a 403 for an app (not its own) and a 404
  for the operator;
- A stopped (LCM operate): its service INACTIVE with a STATE_CHANGED
  notice; started again: ACTIVE, STATE_CHANGED;
- the MEPM restarted: A's service still listed under the same id, V's
  subscription still there (and still notified, below);
- A terminated: its service gone (REMOVED notice, 404);
- V deletes its subscription and its service (204 each).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import pytest

from mecorch.kernel.client import ApiError

from support.etsischema import SRV_FILE, errors_of, etsi_validator
from support.meplab import INST, SRV_BASE, Lab, app_mp1, poll, running

pytestmark = [pytest.mark.docker, pytest.mark.libvirt, pytest.mark.mep]

NAME = "video-analytics"
CATEGORY = {"href": "/example/catalogue/video", "id": "video-cat-1", "name": "VideoAnalytics",
            "version": "1.0"}
V_NAME = "vm-echo"
V_CATEGORY = {"href": "/example/catalogue/echo", "id": "echo-cat-1", "name": "Echo",
              "version": "1.0"}
SUBSCRIPTION_TYPE = "SerAvailabilityNotificationSubscription"
# MecServiceMgmtApi.yaml v2.1.1: "Shall be set to SerAvailabilityNotificationSubscription"
# (the GS text of other versions says SerAvailabilityNotification; the file rules)
NOTIFICATION_TYPE = "SerAvailabilityNotificationSubscription"


# -- HTTP answers as the apps see them ------------------------------------------------------

@dataclass
class Answer:
    status: int
    headers: dict
    body: Any
    raw: str


def parse(raw: str) -> Answer:
    """A whole HTTP answer (status line, headers, body) as nc printed it
    (read through a text-mode pipe, its CRLFs may have become LFs)."""
    head, _, body = raw.replace("\r\n", "\n").partition("\n\n")
    lines = head.split("\n")
    assert lines[0].startswith("HTTP/1."), f"no HTTP answer: {raw[:500]!r}"
    headers = {k.strip().lower(): v.strip()
               for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)}
    try:
        data = json.loads(body) if body.strip() else None
    except ValueError:
        raise AssertionError(f"not JSON: {raw[:800]!r}") from None
    return Answer(int(lines[0].split()[1]), headers, data, raw)


def spec(schema: str, body: Any) -> None:
    """`body` is a valid `schema` of MecServiceMgmtApi.yaml."""
    errors = errors_of(etsi_validator(SRV_FILE, schema), body)
    assert errors == [], (schema, errors, body)


def ok(answer: Answer, status: int, schema: str | None = None, *, array: bool = False) -> Any:
    """`answer` has `status` and a body valid against `schema` (each item of
    it with `array`); its body."""
    assert answer.status == status, answer.raw[:1500]
    if schema is not None:
        assert answer.headers.get("content-type", "").startswith("application/json"), answer.raw
        if array:
            assert isinstance(answer.body, list), answer.raw
            for item in answer.body:
                spec(schema, item)
        else:
            spec(schema, answer.body)
    return answer.body


def problem(answer: Answer, status: int) -> dict:
    """A refusal with `status` and a ProblemDetails body (MEC 011 4xx)."""
    assert answer.status == status, answer.raw[:1500]
    assert answer.headers.get("content-type", "").startswith("application/problem+json"), \
        answer.raw
    spec("ProblemDetails", answer.body)
    if "status" in answer.body:
        assert answer.body["status"] == status, answer.body
    return answer.body


# -- the two apps' clients ------------------------------------------------------------------

def from_app(lab: Lab, key: str, method: str, path: str, body: dict | None = None) -> Answer:
    """A call of the service management API from inside container app `key`."""
    return parse(lab.in_app(lab.ids[key], app_mp1(method, path, body, base=SRV_BASE)))


def from_vm(lab: Lab, method: str, path: str, body: dict | None = None) -> Answer:
    """The same from inside the VM app, through its MEC client."""
    return parse(lab.in_vm(f"method={method}&srv={path}", body))


def notices(lab: Lab) -> list[dict]:
    """What the VM's notification receiver got, in order."""
    return [json.loads(line) for line in lab.in_vm("notices").splitlines() if line.strip()]


def notice_of(lab: Lab, story: dict, change: str, state: str | None, after: int = 0) -> dict:
    """The first notice past the first `after` about A's service with
    `change` (and `state`, unless None), waited for; checked against the
    schema, its type and its subscription link."""
    def match(found: list[dict]) -> list[dict]:
        return [n for n in found[after:] for ref in n.get("serviceReferences", [])
                if ref.get("serInstanceId") == story["sid"] and ref.get("changeType") == change
                and state in (None, ref.get("state"))]
    got = poll(lambda: notices(lab), lambda found: match(found) != [], timeout=20)
    assert match(got), (change, state, got)
    n = match(got)[0]
    spec("ServiceAvailabilityNotification", n)
    assert n["notificationType"] == NOTIFICATION_TYPE, n
    assert n["_links"]["subscription"]["href"] == story["sub_href"], n
    ref = next(r for r in n["serviceReferences"] if r["serInstanceId"] == story["sid"])
    assert ref["serName"] == NAME, ref
    return n


def service_info(name: str, category: dict, host: str, port: int) -> dict:
    body = {"serName": name, "serCategory": category, "version": "1.0", "state": "ACTIVE",
            "transportInfo": {"id": f"{name}-rest", "name": "REST", "type": "REST_HTTP",
                              "protocol": "HTTP", "version": "1.1",
                              "endpoint": {"addresses": [{"host": host, "port": port}]},
                              "security": {}},
            "serializer": "JSON"}
    spec("ServiceInfo", body)            # what the test sends is spec-valid, too
    return body


def as_sent(info: dict) -> dict:
    """A ServiceInfo without isLocal, which the platform adds relative to
    the app asking (a registration's own answer need not carry it)."""
    return {k: v for k, v in info.items() if k != "isLocal"}


def a_info(lab: Lab) -> dict:
    """What A registers: its service address, and its locality spelled out
    (this host; consumable from elsewhere). Not isLocal: that is relative to
    the consumer (the platform's to say)."""
    return {**service_info(NAME, CATEGORY, lab.vip["a"], 80), "scopeOfLocality": "MEC_HOST",
            "consumedLocalOnly": False}


def operate(lab: Lab, key: str, to: str) -> None:
    body = {"changeStateTo": to, **({"stopType": "FORCEFUL"} if to == "STOPPED" else {})}
    op = lab.api.post(f"{INST}/{lab.ids[key]}/operate", body)[0]
    assert lab.api.wait_op(op, timeout=120)["operationState"] == "COMPLETED", lab.log()


def by_name(lab: Lab) -> list:
    return ok(from_vm(lab, "GET", f"services?ser_name={NAME}"), 200, "ServiceInfo", array=True)


# -- the lab and the story's start ----------------------------------------------------------

@pytest.fixture(scope="module")
def lab():
    with running("mec011", (("a", "sample-http", "CONTAINER"), ("v", "sample-vm", "VM")),
                 vm_callbacks=True) as lab:
        yield lab


def created(answer: Answer) -> Answer:
    """A 201 with a body (checked against the schema by the tests)."""
    assert answer.status == 201 and isinstance(answer.body, dict), answer.raw
    return answer


@pytest.fixture(scope="module")
def story(lab):
    """V subscribes and registers its own service, then A registers
    "video-analytics": the answers, kept for the tests."""
    a, v, s = lab.ids["a"], lab.ids["v"], {}
    subscription = {"subscriptionType": SUBSCRIPTION_TYPE,
                    "callbackReference": f"http://{lab.vm_ip()}/cgi-bin/notify",
                    "filteringCriteria": {"serNames": [NAME]}}
    s["subscribed"] = created(from_vm(lab, "POST", f"applications/{v}/subscriptions",
                                      subscription))
    s["sub_href"] = s["subscribed"].body["_links"]["self"]["href"]
    s["v_registered"] = created(from_vm(lab, "POST", f"applications/{v}/services",
                                        service_info(V_NAME, V_CATEGORY, lab.vm_ip(), 80)))
    s["v_sid"] = s["v_registered"].body["serInstanceId"]
    s["notices_before"] = notices(lab)
    s["registered"] = created(from_app(lab, "a", "POST", f"applications/{a}/services",
                                       a_info(lab)))
    s["sid"] = s["registered"].body["serInstanceId"]
    return s


# -- registration and subscription ----------------------------------------------------------

def test_vm_subscribed_before_any_service_with_a_callback_on_itself(lab, story):
    v = lab.ids["v"]
    sub = ok(story["subscribed"], 201, "SerAvailabilityNotificationSubscription")
    assert sub["subscriptionType"] == SUBSCRIPTION_TYPE
    assert sub["callbackReference"] == f"http://{lab.vm_ip()}/cgi-bin/notify"
    assert sub["filteringCriteria"]["serNames"] == [NAME]
    href = sub["_links"]["self"]["href"]
    assert story["subscribed"].headers["location"].endswith(href), story["subscribed"].headers
    assert f"/mec_service_mgmt/v1/applications/{v}/subscriptions/" in href
    links = ok(from_vm(lab, "GET", f"applications/{v}/subscriptions"), 200,
               "MecServiceMgmtApiSubscriptionLinkList")
    assert [(x["href"], x["rel"]) for x in links["_links"]["subscriptions"]] == \
        [(href, SUBSCRIPTION_TYPE)], links
    assert story["notices_before"] == [], story["notices_before"]   # V's own: not its filter


def test_container_app_registers_its_service_through_its_gateway(lab, story):
    a = lab.ids["a"]
    env = lab.in_app(a, "echo $MEC_MP1_URL")
    assert env.strip().endswith("/mec_app_support/v1") and "127.0.0.1" not in env, env
    info = ok(story["registered"], 201, "ServiceInfo")
    sid = info["serInstanceId"]
    assert sid and sid != story["v_sid"]
    location = story["registered"].headers.get("location", "")
    assert location.endswith(f"/mec_service_mgmt/v1/applications/{a}/services/{sid}"), location
    sent = a_info(lab)
    assert {k: info[k] for k in sent} == sent, info
    got = ok(from_app(lab, "a", "GET", f"applications/{a}/services/{sid}"), 200, "ServiceInfo")
    assert as_sent(got) == as_sent(info)
    mine = ok(from_app(lab, "a", "GET", f"applications/{a}/services"), 200, "ServiceInfo",
              array=True)
    assert [s["serInstanceId"] for s in mine] == [sid]


def test_vm_gets_an_added_notice(lab, story):
    notice_of(lab, story, "ADDED", "ACTIVE")
    # V's own service is not in its filter (serNames)
    assert not [r for n in notices(lab) for r in n["serviceReferences"]
                if r["serInstanceId"] == story["v_sid"]]


def test_bad_registrations_and_subscriptions_are_refused_naming_the_field(lab, story):
    a, v = lab.ids["a"], lab.ids["v"]
    good = a_info(lab)
    for body, field in (
            ({k: val for k, val in good.items() if k != "serName"}, "serName"),
            ({**good, "state": "SLEEPY"}, "state"),
            ({**good, "serializer": "YAML"}, "serializer"),
            ({**good, "transportInfo": {**good["transportInfo"], "type": "CARRIER_PIGEON"}},
             "type")):
        assert field in problem(from_app(lab, "a", "POST", f"applications/{a}/services", body),
                                400).get("detail", ""), body
    sub = {"subscriptionType": SUBSCRIPTION_TYPE, "callbackReference": "http://192.0.2.1/x"}
    detail = problem(from_vm(lab, "POST", f"applications/{v}/subscriptions", sub), 400)
    assert "callbackReference" in detail.get("detail", ""), detail
    wrong = {**sub, "subscriptionType": "AppTerminationNotificationSubscription",
             "callbackReference": f"http://{lab.vm_ip()}/cgi-bin/notify"}
    detail = problem(from_vm(lab, "POST", f"applications/{v}/subscriptions", wrong), 400)
    assert "subscriptionType" in detail.get("detail", ""), detail
    # nothing of it was kept
    assert [s["serInstanceId"] for s in ok(from_app(lab, "a", "GET", f"applications/{a}/services"),
                                          200, "ServiceInfo", array=True)] == [story["sid"]]
    links = ok(from_vm(lab, "GET", f"applications/{v}/subscriptions"), 200,
               "MecServiceMgmtApiSubscriptionLinkList")
    assert len(links["_links"]["subscriptions"]) == 1, links


# -- discovery ------------------------------------------------------------------------------

def test_vm_discovers_the_service_by_name_category_id_and_resource(lab, story):
    sid, v_sid = story["sid"], story["v_sid"]
    found = by_name(lab)
    assert [s["serInstanceId"] for s in found] == [sid], found
    assert found[0]["transportInfo"]["endpoint"]["addresses"] == [
        {"host": lab.vip["a"], "port": 80}]
    assert found[0].get("isLocal") is True, found        # V and A share the MEC host
    by_cat = ok(from_vm(lab, "GET", f"services?ser_category_id={CATEGORY['id']}"), 200,
                "ServiceInfo", array=True)
    assert [s["serInstanceId"] for s in by_cat] == [sid], by_cat
    by_id = ok(from_vm(lab, "GET", f"services?ser_instance_id={sid}"), 200, "ServiceInfo",
               array=True)
    assert [s["serInstanceId"] for s in by_id] == [sid], by_id
    every = ok(from_vm(lab, "GET", "services"), 200, "ServiceInfo", array=True)
    assert sorted(s["serInstanceId"] for s in every) == sorted([sid, v_sid])
    assert ok(from_vm(lab, "GET", f"services/{sid}"), 200, "ServiceInfo") == found[0]
    assert ok(from_vm(lab, "GET", "services?ser_name=no-such-service"), 200, "ServiceInfo",
              array=True) == []
    both = ok(from_vm(lab, "GET", f"services?ser_name={NAME}&ser_name={V_NAME}"), 200,
              "ServiceInfo", array=True)                 # an array parameter, form-exploded
    assert sorted(s["serInstanceId"] for s in both) == sorted([sid, v_sid])
    for query, want in ((f"ser_name={NAME}&scope_of_locality=MEC_HOST", [sid]),
                        (f"ser_name={NAME}&scope_of_locality=ZONE", []),
                        (f"ser_name={NAME}&consumed_local_only=false", [sid]),
                        (f"ser_name={NAME}&consumed_local_only=true", []),
                        (f"ser_name={NAME}&is_local=true", [sid])):
        got = ok(from_vm(lab, "GET", f"services?{query}"), 200, "ServiceInfo", array=True)
        assert [s["serInstanceId"] for s in got] == want, (query, got)
    # "Either ser_instance_id or ser_name or ser_category_id or none"; a typo is an error
    for query, field in ((f"ser_name={NAME}&ser_category_id={CATEGORY['id']}", "ser_"),
                         ("is_local=maybe", "is_local"),
                         ("scope_of_locality=PLANET", "scope_of_locality"),
                         (f"ser_nmae={NAME}", "ser_nmae")):
        detail = problem(from_vm(lab, "GET", f"services?{query}"), 400)
        assert field in detail.get("detail", ""), (query, detail)
    # and A discovers V's service with its own token
    theirs = ok(from_app(lab, "a", "GET", f"services?ser_name={V_NAME}"), 200, "ServiceInfo",
                array=True)
    assert [s["serInstanceId"] for s in theirs] == [v_sid]
    problem(from_vm(lab, "GET", f"services/{uuid.uuid4()}"), 404)


def test_the_transports_are_listed(lab, story):
    transports = ok(from_vm(lab, "GET", "transports"), 200, "TransportInfo", array=True)
    assert transports, "no transport offered"
    assert all(t["type"] in ("REST_HTTP", "MB_TOPIC_BASED", "MB_ROUTING", "MB_PUBSUB", "RPC",
                             "RPC_STREAMING", "WEBSOCKET") for t in transports)


# -- ownership ------------------------------------------------------------------------------

def test_an_app_cannot_touch_another_apps_services_or_subscriptions(lab, story):
    a, v, v_sid = lab.ids["a"], lab.ids["v"], story["v_sid"]
    before = ok(from_vm(lab, "GET", f"applications/{v}/services/{v_sid}"), 200, "ServiceInfo")
    changed = {**before, "version": "6.6.6", "state": "INACTIVE"}
    for method, path, body in (
            ("PUT", f"applications/{v}/services/{v_sid}", changed),
            ("DELETE", f"applications/{v}/services/{v_sid}", None),
            ("GET", f"applications/{v}/services", None),
            ("POST", f"applications/{v}/services", service_info("evil", V_CATEGORY,
                                                                lab.vip["a"], 80)),
            ("GET", f"applications/{v}/subscriptions", None),
            ("DELETE", story["sub_href"].split("/mec_service_mgmt/v1/", 1)[1], None)):
        problem(from_app(lab, "a", method, path, body), 403)
    after = ok(from_vm(lab, "GET", f"applications/{v}/services/{v_sid}"), 200, "ServiceInfo")
    assert after == before
    # V on A's service: the same
    sid = story["sid"]
    problem(from_vm(lab, "DELETE", f"applications/{a}/services/{sid}"), 403)
    # A's own route with V's service id: not A's, so not found
    problem(from_app(lab, "a", "GET", f"applications/{a}/services/{v_sid}"), 404)
    problem(from_app(lab, "a", "PUT", f"applications/{a}/services/{v_sid}", changed), 404)
    # an app instance id nobody has: for an app's token it is just not its
    # own (403: which ids exist is not told); for the operator, 404
    unknown = str(uuid.uuid4())
    for path in (f"applications/{unknown}/services", f"applications/{unknown}/subscriptions"):
        problem(from_app(lab, "a", "GET", path), 403)
        with pytest.raises(ApiError) as e:
            lab.api.call("GET", f"/mec_service_mgmt/v1/{path}")
        assert e.value.status == 404, e.value.body
        spec("ProblemDetails", e.value.body)
    assert len(by_name(lab)) == 1
    assert ok(from_vm(lab, "GET", f"applications/{v}/services/{v_sid}"), 200,
              "ServiceInfo") == before


def test_an_app_updates_its_own_service(lab, story):
    v, v_sid = lab.ids["v"], story["v_sid"]
    before = ok(from_vm(lab, "GET", f"applications/{v}/services/{v_sid}"), 200, "ServiceInfo")
    got = ok(from_vm(lab, "PUT", f"applications/{v}/services/{v_sid}",
                     {**before, "version": "1.1"}), 200, "ServiceInfo")
    assert as_sent(got) == as_sent({**before, "version": "1.1"})
    assert ok(from_vm(lab, "GET", f"services/{v_sid}"), 200, "ServiceInfo")["version"] == "1.1"


# -- the service follows its provider ---------------------------------------------------------

def test_the_service_follows_its_provider_stopped_and_started(lab, story):
    seen = len(notices(lab))
    operate(lab, "a", "STOPPED")
    notice_of(lab, story, "STATE_CHANGED", "INACTIVE", after=seen)
    assert [s["state"] for s in by_name(lab)] == ["INACTIVE"]
    seen = len(notices(lab))
    operate(lab, "a", "STARTED")
    notice_of(lab, story, "STATE_CHANGED", "ACTIVE", after=seen)
    assert [s["state"] for s in by_name(lab)] == ["ACTIVE"]


def test_the_registry_survives_an_mepm_restart(lab, story):
    v, sid = lab.ids["v"], story["sid"]
    listed = by_name(lab)
    sub = story["subscribed"].body
    pid = lab.serve.pid
    lab.serve.restart()                 # SIGTERM by its pid, started again as the lab does
    assert lab.serve.pid != pid

    def listing() -> Answer | None:     # the gateway listener may still be coming up
        try:
            return from_vm(lab, "GET", f"services?ser_name={NAME}")
        except AssertionError:
            return None
    after = poll(listing, lambda got: got is not None and got.status == 200, timeout=30)
    assert after is not None, lab.log()
    assert ok(after, 200, "ServiceInfo", array=True) == listed
    assert listed[0]["serInstanceId"] == sid
    href_tail = story["sub_href"].split("/mec_service_mgmt/v1/", 1)[1]
    still = ok(from_vm(lab, "GET", href_tail), 200, "SerAvailabilityNotificationSubscription")
    assert still == sub
    links = ok(from_vm(lab, "GET", f"applications/{v}/subscriptions"), 200,
               "MecServiceMgmtApiSubscriptionLinkList")
    assert [x["href"] for x in links["_links"]["subscriptions"]] == [story["sub_href"]]


def test_the_service_goes_with_its_provider_terminated(lab, story):
    seen = len(notices(lab))
    lab.terminate(lab.ids["a"])
    # (the state a REMOVED reference carries is left open by the spec)
    notice_of(lab, story, "REMOVED", None, after=seen)
    assert by_name(lab) == []
    # the whole story, in order, once each: nothing from the restart; the
    # termination may first withdraw the provider (INACTIVE), then REMOVED
    seq = [(r["changeType"], r["state"]) for n in notices(lab) for r in n["serviceReferences"]]
    assert seq[:3] == [("ADDED", "ACTIVE"), ("STATE_CHANGED", "INACTIVE"),
                       ("STATE_CHANGED", "ACTIVE")], seq
    assert seq[-1][0] == "REMOVED" and seq[3:-1] in ([], [("STATE_CHANGED", "INACTIVE")]), seq
    problem(from_vm(lab, "GET", f"services/{story['sid']}"), 404)


def test_an_app_deletes_its_subscription_and_its_service(lab, story):
    v = lab.ids["v"]
    href_tail = story["sub_href"].split("/mec_service_mgmt/v1/", 1)[1]
    gone = from_vm(lab, "DELETE", href_tail)
    assert gone.status == 204, gone.raw
    problem(from_vm(lab, "GET", href_tail), 404)
    gone = from_vm(lab, "DELETE", f"applications/{v}/services/{story['v_sid']}")
    assert gone.status == 204, gone.raw
    assert ok(from_vm(lab, "GET", "services"), 200, "ServiceInfo", array=True) == []
