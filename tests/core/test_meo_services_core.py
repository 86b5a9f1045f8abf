"""The MEO's read-only view of the MEC 011 services of every edge host
(mecorch.meo.services), over in-process MEPMs on in-memory drivers: each
host's services with the host they run on, the discovery filters, a host
that is away left out and named in a Warning, and nothing to change there
(the apps publish on their own host)."""

from __future__ import annotations

from support.corelab import problem
from support.etsischema import SRV_FILE, validate_etsi
from support.meolab import deploy, onboard, system  # noqa: F401 (system: a fixture)

SRV = "/mec_service_mgmt/v1"


def register(s, iid: str, name: str) -> dict:
    """The app `iid` registers a service on its own host (its MEPM)."""
    host = s.c.get(f"/app_lcm/v1/app_instances/{iid}")["hostId"]
    return s.hosts[host].mep.services.register(iid, {
        "serName": name, "version": "1", "state": "ACTIVE", "serializer": "JSON",
        "serCategory": {"href": "/c", "id": name, "name": name, "version": "1"},
        "transportInfo": {"id": "t", "name": "REST", "type": "REST_HTTP", "protocol": "HTTP",
                          "version": "1.1", "endpoint": {"uris": []}, "security": {}}})


def test_the_meo_lists_the_services_of_every_host(system):
    s = system
    pkg = onboard(s)
    a, op = deploy(s, pkg["appDId"], selectedMECHostInfo=[{"hostId": {"id": "edge1"}}])
    assert op["operationState"] == "COMPLETED", op
    b, op = deploy(s, pkg["appDId"], selectedMECHostInfo=[{"hostId": {"id": "edge2"}}])
    assert op["operationState"] == "COMPLETED", op
    sa, sb = register(s, a, "alpha"), register(s, b, "beta")
    got = s.c.get(f"{SRV}/services")
    assert sorted((x["serName"], x["hostId"]) for x in got) == [("alpha", "edge1"),
                                                                ("beta", "edge2")]
    for x in got:
        validate_etsi(SRV_FILE, "ServiceInfo", x)      # hostId: an extension beside it
    assert [x["serName"] for x in s.c.get(f"{SRV}/services?ser_category_id=beta")] == ["beta"]
    assert s.c.get(f"{SRV}/services/{sa['serInstanceId']}")["hostId"] == "edge1"
    e = problem(s.c.get, f"{SRV}/services?is_local=true")
    assert e.status == 400 and "is_local" in e.body["detail"]
    # edge2 away: its services are left out, and the answer says so
    s.mepms["edge2"].down.set()
    s.meo.registry.beat_all()
    status, body, headers = s.c.call("GET", f"{SRV}/services")
    assert [x["serName"] for x in body] == ["alpha"]
    assert "edge2" in headers["Warning"], headers
    e = problem(s.c.get, f"{SRV}/services/{sb['serInstanceId']}")
    assert e.status == 404 and "edge2" in e.body["detail"]
    s.mepms["edge2"].down.clear()
    s.meo.registry.beat_all()
    assert len(s.c.get(f"{SRV}/services")) == 2
    # read-only: an app's own routes are its host's
    for method in ("GET", "POST"):
        e = problem(s.c.call, method, f"{SRV}/applications/{a}/services",
                    {} if method == "POST" else None)
        assert e.status in (404, 405), e.body
