"""The MEO's view of every edge host: which MEPMs it knows (from its config
or from their registration), whether each answers, and what each last
reported (manners, capacity, latency).

A heartbeat asks every MEPM for its HostInfo every `meo.heartbeat_s`
(longer with more hosts than `meo.max_heartbeats_per_s` allows: `period_s`). A
host that misses `meo.unreachable_after` heartbeats in a row is
UNREACHABLE: placement leaves it out and the host list shows it. When it
answers again it is resynced (its instances and the outcomes of the
operations that were in flight) without restarting anything; nothing on
the host depends on the MEO meanwhile.

Replicas of an MEO share this view through the store: the one that holds
the lease (mecorch.meo.leader) runs the heartbeat and writes what it
learns of each host (table host_states) when it changes; the others read
it (`follow_store`) for placement and listings. Room held for a deploy a
host has not reported yet is a row of `reservations`, so a replica places
knowing what another placed.

An operator cordons a host (`cordon`; `uncordon` reverses it) to take it
out of placement, e.g. before maintenance: no deploy, re-placement or
relocation lands there, and what runs there stays. The cordon is a key of
the host's row of `hosts` (`cordoned: {at, reason}`; a host from the
config or in-process gets a row holding only that), read from the store
at every placement and listing: a cordon taken at one replica counts at
every other at once, and survives restarts.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from mecorch.kernel import validate
from mecorch.kernel.errors import Conflict, InvalidInput, MecorchError, NotFound
from mecorch.spec.capacity import Need
from mecorch.meo.reservations import Reservations
from mecorch.mepm.contract import HostInfo, Mepm
from mecorch.mepm.remote import RemoteMepm
from mecorch.mepm.usage import BY_INSTANCE
from mecorch.kernel.states import DeploymentType
from mecorch.kernel.store import Has, Store
from mecorch.kernel.timeutil import timestamp
from mecorch.kernel.fileutil import token_lines
from mecorch.spec.placement import Candidate

log = logging.getLogger("mecorch.meo.hosts")
REACHABLE, UNREACHABLE, UNKNOWN = "REACHABLE", "UNREACHABLE", "UNKNOWN"
HEALTH_EVERY_S = 10.0       # how often (at most) the heartbeat also asks a host for its backends
MAX_BEATS_PER_S = 50.0      # meo.max_heartbeats_per_s by default (Nomad's too)
# a host's unchanged state is written for the other replicas this often
# (its last-seen time); a change is written at once
STATE_REFRESH_S = 30.0


@dataclass
class HostEntry:
    host_id: str
    mepm: Mepm
    source: str                     # "config" | "registration" | "in-process"
    url: str | None = None
    state: str = UNKNOWN            # until the first heartbeat
    info: HostInfo | None = None
    misses: int = 0
    last_seen: dict | None = None
    last_error: str = ""
    # its backends as the MEPM's own probes last saw them (MEPM contract
    # `health`), asked by the heartbeat every HEALTH_EVERY_S, and when
    backends: list = field(default_factory=list)
    backends_at: float | None = None
    # when the registry last marked it UNREACHABLE (time.time(); None while
    # REACHABLE): how long it has been lost, for the re-placement of apps
    # that opted in (meo/replace.py)
    unreachable_since: float | None = None
    # (info, info.to_dict()): `view`'s copy of the last report
    info_view: tuple | None = field(default=None, repr=False, compare=False)
    # the info dict a replica that does not lead last read (take_state)
    info_doc: dict | None = field(default=None, repr=False, compare=False)

    def instance_usage(self, host_instance_id: str) -> dict | None:
        """One of its instances' figures as the host last reported them
        (its `byInstance`, mecorch.mepm.usage), as of the last heartbeat;
        None when the host reported no reading of it."""
        usage = self.info.usage if self.info is not None else None
        each = usage.get(BY_INSTANCE) if usage else None
        got = each.get(host_instance_id) if isinstance(each, dict) else None
        return dict(got) if isinstance(got, dict) else None

    def unreachable_for_s(self, now: float | None = None) -> float | None:
        """Seconds since the host was marked UNREACHABLE (None: it is not)."""
        if self.state != UNREACHABLE or self.unreachable_since is None:
            return None
        return max(0.0, (now or time.time()) - self.unreachable_since)

    def heartbeat_age_s(self) -> float | None:
        """Seconds since the host last answered a heartbeat (None: never)."""
        if not self.last_seen:
            return None
        at = self.last_seen.get("seconds", 0) + self.last_seen.get("nanoSeconds", 0) / 1e9
        return round(max(0.0, time.time() - at), 1)

    def state_doc(self) -> dict:
        """What replicas that do not beat need of the host (host_states)."""
        return {"id": self.host_id, "state": self.state, "misses": self.misses,
                "info": self.info.to_dict() if self.info else None,
                "lastSeen": self.last_seen, "lastError": self.last_error,
                "backends": list(self.backends), "unreachableSince": self.unreachable_since}

    def take_state(self, doc: dict) -> None:
        self.state, self.misses = doc["state"], doc.get("misses", 0)
        if doc.get("info") != self.info_doc:     # (a new object: placement's cache made again)
            self.info = HostInfo.from_dict(doc["info"]) if doc.get("info") else None
            self.info_doc = doc.get("info")
        self.last_seen, self.last_error = doc.get("lastSeen"), doc.get("lastError", "")
        self.backends = list(doc.get("backends") or [])
        self.unreachable_since = doc.get("unreachableSince")

    def view(self, cordoned: dict | None = None) -> dict:
        """The host as the host list shows it (mecorch extension);
        `cordoned`: its cordon as the store has it (Registry.cordons)."""
        out = {"hostId": self.host_id, "state": self.state, "source": self.source,
               "url": self.url, "lastSeen": self.last_seen,
               "heartbeatAgeS": self.heartbeat_age_s(), "backends": list(self.backends),
               "cordoned": cordoned}
        if self.info:
            # made once per report: the host list of 1,000 hosts spent 140 ms
            # in to_dict (dataclasses.asdict) per listing
            if self.info_view is None or self.info_view[0] is not self.info:
                d = self.info.to_dict()
                if isinstance(d.get("resourceUsage"), dict):
                    # its instances' own readings are shown with each
                    # instance (SystemLcm.view), not in the host list
                    d["resourceUsage"] = {k: v for k, v in d["resourceUsage"].items()
                                          if k != BY_INSTANCE}
                self.info_view = (self.info, d)
            d = self.info_view[1]
            out.update(capacity=d["capacity"], latencyMs=d["latencyMs"],
                       resourceUsage=d["resourceUsage"],      # its instances' sum
                       live=d.get("live"))                    # takes a VM moved live
        if self.last_error and self.state == UNREACHABLE:
            out["reason"] = self.last_error
        lost = self.unreachable_for_s()
        if lost is not None:
            # what lostAfter is compared with (meo/replace.py)
            out["unreachableForS"] = round(lost, 1)
        return out


class Registry:
    def __init__(self, store: Store, cfg: dict,
                 on_return: Callable[[HostEntry], None] | None = None,
                 after_round: Callable[[], None] | None = None):
        meo = cfg.get("meo") or {}
        self.store = store
        self.heartbeat_s = float(meo.get("heartbeat_s", 2))
        # Nomad's max_heartbeats_per_second: the MEO asks at most this many
        # hosts a second, so with many hosts a host's period grows past
        # heartbeat_s (`period_s`) instead of the MEO's CPU growing with them
        # (1,000 hosts every 2 s on 8 threads took most of a core).
        self.max_beats_per_s = float(meo.get("max_heartbeats_per_s", MAX_BEATS_PER_S))
        self.unreachable_after = int(meo.get("unreachable_after", 2))
        self.timeout_s = float(meo.get("request_timeout_s", 10))
        self.on_return = on_return or (lambda entry: None)
        # run after every heartbeat round: what depends on the hosts' states
        # just read (the re-placement of apps whose host is lost)
        self.after_round = after_round or (lambda: None)
        self._hosts: dict[str, HostEntry] = {}
        # host -> (info, reachable, reserved, its Candidate): `_candidate`
        self._candidates: dict[str, tuple] = {}
        self.reservations = Reservations(store)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="heartbeat")
        # whether this process runs the heartbeat (the replica holding the
        # lease, mecorch.meo.leader) or reads what that one wrote
        self.leading: Callable[[], bool] = lambda: True
        self._written: dict[str, tuple[dict, float]] = {}   # host -> (state doc, when)
        self._refused: set[str] = set()     # registrations not loaded (said once)
        for i, entry in enumerate(meo.get("mepms") or []):
            self._from_config(entry, i)
        self.sync_members()

    def sync_members(self) -> None:
        """The registered hosts as the store has them: a replica learns of
        registrations and removals another replica took."""
        docs = {d["id"]: d for d in self.store.list("hosts")}
        for entry in self.entries():
            if entry.source == "registration" and (
                    entry.host_id not in docs or docs[entry.host_id]["url"] != entry.url):
                with self._lock:
                    self._hosts.pop(entry.host_id, None)
                entry.mepm.close()
        for hid, doc in docs.items():
            with self._lock:
                if hid in self._hosts:
                    continue
            if "url" not in doc:
                continue            # only the cordon of a host from a config (`cordon`)
            try:
                remote = self._remote(hid, doc["url"], doc.get("_token"),
                                      doc.get("caFile"), "url")
            except InvalidInput as e:
                if hid not in self._refused:
                    # registered before tokens went only over TLS or loopback
                    log.warning("registration of edge host %s not loaded (%s); it is "
                                "accepted again when its MEPM registers over https",
                                hid, e.detail)
                    self._refused.add(hid)
                continue
            try:
                self._add(HostEntry(hid, remote, "registration", doc["url"]))
            except Conflict:
                pass                # registered meanwhile by this replica

    def follow_store(self) -> None:
        """A replica that does not beat: the hosts and their states as the
        leader last wrote them."""
        self.sync_members()
        states = {d["id"]: d for d in self.store.list("host_states")}
        for entry in self.entries():
            doc = states.get(entry.host_id)
            if doc is not None:
                with self._lock:
                    entry.take_state(doc)

    # ---------------------------------------------------------------- membership
    def _remote(self, host_id: str, url: str, token: str | None, ca_file: str | None,
                field: str) -> Mepm:
        """Refuses (400 naming `field`) an http:// URL off loopback: the MEO
        sends the MEPM's token with every call."""
        return RemoteMepm(host_id, url, token, ca_file, self.timeout_s, field)

    def _from_config(self, entry: dict, i: int) -> None:
        where = f"meo.mepms[{i}]"
        if not isinstance(entry, dict):
            raise InvalidInput(f"{where} must be a mapping with id and url")
        hid = validate.ident(entry.get("id"), f"{where}.id")
        url = validate.text(entry.get("url"), f"{where}.url", 512)
        token = _read_token(entry.get("token_file"), f"{where}.token_file")
        self._add(HostEntry(hid, self._remote(hid, url, token, entry.get("ca_file"),
                                                 f"{where}.url"),
                            "config", url))

    def _add(self, entry: HostEntry) -> HostEntry:
        with self._lock:
            if entry.host_id in self._hosts:
                raise Conflict(f"edge host {entry.host_id!r} is already registered "
                               f"({self._hosts[entry.host_id].source})")
            self._hosts[entry.host_id] = entry
        return entry

    def attach(self, mepm: Mepm) -> HostEntry:
        """An in-process MEPM (one node, benchmarks, core tests)."""
        entry = self._add(HostEntry(mepm.host_id, mepm, "in-process"))
        self.beat(entry)
        return entry

    def register(self, body) -> dict:
        """An MEPM announcing itself: {hostId, url, token?, caFile?}. The MEO
        checks the MEPM at that URL really serves that host id before it
        records it; a re-registration of the same host and URL is a refresh."""
        if not isinstance(body, dict):
            raise InvalidInput("body must be {hostId, url, token}")
        extra = set(body) - {"hostId", "url", "token", "caFile"}
        if extra:
            raise InvalidInput(f"host registration has no field(s) {', '.join(sorted(extra))}")
        hid = validate.ident(body.get("hostId"), "hostId")
        url = validate.text(body.get("url"), "url", 512)
        token = body.get("token")
        if token is not None:
            token = validate.text(token, "token", 512)
        ca = body.get("caFile")
        if ca is not None:
            ca = validate.text(ca, "caFile", 1024)
        self.sync_members()         # another replica's registration counts
        with self._lock:
            old = self._hosts.get(hid)
        if old is not None and (old.source != "registration" or old.url != url):
            raise Conflict(f"edge host {hid!r} is already known at {old.url or old.source}")
        mepm = self._remote(hid, url, token, ca, "url")
        try:
            served = mepm.discover()
        except MecorchError as e:
            raise InvalidInput(f"cannot reach the MEPM of {hid!r} at {url}: {e.detail}") from None
        if hid not in served:
            raise InvalidInput(f"the MEPM at {url} serves {', '.join(served) or 'no host'}, "
                               f"not {hid!r}")
        with self.store.transaction():
            doc = {"id": hid, "url": url, "_token": token, "caFile": ca}
            was = self.store.get("hosts", hid) or {}
            if was.get("cordoned"):     # a re-registration (its MEPM restarted) stays out
                doc["cordoned"] = was["cordoned"]
            self.store.put("hosts", hid, doc)
        if old is not None:
            with self._lock:
                self._hosts.pop(hid, None)
        entry = self._add(HostEntry(hid, mepm, "registration", url))
        self.beat(entry)
        return self.view(hid)

    def deregister(self, host_id: str) -> None:
        entry = self.get(host_id)
        if entry.source != "registration":
            raise Conflict(f"edge host {host_id!r} comes from the {entry.source}; "
                           "remove it there")
        with self._lock:
            self._hosts.pop(host_id, None)
        self.store.delete("hosts", host_id)
        self.store.delete("host_states", host_id)
        entry.mepm.close()

    def get(self, host_id: str) -> HostEntry:
        with self._lock:
            entry = self._hosts.get(host_id)
        if entry is None:
            self.sync_members()     # registered at another replica since
            with self._lock:
                entry = self._hosts.get(host_id)
        if entry is None:
            raise NotFound(f"unknown edge host {host_id!r}; known: "
                           f"{', '.join(sorted(self._hosts)) or 'none'}")
        return entry

    def known(self, host_id: str) -> HostEntry | None:
        """The host's entry as this process has it, or None: no store read
        (`get` reads the registrations again for an unknown host), for a
        lookup per instance of a listing."""
        with self._lock:
            return self._hosts.get(host_id)

    def entries(self) -> list[HostEntry]:
        with self._lock:
            return sorted(self._hosts.values(), key=lambda e: e.host_id)

    def view(self, host_id: str) -> dict:
        """One host as the API shows it, with its cordon (404: unknown)."""
        entry = self.get(host_id)
        return entry.view(self.cordons().get(host_id))

    def views(self) -> list[dict]:
        cordons = self.cordons()
        return [e.view(cordons.get(e.host_id)) for e in self.entries()]

    # ---------------------------------------------------------------- cordon
    def cordons(self) -> dict[str, dict]:
        """host id -> its cordon {at, reason}, as the store has it (the
        rows that hold one only: the database leaves out the others; 0.5 ms
        at 1,000 registered hosts, read at each placement and listing)."""
        return {d["id"]: d["cordoned"] for d in self.store.list(
            "hosts", Has(("cordoned",)), keep=("id", "cordoned"))}

    def cordon(self, host_id: str, reason: str = "") -> dict:
        """Take the host out of placement until `uncordon`; its instances
        stay. Cordoning a cordoned host keeps when it was cordoned (a
        reason given replaces its reason). 404 for an unknown host."""
        self.get(host_id)
        with self.store.transaction():
            doc = self.store.get("hosts", host_id) or {"id": host_id}
            was = doc.get("cordoned")
            now = {"at": was["at"] if was else timestamp(),
                   "reason": reason or (was or {}).get("reason", "")}
            if now != was:
                doc["cordoned"] = now
                self.store.put("hosts", host_id, doc)
        if was is None:
            log.warning("edge host %s cordoned%s: it takes no new placement", host_id,
                        f" ({now['reason']})" if now["reason"] else "")
        return now

    def uncordon(self, host_id: str) -> bool:
        """The host takes placements again; False when it was not cordoned.
        404 for an unknown host."""
        self.get(host_id)
        with self.store.transaction():
            doc = self.store.get("hosts", host_id)
            if not doc or not doc.get("cordoned"):
                return False
            del doc["cordoned"]
            if "url" in doc:            # a registration: its row stays
                self.store.put("hosts", host_id, doc)
            else:                       # the row held only the cordon
                self.store.delete("hosts", host_id)
        log.warning("edge host %s uncordoned: it takes placements again", host_id)
        return True

    # ---------------------------------------------------------------- placement facts
    def candidates(self) -> list[Candidate]:
        """Every host as placement sees it (`spec.placement`): its last
        report less its reservations (mecorch.meo.reservations), and its
        cordon."""
        cordons = self.cordons()
        held = self.reservations.held()
        with self._lock:
            return [self._candidate(e, _sum(held.get(e.host_id, ())),
                                    (cordons.get(e.host_id) or {}).get("reason", "")
                                    if e.host_id in cordons else None)
                    for e in self._hosts.values()]

    def _candidate(self, e: HostEntry, reserved: Need, cordoned: str | None) -> Candidate:
        """`candidate` of the entry, made again only when its report, its
        state, its reservations or its cordon changed: each placement asks
        for every host's (made afresh, 1,000 hosts took 26 ms of each
        placement)."""
        reachable = e.state == REACHABLE
        made = self._candidates.get(e.host_id)
        if made is None or made[0] is not e.info \
                or made[1:4] != (reachable, reserved, cordoned):
            made = (e.info, reachable, reserved, cordoned,
                    candidate(e.host_id, reachable, e.info, reserved, cordoned))
            self._candidates[e.host_id] = made
        return made[4]

    def reserve(self, host_id: str, instance_id: str, need: Need) -> None:
        """Hold `need` on the host until a report of the host counts it
        (mecorch.meo.reservations; inside the store's "placement" lock)."""
        self.reservations.reserve(host_id, instance_id, need)

    def dispatched(self, host_id: str, instance_id: str) -> None:
        """The host accepted the deploy: a report asked for after this counts
        it, and the reservation ends with that report. Without a heartbeat
        (tests, benchmarks) the host is asked at once."""
        self.reservations.dispatched(host_id, instance_id)
        if self.heartbeat_s <= 0:
            try:
                self.beat(self.get(host_id))
            except NotFound:
                pass

    def unreserve(self, host_id: str, instance_id: str) -> None:
        self.reservations.unreserve(host_id, instance_id)

    def _persist(self, entry: HostEntry) -> None:
        """Write the host's state for the other replicas when it changed
        (or every STATE_REFRESH_S: its last-seen time), not at every beat."""
        with self._lock:
            doc = entry.state_doc()
        # a change of the figures alone (its instances' readings and their
        # sum, new at every usage round of the host: mecorch.mepm.usage) is
        # not a change of state: written with the refresh, not at each beat
        key = {k: v for k, v in doc.items() if k != "lastSeen"}
        if isinstance(key.get("info"), dict) and "resourceUsage" in key["info"]:
            key["info"] = {k: v for k, v in key["info"].items() if k != "resourceUsage"}
        last = self._written.get(entry.host_id)
        now = time.monotonic()
        if last is not None and last[0] == key and now - last[1] < STATE_REFRESH_S:
            return
        try:
            self.store.put("host_states", entry.host_id, doc)
        except MecorchError as e:       # the store away: written again next time
            log.debug("state of edge host %s not written: %s", entry.host_id, e.detail)
            return
        self._written[entry.host_id] = (key, now)

    # ---------------------------------------------------------------- heartbeat
    def beat(self, entry: HostEntry) -> bool:
        """Ask one host for its info now; returns whether it answered."""
        asked_at = time.time()
        try:
            info = entry.mepm.info()
        except MecorchError as e:
            with self._lock:
                entry.misses += 1
                entry.last_error = e.detail
                went = entry.state == REACHABLE and entry.misses >= self.unreachable_after
                if went or entry.info is None:
                    entry.state = UNREACHABLE
                if entry.state == UNREACHABLE and entry.unreachable_since is None:
                    entry.unreachable_since = time.time()
            if went:
                log.warning("edge host %s UNREACHABLE: %s", entry.host_id, e.detail)
            self._persist(entry)
            return False
        if info.host_id != entry.host_id:
            with self._lock:
                entry.state, entry.last_error = UNREACHABLE, (
                    f"the MEPM at {entry.url} now serves {info.host_id!r}")
                if entry.unreachable_since is None:
                    entry.unreachable_since = time.time()
            self._persist(entry)
            return False
        with self._lock:
            before = entry.state
            entry.info, entry.misses, entry.last_error = info, 0, ""
            entry.last_seen = timestamp()
            entry.state = REACHABLE
            entry.unreachable_since = None
        self.reservations.counted(entry.host_id, asked_at)
        self._health(entry)
        if before != REACHABLE:
            log.log(logging.WARNING if before == UNREACHABLE else logging.INFO,
                    "edge host %s REACHABLE (was %s)", entry.host_id, before)
            try:
                self.on_return(entry)
            except Exception:           # noqa: BLE001 - a resync failure is retried next time
                log.exception("resync of edge host %s failed", entry.host_id)
                with self._lock:
                    entry.state = UNREACHABLE
                    if entry.unreachable_since is None:
                        entry.unreachable_since = time.time()
        self._persist(entry)
        return True

    def _health(self, entry: HostEntry) -> None:
        """The host's backends, at most every HEALTH_EVERY_S (its MEPM
        answers from its own background probes: no backend is touched)."""
        now = time.time()
        # and at most every third heartbeat: with 1,000 hosts (a period of
        # 20 s) it doubled the heartbeat's calls
        every = max(HEALTH_EVERY_S, 3 * self.period_s())
        if entry.backends_at is not None and now - entry.backends_at < every:
            return
        try:
            got = entry.mepm.health()
        except MecorchError as e:       # the next heartbeat says whether it is away
            log.debug("backends of edge host %s not read: %s", entry.host_id, e.detail)
            return
        with self._lock:
            entry.backends, entry.backends_at = got, now

    def beat_all(self) -> None:
        list(self._pool.map(self.beat, self.entries()))

    def period_s(self) -> float:
        """How often each host is asked: meo.heartbeat_s, or longer when
        more hosts are known than meo.max_heartbeats_per_s allows in it:
        N hosts every N / max_heartbeats_per_s seconds. A host that stops
        answering is UNREACHABLE after unreachable_after such periods (1,000
        hosts at 50 a second: every 20 s, UNREACHABLE after 40 to 60 s; up
        to 100 hosts stay at heartbeat_s 2 s)."""
        if self.heartbeat_s <= 0 or self.max_beats_per_s <= 0:
            return self.heartbeat_s
        with self._lock:
            n = len(self._hosts)
        return max(self.heartbeat_s, n / self.max_beats_per_s)

    def paced(self, fn: Callable[[HostEntry], object], entries: list[HostEntry],
              per_s: float, pool: bool = True,
              stop: threading.Event | None = None) -> bool:
        """`fn` on every entry, one every 1/`per_s` seconds (handed to the
        pool, or run in this thread): a round over many hosts is spread over
        its period, not a burst that holds the MEO's CPU (and its API
        answers) for a second, and a host that does not answer holds one
        pool thread, not the round. False when `stop` (the registry's by
        default) was set meanwhile."""
        stop = stop or self._stop
        started, futures = time.monotonic(), []
        try:
            for i, entry in enumerate(entries):
                due = started + i / per_s if per_s > 0 else started
                if stop.wait(max(0.0, due - time.monotonic())) if i else stop.is_set():
                    return False
                if pool:
                    futures.append(self._pool.submit(fn, entry))
                else:
                    fn(entry)
            return True
        finally:
            for f in futures:
                f.result()              # its exception is the round's (logged by the loop)

    def start(self) -> None:
        if self._thread is None and self.heartbeat_s > 0:
            self._thread = threading.Thread(target=self._loop, name="meo-heartbeat", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        # a round starts every period_s (the wait is what the paced round
        # left of it), its beats spread at max_heartbeats_per_s; a replica
        # that does not lead reads the leader's instead
        wait = self.heartbeat_s
        while not self._stop.wait(wait):
            started = time.monotonic()
            if not self.leading():
                try:
                    self.follow_store()
                except Exception as e:  # noqa: BLE001 - the store away, say: next round
                    log.debug("hosts not read from the store: %s", e)
                wait = self.heartbeat_s
                continue
            try:
                self.sync_members()
                self.paced(self.beat, self.entries(), self.max_beats_per_s)
            except Exception:           # noqa: BLE001 - the heartbeat must survive anything
                log.exception("heartbeat round failed")
            try:
                self.after_round()
            except Exception:           # noqa: BLE001 - as above
                log.exception("after the heartbeat round")
            wait = max(0.0, self.period_s() - (time.monotonic() - started))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        self._pool.shutdown(wait=True)
        for e in self.entries():
            e.mepm.close()


def _sum(needs) -> Need:
    cpu, mem, disk = 0.0, 0, 0.0
    for n in needs:
        cpu, mem, disk = cpu + n.vcpu, mem + n.memory_mb, disk + n.disk_gb
    return Need(cpu, mem, disk)


def _read_token(path, where: str) -> str | None:
    if path is None:
        return None
    path = validate.text(path, where, 1024)
    try:
        lines = token_lines(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise InvalidInput(f"cannot read {where} {path}: {e.strerror}") from None
    if not lines:
        raise InvalidInput(f"{where} {path} holds no token")
    return lines[0]


def candidate(host_id: str, reachable: bool, info: HostInfo | None,
              reserved: Need, cordoned: str | None = None) -> Candidate:
    """A host as placement sees it: the room it last reported for each
    manner, less the MEO's reservations there it has not reported yet, and
    its cordon's reason (None: not cordoned). A host never reached has no
    room."""
    if info is None:
        return Candidate(host_id, False, cordoned=cordoned)
    vm = info.manners.get(DeploymentType.VM.value)
    caps = {m: cap.capabilities(m) for m, cap in info.manners.items()}
    return Candidate(host_id, reachable,
                     {m: cap.room().reserving(reserved) for m, cap in info.manners.items()},
                     vm.accel if vm else "", info.latency_ms,
                     {m: c for m, c in caps.items() if c is not None}, info.service_cidr,
                     cordoned=cordoned)
