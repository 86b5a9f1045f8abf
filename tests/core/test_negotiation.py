"""Content negotiation and request checks as the ETSI files have them: an
Accept that excludes what a resource answers is a 406 (before anything is
done), a query parameter a resource does not take is a 400 naming it, and a
`filter` must name attributes the resource has. Real HTTP server, in-memory
drivers."""

from __future__ import annotations

import http.client
import json

import pytest

from mecorch.kernel.http import acceptable
from support.corelab import INST, PKGS
from support.uploadlab import Lab, zip_package

OPS = "/app_lcm/v1/app_lcm_op_occs"


@pytest.fixture
def lab(tmp_path):
    lab = Lab(tmp_path)
    zpath = tmp_path / "p.zip"
    data, body = zip_package(lab)
    zpath.write_bytes(data)
    lab.pkg = lab.c.upload_package(body, zpath)
    lab.zip = data
    yield lab
    lab.stop()


def call(lab, method, path, headers=None, body=None):
    conn = http.client.HTTPConnection("127.0.0.1", lab.port, timeout=10)
    data = json.dumps(body).encode() if body is not None else None
    hdrs = {**({"Content-Type": "application/json"} if data else {}), **(headers or {})}
    conn.request(method, path, body=data, headers=hdrs)
    resp = conn.getresponse()
    raw = resp.read()
    conn.close()
    ctype = resp.headers.get("Content-Type", "")
    return resp.status, (json.loads(raw) if "json" in ctype and raw else raw), ctype


@pytest.mark.parametrize("accept, media, ok", [
    ("application/json", "application/json", True),
    ("*/*", "application/json", True),
    ("application/*", "application/json", True),
    ("text/html, application/json;q=0.5", "application/json", True),
    ("text/html", "application/json", False),
    ("application/json;q=0", "application/json", False),
    ("*/*, application/json;q=0", "application/json", False),    # the specific range decides
    ("application/*;q=0, application/json", "application/json", True),
    ("APPLICATION/JSON", "application/json", True),
    ("application/problem+json", "application/json", False),
    ("application/json", "application/zip", False),
    ("application/zip", "application/zip", True),
    ("garbage", "application/json", True),                       # nothing parses: no preference
    ("text/html;q=abc", "application/json", True),
])
def test_accept_header_matching(accept, media, ok):
    assert acceptable(accept, media) is ok


def test_406_when_accept_excludes_json(lab):
    for path in (PKGS, f"{PKGS}/{lab.pkg['id']}", f"{PKGS}/{lab.pkg['id']}/appd", INST, OPS,
                 "/app_pkgm/v1/subscriptions", "/app_lcm/v1/subscriptions"):
        status, body, ctype = call(lab, "GET", path, {"Accept": "text/html"})
        assert status == 406, (path, body)
        assert ctype == "application/problem+json" and "application/json" in body["detail"]
        assert call(lab, "GET", path, {"Accept": "application/json"})[0] == 200, path
        assert call(lab, "GET", path)[0] == 200, path                  # no Accept: anything


def test_406_comes_before_the_operation(lab):
    """A create refused for its Accept made nothing."""
    status, _, _ = call(lab, "POST", INST, {"Accept": "application/xml"},
                        {"appDId": "sample-http"})
    assert status == 406
    assert lab.c.get(INST) == []
    status, _, _ = call(lab, "POST", "/app_lcm/v1/subscriptions", {"Accept": "text/plain"},
                        {"subscriptionType": "AppLcmOpOccStateChange",
                         "callbackUri": "http://127.0.0.1:9/x"})
    assert status == 406
    assert lab.c.get("/app_lcm/v1/subscriptions")["_links"]["subscriptions"] == []


def test_package_content_is_a_zip(lab):
    url = f"{PKGS}/{lab.pkg['id']}/package_content"
    status, body, ctype = call(lab, "GET", url, {"Accept": "application/zip"})
    assert status == 200 and ctype == "application/zip" and body == lab.zip
    assert call(lab, "GET", url, {"Accept": "application/json"})[0] == 406
    assert call(lab, "GET", url, {"Accept": "*/*"})[0] == 200


@pytest.mark.parametrize("path, name", [
    (PKGS + "?bogus=1", "bogus"),
    (PKGS + "?fields=appName", "fields"),                   # ETSI's, not supported: named
    (PKGS + "?exclude_default", "exclude_default"),        # blank values count too
    (INST + "?filter=(eq,appDId,x)&nope=2", "nope"),
    (OPS + "?exclude_fields=x", "exclude_fields"),
    ("/app_lcm/v1/subscriptions?type=x", "type"),
    ("/app_pkgm/v1/subscriptions?subscriptionType=x", "subscriptionType"),
])
def test_unknown_query_parameters_are_named(lab, path, name):
    status, body, _ = call(lab, "GET", path)
    assert status == 400 and name in body["detail"], body


def test_known_query_parameters_pass(lab):
    assert call(lab, "GET", PKGS + "?all_fields&filter=(eq,appDId,sample-http)")[0] == 200
    assert call(lab, "GET", INST + "?all_fields=")[0] == 200
    assert call(lab, "GET", "/app_lcm/v1/subscriptions?subscriptionType="
                "AppInstanceStateChange")[0] == 200


@pytest.mark.parametrize("path, attr", [
    (PKGS + "?filter=(eq,nosuch,1)", "nosuch"),
    (PKGS + "?filter=(eq,appDId,sample-http);(eq,softwareImages/color,red)",
     "softwareImages/color"),
    (INST + "?filter=(eq,instantiatedAppState/mood,ok)", "instantiatedAppState/mood"),
    (OPS + "?filter=(eq,operationStatus,FAILED)", "operationStatus"),
])
def test_filter_attributes_must_exist(lab, path, attr):
    status, body, _ = call(lab, "GET", path)
    assert status == 400 and repr(attr) in body["detail"], body


def test_filter_on_real_attributes(lab):
    pkgs = call(lab, "GET", PKGS + "?filter=(eq,softwareImages/name,mecorch/sample-http)")
    assert pkgs[0] == 200 and [p["id"] for p in pkgs[1]] == [lab.pkg["id"]]
    # userDefinedData is open: any key below it may be filtered on
    assert call(lab, "GET", PKGS + "?filter=(eq,userDefinedData/by,oss)")[1] != []
    assert call(lab, "GET", INST + "?filter=(eq,instantiatedAppState/operationalState,"
                "STARTED)")[0] == 200
    assert call(lab, "GET", OPS + "?filter=(eq,stateEnteredTime/seconds,1)")[0] == 200
