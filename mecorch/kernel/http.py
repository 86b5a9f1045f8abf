"""A small HTTP layer on the standard library: routing, JSON bodies with a
size limit, bearer-token access control, and every error as ProblemDetails.

Access control, per route (`Router.add(..., access=...)`):

- OPERATOR (the northbound APIs): an operator token when `api.token_file`
  is configured; without tokens (loopback only) anyone on loopback.
- APP (Mp1, /mec_app_support/v1/applications/{app}/...): an operator token,
  or the app instance's own Mp1 token (issued at instantiate) for its own
  {app} only. Without operator tokens, a request that presents an app
  token is still held to that app's own resources.
- APPS (what the platform offers every app: MEC 011 service discovery,
  transports, timing): an operator token, or the Mp1 token of any app
  instance of this host.
- PUBLIC (the OpenAPI documents): anyone.
- LOCAL (/metrics, /healthz, /readyz, /status): anyone on loopback, an
  operator token from anywhere else.

An app token is refused (403) everywhere but its own instance's Mp1 routes
and the APPS routes.

The MEO as a caller (`Request.from_meo`): on an MEPM's listener
(`ApiServer(meo_token=...)`), a request with the MEO's token, or any
request when the MEPM has no tokens (loopback only: every local caller is
its operator, the MEO among them); on any other listener, none. Each such
request is the MEO's word (`ApiServer(on_meo=...)`: how long the MEPM has
been without one fences apps, mecorch.mepm.fence).

Limits of every listener (`ApiServer`: the API and each Mp1 gateway
listener): at most `max_connections` connections at once, one thread each;
one more is answered 503 and closed by the accepting thread at once (no
thread waits for a slot). A request's line, headers and body must arrive
within `request_deadline` of its first byte (of the connection's opening,
for its first request): every read of the connection waits at most until
then, and one past it reads the end of the stream (the client gets a 408),
so a client dripping a byte at a time holds its thread no longer.

The standard library's threading server keeps the whole control plane in
one light process (an ASGI stack alone costs more memory than mecorch's
footprint target).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import math
import io
import re
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from mecorch.kernel.errors import (
    Forbidden, InvalidInput, MecorchError, NotFound, PayloadTooLarge, Unauthorized)

log = logging.getLogger("mecorch.api")
OPERATOR, APP, APPS, PUBLIC, LOCAL = "operator", "app", "apps", "public", "local"
# Deeper JSON than this is refused before parsing: json.loads recurses per
# level and would otherwise fail with RecursionError (a 500) near 1000.
MAX_JSON_DEPTH = 64
# A client gets this long for each read of its request line, headers and
# body (a slow client must not hold a thread forever).
REQUEST_TIMEOUT_S = 30.0
# Defaults of api.max_connections and api.request_deadline_s (see the
# module docstring).
MAX_CONNECTIONS = 128
REQUEST_DEADLINE_S = 30.0
# An idle keep-alive connection is closed after this long without a request
# (Apache's default): each one holds a thread of the server, and an idle
# edge node should not keep the threads of a burst of clients gone quiet.
KEEPALIVE_IDLE_S = 5.0
_CONTENT_LENGTH = re.compile(r"[0-9]{1,15}")
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,15}")
# what is still read of a streaming body refused before it was read
DRAIN_MAX = 1 << 20


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: Any
    raw: bytes
    params: dict[str, str] = field(default_factory=dict)
    # the body of a streaming route (Router.add(stream=True)), read by the
    # handler as it arrives; `raw` is then empty
    stream: "BodyStream | None" = None
    # the caller is this MEPM's MEO (see the module docstring)
    from_meo: bool = False
    # every value of each query parameter (`query` keeps the last): the
    # arrays of a form-style, exploded parameter (?ser_name=a&ser_name=b)
    query_all: dict[str, list[str]] = field(default_factory=dict)
    # the app instance whose Mp1 token authorized the call (None: an
    # operator, or no tokens at all)
    app: str | None = None
    # what the route produces that the request's Accept admits, the
    # preferred first (Router.add(produces=...)); empty for a route that
    # declares none
    media_types: tuple[str, ...] = ()

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
    body: Any = None                    # JSON-able, bytes, FileBody, or None
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


Handler = Callable[[Request], Response]


@dataclass
class FileBody:
    """A response body sent from an open binary file in blocks (a package
    zip is never held whole in memory). The server closes it."""
    file: Any
    size: int


class BodyStream:
    """The request body of a streaming route, read as it arrives. Framed by
    one Content-Length or by chunked transfer coding (strictly parsed); each
    read is under the connection's socket timeout; more than `limit` bytes
    is a 413. `done` tells whether the whole body (and, chunked, its
    trailer) was read, so the connection can be kept."""

    MAX_LINE = 4096          # a chunk-size or trailer line
    MAX_TRAILERS = 32

    def __init__(self, rfile, length: int | None, chunked: bool):
        self._rfile = rfile
        self._left = length if length is not None else 0   # of the current chunk, when chunked
        self._chunked = chunked
        self.length = length
        self.received = 0
        self.limit: int | None = None
        self.done = not chunked and not length
        # the connection's request deadline (set by the server): moved on as
        # the body arrives, told when it is all read
        self.deadline: "RequestDeadline | None" = None

    def set_limit(self, limit: int) -> None:
        """Refuse a body over `limit` bytes: at once when Content-Length says
        so, else as soon as more arrives."""
        self.limit = limit
        if self.length is not None and self.length > limit:
            raise PayloadTooLarge(f"request body larger than {limit} bytes")

    def read(self, size: int = 1 << 20) -> bytes:
        """Up to `size` bytes of the body; b"" at its end."""
        while not self.done:
            if self._chunked and self._left == 0:
                self._next_chunk()
                continue
            data = self._recv(min(size, self._left))
            if not data:
                if self.deadline is not None and self.deadline.passed():
                    raise RequestTimeout("the request body did not arrive in time")
                raise InvalidInput("the request body ended before its declared length")
            self._left -= len(data)
            self.received += len(data)
            if self.deadline is not None:
                self.deadline.progress(self.received)
            if self.limit is not None and self.received > self.limit:
                raise PayloadTooLarge(f"request body larger than {self.limit} bytes")
            if self._left == 0:
                if self._chunked:
                    if self._line() != b"":
                        raise InvalidInput("a chunk of the request body is longer than its size")
                else:
                    self._end()
            return data
        return b""

    def _end(self) -> None:
        self.done = True
        if self.deadline is not None:
            self.deadline.stop()

    def _recv(self, n: int) -> bytes:
        try:
            return self._rfile.read1(n) if hasattr(self._rfile, "read1") else self._rfile.read(n)
        except OSError:                   # the socket timeout
            raise RequestTimeout("the request body did not arrive in time") from None

    def _line(self) -> bytes:
        try:
            line = self._rfile.readline(self.MAX_LINE + 1)
        except OSError:
            raise RequestTimeout("the request body did not arrive in time") from None
        if not line and self.deadline is not None and self.deadline.passed():
            raise RequestTimeout("the request body did not arrive in time")
        if len(line) > self.MAX_LINE or not line.endswith(b"\r\n"):
            raise InvalidInput("malformed chunked request body (a line too long or not CRLF)")
        return line[:-2]

    def drain(self, most: int) -> None:
        """Read and drop a body of at most `most` bytes that the handler
        refused before reading any of it. A longer one, one refused as too
        large, one read in part (a failure while reading it), or one that
        fails now is left: the connection is then closed."""
        if self.received or (self.length is not None and (
                self.length > most or (self.limit is not None and self.length > self.limit))):
            return
        self.limit = most
        try:
            while self.read(1 << 16):
                pass
        except MecorchError:
            pass

    def _next_chunk(self) -> None:
        size = self._line().split(b";", 1)[0]          # chunk extensions are ignored
        if not _CHUNK_SIZE.fullmatch(size):
            raise InvalidInput("malformed chunked request body (chunk size)")
        self._left = int(size, 16)
        if self._left == 0:                             # last chunk: the trailer follows
            for _ in range(self.MAX_TRAILERS + 1):
                if self._line() == b"":
                    self._end()
                    return
            raise InvalidInput("chunked request body has too many trailer lines")


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
        self._streaming: set[Handler] = set()      # handlers that read the body themselves
        # content negotiation and query parameters, per handler (see add)
        self._produces: dict[Handler, tuple[str, ...]] = {}
        self._query: dict[Handler, frozenset[str]] = {}

    def add(self, method: str, pattern: str, handler: Handler, access: str = OPERATOR,
            stream: bool = False, produces: str | tuple[str, ...] | None = None,
            query: tuple[str, ...] | None = None) -> None:
        """`pattern` uses {name} for one path segment. APP routes must have
        an {app} segment: the instance an app token is checked against.
        `stream`: the handler reads the body itself from `Request.stream`
        (not held whole, not bound by api.max_body_bytes: the handler sets
        its own limit).
        `produces`: the media type of the route's answers, or several in
        the server's order of preference: a request whose Accept excludes
        them all is a 406 before anything is done; the handler finds those
        admitted in `Request.media_types` (`negotiate`). `query`: the
        query parameters the route takes; any other is a 400 naming it."""
        assert access in (OPERATOR, APP, APPS, PUBLIC, LOCAL) and (access != APP or "{app}" in pattern)
        regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern)
        self._access[len(self._routes)] = access
        if stream:
            self._streaming.add(handler)
        if produces:
            self._produces[handler] = (produces,) if isinstance(produces, str) \
                else tuple(produces)
        if query is not None:
            self._query[handler] = frozenset(query)
        self._routes.append((method, re.compile(regex + r"/?"), handler))

    def streams(self, handler: Handler) -> bool:
        return handler in self._streaming

    def check_request(self, handler: Handler, accept: str | None,
                      query: str) -> tuple[str, ...]:
        """406 when Accept excludes all the route produces; 400 for query
        parameters the route does not take (both before the handler runs).
        The media types the route produces that Accept admits, the
        preferred first (empty when the route declares none)."""
        produces = self._produces.get(handler, ())
        admitted = negotiate(accept, produces)
        if produces and not admitted:
            raise NotAcceptable(f"this resource is only available as {' or '.join(produces)} "
                                f"(Accept: {accept[:100]})")
        allowed = self._query.get(handler)
        if allowed is not None and query:
            names = {k for k, _ in urllib.parse.parse_qsl(query, keep_blank_values=True,
                                                         errors="replace", max_num_fields=64)}
            unknown = sorted(names - allowed)
            if unknown:
                takes = ", ".join(sorted(allowed)) or "none"
                raise InvalidInput(f"unknown query parameter(s) {', '.join(unknown)[:200]} "
                                   f"(this resource takes: {takes})")
        return admitted

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


def acceptable(accept: str, media_type: str) -> bool:
    """Whether an Accept header (RFC 9110 12.5.1) admits `media_type`: the
    most specific range that matches it decides, by its q (0: refused).
    Ranges that do not parse are ignored (none that parses: anything goes)."""
    return quality(accept, media_type) > 0


def negotiate(accept: str | None, choices: tuple[str, ...]) -> tuple[str, ...]:
    """The `choices` (the server's order of preference) that an Accept
    header admits, by the client's preference: a higher q first, the
    server's order among equals. No Accept header admits every choice."""
    if not accept:
        return tuple(choices)
    rated = [(quality(accept, c), i, c) for i, c in enumerate(choices)]
    return tuple(c for q, i, c in sorted(rated, key=lambda r: (-r[0], r[1])) if q > 0)


def quality(accept: str, media_type: str) -> float:
    """The q an Accept header gives `media_type` (see `acceptable`): 0 when
    no range matches it, 1 when no range parses."""
    kind, _, sub = media_type.lower().partition("/")
    best = (-1, 0.0)                      # (specificity, q)
    parsed = False
    for item in accept.split(",")[:64]:
        rng, *params = [p.strip() for p in item.split(";")]
        rtype, slash, rsub = rng.lower().partition("/")
        if not slash or not rtype or not rsub:
            continue
        q = 1.0
        for p in params:
            name, _, value = p.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = -1.0
        if not 0.0 <= q <= 1.0:
            continue
        parsed = True
        if (rtype, rsub) == (kind, sub):
            spec = 2
        elif rtype == kind and rsub == "*":
            spec = 1
        elif (rtype, rsub) == ("*", "*"):
            spec = 0
        else:
            continue
        if spec > best[0]:
            best = (spec, q)
    return best[1] if parsed else 1.0


def warning(text: str | None) -> dict:
    """RFC 7234 Warning header (199: miscellaneous) for an answer given from
    what was last known, or short of a part (an MEO's hosts away); no
    header for no text."""
    if not text:
        return {}
    return {"Warning": '199 mecorch "' + text.replace('"', "'").replace("\n", " ")[:900] + '"'}


class RequestTimeout(MecorchError):
    status, title = 408, "Request timeout"


class NotAcceptable(MecorchError):
    status, title = 406, "Not acceptable"


class UnsupportedMediaType(InvalidInput):
    status, title = 415, "Unsupported media type"


class RequestDeadline:
    """The deadline of the request a connection is reading (see the module
    docstring): started at the request's first byte, stopped once it is
    read; a streaming body moves it on by `seconds` per `per_bytes` read."""

    def __init__(self, seconds: float, per_bytes: int):
        self.seconds, self.per_bytes = seconds, max(1, per_bytes)
        self.started: float | None = None
        self.at: float | None = None

    def start(self) -> None:
        self.started = time.monotonic()
        self.at = self.started + self.seconds

    def progress(self, received: int) -> None:
        if self.at is not None:
            self.at = max(self.at, self.started + self.seconds * (1 + received // self.per_bytes))

    def stop(self) -> None:
        self.at = None

    def passed(self) -> bool:
        return self.at is not None and time.monotonic() >= self.at


class _DeadlineReader(io.RawIOBase):
    """The connection's reading side under its request deadline: while one
    runs, a read waits at most until it (and at most the request timeout),
    and past it reads the end of the stream."""

    def __init__(self, conn, deadline: RequestDeadline, timeout: float):
        super().__init__()
        self.conn, self.deadline, self.timeout = conn, deadline, timeout

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        at = self.deadline.at
        if at is None:                  # between requests: the caller's timeout
            return self.conn.recv_into(buf)
        left = at - time.monotonic()
        try:
            if left > 0:
                self.conn.settimeout(min(left, self.timeout))
                try:
                    return self.conn.recv_into(buf)
                except TimeoutError:
                    if not self.deadline.passed():
                        raise           # the request timeout of one read
            return 0                    # the deadline: cut off
        finally:
            self.conn.settimeout(self.timeout)   # for the answer's writes


# What a connection over the cap is told, by the accepting thread.
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/problem+json\r\n"
         b"Retry-After: 1\r\nConnection: close\r\nContent-Length: 104\r\n\r\n"
         b'{"type": "about:blank", "title": "Service Unavailable", "status": 503, '
         b'"detail": "too many connections"}')


class ApiServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # listen() backlog (socketserver's 5 would leave a burst of clients
    # retrying their SYNs for seconds instead of being served or refused)
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], router: Router, max_body: int,
                 tokens: set[str], app_token_owner: Callable[[str], str | None] | None = None,
                 max_connections: int = MAX_CONNECTIONS,
                 request_deadline: float = REQUEST_DEADLINE_S, meo_token: str | None = None,
                 meo_caller: bool = False, on_meo: Callable[[], None] | None = None):
        """`meo_caller`: this is an MEPM's listener, whose MEO may call it;
        `meo_token`: the token that MEO presents (None: no tokens);
        `on_meo`: called at each authorized request of the MEO (the MEPM's
        record of its MEO's last word: mecorch.mepm.fence)."""
        self.router = router
        self.on_meo = on_meo
        self.max_body = max_body
        self.tokens = {t.encode() for t in tokens}
        self.meo_caller = meo_caller
        self.meo_token = meo_token.encode() if meo_token else None
        # token -> the app instance it was issued to, or None
        self.app_token_owner = app_token_owner or (lambda token: None)
        self.request_timeout = REQUEST_TIMEOUT_S
        self.keepalive_idle = KEEPALIVE_IDLE_S
        self.max_connections = max_connections
        self.request_deadline = request_deadline
        self.connections = 0                # open now, each with its thread
        self._count_lock = threading.Lock()
        super().__init__(address, _RequestHandler)

    def process_request(self, request, client_address) -> None:
        """A thread for the connection if a slot is free, else a 503 from
        this (the accepting) thread and the connection closed."""
        with self._count_lock:
            busy = self.connections >= self.max_connections
            if not busy:
                self.connections += 1
        if busy:
            _turn_away(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release()

    def _release(self) -> None:
        with self._count_lock:
            self.connections -= 1


def _turn_away(conn) -> None:
    """503 to a connection over the cap without ever blocking: what it sent
    already is read first (closing on unread data would reset the
    connection before the client reads the answer). A TLS connection,
    whose handshake would block, is closed."""
    try:
        if not hasattr(conn, "do_handshake"):
            conn.setblocking(False)
            try:
                conn.recv(1 << 16)
            except BlockingIOError:
                pass
            conn.send(_BUSY)
    except OSError:
        pass
    finally:
        conn.close()


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
        self.deadline = RequestDeadline(self.server.request_deadline, self.server.max_body)
        self.rfile.close()              # the plain reader: replaced by one under the deadline
        self.rfile = io.BufferedReader(_DeadlineReader(self.connection, self.deadline,
                                                       self.timeout))

    def handle(self) -> None:
        """http.server's keep-alive loop, with the wait for the next request
        under `keepalive_idle`, each read of the request itself under the
        request timeout and the whole request under its deadline."""
        self.close_connection = True
        self.deadline.start()                       # the first: from the connection's opening
        self.handle_one_request()
        while not self.close_connection:
            self.deadline.stop()
            try:
                self.connection.settimeout(self.server.keepalive_idle)
                if not self.rfile.peek(1):          # the client closed it
                    return
                self.connection.settimeout(self.timeout)
            except OSError:                         # idle too long, or reset
                return
            self.deadline.start()
            self.handle_one_request()

    def parse_request(self) -> bool:
        """http.server's, but a request whose headers were cut off at its
        deadline (they end at the end of the stream) is a 408, not handled;
        so is one cut off in its request line (not a malformed request)."""
        if self.deadline.passed():
            self.command, self.request_version = None, self.protocol_version
            self.requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
            self.send_error(408, "the request did not arrive in time")
            return False
        if not super().parse_request():
            return False
        if self.deadline.passed():
            self.send_error(408, "the request did not arrive in time")
            return False
        return True

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
        body_read, stream = False, None
        try:
            try:
                handler, params, access = self.server.router.resolve(self.command, url.path)
            except (NotFound, MethodNotAllowed):
                self._authorize(OPERATOR, {})     # no route map for the unauthorized
                raise
            except UnicodeDecodeError:
                raise InvalidInput("a path parameter is not UTF-8") from None
            caller_app = self._authorize(access, params)
            media_types = self.server.router.check_request(handler, self.headers.get("Accept"),
                                                           url.query)
            if self.server.router.streams(handler):
                raw, stream = b"", self._body_stream()
                stream.deadline = self.deadline
                if stream.done:
                    self.deadline.stop()
            else:
                raw, stream = self._body(), None
                body_read = True
                self.deadline.stop()            # all read: the handler's time is its own
            try:
                query_all = urllib.parse.parse_qs(url.query, errors="strict", max_num_fields=64)
                query = {k: v[-1] for k, v in query_all.items()}
            except (UnicodeDecodeError, ValueError):
                raise InvalidInput("the query string is not valid (UTF-8, at most 64 fields)") \
                    from None
            from_meo = self._from_meo()
            if from_meo and self.server.on_meo is not None:
                self.server.on_meo()
            resp = handler(Request(self.command, url.path, query, self.headers, raw, params,
                                   stream, from_meo, query_all, caller_app, media_types))
        except MecorchError as e:
            resp = Response(e.status, e.problem(instance), content_type="application/problem+json")
            if e.retry_after is not None:
                resp.headers["Retry-After"] = str(e.retry_after)
            if isinstance(e, Unauthorized):
                resp.headers["WWW-Authenticate"] = "Bearer"
        except Exception as e:  # noqa: BLE001 - a bug must still answer ProblemDetails
            self.close_connection = True
            log.exception("unhandled error on %s %s", self.command, url.path)
            err = MecorchError(f"internal error: {type(e).__name__}")
            resp = Response(500, err.problem(instance), content_type="application/problem+json")
        if stream is not None and not stream.done:
            # refused before its body was read (415, 404, 409): read a small
            # rest so the client, still sending, gets the answer rather than
            # a reset connection
            stream.drain(DRAIN_MAX)
        if not (body_read or (stream is not None and stream.done)):
            self.close_connection = True   # an unread body would be read as the next request
        self._send(resp)

    # Methods no route has answer 405 like any method a path lacks.
    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle
    do_HEAD = do_OPTIONS = do_TRACE = do_CONNECT = _handle

    def _authorize(self, access: str, params: dict[str, str]) -> str | None:
        """See the module docstring. 401: no valid credential; 403: an app
        token used outside its own instance's Mp1 routes. The app instance
        whose token was taken, if one was."""
        if access == PUBLIC:
            return None
        if access == LOCAL and _loopback(self.client_address[0]):
            return None
        if access == LOCAL:
            access = OPERATOR
        token = self._bearer()
        operators = self.server.tokens
        if token is not None and operators and any(
                hmac.compare_digest(token.encode(), t) for t in operators):
            return None
        owner = self.server.app_token_owner(token) if token else None
        if owner is not None:
            if access == APPS or (access == APP and params.get("app") == owner):
                return owner
            raise Forbidden("an app's Mp1 token grants access to its own instance's "
                            "Mp1 resources and the platform's shared ones only")
        if operators:
            raise Unauthorized("a valid bearer token is required")
        return None

    def _from_meo(self) -> bool:
        """The caller, authorized already, is this MEPM's MEO."""
        if not self.server.meo_caller:
            return False
        if not self.server.tokens:
            return True                 # loopback only: every caller is the operator
        token = self._bearer()
        return token is not None and self.server.meo_token is not None and \
            hmac.compare_digest(token.encode(), self.server.meo_token)

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
            if self.deadline.passed():    # cut off at the deadline
                raise RequestTimeout("the request body did not arrive in time")
            raise InvalidInput("the request body is shorter than its Content-Length")
        return data

    def _body_stream(self) -> BodyStream:
        """The framing of a streaming route's body: one Content-Length, or
        `Transfer-Encoding: chunked` alone (both at once is the
        request-smuggling classic; other codings are refused)."""
        te = self.headers.get_all("Transfer-Encoding") or []
        lengths = self.headers.get_all("Content-Length") or []
        if te:
            if lengths:
                raise InvalidInput("a request must not have both Transfer-Encoding and "
                                   "Content-Length")
            if len(te) != 1 or te[0].strip().lower() != "chunked":
                raise InvalidInput("the only Transfer-Encoding accepted is chunked")
            return BodyStream(self.rfile, None, chunked=True)
        if not lengths:
            return BodyStream(self.rfile, 0, chunked=False)
        if len(set(lengths)) != 1 or not _CONTENT_LENGTH.fullmatch(lengths[0]):
            raise InvalidInput("Content-Length must be one decimal number")
        return BodyStream(self.rfile, int(lengths[0]), chunked=False)

    def _send(self, resp: Response) -> None:
        if isinstance(resp.body, FileBody):
            self._send_file(resp)
            return
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
        if self.close_connection and "Connection" not in resp.headers:
            # said, so a client keeping connections alive does not send its
            # next request on this one (a body refused unread closes it)
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _send_file(self, resp: Response) -> None:
        body = resp.body
        try:
            self.send_response(resp.status)
            self.send_header("Content-Type", resp.content_type)
            self.send_header("Content-Length", str(body.size))
            for k, v in resp.headers.items():
                self.send_header(k, v)
            self.end_headers()
            if self.command == "HEAD":
                return
            left = body.size
            while left > 0:
                block = body.file.read(min(1 << 20, left))
                if not block:           # the file shrank: the client sees a short body
                    self.close_connection = True
                    return
                self.wfile.write(block)
                left -= len(block)
        finally:
            body.file.close()


def _loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%")[0]).is_loopback
    except ValueError:
        return False
