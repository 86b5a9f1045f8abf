"""Fencing: an edge host stops serving an app its MEO may re-place elsewhere
(a mecorch extension, like Nomad's `disconnect { stop_on_client_after }`).

An instance its MEO instantiated with `lostAfter` (mecorch.spec.lost_after,
stored as `_lostAfter`) may be re-placed by the MEO on another host once
this host has been UNREACHABLE that long (mecorch.meo.replace). The MEO
cannot stop this host's copy while it cannot reach it (a partition; a site
that comes back and revives its apps before the MEO reaches it): so the
host does it itself. Once it has not heard from its MEO for an instance's
`lostAfter` seconds, that instance is FENCED:
- its rules are withdrawn from the MEP (PlatformRules.withdraw for the
  reason "fenced": its DNS answer and its traffic-rule destination go, the
  stored set's `outOfService` names it, so nothing but the restore of that
  reason puts them back) and its runtime is stopped through its compute
  driver (the rules then follow the runtime too: reason "down");
- `_fenced` = {at, reason, stopped} is recorded; observed state STOPPED with
  the reason as detail; an `instance.fenced` log event.
The MEO counts a host lost only after missed heartbeats plus `lostAfter`,
i.e. later: by the time it re-places the app this copy serves nothing.

"A word from the MEO" is any authenticated Mm3 request from it
(`Request.from_meo`: its heartbeat every `meo.heartbeat_s`, at least),
recorded in memory and in `<state_dir>/meo-word` at most once a second, so
a restarted MEPM knows how long it has been without one: its first fencing
check runs before its first reconciliation round revives anything and
before its MEP is opened for the apps' rules (Orchestrator.recover).

Nothing undoes a fence behind the MEO's back: reconciliation's revive, the
health prober and the restart supervisor (`Supervisor._supervised`: the
fence's stop is no death to restart) skip a fenced instance (`fenced`), and
a word from the MEO does not lift it. Only the MEO does,
explicitly (`unfence`, the Mm3 extension POST /mecorch/v1/hosts/{hostId}/
unfence), for the instances that are still its on this host, after it has
removed the copies it re-placed elsewhere (mecorch.meo.lcm resync): the
rules are restored and the runtime started again. A terminate clears the
fence with the rest of the deployment.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Callable

from mecorch.kernel import logs
from mecorch.kernel.errors import Conflict, MecorchError
from mecorch.kernel.states import DeploymentType, InstantiationState, ObservedState
from mecorch.kernel.store import Has
from mecorch.kernel.timeutil import timestamp
from mecorch.mepm.live import moved_out

log = logging.getLogger("mecorch.fence")
INSTANTIATED = InstantiationState.INSTANTIATED.value
TICK_S = 0.5            # the loop's period: a fence lands within this of its due time
PERSIST_S = 1.0         # the word is written to disk at most this often
# the smallest lostAfter is read again at least this often (an instance
# instantiated since with a smaller one is fenced at most this late)
REFRESH_S = 1.0
WORD_FILE = "meo-word"
# a fenced app is stopped with this grace (its rules are gone already: no
# client is sent to it; the loop must not wait long for one app)
STOP_GRACE_S = 2
_KEEP = ("id", "hostId", "deploymentType", "instantiatedAppState", "_handle", "_lostAfter",
         "_fenced", "_probes", "appPkgId")
_OPTED_IN = Has(("_lostAfter",))


def fenced(inst: dict | None) -> bool:
    """The instance is fenced: nothing but the MEO's unfence starts it or
    puts its rules back."""
    return bool((inst or {}).get("_fenced"))


class Fence:
    """Silences are measured on `clock` (monotonic: a step of the wall clock
    fences nothing); the word is persisted as wall-clock time (`wall`),
    the one a later life of the process can compare with."""

    def __init__(self, orch, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time):
        self.orch = orch
        self.clock = clock
        self.wall = wall
        self._path = Path(orch.cfg["state_dir"]) / WORD_FILE
        self._lock = threading.Lock()
        # the last word as a previous life of this MEPM recorded it, on this
        # life's clock; none recorded (a new state dir, an older mecorch):
        # counted from now
        then = self._load()
        self._last = self.clock() - max(0.0, self.wall() - then) if then is not None \
            else self.clock()
        self._written = self._last if then is not None else -1e18
        self._min_lost: float | None = None     # the smallest _lostAfter last read
        self._read_at = -1e18
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ the MEO's word
    def heard(self) -> None:
        """A request from the MEO arrived (mecorch.kernel.http, every one):
        cheap; the disk is written at most every PERSIST_S."""
        now = self.clock()
        self._last = now
        if now - self._written >= PERSIST_S and self._lock.acquire(blocking=False):
            try:
                self._written = now
                self._persist(self.wall())
            finally:
                self._lock.release()

    def silence_s(self, now: float | None = None) -> float:
        """Seconds since the MEO's last word."""
        return max(0.0, (self.clock() if now is None else now) - self._last)

    def _load(self) -> float | None:
        try:
            return float(self._path.read_text(encoding="ascii").strip())
        except (OSError, ValueError):
            return None

    def _persist(self, at: float) -> None:
        tmp = self._path.with_name(WORD_FILE + ".tmp")
        try:
            tmp.write_text(f"{at:.3f}\n", encoding="ascii")
            os.replace(tmp, self._path)
        except OSError as e:     # the next word tries again; a fence comes early, not late
            log.warning("cannot record the MEO's last word in %s: %s", self._path, e.strerror)

    # ------------------------------------------------------------ the loop
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="fence", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.wait(TICK_S):
            try:
                for line in self.check():
                    log.warning("%s", line)
            except Exception:       # noqa: BLE001 - the loop must survive anything
                log.exception("fencing round failed")

    def check(self, now: float | None = None, at_start: bool = False) -> list[str]:
        """One round: fence every opted-in instance whose lostAfter the
        silence has reached; stop again a fenced runtime whose stop failed.
        Reads the store only when a fence may be due (or every REFRESH_S).
        `at_start`: the MEPM's first round, before anything opened its MEP:
        the rules are removed before it is opened (a dnsmasq started by the
        opening would answer the fenced name from its files meanwhile)."""
        now = self.clock() if now is None else now
        silence = self.silence_s(now)
        if self._min_lost is not None and silence < self._min_lost \
                and now - self._read_at < REFRESH_S:
            return []
        self._read_at = now
        done = []
        smallest = None
        for inst in self.orch.store.list("instances", _OPTED_IN,
                                         instantiationState=INSTANTIATED, keep=_KEEP):
            if inst.get("hostId") not in self.orch.inventory.hosts:
                continue
            lost_after = inst["_lostAfter"]
            smallest = lost_after if smallest is None else min(smallest, lost_after)
            f = inst.get("_fenced")
            if (f is None and silence >= lost_after) or (f and not f.get("stopped")):
                line = self._fence(inst["id"], silence, at_start)
                if line:
                    done.append(line)
        self._min_lost = smallest
        return done

    # ------------------------------------------------------------ fence
    def _fence(self, iid: str, silence: float, at_start: bool = False) -> str | None:
        lcm = self.orch.lcm
        if lcm.working_on(iid):
            return None             # an LCM operation has it: the next round
        try:
            with lcm.hold(iid):
                inst = self.orch.store.get("instances", iid)
                if not inst or inst["instantiationState"] != INSTANTIATED \
                        or lcm.journal.in_progress(iid):
                    return None
                host = self.orch.inventory.get(inst["hostId"])
                again = fenced(inst)
                if not again:
                    reason = (f"fenced: no word from the MEO for {silence:.0f} s "
                              f"(lostAfter {inst['_lostAfter']} s)")
                    # the rules first: from here on no client is sent to it
                    self.orch.mep.withdraw(host, iid, "fenced", open_mep=not at_start)
                    inst["_fenced"] = {"at": timestamp(), "reason": reason, "stopped": False}
                    inst["_observed"] = {"state": ObservedState.STOPPED.value,
                                         "detail": reason, "at": timestamp()}
                    self.orch.store.put("instances", iid, inst)
                state = (inst.get("instantiatedAppState") or {}).get("operationalState")
                try:
                    if state != "STOPPED":      # one the operator stopped is stopped already
                        compute = host.compute(DeploymentType(inst["deploymentType"]))
                        compute.stop(inst["_handle"], STOP_GRACE_S)
                except MecorchError as e:
                    # withdrawn all the same (no DNS answer, no steered
                    # traffic); the stop is tried again every round
                    log.warning("fenced instance %s: its runtime not stopped yet: %s", iid,
                                e.detail)
                    return None if again else f"instance {iid} fenced (rules withdrawn; " \
                        f"its runtime not stopped yet: {e.detail})"
                inst = self.orch.store.get("instances", iid)
                inst["_fenced"]["stopped"] = True
                self.orch.store.put("instances", iid, inst)
                # the rules follow the runtime as for any stop (reason "down")
                self.orch.mep.follow_runtime(host, iid, ObservedState.STOPPED.value)
        except Conflict:
            return None
        except MecorchError as e:
            return f"could not fence instance {iid}: {e.detail}"
        if again:
            return f"fenced instance {iid}: its runtime stopped"
        logs.event("instance.fenced", logging.WARNING, instance=iid,
                   package=inst.get("appPkgId"), host=inst.get("hostId"),
                   reason=inst["_fenced"]["reason"])
        return f"instance {iid} {inst['_fenced']['reason']}"

    # ------------------------------------------------------------ unfence
    def unfence(self, ids: list[str]) -> dict:
        """The MEO says these instances are still its here: each that is
        fenced serves again (its runtime started, then its rules restored;
        one with a readiness check gets them back from the prober once the
        check passes, as after its instantiation). {"unfenced": [...],
        "notFenced": [...], "busy": [...]}: busy ones (an LCM operation
        holds them, or their runtime did not start: still fenced) are for
        the MEO's next resync."""
        out: dict[str, list] = {"unfenced": [], "notFenced": [], "busy": []}
        for iid in ids:
            try:
                what = self._unfence(iid)
            except Conflict:
                what = "busy"
            except MecorchError as e:
                # one app that does not start is no failure of the call (the
                # MEO's resync of the host goes on); it stays fenced
                log.warning("instance %s not unfenced: %s", iid, e.detail)
                what = "busy"
            out[what].append(iid)
        return out

    def _unfence(self, iid: str) -> str:
        lcm = self.orch.lcm
        with lcm.hold(iid):
            inst = self.orch.store.get("instances", iid)
            if not fenced(inst) or inst["instantiationState"] != INSTANTIATED:
                return "notFenced"
            if lcm.journal.in_progress(iid):
                return "busy"
            host = self.orch.inventory.get(inst["hostId"])
            state = (inst.get("instantiatedAppState") or {}).get("operationalState")
            # the operator's stop stays, and so does a live move's (mecorch.mepm.live:
            # an MEPM stopped while it sent the instance left it marked, STARTED)
            running = state != "STOPPED" and not moved_out(inst)
            if running:
                compute = host.compute(DeploymentType(inst["deploymentType"]))
                compute.start(inst["_handle"])
                self._follow_address(host, compute, inst)
                self.orch.mep.follow_runtime(host, iid, ObservedState.RUNNING.value)
            if "readiness" in (inst.get("_probes") or {}):
                # out of service until its readiness check passes again
                self.orch.mep.withdraw(host, iid, "readiness")
                inst["_health"] = {"ready": False, "live": None, "at": timestamp(),
                                   "detail": "readiness: not checked yet (unfenced)"}
            self.orch.mep.restore(host, iid, "fenced")
            was = inst.pop("_fenced")
            if running:
                inst["_observed"] = {"state": ObservedState.RUNNING.value, "at": timestamp(),
                                     "detail": "started again: unfenced by the MEO"}
            self.orch.store.put("instances", iid, inst)
        logs.event("instance.unfenced", logging.WARNING, instance=iid,
                   package=inst.get("appPkgId"), host=inst.get("hostId"),
                   fencedAt=was.get("at"))
        return "unfenced"

    def _follow_address(self, host, compute, inst: dict) -> None:
        """A runtime started again may have another address (dockerd gives
        a container the first free one): the stored rules follow it before
        they are restored (as reconciliation's readdress would, later)."""
        try:
            # the listing, as reconciliation reads it: the one that carries
            # the running runtime's address now
            now = next(((o.handle or {}).get("address") or {} for o in compute.list_instances()
                        if o.instance_id == inst["id"]), {})
        except MecorchError:
            return                  # reconciliation follows it at its next round
        doc = self.orch.store.get("rules", inst["id"]) or {}
        old = doc.get("targetIp")
        if not now.get("ip") or old in (None, now["ip"]) or doc.get("hostId") != host.id:
            return
        self.orch.mep.apply(host, inst["id"], now["ip"])    # stored only: still withdrawn
        for n in (inst.get("allocatedResources") or {}).get("network") or []:
            if n.get("ip") == old:
                n.update(ip=now["ip"], mac=now.get("mac") or n.get("mac"))
