"""Access control.

(a) The northbound API needs a bearer token when api.token_file is set, and
    mecorch refuses to listen off loopback without one: proven on a real
    `mecorch serve` process (on 127.0.0.2, and on an address inside a
    network namespace this test makes).
(b) An app's Mp1 calls are scoped to its own instance: each instantiation
    issues a per-instance Mp1 token (only its SHA-256 is stored) that the
    app gets in its environment; that token reaches its own instance's Mp1
    resources and nothing else (403), with or without operator tokens.
(c) mecorch never exposes the Docker or libvirt sockets: no route and no
    published path proxies them, and a container gets no bind mount but its
    own volumes (on the real dockerd).
"""

from __future__ import annotations

import ast
import json
import secrets
from pathlib import Path

import pytest
import yaml

from conftest import run
from mecorch.api import load_tokens, make_router
from mecorch.kernel.errors import InvalidInput
from mecorch.mepm.app_access import token_digest
from support.corelab import INST, PKGS
# the real-dockerd fixtures (the CIM on its own network, the sample image)
from support.dockerlab import api, cim, config, leftovers, request, sample  # noqa: F401
from support.apiserve import HOST, REPO, Served, onboard_via, call
from support.lab import Names, Netns, Serve, free_port, wait_for

MP1 = "/mec_app_support/v1/applications"
SRV = "/mec_service_mgmt/v1"


@pytest.fixture
def open_api(tmp_path):
    s = Served(tmp_path)
    onboard_via(s, tmp_path)
    yield s
    s.close()


@pytest.fixture
def guarded_api(tmp_path):
    s = Served(tmp_path, tokens=[secrets.token_urlsafe(24), secrets.token_urlsafe(24)])
    onboard_via(s, tmp_path)
    yield s
    s.close()


# ---------------------------------------------------------------- (b) Mp1 scope
def _mp1_paths(iid: str) -> list[tuple[str, str, dict | None]]:
    """Every Mp1 route of one instance, with a body where it needs one."""
    app = f"{MP1}/{iid}"
    return [("GET", f"{app}/traffic_rules", None),
            ("GET", f"{app}/traffic_rules/sample-http-vip", None),
            ("GET", f"{app}/dns_rules", None),
            ("GET", f"{app}/dns_rules/sample-http-dns", None),
            ("GET", f"{app}/subscriptions", None),
            ("GET", f"{app}/subscriptions/nope", None),
            ("DELETE", f"{app}/subscriptions/nope", None),
            ("POST", f"{app}/confirm_ready", {"indication": "READY"}),
            ("POST", f"{app}/confirm_termination", {"operationAction": "TERMINATING"}),
            ("POST", f"{app}/subscriptions",
             {"subscriptionType": "AppTerminationNotificationSubscription",
              "callbackReference": "http://127.0.0.1:9/x"}),
            ("PUT", f"{app}/dns_rules/sample-http-dns", None),
            ("PUT", f"{app}/traffic_rules/sample-http-vip", None)] + _service_paths(iid)


def _service_paths(iid: str) -> list[tuple[str, str, dict | None]]:
    """Every MEC 011 service-management route of one instance."""
    app = f"{SRV}/applications/{iid}"
    return [("GET", f"{app}/services", None),
            ("POST", f"{app}/services", {
                "serName": f"svc-{iid}", "version": "1", "state": "ACTIVE",
                "serializer": "JSON", "transportInfo": {
                    "id": "t", "name": "REST", "type": "REST_HTTP", "protocol": "HTTP",
                    "version": "1.1", "endpoint": {"uris": []}, "security": {}}}),
            ("GET", f"{app}/services/nope", None),
            ("DELETE", f"{app}/services/nope", None),
            ("GET", f"{app}/subscriptions", None),
            ("POST", f"{app}/subscriptions", {
                "subscriptionType": "SerAvailabilityNotificationSubscription",
                "callbackReference": "http://127.0.0.1:9/x"}),
            ("GET", f"{app}/subscriptions/nope", None),
            ("DELETE", f"{app}/subscriptions/nope", None)]


# what the platform offers every app of the host (any app's token)
SHARED_PATHS = [("GET", "/mec_service_mgmt/v1/services", None),
                ("GET", "/mec_service_mgmt/v1/services/nope", None),
                ("GET", "/mec_service_mgmt/v1/transports", None)]


