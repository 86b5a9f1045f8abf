"""Delivery of notifications to subscribers' callbacks, off the request path.

A notification is stored in the `outbox` table when the change happens (one
insert, on the operation's thread: nothing there waits on the network), and
one sender thread POSTs it to the subscription's callback:

- in order: per subscription, and per callback (a receiver gets what it
  subscribed to in the order it happened): while a notification to a
  callback fails, the later ones to that callback wait;
- retried with exponential backoff (0.25 s doubling, at most
  BACKOFF_MAX_S) while the callback fails (no answer within
  api.notify_timeout_s, a refused connection, an answer other than 2xx);
- the subscriptions of a callback that has failed without a break for
  api.notify_retry_s are dropped, their pending notifications with them:
  logged as a warning; until then each shows `deliveryFailure`;
- stored, so what was not delivered before a restart is sent after it.

Each POST goes through mecorch.kernel.outbound: callbacks may only point at
api.callback_networks, by IP address (or localhost; checked when the
subscription is made and again at each POST): no name is resolved, a
redirect is not followed (it counts as a failed delivery), and
api.notify_timeout_s bounds the whole attempt, not each read, so a
subscription cannot make mecorch reach anything else or hold its sender.
"""

from __future__ import annotations

import base64
import http.client
import ipaddress
import json
import logging
import threading
import time
from typing import Callable

from mecorch.kernel import outbound
from mecorch.kernel.errors import InvalidInput
from mecorch.kernel.store import ColumnIn, Store

SHARED_POLL_S = 0.5
log = logging.getLogger("mecorch.notify")
BACKOFF_FIRST_S = 0.25
BACKOFF_MAX_S = 10.0


def auth_header(auth: dict | None) -> str | None:
    """The Authorization header a subscription's stored authentication
    asks for (see subscriptions.parse_authentication)."""
    if not auth:
        return None
    if auth["type"] == "BASIC":
        pair = f"{auth['userName']}:{auth['password']}".encode()
        return "Basic " + base64.b64encode(pair).decode()
    return f"Bearer {auth['token']}"


