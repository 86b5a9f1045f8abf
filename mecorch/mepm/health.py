"""Health checks of app instances (spec/probes.py), run while `mecorch serve`
runs, and what their results steer.

One scheduler thread for every instance of the process's hosts and a small
pool that runs the due probes (a probe may block up to its timeout; the
schedule must not). Every probe goes from the host to the instance's
address (allocatedResources.network[0].ip: a container's address on its
bridge, a VM's on its network) or, for exec, through the compute driver
(`ExecInside`). Kubernetes' semantics:
- a startup probe gates the others: liveness and readiness run once it has
  passed; failureThreshold failures of it count as a dead app;
- liveness: failureThreshold failures in a row -> `on_dead(instance, reason)`
  (the restart per the instance's policy), then every probe starts again;
- readiness: failureThreshold failures in a row -> the instance is taken
  out of service (PlatformRules.withdraw: its DNS answer and its traffic
  rule destination go); successThreshold successes in a row -> back
  (PlatformRules.restore). An instance with a readiness check starts out
  of service (the instantiate applies its rules, then withdraws them:
  `_health.ready` false, "not checked yet"), as a Kubernetes pod is not
  Ready before its readiness probe passes.
An instance the operator STOPPED is not probed, nor one its host fenced
(mecorch.mepm.fence: only its MEO brings it back), nor one moved out live
(mecorch.mepm.live: it runs on another host). Withdraw, restore and the
record are made while holding the instance (Lcm.hold): an instance busy
with an LCM operation is left alone and acted on at its next result.
`_health` ({ready, live, detail, at}) is written only when ready or live
changes (the store is SQLite: not once per probe); each change is logged
(instance.ready / instance.unready / instance.unhealthy).
"""

from __future__ import annotations

import http.client
import logging
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from mecorch.driverapi.contracts import ExecInside
from mecorch.kernel import logs
from mecorch.kernel.errors import Conflict, MecorchError
from mecorch.kernel.states import DeploymentType, InstantiationState
from mecorch.kernel.store import Has
from mecorch.kernel.timeutil import timestamp
from mecorch.kernel.workers import Workers
from mecorch.mepm.live import MOVED_OUT, moved_out
from mecorch.spec.probes import Probe, Probes

log = logging.getLogger("mecorch.health")
INSTANTIATED = InstantiationState.INSTANTIATED.value
REFRESH_S = 1.0         # how often the set of instances is read again
TICK_S = 0.1            # the scheduler's resolution
_KEEP = ("id", "hostId", "deploymentType", "instantiatedAppState", "allocatedResources",
         "_probes", "_handle", "_opId", "_health", "appPkgId", "_fenced", MOVED_OUT)

_WITH_PROBES = Has(("_probes",))

OnDead = Callable[[str, str], None]
# (probe, instance address, instance doc) -> (passed, what was seen)
Runner = Callable[[Probe, str, dict], tuple[bool, str]]


# -- one probe -----------------------------------------------------------------

def http_get(probe: Probe, ip: str) -> tuple[bool, str]:
    """Kubernetes' httpGet: a status from 200 to 399 passes (a redirect is
    not followed: its status counts)."""
    url = f"http://{ip}:{probe.port}{probe.path}"
    conn = http.client.HTTPConnection(ip, probe.port, timeout=probe.timeout_s)
    try:
        conn.request("GET", probe.path, headers={"User-Agent": "mecorch-probe",
                                                 **dict(probe.headers)})
        status = conn.getresponse().status
    except (OSError, http.client.HTTPException) as e:
        return False, f"GET {url}: {e or type(e).__name__}"
    finally:
        conn.close()
    return 200 <= status < 400, f"GET {url}: HTTP {status}"


def tcp_connect(probe: Probe, ip: str) -> tuple[bool, str]:
    try:
        socket.create_connection((ip, probe.port), timeout=probe.timeout_s).close()
    except OSError as e:
        return False, f"connect {ip}:{probe.port}: {e}"
    return True, f"connect {ip}:{probe.port}: open"


def run_probe(inventory) -> Runner:
    """The probe runner of a process: HTTP and TCP from here, exec through
    the instance's compute driver."""
    def run(probe: Probe, ip: str, inst: dict) -> tuple[bool, str]:
        if probe.action == "http":
            return http_get(probe, ip)
        if probe.action == "tcp":
            return tcp_connect(probe, ip)
        try:
            driver = inventory.get(inst["hostId"]).compute(DeploymentType(inst["deploymentType"]))
            if not isinstance(driver, ExecInside):
                return False, f"exec: the {driver.kind} driver cannot run a command inside"
            code = driver.exec_in(inst["_handle"], list(probe.command), probe.timeout_s)
        except MecorchError as e:
            return False, f"exec {probe.command[0][:40]}: {e.detail}"
        return code == 0, f"exec {probe.command[0][:40]}: exit code {code}"
    return run


# -- the state of one instance's checks ------------------------------------------

