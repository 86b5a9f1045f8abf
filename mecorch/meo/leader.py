"""Which MEO replica runs the background work: a lease in the database.

Several MEO processes on one database all serve the API; only one at a
time, the lease holder, runs what must not run twice: the host heartbeat
and resync, the op runners, the notification sender, package copies, the
re-placement of lost sites (design.md: "background work of the MEO has one
owner at a time").

The lease is one row (`leases`, id "meo") written in a transaction that
holds the database's lock on it (store.lock), so two replicas never both
take it: {holder, epoch, renewals}. Its holder renews it every ttl/5.

No replica's clock is compared with another's. A replica that is not the
holder takes the lease only after it has seen the same (holder, epoch,
renewals) for `ttl_s` of its own monotonic clock. The holder counts itself
leader only until `ttl_s` after it *began* its last successful renewal:
the taker first saw that renewal after it was committed, so it waits past
the end of the holder's validity before it takes over (only the rate of
the clocks matters, not their reading). A holder cut off from the database
(it cannot renew) stops leading when its validity ends; a holder killed is
replaced ttl_s to ttl_s + ttl/5 after its last renewal.

Fencing: each taker raises the epoch. Writes that must come only from the
leader (an op's journal) check, in their own transaction, that the row
still names this replica with its epoch (`fence`): a deposed leader's late
write fails instead of finishing an op the new leader has resumed.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from typing import Callable

from mecorch.kernel.errors import MecorchError

log = logging.getLogger("mecorch.meo.leader")
TABLE, ROW = "leases", "meo"


class Fenced(MecorchError):
    """This replica no longer holds the lease: what it was doing is the
    new leader's to finish."""
    status, title = 503, "Not the leader"


def replica_id() -> str:
    """A new id each process: a restarted replica is a new candidate."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Lease:
    def __init__(self, store, ttl_s: float = 5.0, me: str | None = None,
                 url: str | None = None,
                 on_elected: Callable[[], None] = lambda: None,
                 on_deposed: Callable[[], None] = lambda: None):
        self.store = store
        self.ttl_s = float(ttl_s)
        self.me = me or replica_id()
        self.url = url                  # this replica's API, shown to the others
        self.on_elected, self.on_deposed = on_elected, on_deposed
        self.epoch = 0                  # ours while we hold it
        self._valid_until = 0.0         # monotonic
        self._seen: tuple | None = None # (holder, epoch, renewals) last seen of another
        self._seen_at = 0.0
        self._leading = False
        self.holder: dict | None = None # the row as last read
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()   # one round at a time (tick, stop)

    # ------------------------------------------------------------ state
    def leading(self) -> bool:
        """True while this replica holds the lease and its validity lasts."""
        return self._leading and time.monotonic() < self._valid_until

    def fence(self) -> None:
        """Inside a store transaction: raise Fenced unless the row still
        names this replica with its epoch (and the database's lock on the
        row is held to the transaction's end, so no taker slips between)."""
        self.store.lock(f"{TABLE}:{ROW}")
        row = self.store.get(TABLE, ROW)
        if not self.leading() or row is None or row.get("holder") != self.me \
                or row.get("epoch") != self.epoch:
            raise Fenced(f"MEO replica {self.me} no longer holds the lease "
                         f"(held by {(row or {}).get('holder')}, epoch {(row or {}).get('epoch')})")

    # ------------------------------------------------------------ one round
    def tick(self, notify: bool = True) -> bool:
        """Renew the lease, or take it when its holder has gone silent for
        ttl_s; calls on_elected / on_deposed on a change (notify=False: not,
        for a first round whose owner recovers itself). Returns leading()."""
        with self._lock:
            was = self.leading()
            began = time.monotonic()
            try:
                took = self._round(began)
            except Exception as e:          # noqa: BLE001 - the database away, say
                log.debug("lease round failed: %s", e)
                took = None
            if took is not None:
                self._leading = took
            now_leading = self.leading()
            if now_leading and not was:
                log.warning("MEO replica %s leads (epoch %d)", self.me, self.epoch)
            elif was and not now_leading:
                log.warning("MEO replica %s no longer leads", self.me)
        # outside the lock: the callbacks start or stop threads
        if notify and now_leading and not was:
            self.on_elected()
        elif notify and was and not now_leading:
            self.on_deposed()
        return now_leading

    def _round(self, began: float) -> bool:
        with self.store.transaction():
            self.store.lock(f"{TABLE}:{ROW}")
            row = self.store.get(TABLE, ROW)
            self.holder = row
            if row is not None and row.get("holder") == self.me \
                    and row.get("epoch") == self.epoch:
                row["renewals"] = int(row.get("renewals", 0)) + 1
                row["url"] = self.url           # known once the API serves
                self.store.put(TABLE, ROW, row)
                self._valid_until = began + self.ttl_s
                return True
            # (a row naming us under another epoch: ours from before, taken
            # again at once under a new epoch)
            mine = row is not None and row.get("holder") == self.me
            if row is not None and not mine and not self._silent(row, began):
                return False
            epoch = int((row or {}).get("epoch", 0)) + 1
            row = {"id": ROW, "holder": self.me, "epoch": epoch, "renewals": 0,
                   "url": self.url, "ttlS": self.ttl_s}
            self.store.put(TABLE, ROW, row)
            self.holder, self.epoch = row, epoch
            self._valid_until = began + self.ttl_s
            return True

    def _silent(self, row: dict, now: float) -> bool:
        """Whether the row's holder has not renewed for ttl_s of our clock."""
        key = (row.get("holder"), row.get("epoch"), row.get("renewals"))
        if key != self._seen:
            self._seen, self._seen_at = key, now
            return False
        return now - self._seen_at >= self.ttl_s

    # ------------------------------------------------------------ the loop
    def start(self, quiet: bool = False) -> None:
        """First round now (quiet: without on_elected, its owner recovers
        itself), then one every ttl/5."""
        self.tick(notify=not quiet)
        self._thread = threading.Thread(target=self._loop, name="meo-lease", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.ttl_s / 5):
            self.tick()

    def stop(self) -> None:
        """Give the lease up (a clean stop): another replica takes it at its
        next round instead of after ttl_s."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.ttl_s)
        with self._lock:
            if not self._leading:
                return
            self._leading = False
            try:
                with self.store.transaction():
                    self.store.lock(f"{TABLE}:{ROW}")
                    row = self.store.get(TABLE, ROW)
                    if row and row.get("holder") == self.me and row.get("epoch") == self.epoch:
                        self.store.delete(TABLE, ROW)
            except Exception as e:          # noqa: BLE001 - it expires anyway
                log.debug("lease not given up: %s", e)
