"""Room held on an edge host for a deploy its reports do not count yet.

A placement reserves the plan's need on the chosen host (a row of the
`reservations` table: every replica places knowing it). The host accepts
the deploy (`dispatched`), and the first report it makes after that counts
the deploy's use: the reservation ends then (`counted`). A deploy that is
refused or fails before reaching the host gives it back (`unreserve`).

Placement asks for the held room per host at every decision, and at 1,000
hosts a reservation lives until the host's next report (about 20 s), so a
read of the table was some 500-1,000 rows per placement: most of its p99
under load. The rows are kept here instead, in memory:

- rows added since the last read come by seq: every reservation is added
  under the store's "placement" lock (mecorch.meo.lcm, mecorch.meo.replace),
  so reservations commit in seq order, on either engine, and a read after
  seq N misses none;
- a removal made by this process drops its row here at once;
- the whole table is read again every RELOAD_S (10 s), for removals by another
  replica (the leader's heartbeat ends most, so the leader's own view is
  exact; a full read on a placement's path every 2 s was its p99 at 1,000
  hosts). Until then such room counts as held: a stale view holds hosts
  back, it never overcommits one;
- and at once when the store says a seq may have been given again
  (`seq_epoch`: another process committed to the same SQLite file).
"""

from __future__ import annotations

import threading
import time

from mecorch.spec.capacity import Need

RELOAD_S = 10.0
PAGE = 1000


class Reservations:
    def __init__(self, store):
        self.store = store
        self._lock = threading.Lock()
        self._rows: dict[str, tuple[str, Need]] = {}      # instance -> (host, need)
        self._after = 0                                   # the last seq read
        self._loaded_at: float | None = None              # monotonic, the last full read
        self._epoch: int | None = None                    # the store's seq_epoch then

    def reserve(self, host_id: str, instance_id: str, need: Need) -> None:
        """Hold `need` on the host (inside the store's "placement" lock).
        An earlier reservation of the instance (a re-placement's, while the
        first deploy's is not counted yet) is replaced by a new row, not
        updated: an update keeps its seq, and readers by seq would keep the
        old host."""
        with self.store.transaction():
            self.store.delete("reservations", instance_id)
            self.store.put("reservations", instance_id, {
                "id": instance_id, "hostId": host_id,
                "need": [need.vcpu, need.memory_mb, need.disk_gb], "dispatchedAt": None})
        with self._lock:
            self._rows.pop(instance_id, None)       # read again, by its new seq

    def dispatched(self, host_id: str, instance_id: str) -> None:
        """The host accepted the deploy: a report asked for after this counts it."""
        with self.store.transaction():
            doc = self.store.get("reservations", instance_id)
            if doc is None or doc["hostId"] != host_id:
                return
            doc["dispatchedAt"] = time.time()
            self.store.put("reservations", instance_id, doc)

    def unreserve(self, host_id: str, instance_id: str) -> None:
        with self.store.transaction():
            doc = self.store.get("reservations", instance_id)
            if doc is not None and doc["hostId"] == host_id:
                self.store.delete("reservations", instance_id)
        self._forget([(instance_id, host_id)])

    def counted(self, host_id: str, asked_at: float) -> None:
        """A report the host made after `asked_at` counts every deploy it
        accepted before: their reservations end."""
        gone = []
        for doc in self.store.list("reservations", hostId=host_id):
            if doc.get("dispatchedAt") is not None and doc["dispatchedAt"] < asked_at:
                self.store.delete("reservations", doc["id"])
                gone.append((doc["id"], host_id))
        self._forget(gone)

    def held(self) -> dict[str, list[Need]]:
        """host -> the needs reserved on it. The store is read without this
        object's lock held (a placement holds the store's transaction while
        it asks: the two locks are never held in the other order)."""
        epoch = self.store.seq_epoch()
        with self._lock:
            now = time.monotonic()
            reload = self._loaded_at is None or now - self._loaded_at >= RELOAD_S \
                or epoch != self._epoch
            if reload:
                self._loaded_at, self._epoch = now, epoch
            after = 0 if reload else self._after
        read = []
        while True:
            page = self.store.page("reservations", after, PAGE)
            read.extend(page)
            if page:
                after = page[-1][0]
            if len(page) < PAGE:
                break
        with self._lock:
            if reload:
                # what another thread merged past this read comes again
                # by seq at the next call
                self._rows, self._after = {}, 0
            for seq, doc in read:
                self._rows[doc["id"]] = (doc["hostId"], Need(*doc["need"]))
            self._after = max(self._after, after)
            out: dict[str, list[Need]] = {}
            for host_id, need in self._rows.values():
                out.setdefault(host_id, []).append(need)
            return out

    def _forget(self, rows: list[tuple[str, str]]) -> None:
        with self._lock:
            for instance_id, host_id in rows:
                if self._rows.get(instance_id, (None,))[0] == host_id:
                    del self._rows[instance_id]
