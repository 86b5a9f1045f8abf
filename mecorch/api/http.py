"""A small HTTP layer on the standard library: routing, JSON bodies with a
size limit, bearer-token access control, and every error as ProblemDetails.

The standard library's threading server keeps the whole control plane in
one light process (an ASGI stack alone costs more memory than mecorch's
footprint target).
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from ..errors import (InvalidInput, MecorchError, NotFound, PayloadTooLarge,
                      Unauthorized)

log = logging.getLogger("mecorch.api")


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: Any
    raw: bytes
    params: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        if not self.raw:
            raise InvalidInput("a JSON body is required")
        try:
            return json.loads(self.raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise InvalidInput(f"body is not valid JSON: {e}") from None


@dataclass
class Response:
    status: int
    body: Any = None                    # JSON-able, bytes, or None
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


Handler = Callable[[Request], Response]


class Router:
    def __init__(self):
        self._routes: list[tuple[str, re.Pattern, Handler]] = []

    def add(self, method: str, pattern: str, handler: Handler) -> None:
        """`pattern` uses {name} for one path segment."""
        regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern)
        self._routes.append((method, re.compile(regex + r"/?"), handler))

    def match(self, method: str, path: str) -> tuple[Handler, dict[str, str]]:
        allowed = False
        for m, regex, handler in self._routes:
            hit = regex.fullmatch(path)
            if hit:
                if m == method:
                    return handler, {k: urllib.parse.unquote(v) for k, v in hit.groupdict().items()}
                allowed = True
        if allowed:
            raise MethodNotAllowed(f"{method} is not allowed on {path}")
        raise NotFound(f"no resource at {path}")


class MethodNotAllowed(MecorchError):
    status, title = 405, "Method not allowed"


class ApiServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], router: Router, max_body: int,
                 tokens: set[str]):
        self.router = router
        self.max_body = max_body
        self.tokens = tokens
        super().__init__(address, _RequestHandler)


class _RequestHandler(BaseHTTPRequestHandler):
    server: ApiServer
    protocol_version = "HTTP/1.1"
    server_version = "mecorch"

    def log_message(self, fmt, *args):            # through logging, not stderr
        log.debug("%s " + fmt, self.client_address[0], *args)

    def _handle(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        instance = url.path
        try:
            self._authorize()
            raw = self._body()
            query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
            handler, params = self.server.router.match(self.command, url.path)
            resp = handler(Request(self.command, url.path, query, self.headers, raw, params))
        except MecorchError as e:
            resp = Response(e.status, e.problem(instance), content_type="application/problem+json")
            if isinstance(e, Unauthorized):
                resp.headers["WWW-Authenticate"] = "Bearer"
        except Exception as e:  # noqa: BLE001 - a bug must still answer ProblemDetails
            log.exception("unhandled error on %s %s", self.command, url.path)
            err = MecorchError(f"internal error: {type(e).__name__}")
            resp = Response(500, err.problem(instance), content_type="application/problem+json")
        self._send(resp)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

    def _authorize(self) -> None:
        if not self.server.tokens:
            return
        auth = self.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not any(
                hmac.compare_digest(token.strip(), t) for t in self.server.tokens):
            raise Unauthorized("a valid bearer token is required")

    def _body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding"):
            raise InvalidInput("chunked request bodies are not accepted; send Content-Length")
        if not length:
            return b""
        try:
            n = int(length)
        except ValueError:
            raise InvalidInput("Content-Length is not a number") from None
        if n < 0:
            raise InvalidInput("Content-Length is negative")
        if n > self.server.max_body:
            self.close_connection = True
            raise PayloadTooLarge(f"request body larger than {self.server.max_body} bytes")
        return self.rfile.read(n)

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
