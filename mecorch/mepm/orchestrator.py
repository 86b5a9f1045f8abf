"""The unified orchestration function (MEO + MEPM in one process): wires the
store, the edge host inventory, package management, the MEP and the LCM."""

from __future__ import annotations

import logging
from pathlib import Path

from mecorch.kernel import logs, views
from mecorch.mepm.fence import Fence
from mecorch.mepm.inventory import Inventory
from mecorch.mepm.lcm import Lcm
from mecorch.mepm.mep import MepService
from mecorch.package.manager import PackageManager
from mecorch.mepm.reconcile import Reconciler
from mecorch.mepm.supervisor import Supervisor
from mecorch.mepm.usage import UsageReader
from mecorch.kernel.store import Store
from mecorch.kernel.events import Guarded
from mecorch.notifications.subscriptions import Subscriptions

log = logging.getLogger("mecorch")


class Orchestrator:
    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.store = Store(Path(cfg["state_dir"]) / "mecorch.db", views.MEPM)
        self.inventory = Inventory(cfg)
        self.packages = PackageManager(self.store, self.inventory, cfg)
        self.mep = MepService(self.store, self.inventory, cfg)
        self.lcm = Lcm(self.store, self.inventory, self.packages, self.mep, cfg)
        self.reconciler = Reconciler(self.store, self.inventory, self.lcm, self.mep,
                                     cfg["orchestrator"].get("reconcile_interval_s", 30))
        # restart policies: told of deaths by the watcher and the rounds
        self.supervisor = Supervisor(self.store, self.inventory, self.lcm, self.reconciler)
        self.reconciler.supervisor = self.supervisor
        # apps its MEO may re-place elsewhere stop serving here after their
        # lostAfter without a word from the MEO (role mepm)
        self.fence = Fence(self)
        # northbound subscriptions: told of changes by the core's hooks
        self.subscriptions = Subscriptions(self.store, cfg)
        self.packages.events = self.lcm.journal.events = Guarded(self.subscriptions)
        # each instance's CPU, memory, network and block I/O, read in the
        # background (mecorch.mepm.usage; started by `serve`)
        self.usage_reader = self.lcm.usage_reader = UsageReader(self)

    def recover(self) -> list[str]:
        """Finish or undo what a crash interrupted and reconcile the store
        with the backends (one round). Called before serving."""
        # first the fences due while this MEPM was down (its MEO's last word
        # is on disk): before the first round revives anything and before
        # the MEP is opened for any rule
        done = self.fence.check(at_start=True)
        done += self.reconciler.run_once() + self.packages.recover()
        for line in done:
            logs.recovery(line)
        return done

    def start_background(self) -> None:
        """Reconcile every orchestrator.reconcile_interval_s from now on."""
        self.reconciler.start()
        self.subscriptions.start()      # the notification sender
        self.mep.services.start()       # the service-availability sender

    def close(self) -> None:
        self.subscriptions.stop()
        self.mep.services.stop()
        self.fence.stop()
        self.reconciler.stop()
        self.supervisor.close()
        self.lcm.close()
        for host in self.inventory.hosts.values():
            host.close()
        self.store.close()
