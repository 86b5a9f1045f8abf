"""A small client of mecorch's REST API, for the CLI and the demo."""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from typing import Any, TextIO

from mecorch.kernel.errors import MecorchError, Timeout
from mecorch.kernel.fileutil import sha256_file

PKGM = "/app_pkgm/v1"


PROGRESS_EVERY_S = 10.0       # a waiting CLI says it still waits this often


class ApiError(MecorchError):
    """An error answer of the API, carrying its ProblemDetails."""

    def __init__(self, status: int, problem: dict):
        super().__init__(problem.get("detail") or problem.get("title") or f"HTTP {status}")
        self.status = status
        self.body = problem


class Client:
    def __init__(self, base_url: str, token: str | None = None, timeout: float = 60):
        self.base = base_url.rstrip("/")
        self.token = token if token is not None else os.environ.get("MECORCH_TOKEN")
        self.timeout = timeout

    def call(self, method: str, path: str, body: Any = None,
             headers: dict | None = None) -> tuple[int, Any, dict]:
        data = json.dumps(body).encode() if body is not None else None
        hdrs = {"Accept": "application/json", **(headers or {})}
        if data is not None:
            hdrs["Content-Type"] = "application/json"
        if self.token:
            hdrs["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=hdrs)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:   # noqa: S310
                return resp.status, _decode(resp.read(), resp.headers), dict(resp.headers)
        except urllib.error.HTTPError as e:
            payload = _decode(e.read(), e.headers)
            raise ApiError(e.code, payload if isinstance(payload, dict) else {}) from None
        except OSError as e:
            raise MecorchError(f"cannot reach mecorch at {self.base}: {e}") from None

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
        if self.token:
            hdrs["Authorization"] = f"Bearer {self.token}"
        with open(zip_path, "rb") as f:
            req = urllib.request.Request(self.base + href, data=f, method="PUT", headers=hdrs)
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:   # noqa: S310
                    resp.read()
            except urllib.error.HTTPError as e:
                payload = _decode(e.read(), e.headers)
                raise ApiError(e.code, payload if isinstance(payload, dict) else {}) from None
            except OSError as e:
                raise MecorchError(f"cannot upload to mecorch at {self.base}: {e}") from None
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
