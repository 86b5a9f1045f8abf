"""What an operator looks at: `/metrics` (Prometheus text format), `/healthz`
(the process answers), `/readyz` (store open, backends reachable), the
backend health of each edge host, and a small read-only HTML status page
(`/status`).

/metrics, /healthz, /readyz and /status need no token from loopback (a
local Prometheus or curl), and an operator token from anywhere else.

Backend health is probed per host and role with a cheap real call
(`capacity()` of a compute driver, `check()` of a MEP): in the background
every `orchestrator.health_interval_s` while `mecorch serve` runs (a change
is logged as backend.down / backend.up), and on demand when no probe is
recent. Gauges are read from the store when scraped, each instance's
resource usage from the host's usage reader (in memory, mecorch.mepm.usage);
operation latencies are observed from the same events the log writes
(mecorch.kernel.logs).
"""

from __future__ import annotations

import html
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any

from mecorch.kernel import heap, logs
from mecorch.kernel.errors import MecorchError
from mecorch.kernel.states import DeploymentType, InstantiationState
from mecorch.kernel.http import LOCAL, Request, Response, Router, warning
from mecorch.mepm import hostinfo

METRICS_CTYPE = "text/plain; version=0.0.4; charset=utf-8"
# Seconds of an op, from 10 ms to 10 min (a TCG VM boot takes minutes).
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
RECENT_OPS = 20


# ---------------------------------------------------------------- backend health
@dataclass
class Probe:
    host: str
    role: str
    driver: str
    up: bool
    detail: str
    at: float


