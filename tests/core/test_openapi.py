"""mecorch's published OpenAPI document and the official ETSI schemas.

- mecorch/openapi/mecorch.yaml is valid OpenAPI, every `$ref` in it
  resolves, and its paths are exactly the routes the server answers;
- the vendored ETSI files are byte-identical to ../shared/etsi-mec;
- every response of a tour of the whole API (real HTTP server, in-memory
  drivers from tests/support/fakes.py) validates against BOTH the ETSI schema of
  that operation, loaded straight from the ETSI file, AND the response
  schema mecorch.yaml documents for that status and content type (so the
  document's extensions are checked against the code too), with every
  status code, content type and header it shows documented.

Known, explained departures from the ETSI files are listed in mecorch.yaml's
info.description; the only substitution made here is the AppD's NFV
placeholders ("Ref NFV", typed string by ETSI), replaced by the NFV-IFA 011
structures the document publishes.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import re
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jsonschema
import pytest
import yaml
from openapi_spec_validator import validate as validate_openapi
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from support.fakes import broken
from mecorch.api import make_router, make_server
from mecorch.package import NFV_SCHEMAS
from support.corelab import (CONTAINER_APPD, INST, PKGS, POD, TOSCA, VM_APPD,
                                     fake_docker_tar, make_package)
from support.corelab import env  # noqa: F401 - the fixture (real API, fake drivers)
from support.etsischema import (  # noqa: F401
    DOC_PATH, ETSI, LCM_FILE, MP1_FILE, OPENAPI, PKGM_FILE, REPO, SRV_FILE, doc, errors_of,
    etsi_components, etsi_validator)

# the official ETSI files, as the project was given them: MEC 010-2 and
# MEC 011's app support in one folder, MEC 011's service management (and
# its licence again, the same text) in another
SHARED = REPO.parent / "shared" / "etsi-mec"
SHARED_SRV = REPO.parent / "shared" / "etsi-mec-service-mgmt"
ETSI_FILES = [LCM_FILE, PKGM_FILE, MP1_FILE, SRV_FILE, "LICENSE-MEC010-2", "LICENSE-MEC011"]
MP1 = "/mec_app_support/v1/applications"
SRV = "/mec_service_mgmt/v1"
METHODS = ("get", "put", "post", "delete", "patch")


@functools.cache
def registry() -> Registry:
    """mecorch.yaml and the ETSI files it refers to, by file URI."""
    def retrieve(uri: str) -> Resource:
        path = Path(urllib.request.url2pathname(uri.removeprefix("file://")))
        assert path.parent == ETSI, f"mecorch.yaml refers outside etsi/: {uri}"
        contents = {"components": etsi_components(path.name)}
        return Resource.from_contents(contents, default_specification=DRAFT202012)
    main = Resource.from_contents(doc(), default_specification=DRAFT202012)
    return Registry(retrieve=retrieve).with_resource(DOC_PATH.as_uri(), main)


def _pointer(*parts: str) -> str:
    return "/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


@functools.cache
def doc_validator(pointer: str) -> jsonschema.protocols.Validator:
    return jsonschema.Draft202012Validator({"$ref": f"{DOC_PATH.as_uri()}#{pointer}"},
                                           registry=registry())


# ---------------------------------------------------------------- the document
def _routes_of_router() -> set[tuple[str, str]]:
    """(METHOD, path with {} for parameters) of every route the server has.
    Router keeps (method, compiled regex, handler); the regex is the pattern
    with {name} turned into a named group and an optional trailing slash."""
    class Unused:               # routes only bind the services' methods
        def __getattr__(self, name):
            return None
    router = make_router(SimpleNamespace(packages=Unused(), lcm=Unused(), mep=Unused()))
    # an MEO (serve --role meo) has no Mp1 but its host registry: the
    # document describes both (x-mecorch-role: meo marks the MEO's own)
    meo = make_router(SimpleNamespace(role="meo", packages=Unused(), lcm=Unused(), mep=None,
                                      registry=Unused()))
    out = set()
    for method, regex, _ in router._routes + meo._routes:
        pattern = re.sub(r"\(\?P<\w+>\[\^/\]\+\)", "{}", regex.pattern)
        assert pattern.endswith("/?"), pattern
        out.add((method, pattern[:-2]))
    return out


def _operations_of_doc() -> set[tuple[str, str]]:
    return {(m.upper(), re.sub(r"\{\w+\}", "{}", path))
            for path, item in doc()["paths"].items() for m in item if m in METHODS}


def test_document_is_valid_openapi():
    d = doc()
    assert d["openapi"].startswith("3.1")
    validate_openapi(d, base_uri=DOC_PATH.as_uri())


@pytest.mark.parametrize("name", ["mecorch.yaml", *(f"etsi/{n}" for n in ETSI_FILES
                                                   if n.endswith(".yaml"))])
def test_filters_read_the_shipped_files_as_the_strict_loader_does(name):
    """filters reads these files with libyaml's safe loader (start-up
    cost); the strict loader mecorch uses for input (duplicate keys refused,
    aliases counted) must read each to the same document."""
    from mecorch.kernel import filters
    from mecorch.kernel.yamlsafe import load_yaml
    assert yaml.__with_libyaml__, "PyYAML without libyaml: filters falls back to SafeLoader"
    strict = load_yaml((OPENAPI / name).read_text(encoding="utf-8"), what=name)
    assert filters._openapi_file(name) == strict


def test_every_ref_resolves():
    """openapi-spec-validator resolves what it walks; this resolves every
    $ref written in the document, into the vendored ETSI files too."""
    refs: list[str] = []

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                refs.append(node["$ref"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
    walk(doc())
    assert len(refs) > 100
    resolver = registry().resolver(base_uri=DOC_PATH.as_uri())
    for ref in set(refs):
        target, _, pointer = ref.partition("#")
        assert target in ("", *(f"etsi/{n}" for n in ETSI_FILES if n.endswith(".yaml"))), ref
        if target:        # a ref into an ETSI file must name its components
            assert pointer.startswith("/components/"), ref
        resolver.lookup(ref)                   # raises if it does not resolve


def test_document_lists_exactly_the_routes_the_server_has():
    routes, ops = _routes_of_router(), _operations_of_doc()
    assert routes - ops == set(), "routes missing from mecorch.yaml"
    assert ops - routes == set(), "operations in mecorch.yaml that no route serves"
    assert len(routes) == len(ops) >= 38     # the sets are equal above; this guards the walk


def test_every_operation_documents_its_errors_as_problem_details():
    for path, item in doc()["paths"].items():
        for method in METHODS:
            op = item.get(method)
            if op is None:
                continue
            assert op.get("operationId") and op.get("responses"), (method, path)
            for status, resp in op["responses"].items():
                if int(status) >= 400:
                    assert resp["$ref"] in ("#/components/responses/PkgmProblem",
                                            "#/components/responses/LcmProblem",
                                            "#/components/responses/Mp1Problem",
                                            "#/components/responses/SrvProblem"), (path, status)
    for name in ("PkgmProblem", "LcmProblem", "Mp1Problem", "SrvProblem"):
        content = doc()["components"]["responses"][name]["content"]
        assert list(content) == ["application/problem+json"]


def test_extensions_say_they_are_mecorch_extensions():
    s = doc()["components"]["schemas"]
    for name in ("AppPkgInfo", "InstantiateAppRequest", "AppInstanceInfo",
                 "AppInstanceLcmOpOcc", "VirtualStorageDescriptor", "TerminateAppRequest",
                 "DualFormatSwImage"):
        base, ext = s[name]["allOf"]
        assert base["$ref"].startswith(("etsi/", "#/components/schemas/Nfv")), name
        for prop, schema in ext["properties"].items():
            assert "mecorch extension" in schema.get("description", ""), (name, prop)
    for name in ("InstantiateAppRequest", "TerminateAppRequest"):
        for prop in ("deploymentType", "deployMethod"):     # every identifier form
            assert s[name]["allOf"][1]["properties"][prop][
                "$ref"] == "#/components/schemas/DeploymentTypeIdentifier"
    assert s["DeploymentType"]["enum"] == ["VM", "CONTAINER"]
    header = doc()["components"]["parameters"]["IdempotencyKey"]
    assert header["in"] == "header" and header["name"] == "Idempotency-Key"


def test_nfv_schemas_are_the_package_checker_s():
    """The document publishes the same NFV structures mecorch.package
    checks AppDs with."""
    s = doc()["components"]["schemas"]
    pairs = {"NfvVirtualComputeDesc": "VirtualComputeDescription",
             "NfvSwImageDesc": "SwImageDescriptor",
             "NfvVirtualStorageDesc": "VirtualStorageDescriptor"}
    for ours, theirs in pairs.items():
        published = {k: v for k, v in s[ours].items() if k != "description"}
        assert published == NFV_SCHEMAS[theirs], ours


def test_vendored_etsi_files_are_verbatim():
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} (the official ETSI files) is not on this machine")
    assert sorted(p.name for p in ETSI.iterdir()) == sorted(ETSI_FILES)
    given = {p.name: p for p in SHARED.iterdir()}
    for p in SHARED_SRV.iterdir() if SHARED_SRV.is_dir() else ():
        assert given.setdefault(p.name, p).read_bytes() == p.read_bytes(), p
    assert sorted(given) == sorted(ETSI_FILES)
    for name in ETSI_FILES:
        assert (ETSI / name).read_bytes() == given[name].read_bytes(), name


@pytest.mark.parametrize("name,schema,body", [
    (LCM_FILE, "AppInstanceInfo", {"id": "x"}),                       # required fields
    (LCM_FILE, "LcmOperation", "INSTANTIATE"),         # the ETSI enum's spelling is INSTATIATE
    (LCM_FILE, "AppInstanceLcmOpOcc", {"id": "x", "operationState": "DONE"}),
    (PKGM_FILE, "AppPkgInfoModifications", {"operationState": "ON"}),
    (PKGM_FILE, "AppD", {"appDId": "a", "virtualComputeDescriptor": "text"}),
    (MP1_FILE, "MecAppSuptApiSubscriptionLinkList",
     {"_links": {"self": {"href": "/x"}, "subscriptions": [{"href": "/y"}]}}),   # no rel
    (MP1_FILE, "DnsRule", {"dnsRuleId": "d", "domainName": "a.b", "ipAddressType": "IPV4",
                           "ipAddress": "10.0.0.1", "state": "ACTIVE"}),
    (MP1_FILE, "AppTerminationNotification", {"notificationType": "AppTerminationNotification",
                                              "operationAction": "TERMINATING"}),
    (SRV_FILE, "ServiceInfo", {"serName": "s", "version": "1", "state": "UP",
                               "serializer": "JSON", "transportInfo": {}}),
    (SRV_FILE, "TransportInfo", {"id": "t", "name": "REST", "type": "REST_HTTP",
                                 "protocol": "HTTP", "version": "1.1", "security": {},
                                 "endpoint": {"uris": ["/a"], "addresses": []}}),   # oneOf
    (SRV_FILE, "ServiceAvailabilityNotification",
     {"notificationType": "x", "serviceReferences": [{"serName": "s", "serInstanceId": "i",
                                                      "state": "ACTIVE",
                                                      "changeType": "MOVED"}],
      "_links": {"subscription": {"href": "/s"}}}),
])
def test_etsi_validation_can_fail(name, schema, body):
    assert errors_of(etsi_validator(name, schema), body)


# ---------------------------------------------------------------- the tour
@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    raw: bytes
    body: Any = None


EXTENSION = ("mecorch", "extension")    # a resource ETSI does not define


@dataclass
class Checker:
    """Calls the API and checks each answer against mecorch.yaml and the
    ETSI schema named by the caller; records which operations it saw."""
    base: str
    seen: set = field(default_factory=set)
    checked: int = 0

    def call(self, method: str, path: str, body: Any = None,
             headers: dict | None = None) -> Answer:
        if isinstance(body, bytes):           # a package zip
            data, hdrs = body, {"Content-Type": "application/zip"}
        else:
            data = json.dumps(body).encode() if body is not None else None
            hdrs = {"Content-Type": "application/json"} if data is not None else {}
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={**hdrs, **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                ans = Answer(resp.status, dict(resp.headers), resp.read())
        except urllib.error.HTTPError as e:
            ans = Answer(e.code, dict(e.headers), e.read())
        if ans.raw and "json" in ans.headers.get("Content-Type", ""):
            ans.body = json.loads(ans.raw)
        return ans

    def __call__(self, method: str, path: str, body: Any = None, headers: dict | None = None,
                 *, status: int, etsi: tuple[str, str] | None = None,
                 many: bool = False) -> Any:
        """Call, expect `status`, check it as documented; validate the body
        against the ETSI schema `etsi` = (file, schema) (each item if
        `many`). Errors are checked as that API's ProblemDetails."""
        ans = self.call(method, path, body, headers)
        assert ans.status == status, (method, path, ans.status, ans.body or ans.raw[:300])
        template = _template(path)
        op = doc()["paths"][template][method.lower()]
        self.seen.add((method, template))
        resp = op["responses"].get(str(status))
        assert resp is not None, f"{method} {template} answered {status}, not documented"
        if status < 300 and body is not None and not isinstance(body, bytes):
            # what was accepted is documented as valid
            errs = errors_of(doc_validator(_pointer(
                "paths", template, method.lower(), "requestBody", "content", "application/json",
                "schema")), body)
            assert errs == [], f"{method} {template}: accepted request vs mecorch.yaml: {errs}"
        ptr = [("paths", template, method.lower(), "responses", str(status))]
        if "$ref" in resp:
            name = resp["$ref"].removeprefix("#/components/responses/")
            resp = doc()["components"]["responses"][name]
            ptr = [("components", "responses", name)]
        for h, spec in resp.get("headers", {}).items():
            if "$ref" in spec:
                spec = doc()["components"]["headers"][spec["$ref"].rsplit("/", 1)[1]]
            if spec.get("required"):
                assert h in ans.headers, f"{method} {template} {status}: no {h} header"
        ctype = ans.headers.get("Content-Type", "").split(";")[0].strip()
        if not ans.raw:
            assert "content" not in resp, f"{method} {template} {status}: documented body missing"
            return None
        assert ctype in resp.get("content", {}), f"{method} {template} {status}: {ctype}"
        if status >= 400:
            etsi = etsi or (_api_file(template), "ProblemDetails")
            assert ctype == "application/problem+json"
            assert ans.body["status"] == status and ans.body["title"] and ans.body["detail"]
        if ans.body is None:
            return ans.raw
        errs = errors_of(doc_validator(_pointer(*ptr[0], "content", ctype, "schema")), ans.body)
        assert errs == [], f"{method} {path} {status} vs mecorch.yaml: {errs}"
        if etsi == EXTENSION:
            return ans.body     # no ETSI schema: mecorch.yaml's own was checked above
        assert etsi is not None, f"{method} {template}: name the ETSI schema to check"
        items = ans.body if many else [ans.body]
        assert isinstance(items, list)
        for item in items:
            errs = errors_of(etsi_validator(*etsi), item)
            assert errs == [], f"{method} {path} {status} vs ETSI {etsi[1]}: {errs}"
            self.checked += 1
        if "Location" in resp.get("headers", {}):
            # MEC 011 v2.1.1's ServiceInfo has no _links: its id names it
            self_href = ans.body["_links"]["self"]["href"] if "_links" in ans.body else \
                f"{path}/{ans.body['serInstanceId']}"
            assert ans.headers["Location"] == self_href
        return ans.body

    def wait(self, op: dict) -> dict:
        href = op["_links"]["self"]["href"]
        for _ in range(200):
            cur = self("GET", href, status=200, etsi=(LCM_FILE, "AppInstanceLcmOpOcc"))
            if cur["operationState"] in ("COMPLETED", "FAILED"):
                return cur
            time.sleep(0.05)
        raise AssertionError(f"operation {href} did not end")


