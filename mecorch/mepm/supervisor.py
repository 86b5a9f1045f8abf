"""Restart policies at work: an app's runtime that dies by itself is started
again as its policy says (mecorch.spec.restart), with a doubling wait, and
given up on after its limit (observed CRASH_LOOP).

Who tells it: the Watcher, within about a second of the backend's own
event, and each reconciliation round (drivers with no events, or an event
stream that was down). Both call `died` after recording the death; a
second report of the same death while a restart is pending is ignored.

What it never does: undo an operator's stop (operationalState STOPPED:
nothing is restarted, and a pending restart is dropped), race an LCM
operation (every change is made holding the instance, `Lcm.hold`, and
checked again under the hold; an operation in flight wins), or restart
what died with its host (reconciliation's `_revive` does that first, as
before, without counting it).

Why mecorch and not the backends' own restart mechanisms, for both
manners: Docker's restart policies (`always`, `on-failure[:N]`) do not
restart a container after `docker kill` at all (dockerd records it as
stopped by hand: tried on dockerd 20.10, `always` left it exited), restart
outside mecorch's hold (racing an operate or terminate), `always` has no
limit, none reports a crash loop or gives up visibly, `on-failure:N`
counts for the container's whole life (no reset after a healthy run) and
the backoff (100 ms doubling, capped at 1 min) cannot be set; and an app
container restarted by dockerd while its pause container (which owns the
address) is down would fail. libvirt's `<on_crash>` covers only a guest
crash (a panic reported by the hypervisor), not `virsh destroy`, a QEMU
process killed or a guest that powers itself off, and it has neither
backoff nor limit. One supervisor gives both manners the same policy,
counts, backoff, limit and notifications.

`restart(instance_id, reason)`: for the liveness probes (mecorch.mepm.
health): stop and start the runtime through the driver under the same
counting, backoff and limit.
"""

from __future__ import annotations

import logging
import threading
import time

from mecorch.kernel import logs
from mecorch.kernel.errors import BackendUnavailable, Conflict, MecorchError, NotFound
from mecorch.driverapi.model import Observation
from mecorch.kernel.states import (
    DeploymentType, InstanceOperationalState, InstantiationState, ObservedState)
from mecorch.kernel.timeutil import timestamp
from mecorch.mepm import runtimes
from mecorch.mepm.fence import fenced
from mecorch.mepm.live import moved_out
from mecorch.mepm.lcm import new_restart
from mecorch.spec.restart import RestartPolicy

log = logging.getLogger("mecorch.supervisor")
RETRY_HELD_S = 0.2          # an instance held by a short reconcile step: try again soon
RETRY_DOWN_S = 5.0          # the backend daemon does not answer: not the app's fault
STOP_TIMEOUT_S = 10         # a liveness restart's graceful stop


