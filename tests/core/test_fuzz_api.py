"""Property-based fuzz of the API from its published OpenAPI document.

Schemathesis (4.x, on Hypothesis) reads mecorch/openapi/mecorch.yaml with
its relative $refs into mecorch/openapi/etsi/ and generates requests for
every operation: schema-conforming ones (positive) and schema-violating
ones (negative), path parameters set half of the time to real ids (a
deployed instance, its rules and subscription, a package, an op
occurrence, an idle instance to instantiate) so that bodies reach the code
behind the 404s. The server is the real HTTP API with in-memory drivers on
loopback.

Bounded and deterministic (derandomized, no example database): EXAMPLES per
operation and mode. Asserted: no 5xx, every error answer is ProblemDetails
(application/problem+json whose status is the HTTP status), every success
answer with a JSON content type parses.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from hypothesis import strategies as st
from schemathesis import GenerationMode

from support.apiserve import Served, onboard_via

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "mecorch" / "openapi" / "mecorch.yaml"
EXAMPLES = 25          # per operation and generation mode (~15 s on an idle 2-core host)
# PUT .../package_content takes application/zip, PUT .../data application/x-tar:
# generated bodies sent as bytes
schemathesis.serializer.alias("application/zip", "application/octet-stream")
schemathesis.serializer.alias("application/x-tar", "application/octet-stream")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    s = Served(tmp)
    onboard_via(s, tmp)
    a, _ = s.deployed_instance()
    pkg = s("GET", PKGS)[1][0]
    st_, sub, _ = s("POST", f"{MP1}/{a}/subscriptions", {
        "subscriptionType": "AppTerminationNotificationSubscription",
        "callbackReference": "http://127.0.0.1:9/cb"})
    assert st_ == 201
    ids = {"appInstanceId": a, "appPkgId": pkg["id"], "appDId": pkg["appDId"],
           "trafficRuleId": "sample-http-vip", "dnsRuleId": "sample-http-dns",
           "subscriptionId": sub["_links"]["self"]["href"].rsplit("/", 1)[1],
           "appLcmOpOccId": s("GET", "/app_lcm/v1/app_lcm_op_occs")[1][0]["id"],
           "name": "MecAppSupportApi.yaml"}
    # the northbound subscriptions' own ids, for their {subscriptionId}
    for path, body in (("/app_pkgm/v1/subscriptions", {
            "subsctiptionType": "AppPackageOnBoarding", "callbackUri": "http://127.0.0.1:9/cb"}),
            ("/app_lcm/v1/subscriptions", {"subscriptionType": "AppLcmOpOccStateChange",
                                           "callbackUri": "http://127.0.0.1:9/cb"})):
        st_, sub, _ = s("POST", path, body)
        assert st_ == 201, sub
        ids[path + "/{subscriptionId}"] = sub["id"]
    # a service of the app and its service-availability subscription
    srv = f"/mec_service_mgmt/v1/applications/{a}"
    st_, svc, _ = s("POST", f"{srv}/services", {
        "serName": "fuzzed", "version": "1", "state": "ACTIVE", "serializer": "JSON",
        "transportInfo": {"id": "t", "name": "REST", "type": "REST_HTTP", "protocol": "HTTP",
                          "version": "1.1", "endpoint": {"uris": []}, "security": {}}})
    assert st_ == 201, svc
    ids["serviceId"] = svc["serInstanceId"]
    st_, sub, _ = s("POST", f"{srv}/subscriptions", {
        "subscriptionType": "SerAvailabilityNotificationSubscription",
        "callbackReference": "http://127.0.0.1:9/cb"})
    assert st_ == 201, sub
    ids["/mec_service_mgmt/v1/applications/{appInstanceId}/subscriptions/{subscriptionId}"] = \
        sub["_links"]["self"]["href"].rsplit("/", 1)[1]
    yield s, ids
    s.close()


PKGS = "/app_pkgm/v1/app_packages"
MP1 = "/mec_app_support/v1/applications"


def _check(resp, case) -> None:
    what = (case.method, case.formatted_path, resp.status_code, resp.content[:300],
            str(case.body)[:300] if case.body is not None else None)
    assert resp.status_code < 500, what
    # schemathesis gives headers as {name: [values]}; names as sent
    ctype = next((v[0] if isinstance(v, list) else v for k, v in resp.headers.items()
                  if k.lower() == "content-type"), "")
    if resp.status_code >= 400:
        assert ctype == "application/problem+json", what
        problem = resp.json()
        assert problem["status"] == resp.status_code and problem["title"] \
            and problem["detail"], what
    elif "json" in ctype and resp.content:
        json.loads(resp.content)


def test_fuzz_every_operation_from_the_openapi_document(world):
    s, ids = world
    schema = schemathesis.openapi.from_path(str(DOC))
    counts: dict[str, int] = {}
    unsatisfiable: list[str] = []
    started = time.monotonic()
    operations = [r.ok() for r in schema.get_all_operations()]
    paths = yaml.safe_load(DOC.read_text())["paths"]
    assert len(operations) == sum(1 for item in paths.values() for m in item
                                  if m in ("get", "put", "post", "patch", "delete"))
    # Disabling or deleting the package (real ids) last: the rest needs it.
    operations.sort(key=lambda op: op.method.upper() in ("PATCH", "DELETE")
                    and op.path.startswith(PKGS))
    for op in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            label = f"{op.method.upper()} {op.path} {mode.value}"
            counts[label] = 0

            @given(case=op.as_strategy(generation_mode=mode), real=st.booleans())
            @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                      suppress_health_check=list(HealthCheck),
                      phases=[Phase.explicit, Phase.generate])
            def run(case, real):
                if real and case.path_parameters:
                    for name in case.path_parameters:
                        if name in ids:
                            case.path_parameters[name] = ids.get(op.path, ids[name])
                    if op.path.endswith("/instantiate"):
                        # an instance that can be instantiated
                        status, inst, _ = s("POST", "/app_lcm/v1/app_instances",
                                            {"appDId": "sample-http"})
                        assert status == 201, inst
                        case.path_parameters["appInstanceId"] = inst["id"]
                resp = case.call(base_url=s.base, timeout=30)
                counts[label] += 1
                _check(resp, case)

            try:
                run()
            except Unsatisfiable:
                # nothing of this operation can be made invalid (no
                # parameter, no body): negative mode has no case
                assert mode is GenerationMode.NEGATIVE, label
                unsatisfiable.append(label)
    took = time.monotonic() - started
    total = sum(counts.values())
    print(f"\nfuzz: {len(operations)} operations, {total} requests in {took:.1f}s "
          f"({EXAMPLES} examples per operation and mode, positive and negative; no "
          f"negative case exists for the {len(unsatisfiable)} without a body or a "
          f"constrained parameter)")
    # Only operations with nothing but free-text parameters have no invalid
    # request; every one with a body was fuzzed with invalid ones too.
    with_body = {f"{m.upper()} {p}" for p, item in paths.items() for m, o in item.items()
                 if isinstance(o, dict) and "requestBody" in o}
    assert len(with_body) >= 14      # the package upload and the two subscription POSTs too
    assert not {u.removesuffix(" negative") for u in unsatisfiable} & with_body
    assert total > len(operations) * EXAMPLES
