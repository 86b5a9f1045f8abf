"""The MEO (`mecorch serve --role meo`): its own store (packages, instance
resources and op occurrences for the OSS, registered hosts), the host
registry with its heartbeat, and the system-level LCM. It runs no backend
of its own: every edge host is an MEPM reached through the MEPM contract."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from mecorch.kernel import views
from mecorch.kernel.errors import BackendUnavailable
from mecorch.kernel.events import Guarded
from mecorch.mepm.inventory import Inventory
from mecorch.kernel.store import Store
from mecorch.notifications.subscriptions import Subscriptions
from mecorch.meo.lcm import SystemLcm
from mecorch.meo.packages import SystemPackages
from mecorch.meo.registry import REACHABLE, HostEntry, Registry
from mecorch.meo.replace import Replacer

log = logging.getLogger("mecorch.meo")


class MeoOrchestrator:
    role = "meo"
    mep = None                  # no Mp1 here: apps talk to their host's MEPM

    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.store = Store(Path(cfg["state_dir"]) / "meo.db", views.MEO)
        # no edge host of its own: packages are verified and kept, not imported
        self.packages = SystemPackages(self.store, Inventory({**cfg, "hosts": []}), cfg)
        self.registry = Registry(self.store, cfg, on_return=self._host_returned)
        self.packages.registry = self.registry
        self.lcm = SystemLcm(self.store, self.packages, self.registry, cfg)
        # apps that opted in (lostAfter) are placed again when their host is
        # lost: checked after every heartbeat round
        self.replacer = Replacer(self.lcm, self.registry)
        self.registry.after_round = self._after_round
        # the OSS subscribes here (Mm1): told of the MEO's own resources
        self.subscriptions = Subscriptions(self.store, cfg)
        self.packages.events = self.lcm.journal.events = Guarded(self.subscriptions)
        meo = cfg.get("meo") or {}
        self.sync_s = float(meo.get("sync_s", 10))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _host_returned(self, entry: HostEntry) -> None:
        # its op notifications first: what is dispatched from now on is
        # followed by them
        self.lcm.follower.subscribe(entry)
        # the copies of apps re-placed while it was away go first: never two
        # serving one app once the host is back
        for line in (self.replacer.remove_stale(entry) + self.lcm.resync(entry)
                     + self.packages.host_tasks(entry.host_id)):
            log.warning("resync: %s", line)

    def _after_round(self) -> None:
        for line in self.replacer.check():
            log.info("re-placement: %s", line)

    def recover(self) -> list[str]:
        """Before serving: reach every host once, finish what the MEO's own
        crash interrupted."""
        done = self.replacer.recover()         # before a host's return runs a removal
        self.registry.beat_all()
        done += self.packages.recover()
        for entry in self.registry.entries():
            if entry.state == REACHABLE:
                done += self.lcm.resync(entry)
        done += self.lcm.recover()
        for line in done:
            log.warning("recovery: %s", line)
        return done

    def start_background(self) -> None:
        self.registry.start()
        self.subscriptions.start()      # the notification sender
        self._thread = threading.Thread(target=self._sync_loop, name="meo-sync", daemon=True)
        self._thread.start()

    def _sync_loop(self) -> None:
        """Every meo.sync_s (longer with many hosts, as the heartbeat's
        period): the hosts' view of their instances (observed state) and
        the operations to resume; the heartbeat does the rest."""
        wait = self.sync_s
        while not self._stop.wait(wait):
            started = time.monotonic()
            try:
                self.lcm.tick()
                # paced so that its period grows as the heartbeat's does
                # (meo.max_heartbeats_per_s): a host is synced every
                # sync_s × period_s / heartbeat_s (1,000 hosts: every 100 s),
                # not in a burst of 1,000 instance listings that outlasted
                # sync_s (a round of minutes at 10,000 instances)
                entries = self.registry.entries()
                period = self._sync_period_s()
                self.registry.paced(self._sync_host, entries,
                                    len(entries) / period if period > 0 else 0, pool=False,
                                    stop=self._stop)
            except Exception:           # noqa: BLE001 - the loop must survive anything
                log.exception("sync round failed")
            wait = max(0.0, self._sync_period_s() - (time.monotonic() - started))

    def _sync_period_s(self) -> float:
        beat = self.registry.heartbeat_s
        if beat <= 0:
            return self.sync_s
        return self.sync_s * max(1.0, self.registry.period_s() / beat)

    def _sync_host(self, entry: HostEntry) -> None:
        if entry.state != REACHABLE:
            return
        try:
            self.lcm.resync(entry)
        except BackendUnavailable as e:
            # going away: the heartbeat says so, once (one WARNING
            # per outage), and the resync on its return catches up
            log.debug("sync of edge host %s skipped: %s", entry.host_id, e.detail)

    def close(self) -> None:
        self.subscriptions.stop()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.registry.stop()
        self.lcm.close()
        self.store.close()