class Notifier:
    """The outbox and its sender thread. `lookup(id)` gives the stored
    subscription a notification is for (None once it is deleted),
    `sharing(callbackUri)` the ids of every subscription with that callback,
    `failing(id, failure or None)` shows or clears a delivery failure on a
    subscription, and `dropped(id, reason)` is called when one is given up.

    Backoff, order and giving up go by callback, not by subscription: when a
    receiver is down, every subscription of it waits, so what it gets when
    it is back comes in the order it happened (across its subscriptions)."""

    def __init__(self, store: Store, cfg: dict, lookup: Callable[[str], dict | None],
                 sharing: Callable[[str], list[str]],
                 failing: Callable[[str, dict | None], None],
                 dropped: Callable[[str, str], None], outbox: str = "outbox"):
        self.store = store
        # the table of its pending notifications: one per sender (a sender
        # forgets what it finds for a subscription it does not know)
        self.outbox = outbox
        api = cfg["api"]
        self.timeout_s = float(api.get("notify_timeout_s", 5))
        self.retry_s = float(api.get("notify_retry_s", 600))
        self.networks = [ipaddress.ip_network(n) for n in api["callback_networks"]]
        self._lookup, self._sharing = lookup, sharing
        self._failing, self._dropped = failing, dropped
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # whether this process sends now (an MEO replica that does not hold
        # the lease leaves the outbox to the one that does: mecorch.meo.leader);
        # `shared`: other processes write the outbox too, so an idle sender
        # looks again every SHARED_POLL_S instead of waiting to be woken
        self.gate: Callable[[], bool] = lambda: True
        self.shared = False
        # callbackUri -> (failing since, attempts, next try): in memory; after
        # a restart a failing callback gets a fresh retry period
        self._backoff: dict[str, tuple[float, int, float]] = {}

    # ------------------------------------------------------------ producer side
    def enqueue(self, nid: str, subscription_id: str, body: dict) -> None:
        """Store one notification (the caller's thread: one insert)."""
        self.store.put(self.outbox, nid, {"id": nid, "subscriptionId": subscription_id,
                                       "body": body})
        self._wake.set()

    def forget(self, subscription_id: str) -> None:
        """Drop what is pending for a subscription (it was deleted)."""
        with self.store.transaction():
            for doc in self.store.list(self.outbox, subscriptionId=subscription_id):
                self.store.delete(self.outbox, doc["id"])

    def pending(self, subscription_id: str | None = None) -> int:
        if subscription_id is None:
            return len(self.store.list(self.outbox))
        return len(self.store.list(self.outbox, subscriptionId=subscription_id))

    # ------------------------------------------------------------ the sender
    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="notify", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(self.timeout_s + 5)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            if not self.gate():
                self._wake.wait(SHARED_POLL_S)
                continue
            try:
                wait = self.deliver_round()
            except Exception:  # noqa: BLE001 - the sender must outlive a bug or a store error
                log.exception("notification sender")
                wait = 1.0
            if self.shared:
                wait = min(wait, SHARED_POLL_S)
            if wait > 0:
                self._wake.wait(wait)

    def deliver_round(self) -> float:
        """Walk the pending notifications in the order they were made and
        try each whose callback is neither backing off nor blocked by an
        older notification that failed; the seconds until the next try is
        due (0: go on at once)."""
        wait = 3600.0
        blocked: set[str] = set()            # subscription ids
        after, done = 0, 0
        while not self._stop.is_set():
            match = None
            if blocked:
                match = ColumnIn("subscriptionId", tuple(sorted(blocked)), negate=True)
            rows = self.store.page(self.outbox, after, 100, match=match)
            if not rows:
                break
            for seq, doc in rows:
                after = seq
                sid = doc["subscriptionId"]
                if sid in blocked:
                    continue
                delay = self._try(sid, doc)
                if delay is None:
                    done += 1
                else:
                    # later notifications to the same receiver wait: its order
                    sub = self._lookup(sid)
                    blocked.update(self._sharing(sub["callbackUri"]) if sub else [sid])
                    wait = min(wait, delay)
        return 0 if done else wait

    def _try(self, sid: str, doc: dict) -> float | None:
        """Deliver one notification now if its callback is due: None when it
        is done with (delivered, or its subscription is gone), else the
        seconds until the callback's next try."""
        sub = self._lookup(sid)
        if sub is None:                      # deleted meanwhile
            self.forget(sid)
            return None
        url = sub["callbackUri"]
        now = time.monotonic()
        since, attempts, next_try = self._backoff.get(url, (now, 0, 0.0))
        if next_try > now:
            return next_try - now
        error = self._post(sub, doc["body"])
        now = time.monotonic()
        if error is None:
            self.store.delete(self.outbox, doc["id"])
            if self._backoff.pop(url, None) is not None:
                for other in self._sharing(url):
                    self._failing(other, None)
            return None
        attempts += 1
        if now - since >= self.retry_s:
            for other in self._sharing(url):
                log.warning("notification callback %s kept failing for %.0f s (%d attempts, "
                            "last: %s): subscription %s dropped", url, now - since, attempts,
                            error, other)
                self.forget(other)
                self._dropped(other, error)
            self._backoff.pop(url, None)
            return None
        delay = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** (attempts - 1))
        self._backoff[url] = (since, attempts, now + delay)
        if attempts == 1:
            log.warning("notification callback %s failed (%s); retrying for up to %.0f s",
                        url, error, self.retry_s)
        failure = {"since": time.time() - (now - since), "attempts": attempts,
                   "lastError": error}
        for other in self._sharing(url):
            self._failing(other, failure)
        return delay

    def _post(self, sub: dict, body: dict) -> str | None:
        """POST one notification; None on a 2xx answer, else what went wrong.
        Through mecorch.kernel.outbound: the callback is checked again (the
        allowed networks may have shrunk since it was stored), a redirect is
        an answer that failed, and api.notify_timeout_s bounds the whole
        attempt (a receiver dripping its answer byte by byte must not hold
        the sender)."""
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        authorization = auth_header(sub.get("_auth"))
        if authorization:
            headers["Authorization"] = authorization
        try:
            url = outbound.check_url(sub["callbackUri"], self.networks, "callbackUri")
            answer = outbound.request(url, "POST", self.timeout_s,
                                      json.dumps(body).encode(), headers)
        except InvalidInput as e:
            return e.detail
        except (OSError, http.client.HTTPException) as e:
            return f"{type(e).__name__}: {e}"[:300]
        if 200 <= answer.status < 300:
            return None
        return f"HTTP {answer.status}"
