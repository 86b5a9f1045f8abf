"""The REST API: ETSI MEC 010-2 app_pkgm and app_lcm (northbound, Mm1-style)
and MEC 011 mec_app_support (Mp1, for apps), plus the project's own
OpenAPI document at /openapi.yaml (also /openapi/mecorch.yaml, beside the
ETSI files it refers to at /openapi/etsi/{name})."""

from __future__ import annotations

import ipaddress
from importlib import resources
from pathlib import Path

from mecorch.kernel.errors import InvalidInput, NotFound
from mecorch.kernel.fileutil import token_lines
from mecorch.mepm.orchestrator import Orchestrator
from mecorch.kernel.http import PUBLIC, ApiServer, Request, Response, Router
from mecorch.api import routes, status, subscription_routes

_OPENAPI_DIR = resources.files("mecorch").joinpath("openapi")


def parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise InvalidInput(f"listen address {listen!r} is not HOST:PORT")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise InvalidInput(f"listen host {host!r} must be an IP address") from None
    return host, int(port)


def load_tokens(cfg: dict, host: str) -> set[str]:
    """Bearer tokens from api.token_file. Required off loopback: the API
    manages containers and VMs as root and must not be open to a network."""
    path = cfg["api"].get("token_file")
    tokens: set[str] = set()
    if path:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as e:
            raise InvalidInput(f"cannot read api.token_file {path}: {e.strerror}") from None
        tokens = set(token_lines(text))
        if not tokens or any(len(t) < 16 for t in tokens):
            raise InvalidInput("api.token_file must hold tokens of at least 16 characters")
    if not tokens and not ipaddress.ip_address(host).is_loopback:
        raise InvalidInput(f"listening on {host} needs api.token_file (bearer tokens); "
                           "without tokens mecorch listens on loopback only")
    return tokens


def make_server(orch: Orchestrator, listen: str, role: str = "all") -> ApiServer:
    host, port = parse_listen(listen)
    tokens = load_tokens(orch.cfg, host)
    tls = _tls_context(orch.cfg, host, role)
    server = ApiServer((host, port), make_router(orch), tokens=tokens,
                       app_token_owner=orch.mep.app_token_owner if orch.mep is not None else None,
                       meo_caller=role == "mepm", meo_token=_meo_token(orch.cfg, tokens),
                       # the MEO's last word, by which the MEPM fences apps
                       on_meo=orch.fence.heard if role == "mepm" else None,
                       **_limits(orch.cfg))
    if tls is not None:
        # The handshake happens on the first read, in the connection's own
        # thread under its timeout: a slow client never stalls accept().
        server.socket = tls.wrap_socket(server.socket, server_side=True,
                                        do_handshake_on_connect=False)
    return server


def _meo_token(cfg: dict, tokens: set[str]) -> str | None:
    """The token an MEPM's MEO calls it with: the first of api.token_file
    (the one it hands its MEO when it registers, mecorch.mepm.register)."""
    if not tokens:
        return None
    return next(iter(token_lines(Path(cfg["api"]["token_file"]).read_text(encoding="utf-8"))))


def _limits(cfg: dict) -> dict:
    """What every listener is held to (api.max_body_bytes, api.max_connections,
    api.request_deadline_s): mecorch.kernel.http's module docstring."""
    api = cfg["api"]
    return {"max_body": int(api["max_body_bytes"]),
            "max_connections": int(api["max_connections"]),
            "request_deadline": float(api["request_deadline_s"])}


def _tls_context(cfg: dict, host: str, role: str):
    """TLS from api.tls_cert / api.tls_key. An MEPM or an MEO off loopback
    must have it: bearer tokens cross the network between them (the MEO
    sends an MEPM its token and packages; an MEPM registers with its own
    token and the MEO's; off loopback load_tokens requires tokens)."""
    cert, key = cfg["api"].get("tls_cert"), cfg["api"].get("tls_key")
    if not cert:
        if role in ("mepm", "meo") and not ipaddress.ip_address(host).is_loopback:
            raise InvalidInput(f"an {role.upper()} listening on {host} needs api.tls_cert and "
                               "api.tls_key (bearer tokens cross the network between MEO and "
                               "MEPM); without TLS it listens on loopback only")
        return None
    import ssl          # only when TLS is configured: OpenSSL costs the idle node RSS
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key or None)
    except (OSError, ssl.SSLError) as e:
        raise InvalidInput(f"cannot load api.tls_cert {cert} / api.tls_key {key}: {e}") from None
    return ctx