@dataclass
class _Check:
    kind: str                   # "startup" | "liveness" | "readiness"
    probe: Probe
    next_at: float = 0.0
    successes: int = 0
    failures: int = 0
    running: bool = False


@dataclass
class _Tracked:
    iid: str
    key: tuple                  # what makes it the same deployment
    checks: dict[str, _Check]
    started: bool               # startup passed (or there is none)
    ready: bool | None = None
    live: bool | None = None
    detail: str = ""
    restarting: bool = False
    settled: tuple | None = None    # (ready, live) the rules and the record last took
    inst: dict = field(default_factory=dict)

    def reset(self, now: float) -> None:
        """A fresh start of the app (deployed, started, restarted)."""
        self.started = "startup" not in self.checks
        for c in self.checks.values():
            c.successes = c.failures = 0
            c.next_at = now + c.probe.initial_delay_s


class Prober:
    def __init__(self, orch, on_dead: OnDead, runner: Runner | None = None,
                 clock: Callable[[], float] = time.monotonic, workers: int = 4):
        self.orch = orch
        self.on_dead = on_dead
        self.runner = runner or run_probe(orch.inventory)
        self.clock = clock
        self._lock = threading.Lock()
        self._tracked: dict[str, _Tracked] = {}
        self._pool = Workers(workers, "probe")
        self._stop = threading.Event()
        self._wake = threading.Event()      # a check became due early (startup passed, restarted)
        self._thread: threading.Thread | None = None
        self._refreshed = -1e18
        self._next_at = 0.0         # when the next check is due (the loop sleeps till then)

    # ------------------------------------------------------------ the loop
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="health", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self._pool.shutdown(wait=False)

    def _loop(self) -> None:
        wait = 0.0
        while True:
            self._wake.wait(wait)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                now = self.clock()
                if now - self._refreshed >= REFRESH_S:
                    self.refresh(now)
                for t, c in self.due(now):
                    self._pool.submit(self.probe_one, t, c)
                # asleep until the next check is due (at most until the next
                # refresh; at least TICK_S: a check that is running now is
                # due again only after its period)
                wait = min(max(self._next_at - self.clock(), TICK_S), REFRESH_S)
            except Exception:       # noqa: BLE001 - the loop must survive anything
                log.exception("health check round failed")
                wait = REFRESH_S

    # ------------------------------------------------------------ what to probe
    def refresh(self, now: float | None = None) -> None:
        """Read the instances to probe: INSTANTIATED on this process's hosts,
        with probes, not STOPPED by the operator."""
        now = self.clock() if now is None else now
        self._refreshed = now
        wanted: dict[str, dict] = {}
        # selected by SQLite: an idle host with many instances and no checks
        # decodes nothing each second
        for inst in self.orch.store.list("instances", _WITH_PROBES,
                                         instantiationState=INSTANTIATED, keep=_KEEP):
            state = (inst.get("instantiatedAppState") or {}).get("operationalState")
            # a fenced app (mecorch.mepm.fence) is stopped and out of service
            # until its MEO lifts the fence: not probed, never restored here
            # nor one moved out live (mecorch.mepm.live): it runs elsewhere
            if inst.get("_probes") and state != "STOPPED" and not inst.get("_fenced") \
                    and not moved_out(inst) \
                    and inst.get("hostId") in self.orch.inventory.hosts:
                wanted[inst["id"]] = inst
        with self._lock:
            for iid in list(self._tracked):
                if iid not in wanted:
                    del self._tracked[iid]
            for iid, inst in wanted.items():
                key = (inst.get("_opId"), inst.get("hostId"))
                t = self._tracked.get(iid)
                if t is None or t.key != key:
                    t = self._track(inst, key, now)
                    self._tracked[iid] = t
                t.inst = inst

    def _track(self, inst: dict, key: tuple, now: float) -> _Tracked:
        probes = Probes.from_doc(inst["_probes"])
        checks = {k: _Check(k, p) for k, p in (("startup", probes.startup),
                                                ("liveness", probes.liveness),
                                                ("readiness", probes.readiness)) if p}
        health = inst.get("_health") or {}
        # what was recorded (a restart of mecorch): the rules follow it
        t = _Tracked(inst["id"], key, checks, True, health.get("ready"), health.get("live"),
                     health.get("detail", ""))
        if "ready" in health:
            t.settled = (t.ready, t.live)
        t.reset(now)
        return t

    def due(self, now: float) -> list[tuple[_Tracked, _Check]]:
        """The checks to run now, marked running (the caller runs each with
        `probe_one`)."""
        out = []
        next_at = now + REFRESH_S
        with self._lock:
            for t in self._tracked.values():
                if t.restarting:
                    continue
                for c in t.checks.values():
                    gated = c.kind != "startup" and not t.started
                    done = c.kind == "startup" and t.started
                    if gated or done:
                        continue
                    if c.running or c.next_at > now:    # (running: due again at next_at)
                        next_at = min(next_at, c.next_at)
                        continue
                    c.running = True
                    c.next_at = now + c.probe.period_s
                    next_at = min(next_at, c.next_at)
                    out.append((t, c))
        self._next_at = next_at
        return out

    def run_due(self, now: float | None = None) -> int:
        """Refresh and run every due check here, in order (tests, bench)."""
        now = self.clock() if now is None else now
        self.refresh(now)
        due = self.due(now)
        for t, c in due:
            self.probe_one(t, c)
        return len(due)

    # ------------------------------------------------------------ one result
    def probe_one(self, t: _Tracked, c: _Check) -> None:
        try:
            nets = (t.inst.get("allocatedResources") or {}).get("network") or []
            ip = nets[0].get("ip") if nets else None
            if not ip and c.probe.action != "exec":
                ok, detail = False, "the instance has no address to probe"
            else:
                ok, detail = self.runner(c.probe, ip, t.inst)
        except Exception as e:      # noqa: BLE001 - a failed probe, not a dead prober
            ok, detail = False, f"probe failed: {type(e).__name__}: {e}"
        finally:
            c.running = False
        self._result(t, c, ok, detail)

    def _result(self, t: _Tracked, c: _Check, ok: bool, detail: str) -> None:
        dead = None
        with self._lock:
            if self._tracked.get(t.iid) is not t:
                return              # gone or redeployed while it ran
            if ok:
                c.successes, c.failures = c.successes + 1, 0
            else:
                c.successes, c.failures = 0, c.failures + 1
            what = f"{c.kind}: {detail}"[:500]
            if c.kind == "startup":
                if ok:
                    t.started = True
                    now = self.clock()
                    for other in t.checks.values():     # they start from here
                        other.next_at = now
                    self._wake.set()
                elif c.failures >= c.probe.failure_threshold:
                    dead = f"startup check failed {c.failures} times: {detail}"
            elif c.kind == "liveness":
                if ok:
                    t.live = True
                elif c.failures >= c.probe.failure_threshold:
                    t.live = False
                    dead = f"liveness check failed {c.failures} times: {detail}"
            elif ok and c.successes >= c.probe.success_threshold:
                t.ready = True
            elif not ok and c.failures >= c.probe.failure_threshold:
                t.ready = False
            if not ok or t.detail.startswith(c.kind) or not t.detail:
                t.detail = what
            if dead:
                t.restarting = True
            # the store and the MEP only when something changed (or a change
            # could not be made yet: an LCM operation held the instance)
            settle = t.settled != (t.ready, t.live)
        if settle:
            self._settle(t)
        if dead:
            self._dead(t, dead)

    def _dead(self, t: _Tracked, reason: str) -> None:
        logs.event("instance.unhealthy", logging.WARNING, instance=t.iid,
                   package=t.inst.get("appPkgId"), reason=reason)
        try:
            self.on_dead(t.iid, reason)
        except Exception as e:      # noqa: BLE001 - tried again at the next failures
            log.warning("restart of %s after a failed check failed: %s", t.iid, e)
        finally:
            with self._lock:
                t.restarting = False
                t.reset(self.clock())
            self._wake.set()

    def _settle(self, t: _Tracked) -> None:
        """Make the rules and the record follow what the checks decided;
        an instance busy with an LCM operation is tried at the next result."""
        with self._lock:
            ready, live, detail = t.ready, t.live, t.detail
        lcm = self.orch.lcm
        if lcm.working_on(t.iid):
            return
        try:
            with lcm.hold(t.iid):
                inst = self.orch.store.get("instances", t.iid)
                if not inst or inst["instantiationState"] != INSTANTIATED \
                        or (inst.get("_opId"), inst.get("hostId")) != t.key \
                        or inst.get("_fenced"):     # a result from before the fence
                    return
                host = self.orch.inventory.get(inst["hostId"])
                changed = None
                if ready is False and self.orch.mep.withdraw(host, t.iid, "readiness"):
                    changed = "instance.unready"
                elif ready is True and self.orch.mep.restore(host, t.iid, "readiness"):
                    changed = "instance.ready"
                old = inst.get("_health") or {}
                if (old.get("ready"), old.get("live")) != (ready, live) or "ready" not in old:
                    inst["_health"] = {"ready": ready, "live": live, "detail": detail,
                                       "at": timestamp()}
                    self.orch.store.put("instances", t.iid, inst)
                    if changed is None and old.get("ready") != ready and ready is not None:
                        changed = "instance.ready" if ready else "instance.unready"
            with self._lock:
                t.settled = (ready, live)
        except Conflict:
            return
        except MecorchError as e:
            log.warning("health of %s: %s", t.iid, e.detail)
            return
        if changed:
            logs.event(changed, logging.INFO if changed == "instance.ready" else logging.WARNING,
                       instance=t.iid, package=inst.get("appPkgId"), host=inst.get("hostId"),
                       detail=detail)

    # ------------------------------------------------------------ views
    def snapshot(self) -> dict[str, dict]:
        with self._lock:
            return {iid: {"ready": t.ready, "live": t.live, "started": t.started}
                    for iid, t in self._tracked.items()}