def _template(path: str) -> str:
    path = path.split("?")[0]
    for template in doc()["paths"]:
        if re.fullmatch(re.sub(r"\{\w+\}", "[^/]+", template), path):
            return template
    raise AssertionError(f"{path} matches no path of mecorch.yaml")


def _api_file(template: str) -> str:
    # mecorch's own routes answer the MEC 010-2 ProblemDetails, as app_lcm does
    files = {"/app_pkgm": PKGM_FILE, "/app_lcm/": LCM_FILE, "/mec_app": MP1_FILE,
             "/mec_service_mgmt/": SRV_FILE,
             "/openapi": LCM_FILE, "/mecorch/": LCM_FILE}
    return files[next(p for p in files if template.startswith(p))]


def _onboard_body(e, appd_path) -> tuple[dict, Path]:
    image = fake_docker_tar() if appd_path == CONTAINER_APPD else b"QFI\xfb" + b"\0" * 508
    zpath = make_package(e.tmp, appd_path, image)
    return {"appPkgName": f"pkg-{appd_path.parent.parent.name}", "appPkgVersion": "1.0",
            "appPkgPath": str(zpath), "userDefinedData": {"owner": "test"},
            "checksum": {"algorithm": "SHA-256",
                         "hash": hashlib.sha256(zpath.read_bytes()).hexdigest()}}, zpath