def _northbound_paths() -> list[tuple[str, str, dict | None]]:
    return [("GET", PKGS, None), ("GET", INST, None), ("GET", "/app_lcm/v1/app_lcm_op_occs", None),
            ("POST", INST, {"appDId": "sample-http"}), ("GET", f"{INST}/nope", None),
            ("GET", "/no/such/path", None)]


def _check_scope(s: Served, a: str, token_a: str, b: str) -> int:
    """token_a reaches a's Mp1 resources (never 401/403) and nothing of b's
    or the northbound APIs (403). Returns the number of calls checked."""
    n = 0
    rule_bodies = {}
    for kind in ("dns_rules/sample-http-dns", "traffic_rules/sample-http-vip"):
        status, rule, _ = s("GET", f"{MP1}/{a}/{kind}", token=token_a)
        assert status == 200, rule
        rule_bodies[kind] = rule
    for method, path, body in _mp1_paths(a) + SHARED_PATHS:
        body = body if body is not None or method != "PUT" else rule_bodies[path.split("/", 5)[5]]
        status, ans, _ = s(method, path, body, token=token_a)
        assert status not in (401, 403), (method, path, status, ans)
        assert status < 500, (method, path, status, ans)
        n += 1
    for method, path, body in _mp1_paths(b) + _northbound_paths():
        if method == "PUT":
            body = rule_bodies[path.split("/", 5)[5]]
        status, ans, _ = s(method, path, body, token=token_a)
        assert status == 403, (method, path, status, ans)
        n += 1
    # The public documents stay public.
    assert s("GET", "/openapi.yaml", token=token_a)[0] == 200
    return n


def test_app_token_reaches_only_its_own_instance_without_operator_tokens(open_api):
    s = open_api
    a, token_a = s.deployed_instance()
    b, token_b = s.deployed_instance()
    assert token_a != token_b and len(token_a) >= 43
    assert _check_scope(s, a, token_a, b) > 20
    _check_scope(s, b, token_b, a)
    # No token (the loopback default) is still the open API; an unknown
    # token is not an app's, so it is treated as no token.
    assert s("GET", f"{MP1}/{b}/dns_rules")[0] == 200
    assert s("GET", INST)[0] == 200
    assert s("GET", f"{MP1}/{b}/dns_rules", token=secrets.token_urlsafe(32))[0] == 200
    # Only the digest is stored: the token is in no file of the state dir.
    inst = s.orch.store.get("instances", a)
    assert inst["_mp1Token"] == token_digest(token_a)
    assert "_mp1Token" not in s("GET", f"{INST}/{a}")[1]
    for path in Path(s.orch.cfg["state_dir"]).rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert token_a.encode() not in data and token_b.encode() not in data, path
    # Termination revokes the token: it is no app's any more.
    status, op, _ = s("POST", f"{INST}/{a}/terminate", {"terminationType": "FORCEFUL"})
    assert s.wait(op)["operationState"] == "COMPLETED"
    assert "_mp1Token" not in s.orch.store.get("instances", a)
    assert s.orch.mep.app_token_owner(token_a) is None
    # A new instantiation issues a new token.
    status, op, _ = s("POST", f"{INST}/{a}/instantiate", {"selectedMECHostInfo": HOST})
    assert s.wait(op)["operationState"] == "COMPLETED"
    token_a2 = s.cim.instances[a]["request"].env["MEC_APP_TOKEN"]
    assert token_a2 != token_a and s.orch.mep.app_token_owner(token_a2) == a


