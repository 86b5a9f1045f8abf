"""Termination notices: an app's AppTerminationNotification subscriptions
told of a graceful termination, and the app's answers (confirm_termination,
confirm_ready).

A graceful termination posts the notices in parallel through
mecorch.kernel.outbound (no redirect followed, each POST bounded as a
whole) and waits for confirm_termination; notices and wait together never
outlast the graceful timeout, and a FORCEFUL terminate cuts the wait short
(mecorch.mepm.lcm).
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import logging
import threading
import time

from mecorch.kernel import outbound
from mecorch.kernel.errors import Conflict, InvalidInput
from mecorch.mepm.mp1 import MP1, instance_record
from mecorch.kernel.store import Store

log = logging.getLogger("mecorch.mep")
CANCEL_POLL_S = 0.1         # how soon a superseded termination stops waiting


class TerminationNotices:
    def __init__(self, store: Store, subs_lock: threading.Lock,
                 callback_networks: list, notify_timeout_s: float):
        self.store = store
        self.subs_lock = subs_lock
        self._termination: dict[str, _TerminationWait] = {}
        self.callback_networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = \
            callback_networks
        self.notify_timeout_s = notify_timeout_s

    def notify_termination(self, instance_id: str, timeout_s: float,
                           action: str = "TERMINATING",
                           cancel: threading.Event | None = None) -> bool:
        """Send AppTerminationNotification to the app's subscriptions and
        wait for confirm_termination. True if confirmed; no subscription, or
        none that took its notice, means nothing to wait for (False).

        All of it, the notices and the wait, ends within `timeout_s` (the
        graceful timeout): the notices are posted in parallel, each bounded
        by the time left (and api.notify_timeout_s) as a whole, so no
        subscriber, however slow, holds the termination longer. `cancel`
        set (a FORCEFUL terminate superseding this one) ends the wait
        within CANCEL_POLL_S (False)."""
        subs = self.store.list("subscriptions", appInstanceId=instance_id)
        if not subs or timeout_s <= 0:
            return False
        end = time.monotonic() + timeout_s
        wait = _TerminationWait()
        with self.subs_lock:
            self._termination[instance_id] = wait
        try:
            for sub in subs:
                threading.Thread(target=self._notice, args=(instance_id, sub, action,
                                                            timeout_s, end, wait),
                                 name=f"mp1-notice-{instance_id[:8]}", daemon=True).start()
            while not wait.confirmed:
                left = end - time.monotonic()
                if left <= 0 or (cancel is not None and cancel.is_set()):
                    return False
                if wait.finished == len(subs) and not wait.delivered:
                    return False            # nobody took the notice: nobody will confirm
                wait.wake.wait(min(left, CANCEL_POLL_S))
                wait.wake.clear()
            return True
        finally:
            with self.subs_lock:
                self._termination.pop(instance_id, None)

    def _notice(self, instance_id: str, sub: dict, action: str, timeout_s: float,
                end: float, wait: "_TerminationWait") -> None:
        """POST one termination notice (its own thread), through
        mecorch.kernel.outbound: the callback checked again, no redirect followed
        (a 3xx is a notice not taken), the whole POST bounded by the
        graceful deadline."""
        url = sub["callbackReference"]
        note = {"notificationType": "AppTerminationNotification",
                "operationAction": action, "maxGracefulTimeout": int(timeout_s),
                "_links": {"subscription": {"href": sub["_links"]["self"]["href"]},
                           "confirmTermination": {
                               "href": f"{MP1}/applications/{instance_id}/confirm_termination"}}}
        delivered = False
        try:
            url = outbound.check_url(url, self.callback_networks, "callbackReference")
            answer = outbound.request(url, "POST",
                                      min(self.notify_timeout_s, end - time.monotonic()),
                                      json.dumps(note).encode(),
                                      {"Content-Type": "application/json"})
            delivered = 200 <= answer.status < 300
            if not delivered:
                log.warning("termination notice to %s answered HTTP %d (redirects are not "
                            "followed)", url, answer.status)
        except InvalidInput as e:
            log.warning("termination notice not sent: %s", e.detail)
        except (OSError, http.client.HTTPException) as e:
            log.warning("termination notice to %s failed: %s", url, e)
        finally:
            with self.subs_lock:
                wait.finished += 1
                wait.delivered += delivered
            wait.wake.set()

    def confirm_termination(self, instance_id: str, body) -> None:
        instance_record(self.store, instance_id)
        if not isinstance(body, dict) or body.get("operationAction") not in ("TERMINATING",
                                                                              "STOPPING"):
            raise InvalidInput("operationAction must be TERMINATING or STOPPING")
        with self.subs_lock:
            wait = self._termination.get(instance_id)
        if wait is None:
            raise Conflict(f"no termination of instance {instance_id} is in progress")
        wait.confirmed = True
        wait.wake.set()

    def confirm_ready(self, instance_id: str, body) -> None:
        inst = instance_record(self.store, instance_id)
        if not isinstance(body, dict) or body.get("indication") != "READY":
            raise InvalidInput("indication must be READY")
        inst["_ready"] = True
        self.store.put("instances", instance_id, inst)


class _TerminationWait:
    """One notify_termination under way: what its notice threads and
    confirm_termination tell it (counters changed under TerminationNotices.subs_lock,
    the lock MepService shares with the Mp1 subscriptions)."""

    def __init__(self):
        self.finished = 0           # notices whose POST ended, taken or not
        self.delivered = 0          # of them, answered 2xx
        self.confirmed = False
        self.wake = threading.Event()