def _at(epoch: float) -> dict:
    ns = int(epoch * 1e9)
    return {"seconds": ns // 1_000_000_000, "nanoSeconds": ns % 1_000_000_000}


def _why(code: int | None, detail: str) -> str:
    return f"exit code {code}" if code is not None else (detail or "no exit code")[:120]


class Supervisor:
    def __init__(self, store, inventory, lcm, reconciler):
        self.store = store
        self.inventory = inventory
        self.lcm = lcm
        self.reconciler = reconciler        # its `_readdress`: the rules follow
        self.mep = reconciler.mep           # rules out of service while it is down
        self._lock = threading.Lock()
        self._timers: dict[str, threading.Timer] = {}
        self._closed = False

    def close(self) -> None:
        with self._lock:
            self._closed = True
            timers, self._timers = list(self._timers.values()), {}
        for t in timers:
            t.cancel()

    def pending(self, instance_id: str) -> bool:
        with self._lock:
            return instance_id in self._timers

    # ------------------------------------------------------------ deaths
    def died(self, host, manner: DeploymentType, obs: Observation) -> str | None:
        """The runtime of `obs.instance_id` was seen stopped (the caller has
        recorded it). Schedules a restart, gives up, or leaves it, as the
        policy says; returns what it did in one line (None: nothing)."""
        iid = obs.instance_id
        if obs.state is not ObservedState.STOPPED or self.pending(iid) \
                or self.lcm.working_on(iid):
            return None         # MISSING: nothing is left to start
        # first without holding (a reconcile round asks for every stopped
        # instance): most are not this supervisor's to restart
        inst = self.store.get("instances", iid)
        if not self._supervised(inst, host, manner) \
                or not self._policy(inst).restarts_after(obs.exit_code) \
                or (inst.get("_restart") or {}).get("gaveUp"):
            return None
        try:
            with self.lcm.hold(iid):
                inst = self.store.get("instances", iid)
                if not self._supervised(inst, host, manner) or self.pending(iid) \
                        or self.lcm.journal.in_progress(iid):
                    return None
                return self._decide(inst, host, manner, obs.exit_code,
                                    _why(obs.exit_code, obs.detail))
        except Conflict:
            return None             # an operation started meanwhile: it decides

    def _decide(self, inst: dict, host, manner: DeploymentType, code: int | None,
                why: str) -> str | None:
        """Under the hold: count this death, then wait and restart, or give up."""
        iid = inst["id"]
        policy = self._policy(inst)
        rs = inst.get("_restart") or new_restart(policy.to_doc())
        if rs.get("gaveUp"):
            return None
        now = time.time()
        if rs.get("since") is not None and now - rs["since"] >= policy.reset_after_s:
            rs["count"] = 0             # it ran long enough: a new loop
        rs.update(lastExitCode=code, lastExitAt=timestamp())
        if rs["count"] >= policy.limit:
            rs.update(gaveUp=True, nextAt=None)
            detail = (f"gave up after {rs['count']} restart(s) in a row ({why}); "
                      "operate it STARTED to try again")
            inst["_restart"] = rs
            inst["_observed"] = {"state": ObservedState.CRASH_LOOP.value, "detail": detail,
                                 "at": timestamp()}
            self.store.put("instances", iid, inst)
            self.mep.follow_runtime(host, iid, ObservedState.CRASH_LOOP.value)
            self._gave_up(inst, host, manner, detail)
            return f"instance {iid} is in a crash loop: {detail}"
        delay = policy.delay(rs["count"])
        rs["count"] += 1
        rs["nextAt"] = _at(now + delay)
        detail = f"restarting in {delay:g}s (restart {rs['count']} of {policy.limit}; {why})"
        inst["_restart"] = rs
        inst["_observed"] = {"state": ObservedState.STOPPED.value, "detail": detail,
                             "at": timestamp()}
        self.store.put("instances", iid, inst)
        self.mep.follow_runtime(host, iid, ObservedState.STOPPED.value)
        logs.event("instance.restart_scheduled", logging.WARNING, instance=iid, host=host.id,
                   manner=manner.value, delay_s=delay, restart=rs["count"],
                   limit=policy.limit, exitCode=code)
        self._schedule(iid, host, manner, rs["count"], delay)
        return f"instance {iid} died ({why}): {detail}"

    def _gave_up(self, inst: dict, host, manner: DeploymentType, detail: str) -> None:
        logs.event("instance.crash_loop", logging.ERROR, instance=inst["id"],
                   package=inst.get("appPkgId"), host=host.id, manner=manner.value,
                   detail=detail)
        # AppInstanceStateChange to the STOPPED subscribers: the app no
        # longer runs, though the operator's operationalState is STARTED
        self.lcm.journal.events.instance(inst, InstanceOperationalState.STOPPED.value)

    def _schedule(self, iid: str, host, manner: DeploymentType, n: int, delay: float) -> None:
        with self._lock:
            if self._closed:
                return
            t = threading.Timer(delay, self._attempt, args=(iid, host, manner, n))
            t.daemon = True
            t.name = f"restart-{iid[:8]}"
            self._timers[iid] = t
        t.start()

    # ------------------------------------------------------------ restarts
    def _attempt(self, iid: str, host, manner: DeploymentType, n: int) -> None:
        """Restart number `n` of `iid`, when its wait is over."""
        with self._lock:
            self._timers.pop(iid, None)
            if self._closed:
                return
        try:
            self._start(iid, host, manner, n)
        except BackendUnavailable as e:
            # dockerd or libvirtd restarting: not counted against the app
            # (the reboot path starts what died with its daemon)
            log.info("restart of %s waits for its backend: %s", iid, e.detail)
            self._schedule(iid, host, manner, n, RETRY_DOWN_S)
        except Conflict:
            # held: an operation (it will say what happens; checked again
            # then) or a short reconcile step (the restart is still due)
            self._schedule(iid, host, manner, n, RETRY_HELD_S)
        except Exception:       # noqa: BLE001 - a timer thread must not die silently
            log.exception("restart of %s failed", iid)

    def _start(self, iid: str, host, manner: DeploymentType, n: int) -> None:
        compute = None
        with self.lcm.hold(iid):
            inst = self.store.get("instances", iid)
            rs = (inst or {}).get("_restart") or {}
            if not self._supervised(inst, host, manner) or rs.get("count") != n \
                    or not rs.get("nextAt") or self.lcm.journal.in_progress(iid):
                return          # stopped, started or terminated meanwhile
            policy = self._policy(inst)
            compute = host.compute(manner)
            try:
                compute.start(inst["_handle"])
            except BackendUnavailable:
                raise
            except MecorchError as e:
                # counted like a death: failing starts end in CRASH_LOOP too
                rs["nextAt"] = None
                inst["_restart"] = rs
                self.store.put("instances", iid, inst)
                line = self._decide(inst, host, manner, None, f"restart failed: {e.detail}")
                if line:
                    logs.recovery(line)
                return
            rs.update(nextAt=None, since=time.time(), total=rs.get("total", 0) + 1)
            inst["_restart"] = rs
            inst["_observed"] = {
                "state": ObservedState.RUNNING.value, "at": timestamp(),
                "detail": f"restarted (restart {n} of {policy.limit}; last "
                          f"{_why(rs.get('lastExitCode'), 'exit')})"}
            self.store.put("instances", iid, inst)
            handle = inst["_handle"]
        logs.event("instance.restarted", logging.WARNING, instance=iid, host=host.id,
                   manner=manner.value, restart=n)
        self._after_start(iid, host, manner, compute, handle)

    def _after_start(self, iid: str, host, manner: DeploymentType, compute, handle) -> None:
        """Outside the hold: a death while it was held went unrecorded (the
        watcher leaves held instances alone): look once more; and the rules
        follow a runtime that came back on another address."""
        try:
            now = runtimes.as_instance(compute.inspect(handle))
            if now.state is ObservedState.STOPPED:
                self.reconciler._record(iid, now.state, now.detail)
                self.died(host, manner, now)
                return
            rid = runtimes.current(self.store.get("instances", iid) or {"id": iid})
            for obs in compute.list_instances():
                if obs.instance_id == rid:
                    line = self.reconciler._readdress(host, iid, obs)
                    for one in line:
                        logs.recovery(one)
            # back in service only now, at its address (a reconcile round
            # does it if this hold cannot be had)
            with self.lcm.hold(iid):
                inst = self.store.get("instances", iid)
                if self._supervised(inst, host, manner) \
                        and (inst.get("_observed") or {}).get("state") == "RUNNING":
                    self.mep.follow_runtime(host, iid, "RUNNING")
        except Conflict:
            pass
        except MecorchError as e:
            log.warning("after restarting %s: %s", iid, e.detail)

    def restart(self, instance_id: str, reason: str) -> str | None:
        """Stop and start an instance whose runtime runs but is not well (a
        failed liveness probe), under its policy: counted, after the
        backoff, given up after the limit. Never restarts an instance the
        operator stopped, or one whose policy is Never. Returns what it did
        in one line (None: nothing)."""
        inst = self.store.get("instances", instance_id)
        if not inst or inst.get("instantiationState") != InstantiationState.INSTANTIATED.value:
            return None
        host = self.inventory.hosts.get(inst.get("hostId"))
        manner = DeploymentType(inst["deploymentType"])
        if host is None or self.pending(instance_id) or self.lcm.working_on(instance_id) \
                or not self._supervised(inst, host, manner):
            return None
        try:
            with self.lcm.hold(instance_id):
                inst = self.store.get("instances", instance_id)
                if not self._supervised(inst, host, manner) \
                        or self.lcm.journal.in_progress(instance_id):
                    return None
                try:
                    host.compute(manner).stop(inst["_handle"], STOP_TIMEOUT_S)
                except NotFound:
                    pass
                if self._policy(inst).policy == "Never":
                    # as Kubernetes does: a failed liveness check ends the
                    # app, and Never leaves it ended
                    inst["_observed"] = {"state": ObservedState.STOPPED.value, "at": timestamp(),
                                         "detail": f"stopped: {reason[:200]} (policy Never)"}
                    self.store.put("instances", instance_id, inst)
                    self.mep.follow_runtime(host, instance_id, ObservedState.STOPPED.value)
                    return f"instance {instance_id} stopped: {reason[:200]} (policy Never)"
                return self._decide(inst, host, manner, None, reason[:200])
        except Conflict:
            return None

    # ------------------------------------------------------------ helpers
    def _policy(self, inst: dict) -> RestartPolicy:
        return RestartPolicy.from_doc((inst.get("_restart") or {}).get("policy"),
                                      self.lcm.restart_default)

    @staticmethod
    def _supervised(inst: dict | None, host, manner: DeploymentType) -> bool:
        """INSTANTIATED here by this manner, STARTED by its operator, not
        fenced (mecorch.mepm.fence: the fence's stop is no death to restart;
        only the MEO lifts it) and not moved out live (mecorch.mepm.live: it
        runs on another host; only the MEO's operate START runs it here)."""
        return bool(inst) and inst["instantiationState"] == InstantiationState.INSTANTIATED.value \
            and inst.get("hostId") == host.id and inst.get("deploymentType") == manner.value \
            and (inst.get("instantiatedAppState") or {}).get("operationalState") \
            == InstanceOperationalState.STARTED.value and not fenced(inst) \
            and not moved_out(inst)
