"""A small client of mecorch's REST API, for the CLI and the demo."""

from __future__ import annotations

import errno
import http.client
import json
import os
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, TextIO

from mecorch.kernel.errors import InvalidInput, MecorchError, Timeout
from mecorch.kernel.fileutil import sha256_file

PKGM = "/app_pkgm/v1"


PROGRESS_EVERY_S = 10.0       # a waiting CLI says it still waits this often


class ApiError(MecorchError):
    """An error answer of the API, carrying its ProblemDetails."""

    def __init__(self, status: int, problem: dict):
        super().__init__(problem.get("detail") or problem.get("title") or f"HTTP {status}")
        self.status = status
        self.body = problem


# Methods a request of which may be sent again to another URL after it
# may have reached the first: they change nothing, or the same again
# (RFC 9110 9.2.2). A POST may be sent again only with an Idempotency-Key
# the API honours (create and instantiate: the replay answers what the
# first made).
IDEMPOTENT = ("GET", "HEAD", "OPTIONS", "PUT", "DELETE")
# Transport failures that happen before a byte of the request left: the
# connection was never made, so any request may go to the next URL.
_NOT_SENT = (ConnectionRefusedError, socket.gaierror)
_UNREACHABLE = (errno.EHOSTUNREACH, errno.ENETUNREACH)


class Client:
    """`base_url`: the API's URL, or several separated by commas (the
    replicas of one MEO, or a load balancer and a replica): each request
    goes to the one that answered last (first the first), and on to the
    next when that one cannot be reached or answers 503, as long as
    sending it again is safe: a request that never left, an idempotent
    method, or a POST with an Idempotency-Key."""

    def __init__(self, base_url: str, token: str | None = None, timeout: float = 60):
        self.bases = parse_urls(base_url)
        self.base = self.bases[0]         # the one in use: the last that answered
        self.token = token if token is not None else os.environ.get("MECORCH_TOKEN")
        self.timeout = timeout

    def call(self, method: str, path: str, body: Any = None,
             headers: dict | None = None) -> tuple[int, Any, dict]:
        data = json.dumps(body).encode() if body is not None else None
        hdrs = {"Accept": "application/json", **(headers or {})}
        if data is not None:
            hdrs["Content-Type"] = "application/json"
        return self._send(method, path, lambda: data, hdrs)

    def _send(self, method: str, path: str, data, hdrs: dict) -> tuple[int, Any, dict]:
        """`data()` gives the body anew for each URL tried (a file is
        opened again)."""
        if self.token:
            hdrs = {**hdrs, "Authorization": f"Bearer {self.token}"}
        again = method in IDEMPOTENT or bool(hdrs.get("Idempotency-Key"))
        start = self.bases.index(self.base) if self.base in self.bases else 0
        order = self.bases[start:] + self.bases[:start]
        failed: list[str] = []
        for i, base in enumerate(order):
            last = i == len(order) - 1
            req = urllib.request.Request(base + path, data=data(), method=method, headers=hdrs)
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:   # noqa: S310
                    self.base = base
                    return resp.status, _decode(resp.read(), resp.headers), dict(resp.headers)
            except urllib.error.HTTPError as e:
                payload = _decode(e.read(), e.headers)
                if e.code == 503 and again and not last:
                    failed.append(f"{base}: HTTP 503")
                    continue                # not ready, no leader, a proxy without a backend
                self.base = base
                raise ApiError(e.code, payload if isinstance(payload, dict) else {}) from None
            except (OSError, http.client.HTTPException) as e:
                # (an answer cut short, a malformed one: HTTPException)
                reason = getattr(e, "reason", e) or type(e).__name__
                failed.append(f"{base}: {reason}")
                if last:
                    break
                if again or _never_sent(e):
                    continue
                raise MecorchError(
                    f"cannot reach mecorch at {base}: {reason}; a {method} without an "
                    "Idempotency-Key is not sent to another URL (it may have reached this "
                    f"one: look before you retry): {', '.join(failed)}") from None
            finally:
                close = getattr(req.data, "close", None)
                if close is not None:
                    close()
        if len(self.bases) == 1:
            raise MecorchError(f"cannot reach mecorch at {failed[0]}")
        raise MecorchError(f"cannot reach mecorch at any of its URLs: {'; '.join(failed)}")

    def get(self, path: str) -> Any:
        return self.call("GET", path)[1]

    def get_all(self, path: str) -> list:
        """A listing with every page (follows Link rel="next", NFV-SOL 013)."""
        items: list = []
        while path:
            _, page, headers = self.call("GET", path)
            items += page
            path = _next_link(headers.get("Link", ""))
        return items

    def post(self, path: str, body: Any, headers: dict | None = None) -> tuple[Any, dict]:
        _, data, hdrs = self.call("POST", path, body, headers)
        return data, hdrs

    def upload_package(self, create_body: dict, zip_path: str | os.PathLike) -> dict:
        """Two-step onboarding as an OSS does it: create the package resource
        (CreateAppPkg without appPkgPath; the checksum is computed here when
        the body has none), then PUT the zip to its package_content, streamed
        from the file. Returns the onboarded AppPkgInfo. If the upload is
        refused, the server has already removed the resource."""
        body = {k: v for k, v in create_body.items() if k != "appPkgPath"}
        if "checksum" not in body:
            body["checksum"] = {"algorithm": "SHA-256", "hash": sha256_file(zip_path)}
        info, _ = self.post(f"{PKGM}/app_packages", body)
        href = info["_links"]["appPkgContent"]["href"]
        size = os.path.getsize(zip_path)
        hdrs = {"Content-Type": "application/zip", "Content-Length": str(size),
                "Accept": "application/json"}
        # streamed from the file, opened again for each URL tried
        self._send("PUT", href, lambda: open(zip_path, "rb"), hdrs)
        return self.get(info["_links"]["self"]["href"])

    def wait_op(self, op: dict, timeout: float = 600, out: TextIO | None = None) -> dict:
        """Poll an LCM op occurrence until it ends, printing progress."""
        href = op["_links"]["self"]["href"]
        t0 = time.monotonic()
        deadline = t0 + timeout
        seen_state, seen_steps = None, 0
        said = t0
        while True:
            cur = self.get(href)
            if out is not None:
                now = time.monotonic()
                if cur["operationState"] != seen_state:
                    seen_state = cur["operationState"]
                    said = now
                    print(f"  {_op_name(cur)} {seen_state}", file=out, flush=True)
                elif now - said >= PROGRESS_EVERY_S:
                    said = now
                    print(f"  {_op_name(cur)} {seen_state}, {now - t0:.0f} s ...",
                          file=out, flush=True)
            if cur["operationState"] in ("COMPLETED", "FAILED"):
                return cur
            if time.monotonic() > deadline:
                raise Timeout(f"operation {cur['id']} still {cur['operationState']} "
                              f"after {timeout:.0f}s")
            time.sleep(0.2)
            seen_steps += 1