PKG_INFO = (PKGM_FILE, "AppPkgInfo")
INST_INFO = (LCM_FILE, "AppInstanceInfo")
OP_OCC = (LCM_FILE, "AppInstanceLcmOpOcc")
HOST = [{"hostId": {"id": "default"}}]


def test_responses_validate_against_etsi_schemas(env, notification_sink):  # noqa: F811 - the fixture
    api = Checker(env.c.base)
    _packages(api, env)
    vm_inst = _lifecycle(api, env)
    _services(api, env, vm_inst)
    _mp1(api, env, vm_inst, notification_sink)
    _openapi_files(api)
    _subscriptions(api, notification_sink)
    _hosts(api, env)
    _operations(api, env)
    _data(api, env)
    _live(api, env)
    _deletion(api, env)

    # The tour used every operation mecorch.yaml documents.
    assert _operations_of_doc() == {(m, re.sub(r"\{\w+\}", "{}", t)) for m, t in api.seen}
    assert api.checked > 80


def _packages(api: Checker, e) -> None:
    body, zpath = _onboard_body(e, CONTAINER_APPD)
    pkg = api("POST", PKGS, body, status=201, etsi=PKG_INFO)
    assert pkg["deploymentType"] == "CONTAINER" and pkg["deletionPending"] is False
    vm_body, _ = _onboard_body(e, VM_APPD)
    vm_pkg = api("POST", PKGS, vm_body, status=201, etsi=PKG_INFO)
    assert vm_pkg["softwareImages"][0]["diskFormat"] == "QCOW2"
    api("POST", PKGS, vm_body, status=409)                              # appDId taken
    api("POST", PKGS, dict(body, checksum={"algorithm": "SHA-256", "hash": "0" * 64}),
        status=422)
    api("POST", PKGS, dict(body, bogus=1), status=400)
    assert len(api("GET", PKGS, status=200, etsi=PKG_INFO, many=True)) == 2
    assert len(api("GET", PKGS + "?filter=(eq,deploymentType,VM)", status=200, etsi=PKG_INFO,
                   many=True)) == 1
    api("GET", PKGS + "?filter=(bogus)", status=400)
    url = f"{PKGS}/{pkg['id']}"
    api("GET", url, status=200, etsi=PKG_INFO)
    api("GET", f"{PKGS}/nope", status=404)
    for p, app_d_id in ((pkg, "sample-http"), (vm_pkg, "sample-vm")):
        a = api("GET", f"{PKGS}/{p['id']}/appd", status=200, etsi=(PKGM_FILE, "AppD"))
        b = api("GET", f"/app_pkgm/v1/onboarded_app_packages/{app_d_id}/appd", status=200,
                etsi=(PKGM_FILE, "AppD"))
        assert a == b and a["appDId"] == app_d_id
        # the ETSI forms: the AppD file as the package holds it, and a zip of it
        text = api("GET", f"{PKGS}/{p['id']}/appd", headers={"Accept": "text/plain"},
                   status=200)
        assert yaml.safe_load(text) == a
        with zipfile.ZipFile(io.BytesIO(api(
                "GET", f"/app_pkgm/v1/onboarded_app_packages/{app_d_id}/appd",
                headers={"Accept": "application/zip"}, status=200))) as zf:
            assert zf.read("Definitions/appd.yaml") == text
    api("GET", f"{PKGS}/{pkg['id']}/appd", headers={"Accept": "image/png"}, status=406)
    api("GET", "/app_pkgm/v1/onboarded_app_packages/nope/appd", status=404)
    api("GET", "/app_pkgm/v1/onboarded_app_packages/nope/appd",
        headers={"Accept": "text/plain"}, status=404)
    assert api("GET", f"{url}/package_content", status=200) == zpath.read_bytes()
    assert api("GET", "/app_pkgm/v1/onboarded_app_packages/sample-http/package_content",
               status=200) == zpath.read_bytes()
    api("GET", f"{PKGS}/nope/package_content", status=404)
    # two-step onboarding: create without appPkgPath, then PUT the zip
    two = dict(vm_body, appPkgName="two-step")
    two.pop("appPkgPath")
    made = api("POST", PKGS, two, status=201, etsi=PKG_INFO)
    assert made["onboardingState"] == "CREATED"
    assert api("GET", made["_links"]["self"]["href"], status=200, etsi=PKG_INFO) == made
    content = made["_links"]["appPkgContent"]["href"]
    api("GET", content, status=409)
    api("PUT", content, Path(vm_body["appPkgPath"]).read_bytes(), status=409)  # appDId taken
    api("GET", made["_links"]["self"]["href"], status=404)         # refused: nothing kept
    made = api("POST", PKGS, two, status=201, etsi=PKG_INFO)
    content = made["_links"]["appPkgContent"]["href"]
    api("PUT", content, b"{}", {"Content-Type": "application/json"}, status=415)
    api("PUT", content, b"x" * 10, status=422)                      # checksum mismatch
    api("PUT", f"{PKGS}/nope/package_content", b"x", status=404)
    api("GET", "/app_pkgm/v1/onboarded_app_packages/nope/package_content", status=404)
    mods = (PKGM_FILE, "AppPkgInfoModifications")
    api("PATCH", url, {"operationState": "DISABLED"}, status=200, etsi=mods)
    api("POST", INST, {"appDId": "sample-http"}, status=409)           # disabled package
    api("PATCH", url, {"operationState": "ENABLED"}, status=200, etsi=mods)
    api("PATCH", url, {"operationState": "ENABLED"}, status=409)
    api("PATCH", url, {"operationState": "ON"}, status=400)
    api("PATCH", f"{PKGS}/nope", {"operationState": "ENABLED"}, status=404)
    api("DELETE", url, status=409)                                      # still enabled
    api("DELETE", f"{PKGS}/nope", status=404)
    # 405 is not an operation; its body is ProblemDetails all the same.
    ans = api.call("PUT", PKGS, {})
    assert ans.status == 405 and ans.headers["Content-Type"] == "application/problem+json"
    assert errors_of(etsi_validator(PKGM_FILE, "ProblemDetails"), ans.body) == []