def test_app_and_operator_tokens_when_tokens_are_configured(guarded_api):
    s = guarded_api
    op_token = s.operator
    # Northbound: 401 without a valid operator token, with the challenge.
    for token in (None, "", "x" * 40, op_token + "x", op_token[:-1]):
        status, body, headers = s("GET", INST, token=token)
        assert status == 401 and headers["WWW-Authenticate"] == "Bearer", (token, body)
    status, _, headers = s("GET", PKGS, headers={"Authorization": f"Basic {op_token}"})
    assert status == 401
    # Non-ASCII in the header (http.server reads it as latin-1) is a 401, not a 500.
    status, _, _ = s("GET", INST, token="\u00e9" * 30)
    assert status == 401
    assert s("GET", INST, token=op_token)[0] == 200
    assert s("GET", INST, headers={"Authorization": f"bearer  {op_token}  "})[0] == 200
    # An unknown path does not reveal itself to the unauthenticated.
    assert s("GET", "/no/such/path")[0] == 401
    assert s("GET", "/no/such/path", token=op_token)[0] == 404
    # The documents are public (their `security: [{}]`).
    assert s("GET", "/openapi.yaml")[0] == 200
    assert s("GET", "/openapi/etsi/MecAppSupportApi.yaml")[0] == 200

    a, token_a = s.deployed_instance(op_token)
    b, token_b = s.deployed_instance(op_token)
    assert _check_scope(s, a, token_a, b) > 20
    # Mp1 without a token, or with a wrong one: 401; the operator may call any.
    assert s("GET", f"{MP1}/{a}/dns_rules")[0] == 401
    assert s("GET", f"{MP1}/{a}/dns_rules", token="y" * 43)[0] == 401
    assert s("GET", f"{MP1}/{a}/dns_rules", token=op_token)[0] == 200
    assert s("GET", f"{MP1}/{b}/dns_rules", token=op_token)[0] == 200
    # Discovery too: an app's token or the operator's, nothing else.
    for method, path, body in SHARED_PATHS:
        assert s(method, path, body)[0] == 401, path
        assert s(method, path, body, token="y" * 43)[0] == 401, path
        assert s(method, path, body, token=op_token)[0] in (200, 404), path
    # A terminated instance's token is worth nothing.
    status, op, _ = s("POST", f"{INST}/{b}/terminate", {"terminationType": "FORCEFUL"},
                      token=op_token)
    assert s.wait(op, op_token)["operationState"] == "COMPLETED"
    assert s("GET", f"{MP1}/{b}/dns_rules", token=token_b)[0] == 401


def test_the_app_token_is_not_in_the_journal(open_api):
    s = open_api
    a, token_a = s.deployed_instance()
    ops = s.orch.store.list("op_occs")
    assert ops and all(token_a not in json.dumps(o) for o in ops)
    assert all(token_a not in json.dumps(i) for i in s.orch.store.list("instances"))


def test_an_app_cannot_override_its_token_by_request_env(open_api):
    """The request's own env (from orchestrationInfo) cannot set the Mp1
    variables: mecorch's values win."""
    s = open_api
    pod = (REPO / "examples/orchestration/container-pod.yaml").read_text()
    doc = yaml.safe_load(pod)
    doc["spec"]["containers"][0]["env"] = [{"name": "MEC_APP_TOKEN", "value": "forged"},
                                           {"name": "MEC_APP_INSTANCE_ID", "value": "other"}]
    status, inst, _ = s("POST", INST, {"appDId": "sample-http"})
    status, op, _ = s("POST", f"{INST}/{inst['id']}/instantiate",
                      {"selectedMECHostInfo": HOST, "orchestrationInfo": yaml.safe_dump(doc)})
    assert status == 202, op
    assert s.wait(op)["operationState"] == "COMPLETED"
    env = s.cim.instances[inst["id"]]["request"].env
    assert env["MEC_APP_INSTANCE_ID"] == inst["id"]
    assert s.orch.mep.app_token_owner(env["MEC_APP_TOKEN"]) == inst["id"]
    assert s.orch.mep.app_token_owner("forged") is None


# ---------------------------------------------------------------- (a) tokens, listen
def test_load_tokens_rules(tmp_path):
    cfg = {"api": {"token_file": None}}
    assert load_tokens(cfg, "127.0.0.1") == set()
    assert load_tokens(cfg, "::1") == set()
    for host in ("10.1.2.3", "0.0.0.0", "::"):
        with pytest.raises(InvalidInput, match="needs api.token_file"):
            load_tokens(cfg, host)
    f = tmp_path / "tokens"
    f.write_text("# operators\n" + "a" * 16 + "\n\n  " + "b" * 20 + "  \n")
    cfg["api"]["token_file"] = str(f)
    assert load_tokens(cfg, "10.1.2.3") == {"a" * 16, "b" * 20}
    for text in ("short\n", "# only a comment\n", ""):
        f.write_text(text)
        with pytest.raises(InvalidInput, match="at least 16"):
            load_tokens(cfg, "127.0.0.1")
    cfg["api"]["token_file"] = str(tmp_path / "missing")
    with pytest.raises(InvalidInput, match="cannot read"):
        load_tokens(cfg, "127.0.0.1")