def parse_urls(text: str) -> list[str]:
    """The API's URLs from `--api`/MECORCH_API: one, or several separated
    by commas; each an http(s) URL of a host (a path prefix is kept)."""
    urls = [u.strip().rstrip("/") for u in str(text).split(",")]
    for url in urls:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidInput(f"API URL {url!r} must be http(s)://HOST:PORT (several: "
                               "separated by commas)")
    if len(set(urls)) != len(urls):
        raise InvalidInput(f"API URLs {text!r} name one URL twice")
    return urls


def _never_sent(e: Exception) -> bool:
    """The request never left: the connection itself was refused or had
    no route (urllib wraps what the connect raised in a URLError)."""
    reason = getattr(e, "reason", e)
    return isinstance(reason, _NOT_SENT) or (
        isinstance(reason, OSError) and reason.errno in _UNREACHABLE)


def _op_name(op: dict) -> str:
    """INSTANTIATE, TERMINATE, OPERATE (ETSI's lcmOperation spells the
    first INSTATIATE; operationParams spells it right)."""
    return str(op.get("operationParams") or op.get("lcmOperation"))


def _next_link(link: str) -> str | None:
    for part in link.split(","):
        target, _, params = part.partition(";")
        if 'rel="next"' in params.replace(" ", ""):
            return target.strip().strip("<>")
    return None


def _decode(raw: bytes, headers) -> Any:
    ctype = headers.get("Content-Type", "") if headers else ""
    if "json" in ctype and raw:
        return json.loads(raw)
    return raw


def print_json(doc: Any, out: TextIO | None = None) -> None:
    print(json.dumps(doc, indent=2, sort_keys=False), file=out or sys.stdout)
