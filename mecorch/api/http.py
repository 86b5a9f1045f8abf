"""A small HTTP layer on the standard library: routing, JSON bodies with a
size limit, bearer-token access control, and every error as ProblemDetails.

Access control, per route (`Router.add(..., access=...)`):

- OPERATOR (the northbound APIs): an operator token when `api.token_file`
  is configured; without tokens (loopback only) anyone on loopback.
- APP (Mp1, /mec_app_support/v1/applications/{app}/...): an operator token,
  or the app instance's own Mp1 token (issued at instantiate) for its own
  {app} only. Without operator tokens, a request that presents an app
  token is still held to that app's own resources.
- PUBLIC (the OpenAPI documents): anyone.

An app token is refused (403) everywhere but its own instance's Mp1 routes.

The standard library's threading server keeps the whole control plane in
one light process (an ASGI stack alone costs more memory than mecorch's
footprint target).
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import re
import urllib.parse
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from ..errors import (Forbidden, InvalidInput, MecorchError, NotFound, PayloadTooLarge,
                      Unauthorized)

log = logging.getLogger("mecorch.api")
OPERATOR, APP, PUBLIC = "operator", "app", "public"
# Deeper JSON than this is refused before parsing: json.loads recurses per
# level and would otherwise fail with RecursionError (a 500) near 1000.
MAX_JSON_DEPTH = 64
# A client gets this long for each read of its request line, headers and
# body (a slow client must not hold a thread forever).
REQUEST_TIMEOUT_S = 30.0
_CONTENT_LENGTH = re.compile(r"[0-9]{1,15}")


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: Any
    raw: bytes
    params: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        """The body as JSON. Refused: no body, bad UTF-8 or JSON, nesting
        deeper than MAX_JSON_DEPTH, NaN/Infinity (not JSON), a key given
        twice in one object (which one would win is undefined)."""
        if not self.raw:
            raise InvalidInput("a JSON body is required")
        try:
            text = self.raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInput("body is not UTF-8") from None
        try:
            doc = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant,
                             parse_float=_finite)
        except RecursionError:
            raise InvalidInput(f"body is nested deeper than {MAX_JSON_DEPTH} levels") from None
        except ValueError as e:
            raise InvalidInput(f"body is not valid JSON: {e}") from None
        _check_depth(doc)
        return doc


@dataclass
class Response:
    status: int
    body: Any = None                    # JSON-able, bytes, or None
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


Handler = Callable[[Request], Response]


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for k, v in pairs:
        if k in out:
            raise InvalidInput(f"body has the key {k[:64]!r} twice in one object")
        out[k] = v
    return out


def _no_constant(name: str):
    raise InvalidInput(f"body has {name}, which is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):         # 1e999 would be stored as Infinity
        raise InvalidInput(f"body has the number {text[:32]}, too large for a float")
    return value


def _check_depth(doc: Any) -> None:
    """Refuse nesting deeper than MAX_JSON_DEPTH: what handlers do with a
    document (validate, store, dump) may recurse too. Iterative walk."""
    stack = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            if depth > MAX_JSON_DEPTH:
                raise InvalidInput(f"body is nested deeper than {MAX_JSON_DEPTH} levels")
            children = node.values() if isinstance(node, dict) else node
            stack.extend((c, depth + 1) for c in children)


class Router:
    def __init__(self):
        self._routes: list[tuple[str, re.Pattern, Handler]] = []
        self._access: dict[int, str] = {}          # index in _routes -> access class

    def add(self, method: str, pattern: str, handler: Handler, access: str = OPERATOR) -> None:
        """`pattern` uses {name} for one path segment. APP routes must have
        an {app} segment: the instance an app token is checked against."""
        assert access in (OPERATOR, APP, PUBLIC) and (access != APP or "{app}" in pattern)
        regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern)
        self._access[len(self._routes)] = access
        self._routes.append((method, re.compile(regex + r"/?"), handler))

    def resolve(self, method: str, path: str) -> tuple[Handler, dict[str, str], str]:
        """(handler, path parameters, access class) of the route."""
        allowed = False
        for i, (m, regex, handler) in enumerate(self._routes):
            hit = regex.fullmatch(path)
            if hit:
                if m == method:
                    params = {k: urllib.parse.unquote(v, errors="strict")
                              for k, v in hit.groupdict().items()}
                    return handler, params, self._access[i]
                allowed = True
        if allowed:
            raise MethodNotAllowed(f"{method} is not allowed on {path}")
        raise NotFound(f"no resource at {path}")


class MethodNotAllowed(MecorchError):
    status, title = 405, "Method not allowed"


class RequestTimeout(MecorchError):
    status, title = 408, "Request timeout"


class ApiServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], router: Router, max_body: int,
                 tokens: set[str], app_token_owner: Callable[[str], str | None] | None = None):
        self.router = router
        self.max_body = max_body
        self.tokens = {t.encode() for t in tokens}
        # token -> the app instance it was issued to, or None
        self.app_token_owner = app_token_owner or (lambda token: None)
        self.request_timeout = REQUEST_TIMEOUT_S
        super().__init__(address, _RequestHandler)


class _RequestHandler(BaseHTTPRequestHandler):
    server: ApiServer
    protocol_version = "HTTP/1.1"
    server_version = "mecorch"
    # Headers and body go out in two writes: with Nagle on, a keep-alive
    # client's delayed ACK stalls every answer by 40 ms.
    disable_nagle_algorithm = True

    def setup(self) -> None:
        self.timeout = self.server.request_timeout       # socket timeout of this connection
        super().setup()

    def log_message(self, fmt, *args):            # through logging, not stderr
        log.debug("%s " + fmt, self.client_address[0], *args)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None):
        """http.server's own refusals (bad request line, header lines too long
        or too many, unknown method) as ProblemDetails too, not HTML."""
        try:
            title = HTTPStatus(code).phrase
        except ValueError:
            title = "Error"
        body = json.dumps({"type": "about:blank", "title": title, "status": code,
                           "detail": message or explain or title}).encode()
        self.close_connection = True
        self.send_response(code, message)
        self.send_header("Connection", "close")
        self.send_header("Content-Type", "application/problem+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        instance = url.path
        body_read = False
        try:
            try:
                handler, params, access = self.server.router.resolve(self.command, url.path)
            except (NotFound, MethodNotAllowed):
                self._authorize(OPERATOR, {})     # no route map for the unauthorized
                raise
            except UnicodeDecodeError:
                raise InvalidInput("a path parameter is not UTF-8") from None
            self._authorize(access, params)
            raw = self._body()
            body_read = True
            try:
                query = {k: v[-1] for k, v in urllib.parse.parse_qs(
                    url.query, errors="strict", max_num_fields=64).items()}
            except (UnicodeDecodeError, ValueError):
                raise InvalidInput("the query string is not valid (UTF-8, at most 64 fields)") \
                    from None
            resp = handler(Request(self.command, url.path, query, self.headers, raw, params))
        except MecorchError as e:
            if not body_read:       # an unread body would be read as the next request
                self.close_connection = True
            resp = Response(e.status, e.problem(instance), content_type="application/problem+json")
            if isinstance(e, Unauthorized):
                resp.headers["WWW-Authenticate"] = "Bearer"
        except Exception as e:  # noqa: BLE001 - a bug must still answer ProblemDetails
            log.exception("unhandled error on %s %s", self.command, url.path)
            err = MecorchError(f"internal error: {type(e).__name__}")
            resp = Response(500, err.problem(instance), content_type="application/problem+json")
        self._send(resp)

    # Methods no route has answer 405 like any method a path lacks.
    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle
    do_HEAD = do_OPTIONS = do_TRACE = do_CONNECT = _handle

    def _authorize(self, access: str, params: dict[str, str]) -> None:
        """See the module docstring. 401: no valid credential; 403: an app
        token used outside its own instance's Mp1 routes."""
        if access == PUBLIC:
            return
        token = self._bearer()
        operators = self.server.tokens
        if token is not None and operators and any(
                hmac.compare_digest(token.encode(), t) for t in operators):
            return
        owner = self.server.app_token_owner(token) if token else None
        if owner is not None:
            if access == APP and params.get("app") == owner:
                return
            raise Forbidden("an app's Mp1 token grants access to its own instance's "
                            "Mp1 resources only")
        if operators:
            raise Unauthorized("a valid bearer token is required")

    def _bearer(self) -> str | None:
        """The bearer token of the Authorization header, if any. The header
        is read as latin-1 by http.server: a token must be printable ASCII."""
        scheme, _, token = self.headers.get("Authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None
        if not token.isascii() or not token.isprintable() or len(token) > 512:
            raise Unauthorized("the bearer token is malformed")
        return token

    def _body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding"):
            raise InvalidInput("chunked request bodies are not accepted; send Content-Length")
        if length is None:
            return b""
        # int() would take "+5", " 5" or "5_0"; two Content-Length headers
        # that differ are a request-smuggling classic.
        if len(set(self.headers.get_all("Content-Length"))) != 1 \
                or not _CONTENT_LENGTH.fullmatch(length):
            raise InvalidInput("Content-Length must be one decimal number")
        n = int(length)
        if n > self.server.max_body:
            raise PayloadTooLarge(f"request body larger than {self.server.max_body} bytes")
        try:
            data = self.rfile.read(n)
        except OSError:                   # the socket timeout
            self.close_connection = True
            raise RequestTimeout("the request body did not arrive in time") from None
        if len(data) != n:
            self.close_connection = True
            raise InvalidInput("the request body is shorter than its Content-Length")
        return data

    def _send(self, resp: Response) -> None:
        if resp.body is None:
            data = b""
        elif isinstance(resp.body, bytes):
            data = resp.body
        else:
            data = json.dumps(resp.body).encode()
        self.send_response(resp.status)
        if data or resp.status not in (204, 304):
            self.send_header("Content-Type", resp.content_type)
        self.send_header("Content-Length", str(len(data)))
        for k, v in resp.headers.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
