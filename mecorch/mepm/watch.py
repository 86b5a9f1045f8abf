"""Observed state from the backends' own events, within seconds.

Reconciliation compares the store with the backends every
`orchestrator.reconcile_interval_s`; a container that crashes in between
would stay "RUNNING" until the next round. A compute driver that streams
its backend's events (a `Watchable`: Docker's events in the CIM, libvirt's
domain lifecycle events in the VIM) is watched
by one thread per host while `mecorch serve` runs: each start or death of
an app's runtime is recorded as the instance's observed state at once (with
the exit code in its detail) and logged (instance.observed). A stream that
breaks is opened again after a pause; reconciliation still covers what an
outage of the stream missed. A death with a fault the backend names (a
container OOM killed, a VM crashed or paused on a disk I/O error) is also
told to the AppInstanceStateChange subscribers (STOPPED, with the detail).

An event of an instance an operation holds (an LCM operation, a restart by
the supervisor) is kept and applied when the hold ends, the last one per
instance, unless the operation recorded that state itself: an app that dies
while its instantiate finishes is seen STOPPED at once, not a round later.
"""

from __future__ import annotations

import logging
import threading
import time

from mecorch.kernel import logs
from mecorch.kernel.errors import MecorchError
from mecorch.driverapi.contracts import Watchable
from mecorch.driverapi.model import Observation
from mecorch.kernel.states import DeploymentType, ObservedState
from mecorch.mepm import runtimes

log = logging.getLogger("mecorch.watch")
RETRY_S = 5.0
DEFER_POLL_S = 0.1          # how often a kept event looks whether its hold ended
DEFER_MAX_S = 900.0         # a hold longer than the longest operation: dropped


class Watcher:
    def __init__(self, orch):
        self.orch = orch
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        # instance id -> (host, manner, the last event seen while it was held, when)
        self._deferred: dict[str, tuple] = {}
        self._deferred_lock = threading.Lock()

    def start(self) -> None:
        for host in self.orch.inventory.hosts.values():
            for manner in DeploymentType:
                if not host.has(manner):
                    continue
                try:
                    driver = host.compute(manner)
                except MecorchError:
                    driver = None        # down now: tried again in the thread
                if driver is not None and not isinstance(driver, Watchable):
                    continue
                t = threading.Thread(target=self._run, args=(host, manner),
                                     name=f"watch-{host.id}-{manner.value}", daemon=True)
                t.start()
                self._threads.append(t)
        t = threading.Thread(target=self._apply_deferred, name="watch-deferred", daemon=True)
        t.start()
        self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)
        self._threads.clear()

    def _run(self, host, manner: DeploymentType) -> None:
        while not self._stop.is_set():
            try:
                driver = host.compute(manner)
                if not isinstance(driver, Watchable):
                    return
                driver.watch(lambda obs: self._changed(host, manner, obs), self._stop)
            except MecorchError as e:
                log.debug("events of %s/%s: %s; again in %gs", host.id, manner.value,
                          e.detail, RETRY_S)
            except Exception:       # noqa: BLE001 - the watch must survive anything
                log.exception("events of %s/%s failed", host.id, manner.value)
            self._stop.wait(RETRY_S)

    def _changed(self, host, manner: DeploymentType, obs: Observation) -> None:
        # events name runtimes: an instance's, or one its upgrade made
        # (mecorch.mepm.runtimes); only its current runtime's are its state
        iid = runtimes.owner(obs.instance_id)
        inst = self.orch.store.get("instances", iid)
        if not inst:
            return
        if self.orch.lcm.working_on(iid):
            # held: an operation in flight made this change (its own
            # instantiate too), or the app died while it ran; looked at
            # again when the hold ends (kept as the runtime's: which one is
            # current is known then)
            with self._deferred_lock:
                self._deferred[iid] = (host, manner, obs, time.monotonic())
            return
        if not runtimes.is_current(inst, obs.instance_id):
            return              # a leftover runtime: reconciliation removes it
        with self._deferred_lock:
            self._deferred.pop(iid, None)       # this one is newer
        if inst.get("hostId") != host.id or inst.get("deploymentType") != manner.value:
            return              # not deployed here
        self._apply(host, manner, inst, runtimes.as_instance(obs))

    def _apply_deferred(self) -> None:
        while not self._stop.wait(DEFER_POLL_S):
            with self._deferred_lock:
                kept = list(self._deferred.items())
            for iid, (host, manner, obs, at) in kept:
                if self.orch.lcm.working_on(iid) and time.monotonic() - at < DEFER_MAX_S:
                    continue
                with self._deferred_lock:
                    if self._deferred.get(iid, (None,) * 4)[3] != at:
                        continue        # a newer event replaced it meanwhile
                    del self._deferred[iid]
                try:
                    inst = self.orch.store.get("instances", iid)
                    if not inst or inst.get("hostId") != host.id \
                            or inst.get("deploymentType") != manner.value \
                            or not runtimes.is_current(inst, obs.instance_id) \
                            or (inst.get("_observed") or {}).get("state") == obs.state.value:
                        continue        # gone, replaced, or the operation recorded it
                    self._apply(host, manner, inst, runtimes.as_instance(obs))
                except Exception:       # noqa: BLE001 - the thread must survive anything
                    log.exception("a kept event of %s failed", iid)

    def _apply(self, host, manner: DeploymentType, inst: dict, obs: Observation) -> None:
        old = (inst.get("_observed") or {}).get("state")
        if old == ObservedState.CRASH_LOOP.value and obs.state is ObservedState.STOPPED:
            return              # given up on: it stays so until an operator's start
        supervisor = getattr(self.orch, "supervisor", None)
        if supervisor is not None and supervisor.pending(obs.instance_id):
            return              # its restart is on the way: the death is counted
        # the reconciler's own record: held against LCM operations
        if self.orch.reconciler._record(obs.instance_id, obs.state, obs.detail):
            if old != obs.state.value:
                logs.event("instance.observed", logging.WARNING if obs.state.value != "RUNNING"
                           else logging.INFO, instance=obs.instance_id,
                           package=inst.get("appPkgId"), host=host.id, manner=manner.value,
                           state=obs.state.value, was=old, detail=obs.detail)
            if obs.fault and obs.state is not ObservedState.RUNNING and old != obs.state.value:
                self.orch.reconciler.tell_fault(obs)
            if supervisor is not None:
                # the policy decides (restart after its wait, give up, leave)
                supervisor.died(host, manner, obs)
