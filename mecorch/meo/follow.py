"""The MEO follows its hosts' operations and instance states by their own
notifications.

Each MEPM reached over HTTP is asked, whenever it becomes REACHABLE, to
notify the MEO of its op occurrences' state changes: a MEC 010-2
AppLcmOpOccStateChange subscription on the host's `/app_lcm/v1`
(Mm3), with the MEO's callback `POST /mecorch/v1/hosts/{hostId}/notifications`
and a bearer token only the MEO and its hosts know. The host's sender
delivers them in order and retries them (mecorch.notifications.sender), so
the MEO learns that a host's op ended within a millisecond or two instead
of after its next poll: each one it dispatched is waited for here
(`wait`), and read once when its notification comes.

A second subscription on each such host, AppInstanceStateChange of every
state, tells the MEO that an instance changed on the host by itself or by
the host's operator (its restart policy gave up: STOPPED with CRASH_LOOP; an
operate or terminate sent to the MEPM directly): the MEO reads that one
instance from the host at once (`SystemLcm.refresh_instance`, off the
host's request, one read at a time per instance), instead of at its next
resync (every meo.sync_s, which stays the fallback after a notification
missed while the MEO was away). A subscription the host holds for this
route at another address of the MEO (a replica that led before) is
removed when the MEO subscribes (`Mepm.follow`).

Polling stays the fallback: a followed host's op is still read every
FALLBACK_POLL_S at the most, so nothing waits on a notification that
never comes; a host that refuses the subscription (an MEPM in process, a
callback its api.callback_networks refuses) is polled as before, and so is
one whose ops keep ending unnotified (`ended`: a certificate of the MEO it
does not trust, a notification lost with its store).

The token is kept in the MEO's state directory (0600): the subscriptions
a host keeps across the MEO's restarts still carry the right one.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
import threading
from pathlib import Path

from mecorch.kernel.errors import MecorchError, Unauthorized
from mecorch.kernel.http import PUBLIC, Request, Response, Router
from mecorch.meo.registry import HostEntry

log = logging.getLogger("mecorch.meo.follow")

HOSTS = "/mecorch/v1/hosts"
TOKEN_FILE = "meo-notification-token"
FALLBACK_POLL_S = 0.25      # a followed host's op is read at least this often
FINAL = ("COMPLETED", "FAILED", "ROLLED_BACK")
MAX_SAID = 1024             # ends notified before their wait began, kept this many
MISSES = 3                  # ops in a row seen ended unnotified: the host is polled again
MAX_REFRESHING = 32         # instance reads at once; beyond, the next resync reads them


class OpFollower:
    def __init__(self, state_dir: str, callback_url: str | None = None):
        # the MEO's own base URL as its hosts reach it (meo.callback_url,
        # else the address it serves on: set by `serve`); None: not followed
        self.callback_base = callback_url.rstrip("/") if callback_url else None
        self.token = _token(Path(state_dir) / TOKEN_FILE)
        self._lock = threading.Lock()
        self._waiting: dict[tuple[str, str], threading.Event] = {}
        # (host, op) -> the end it notified, oldest first (MAX_SAID kept)
        self._said: dict[tuple[str, str], str] = {}
        self.followed: set[str] = set()     # hosts that said they will notify
        self._misses: dict[str, int] = {}    # host -> its ops in a row ended unnotified
        # (host id, host's instance id) -> read it; set by the MEO's LCM
        self.on_instance = None
        # (host, instance) being read -> notified again meanwhile (read again)
        self._refreshing: dict[tuple[str, str], bool] = {}

    # ------------------------------------------------------------ subscribing
    def subscribe(self, entry: HostEntry) -> None:
        """Ask the host to notify its op changes here (again: a host keeps
        one such subscription, the same request finds it)."""
        if self.callback_base is None:
            return
        url = f"{self.callback_base}{HOSTS}/{entry.host_id}/notifications"
        try:
            will = entry.mepm.follow(url, self.token)
        except MecorchError as e:
            log.warning("edge host %s will not notify its operations (%s): the MEO polls "
                        "it", entry.host_id, e.detail)
            will = False
        with self._lock:
            (self.followed.add if will else self.followed.discard)(entry.host_id)
            self._misses.pop(entry.host_id, None)

    def ended(self, host_id: str, notified: bool) -> None:
        """A host's op was seen ended, after its notification or not. A
        host whose notifications do not come (its callback refused after
        all: a certificate it does not trust, a network it may not reach)
        is polled as before once MISSES ops in a row ended unnotified,
        until it is asked again on its next return."""
        with self._lock:
            if host_id not in self.followed:
                return
            if notified:
                self._misses.pop(host_id, None)
                return
            self._misses[host_id] = self._misses.get(host_id, 0) + 1
            if self._misses[host_id] < MISSES:
                return
            self.followed.discard(host_id)
        log.warning("edge host %s: its last %d operations ended without its notification: "
                    "the MEO polls it (until it is asked again on its return)", host_id,
                    MISSES)

    # ------------------------------------------------------------ waiting
    def waiter(self, host_id: str, op_id: str) -> threading.Event:
        with self._lock:
            return self._waiting.setdefault((host_id, op_id), threading.Event())

    def done(self, host_id: str, op_id: str) -> None:
        with self._lock:
            self._waiting.pop((host_id, op_id), None)
            self._said.pop((host_id, op_id), None)

    def poll_cap(self, host_id: str, cap: float) -> float:
        """How long a wait for a host's op may go without reading it."""
        return FALLBACK_POLL_S if host_id in self.followed else cap

    def notified(self, host_id: str, body) -> None:
        """A host's notification: wake whoever waits on that op, or read the
        instance whose state changed."""
        if not isinstance(body, dict):
            return
        if "appLcmOpOccId" not in body:         # an AppInstNotification
            iid = body.get("appInstanceId")
            if isinstance(iid, str) and 0 < len(iid) <= 128:
                self._instance_changed(host_id, iid)
            return
        op_id = body.get("appLcmOpOccId")
        if not isinstance(op_id, str):
            return
        # ETSI names an AppLcmOpOccNotification's state its notificationType.
        # Only an end wakes the wait (a PROCESSING read would be one more
        # call to the host per op, for nothing); a COMPLETED is taken as the
        # host said it, with no read (`said`), kept for a wait not yet begun
        state = body.get("notificationType")
        if state not in FINAL:
            return
        key = (host_id, op_id)
        with self._lock:
            event = self._waiting.get(key)
            self._said[key] = state
            while len(self._said) > MAX_SAID:
                self._said.pop(next(iter(self._said)))
        if event is not None:
            event.set()

    def said(self, host_id: str, op_id: str) -> str | None:
        """The end the host notified for its op (None: none yet)."""
        with self._lock:
            return self._said.get((host_id, op_id))

    def _instance_changed(self, host_id: str, iid: str) -> None:
        """Read the instance on a thread of its own (the host's sender waits
        for the answer to its POST; the read is a call back to that host).
        Notified again while it is read: read once more after."""
        key = (host_id, iid)
        with self._lock:
            if self.on_instance is None:
                return
            if key in self._refreshing:
                self._refreshing[key] = True
                return
            if len(self._refreshing) >= MAX_REFRESHING:
                log.debug("edge host %s: instance %s left to the next resync (%d reads "
                          "running)", host_id, iid, MAX_REFRESHING)
                return
            self._refreshing[key] = False
        threading.Thread(target=self._refresh, args=(key,), name=f"meo-refresh-{iid[:8]}",
                         daemon=True).start()

    def _refresh(self, key: tuple[str, str]) -> None:
        while True:
            try:
                self.on_instance(*key)
            except MecorchError as e:       # the host went away: the resync catches up
                log.info("edge host %s: instance %s not read after its notification: %s",
                         key[0], key[1], e.detail)
            except Exception:               # noqa: BLE001 - the next resync reads it
                log.exception("edge host %s: instance %s not read after its notification",
                              *key)
            with self._lock:
                if not self._refreshing.get(key):
                    self._refreshing.pop(key, None)
                    return
                self._refreshing[key] = False

    def check(self, authorization: str) -> None:
        """The host presents the token of its subscription (the callback
        is open to the network, like any notification callback)."""
        scheme, _, given = authorization.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
                given.strip().encode(), self.token.encode()):
            raise Unauthorized("not a notification of this MEO's hosts")


def install(r: Router, lcm) -> None:
    """The callback route; `lcm.follower` is read per request."""
    def receive(req: Request) -> Response:
        lcm.follower.check(req.headers.get("Authorization", ""))
        lcm.follower.notified(req.params["hostId"], req.json())
        return Response(204)
    r.add("POST", f"{HOSTS}/{{hostId}}/notifications", receive, PUBLIC, query=())


def _token(path: Path) -> str:
    """The MEO's notification token: made once, kept 0600."""
    try:
        return path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        pass
    token = secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:         # made meanwhile by another start
        return path.read_text(encoding="ascii").strip()
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(token + "\n")
    return token
