"""The MEO (`mecorch serve --role meo`): its own store (packages, instance
resources and op occurrences for the OSS, registered hosts), the host
registry with its heartbeat, and the system-level LCM. It runs no backend
of its own: every edge host is an MEPM reached through the MEPM contract.

Several MEO processes may share one store (replicas, on PostgreSQL): all
serve the API; the one holding the lease (mecorch.meo.leader) runs the
background work (heartbeat and resync, op runners, the notification
sender, package copies, re-placement). A replica that takes the lease over
recovers as the MEO does at start: it reaches every host and finishes
the operations in flight from their journal."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from mecorch.kernel import views
from mecorch.kernel.errors import BackendUnavailable
from mecorch.kernel.events import Guarded
from mecorch.mepm.inventory import Inventory
from mecorch.kernel.store import open_store
from mecorch.notifications.subscriptions import Subscriptions
from mecorch.meo.lcm import SystemLcm
from mecorch.meo.packages import SystemPackages
from mecorch.meo.leader import Lease
from mecorch.meo.registry import REACHABLE, UNKNOWN, HostEntry, Registry
from mecorch.meo.replace import Replacer

log = logging.getLogger("mecorch.meo")
PICKUP_S = 0.25     # how soon the leader runs an op another replica accepted


class MeoOrchestrator:
    role = "meo"
    mep = None                  # no Mp1 here: apps talk to their host's MEPM

    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.store = open_store(cfg, views.MEO, Path(cfg["state_dir"]) / "meo.db")
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
        self._threads: list[threading.Thread] = []
        # one replica at a time runs the background work; the lease is taken
        # (or found held by another) now, so that an MEO built and driven
        # without `serve` (tests, benchmarks) leads as it always did
        self.lease = Lease(self.store, float(meo.get("lease_s", 5)),
                           on_elected=self._elected)
        self.registry.leading = self.lcm.leading = self.lease.leading
        self.subscriptions.notifier.gate = self.lease.leading
        self.subscriptions.notifier.shared = True       # replicas write its outbox
        self.lcm.journal.guard = self.lease.fence
        self.lease.start(quiet=True)

    def _elected(self) -> None:
        """This replica took the lease over (not at its own start: recover()
        runs then): recover as at a start, in a thread of its own, so the
        lease is renewed meanwhile."""
        threading.Thread(target=self._take_over, name="meo-takeover", daemon=True).start()

    def _take_over(self) -> None:
        try:
            self.registry.sync_members()
            for entry in self.registry.entries():
                entry.state = UNKNOWN   # its return (follow, resync, copies) runs again
            self.recover()
        except Exception:               # noqa: BLE001 - the loops carry on from here
            log.exception("taking over as the MEO's leader")

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
        crash interrupted. A replica that does not lead reads the hosts'
        states its leader wrote instead."""
        if not self.lease.leading():
            self.registry.follow_store()
            holder = self.lease.holder or {}
            log.info("MEO replica %s follows %s (epoch %s)", self.lease.me,
                     holder.get("holder"), holder.get("epoch"))
            return []
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
        """The loops run in every replica; each round does its work only in
        the one that leads (the registry's reads the leader's host states
        in the others)."""
        self.registry.start()
        self.subscriptions.start()      # the notification sender
        for name, fn in (("meo-sync", self._sync_loop), ("meo-pickup", self._pickup_loop)):
            t = threading.Thread(target=fn, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def _pickup_loop(self) -> None:
        """Every PICKUP_S, in the leader: the operations another replica
        accepted (it journals them STARTING and runs none), and those a
        broken link or a takeover left."""
        while not self._stop.wait(PICKUP_S):
            if not self.lease.leading():
                continue
            try:
                self.lcm.tick()
            except Exception as e:      # noqa: BLE001 - the store away, say: next round
                log.debug("pickup round failed: %s", e)

    def _sync_loop(self) -> None:
        """Every meo.sync_s (longer with many hosts, as the heartbeat's
        period), in the leader: the hosts' view of their instances
        (observed state) and the operations to resume; the heartbeat does
        the rest."""
        wait = self.sync_s
        while not self._stop.wait(wait):
            if not self.lease.leading():
                wait = self.sync_s
                continue
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
        if entry.state != REACHABLE or not self.lease.leading():
            return                      # (a round outlasts a lost lease)
        try:
            self.lcm.resync(entry)
        except BackendUnavailable as e:
            # going away: the heartbeat says so, once (one WARNING
            # per outage), and the resync on its return catches up
            log.debug("sync of edge host %s skipped: %s", entry.host_id, e.detail)

    def close(self) -> None:
        self.subscriptions.stop()
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)
        self.registry.stop()
        self.lcm.close()
        self.lease.stop()               # given up: another replica leads at once
        self.store.close()
