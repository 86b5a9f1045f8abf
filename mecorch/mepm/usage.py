"""Each app instance's own figures: CPU, memory, network and block I/O, as
its backend counts them (Docker's stats, libvirt's domain stats, Nova's
server diagnostics: the compute driver's `UsageReadable.read_usage`).

Read in the background while `mecorch serve` runs, on the schedule of the
host's backend health probes (`orchestrator.health_interval_s`, unless
`orchestrator.usage_interval_s` sets its own; one round for every
INSTANTIATED instance of this process's hosts, in a thread of its own), never when an API request
comes and never on a deploy's path; kept in memory per instance (the store
is not written: the figures change every round and are not state). What the
API, the status page and /metrics show is the last reading, with the time
it was read.

- CPU percent (100 = one core) is the backend's own figure where it gives
  one, else worked out here from two successive readings' CPU seconds: the
  first round after a start has none yet (null, not 0).
- A backend that will not tell (UnsupportedAction: a cloud that refuses
  diagnostics to this user) shows `unavailable` with its reason; a reading
  that fails keeps the last figures, with their time, and says why.
- An instance that goes (terminated, deleted, moved to another host) is
  dropped at the next round: its /metrics series go with it.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from mecorch.driverapi.contracts import UsageReadable
from mecorch.driverapi.model import ResourceUsage
from mecorch.kernel.errors import MecorchError, NotFound, UnsupportedAction
from mecorch.kernel.states import DeploymentType, InstantiationState

log = logging.getLogger("mecorch.usage")
INSTANTIATED = InstantiationState.INSTANTIATED.value
_KEEP = ("id", "hostId", "deploymentType", "_handle")
# the figures and their names in views (camelCase, as the API's)
FIGURES = (("cpu_seconds", "cpuSeconds"), ("memory_bytes", "memoryBytes"),
           ("memory_limit_bytes", "memoryLimitBytes"), ("net_rx_bytes", "networkRxBytes"),
           ("net_tx_bytes", "networkTxBytes"), ("block_read_bytes", "blockReadBytes"),
           ("block_write_bytes", "blockWriteBytes"))
# the key of a host's report (HostInfo.usage) holding each instance's view
BY_INSTANCE = "byInstance"
SUMMED = ("cpuPercent", "memoryBytes", "networkRxBytes", "networkTxBytes", "blockReadBytes",
          "blockWriteBytes")


@dataclass(frozen=True)
class Reading:
    """The last word on one instance: figures (or none), and why not."""
    host: str
    usage: ResourceUsage | None
    cpu_percent: float | None = None
    unavailable: str = ""       # the backend will not tell: why
    error: str = ""             # the last read failed: why (the figures are older)

    def view(self) -> dict:
        """mecorch extension `resourceUsage` of an AppInstanceInfo."""
        out: dict = {}
        if self.usage is not None:
            out["time"] = _stamp(self.usage.at)
            out["cpuPercent"] = None if self.cpu_percent is None else round(self.cpu_percent, 2)
            for attr, name in FIGURES:
                v = getattr(self.usage, attr)
                out[name] = round(v, 3) if isinstance(v, float) else v
        if self.unavailable:
            out["unavailable"] = self.unavailable
        if self.error:
            out["error"] = self.error
        return out


def _stamp(t: float) -> dict:
    """An ETSI TimeStamp of a time read."""
    ns = int(t * 1e9)
    return {"seconds": ns // 1_000_000_000, "nanoSeconds": ns % 1_000_000_000}


def cpu_percent(prev: ResourceUsage | None, now: ResourceUsage) -> float | None:
    """Percent of one core between two readings of the same runtime; None
    when there is no earlier one, or the counter went back (a restart)."""
    if now.cpu_percent is not None:
        return now.cpu_percent
    if prev is None or prev.cpu_seconds is None or now.cpu_seconds is None:
        return None
    dt, used = now.at - prev.at, now.cpu_seconds - prev.cpu_seconds
    if dt <= 0 or used < 0:
        return None
    return 100.0 * used / dt


class UsageReader:
    def __init__(self, orch, interval_s: float | None = None):
        self.orch = orch
        cfg = orch.cfg["orchestrator"]
        if interval_s is None:
            interval_s = cfg.get("usage_interval_s")
        if interval_s is None:
            interval_s = cfg.get("health_interval_s", 15)
        self.interval = float(interval_s)
        self._lock = threading.Lock()
        self._readings: dict[str, Reading] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ the loop
    def start(self) -> None:
        if self._thread is None and self.interval > 0:
            self._thread = threading.Thread(target=self._loop, name="usage", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.read_all()
            except Exception:       # noqa: BLE001 - the loop must survive anything
                log.exception("a usage round failed")
            self._stop.wait(self.interval)

    # ------------------------------------------------------------ one round
    def read_all(self) -> int:
        """Read every INSTANTIATED instance of this process's hosts once;
        forget the others. Returns how many were read."""
        hosts = self.orch.inventory.hosts
        wanted = [d for d in self.orch.store.list("instances", instantiationState=INSTANTIATED,
                                                  keep=_KEEP)
                  if d.get("hostId") in hosts and d.get("_handle")]
        with self._lock:
            for gone in set(self._readings) - {d["id"] for d in wanted}:
                del self._readings[gone]
        for d in wanted:
            if self._stop.is_set():
                break
            reading = self._read(hosts[d["hostId"]], d)
            with self._lock:
                self._readings[d["id"]] = reading
        return len(wanted)

    def _read(self, host, doc: dict) -> Reading:
        with self._lock:
            prev = self._readings.get(doc["id"])
        if prev is not None and prev.host != host.id:
            prev = None
        try:
            driver = host.compute(DeploymentType(doc["deploymentType"]))
            if not isinstance(driver, UsageReadable):
                return Reading(host.id, None, unavailable=f"the {driver.kind} driver "
                               f"{type(driver).__name__} reads no usage figures")
            now = driver.read_usage(doc["_handle"])
        except UnsupportedAction as e:
            return Reading(host.id, None, unavailable=e.detail[:300])
        except NotFound as e:
            return Reading(host.id, None, error=f"its runtime is gone: {e.detail}"[:300])
        except MecorchError as e:
            return Reading(host.id, prev.usage if prev else None,
                           prev.cpu_percent if prev else None, error=e.detail[:300])
        except ValueError as e:     # an unknown deploymentType: nothing to read
            return Reading(host.id, None, error=str(e)[:300])
        return Reading(host.id, now, cpu_percent(prev.usage if prev else None, now))

    # ------------------------------------------------------------ reads
    def reading(self, iid: str) -> Reading | None:
        with self._lock:
            return self._readings.get(iid)

    def view(self, iid: str) -> dict | None:
        r = self.reading(iid)
        return r.view() if r is not None else None

    def readings(self) -> dict[str, Reading]:
        with self._lock:
            return dict(self._readings)

    def host_sum(self, host_id: str, by_instance: bool = False) -> dict:
        """The host's instances summed (each figure over the instances that
        have it; `instances`: how many have figures, `unavailable`: how many
        have none); `time`: the oldest reading in the sum. `by_instance`:
        also `byInstance`, each instance's own view by its id (what the host
        reports to an MEO, whose `app show` shows them: mecorch.meo.lcm)."""
        total: dict = {k: None for k in SUMMED}
        counted = missing = 0
        oldest = None
        each: dict[str, dict] = {}
        for iid, r in self.readings().items():
            if r.host != host_id:
                continue
            v = r.view()
            each[iid] = v
            if r.usage is None:
                missing += 1
                continue
            counted += 1
            oldest = r.usage.at if oldest is None else min(oldest, r.usage.at)
            for k in SUMMED:
                if v.get(k) is not None:
                    total[k] = (total[k] or 0) + v[k]
        if total["cpuPercent"] is not None:
            total["cpuPercent"] = round(total["cpuPercent"], 2)
        out = {**total, "instances": counted, "unavailable": missing,
               "time": _stamp(oldest) if oldest is not None else None}
        if by_instance:
            out[BY_INSTANCE] = each
        return out

