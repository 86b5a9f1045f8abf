"""The REST API: ETSI MEC 010-2 app_pkgm and app_lcm (northbound, Mm1-style)
and MEC 011 mec_app_support (Mp1, for apps), plus the project's own
OpenAPI document at /openapi.yaml (also /openapi/mecorch.yaml, beside the
ETSI files it refers to at /openapi/etsi/{name})."""

from __future__ import annotations

import ipaddress
from importlib import resources
from pathlib import Path

from ..errors import InvalidInput, NotFound
from ..orchestrator import Orchestrator
from .http import PUBLIC, ApiServer, Request, Response, Router
from . import routes

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
        tokens = {t.strip() for t in text.splitlines() if t.strip() and not t.startswith("#")}
        if not tokens or any(len(t) < 16 for t in tokens):
            raise InvalidInput("api.token_file must hold tokens of at least 16 characters")
    if not tokens and not ipaddress.ip_address(host).is_loopback:
        raise InvalidInput(f"listening on {host} needs api.token_file (bearer tokens); "
                           "without tokens mecorch listens on loopback only")
    return tokens


def make_server(orch: Orchestrator, listen: str) -> ApiServer:
    host, port = parse_listen(listen)
    tokens = load_tokens(orch.cfg, host)
    return ApiServer((host, port), make_router(orch), int(orch.cfg["api"]["max_body_bytes"]),
                     tokens, orch.mep.app_token_owner)


def make_router(orch: Orchestrator) -> Router:
    """Every route the server answers: the ETSI APIs and the OpenAPI documents."""
    router = Router()
    routes.install(router, orch)
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


__all__ = ["make_server", "make_router", "parse_listen"]