def serve_app_networks(orch: Orchestrator, port: int) -> list[ApiServer]:
    """Serve Mp1 on every app network's gateway address too (issue 12), on
    the northbound API's port, so an app reaches it from its own network.
    Only the Mp1 routes (app support and service management), and only
    with an app's own token (an operator
    token that nobody holds closes them to everyone else), each listener
    under the API's connection cap and request deadline. Each server runs
    in a daemon thread; the caller shuts them down. A gateway that cannot be
    bound is logged and left out (its apps are told the listen address)."""
    import logging
    import secrets
    import threading
    from mecorch.mepm.mp1 import MP1
    from mecorch.mepm.services import SERVICE_MGMT

    class Mp1Only(Router):
        def add(self, method, pattern, *args, **kw):
            if pattern.startswith((MP1 + "/", SERVICE_MGMT + "/")):
                super().add(method, pattern, *args, **kw)

    router = Mp1Only()
    routes.install(router, orch)
    if getattr(orch, "role", "all") == "meo":
        from mecorch.meo import routes as host_routes
    else:
        from mecorch.mepm import routes as host_routes
    host_routes.install(router, orch)
    nobody = {secrets.token_urlsafe(32)}
    servers = []
    orch.mep.mp1_port = port
    for gateway in orch.mep.app_gateways():
        try:
            server = ApiServer((gateway, port), router, tokens=nobody,
                               app_token_owner=orch.mep.app_token_owner, **_limits(orch.cfg))
        except OSError as e:
            logging.getLogger("mecorch.api").warning("Mp1 not served on %s:%s: %s",
                                                     gateway, port, e.strerror)
            continue
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                         name=f"mp1-{gateway}", daemon=True).start()
        orch.mep.mp1_gateways.add(gateway)
        servers.append(server)
    return servers


def make_router(orch: Orchestrator) -> Router:
    """Every route the server answers: the ETSI APIs and the OpenAPI documents."""
    router = Router()
    routes.install(router, orch)
    subscription_routes.install(router, orch)   # app_pkgm and app_lcm subscriptions
    if getattr(orch, "role", "all") == "meo":
        from mecorch.meo import routes as host_routes
    else:
        from mecorch.mepm import routes as host_routes
    host_routes.install(router, orch)
    status.install(router, orch)        # /metrics, /healthz, /readyz, /status
    # The published documents need no token (their `security: [{}]`).
    router.add("GET", "/openapi.yaml", _openapi, PUBLIC)
    # The same document where its relative $refs (etsi/...) resolve.
    router.add("GET", "/openapi/mecorch.yaml", _openapi, PUBLIC)
    router.add("GET", "/openapi/etsi/{name}", _etsi_file, PUBLIC)
    return router


def _openapi(req: Request) -> Response:
    text = _OPENAPI_DIR.joinpath("mecorch.yaml").read_bytes()
    return Response(200, text, content_type="application/yaml")


def _etsi_file(req: Request) -> Response:
    """A vendored ETSI file, only by a name in that folder's listing (so no
    path can be smuggled in)."""
    folder = _OPENAPI_DIR.joinpath("etsi")
    name = req.params["name"]
    if name not in {f.name for f in folder.iterdir() if f.is_file()}:
        raise NotFound(f"no ETSI file named {name!r}")
    ctype = "application/yaml" if name.endswith(".yaml") else "text/plain; charset=utf-8"
    return Response(200, folder.joinpath(name).read_bytes(), content_type=ctype)


__all__ = ["make_server", "make_router", "parse_listen", "serve_app_networks"]
