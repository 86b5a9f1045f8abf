"""App lifecycle at the system level (the MEO's Mm1 app_lcm for the OSS).

The MEO keeps the OSS's instance resources and op occurrences; the work is
done by the MEPM of the host each instance is placed on, reached through
the MEPM contract. An instantiate:

1. plans the request (`spec.plan.plan_request`, the same pure code as a
   host: orchestrationInfo parsed once, the manner, the resource request,
   the rules validated), places it (`placement.choose_plan`: its fixed
   service addresses and DNS names against the claims it knows on each
   host, `_held`: 409 before the 202 for a named host where they are held)
   and reserves its need in the registry until the host's own ledger holds
   them; the
   host is sent the same MEC 010-2 body with the manner and host named,
   and plans it once on its side against its own host;
2. journals the op occurrence, then, as recorded steps: makes the package
   onboarded on the host (on first use), creates the host's instance
   resource, dispatches the host's instantiate, and follows the host's op
   occurrence to its end, copying what was allocated.

Every call to a host carries an idempotency key derived from the MEO's own
ids, and every step is journalled, so the same function finishes an
operation after a broken link or an MEO restart: a retried create or
instantiate returns what the first made, never a second instance. While a
host is UNREACHABLE its operations stay PROCESSING; when it returns the
registry's resync resumes them and they end as the host ended them.

A FORCEFUL terminate while the MEO's own GRACEFUL terminate of the instance
is in progress is not refused: it is an op occurrence of its own, sent to
the host as a FORCEFUL terminate, which supersedes the host's graceful one
(mecorch.mepm.lcm). The MEO's graceful op then ends as the host's did: FAILED,
superseded by the MEO's FORCEFUL terminate, or COMPLETED when the host was
already stopping the app.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import dataclasses
from typing import Callable

from mecorch.spec import decision
from mecorch.kernel import logs, validate
from mecorch.kernel.errors import (
    BackendUnavailable, Conflict, InvalidInput, MecorchError, NotFound, NotImplementedHere,
    StoreUnavailable, Timeout)
from mecorch.kernel.journal import Journal
from mecorch.kernel.locks import exclusive
from mecorch.mepm.lcm import (
    InstanceQueries, create_instance, fingerprint, parse_operate, replayed,
    parse_terminate, refuse_same_state)
from mecorch.kernel.states import (
    InstanceOperationalState, InstantiationState, LcmOperation, OperationState, TerminationType,
    operation_words)
from mecorch.kernel.store import CLAIMING, Store
from mecorch.kernel.timeutil import public
from mecorch.kernel.workers import Workers
from mecorch.spec import placement
from mecorch.spec.plan import INSTANTIATE_FIELDS, plan_request, selected_hosts
from mecorch.meo import relocate, replace
from mecorch.meo.follow import OpFollower
from mecorch.meo.leader import Fenced
from mecorch.meo.registry import REACHABLE, UNKNOWN, UNREACHABLE, HostEntry, Registry

log = logging.getLogger("mecorch.meo.lcm")
INSTANTIATED = InstantiationState.INSTANTIATED.value
NOT_INSTANTIATED = InstantiationState.NOT_INSTANTIATED.value
SELECTED = "_selectedHosts"     # an instance's key: the hosts its instantiate named
# What the MEO copies from the host's AppInstanceInfo (the host is the
# truth for what runs on it).
# The restart policy's fields (mecorch.mepm.supervisor) come along.
_RESTART_VIEW = ("restartPolicy", "restartCount", "lastExitCode", "lastExitTime",
                 "nextRestartTime")
_FROM_HOST = ("instantiationState", "instantiatedAppState", "deploymentType",
              "allocatedResources", "observedState", "observedStateDetail",
              "observedStateTime", "health", "fenced", *_RESTART_VIEW)
_DEPLOYED = ("instantiatedAppState", "hostId", "deploymentType", "allocatedResources",
             "observedState", "observedStateDetail", "observedStateTime", "_remote",
             "decisionReason", "health", "fenced", "relocatedFrom", *replace.DEPLOYED,
             *_RESTART_VIEW, SELECTED)
_NO_RULES = {"trafficRules": [], "dnsRules": []}


class HostAway(Exception):
    """The host of an operation stopped answering: leave the op PROCESSING
    for the resync."""


class SystemLcm(InstanceQueries):
    """Queries (get, list, list_page, op, ops) as a host's: InstanceQueries."""

    def __init__(self, store: Store, packages, registry: Registry, cfg: dict,
                 workers: int = 16):
        self.store = store
        self.packages = packages
        self.registry = registry
        self.journal = Journal(store)
        self.state_dir = cfg["state_dir"]      # (a relocation's data passes through it)
        self.default_graceful_s = int(cfg["orchestrator"]["graceful_timeout_s"])
        self.orchestrator_cfg = cfg["orchestrator"]
        meo = cfg.get("meo") or {}
        self.op_timeout_s = float(meo.get("op_timeout_s", 3600))
        self._pool = Workers(workers, "meo-lcm")
        self._busy: set[str] = set()           # instances with an operation here
        self._live: set[str] = set()           # op occurrences a worker is on
        self._superseded: dict[str, str] = {}  # GRACEFUL terminate op -> FORCEFUL op
        self._lock = threading.Lock()
        self._place_lock = threading.Lock()
        self._synced_at: dict[str, float] = {}  # host -> when its instances were last read
        # the hosts' op notifications (set by the MEO: mecorch.meo.follow)
        # whether this process runs ops (the replica holding the lease:
        # mecorch.meo.leader; set by the MEO)
        self.leading: Callable[[], bool] = lambda: True
        self.follower = OpFollower(cfg["state_dir"], (cfg.get("meo") or {}).get("callback_url"))
        self.follower.on_instance = self._instance_notified

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    # ---------------------------------------------------------------- create / delete
    def create(self, body: dict, idempotency_key: str | None = None,
               instance_id: str | None = None) -> dict:
        """`instance_id` is never given to an MEO (mecorch.api.routes.meo_id)."""
        return public(create_instance(self.store, self.packages, body, idempotency_key,
                                      instance_id)[0])

    def delete(self, instance_id: str) -> None:
        with self._exclusive(instance_id, held=False):
            remote = self._deletable(instance_id).get("_hostInstance")
            if remote:
                # the host's (NOT_INSTANTIATED) resource goes first: a host
                # that is away keeps the MEO's record, to be deleted again.
                # Not in a transaction: no replica's store waits on a host.
                self.registry.get(remote["hostId"]).mepm.delete_instance(remote["id"])
            with self.store.transaction():
                self.store.lock(f"instance:{instance_id}")
                self._deletable(instance_id)    # no instantiate slipped in meanwhile
                self.store.delete("instances", instance_id)
                self.store.delete("rules", instance_id)     # the rules last read from the host

    def _deletable(self, instance_id: str) -> dict:
        doc = self.get(instance_id)
        self._no_unfinished_op(instance_id)
        if doc["instantiationState"] != NOT_INSTANTIATED:
            raise Conflict(f"app instance {instance_id} is INSTANTIATED: terminate it first")
        return doc

    # ---------------------------------------------------------------- instantiate
    def instantiate(self, instance_id: str, body: dict,
                    idempotency_key: str | None = None, from_meo: bool = False) -> dict:
        """`from_meo` is never true here (an MEO has no MEO above it)."""
        if not isinstance(body, dict):
            raise InvalidInput("body must be an InstantiateAppRequest object")
        # mecorch extension: re-place the app when its host has been
        # UNREACHABLE that long (meo/replace.py); the host is sent it too,
        # to fence the app after that long without the MEO (mepm/fence.py)
        lost_after = replace.parse_lost_after(body)
        validate.known_fields(body, (*INSTANTIATE_FIELDS, replace.FIELD), "InstantiateAppRequest")
        request, body = body, {k: v for k, v in body.items() if k != replace.FIELD}
        if lost_after is not None and len(selected_hosts(body)) == 1:
            raise InvalidInput(f"{replace.FIELD}: selectedMECHostInfo names one edge host, so "
                               "there is no other to re-place the app on")
        # a host's heartbeat period, longer than meo.heartbeat_s with many
        # hosts (Registry.period_s)
        beat = self.registry.period_s()
        if lost_after is not None and 0 < beat and lost_after < 2 * beat:
            # the host fences the app after lostAfter without a word from the
            # MEO: heartbeats must come well within it, or it fences an app
            # whose MEO is there
            raise InvalidInput(f"{replace.FIELD}: {lost_after} s is less than two heartbeats "
                               f"of this MEO (every {beat:g} s: meo.heartbeat_s "
                               f"{self.registry.heartbeat_s:g} s, at most "
                               f"meo.max_heartbeats_per_s {self.registry.max_beats_per_s:g} "
                               "hosts a second); the host would fence the app between two "
                               "of them")
        key = digest = None
        if idempotency_key:
            key = (f"instantiate|{instance_id}|"
                   f"{validate.text(idempotency_key, 'Idempotency-Key', 128)}")
            digest = fingerprint(request)
            if (seen := replayed(self.store, key, digest)) is not None:
                return seen
        inst = self.get(instance_id)
        if inst["instantiationState"] != NOT_INSTANTIATED:
            raise Conflict(f"app instance {instance_id} is already INSTANTIATED")
        pkg = self.packages.usable(inst["appDId"], inst.get("appPkgId"))
        # the request read once, validated as the host will (400 here, not
        # after the 202); the host reads the same body once on its side.
        # Before the store's transaction: every other store user of this
        # process waits while it is open
        p = plan_request(instance_id, pkg, body, self._chooser(pkg, selected_hosts(body)))
        with self._exclusive(instance_id):
            if key and (seen := replayed(self.store, key, digest)) is not None:
                return seen         # the twin's, on another replica, came first
            inst = self.get(instance_id)
            self._no_unfinished_op(instance_id)
            if inst["instantiationState"] != NOT_INSTANTIATED:
                raise Conflict(f"app instance {instance_id} is already INSTANTIATED")
            with self._place_lock:
                # one placement at a time across replicas too: each sees the
                # reservations the one before made
                self.store.lock("placement")
                claims = placement.plan_claims(p, inst["appDId"])
                # a request that claims no fixed destination and no DNS name
                # conflicts with nothing held: the claims of every instance
                # (a read of all of them, 10,000: most of a placement's time)
                # are read only for one that does
                held = self._held(but=instance_id) if claims.traffic or claims.dns else {}
                candidates = [dataclasses.replace(c, held=held[c.host_id])
                              if c.host_id in held else c
                              for c in self.registry.candidates()]
                if len(p.wanted) == 1:
                    # a named host where another instance holds what the
                    # request claims: the host's refusal, before the 202
                    taken = claims.taken_on(next(
                        (c for c in candidates if c.host_id == p.wanted[0]),
                        placement.Candidate(p.wanted[0], False)))
                    if taken:
                        log.info("instance %s (app %s) not placed: %s", instance_id,
                                 inst["appDId"], taken)
                        logs.event("placement.refused", instance=instance_id,
                                   app=inst["appDId"], manner=p.manner.value, reasons="claims")
                        raise Conflict(f"edge host {p.wanted[0]!r}: {taken}")
                try:
                    host_id, where = placement.choose_plan(p, candidates, inst["appDId"])
                except MecorchError as e:
                    log.info("instance %s (app %s) not placed: %s", instance_id,
                             inst["appDId"], e.detail)
                    logs.event("placement.refused", instance=instance_id, app=inst["appDId"],
                               manner=p.manner.value, reasons=",".join(refusal_reasons(e)))
                    raise
                self.registry.reserve(host_id, instance_id, p.need)
            log.info("instance %s (app %s) placed on %s as %s: %s", instance_id,
                     inst["appDId"], host_id, p.manner.value, where)
            logs.event("placement.decided", instance=instance_id, app=inst["appDId"],
                       host=host_id, manner=p.manner.value, decidedBy=p.decision.source)
            try:
                # the host decides the same manner: it is told it explicitly
                host_body = {k: v for k, v in body.items()
                             if k not in decision.TYPE_FIELDS and k != "selectedMECHostInfo"}
                host_body["deploymentType"] = p.manner.value
                host_body["selectedMECHostInfo"] = [{"hostId": {"id": host_id}}]
                if lost_after is not None:
                    host_body[replace.FIELD] = lost_after       # the host fences by it
                # "wanted": the hosts the request selected, where a relocation
                # may take it (mecorch.meo.relocate)
                op = self.journal.start(instance_id, LcmOperation.INSTANTIATE, {
                    "hostId": host_id, "manner": p.manner.value,
                    "decidedBy": p.decision.source, "body": host_body, "pkgId": pkg["id"],
                    "wanted": selected_hosts(body)})
                # mecorch extension: why this manner, and why this host
                op["decisionReason"] = f"{p.decision.reason}; placed on {where}"
                self.store.put("op_occs", op["id"], op)
                inst["_opId"] = op["id"]
                # what it claims there, as the MEO knows it until it reads
                # the host's rules (`_held`)
                # (a kind it claims nothing of is left out: `_held` reads only
                # the instances that have one)
                inst["_claims"] = {"hostId": host_id}
                if claims.traffic:
                    inst["_claims"]["trafficRules"] = [r.to_etsi() for r in claims.traffic]
                if claims.dns:
                    inst["_claims"]["dnsRules"] = [r.to_etsi() for r in claims.dns]
                if claims.traffic or claims.dns:
                    inst[CLAIMING] = "yes"      # the store's index of what `_held` reads
                else:
                    inst.pop(CLAIMING, None)
                # what a re-placement needs to place it again as asked (or
                # nothing: not opted in)
                replace.remember(inst, lost_after, host_body, selected_hosts(body), pkg["id"])
                # the hosts the request named (a drain leaves an instance
                # that named only its host where it is: meo/drain.py)
                inst[SELECTED] = selected_hosts(body)
                if claims.share:        # a replica: others of its app may share with it
                    inst["_claims"]["shareServiceAddress"] = True
                self.store.put("instances", instance_id, inst)
                logs.op_started(op, inst)
                if key:
                    self.store.put("idempotency", key, {"resource": op["id"],
                                                        "fingerprint": digest})
            except BaseException:
                self.registry.unreserve(host_id, instance_id)
                raise
            here = self._runs_here(instance_id, op)
        if here:
            self._pool.submit(self._guarded, instance_id, self._run_instantiate, op)
        return public(op)

    def _held(self, but: str) -> dict[str, tuple[tuple[str, dict], ...]]:
        """host -> the claims the MEO knows its instances hold there
        (`placement.Candidate.held`), `but`'s excepted: each instance
        INSTANTIATED on the host or being instantiated there, with the rules
        last read from the host (the `rules` table) or else those it planned
        (`_claims`: fixed addresses and DNS names). The host's own ledger is
        the authority: it checks again (this view may be stale)."""
        out: dict[str, list] = {}
        read_from_hosts = {d["id"]: d for d in self.store.list("rules")}
        # only the instances that may hold a claim (rules planned: the
        # store's CLAIMING index; or read from their host), and only the
        # keys read here: every instance's whole document was 300 ms at
        # 10,000 instances
        keys = ("id", "instantiationState", "hostId", "appDId", "_claims", "_opId")
        found = self.store.list("instances", keep=keys, **{CLAIMING: "yes"})
        seen = {d["id"] for d in found}
        for iid in read_from_hosts:
            if iid not in seen and (doc := self.store.get("instances", iid)) is not None:
                found.append({k: doc.get(k) for k in keys})
        for inst in found:
            iid, planned = inst["id"], inst.get("_claims") or {}
            if iid == but:
                continue
            if inst.get("instantiationState") == INSTANTIATED:
                host = inst.get("hostId") or planned.get("hostId")
            else:
                op = self.store.get("op_occs", inst["_opId"]) if inst.get("_opId") else None
                if not planned or op is None \
                        or op["lcmOperation"] != LcmOperation.INSTANTIATE.value \
                        or op["operationState"] not in ("STARTING", "PROCESSING"):
                    continue
                host = planned.get("hostId")
            read = read_from_hosts.get(iid)
            rules = read if read and read.get("hostId") == host else planned
            if host and rules:
                out.setdefault(host, []).append((iid, {
                    "appDId": inst.get("appDId"),
                    "trafficRules": rules.get("trafficRules") or [],
                    "dnsRules": rules.get("dnsRules") or [],
                    "shareServiceAddress": planned.get("shareServiceAddress", False)}))
        return {h: tuple(v) for h, v in out.items()}

    def _chooser(self, pkg: dict, wanted: list[str]):
        """The manner policy of a dual-format app whose request names none
        (a `spec.plan.Chooser`), over what the hosts last reported
        (decision.choose_manner is pure), from the needs the plan computed."""
        def choose(manners, needs, accel):
            live = [c for c in self.registry.candidates()
                    if c.reachable and (not wanted or c.host_id in wanted)]
            # a cordoned host takes nothing, so it does not sway the manner;
            # when only cordoned ones are left, placement's refusal says so
            facts = [placement.facts(c) for c in
                     ([c for c in live if c.cordoned is None] or live)]
            pref, source = decision.preference_for(self.orchestrator_cfg, pkg["appDId"])
            manner, reason = decision.choose_manner(manners, facts, pref, needs, accel,
                                                    source or "the configured preference")
            return manner, reason, []       # placement then picks among all the hosts
        return choose

    def _run_instantiate(self, op: dict) -> None:
        entry = self.registry.get(op["_plan"]["hostId"])
        self._run(op, entry, self._instantiate_steps,
                  lambda: self.registry.unreserve(entry.host_id, op["appInstanceId"]))

    def _instantiate_steps(self, op: dict, entry: HostEntry) -> tuple[dict, str]:
        """The recorded steps of an instantiate on the host; each done once,
        each call to the host idempotent. Returns the host's ended op and the
        host's instance id."""
        plan, mepm = op["_plan"], entry.mepm
        remote = self._made_on_host(op, entry)
        sent = self.journal.data(op, "dispatched")
        if sent is None:
            host_op = mepm.instantiate(remote["id"], plan["body"], key=f"meo-{op['id']}")
            sent = self.journal.step(op, "dispatched", opId=host_op["id"])["_steps"][-1]
        # the host's own ledger holds it now: the MEO's reservation goes once
        # a report made after this dispatch has arrived
        self.registry.dispatched(entry.host_id, op["appInstanceId"])
        return self._await(entry, sent["opId"]), remote["id"]

    def _made_on_host(self, op: dict, entry: HostEntry) -> dict:
        """The first recorded steps of a deploy on the host (an instantiate's,
        a relocation's): the package onboarded there, the host's instance
        resource made. Returns the "created" step ({id: the host's id})."""
        iid, plan, mepm = op["appInstanceId"], op["_plan"], entry.mepm
        if not self.journal.done(op, "package"):
            pkg = self.packages.get(plan["pkgId"])
            host_pkg = mepm.ensure_package(pkg, pkg["_zip"])
            self.packages.record_host_copy(pkg["id"], entry.host_id, host_pkg)
            self.journal.step(op, "package", id=host_pkg)
        remote = self.journal.data(op, "created")
        if remote is None:
            inst = self.get(iid)
            body = {"appDId": inst["appDId"], "appInstanceName": inst["appInstanceName"],
                    "appInstanceDescription": inst["appInstanceDescription"],
                    "appPkgId": self.journal.data(op, "package")["id"]}   # its version
            if plan.get("replaces") or plan.get(relocate.KEY):
                # the instance still lives on the lost / source host until
                # this ends
                made = replace.create_on(mepm, body, op)
                remote = self.journal.step(op, "created", id=made["id"])["_steps"][-1]
            else:
                # one identity: the host makes its instance under the MEO's id
                # (a host that has the package under an id of its own, from
                # before, is sent that id: the MEO maps package copies)
                made = mepm.create_instance(body, key=f"meo-{iid}", instance_id=iid)
                remote = self.journal.step(op, "created", id=made["id"])["_steps"][-1]
                inst = self.get(iid)
                inst["_hostInstance"] = {"hostId": entry.host_id, "id": made["id"]}
                self.store.put("instances", iid, inst)
        return remote

    def _run(self, op: dict, entry: HostEntry, steps, on_failure=None) -> None:
        """Run an operation's steps on its host, then take the host's view
        of the instance; the op ends as the host's op ended. While the host
        is away the op stays PROCESSING (the resync resumes it)."""
        iid = op["appInstanceId"]
        try:
            host_op, host_instance = steps(op, entry)
            if host_op["operationState"] != OperationState.COMPLETED.value:
                raise self._superseded_by(op) or _host_failure(entry.host_id, host_op)
            view = entry.mepm.get_instance(host_instance)
            # Written under the lease (a replica that took over finishes the
            # op instead), the notifications with the op's end in one
            # transaction: the subscribers hear of it once, never from both.
            with self.store.transaction():
                self._fenced()
                inst = self.get(iid)
                self._copy_host_view(inst, view, entry.host_id)
                if op.get("decisionReason") and inst.get("instantiationState") == INSTANTIATED:
                    inst["decisionReason"] = op["decisionReason"]   # the MEO's: manner, host
                if op["_plan"].get("replaces") and inst["instantiationState"] == INSTANTIATED:
                    # it lives on the new host now; the lost host's copy is removed
                    # when that host answers again (replace.Replacer.remove_stale)
                    replace.moved(self.store, inst, op, entry.host_id, host_instance)
                    self.store.delete("rules", iid)         # those read from the lost host
                self.store.put("instances", iid, inst)
                if inst["instantiationState"] == NOT_INSTANTIATED:
                    self.store.delete("rules", iid)         # the host removed them
            # before the op ends (a client that sees it COMPLETED reads the
            # package's new usageState), not counting this op as running;
            # not in a transaction: a deletion pending removes host copies.
            # An instance left INSTANTIATED from a package already IN_USE
            # changes no usage: the count reads every instance of the app
            # (10,000 of one app: ~20 ms of each op's end), so it is made
            # only for an end that may change one
            pkg = self.store.get("packages", inst["appPkgId"]) if inst.get("appPkgId") else None
            if not (inst.get("instantiationState") == INSTANTIATED and pkg is not None
                    and pkg.get("usageState") == "IN_USE"):
                self.packages.refresh_usage(inst["appDId"], ending=op["id"])
            with self.store.transaction():
                self.journal.events.instance(inst)              # notifications
                ended = self.journal.finish(op)                 # fenced too
            self._synced_at.setdefault(entry.host_id, time.time())
            self._free(iid)
            logs.op_ended(ended, inst)
        except HostAway:
            log.warning("%s of %s: host %s is away; the op stays PROCESSING until it "
                        "returns", operation_words(op["lcmOperation"]), iid, entry.host_id)
        except (Fenced, StoreUnavailable) as e:
            # this replica lost the lease, or the database is away: the op
            # is left as its journal says, for the leader to finish
            log.warning("%s of %s left to the leader: %s", operation_words(op["lcmOperation"]),
                        iid, e.detail)
        except Exception as e:  # noqa: BLE001 - the op must end FAILED with the reason
            if on_failure is not None:
                on_failure()
            if isinstance(e, BackendUnavailable) and self.journal.done(op, "dispatched"):
                return          # the host is going away: the resync ends it
            err = self._in_meo_words(e, entry.host_id) if isinstance(e, MecorchError) \
                else _internal(e)
            if op["_plan"].get("replaces"):
                # still on the lost host: what the new host made goes, and
                # the loop tries again later
                replace.not_moved(self.store, entry, op, err.detail)
            elif op["lcmOperation"] == LcmOperation.INSTANTIATE.value:
                replace.forget(self.store, iid)     # its opt-in went with the failed deploy
            log.warning("%s of %s on %s failed: %s", operation_words(op["lcmOperation"]), iid,
                        entry.host_id, err.detail)
            self._free(iid)
            logs.op_ended(self.journal.finish(op, err), self.store.get("instances", iid))

    def _in_meo_words(self, err: MecorchError, host_id: str) -> MecorchError:
        """A host's error as the OSS must read it: the MEO's ids, the host
        named. Instances and packages the host made under the MEO's ids
        need nothing; those a host holds under ids of its own (made before
        the MEO passed its ids) are named by the MEO's ids instead."""
        own = {}
        for inst in self.store.list("instances", keep=("id", "_hostInstance")):
            remote = inst.get("_hostInstance") or {}
            if remote.get("hostId") == host_id and remote.get("id") not in (None, inst["id"]):
                own[remote["id"]] = inst["id"]
        for pkg in self.packages.store.list("packages", keep=("id", "_hostCopies")):
            copy = (pkg.get("_hostCopies") or {}).get(host_id)
            if copy not in (None, pkg["id"]):
                own[copy] = pkg["id"]
        detail = err.detail
        for theirs, ours in own.items():
            detail = detail.replace(theirs, ours)
        if f"edge host {host_id!r}" not in detail:
            detail = f"edge host {host_id!r}: {detail}"
        if detail == err.detail:
            return err
        out = type(err)(detail)
        out.status, out.title = err.status, err.title
        return out

    def _superseded_by(self, op: dict) -> Conflict | None:
        """A GRACEFUL terminate whose host op failed because the MEO's
        FORCEFUL terminate superseded it: the error saying so."""
        with self._lock:
            forceful = self._superseded.pop(op["id"], None)
        if forceful is None and _is_graceful_terminate(op):        # after a restart
            forceful = next((o["id"] for o in self.store.list(
                "op_occs", appInstanceId=op["appInstanceId"])
                if o["_plan"].get("supersedes") == op["id"]), None)
        if forceful is None:
            return None
        return Conflict(f"superseded by FORCEFUL terminate {forceful} before the app was "
                        "stopped")

    # ---------------------------------------------------------------- terminate / operate
    def terminate(self, instance_id: str, body: dict) -> dict:
        kind, _ = parse_terminate(body, self.default_graceful_s)
        if kind is TerminationType.FORCEFUL:
            op = self._preempt(instance_id, body)
            if op is not None:
                return op
        return self._host_op(instance_id, LcmOperation.TERMINATE, body)

    def _preempt(self, instance_id: str, body: dict) -> dict | None:
        """A FORCEFUL terminate while the MEO's GRACEFUL terminate of the
        instance is in progress: its own op occurrence, dispatched by a
        worker of its own (the host supersedes its graceful op with it).
        None when no graceful terminate is in progress (the usual checks
        then apply); Conflict when one is already being superseded."""
        with self._lock, self.store.transaction():
            self.store.lock(f"instance:{instance_id}")
            running = [o for o in self.journal.in_progress(instance_id)
                       if not o["_plan"].get(replace.STALE)]
            forceful = [o for o in running if o["_plan"].get("supersedes")]
            if forceful:
                raise Conflict(f"app instance {instance_id} is already being terminated "
                               f"FORCEFUL (op {forceful[0]['id']})")
            graceful = [o for o in running if _is_graceful_terminate(o)]
            if len(running) != 1 or not graceful:
                return None
            inst = self.get(instance_id)
            remote = inst["_hostInstance"]
            op = self.journal.start(instance_id, LcmOperation.TERMINATE, {
                "hostId": remote["hostId"], "hostInstance": remote["id"], "body": body,
                "supersedes": graceful[0]["id"]})
            self._superseded[graceful[0]["id"]] = op["id"]
            inst["_opId"] = op["id"]
            self.store.put("instances", instance_id, inst)
            logs.op_started(op, inst)
            here = self.leading()
            if here:
                self._live.add(op["id"])
        if here:
            self._pool.submit(self._guarded, instance_id, self._run_host_op, op)
        return public(op)

    def operate(self, instance_id: str, body: dict) -> dict:
        to, _, _ = parse_operate(body, self.default_graceful_s)
        with self._lock:
            inst = self.get(instance_id)
        state = inst.get("instantiatedAppState", {}).get("operationalState")
        observed = inst.get("observedState")
        if state == to.value == InstanceOperationalState.STARTED.value \
                and observed not in ("STOPPED", "CRASH_LOOP"):
            # the MEO's copy lags a death on the host by up to meo.sync_s:
            # the host's own view decides whether a start is the way back
            observed = self._host_observed(inst) or observed
        refuse_same_state(instance_id, state, observed, to)
        return self._host_op(instance_id, LcmOperation.OPERATE, body)

    def _host_observed(self, inst: dict) -> str | None:
        """The observed state the instance's host reports now (None: the
        host does not answer, or has no such instance)."""
        remote = inst.get("_hostInstance") or {}
        try:
            view = self.registry.get(remote["hostId"]).mepm.get_instance(remote["id"])
        except (KeyError, MecorchError):
            return None
        return (view or {}).get("observedState")

    def change_app_pkg(self, instance_id: str, body) -> dict:
        """The rolling upgrade is a host-level operation (mecorch.mepm.
        upgrade): the MEO does not forward it (it would first have to copy
        the target version to the host and name it by the host's package
        id); it says where to ask instead."""
        self.get(instance_id)                   # 404 for an unknown instance first
        raise NotImplementedHere(
            "change_app_pkg (rolling upgrade) is not offered by the MEO: ask the MEPM of the "
            "instance's host (POST /app_lcm/v1/app_instances/{appInstanceId}/change_app_pkg "
            "there: the instance has the same id; the package must be onboarded on that host)")

    def relocate(self, instance_id: str, body) -> dict:
        """Move the instance to another edge host (mecorch extension: a
        RELOCATE op occurrence, mecorch.meo.relocate); the op occurrence.
        Raises (Conflict, InvalidInput, NotFound, CapacityExceeded) with the
        reason when it cannot start: nothing is made then."""
        return relocate.start(self, instance_id, body)

    def _host_op(self, instance_id: str, operation: LcmOperation, body: dict) -> dict:
        with self._exclusive(instance_id):
            inst = self.get(instance_id)
            self._no_unfinished_op(instance_id)
            if inst["instantiationState"] != INSTANTIATED:
                raise Conflict(f"app instance {instance_id} is NOT_INSTANTIATED")
            remote = inst["_hostInstance"]
            op = self.journal.start(instance_id, operation, {
                "hostId": remote["hostId"], "hostInstance": remote["id"], "body": body})
            inst["_opId"] = op["id"]
            self.store.put("instances", instance_id, inst)
            logs.op_started(op, inst)
            here = self._runs_here(instance_id, op)
        if here:
            self._pool.submit(self._guarded, instance_id, self._run_host_op, op)
        return public(op)

    def _run_host_op(self, op: dict) -> None:
        self._run(op, self.registry.get(op["_plan"]["hostId"]), self._host_op_steps)

    def _host_op_steps(self, op: dict, entry: HostEntry) -> tuple[dict, str]:
        plan = op["_plan"]
        sent = self.journal.data(op, "dispatched")
        if sent is None:
            terminate = op["lcmOperation"] == LcmOperation.TERMINATE.value
            host_op = self._dispatch(entry, plan, terminate)
            if host_op is None:                 # already done on the host
                return {"operationState": OperationState.COMPLETED.value}, plan["hostInstance"]
            sent = self.journal.step(op, "dispatched", opId=host_op["id"])["_steps"][-1]
        return self._await(entry, sent["opId"]), plan["hostInstance"]

    def _dispatch(self, entry: HostEntry, plan: dict, terminate: bool) -> dict | None:
        """Start the host's operation. After a broken link the host may have
        started it already (or even finished it): then follow that one."""
        mepm, rid = entry.mepm, plan["hostInstance"]
        try:
            return (mepm.terminate if terminate else mepm.operate)(rid, plan["body"])
        except Conflict:
            running = [o for o in mepm.ops_of(rid)
                       if o["operationState"] in ("STARTING", "PROCESSING")]
            if running:
                return running[-1]
            view = mepm.get_instance(rid)
            if terminate and (view is None or view["instantiationState"] == NOT_INSTANTIATED):
                return None
            raise

    def _await(self, entry: HostEntry, host_op_id: str) -> dict:
        """Follow the host's op occurrence to its end. A host that notifies
        its op changes (mecorch.meo.follow) wakes the wait when the op ends:
        a COMPLETED is taken as notified, another end is read (its error),
        and the op is read at most every FALLBACK_POLL_S otherwise. One
        that does not is polled, backing off from 5 ms to 20 ms: a
        container deploy takes about half a second, and a coarser poll
        would add its own wait to every deploy (a GET of an op occurrence
        costs the host about a millisecond)."""
        deadline = time.monotonic() + self.op_timeout_s
        cap = self.follower.poll_cap(entry.host_id, 0.02)
        # a followed host is read when it notifies (or every cap): reading
        # it every few ms meanwhile took CPU from the deploy on 2 cores
        delay = cap if cap > 0.02 else 0.005
        woken = self.follower.waiter(entry.host_id, host_op_id)
        notified = True             # ended at the first read: nothing to say of it
        # a followed host's op is first read when it notifies its end (or
        # after cap): the op the dispatch answered has just started
        read = cap <= 0.02
        try:
            while True:
                woken.clear()
                said = self.follower.said(entry.host_id, host_op_id)
                if said == OperationState.COMPLETED.value:
                    # as the host notified it (its bearer token): no read
                    self.follower.ended(entry.host_id, True)
                    return {"id": host_op_id, "operationState": said}
                if not (read or said):
                    read = True
                    notified = woken.wait(delay)
                    continue
                try:
                    host_op = entry.mepm.get_op(host_op_id)
                except BackendUnavailable:
                    if entry.state == UNREACHABLE:
                        raise HostAway() from None
                    host_op = {"operationState": "PROCESSING"}
                if host_op is None:
                    raise MecorchError(f"edge host {entry.host_id!r} has no op occurrence "
                                       f"{host_op_id} any more")
                if host_op["operationState"] in ("COMPLETED", "FAILED", "ROLLED_BACK"):
                    self.follower.ended(entry.host_id, notified)
                    return host_op
                if time.monotonic() > deadline:
                    raise Timeout(f"edge host {entry.host_id!r}: op occurrence {host_op_id} "
                                  f"not ended after meo.op_timeout_s ({self.op_timeout_s:g} s)")
                notified = woken.wait(delay)
                delay = min(delay * 1.5, cap)
        finally:
            self.follower.done(entry.host_id, host_op_id)

    def _copy_host_view(self, inst: dict, view: dict | None, host_id: str) -> None:
        if view is None or view.get("instantiationState") != INSTANTIATED:
            for k in _DEPLOYED:
                inst.pop(k, None)
            inst["instantiationState"] = NOT_INSTANTIATED
            return
        for k in _FROM_HOST:
            if k in view:
                inst[k] = view[k]
            else:
                inst.pop(k, None)
        inst["hostId"] = host_id

    # ---------------------------------------------------------------- views
    # The MEO keeps what it decided; what only the host has (observed state,
    # rules, output) is asked of the host, and shown as last known, with its
    # age, while the host is away: never a guess as current state.
    def host_status(self, host_id: str) -> tuple[str, float | None]:
        """(the host's state as the registry has it, seconds since the MEO
        last had its view of its instances; None: not since the MEO started)."""
        try:
            entry = self.registry.get(host_id)
        except NotFound:
            return UNKNOWN, None
        at = self._synced_at.get(host_id)
        if at is None and entry.last_seen:
            at = entry.last_seen.get("seconds", 0) + entry.last_seen.get("nanoSeconds", 0) / 1e9
        return entry.state, (round(max(0.0, time.time() - at), 1) if at else None)

    def view(self, doc: dict) -> dict:
        out = super().view(doc)
        figures = self._figures(doc)
        if figures is not None:
            out["resourceUsage"] = figures
        return self._as_known(out)

    def _figures(self, doc: dict) -> dict | None:
        """The instance's own figures (`resourceUsage`, the host's shape) as
        its host last read them, with their own time: the host reports each
        instance's last reading with its heartbeat (mecorch.mepm.usage
        `byInstance`), kept in memory with the host's report (and in its
        host_states row for the other replicas), never in the instance's
        record: no store write per reading. None (absent, not zero) when
        the host has reported no reading of it. Like the host's, not in the
        listing's pages."""
        remote = doc.get("_hostInstance")
        if not remote or doc.get("instantiationState") != INSTANTIATED:
            return None
        entry = self.registry.known(remote["hostId"])
        return entry.instance_usage(remote["id"]) if entry is not None else None

    def _as_known(self, out: dict, away: dict | None = None) -> dict:
        """An instance whose host does not answer: observedState UNKNOWN, the
        last state the host reported and its age beside it (mecorch
        extensions). `away`: host -> (state, age), when already known."""
        host = out.get("hostId")
        if not host or out.get("instantiationState") != INSTANTIATED:
            return out
        state, age = away[host] if away is not None else self.host_status(host)
        if state == REACHABLE:
            return out
        last = out.get("observedState")
        when = f"{age:.0f} s ago" if age is not None else "before the MEO started"
        out.update(observedState="UNKNOWN", lastKnownObservedState=last,
                   observedStateAge=age, hostState=state,
                   observedStateDetail=f"edge host {host} is {state}: last known state "
                                       f"{last or 'not reported'} ({when})")
        return out

    def list_page(self, filter_expr: str | None, marker: str | None,
                  size: int) -> tuple[list[str], str | None]:
        items, nxt = super().list_page(filter_expr, marker, size)
        away = {e.host_id: self.host_status(e.host_id) for e in self.registry.entries()
                if e.state != REACHABLE}
        if not away:
            return items, nxt
        out = []
        for text in items:
            doc = json.loads(text)
            host = doc.get("hostId")
            if host and (host in away or not self._registered(host)):
                text = json.dumps(self._as_known(doc, None if host not in away else away))
            out.append(text)
        return out, nxt

    def _registered(self, host_id: str) -> bool:
        try:
            self.registry.get(host_id)
            return True
        except NotFound:
            return False

    def _host_of(self, instance_id: str) -> tuple[dict, dict | None, HostEntry | None]:
        inst = self.get(instance_id)
        remote = inst.get("_hostInstance")
        if not remote:
            return inst, None, None
        try:
            return inst, remote, self.registry.get(remote["hostId"])
        except NotFound:
            return inst, remote, None

    def _away(self, remote: dict, why: str = "") -> str:
        state, age = self.host_status(remote["hostId"])
        when = f"{age:.0f} s ago" if age is not None else "before the MEO started"
        return (f"edge host {remote['hostId']} is "
                f"{state if state != REACHABLE else 'not answering'}"
                f"{': ' + why if why else ''}; shown as last read from it (the host last "
                f"answered {when})")

    def host_rules(self, instance_id: str) -> tuple[dict, str | None]:
        """The instance's rules as its host's MEP holds them, and None; or,
        the host away, the rules last read from it and a warning saying so.
        What was read is kept (the store's rules table) for that case."""
        inst, remote, entry = self._host_of(instance_id)
        if remote is None:
            return dict(_NO_RULES), None        # never deployed: no MEP holds any
        why = ""
        if entry is not None and entry.state == REACHABLE:
            try:
                got = entry.mepm.rules(remote["id"])
            except BackendUnavailable as e:
                why = e.detail
            else:
                got = got if got is not None else dict(_NO_RULES)
                kept = self.store.get("rules", instance_id)
                if kept is None or any(kept.get(k) != got[k] for k in _NO_RULES):
                    self.store.put("rules", instance_id, {
                        "id": instance_id, "hostId": remote["hostId"], **got,
                        "readAt": time.time()})
                return got, None
        kept = self.store.get("rules", instance_id) or {}
        return {k: kept.get(k) or [] for k in _NO_RULES}, self._away(remote, why)

    def host_logs(self, instance_id: str, tail: int | None) -> tuple[bytes, str, str | None]:
        """(output, source, warning): the app's output as its host has it;
        the host away: nothing (the MEO keeps no output), source
        "unavailable" and a warning saying why."""
        inst, remote, entry = self._host_of(instance_id)
        if remote is None:
            raise NotFound(f"app instance {instance_id} was never deployed: it has no output")
        why = ""
        if entry is not None and entry.state == REACHABLE:
            try:
                data, source = entry.mepm.logs(remote["id"], tail)
                return data, source, None
            except BackendUnavailable as e:
                why = e.detail
        state, _ = self.host_status(remote["hostId"])
        return b"", "unavailable", (f"edge host {remote['hostId']} is "
                                    f"{state if state != REACHABLE else 'not answering'}"
                                    f"{': ' + why if why else ''}; the MEO keeps no app "
                                    "output: none can be shown until the host answers")

    # ---------------------------------------------------------------- resync
    def resync(self, entry: HostEntry) -> list[str]:
        """A host answered again (or the MEO started, or every meo.sync_s):
        take its instances' state as the host has it, and resume the
        operations that were in flight there. Nothing on the host is started
        or stopped, but for one thing: an instance the host fenced
        (mecorch.mepm.fence) that is still the MEO's there, with no op in
        progress, is unfenced (the copies re-placed elsewhere were removed
        before: Replacer.remove_stale runs first on a host's return)."""
        done = []
        fenced = []
        views = {v["id"]: v for v in entry.mepm.list_instances()}
        self._synced_at[entry.host_id] = time.time()
        # the ops in progress read once, not twice per instance (an op
        # started since is its instance's `_busy` until its worker ends)
        running = {o["appInstanceId"] for o in self.journal.in_progress()
                   if not o["_plan"].get(replace.STALE)}
        for inst in self._instances_on(entry.host_id):
            remote = inst.get("_hostInstance")
            if not remote or remote["hostId"] != entry.host_id or self._is_busy(inst["id"]):
                continue
            if inst["id"] in running:
                continue
            before = {k: inst.get(k) for k in _FROM_HOST}
            view = views.get(remote["id"])
            if view is None:
                if inst["instantiationState"] == INSTANTIATED:
                    inst["observedState"] = "MISSING"       # the host lost it
            else:
                self._copy_host_view(inst, view, entry.host_id)
                if view.get("fenced") and inst["instantiationState"] == INSTANTIATED:
                    fenced.append((inst["id"], remote["id"]))
            if {k: inst.get(k) for k in _FROM_HOST} != before:
                self.store.put("instances", inst["id"], inst)
                done.append(f"instance {inst['id']} resynced from host {entry.host_id}")
                self._tell_change(inst, before)
        if fenced:
            done += self._unfence(entry, fenced)
        for op in self.journal.in_progress():
            # (a relocation also when its source answers again)
            if entry.host_id in (op["_plan"].get("hostId"),
                                 (op["_plan"].get(relocate.KEY) or {}).get("hostId")) \
                    and self._resume(op):
                done.append(f"resumed {operation_words(op['lcmOperation'])} {op['id']} on host "
                            f"{entry.host_id}")
        return done

    def _tell_change(self, inst: dict, before: dict) -> None:
        """The MEO's subscribers hear of a change read from the host (one an
        op of the MEO made is told when the op ends): the instance's
        AppInstanceState (an operate or terminate done at the host), or the
        host's restart policy giving up, told as the host's subscribers are
        told (STOPPED, with CRASH_LOOP)."""
        if _app_state(inst) != _app_state(before):
            self.journal.events.instance(inst)
        elif inst.get("observedState") == "CRASH_LOOP" \
                and before.get("observedState") != "CRASH_LOOP":
            self.journal.events.instance(inst, "STOPPED")

    def _instance_notified(self, host_id: str, host_instance_id: str) -> None:
        """mecorch.meo.follow: the host notified a state change of one of
        its instances."""
        try:
            entry = self.registry.get(host_id)
        except NotFound:
            return
        line = self.refresh_instance(entry, host_instance_id)
        if line:
            log.info("%s", line)

    def refresh_instance(self, entry: HostEntry, host_instance_id: str) -> str | None:
        """The MEO's copy of one instance takes the host's view at once, as
        a resync does for all (after the host's AppInstanceStateChange
        notification), and the MEO's subscribers are told what changed.
        An instance with an operation of the MEO in progress is left to it
        (it takes the host's view when it ends). Returns what changed."""
        if not self.leading():
            return None         # a former leader's subscription: the leader follows
        iid = self._of_host(entry.host_id, host_instance_id)
        if iid is None or self._op_holds(iid):
            return None         # (the host's STARTED after the MEO's own instantiate)
        view = entry.mepm.get_instance(host_instance_id)
        # no op of the MEO starts meanwhile, in this replica or another
        # (_exclusive)
        with self._lock, self.store.transaction():
            self.store.lock(f"instance:{iid}")
            inst = self.store.get("instances", iid)
            remote = (inst or {}).get("_hostInstance") or {}
            if (remote.get("hostId"), remote.get("id")) != (entry.host_id, host_instance_id) \
                    or self._op_holds(iid):
                return None
            before = {k: inst.get(k) for k in _FROM_HOST}
            if view is not None:
                self._copy_host_view(inst, view, entry.host_id)
            elif inst["instantiationState"] == INSTANTIATED:
                inst["observedState"] = "MISSING"           # the host lost it
            if {k: inst.get(k) for k in _FROM_HOST} == before:
                return None
            self.store.put("instances", iid, inst)
        self._tell_change(inst, before)
        return f"instance {iid} refreshed from host {entry.host_id} (notified)"

    def _op_holds(self, iid: str) -> bool:
        """An operation of the MEO runs on the instance, or waits for its
        host to return (a re-placement's removal of a stale copy does not
        count: the instance lives elsewhere)."""
        return iid in self._busy or any(not o["_plan"].get(replace.STALE)
                                        for o in self.journal.in_progress(iid))

    def _of_host(self, host_id: str, host_instance_id: str) -> str | None:
        """The MEO's id of a host's instance: the same id (one identity),
        else the one an older host made under an id of its own."""
        def mine(inst: dict | None) -> bool:
            remote = (inst or {}).get("_hostInstance") or {}
            return (remote.get("hostId"), remote.get("id")) == (host_id, host_instance_id)
        if mine(self.store.get("instances", host_instance_id)):
            return host_instance_id
        return next((i["id"] for i in self.store.list("instances") if mine(i)), None)

    def _instances_on(self, host_id: str) -> list[dict]:
        """The instances the MEO made on the host (`_hostInstance` there):
        those INSTANTIATED there (the indexed hostId) and the
        NOT_INSTANTIATED ones (their hostId went with their deployment).
        A resync read every instance of every host for each host: 1,000
        hosts with 10,000 instances made a sync round of minutes."""
        mine = self.store.list("instances", hostId=host_id)
        seen = {d["id"] for d in mine}
        for d in self.store.list("instances", instantiationState=NOT_INSTANTIATED,
                                 keep=("id", "_hostInstance")):
            if (d.get("_hostInstance") or {}).get("hostId") == host_id and d["id"] not in seen:
                doc = self.store.get("instances", d["id"])
                if doc is not None:
                    mine.append(doc)
        return mine

    def _unfence(self, entry: HostEntry, fenced: list[tuple[str, str]]) -> list[str]:
        """Tell the host that these fenced instances are still the MEO's
        there: they serve again (the host restores them)."""
        try:
            answer = entry.mepm.unfence([host_iid for _, host_iid in fenced])
        except MecorchError as e:
            # the resync goes on (the host's state is read); asked again at
            # the next one (every meo.sync_s)
            log.warning("edge host %s: fenced instances not unfenced: %s", entry.host_id,
                        e.detail)
            return []
        lifted = set(answer.get("unfenced") or ())
        done = []
        for iid, host_iid in fenced:
            if host_iid not in lifted:
                continue            # busy there (tried at the next resync), or not fenced
            inst = self.store.get("instances", iid)
            if inst is not None:
                inst.pop("fenced", None)
                self.store.put("instances", iid, inst)
            log.warning("instance %s: unfenced on edge host %s (still the MEO's there)",
                        iid, entry.host_id)
            done.append(f"instance {iid} unfenced on host {entry.host_id}")
        return done

    def recover(self) -> list[str]:
        """At start: resume every operation a crash of the MEO interrupted
        (on the hosts that answer; the others when they return). An op of a
        host no longer registered ends FAILED."""
        done = []
        for op in self.journal.in_progress():
            if op["lcmOperation"] == LcmOperation.RELOCATE.value:
                # two hosts: it goes on (or, one no longer registered, rolls
                # back as far as it can)
                if self._resume(op, unknown_ok=True):
                    done.append(f"resumed relocation {op['id']}")
                continue
            try:
                entry = self.registry.get(op["_plan"]["hostId"])
            except NotFound:
                self.journal.finish(op, Conflict(f"edge host {op['_plan']['hostId']!r} is "
                                                 "no longer registered"))
                done.append(f"failed {operation_words(op['lcmOperation'])} {op['id']}: "
                            "host gone")
                continue
            if entry.state != UNREACHABLE and self._resume(op):
                done.append(f"resumed {operation_words(op['lcmOperation'])} {op['id']}")
        return done

    def _resume(self, op: dict, unknown_ok: bool = False) -> bool:
        iid = op["appInstanceId"]
        if op["_plan"].get(replace.STALE):
            return False        # the Replacer's (remove_stale), never a host op of the instance
        relocation = op["lcmOperation"] == LcmOperation.RELOCATE.value
        if relocation and not relocate.resumable(self, op, unknown_ok):
            return False        # one of its hosts is away: when it answers (resync)
        with self._lock:
            if op["id"] in self._live or iid in self._busy:
                return False
            self._busy.add(iid)
            self._live.add(op["id"])
        op = self.store.get("op_occs", op["id"])
        fn = (lambda o: relocate.run(self, o)) if relocation \
            else self._run_instantiate if op["lcmOperation"] == LcmOperation.INSTANTIATE.value \
            else self._run_host_op
        self._pool.submit(self._guarded, iid, fn, op)
        return True

    # ---------------------------------------------------------------- locking
    @contextlib.contextmanager
    def _exclusive(self, instance_id: str, held: bool = True):
        """One operation at a time per instance: in this process (`_busy`:
        a worker of ours is on it) and across replicas (the database's lock
        on the instance, to the end of the block's transaction, around the
        check for an op in progress and the op's start). held=False: the
        caller takes the transaction itself (a block that calls a host)."""
        with exclusive(self._lock, self._busy, instance_id):
            if not held:
                yield
                return
            with self.store.transaction():
                self.store.lock(f"instance:{instance_id}")
                yield

    def _fenced(self) -> None:
        if self.journal.guard is not None:
            self.journal.guard()

    def _runs_here(self, instance_id: str, op: dict) -> bool:
        """Whether this process runs the op it just started: the leader
        does; another replica leaves it STARTING in the journal, where the
        leader's pickup finds it (`tick`)."""
        if not self.leading():
            return False
        self._busy.add(instance_id)
        self._live.add(op["id"])
        return True

    def _no_unfinished_op(self, instance_id: str) -> None:
        """An op left PROCESSING while its host is away still owns the
        instance: a second instantiate then could make a duplicate."""
        for op in self.journal.in_progress(instance_id):
            if op["_plan"].get(replace.STALE):
                continue        # another host's copy: the instance is free
            host = op["_plan"].get("hostId")
            raise Conflict(f"app instance {instance_id} has an operation in progress "
                           f"({op['id']}, on edge host {host!r}, which ends it when it "
                           "answers again)")

    def tick(self) -> None:
        """Resume every unfinished operation whose host answers (after a
        broken link, a host's return, an MEO restart)."""
        for op in self.journal.in_progress():
            try:
                entry = self.registry.get(op["_plan"]["hostId"])
            except NotFound:
                continue
            if entry.state != UNREACHABLE:
                self._resume(op)

    def _is_busy(self, instance_id: str) -> bool:
        with self._lock:
            return instance_id in self._busy

    def _guarded(self, instance_id: str, fn, op: dict) -> None:
        try:
            fn(op)
        finally:
            with self._lock:
                self._live.discard(op["id"])
                self._superseded.pop(op["id"], None)
                # an op left PROCESSING (host away) keeps the instance held
                # for the resync, through the journal, not this set
                self._busy.discard(instance_id)

    def _free(self, instance_id: str) -> None:
        with self._lock:
            self._busy.discard(instance_id)