class Health:
    """The last probe of every backend of every host."""

    def __init__(self, orch):
        self.orch = orch
        self._lock = threading.Lock()
        self._probes: dict[tuple[str, str], Probe] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def interval_s(self) -> float:
        return float(self.orch.cfg["orchestrator"].get("health_interval_s", 15))

    def probe_all(self) -> list[Probe]:
        out = []
        inventory = getattr(self.orch, "inventory", None)     # an MEO has no local hosts
        for host in (inventory.hosts.values() if inventory is not None else ()):
            for role in ("cim", "vim", "mep"):
                if host.section(role):
                    out.append(self._probe(host, role))
        return out

    def _probe(self, host, role: str) -> Probe:
        driver, up, detail = hostinfo.probe(host, role)
        probe = Probe(host.id, role, driver, up, detail, time.time())
        with self._lock:
            old = self._probes.get((host.id, role))
            self._probes[(host.id, role)] = probe
        if old is not None and old.up != up or old is None and not up:
            logs.event("backend.up" if up else "backend.down",
                       logs.logging.INFO if up else logs.logging.WARNING,
                       host=host.id, role=role, driver=driver,
                       detail=None if up else probe.detail)
        return probe

    def snapshot(self) -> list[Probe]:
        """The latest probes; probed now when none is recent (no serve loop,
        or the loop is behind)."""
        with self._lock:
            probes = list(self._probes.values())
        max_age = max(2 * self.interval_s(), 5.0)
        if not probes or any(time.time() - p.at > max_age for p in probes):
            return self.probe_all()
        return probes

    def start(self) -> None:
        if self._thread is None and self.interval_s() > 0:
            self._thread = threading.Thread(target=self._loop, name="health", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _loop(self) -> None:
        while True:
            self.probe_all()
            heap.trim()             # a probe lists every app container (mecorch.kernel.heap)
            if self._stop.wait(self.interval_s()):
                return


# ---------------------------------------------------------------- views
def _health_cell(health: dict | None) -> str:
    """The health column: what the checks decided (empty: no checks)."""
    if not health:
        return _cell(None)
    word = {True: "ready", False: "out of service", None: "not decided"}[health.get("ready")]
    if health.get("live") is False:
        word += ", not live"
    bad = health.get("ready") is False or health.get("live") is False
    text = word if not bad else f"{word} ({health.get('detail', '')})"
    return _cell(text, "bad" if bad else "")


def _instances_by_host(orch) -> dict[str, int]:
    counts: dict[str, int] = {}
    for inst in orch.store.list("instances",
                                instantiationState=InstantiationState.INSTANTIATED.value,
                                keep=("hostId",)):
        counts[inst["hostId"]] = counts.get(inst["hostId"], 0) + 1
    return counts


def hosts_view(orch, health: Health) -> list[dict]:
    """Each host: capacity (total as allocatable, promised, free: the room
    of `spec.capacity`, as placement reckons it) and the health of its
    backends."""
    if getattr(orch, "registry", None) is not None:
        return meo_hosts_view(orch)
    if getattr(orch, "inventory", None) is None:
        return []
    probes = {(p.host, p.role): p for p in health.snapshot()}
    used = orch.lcm.used_by_host()
    counts = _instances_by_host(orch)
    ratio = float(orch.cfg["orchestrator"]["cpu_allocation_ratio"])
    out = []
    for host in orch.inventory.hosts.values():
        promised = orch.inventory.promised(host.id, used.get(host.id))
        room = total = None
        for manner in (DeploymentType.CONTAINER, DeploymentType.VM):
            probe = probes.get((host.id, "cim" if manner is DeploymentType.CONTAINER else "vim"))
            if host.has(manner) and probe is not None and probe.up:
                try:
                    total = host.totals(manner)
                    room = orch.inventory.room(host.id, manner, used.get(host.id))
                    break
                except MecorchError:
                    continue
        cap: dict[str, Any] = {"cpuAllocationRatio": ratio,
                               "vcpuPromised": round(promised.vcpu, 3),
                               "memoryMbPromised": promised.memory_mb,
                               "diskGbPromised": round(promised.disk_gb, 3)}
        if room is not None:
            cap.update({"cpus": total.cpu_total, "vcpuTotal": room.vcpu_total,
                        "vcpuFree": round(room.free_vcpu, 3),
                        "memoryMbTotal": room.memory_mb_total,
                        "memoryMbFree": room.free_memory_mb,
                        "diskGbFree": round(room.free_disk_gb, 1)})
        out.append({
            "id": host.id, "instances": counts.get(host.id, 0), "capacity": cap,
            "backends": [{"role": role, "driver": p.driver, "up": p.up, "detail": p.detail}
                         for role in ("cim", "vim", "mep")
                         if (p := probes.get((host.id, role))) is not None]})
    return out


def meo_hosts_view(orch) -> list[dict]:
    """An MEO's edge hosts: reachability, heartbeat age, what each last
    reported of its capacity per manner, its backends as its MEPM's probes
    last saw them, the instances the MEO placed there, and its cordon."""
    counts = _instances_by_host(orch)
    cordons = orch.registry.cordons()
    out = []
    for e in orch.registry.entries():
        v = e.view()
        out.append({"id": e.host_id, "state": e.state, "heartbeatAgeS": v["heartbeatAgeS"],
                    "reason": v.get("reason"), "source": e.source,
                    "cordoned": cordons.get(e.host_id),
                    "instances": counts.get(e.host_id, 0), "capacity": v.get("capacity") or {},
                    "backends": [{"role": b.get("role"), "driver": b.get("driver") or "?",
                                  "up": bool(b.get("ok")), "detail": b.get("detail", "")}
                                 for b in v["backends"]]})
    return out


def _reachable(orch) -> set[str] | None:
    """An MEO's REACHABLE hosts (None on a node: its hosts are its own)."""
    reg = getattr(orch, "registry", None)
    if reg is None:
        return None
    return {e.host_id for e in reg.entries() if e.state == "REACHABLE"}


# ---------------------------------------------------------------- metrics
class Metrics:
    """A registry of its own per server: histograms and counters fed by
    events, gauges read from the store at each scrape."""

    def __init__(self, orch, health: Health):
        from prometheus_client import CollectorRegistry, Counter, Histogram
        from prometheus_client.core import GaugeMetricFamily
        from prometheus_client.process_collector import ProcessCollector
        self.orch, self.health = orch, health
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self.op_seconds = Histogram(
            "mecorch_lcm_operation_duration_seconds",
            "Duration of LCM operations (instantiate, terminate, operate) from start to end",
            ("operation", "manner", "outcome", "host"), buckets=LATENCY_BUCKETS,
            registry=self.registry)
        self.placements = Counter("mecorch_placements", "Instances placed by the MEO, by host "
                                  "and manner", ("host", "manner"), registry=self.registry)
        self.refusals = Counter("mecorch_placement_refusals",
                                "Placements refused, by each kind of reason a refusal gave "
                                "(capacity, manner, unreachable, latency, accel, limits, "
                                "unknown_host, none_registered)", ("reason",),
                                registry=self.registry)
        self.events = Counter("mecorch_events", "Events logged, by event name", ("event",),
                              registry=self.registry)
        gauge = GaugeMetricFamily
        metrics = self

        class StoreCollector:
            def collect(self):
                return metrics._collect(gauge)
        self.registry.register(StoreCollector())
        logs.listen(self._on_event)

    def close(self) -> None:
        logs.unlisten(self._on_event)

    def _on_event(self, name: str, fields: dict) -> None:
        self.events.labels(name).inc()
        if name in ("op.completed", "op.failed") and "duration_s" in fields:
            self.op_seconds.labels(fields.get("operation") or "?", fields.get("manner") or "?",
                                   "completed" if name == "op.completed" else "failed",
                                   fields.get("host") or "none") \
                .observe(fields["duration_s"])
        elif name == "placement.decided":
            self.placements.labels(fields.get("host") or "?", fields.get("manner") or "?").inc()
        elif name == "placement.refused":
            for reason in (fields.get("reasons") or "other").split(","):
                self.refusals.labels(reason).inc()

    def _collect(self, gauge):
        """Each family on its own: one that cannot be read (a store of an
        MEO has other tables) is left out, the others still answer."""
        for family in (self._instances, self._health, self._restarts, self._fenced,
                       self._packages, self._rules, self._backends, self._outbox,
                       self._hosts, self._usage):
            try:
                yield from family(gauge, self.orch.store)
            except Exception:       # noqa: BLE001 - a scrape must not fail whole
                logs.logging.getLogger("mecorch.api").debug("metrics: %s failed",
                                                            family.__name__, exc_info=True)

    def _instances(self, gauge, store):
        inst = gauge("mecorch_instances", "App instances by manner, state, host and observed "
                                          "state (UNKNOWN: at an MEO, its host is away)",
                     labels=("manner", "state", "operational", "host", "observed"))
        counts: dict[tuple, int] = {}
        reachable = _reachable(self.orch)
        for d in store.list("instances", drop=("_handle",)):
            observed = d.get("observedState") or (d.get("_observed") or {}).get("state")
            if d["instantiationState"] != InstantiationState.INSTANTIATED.value:
                observed = None
            elif reachable is not None and d.get("hostId") not in reachable:
                observed = "UNKNOWN"
            key = (d.get("deploymentType") or "none", d["instantiationState"],
                   (d.get("instantiatedAppState") or {}).get("operationalState") or "none",
                   d.get("hostId") or "none", observed or "none")
            counts[key] = counts.get(key, 0) + 1
        for key, n in sorted(counts.items()):
            inst.add_metric(key, n)
        yield inst

    def _health(self, gauge, store):
        """Per instance with health checks: 1 ready / 0 out of service (and
        live / not); an instance not decided yet has no sample."""
        ready = gauge("mecorch_instance_ready", "1 when the instance's readiness check passes "
                      "(0: withdrawn from DNS and traffic rules)", labels=("instance", "host"))
        live = gauge("mecorch_instance_live", "1 when the instance's liveness check passes",
                     labels=("instance", "host"))
        for d in store.list("instances", instantiationState=InstantiationState.INSTANTIATED.value,
                            keep=("id", "hostId", "_health", "health")):
            h = d.get("_health") or d.get("health") or {}     # a host's record, an MEO's copy
            for family, key in ((ready, "ready"), (live, "live")):
                if h.get(key) is not None:
                    family.add_metric((d["id"], d.get("hostId") or "none"), int(h[key]))
        yield ready
        yield live

    def _restarts(self, gauge, store):
        """Restarts made by the restart policy (mecorch.mepm.supervisor), per
        INSTANTIATED instance: a counter that starts again with the instance."""
        from prometheus_client.core import CounterMetricFamily
        fam = CounterMetricFamily("mecorch_instance_restarts",
                                  "Restarts of an app instance's runtime by its restart policy",
                                  labels=("instance", "host", "policy"))
        for d in store.list("instances", instantiationState=InstantiationState.INSTANTIATED.value,
                            keep=("id", "hostId", "_restart", "restartCount", "restartPolicy")):
            rs = d.get("_restart") or {}
            total = rs.get("total", d.get("restartCount"))       # an MEO has the host's view
            if total is None:
                continue
            policy = (rs.get("policy") or d.get("restartPolicy") or {}).get("policy") or "none"
            fam.add_metric((d["id"], d.get("hostId") or "none", policy), total)
        yield fam

    # (name, help, ResourceUsage attribute, counter?) of the per-instance
    # series read from the host's usage reader (mecorch.mepm.usage)
    USAGE_SERIES = (
        ("mecorch_instance_cpu_seconds", "CPU time the instance's runtime used, seconds",
         "cpu_seconds", True),
        ("mecorch_instance_memory_bytes", "Memory the instance's runtime uses, bytes",
         "memory_bytes", False),
        ("mecorch_instance_memory_limit_bytes", "Memory limit of the instance's runtime, bytes",
         "memory_limit_bytes", False),
        ("mecorch_instance_network_receive_bytes", "Bytes the instance received",
         "net_rx_bytes", True),
        ("mecorch_instance_network_transmit_bytes", "Bytes the instance sent",
         "net_tx_bytes", True),
        ("mecorch_instance_block_read_bytes", "Bytes the instance read from its disks",
         "block_read_bytes", True),
        ("mecorch_instance_block_write_bytes", "Bytes the instance wrote to its disks",
         "block_write_bytes", True))

    def _usage(self, gauge, store):
        """Each instance's figures as its backend last counted them (the
        reader's memory); labels instance and host only; an instance no
        longer INSTANTIATED has no series from this scrape on (the reader
        forgets it at its next round)."""
        reader = getattr(self.orch, "usage_reader", None)      # an MEO reads no backend
        if reader is None:
            return
        from prometheus_client.core import CounterMetricFamily
        live = {d["id"] for d in store.list(
            "instances", instantiationState=InstantiationState.INSTANTIATED.value, keep=("id",))}
        readings = sorted((iid, r) for iid, r in reader.readings().items() if iid in live)
        pct = gauge("mecorch_instance_cpu_percent", "CPU the instance used between its last two "
                    "readings, percent of one core", labels=("instance", "host"))
        at = gauge("mecorch_instance_usage_read_timestamp_seconds", "When the instance's "
                   "figures were read from its backend (Unix time)", labels=("instance", "host"))
        fams = [(CounterMetricFamily if counter else gauge)(name, text, labels=("instance", "host"))
                for name, text, _, counter in self.USAGE_SERIES]
        for iid, r in readings:
            if r.usage is None:
                continue
            labels = (iid, r.host)
            at.add_metric(labels, r.usage.at)
            if r.cpu_percent is not None:
                pct.add_metric(labels, r.cpu_percent)
            for fam, (_, _, attr, _) in zip(fams, self.USAGE_SERIES):
                v = getattr(r.usage, attr)
                if v is not None:
                    fam.add_metric(labels, v)
        yield pct
        yield at
        yield from fams

    def _fenced(self, gauge, store):
        """Instances their host fenced (mecorch.mepm.fence: no word from the
        MEO for their lostAfter): 1 each; none fenced, no sample."""
        fam = gauge("mecorch_instance_fenced", "1 when the instance's host fenced it (no word "
                    "from its MEO for its lostAfter: withdrawn and stopped)",
                    labels=("instance", "host"))
        for d in store.list("instances", instantiationState=InstantiationState.INSTANTIATED.value,
                            keep=("id", "hostId", "_fenced", "fenced")):
            if d.get("_fenced") or d.get("fenced"):     # a host's record, an MEO's copy
                fam.add_metric((d["id"], d.get("hostId") or "none"), 1)
        yield fam

    def _packages(self, gauge, store):
        pk = gauge("mecorch_packages", "App packages by onboarding, operational and usage state",
                   labels=("onboarding", "operational", "usage"))
        counts = {}
        for d in store.list("packages", drop=("_appd", "_images")):
            key = (d.get("onboardingState", "?"), d.get("operationalState") or "none",
                   d.get("usageState") or "none")
            counts[key] = counts.get(key, 0) + 1
        for key, n in sorted(counts.items()):
            pk.add_metric(key, n)
        yield pk

    def _rules(self, gauge, store):
        rules = gauge("mecorch_rules", "Traffic and DNS rules of app instances, by kind, "
                                       "state and host", labels=("kind", "state", "host"))
        counts = {}
        for d in store.list("rules"):
            for kind, key in (("traffic", "trafficRules"), ("dns", "dnsRules")):
                for r in d.get(key) or []:
                    k = (kind, r.get("state", "?"), d.get("hostId") or "none")
                    counts[k] = counts.get(k, 0) + 1
        for key, n in sorted(counts.items()):
            rules.add_metric(key, n)
        yield rules

    def _backends(self, gauge, store):
        up = gauge("mecorch_backend_up", "1 when the backend answered its last probe",
                   labels=("host", "role", "driver"))
        if getattr(self.orch, "registry", None) is not None:     # an MEO: its hosts' own
            for h in meo_hosts_view(self.orch):
                for b in h["backends"]:
                    up.add_metric((h["id"], b["role"], b["driver"]), 1 if b["up"] else 0)
        else:
            for p in self.health.snapshot():
                up.add_metric((p.host, p.role, p.driver), 1 if p.up else 0)
        yield up

    def _hosts(self, gauge, store):
        """An MEO's edge hosts: reachability, heartbeat age, cordon."""
        if getattr(self.orch, "registry", None) is None:
            return
        reach = gauge("mecorch_host_reachable", "1 when the edge host answers the MEO's "
                                                "heartbeat (REACHABLE), else 0", labels=("host",))
        age = gauge("mecorch_host_heartbeat_age_seconds",
                    "Seconds since the edge host last answered a heartbeat", labels=("host",))
        cordoned = gauge("mecorch_host_cordoned", "1 when the edge host is cordoned (takes "
                                                  "no new placement), else 0", labels=("host",))
        cordons = self.orch.registry.cordons()
        for e in self.orch.registry.entries():
            reach.add_metric((e.host_id,), 1 if e.state == "REACHABLE" else 0)
            a = e.heartbeat_age_s()
            if a is not None:
                age.add_metric((e.host_id,), a)
            cordoned.add_metric((e.host_id,), 1 if e.host_id in cordons else 0)
        yield reach
        yield age
        yield cordoned

    def _outbox(self, gauge, store):
        """Notifications stored and not yet delivered (mecorch/notify.py)."""
        box = gauge("mecorch_notifications_pending",
                    "Notifications waiting for delivery to subscribers' callbacks")
        box.add_metric((), len(store.list("outbox")))
        yield box

    def render(self) -> bytes:
        from prometheus_client import generate_latest
        return generate_latest(self.registry)


# ---------------------------------------------------------------- per orchestrator
class Status:
    def __init__(self, orch):
        self.orch = orch
        self.health = Health(orch)
        self._metrics: Metrics | None = None
        self._lock = threading.Lock()

    @property
    def metrics(self) -> Metrics:
        with self._lock:
            if self._metrics is None:
                self._metrics = Metrics(self.orch, self.health)
            return self._metrics

    def start(self) -> None:
        """The background health probes and the metrics' event listener
        (before the first scrape, so no operation goes uncounted)."""
        self.metrics
        self.health.start()

    def stop(self) -> None:
        self.health.stop()
        if self._metrics is not None:
            self._metrics.close()


_STATUS: "weakref.WeakKeyDictionary[Any, Status]" = weakref.WeakKeyDictionary()
_STATUS_LOCK = threading.Lock()


def for_orchestrator(orch) -> Status:
    with _STATUS_LOCK:
        st = _STATUS.get(orch)
        if st is None:
            st = _STATUS[orch] = Status(orch)
        return st


# ---------------------------------------------------------------- routes
def install(router: Router, orch) -> None:
    """Nothing of the orchestrator is touched here: the services are looked
    up when a request comes."""

    def metrics(req: Request) -> Response:
        return Response(200, for_orchestrator(orch).metrics.render(), content_type=METRICS_CTYPE)

    def healthz(req: Request) -> Response:
        return Response(200, {"status": "alive"})

    def readyz(req: Request) -> Response:
        checks = []
        try:
            orch.store.get("instances", "-")        # the store answers a query
            checks.append({"name": "store", "ok": True, "detail": orch.store.path})
        except Exception as e:                      # noqa: BLE001 - reported
            checks.append({"name": "store", "ok": False, "detail": str(e)})
        for p in for_orchestrator(orch).health.snapshot():
            checks.append({"name": f"{p.host}/{p.role}", "ok": p.up, "detail": p.detail,
                           "driver": p.driver})
        failed = [c["name"] for c in checks if not c["ok"]]
        if failed:
            return Response(503, {"type": "about:blank", "title": "Service unavailable",
                                  "status": 503, "detail": f"not ready: {', '.join(failed)}",
                                  "checks": checks},
                            content_type="application/problem+json")
        return Response(200, {"status": "ready", "checks": checks})

    def page(req: Request) -> Response:
        return Response(200, render_page(orch, for_orchestrator(orch).health).encode(),
                        content_type="text/html; charset=utf-8")

    router.add("GET", "/metrics", metrics, LOCAL)
    router.add("GET", "/healthz", healthz, LOCAL)
    router.add("GET", "/readyz", readyz, LOCAL)
    router.add("GET", "/status", page, LOCAL)

    def app_logs(req: Request) -> Response:
        from mecorch.mepm import applogs
        from mecorch.kernel.errors import InvalidInput
        lcm = orch.lcm
        tail = req.query.get("tail")
        if tail is not None:
            if not tail.isdigit() or int(tail) > applogs.MAX_TAIL:
                raise InvalidInput(f"tail must be a number of lines, 0 to {applogs.MAX_TAIL}")
            tail = int(tail)
        headers = {}
        if hasattr(lcm, "host_logs"):       # an MEO: the output is its host's
            data, source, warn = lcm.host_logs(req.params["id"], tail)
            headers.update(warning(warn))
        else:
            data, source = applogs.read(lcm, lcm.logs_dir, req.params["id"], tail)
        return Response(200, data, {"X-Mecorch-Logs-Source": source, **headers},
                        content_type="text/plain; charset=utf-8")
    router.add("GET", "/app_lcm/v1/app_instances/{id}/logs", app_logs)


# ---------------------------------------------------------------- the page
_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em;margin:0 0 .2em} h2{font-size:1.1em;margin:1.4em 0 .4em}
table{border-collapse:collapse;width:100%} th,td{text-align:left;padding:3px 8px;
border-bottom:1px solid #ddd;vertical-align:top} th{background:#f3f3f3}
td.num{text-align:right} .ok{color:#075e00} .bad{color:#a00000;font-weight:bold}
.muted{color:#777} code{font-size:.95em}
"""


def _cell(v: Any, cls: str = "") -> str:
    text = "-" if v in (None, "", []) else str(v)
    attr = f' class="{cls}"' if cls else ""
    return f"<td{attr}>{html.escape(text)}</td>"


def restarts_cell(inst: dict) -> str | None:
    """How often the restart policy restarted it, the policy and the last
    exit code: "3 (Always, last exit 137)"; None before restart policies."""
    if "restartCount" not in inst:
        return None
    policy = (inst.get("restartPolicy") or {}).get("policy") or "?"
    last = f", last exit {inst['lastExitCode']}" if inst.get("lastExitCode") is not None else ""
    return f"{inst['restartCount']} ({policy}{last})"


def _size(n) -> str:
    """Bytes in binary units, as `docker stats` prints them: 512 B, 1.5 KiB."""
    if n is None:
        return "?"
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:g} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _usage_cell(u: dict | None) -> str:
    """The usage column: the last reading of its backend's figures, with
    the time read; unavailable with the backend's reason."""
    if not u:
        return _cell(None)
    if "cpuPercent" not in u:
        return _cell(f"unavailable: {u.get('unavailable') or u.get('error', '')}", "muted")
    cpu = "?" if u.get("cpuPercent") is None else f"{u['cpuPercent']:g} %"
    mem = _size(u.get("memoryBytes")) + (f" / {_size(u['memoryLimitBytes'])}"
                                         if u.get("memoryLimitBytes") is not None else "")
    text = (f"cpu {cpu}, mem {mem}, net rx/tx {_size(u.get('networkRxBytes'))} / "
            f"{_size(u.get('networkTxBytes'))}, disk r/w {_size(u.get('blockReadBytes'))} / "
            f"{_size(u.get('blockWriteBytes'))}, read {_ts(u.get('time'))}")
    if u.get("error"):
        text += f" (last read failed: {u['error']})"
    return _cell(text, "bad" if u.get("error") else "")


def _table(tid: str, headers: list[str], rows: list[str], empty: str) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(rows) or f'<tr><td colspan="{len(headers)}" class="muted">' \
                            f"{html.escape(empty)}</td></tr>"
    return f'<table id="{tid}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _n(x) -> str:
    if x is None:
        return "?"
    return f"{round(x, 2):g}" if isinstance(x, float) else str(x)


def _ts(ts: dict | None) -> str:
    if not isinstance(ts, dict):
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts.get("seconds", 0))) + "Z"


def render_page(orch, health: Health) -> str:
    """Plain HTML from the store and the probes: no script, no build step;
    it reloads itself every 10 s."""
    hosts = hosts_view(orch, health)
    meo = getattr(orch, "registry", None) is not None
    host_rows = []
    for h in hosts:
        backends = " ".join(f"{b['role']}={b['driver']}:{'up' if b['up'] else 'DOWN'}"
                            for b in h["backends"])
        down = any(not b["up"] for b in h["backends"])
        if meo:
            caps = "; ".join(
                f"{m} {_n(c.get('vcpuUsed'))}/{_n(c.get('vcpuTotal'))} vCPU, "
                f"{_n(c.get('memoryMbUsed'))}/{_n(c.get('memoryMbTotal'))} MB, "
                f"{_n(c.get('diskGbUsed'))}/{_n(c.get('diskGbTotal'))} GB"
                for m, c in sorted(h["capacity"].items()))
            state = h["state"] + (f" ({h['reason']})" if h.get("reason") else "")
            age = h["heartbeatAgeS"]
            cordon = h.get("cordoned")
            host_rows.append(
                f'<tr data-host="{html.escape(h["id"])}">' + _cell(h["id"])
                + _cell(state, "ok" if h["state"] == "REACHABLE" else "bad")
                + _cell(("cordoned" + (f" ({cordon['reason']})" if cordon.get("reason")
                                       else "") + f" since {_ts(cordon.get('at'))}")
                        if cordon else "", "bad" if cordon else "")
                + _cell(f"{age:g} s" if age is not None else "never", "num")
                + _cell(caps) + _cell(h["instances"], "num")
                + _cell(backends or ("unknown" if h["state"] != "REACHABLE" else ""),
                        "bad" if down else "ok") + "</tr>")
            continue
        c = h["capacity"]
        host_rows.append(
            f'<tr data-host="{html.escape(h["id"])}">' + _cell(h["id"])
            + _cell(f"{c.get('vcpuTotal', '?')}", "num") + _cell(c["vcpuPromised"], "num")
            + _cell(c.get("vcpuFree", "?"), "num") + _cell(c.get("memoryMbTotal", "?"), "num")
            + _cell(c["memoryMbPromised"], "num") + _cell(c.get("memoryMbFree", "?"), "num")
            + _cell(h["instances"], "num") + _cell(backends, "bad" if down else "ok") + "</tr>")
    if meo:
        hosts_table = _table("hosts", ["host", "state", "cordon", "heartbeat age",
                                       "capacity (used/total)",
                                       "instances", "backends"], host_rows,
                             "no edge hosts registered")
    else:
        hosts_table = _table("hosts", ["host", "vCPU total", "vCPU promised", "vCPU free",
                                       "memory MB", "memory promised", "memory free",
                                       "instances", "backends"], host_rows,
                             "no hosts configured")
    pkgs = orch.packages.list()
    pkg_rows = [f'<tr data-package="{html.escape(p["id"])}">' + _cell(p["appDId"])
                + _cell(p.get("appName")) + _cell(p.get("appSoftwareVersion"))
                + _cell(p.get("deploymentType")) + _cell(p.get("operationalState"))
                + _cell(p.get("usageState")) + _cell(p["id"]) + "</tr>" for p in pkgs]
    inst_rows, rule_rows = [], []
    for inst in orch.lcm.list():
        iid = inst["id"]
        try:
            if meo:         # asked of the host (its last known rules while it is away)
                got, _ = orch.lcm.host_rules(iid)
                dns, traffic = got["dnsRules"], got["trafficRules"]
            else:
                dns = orch.mep.list_rules(iid, "dns_rules")
                traffic = orch.mep.list_rules(iid, "traffic_rules")
        except MecorchError:
            dns, traffic = [], []
        addrs = ", ".join(n["ip"] for n in (inst.get("allocatedResources") or {})
                          .get("network", []))
        state = inst["instantiationState"]
        observed = inst.get("observedState")
        if observed and observed != "RUNNING" and inst.get("observedStateDetail"):
            observed = f"{observed} ({inst['observedStateDetail']})"
        inst_rows.append(
            f'<tr data-instance="{html.escape(iid)}">' + _cell(inst.get("appInstanceName"))
            + _cell(inst["appDId"]) + _cell(inst.get("hostId"))
            + _cell(inst.get("deploymentType")) + _cell(state)
            + _cell((inst.get("instantiatedAppState") or {}).get("operationalState"))
            + _cell(observed, "bad" if observed not in (None, "RUNNING") else "")
            + _health_cell(inst.get("health"))
            + _cell(restarts_cell(inst)) + _usage_cell(inst.get("resourceUsage"))
            + _cell(addrs) + _cell(", ".join(r.get("domainName", "") for r in dns))
            + _cell(iid) + "</tr>")
        if state != InstantiationState.INSTANTIATED.value:
            continue
        for r in traffic:
            dst = ", ".join(",".join(f.get("dstAddress") or []) + ":" +
                            ",".join(f.get("dstPort") or []) for f in r.get("trafficFilter", []))
            rule_rows.append("<tr>" + _cell(inst.get("appInstanceName")) + _cell("traffic")
                             + _cell(r.get("trafficRuleId")) + _cell(r.get("state"))
                             + _cell(f"{r.get('action')} {dst}") + "</tr>")
        for r in dns:
            rule_rows.append("<tr>" + _cell(inst.get("appInstanceName")) + _cell("dns")
                             + _cell(r.get("dnsRuleId")) + _cell(r.get("state"))
                             + _cell(f"{r.get('domainName')} -> {r.get('ipAddress')}") + "</tr>")
    ops = sorted(orch.lcm.ops(), key=lambda o: (o["startTime"].get("seconds", 0),
                                                o["startTime"].get("nanoSeconds", 0)),
                 reverse=True)[:RECENT_OPS]
    host_of = {i["id"]: i.get("hostId") for i in orch.store.list(
        "instances", keep=("id", "hostId"))}
    op_rows = ["<tr>" + _cell(_ts(o["startTime"])) + _cell(o.get("operationParams"))
               + _cell(o["operationState"],
                       "bad" if o["operationState"] == "FAILED" else "")
               + _cell(o["appInstanceId"]) + _cell(host_of.get(o["appInstanceId"]))
               + _cell(o.get("decisionReason"))
               + _cell((o.get("error") or {}).get("detail")) + "</tr>" for o in ops]
    now = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="10">
<title>mecorch status</title><style>{_CSS}</style></head>
<body>
<h1>mecorch status</h1>
<p class="muted">{html.escape(now)} &middot; read-only; reloads every 10 s &middot;
<a href="/metrics">metrics</a> &middot; <a href="/readyz">readiness</a></p>
<h2>Edge hosts</h2>
{hosts_table}
<h2>App packages</h2>
{_table("packages", ["appDId", "name", "version", "manner", "state", "usage", "id"],
        pkg_rows, "no packages onboarded")}
<h2>App instances</h2>
{_table("instances", ["name", "appDId", "host", "manner", "state", "operational", "observed",
                      "health", "restarts", "usage", "addresses", "DNS names", "id"], inst_rows,
        "no instances")}
<h2>Rules</h2>
{_table("rules", ["instance", "kind", "rule", "state", "what"], rule_rows,
        "no rules of deployed instances")}
<h2>Recent operations</h2>
{_table("operations", ["started", "operation", "state", "instance", "host",
                        "placement decision", "error"], op_rows, "no operations yet")}
</body></html>
"""
