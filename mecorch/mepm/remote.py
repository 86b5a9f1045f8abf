"""The MEPM contract over HTTP: an edge host's MEPM reached at its URL
through ETSI MEC 010-2's own resources (Mm3), with a bearer token, over
TLS when the URL is https (the MEPM's certificate checked against the
configured CA file).

The transport is mecorch.kernel.outbound (no redirect followed, a total deadline
per call, a token only over https or to loopback). One place maps it: an unreachable host is BackendUnavailable;
an answer that refuses becomes the mecorch error of its status, with the
MEPM's ProblemDetails detail, so the MEO can tell "the host is away" from
"the host said no". Connections are kept alive (a few per MEPM, shared by
the threads that call it): a deploy makes a handful of calls and must not
pay a TCP (and TLS) handshake for each.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import ssl
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

from mecorch.kernel import errors, outbound
from mecorch.kernel.client import _next_link           # one reading of Link rel="next"
from mecorch.kernel.errors import BackendUnavailable, MecorchError
from mecorch.mepm.contract import HostInfo, Mepm

log = logging.getLogger("mecorch.mepm.remote")

# How a kept-alive connection the MEPM closed while it was idle shows on the
# next request: over TLS the close arrives as an SSL EOF, not as the plain
# socket's RemoteDisconnected (seen in the Vagrant lab: a terminate sent
# after a minute without calls failed with "EOF occurred in violation of
# protocol").
_CLOSED_BY_SERVER = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
                     ssl.SSLEOFError, ssl.SSLZeroReturnError)

PKGM = "/app_pkgm/v1"
LCM = "/app_lcm/v1"
HOSTS = "/mecorch/v1/hosts"
MP1 = "/mec_app_support/v1"
SERVICE_MGMT = "/mec_service_mgmt/v1"
# The MEO's id of the package or instance a POST creates on the MEPM (one
# identity across the levels): a mecorch extension of Mm3, taken by an MEPM
# from its MEO only (mecorch.api).
MEO_ID = "X-Mecorch-Meo-Id"
# What the MEO follows of a host by notifications (mecorch.meo.follow): its
# op occurrences and its instances' states.
FOLLOWED = ("AppLcmOpOccStateChange", "AppInstanceStateChange")
ONBOARD_TIMEOUT_S = 600.0
# a relocation's data, either way, within this (16 GiB at 40 MB/s: 7 min)
DATA_TIMEOUT_S = 3600.0
DATA = "/mecorch/v1/app_instances/{}/data"
# a live relocation's steps (mecorch.mepm.live): live_source, incoming, migrate
LIVE = "/mecorch/v1/app_instances/{}/{}"
PREPARE_TIMEOUT_S = 300.0
TAR = "application/x-tar"
MAX_IDLE = 4                # kept-alive connections kept per MEPM between calls
_BY_STATUS = {400: errors.InvalidInput, 401: errors.Unauthorized, 403: errors.Forbidden,
              404: errors.NotFound, 409: errors.Conflict, 412: errors.PreconditionFailed,
              413: errors.PayloadTooLarge, 422: errors.IntegrityError,
              502: errors.BackendError, 503: errors.BackendUnavailable, 504: errors.Timeout}
# The class the MEPM raised, by its ProblemDetails status and title: a 422
# is IdempotencyMismatch or IntegrityError, a 409 CapacityExceeded or
# ImageUnavailable... (_BY_STATUS for a peer that answers without a title)
_BY_PROBLEM = {(c.status, c.title): c for c in vars(errors).values()
               if isinstance(c, type) and issubclass(c, MecorchError) and "title" in vars(c)}


class RemoteMepm(Mepm):
    def __init__(self, host_id: str, url: str, token: str | None = None,
                 ca_file: str | None = None, timeout_s: float = 10.0, field: str = "MEPM url"):
        """`field` names where `url` comes from (a config key, a request
        field) in the errors about it."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
            raise errors.InvalidInput(f"{field} {url!r} must be http(s)://HOST:PORT")
        # every call carries a bearer token (or is a registration with one)
        outbound.check_token_url(url, field)
        self.host_id = host_id
        self.url = url.rstrip("/")
        self._token = token
        self._timeout = timeout_s
        self._ctx: ssl.SSLContext | None = None
        if parts.scheme == "https":
            self._ctx = ssl.create_default_context(cafile=ca_file)
        # kept-alive connections no call holds: a call takes one (or makes
        # one) and gives it back. They were one per thread: an MEO's 8
        # heartbeat and 16 LCM threads each kept one to every host, 18,000
        # sockets for 1,000 hosts (its RSS, its open files limit)
        self._idle: list[http.client.HTTPConnection] = []
        self._idle_lock = threading.Lock()

    # ---------------------------------------------------------------- transport
    def _take(self) -> http.client.HTTPConnection:
        with self._idle_lock:
            if self._idle:
                return self._idle.pop()
        return outbound.connection(self.url, self._timeout, self._ctx)

    def _give(self, conn: http.client.HTTPConnection) -> None:
        with self._idle_lock:
            if len(self._idle) < MAX_IDLE:
                self._idle.append(conn)
                return
        conn.close()

    def _drop(self) -> None:
        """Close the idle connections (the server closed them, or the MEPM
        is let go)."""
        with self._idle_lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def call(self, method: str, path: str, body: Any = None, headers: dict | None = None,
             raw: Any = None) -> tuple[int, Any]:
        status, doc, _ = self._request(method, path, body, headers, raw)
        return status, doc

    def get_all(self, path: str) -> list:
        """A listing with all its pages (NFV-SOL 013: Link rel="next")."""
        items: list = []
        while path:
            _, page, headers = self._request("GET", path)
            items += page or []
            path = _next_link(headers.get("link", ""))
        return items

    def _request(self, method: str, path: str, body: Any = None, headers: dict | None = None,
                 raw: Any = None, timeout_s: float | None = None, decode: bool = True,
                 answered: tuple = ()) -> tuple[int, Any, dict]:
        """`decode`: the body as JSON (else its bytes); `answered`: error
        statuses that are an answer here (returned, not raised)."""
        hdrs = {"Accept": "application/json", **(headers or {})}
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        if self._token:
            hdrs["Authorization"] = f"Bearer {self._token}"
        for attempt in (1, 2):
            # a body streamed from a file cannot be sent twice: it goes on a
            # fresh connection, never a kept-alive one the server may have
            # closed meanwhile (a relocation's data PUT failed so, "Remote
            # end closed connection without response", with several moves
            # at once)
            conn = self._take() if attempt == 1 and raw is None else outbound.connection(
                self.url, self._timeout, self._ctx)
            try:
                # the whole call within the deadline (a longer one for a
                # synchronous onboarding); redirects are not followed
                answer = outbound.exchange(conn, method, path, timeout_s or self._timeout,
                                           data, hdrs)
                break
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                # a kept-alive connection the server closed meanwhile: one
                # fresh try (never for a body streamed from a file); the
                # other idle ones are as likely closed
                if attempt == 1 and raw is None and isinstance(e, _CLOSED_BY_SERVER):
                    self._drop()
                    continue
                raise BackendUnavailable(
                    f"edge host {self.host_id!r}: MEPM at {self.url} unreachable: {e}") from None
        self._give(conn)
        doc = _decode(answer.body)
        if answer.status in answered:
            return answer.status, doc, answer.headers
        if 300 <= answer.status < 400:
            raise errors.BackendError(f"edge host {self.host_id!r}: MEPM at {self.url} "
                                      f"answered HTTP {answer.status} (a redirect: not "
                                      "followed)")
        if answer.status >= 400:
            raise self._refusal(answer.status, doc)
        return answer.status, doc if decode else answer.body, answer.headers

    def _refusal(self, status: int, doc: Any) -> MecorchError:
        """The mecorch error the MEPM answered (its ProblemDetails)."""
        detail = doc.get("detail") if isinstance(doc, dict) else None
        title = doc.get("title") if isinstance(doc, dict) else None
        cls = _BY_PROBLEM.get((status, title)) or _BY_STATUS.get(status, MecorchError)
        err = cls(f"edge host {self.host_id!r}: {detail or f'HTTP {status}'}")
        if cls is MecorchError:
            err.status = status
        return err

    def _get(self, path: str) -> Any:
        return self.call("GET", path)[1]

    # ---------------------------------------------------------------- host
    def info(self) -> HostInfo:
        return HostInfo.from_dict(self._get(f"{HOSTS}/{self.host_id}"))

    def discover(self) -> list[str]:
        """Host ids the MEPM at this URL serves (one for an MEPM)."""
        return [h["hostId"] for h in self._get(HOSTS)]

    # ---------------------------------------------------------------- packages
    def _package(self, app_d_id: str, versions: tuple) -> dict | None:
        """The host's package of that appDId and (appDVersion,
        appSoftwareVersion)."""
        q = urllib.parse.quote(f"(eq,appDId,{app_d_id})")
        found = self.get_all(f"{PKGM}/app_packages?filter={q}")
        for p in found:
            if (p.get("appDVersion"), p.get("appSoftwareVersion")) == versions:
                return p
        return None

    def ensure_package(self, pkg: dict, zip_path: str) -> str:
        have = self._package(pkg["appDId"], (pkg.get("appDVersion"),
                                             pkg.get("appSoftwareVersion")))
        if have is None:
            have = self._upload(pkg, zip_path)
        if have.get("operationalState") == "DISABLED":
            self.call("PATCH", f"{PKGM}/app_packages/{have['id']}", {"operationState": "ENABLED"})
        return have["id"]

    def _upload(self, pkg: dict, zip_path: str) -> dict:
        """Create + PUT package_content (MEC 010-2's two-step onboarding):
        the MEPM may be on another machine, so it gets the bytes, not a path."""
        _, info = self.call("POST", f"{PKGM}/app_packages", {
            "appPkgName": pkg["appPkgName"], "appPkgVersion": pkg["appPkgVersion"],
            "checksum": {"algorithm": "SHA-256", "hash": pkg["checksum"]["hash"]},
            "userDefinedData": {"mecorch.meoPackageId": pkg["id"]}}, {MEO_ID: pkg["id"]})
        size = os.path.getsize(zip_path)
        with open(zip_path, "rb") as f:
            # the host answers once the package is ONBOARDED (its image
            # loaded into its repository): seconds, not the usual round trip
            self._request("PUT", f"{PKGM}/app_packages/{info['id']}/package_content",
                          headers={"Content-Type": "application/zip",
                                   "Content-Length": str(size)},
                          raw=f, timeout_s=ONBOARD_TIMEOUT_S)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            doc = self._get(f"{PKGM}/app_packages/{info['id']}")
            if doc.get("onboardingState") == "ONBOARDED":
                return doc
            if doc.get("onboardingState") == "ERROR":
                raise errors.Conflict(f"edge host {self.host_id!r} could not onboard "
                                      f"package {pkg['appDId']}")
            time.sleep(0.2)
        raise errors.Timeout(f"edge host {self.host_id!r}: package onboarding took over 600 s")

    def remove_package(self, app_d_id: str, versions: tuple) -> None:
        have = self._package(app_d_id, versions)
        if have is None:
            return
        if have.get("operationalState") == "ENABLED":
            try:
                self.call("PATCH", f"{PKGM}/app_packages/{have['id']}",
                          {"operationState": "DISABLED"})
            except errors.Conflict:
                pass                # disabled meanwhile
        try:
            self.call("DELETE", f"{PKGM}/app_packages/{have['id']}")
        except errors.NotFound:
            pass

    # ---------------------------------------------------------------- instances
    def create_instance(self, body: dict, key: str, instance_id: str | None = None) -> dict:
        headers = {"Idempotency-Key": key}
        if instance_id is not None:
            headers[MEO_ID] = instance_id
        return self.call("POST", f"{LCM}/app_instances", body, headers)[1]

    def instantiate(self, instance_id: str, body: dict, key: str) -> dict:
        return self.call("POST", f"{LCM}/app_instances/{instance_id}/instantiate", body,
                         {"Idempotency-Key": key})[1]

    def unfence(self, instance_ids: list[str]) -> dict:
        return self.call("POST", f"{HOSTS}/{self.host_id}/unfence",
                         {"appInstanceIds": list(instance_ids)})[1]

    def terminate(self, instance_id: str, body: dict) -> dict:
        return self.call("POST", f"{LCM}/app_instances/{instance_id}/terminate", body)[1]

    def operate(self, instance_id: str, body: dict) -> dict:
        return self.call("POST", f"{LCM}/app_instances/{instance_id}/operate", body)[1]

    def delete_instance(self, instance_id: str) -> None:
        try:
            self.call("DELETE", f"{LCM}/app_instances/{instance_id}")
        except errors.NotFound:
            pass

    def get_instance(self, instance_id: str) -> dict | None:
        try:
            return self._get(f"{LCM}/app_instances/{instance_id}")
        except errors.NotFound:
            return None

    def list_instances(self) -> list[dict]:
        return self.get_all(f"{LCM}/app_instances")

    def get_op(self, op_id: str) -> dict | None:
        try:
            return self._get(f"{LCM}/app_lcm_op_occs/{op_id}")
        except errors.NotFound:
            return None

    def ops_of(self, instance_id: str) -> list[dict]:
        q = urllib.parse.quote(f"(eq,appInstanceId,{instance_id})")
        return self._get(f"{LCM}/app_lcm_op_occs?filter={q}")

    # ---------------------------------------------------------------- what only the host has
    def rules(self, instance_id: str) -> dict | None:
        """Read through the host's Mp1 (MEC 011), with the operator's token."""
        out = {}
        for kind, key in (("traffic_rules", "trafficRules"), ("dns_rules", "dnsRules")):
            try:
                out[key] = self._get(f"{MP1}/applications/{instance_id}/{kind}")
            except errors.NotFound:
                return None
        return out

    def logs(self, instance_id: str, tail: int | None = None) -> tuple[bytes, str]:
        query = f"?tail={int(tail)}" if tail is not None else ""
        _, data, headers = self._request("GET", f"{LCM}/app_instances/{instance_id}/logs{query}",
                                         decode=False)
        return data or b"", headers.get("x-mecorch-logs-source", "backend")

    def health(self) -> list[dict]:
        """The MEPM's /readyz checks of this host (its last background
        probes: no backend is touched by the call); a 503 there is an
        answer (a backend down), not an unreachable host."""
        _, doc, _ = self._request("GET", "/readyz", answered=(503,))
        out = []
        for chk in (doc or {}).get("checks") or []:
            host, _, role = str(chk.get("name", "")).rpartition("/")
            if host == self.host_id:
                out.append({"role": role, "driver": chk.get("driver"), "ok": bool(chk.get("ok")),
                            "detail": chk.get("detail", "")})
        return out

    # ---------------------------------------------------------------- a relocation's data
    def export_data(self, instance_id: str, into: Path) -> None:
        """GET .../data, its body written to `into` as it arrives (a
        connection of its own, never the body whole in memory); a refusal
        is the MEPM's error, and leaves no file."""
        into = Path(into)
        refused: list = []

        def sink(resp) -> None:
            if resp.status != 200:
                refused.append((resp.status, _decode(resp.read(outbound.MAX_ANSWER_BYTES))))
                return
            with open(into, "wb") as out:
                while block := resp.read(1 << 20):
                    out.write(block)
            if resp.length:                 # http.client: bytes the answer still owes
                raise http.client.IncompleteRead(b"", resp.length)
        conn = outbound.connection(self.url, self._timeout, self._ctx)
        try:
            outbound.exchange(conn, "GET", DATA.format(urllib.parse.quote(instance_id, safe="")),
                              DATA_TIMEOUT_S, None, self._headers(TAR), sink)
        except outbound.DeadlineExceeded:
            into.unlink(missing_ok=True)
            raise errors.Timeout(f"edge host {self.host_id!r}: data of {instance_id} not read "
                                 f"within {DATA_TIMEOUT_S:g} s") from None
        except (OSError, http.client.HTTPException) as e:
            into.unlink(missing_ok=True)
            raise BackendUnavailable(f"edge host {self.host_id!r}: data of {instance_id} not "
                                     f"read from the MEPM at {self.url}: {e}") from None
        finally:
            conn.close()
        if refused:
            into.unlink(missing_ok=True)
            raise self._refusal(*refused[0])

    def import_data(self, instance_id: str, archive: Path) -> None:
        """PUT .../data, the body sent from the file in blocks."""
        size = os.path.getsize(archive)
        with open(archive, "rb") as f:
            self._request("PUT", DATA.format(urllib.parse.quote(instance_id, safe="")),
                          headers={"Content-Type": TAR, "Content-Length": str(size)},
                          raw=f, timeout_s=DATA_TIMEOUT_S)

    def _headers(self, accept: str) -> dict:
        hdrs = {"Accept": accept}
        if self._token:
            hdrs["Authorization"] = f"Bearer {self._token}"
        return hdrs

    def follow(self, callback_url: str, token: str) -> bool:
        """Two MEC 010-2 subscriptions on the host (one type each, as ETSI
        models them): AppLcmOpOccStateChange and AppInstanceStateChange of
        every state; a 303 is the same one, made before. Then the host's
        subscriptions for this callback's path at another address are
        removed (`_forget_others`)."""
        auth = {"authType": ["BEARER"], "paramsBearer": {"token": token}}
        for kind in FOLLOWED:
            self._request("POST", f"{LCM}/subscriptions", {
                "subscriptionType": kind, "callbackUri": callback_url, "authentication": auth},
                answered=(303,))
        try:
            self._forget_others(callback_url)
        except MecorchError as e:       # the new ones are made: tried again at the next
            log.warning("edge host %s: subscriptions of the MEO's former addresses not "
                        "removed: %s", self.host_id, e.detail)
        return True

    def _forget_others(self, callback_url: str) -> list[str]:
        """Remove the host's subscriptions whose callback is this one's path
        (the MEO's notification route for this host id) at another scheme
        or address: made by an MEO replica that led before, or the MEO at
        an address it no longer has. The host would go on sending to (and
        retrying) a callback nobody reads. Nothing else is touched: an
        OSS's subscriptions name other paths. Returns the removed ids."""
        mine = urllib.parse.urlsplit(callback_url)
        listing = self._get(f"{LCM}/subscriptions") or {}
        removed = []
        for link in (listing.get("_links") or {}).get("subscriptions") or []:
            href = link.get("href") if isinstance(link, dict) else None
            if not isinstance(href, str) or link.get("subscriptionType") not in FOLLOWED \
                    or not href.startswith(f"{LCM}/subscriptions/") or "?" in href:
                continue
            try:
                sub = self._get(href)
                theirs = urllib.parse.urlsplit(str(sub.get("callbackUri", "")))
                if theirs.path != mine.path \
                        or (theirs.scheme, theirs.netloc) == (mine.scheme, mine.netloc):
                    continue
                self.call("DELETE", href)
            except errors.NotFound:
                continue                # removed meanwhile
            log.info("edge host %s: removed subscription %s of a former MEO address (%s)",
                     self.host_id, href.rsplit("/", 1)[-1], sub.get("callbackUri"))
            removed.append(href.rsplit("/", 1)[-1])
        return removed

    # ---------------------------------------------------------------- a live relocation
    def live_source(self, instance_id: str) -> dict:
        return self._get(LIVE.format(_q(instance_id), "live_source"))

    def prepare_incoming(self, instance_id: str, body: dict, source: dict) -> dict:
        """The target makes the room (its volumes): longer than a plain call."""
        return self._request("POST", LIVE.format(_q(instance_id), "incoming"),
                             {"instantiateAppRequest": body, "source": source},
                             timeout_s=PREPARE_TIMEOUT_S)[1]

    def abort_incoming(self, instance_id: str) -> None:
        try:
            self._request("DELETE", LIVE.format(_q(instance_id), "incoming"),
                          timeout_s=PREPARE_TIMEOUT_S)
        except errors.NotFound:
            pass                    # no such instance: nothing kept

    def migrate_out(self, instance_id: str, offer: dict) -> None:
        """Answered once the instance runs on the target (the MEPM's driver
        bounds the migration by mecorch.mepm.live.MIGRATE_TIMEOUT_S, below
        this wait)."""
        self._request("POST", LIVE.format(_q(instance_id), "migrate"), {"offer": offer},
                      timeout_s=DATA_TIMEOUT_S)

    def services(self) -> list[dict]:
        """Its registry, with the operator's token (an MEPM serves one host)."""
        return self._get(f"{SERVICE_MGMT}/services")

    def close(self) -> None:
        self._drop()


def _q(instance_id: str) -> str:
    return urllib.parse.quote(instance_id, safe="")


def _decode(payload: bytes) -> Any:
    if not payload:
        return None
    try:
        return json.loads(payload)
    except ValueError:
        return None