def refusal_reasons(e: MecorchError) -> list[str]:
    """The kinds of reason a placement refusal gave, one per kind (its
    detail names each host's: "host: why; ..."): capacity, manner,
    unreachable, latency, accel, claims (another instance holds an address
    or name), limits (a driver's declared limits), cordoned (its operator
    took the host out of placement), unknown_host, none_registered."""
    if isinstance(e, NotFound):
        return ["unknown_host"]
    detail = e.detail
    if "no edge host is registered" in detail:
        return ["none_registered"]
    inner = detail[detail.find("(") + 1:detail.rfind(")")] if "(" in detail else detail
    kinds = set()
    for part in inner.split("; "):
        why = part.partition(": ")[2] or part
        if why == "UNREACHABLE":
            kinds.add("unreachable")
        elif why.startswith("cordoned"):
            kinds.add("cordoned")
        elif why.startswith(("no VIM", "no CIM")):
            kinds.add("manner")
        elif why.startswith(("vCPU ", "memory ", "disk ")) and why.endswith("free"):
            kinds.add("capacity")
        elif why.startswith("latency "):
            kinds.add("latency")
        elif "acceleration" in why:
            kinds.add("accel")
        elif " is steered by instance " in why or " belongs to instance " in why:
            kinds.add("claims")
        elif why.startswith("only instances of that app"):
            continue                # the rest of a DNS name's refusal
        else:
            kinds.add("limits")
    return sorted(kinds)


def _app_state(inst: dict) -> str | None:
    """The AppInstanceState a record shows (what AppInstNotification says)."""
    if inst.get("instantiationState") != INSTANTIATED:
        return NOT_INSTANTIATED
    return (inst.get("instantiatedAppState") or {}).get("operationalState")


def _is_graceful_terminate(op: dict) -> bool:
    return op["lcmOperation"] == LcmOperation.TERMINATE.value and \
        op["_plan"].get("body", {}).get("terminationType") == TerminationType.GRACEFUL.value


def _host_failure(host_id: str, host_op: dict) -> MecorchError:
    err = host_op.get("error") or {}
    detail = err.get("detail") or f"the operation ended {host_op['operationState']}"
    e = MecorchError(f"edge host {host_id!r}: {detail}")
    e.status = int(err.get("status") or 500)
    e.title = err.get("title") or e.title
    return e


def _internal(e: Exception) -> MecorchError:
    log.exception("internal error")
    return MecorchError(f"internal error: {type(e).__name__}: {e}")