def _serve_config(tmp: Path, token_file: Path | None) -> Path:
    """A config whose one host has no drivers: the server is about access,
    it must touch no backend. (The host id is the lab's own: an id is held
    by one mecorch on the machine, and other tests run one as `default`.)"""
    cfg = {"state_dir": str(tmp / "state"), "run_dir": str(tmp / "run"),
           "hosts": [{"id": Names("acc").host_id}],
           "api": {"token_file": str(token_file) if token_file else None}}
    path = tmp / "mecorch.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_serve_with_tokens_on_127_0_0_2_needs_a_bearer_token(tmp_path):
    token = secrets.token_urlsafe(24)
    (tmp_path / "tokens").write_text(token + "\n")
    port = free_port("127.0.0.2")
    base = f"http://127.0.0.2:{port}"
    serve = Serve(_serve_config(tmp_path, tmp_path / "tokens"), tmp_path,
                  listen=f"127.0.0.2:{port}", timeout_s=20)
    try:
        serve.start()                                           # up: 401 without a token
        status = call(base, "GET", "/openapi.yaml")[0]
        assert status == 200                                    # public document
        for path in (PKGS, INST, "/app_lcm/v1/app_lcm_op_occs", f"{MP1}/x/dns_rules"):
            status, body, headers = call(base, "GET", path)
            assert status == 401 and headers["WWW-Authenticate"] == "Bearer", (path, body)
            assert call(base, "GET", path, token="z" * 32)[0] == 401
        assert call(base, "GET", PKGS, token=token)[0] == 200
        assert call(base, "GET", INST, token=token)[0] == 200
        assert call(base, "GET", f"{MP1}/x/dns_rules", token=token)[0] == 404
    finally:
        serve.stop(15)
    assert serve.proc.returncode is not None


@pytest.fixture
def netns():
    """A network namespace with one address, 10.231.250.1 on a veth pair
    that lives wholly inside it (this kernel has no dummy links): an
    address that is not loopback, reachable only inside the namespace."""
    ns = Netns(f"mecacc-{secrets.token_hex(3)}")
    try:
        ns.exec("ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1")
        ns.exec("ip", "addr", "add", "10.231.250.1/24", "dev", "v0")
        for link in ("v0", "v1"):
            ns.exec("ip", "link", "set", link, "up")
        yield ns.name
    finally:
        ns.close()
    assert ns.name not in run("ip", "netns", "list").stdout


CURL_STATUS = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "5"]


def test_serve_off_loopback_refuses_without_tokens_and_guards_with_them(tmp_path, netns):
    listen = "10.231.250.1:8080"
    inside = ["ip", "netns", "exec", netns]
    # Without tokens: refused, nothing listens.
    refused = Serve(_serve_config(tmp_path, None), tmp_path, name="refused", listen=listen,
                    wrap=inside)
    try:
        refused.start(wait=False)
        assert refused.proc.wait(30) == 2
    finally:
        refused.stop(15)
    log = refused.log_tail(10 ** 6)
    assert "needs api.token_file" in log, log
    assert run(*inside, *CURL_STATUS, f"http://{listen}/openapi.yaml", check=False).stdout \
        == "000"
    # With tokens: it serves, and only with a token. (It answers inside the
    # namespace only: the wait is a curl there.)
    token = secrets.token_urlsafe(24)
    (tmp_path / "tokens").write_text(token + "\n")
    serve = Serve(_serve_config(tmp_path, tmp_path / "tokens"), tmp_path, listen=listen,
                  wrap=inside)
    try:
        serve.start(wait=False)

        def up() -> bool:
            assert serve.alive, serve.log_tail()
            return run(*inside, *CURL_STATUS, f"http://{listen}/openapi.yaml",
                       check=False).stdout == "200"
        wait_for(up, 20, "mecorch serve to come up", step=0.2)
        url = f"http://{listen}{INST}"
        assert run(*inside, *CURL_STATUS, url, check=False).stdout == "401"
        assert run(*inside, *CURL_STATUS, "-H", "Authorization: Bearer wrong-token-123456",
                   url, check=False).stdout == "401"
        assert run(*inside, *CURL_STATUS, "-H", f"Authorization: Bearer {token}", url,
                   check=False).stdout == "200"
    finally:
        serve.stop(15)