def _lifecycle(api: Checker, e) -> str:
    key = {"Idempotency-Key": "tour-1"}
    a = api("POST", INST, {"appDId": "sample-http", "appInstanceName": "tour"}, key,
            status=201, etsi=INST_INFO)
    again = api("POST", INST, {"appDId": "sample-http", "appInstanceName": "tour"}, key,
                status=201, etsi=INST_INFO)
    assert again["id"] == a["id"] and again["instantiationState"] == "NOT_INSTANTIATED"
    api("POST", INST, {"appDId": "nope"}, status=404)
    api("POST", INST, "not an object", status=400)
    url = f"{INST}/{a['id']}"

    # refusals come before anything is made
    api("POST", f"{url}/instantiate", {"deploymentType": "VM", "orchestrationInfo": POD,
                                       "selectedMECHostInfo": HOST}, status=400)
    api("POST", f"{url}/instantiate", {"selectedMECHostInfo": [{"hostId": {"id": "nope"}}]},
        status=404)
    api("POST", f"{url}/instantiate", {"orchestrationInfo": POD.replace("64Mi", "64Gi"),
                                       "selectedMECHostInfo": HOST}, status=409)
    api("POST", f"{INST}/nope/instantiate", {"selectedMECHostInfo": HOST}, status=404)
    api("POST", f"{url}/terminate", {"terminationType": "FORCEFUL"}, status=409)
    api("POST", f"{url}/operate", {"changeStateTo": "STOPPED"}, status=409)
    # the rolling upgrade (mecorch extension; its 202 is tested in
    # tests/core/test_upgrade.py: CHANGE_APP_PKG is not in the ETSI enum)
    api("POST", f"{url}/change_app_pkg", {"appPkgId": "nope", "readyTimeout": 1}, status=400)
    api("POST", f"{url}/change_app_pkg", {"appPkgId": "nope"}, status=409)

    op = api("POST", f"{url}/instantiate",
             {"deploymentType": "CONTAINER", "orchestrationInfo": POD,
              "selectedMECHostInfo": HOST}, status=202, etsi=OP_OCC)
    assert op["lcmOperation"] == "INSTATIATE" and op["operationParams"] == "INSTANTIATE"
    assert api.wait(op)["operationState"] == "COMPLETED"
    e.orch.usage_reader.read_all()          # its resourceUsage (the fake reads none)
    info = api("GET", url, status=200, etsi=INST_INFO)
    assert info["deploymentType"] == "CONTAINER" and info["hostId"] == "default"
    assert info["resourceUsage"]["unavailable"].endswith("reads no usage figures")
    assert info["allocatedResources"]["network"][0]["ip"].startswith("10.123.0.")
    api("POST", f"{url}/instantiate", {"selectedMECHostInfo": HOST}, status=409)
    api("POST", f"{url}/change_app_pkg", {"appPkgId": "nope"}, status=404)
    # relocation is an MEO's (tests/core/test_meo_relocate_core.py): one
    # node has no other host
    api("POST", f"{url}/relocate", {"hostId": "default"}, status=409)
    api("POST", f"{INST}/nope/relocate", {}, status=404)
    api("DELETE", url, status=409)                                      # instantiated

    api("POST", f"{url}/operate", {"changeStateTo": "SIDEWAYS"}, status=400)
    op = api("POST", f"{url}/operate", {"changeStateTo": "STOPPED", "stopType": "GRACEFUL",
                                        "gracefulStopTimeout": 1}, status=202, etsi=OP_OCC)
    assert api.wait(op)["operationState"] == "COMPLETED"
    api("POST", f"{url}/operate", {"changeStateTo": "STOPPED"}, status=409)
    op = api("POST", f"{url}/operate", {"changeStateTo": "STARTED"}, status=202, etsi=OP_OCC)
    assert api.wait(op)["operationState"] == "COMPLETED"
    api("POST", f"{INST}/nope/operate", {"changeStateTo": "STARTED"}, status=404)

    vm = api("POST", INST, {"appDId": "sample-vm"}, status=201, etsi=INST_INFO)
    op = api("POST", f"{INST}/{vm['id']}/instantiate",
             {"orchestrationInfo": TOSCA, "selectedMECHostInfo": HOST}, status=202, etsi=OP_OCC)
    assert api.wait(op)["operationState"] == "COMPLETED"
    assert api("GET", f"{INST}/{vm['id']}", status=200, etsi=INST_INFO)["deploymentType"] == "VM"

    # a failed operation carries its reason (the `error` extension)
    bad = api("POST", INST, {"appDId": "sample-http"}, status=201, etsi=INST_INFO)
    e.cim.fail["deploy"] = broken("injected")
    # (no rules: the first instance owns the AppD's service address)
    op = api("POST", f"{INST}/{bad['id']}/instantiate",
             {"selectedMECHostInfo": HOST, "appTrafficRule": [], "appDNSRule": []},
             status=202, etsi=OP_OCC)
    failed = api.wait(op)
    e.cim.fail.clear()
    assert failed["operationState"] == "FAILED" and failed["error"]["status"] == 502
    api("DELETE", f"{INST}/{bad['id']}", status=204)
    api("GET", f"{INST}/{bad['id']}", status=404)
    api("DELETE", f"{INST}/{bad['id']}", status=404)

    assert len(api("GET", INST, status=200, etsi=INST_INFO, many=True)) == 2
    api("GET", INST + "?filter=(eq,deploymentType,VM)", status=200, etsi=INST_INFO, many=True)
    api("GET", INST + "?filter=(nope", status=400)
    ops = api("GET", "/app_lcm/v1/app_lcm_op_occs", status=200, etsi=OP_OCC, many=True)
    assert {o["lcmOperation"] for o in ops} == {"INSTATIATE", "OPERATE"}
    api("GET", "/app_lcm/v1/app_lcm_op_occs?filter=(eq,operationState,FAILED)", status=200,
        etsi=OP_OCC, many=True)
    api("GET", "/app_lcm/v1/app_lcm_op_occs?filter=(x)", status=400)
    api("GET", "/app_lcm/v1/app_lcm_op_occs/nope", status=404)
    api("GET", f"{INST}/nope", status=404)
    api("POST", f"{url}/terminate", {"terminationType": "SOMETIME"}, status=400)
    api("POST", f"{INST}/nope/terminate", {"terminationType": "FORCEFUL"}, status=404)
    return vm["id"]


