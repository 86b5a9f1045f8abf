"""The REST API: ETSI MEC 010-2 app_pkgm and app_lcm (northbound, Mm1-style)
and MEC 011 mec_app_support (Mp1, for apps), plus the project's own
OpenAPI document at /openapi.yaml."""

from __future__ import annotations

import ipaddress
import json
from importlib import resources
from pathlib import Path

from ..errors import InvalidInput
from ..orchestrator import Orchestrator
from .http import ApiServer, Request, Response, Router
from . import routes


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
    router = Router()
    routes.install(router, orch)
    router.add("GET", "/openapi.yaml", _openapi)
    return ApiServer((host, port), router, int(orch.cfg["api"]["max_body_bytes"]), tokens)


def _openapi(req: Request) -> Response:
    text = resources.files("mecorch").joinpath("openapi.yaml").read_bytes()
    return Response(200, text, content_type="application/yaml")


__all__ = ["make_server", "parse_listen", "json"]