# ---------------------------------------------------------------- (c) sockets
SOCKET_WORDS = ("docker", "libvirt", ".sock", "/var/run", "/run/", "containers", "domains",
                "_ping", "virsh", "qemu")


def test_no_route_or_published_path_reaches_a_backend_socket():
    class Unused:
        def __getattr__(self, name):
            return None
    from types import SimpleNamespace
    router = make_router(SimpleNamespace(packages=Unused(), lcm=Unused(), mep=Unused()))
    patterns = [regex.pattern for _, regex, _ in router._routes]
    # guards the walk (test_openapi checks the routes against the document)
    assert len(patterns) > 40
    doc = yaml.safe_load((REPO / "mecorch/openapi/mecorch.yaml").read_text())
    for text in patterns + list(doc["paths"]):
        for word in SOCKET_WORDS:
            assert word not in text.lower(), (text, word)
    # every route is one of the four ETSI APIs, the documents, mecorch's
    # host inventory extension, an instance's data (a relocation's) or the
    # operator's health, metrics and status
    for p in patterns:
        assert p.startswith(("/app_pkgm/v1/", "/app_lcm/v1/", "/mec_app_support/v1/",
                             "/mec_service_mgmt/v1/", "/openapi", "/mecorch/v1/hosts",
                             "/mecorch/v1/app_instances/", "/metrics", "/healthz",
                             "/readyz", "/status")), p
    # no module of mecorch's API imports a socket or backend library, or
    # names a backend socket
    for f in (REPO / "mecorch/api").glob("*.py"):
        src = f.read_text()
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                for name in names:
                    assert not name.startswith(("socket", "docker", "libvirt", "subprocess",
                                                "drivers")), (f.name, name)
        assert "docker.sock" not in src and "libvirt-sock" not in src, f.name


def test_docker_api_paths_are_404_problem_details(open_api):
    for path in ("/var/run/docker.sock", "/_ping", "/v1.41/containers/json", "/containers/json",
                 "/version", "/info", "/libvirt", "/app_lcm/v1/../../var/run/docker.sock",
                 "/%2Fvar%2Frun%2Fdocker.sock", "/openapi/etsi/..%2F..%2F..%2Fvar%2Frun"):
        for method in ("GET", "POST"):
            status, body, _ = open_api(method, path, {} if method == "POST" else None)
            assert status in (404, 405), (method, path, status, body)


def test_a_container_gets_only_its_own_volumes_and_the_mp1_env(cim, sample, api, uid):
    """On the real dockerd: the create call mounts only the instance's named
    volumes (never the Docker socket or any host path), runs unprivileged,
    and the Mp1 variables reach the container's environment."""
    from mecorch.driverapi.model import VolumeSpec
    iid = f"acc-{uid}"
    env = {"MEC_APP_TOKEN": secrets.token_urlsafe(32), "MEC_APP_INSTANCE_ID": iid,
           "MEC_MP1_URL": "http://127.0.0.1:8080/mec_app_support/v1"}
    alloc = cim.deploy(request(iid, sample["ref"], env=env,
                               volumes=(VolumeSpec("data", 0.1, mount_path="/data"),)))
    try:
        containers = api.containers(all=True, filters={"label": [f"mecorch.instance={iid}"]})
        assert containers
        for c in containers:
            info = api.inspect_container(c["Id"])
            host_cfg = info["HostConfig"]
            assert not host_cfg.get("Privileged")
            assert not host_cfg.get("CapAdd")
            for m in info["Mounts"]:
                assert m["Type"] == "volume", m
                assert "sock" not in m.get("Source", "") and "sock" not in m["Destination"]
            for bind in host_cfg.get("Binds") or []:
                assert not bind.startswith("/"), bind           # named volumes only
            assert "docker.sock" not in json.dumps(info)
        infos = [api.inspect_container(c["Id"]) for c in containers]
        app = [i for i in infos if any(e.startswith("MEC_APP_TOKEN=")
                                       for e in i["Config"]["Env"] or [])]
        assert len(app) == 1 and len(infos) == 2          # the app, and its pause container
        got = dict(e.split("=", 1) for e in app[0]["Config"]["Env"])
        assert {k: got.get(k) for k in env} == env
        assert [m["Destination"] for m in app[0]["Mounts"]] == ["/data"]
    finally:
        cim.destroy(alloc.handle)
    assert leftovers(api, iid) == []