def _hosts(api: Checker, e) -> None:
    """The host inventory extension: on this node, and in an MEO's registry
    with this node's server as the MEPM that registers."""
    import threading
    from mecorch.kernel import config as mconfig
    from mecorch.meo.orchestrator import MeoOrchestrator
    hosts = api("GET", "/mecorch/v1/hosts", status=200, etsi=EXTENSION)
    assert [h["hostId"] for h in hosts] == ["default"]
    assert set(hosts[0]["capacity"]) == {"CONTAINER", "VM"}
    api("GET", "/mecorch/v1/hosts/default", status=200, etsi=EXTENSION)
    api("GET", "/mecorch/v1/hosts/nope", status=404)
    # the MEO's unfence: refused on a node (no MEO calls it), answered by an
    # MEPM's listener to its MEO (without tokens: every loopback caller)
    api("POST", "/mecorch/v1/hosts/default/unfence", {"appInstanceIds": []}, status=403)
    mepm = make_server(e.orch, "127.0.0.1:0", "mepm")
    threading.Thread(target=mepm.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    try:
        h = Checker(f"http://127.0.0.1:{mepm.server_address[1]}")
        assert h("POST", "/mecorch/v1/hosts/default/unfence", {"appInstanceIds": ["x1"]},
                 status=200, etsi=EXTENSION) == {"unfenced": [], "notFenced": ["x1"],
                                                 "busy": []}
        h("POST", "/mecorch/v1/hosts/default/unfence", {"ids": []}, status=400)
        api.seen |= h.seen
    finally:
        mepm.shutdown()
        mepm.server_close()
    cfg = mconfig.load()
    cfg["state_dir"] = str(e.tmp / "meo")
    cfg["hosts"] = []
    cfg["meo"]["heartbeat_s"] = 0
    meo = MeoOrchestrator(cfg)
    server = make_server(meo, "127.0.0.1:0", "meo")
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    try:
        m = Checker(f"http://127.0.0.1:{server.server_address[1]}")
        got = m("POST", "/mecorch/v1/hosts", {"hostId": "default", "url": api.base}, status=201, etsi=EXTENSION)
        assert got["state"] == "REACHABLE" and got["source"] == "registration"
        assert m("GET", "/mecorch/v1/hosts", status=200, etsi=EXTENSION)[0]["hostId"] == "default"
        m("GET", "/mecorch/v1/hosts/default", status=200, etsi=EXTENSION)
        lease = m("GET", "/mecorch/v1/leader", status=200, etsi=EXTENSION)
        assert lease["leading"] and lease["leader"] == lease["replica"]   # alone: it leads
        m("POST", "/mecorch/v1/hosts", {"hostId": "other", "url": api.base}, status=400)
        m("POST", "/mecorch/v1/hosts", {"hostId": "default", "url": "http://127.0.0.1:9"},
          status=409)
        # a host's op notification (mecorch.meo.follow): with the MEO's token only
        note = {"id": "n", "notificationType": "COMPLETED", "subscriptionId": "s", "timeStamp": {
                    "seconds": 1, "nanoSeconds": 0}, "appLcmOpOccId": "o", "appInstanceId": "i",
                "_links": {"subscription": {"href": "/s"}, "appLcmOpOcc": {"href": "/o"},
                           "appInstance": {"href": "/i"}}}
        bearer = {"Authorization": f"Bearer {meo.lcm.follower.token}"}
        m("POST", "/mecorch/v1/hosts/default/notifications", note, bearer, status=204)
        m("POST", "/mecorch/v1/hosts/default/notifications", note,
          {"Authorization": "Bearer not-the-token"}, status=401)
        # the cordon of a host (no new placement there)
        got = m("POST", "/mecorch/v1/hosts/default/cordon", {"reason": "maintenance"},
                status=200, etsi=EXTENSION)
        assert got["cordoned"]["reason"] == "maintenance"
        m("POST", "/mecorch/v1/hosts/default/cordon", status=200, etsi=EXTENSION)
        m("POST", "/mecorch/v1/hosts/default/cordon", {"reasn": "x"}, status=400)
        m("POST", "/mecorch/v1/hosts/nope/cordon", status=404)
        # a drain of a host that runs nothing the MEO placed: cordoned, nothing to move
        got = m("POST", "/mecorch/v1/hosts/default/drain", status=202, etsi=EXTENSION)
        assert got == {"relocating": [], "cannotMove": []}
        m("POST", "/mecorch/v1/hosts/default/drain", {"reason": 7}, status=400)
        m("POST", "/mecorch/v1/hosts/nope/drain", status=404)
        got = m("POST", "/mecorch/v1/hosts/default/uncordon", status=200, etsi=EXTENSION)
        assert got["cordoned"] is None
        m("POST", "/mecorch/v1/hosts/nope/uncordon", status=404)
        m("DELETE", "/mecorch/v1/hosts/default", status=204)
        m("DELETE", "/mecorch/v1/hosts/default", status=404)
        api.seen |= m.seen
        api.checked += m.checked
    finally:
        server.shutdown()
        server.server_close()
        meo.close()


def _services(api: Checker, e, vm_inst: str) -> None:
    """The MEC 011 service registry: every operation, bodies and the
    notification a subscriber gets checked against MecServiceMgmtApi.yaml."""
    from conftest import NotificationSink
    (inst,) = [i for i in api("GET", INST, status=200, etsi=INST_INFO, many=True)
               if i["id"] != vm_inst]
    app = f"{SRV}/applications/{inst['id']}"
    info_schema, sub_schema = (SRV_FILE, "ServiceInfo"), \
        (SRV_FILE, "SerAvailabilityNotificationSubscription")
    sink = NotificationSink()
    try:
        sub = api("POST", f"{app}/subscriptions", {
            "subscriptionType": "SerAvailabilityNotificationSubscription",
            "callbackReference": sink.url, "filteringCriteria": {"serNames": ["tour"]}},
            status=201, etsi=sub_schema)
        api("POST", f"{app}/subscriptions", {"subscriptionType": "Other",
                                             "callbackReference": sink.url}, status=400)
        api("GET", f"{app}/subscriptions", status=200,
            etsi=(SRV_FILE, "MecServiceMgmtApiSubscriptionLinkList"))
        api("GET", sub["_links"]["self"]["href"], status=200, etsi=sub_schema)
        body = {"serName": "tour", "version": "1", "state": "ACTIVE", "serializer": "JSON",
                "serCategory": {"href": "/c/tour", "id": "tour", "name": "Tour",
                                "version": "1"},
                "transportInfo": {"id": "t", "name": "REST", "type": "REST_HTTP",
                                  "protocol": "HTTP", "version": "1.1", "security": {},
                                  "endpoint": {"uris": ["http://10.0.0.9/api"]}}}
        svc = api("POST", f"{app}/services", body, status=201, etsi=info_schema)
        api("POST", f"{app}/services", {**body, "serName": 7}, status=400)
        api("POST", f"{SRV}/applications/nope/services", body, status=404)
        url = f"{app}/services/{svc['serInstanceId']}"
        tag = api.call("GET", url).headers["ETag"]
        api("GET", url, status=200, etsi=info_schema)
        api("PUT", url, {**body, "version": "2"}, {"If-Match": '"stale"'}, status=412)
        api("PUT", url, {**body, "version": "2"}, {"If-Match": tag}, status=200,
            etsi=info_schema)
        api("PUT", url, {**body, "state": "GONE"}, status=400)
        api("GET", f"{app}/services?ser_name=tour", status=200, etsi=info_schema, many=True)
        api("GET", f"{app}/services?ser_name=a&ser_category_id=b", status=400)
        api("GET", f"{SRV}/applications/nope/services", status=404)
        api("GET", f"{SRV}/services?ser_category_id=tour", status=200, etsi=info_schema,
            many=True)
        api("GET", f"{SRV}/services?is_local=1", status=400)
        api("GET", f"{SRV}/services/{svc['serInstanceId']}", status=200, etsi=info_schema)
        api("GET", f"{SRV}/services/nope", status=404)
        api("GET", f"{SRV}/transports", status=200, etsi=(SRV_FILE, "TransportInfo"),
            many=True)
        api("DELETE", url, status=204)
        api("GET", url, status=404)
        e.orch.mep.services.notifier.deliver_round()
        notes = sink.wait()
        assert [r["changeType"] for n in notes for r in n["serviceReferences"]] == \
            ["ADDED", "ATTRIBUTES_CHANGED", "REMOVED"]
        callback = _pointer("paths", f"{SRV}/applications/{{appInstanceId}}/subscriptions",
                            "post", "callbacks", "ServiceAvailabilityNotification",
                            "{$request.body#/callbackReference}", "post", "requestBody",
                            "content", "application/json", "schema")
        for note in notes:
            assert errors_of(etsi_validator(SRV_FILE, "ServiceAvailabilityNotification"),
                             note) == []
            assert errors_of(doc_validator(callback), note) == []
        api("DELETE", sub["_links"]["self"]["href"], status=204)
        api("GET", sub["_links"]["self"]["href"], status=404)
        api("DELETE", sub["_links"]["self"]["href"], status=404)
    finally:
        sink.close()


def _mp1(api: Checker, e, vm_inst: str, notification_sink) -> None:
    (inst,) = [i for i in api("GET", INST, status=200, etsi=INST_INFO, many=True)
               if i["id"] != vm_inst]
    app = f"{MP1}/{inst['id']}"
    for kind, schema, rule_id, change in (
            ("traffic_rules", "TrafficRule", "sample-http-vip", {"priority": 2}),
            ("dns_rules", "DnsRule", "sample-http-dns", {"state": "INACTIVE"})):
        rules = api("GET", f"{app}/{kind}", status=200, etsi=(MP1_FILE, schema), many=True)
        id_field = "dnsRuleId" if kind == "dns_rules" else "trafficRuleId"
        assert [r[id_field] for r in rules] == [rule_id]
        url = f"{app}/{kind}/{rule_id}"
        ans = api.call("GET", url)
        rule = api("GET", url, status=200, etsi=(MP1_FILE, schema))
        api("PUT", url, {**rule, **change}, {"If-Match": '"stale"'}, status=412)
        new = api("PUT", url, {**rule, **change}, {"If-Match": ans.headers["ETag"]},
                  status=200, etsi=(MP1_FILE, schema))
        assert {k: new[k] for k in change} == change
        api("PUT", url, {**rule, "state": "MAYBE"}, status=400)
        api("GET", f"{app}/{kind}/nope", status=404)
        api("PUT", f"{app}/{kind}/nope", rule, status=404)
        api("GET", f"{MP1}/nope/{kind}", status=404)
    e.mep.fail = broken("iptables said no")             # the backend refuses a change
    rule = api("GET", f"{app}/dns_rules/sample-http-dns", status=200, etsi=(MP1_FILE, "DnsRule"))
    api("PUT", f"{app}/dns_rules/sample-http-dns", {**rule, "state": "ACTIVE"}, status=502)
    e.mep.fail = None
    assert api("GET", f"{app}/dns_rules/sample-http-dns", status=200,
               etsi=(MP1_FILE, "DnsRule")) == rule             # unchanged

    sub_type = "AppTerminationNotificationSubscription"
    sub_req = {"subscriptionType": sub_type, "appInstanceId": inst["id"],
               "callbackReference": notification_sink.url}
    sub_schema = (MP1_FILE, sub_type)
    sub = api("POST", f"{app}/subscriptions", sub_req, status=201, etsi=sub_schema)
    api("POST", f"{app}/subscriptions", dict(sub_req, callbackReference="http://192.0.2.1/"),
        status=400)
    api("POST", f"{MP1}/nope/subscriptions", sub_req, status=404)
    extra = api("POST", f"{app}/subscriptions", sub_req, status=201, etsi=sub_schema)
    links = api("GET", f"{app}/subscriptions", status=200,
                etsi=(MP1_FILE, "MecAppSuptApiSubscriptionLinkList"))
    assert {s["rel"] for s in links["_links"]["subscriptions"]} == {sub_type}
    assert len(links["_links"]["subscriptions"]) == 2
    api("GET", f"{MP1}/nope/subscriptions", status=404)
    api("GET", sub["_links"]["self"]["href"], status=200, etsi=sub_schema)
    api("DELETE", extra["_links"]["self"]["href"], status=204)
    api("GET", extra["_links"]["self"]["href"], status=404)
    api("DELETE", extra["_links"]["self"]["href"], status=404)

    api("POST", f"{app}/confirm_ready", {"indication": "READY"}, status=204)
    timing = "/mec_app_support/v1/timing"
    caps = api("GET", f"{timing}/timing_caps", status=200, etsi=(MP1_FILE, "TimingCaps"))
    now = api("GET", f"{timing}/current_time", status=200, etsi=(MP1_FILE, "CurrentTime"))
    assert 0 <= now["seconds"] - caps["timeStamp"]["seconds"] < 60
    api("GET", f"{timing}/current_time?x=1", status=400)
    api("POST", f"{app}/confirm_ready", {"indication": "SOON"}, status=400)
    api("POST", f"{MP1}/nope/confirm_ready", {"indication": "READY"}, status=404)
    confirm = {"operationAction": "TERMINATING"}
    api("POST", f"{app}/confirm_termination", confirm, status=409)   # nothing to confirm
    api("POST", f"{app}/confirm_termination", {"operationAction": "NOW"}, status=400)
    api("POST", f"{MP1}/nope/confirm_termination", confirm, status=404)

    op = api("POST", f"{INST}/{inst['id']}/terminate",
             {"terminationType": "GRACEFUL", "gracefulTerminationTimeout": 30},
             status=202, etsi=OP_OCC)
    (note,) = notification_sink.wait()
    # the notification a subscriber receives: ETSI, and as documented
    assert errors_of(etsi_validator(MP1_FILE, "AppTerminationNotification"), note) == []
    callback = _pointer("paths", "/mec_app_support/v1/applications/{appInstanceId}"
                        "/subscriptions", "post", "callbacks", "AppTerminationNotification",
                        "{$request.body#/callbackReference}", "post", "requestBody",
                        "content", "application/json", "schema")
    assert errors_of(doc_validator(callback), note) == []
    assert note["_links"]["subscription"]["href"] == sub["_links"]["self"]["href"]
    api("POST", note["_links"]["confirmTermination"]["href"], confirm, status=204)
    assert api.wait(op)["operationState"] == "COMPLETED"
    info = api("GET", f"{INST}/{inst['id']}", status=200, etsi=INST_INFO)
    assert info["instantiationState"] == "NOT_INSTANTIATED" and "allocatedResources" not in info


def _operations(api: Checker, env) -> None:
    """The operator's endpoints (mecorch/api/status.py): on loopback, no token."""
    assert b"mecorch_instances" in api("GET", "/metrics", status=200)
    assert api("GET", "/healthz", status=200, etsi=EXTENSION) == {"status": "alive"}
    assert api("GET", "/readyz", status=200, etsi=EXTENSION)["status"] == "ready"
    assert b"<title>mecorch status</title>" in api("GET", "/status", status=200)
    insts = env.c.get("/app_lcm/v1/app_instances")
    idle = [i for i in insts if i["instantiationState"] == "NOT_INSTANTIATED"]
    assert idle, insts
    logs = f"/app_lcm/v1/app_instances/{idle[0]['id']}/logs"
    api("GET", logs, status=404)                # never deployed: nothing kept
    api("GET", f"{logs}?tail=lots", status=400)


def _openapi_files(api: Checker) -> None:
    assert api("GET", "/openapi.yaml", status=200) == DOC_PATH.read_bytes()
    assert api("GET", "/openapi/mecorch.yaml", status=200) == DOC_PATH.read_bytes()
    for name in ETSI_FILES:
        assert api("GET", f"/openapi/etsi/{name}", status=200) == (ETSI / name).read_bytes()
    for name in ("nope.yaml", "..%2Fmecorch.yaml", "%2E%2E", ".", "__init__.py"):
        api("GET", f"/openapi/etsi/{name}", status=404)


def _subscriptions(api: Checker, sink) -> None:
    """app_pkgm and app_lcm subscriptions (delivery: test_subscriptions)."""
    subs = "/app_pkgm/v1/subscriptions"
    info = (PKGM_FILE, "AppPkgSubscriptionInfo")
    req = {"subsctiptionType": "AppPackageOnBoarding", "callbackUri": sink.url,
           "appPkgFilter": ["(eq,appDId,sample-http)"]}
    sub = api("POST", subs, req, status=201, etsi=info)
    assert sub["subscriptionType"] == "AppPackageOnBoarding"
    api("POST", subs, dict(req, callbackUri="http://192.0.2.1/x"), status=400)
    api("POST", subs, dict(req, subsctiptionType="Nope"), status=400)
    api("POST", subs, dict(req, appPkgFilter=["(eq,nope,1)"]), status=400)
    api("POST", subs, req, {"Accept": "text/html"}, status=406)
    links = api("GET", subs, status=200, etsi=(PKGM_FILE, "AppPkgSubscriptionLinkList"))
    assert links["_links"]["subscriptions"] == [
        {"href": sub["_links"]["self"]["href"], "subsctiptionType": "AppPackageOnBoarding"}]
    api("GET", subs + "?bogus=1", status=400)
    api("GET", sub["_links"]["self"]["href"], status=200, etsi=info)
    api("GET", f"{subs}/nope", status=404)
    api("DELETE", sub["_links"]["self"]["href"], status=204)
    api("DELETE", sub["_links"]["self"]["href"], status=404)

    subs = "/app_lcm/v1/subscriptions"
    inst_req = {"subscriptionType": "AppInstanceStateChange", "callbackUri": sink.url,
                "appInstanceState": "STARTED",
                "appInstanceSubscriptionFilter": {"appInstSelectorType": "APP_D_ID",
                                                  "appInstances": ["sample-http"]}}
    inst_sub = api("POST", subs, inst_req, status=201, etsi=(LCM_FILE, "AppInstSubscriptionInfo"))
    assert inst_sub["notificationType"] == "STARTED"
    op_req = {"subscriptionType": "AppLcmOpOccStateChange", "callbackUri": sink.url,
              "appLcmOpOccSubscriptionFilter": {"operationStates": "FAILED",
                                                "operationTypes": "INSTANTIATE"}}
    op_sub = api("POST", subs + "?subscriptionType=AppLcmOpOccStateChange", op_req,
                 status=201, etsi=(LCM_FILE, "AppLcmOpOccSubscriptionInfo"))
    api("POST", subs + "?subscriptionType=AppInstanceStateChange", op_req, status=400)
    api("POST", subs, dict(inst_req, appInstanceState="GONE"), status=400)
    # without appInstanceState: all states; shown as asked, without
    # notificationType (ETSI's SubscriptionInfo requires one state)
    every_req = {k: v for k, v in inst_req.items() if k != "appInstanceState"}
    every = api("POST", subs, every_req, status=201, etsi=EXTENSION)
    assert "notificationType" not in every and "appInstanceState" not in every
    assert errors_of(etsi_validator(LCM_FILE, "AppInstSubscriptionRequest"), every_req) == []
    api("GET", every["_links"]["self"]["href"], status=200, etsi=EXTENSION)
    api("DELETE", every["_links"]["self"]["href"], status=204)
    api("POST", subs, {"subscriptionType": "Other", "callbackUri": sink.url}, status=400)
    link_list = (LCM_FILE, "SubscriptionLinkList")
    assert len(api("GET", subs, status=200, etsi=link_list)["_links"]["subscriptions"]) == 2
    only = api("GET", subs + "?subscriptionType=AppInstanceStateChange", status=200,
               etsi=link_list)["_links"]["subscriptions"]
    assert only == [{"href": inst_sub["_links"]["self"]["href"],
                     "subscriptionType": "AppInstanceStateChange"}]
    api("GET", subs + "?subscriptionType=Other", status=400)
    url = op_sub["_links"]["self"]["href"]
    api("GET", url, status=200, etsi=(LCM_FILE, "AppLcmOpOccSubscriptionInfo"))
    api("GET", url + "?subscriptionType=AppLcmOpOccStateChange", status=200,
        etsi=(LCM_FILE, "AppLcmOpOccSubscriptionInfo"))
    api("GET", url + "?subscriptionType=AppInstanceStateChange", status=404)
    api("GET", url + "?filter=x", status=400)
    for s in (inst_sub, op_sub):
        api("DELETE", s["_links"]["self"]["href"], status=204)
    api("DELETE", url, status=404)
    assert api("GET", subs, status=200, etsi=link_list)["_links"]["subscriptions"] == []


def _data(api: Checker, e) -> None:
    """A relocation's data (mecorch extension): kept for an instance not
    yet instantiated; refused when it is not a tar, sent as another type,
    or the instance is in the wrong state (its export needs it stopped; the
    in-memory drivers carry no data, tests/conformance covers an export)."""
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w") as t:
        info = tarfile.TarInfo("data")
        info.size = 5
        t.addfile(info, io.BytesIO(b"hello"))
    inst = api("POST", INST, {"appDId": "sample-http"}, status=201, etsi=INST_INFO)
    url = f"/mecorch/v1/app_instances/{inst['id']}/data"
    x_tar = {"Content-Type": "application/x-tar"}
    api("PUT", url, tar.getvalue(), x_tar, status=204)
    api("PUT", url, tar.getvalue(), status=415)                 # sent as application/zip
    api("PUT", url, b"not a tar" * 100, x_tar, status=400)
    api("PUT", "/mecorch/v1/app_instances/nope/data", tar.getvalue(), x_tar, status=404)
    api("GET", url, status=409)                                 # not instantiated
    api("GET", "/mecorch/v1/app_instances/nope/data", status=404)
    api("DELETE", f"{INST}/{inst['id']}", status=204)


def _live(api: Checker, e) -> None:
    """A live relocation's steps (mecorch extension): their refusals (the
    in-memory drivers here are not LiveMovable; tests/conformance/
    test_mepm_live.py covers the steps themselves)."""
    inst = api("POST", INST, {"appDId": "sample-http"}, status=201, etsi=INST_INFO)
    base = f"/mecorch/v1/app_instances/{inst['id']}"
    source = {"driver": {"xml": "<domain/>"}, "mp1TokenDigest": None}
    api("GET", f"{base}/live_source", status=409)               # not instantiated
    api("GET", "/mecorch/v1/app_instances/nope/live_source", status=404)
    api("POST", f"{base}/incoming", {"instantiateAppRequest": {"deploymentType": "CONTAINER"},
                                     "source": source}, status=400)     # not LiveMovable
    api("POST", f"{base}/incoming", {"instantiateAppRequest": {}, "sauce": source},
        status=400)
    api("DELETE", f"{base}/incoming", status=204)               # nothing kept
    api("POST", f"{base}/migrate", {"offer": {"driver": {}}}, status=409)
    api("POST", f"{base}/migrate", {"offer": {"driver": {}, "x": 1}}, status=400)
    api("DELETE", f"{INST}/{inst['id']}", status=204)


def _deletion(api: Checker, e) -> None:
    """204 when nothing uses the package; 202 and deletionPending while an
    instance does."""
    pkgs = {p["appDId"]: p for p in api("GET", PKGS, status=200, etsi=PKG_INFO, many=True)}
    http_url, vm_url = f"{PKGS}/{pkgs['sample-http']['id']}", f"{PKGS}/{pkgs['sample-vm']['id']}"
    mods = (PKGM_FILE, "AppPkgInfoModifications")
    api("PATCH", http_url, {"operationState": "DISABLED"}, status=200, etsi=mods)
    api("DELETE", http_url, status=204)
    api("GET", http_url, status=404)
    api("PATCH", vm_url, {"operationState": "DISABLED"}, status=200, etsi=mods)
    api("DELETE", vm_url, status=202)                       # the VM instance still runs
    assert api("GET", vm_url, status=200, etsi=PKG_INFO)["deletionPending"] is True
    (vm,) = [i for i in api("GET", INST + "?filter=(eq,appDId,sample-vm)", status=200,
                            etsi=INST_INFO, many=True)]
    op = api("POST", f"{INST}/{vm['id']}/terminate", {"terminationType": "FORCEFUL"},
             status=202, etsi=OP_OCC)
    assert api.wait(op)["operationState"] == "COMPLETED"
    api("GET", vm_url, status=404)                          # removed after its last instance
    api("DELETE", f"{INST}/{vm['id']}", status=204)
    for inst in api("GET", INST, status=200, etsi=INST_INFO, many=True):
        api("DELETE", f"{INST}/{inst['id']}", status=204)
    assert api("GET", INST, status=200, etsi=INST_INFO, many=True) == []
    assert e.cim.instances == {} and e.vim.instances == {} and e.mep.applied == {}
    assert e.cim.images == {} and e.vim.images == {}
