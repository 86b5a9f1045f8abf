"""Application instance lifecycle (ETSI MEC 010-2 app_lcm): the heart of the
unified orchestration function.

instantiate = plan the request once (`spec.plan`: the manner, the
resources, the rules), pick a host with room, claim the rules' addresses
and names there, ask the CIM or the VIM for the resources, ask the MEP for
the rules, answer with what was allocated; terminate = notify the app, stop, remove rules, release
resources by the manner recorded for the instance (a FORCEFUL terminate
supersedes a GRACEFUL one still waiting for the app). Each runs as an op
occurrence in a worker thread; every step is journalled before and after,
and a failure undoes the steps before it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import threading
import time
from pathlib import Path

from mecorch.mepm import applogs, live, manner_policy, runtimes, seeds, undo, upgrade
from mecorch.spec import decision, restart
from mecorch.kernel import logs, paging, validate, views
from mecorch.driverapi.contracts import ComputeDriver
from mecorch.kernel.errors import (
    Conflict, IdempotencyMismatch, InvalidInput, MecorchError, NotFound)
from mecorch.mepm.inventory import EdgeHost, Inventory
from mecorch.spec.capacity import Need
from mecorch.spec.lost_after import FIELD as LOST_AFTER, parse_lost_after
from mecorch.spec.plan import INSTANTIATE_FIELDS, plan_request, selected_hosts
from mecorch.kernel.journal import LCM, Journal
from mecorch.kernel.locks import exclusive
from mecorch.mepm.mep import MepService
from mecorch.driverapi.model import Allocation, ResourceRequest
from mecorch.package.manager import PackageManager
from mecorch.kernel.states import (
    DeploymentType, InstanceOperationalState, InstantiationState, LcmOperation, TerminationType)
from mecorch.kernel.store import Store
from mecorch.kernel.timeutil import new_id, public, timestamp
from mecorch.kernel.workers import Workers

log = logging.getLogger("mecorch.lcm")
# What an instance record holds only while it is deployed.
_DEPLOYED_KEYS = ("instantiatedAppState", "hostId", "deploymentType", "decisionReason",
                  "allocatedResources",
                  "_handle", "_need", "_observed", "_mp1Token", "_probes", "_health",
                  "_restart", "_request", "_runtime", "_generation", "_mp1TokenNext",
                  "_upgradeTo", "_lostAfter", "_fenced", live.MOVED_OUT)


class InstanceQueries:
    """The app_lcm queries, over `self.store` and `self.view`: the same for a
    host's LCM and the MEO's (each has its own store and view)."""

    store: Store

    def view(self, doc: dict) -> dict:
        return views.system_instance_view(doc)

    def get(self, instance_id: str) -> dict:
        doc = self.store.get("instances", instance_id)
        if doc is None:
            raise NotFound(f"app instance {instance_id!r} does not exist")
        return doc

    def list(self) -> list[dict]:
        return [self.view(d) for d in self.store.list("instances")]

    def list_page(self, filter_expr: str | None, marker: str | None,
                  size: int) -> tuple[list[str], str | None]:
        """One page of the instance listing, paged like the packages'
        (NFV-SOL 013, mecorch.kernel.paging): JSON texts, as stored."""
        return paging.page(self.store, "instances", filter_expr, marker, size)

    def op(self, op_id: str) -> dict:
        doc = self.store.get("op_occs", op_id)
        if doc is None:
            raise NotFound(f"LCM operation occurrence {op_id!r} does not exist")
        return public(doc)

    def ops(self) -> list[dict]:
        return [public(d) for d in self.store.list("op_occs")]


class Lcm(InstanceQueries):
    def __init__(self, store: Store, inventory: Inventory, packages: PackageManager,
                 mep: MepService, cfg: dict, workers: int = 8):
        self.store = store
        self.inventory = inventory
        self.packages = packages
        self.mep = mep
        self.journal = Journal(store)
        self.default_graceful_s = int(cfg["orchestrator"]["graceful_timeout_s"])
        # apps' output kept after termination (mecorch.mepm.applogs)
        self.logs_dir = Path(cfg["state_dir"]) / "app-logs"
        # a relocation's data kept for an instance's next instantiate (mecorch.mepm.seeds)
        self.seeds = seeds.Seeds(Path(cfg["state_dir"]), cfg["orchestrator"].get(
            "max_data_bytes", seeds.DEFAULT_MAX_BYTES))
        self._orchestrator_cfg = cfg["orchestrator"]     # the manner preference
        # the policy of an app that names none (mecorch.spec.restart)
        self.restart_default = restart.host_default(cfg["orchestrator"].get("restart_policy"))
        self._pool = Workers(workers, "lcm")     # threads end when idle (mecorch.kernel.workers)
        # one operation at a time per instance; guards the check-and-start
        self._busy: set[str] = set()
        self._busy_lock = threading.Lock()
        # op occurrences running in this process (recovery leaves them alone)
        self._live: set[str] = set()
        # GRACEFUL terminates running here, by instance: {op, cancel (an
        # Event that ends the wait for the app), forceful (the op that
        # superseded it, or None)}
        self._graceful: dict[str, dict] = {}
        # change_app_pkg, the rolling upgrade (mecorch.mepm.upgrade)
        self.upgrader = upgrade.Upgrader(self)

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    # ------------------------------------------------------------ queries
    usage_reader = None     # the UsageReader of its Orchestrator (mecorch.mepm.usage)

    def view(self, doc: dict) -> dict:
        out = views.host_instance_view(doc)
        if self.usage_reader is not None \
                and doc["instantiationState"] == InstantiationState.INSTANTIATED.value:
            # mecorch extension: the last reading of its backend's figures
            # (kept in memory, not stored: not in the listing's pages)
            got = self.usage_reader.view(doc["id"])
            if got is not None:
                out["resourceUsage"] = got
        return out

    # ------------------------------------------------------------ create / delete
    def create(self, body: dict, idempotency_key: str | None = None,
               instance_id: str | None = None) -> dict:
        """CreateAppInstanceRequest -> AppInstanceInfo (NOT_INSTANTIATED).
        `instance_id`: the id the MEO gave the instance (an MEPM's record
        takes it: one identity across the levels); a new id otherwise."""
        doc, made = create_instance(self.store, self.packages, body, idempotency_key,
                                    instance_id)
        if made:
            logs.event("instance.created", instance=doc["id"], package=doc["appPkgId"],
                       app=doc["appDId"])
        return public(doc)

    def delete(self, instance_id: str) -> None:
        # held, not under the busy lock: a live prepare's undo is a backend call
        with self.hold(instance_id):
            doc = self.get(instance_id)
            if doc["instantiationState"] != InstantiationState.NOT_INSTANTIATED.value:
                raise Conflict(f"app instance {instance_id} is INSTANTIATED: terminate it first")
            # a live relocation's prepare: its driver removes what it made
            live.abort_kept(self, doc)
            self.store.delete("instances", instance_id)
            self.mep.forget(instance_id)
            applogs.forget(self.logs_dir, instance_id)
            self.seeds.forget(instance_id)
        logs.event("instance.deleted", instance=instance_id, package=doc.get("appPkgId"))

    # ------------------------------------------------------------ instantiate
    def instantiate(self, instance_id: str, body: dict,
                    idempotency_key: str | None = None, from_meo: bool = False) -> dict:
        """Validate and plan synchronously (400/404/409 here, nothing made),
        then run the deployment as an op occurrence in the background.
        A retry with the same Idempotency-Key gets the same op occurrence
        back, whatever state it is in, and deploys nothing. `from_meo`: the
        request is this MEPM's MEO's (mecorch.kernel.http `from_meo`): it
        alone may send `lostAfter`, which this host fences the app by
        (mecorch.mepm.fence); a single node, or an operator, is refused it."""
        if not isinstance(body, dict):
            raise InvalidInput("body must be an InstantiateAppRequest object")
        validate.known_fields(body, (*INSTANTIATE_FIELDS, *((LOST_AFTER,) if from_meo else ())),
                              "InstantiateAppRequest")
        lost_after = parse_lost_after(body) if from_meo else None
        request, body = body, {k: v for k, v in body.items() if k != LOST_AFTER}
        key = digest = None
        if idempotency_key:
            key = (f"instantiate|{instance_id}|"
                   f"{validate.text(idempotency_key, 'Idempotency-Key', 128)}")
            digest = fingerprint(request)
            seen = self._replay(key, digest)
            if seen:
                return seen
        try:
            return self._instantiate(instance_id, body, key, digest, lost_after)
        except Conflict:
            # a concurrent twin of this request may have won the race
            seen = self._replay(key, digest) if key else None
            if seen:
                return seen
            raise

    def plan(self, inst: dict, body: dict, used: dict[str, Need]):
        """The request read once (spec/plan.py: a `Plan`); a dual-format app
        with no manner named gets one from the policy over the host facts."""
        pkg = self.packages.usable(inst["appDId"], inst.get("appPkgId"))
        chooser = manner_policy.PolicyChooser(
            self.inventory, self._orchestrator_cfg, inst["appDId"], selected_hosts(body), used)
        return plan_request(inst["id"], pkg, body, chooser, self.restart_default)

    def _replay(self, key: str, digest: str) -> dict | None:
        return replayed(self.store, key, digest)

    def _instantiate(self, instance_id: str, body: dict, key: str | None,
                     fingerprint: str | None, lost_after: int | None = None) -> dict:
        with self._exclusive(instance_id):
            inst = self.get(instance_id)
            if inst["instantiationState"] != InstantiationState.NOT_INSTANTIATED.value:
                raise Conflict(f"app instance {instance_id} is already INSTANTIATED")
            used = self.used_by_host()
            p = self.plan(inst, body, used)
            # The app's Mp1 credential: only its digest is stored; the token
            # itself goes to the app's environment, never into the journal.
            app_token, app_token_digest = self.mep.new_app_token()
            host, where = self.inventory.reserve_explained(instance_id, p, used)
            try:
                # data imported for it (a relocation's): its driver must take it
                seed = self.seeds.of(instance_id)
                if seed is not None:
                    seeds.driver_takes_data(host, p.manner, instance_id)
                # a live relocation's offer kept for it: its driver adopts
                # what arrived, which keeps the token it booted with
                incoming = live.kept_for(self, inst, host, p.manner)
                if incoming is not None:
                    app_token_digest = incoming["mp1TokenDigest"]
                # First: the rules claim their addresses and names on the
                # host (400/409 here, before anything is made or journalled).
                self.mep.set_rules(instance_id, p.traffic, p.dns, host, p.share)
                op = self.journal.start(instance_id, LcmOperation.INSTANTIATE, {
                    "hostId": host.id, "manner": p.manner.value,
                    "decidedBy": p.decision.source, "request": _request_doc(p.request),
                    "need": dataclasses.asdict(p.need), "restart": p.restart.to_doc()})
                # mecorch extension: why this manner, and why this host
                op["decisionReason"] = f"{p.decision.reason}; placed on {where}"
                self.store.put("op_occs", op["id"], op)
                logs.event("instance.placed", instance=instance_id, host=host.id,
                           manner=p.manner.value, reason=op["decisionReason"])
                inst["_opId"] = op["id"]
                inst["_mp1Token"] = app_token_digest
                # the health checks mecorch.mepm.health runs once it is deployed
                if p.probes:
                    inst["_probes"] = p.probes.to_doc()
                # what a rolling upgrade plans the new version with
                inst["_request"] = upgrade.request_to_keep(body)
                # fenced by this host after that long without its MEO
                if lost_after is not None:
                    inst["_lostAfter"] = lost_after
                self.store.put("instances", instance_id, inst)
                if key:
                    self.store.put("idempotency", key, {"resource": op["id"],
                                                        "fingerprint": fingerprint})
            except BaseException:
                self.mep.release(instance_id)
                self.inventory.release(instance_id)
                raise
            self._busy.add(instance_id)
            self._live.add(op["id"])
        # the one value the plan made, with the Mp1 credential the app is told
        # (an arrived instance was told the source's at its boot)
        request = dataclasses.replace(p.request, env={
            **p.request.env, **({} if incoming is not None
                                else self.mep.app_env(instance_id, app_token, host, p.manner))},
            seed=str(seed) if seed is not None else None,
            incoming=incoming["offer"] if incoming is not None else None)
        self._pool.submit(self._guarded, instance_id, self._run_instantiate, op, request, host)
        return public(op)

    def _run_instantiate(self, op: dict, request: ResourceRequest, host: EdgeHost) -> None:
        iid = request.instance_id
        compute: ComputeDriver | None = None
        alloc: Allocation | None = None
        try:
            compute = host.compute(request.manner)
            self.journal.step(op, "begin:deploy")
            alloc = compute.deploy(request)
            self.journal.step(op, "deploy", handle=alloc.handle)
            target = alloc.addresses[0].ip if alloc.addresses else None
            self.journal.step(op, "begin:rules")
            self.mep.apply(host, iid, target)
            inst = self.get(iid)
            if "readiness" in (inst.get("_probes") or {}):
                # As Kubernetes: not in service until its readiness check
                # passes (mecorch.mepm.health restores it). Applied first all
                # the same: the MEP has accepted the set the instance will get.
                self.mep.withdraw(host, iid, "readiness")
                inst["_health"] = {"ready": False, "live": None, "at": timestamp(),
                                   "detail": "readiness: not checked yet"}
            self.journal.step(op, "rules")
            inst.update({
                "instantiationState": InstantiationState.INSTANTIATED.value,
                "instantiatedAppState": {"operationalState": InstanceOperationalState.STARTED.value},
                "hostId": host.id,
                "deploymentType": request.manner.value,     # mecorch extension
                "decisionReason": op.get("decisionReason"),  # mecorch extension
                "allocatedResources": {**_allocation_view(alloc, host.id),  # mecorch extension
                                       **self._service_view(iid)},
                "_handle": alloc.handle,
                "_need": op["_plan"]["need"],
                # what the supervisor keeps of the runtime's deaths (mepm/supervisor.py);
                # an op journalled by an older mecorch has no policy: the host's
                "_restart": new_restart(op["_plan"].get("restart")
                                        or self.restart_default.to_doc()),
                # known from the first moment, not only after a change
                "_observed": observed_now("RUNNING", "started by instantiate"),
            })
            inst.pop(live.INCOMING, None)       # adopted (if it was kept): the offer is spent
            self.store.put("instances", iid, inst)
            self.journal.events.instance(inst)          # notifications
            self.packages.refresh_usage(inst["appDId"])
            if request.seed is not None:        # its data is in its volumes now
                self.seeds.forget(iid)
            self._free(iid)
            self.journal.finish(op)
        except Exception as e:   # noqa: BLE001 - every failure must be undone
            err = e if isinstance(e, MecorchError) else undo.internal(e)
            log.warning("instantiate %s failed: %s; rolling back", iid, err.detail)
            self._undo_instantiate(op, host, request.manner, alloc.handle if alloc else None)
            self._free(iid)
            self.journal.finish(op, err)
        finally:
            self.inventory.release(iid)

    def _service_view(self, instance_id: str) -> dict:
        """The service addresses the instance's stored rules steer to it,
        and the one its host's MEP allocated (None: it asked for none)."""
        doc = self.store.get("rules", instance_id) or {}
        # the stored documents are normalised already: read, not parsed again
        addresses = [a for rule in doc.get("trafficRules") or []
                     for flt in rule.get("trafficFilter") or []
                     for a in flt.get("dstAddress") or []]
        return {"serviceAddresses": list(dict.fromkeys(addresses)),
                "serviceAddress": doc.get("serviceAddress")}

    def _undo_instantiate(self, op: dict, host: EdgeHost, manner: DeploymentType,
                          handle: dict | None) -> None:
        iid = op["appInstanceId"]
        if self.journal.done(op, "begin:rules"):
            undo.best_effort(f"remove rules of {iid}", self.mep.remove, host, iid)
        self.mep.release(iid)           # its addresses and names are free again
        if self.journal.done(op, "begin:deploy"):
            step = self.journal.data(op, "deploy")
            handle = handle or (step or {}).get("handle")
            undo.best_effort(f"release resources of {iid}", undo.destroy, host.compute(manner),
                             iid, handle)
        inst = self.store.get("instances", iid)
        if inst is not None:
            for k in _DEPLOYED_KEYS:
                inst.pop(k, None)
            inst["instantiationState"] = InstantiationState.NOT_INSTANTIATED.value
            self.store.put("instances", iid, inst)

    # ------------------------------------------------------------ terminate
    def terminate(self, instance_id: str, body: dict) -> dict:
        """A FORCEFUL terminate while a GRACEFUL one of the instance runs
        here is not refused: it supersedes it (`_supersede`), since an app
        (or a slow subscriber of its notices) must not be able to keep
        itself from being taken down."""
        kind, timeout = parse_terminate(body, self.default_graceful_s)
        # mecorch extension: a named manner, checked against the instance's
        named, field = decision.named_type(body, "TerminateAppRequest")
        # not self._exclusive: a busy instance is refused only when no
        # GRACEFUL terminate can be superseded (one check, under the lock)
        with self._busy_lock:
            running = self._graceful.get(instance_id)
            if kind is TerminationType.FORCEFUL and running is not None:
                return public(self._supersede(instance_id, running, named, field))
            if instance_id in self._busy:
                raise Conflict(f"app instance {instance_id} has an operation in progress")
            inst = self.get(instance_id)
            if inst["instantiationState"] != InstantiationState.INSTANTIATED.value:
                raise Conflict(f"app instance {instance_id} is NOT_INSTANTIATED")
            _check_named(named, field, inst)
            op = self.journal.start(instance_id, LcmOperation.TERMINATE, {
                "terminationType": kind.value, "timeout": timeout,
                "hostId": inst["hostId"], "manner": inst["deploymentType"]})
            self._busy.add(instance_id)
            self._live.add(op["id"])
            if kind is TerminationType.GRACEFUL:
                self._graceful[instance_id] = {"op": op, "cancel": threading.Event(),
                                               "forceful": None}
        self._pool.submit(self._guarded, instance_id, self._run_terminate, op)
        return public(op)

    def _supersede(self, instance_id: str, running: dict, named, field) -> dict:
        """A FORCEFUL terminate taking over the GRACEFUL one `running` (the
        busy lock held): its op is started, the graceful wait is cancelled,
        and the graceful op's worker runs the release under the new op (one
        worker per instance, never two releasing at once). Before the stop
        began, the graceful op ends FAILED, saying it was superseded; once
        the stop began, it completes and so does this op."""
        if running["forceful"] is not None:
            raise Conflict(f"app instance {instance_id} is already being terminated "
                           f"FORCEFUL (op {running['forceful']['id']})")
        inst = self.get(instance_id)
        # the host and manner the graceful op took: its release may already
        # have left the instance NOT_INSTANTIATED, without them (this lock
        # is taken again only to forget the graceful op: a FORCEFUL arriving
        # in between found no hostId, a 500 the API fuzz caught)
        graceful = running["op"]["_plan"]
        _check_named(named, field, {"id": instance_id, "deploymentType": graceful["manner"]})
        op = self.journal.start(instance_id, LcmOperation.TERMINATE, {
            "terminationType": TerminationType.FORCEFUL.value, "timeout": 0,
            "hostId": graceful["hostId"], "manner": graceful["manner"],
            "supersedes": running["op"]["id"]})
        self._live.add(op["id"])
        running["forceful"] = op
        running["cancel"].set()             # notify_termination stops waiting
        logs.op_started(op, inst)
        return op

    def _run_terminate(self, op: dict) -> None:
        iid = op["appInstanceId"]
        plan = op["_plan"]
        graceful = None             # what terminate() registered for a GRACEFUL op
        if plan["terminationType"] == TerminationType.GRACEFUL.value:
            with self._busy_lock:
                graceful = self._graceful[iid]
        ops = [op]                  # what this worker ends: op, and a FORCEFUL one
        try:
            inst = self.get(iid)
            host = self.inventory.get(plan["hostId"])
            compute = host.compute(DeploymentType(plan["manner"]))
            stop_s = None               # FORCEFUL: destroy takes it down at once
            if graceful is not None:
                deadline = time.monotonic() + plan["timeout"]
                # one moved out live runs elsewhere: nothing here to tell
                if not graceful["cancel"].is_set() and not live.moved_out(inst):
                    self.journal.step(op, "notify")
                    confirmed = self.mep.notify_termination(iid, plan["timeout"],
                                                            cancel=graceful["cancel"])
                    self.journal.step(op, "notified", confirmed=confirmed)
                with self._busy_lock:
                    forceful = graceful["forceful"]
                if forceful is not None:
                    self.journal.finish(op, Conflict(
                        f"superseded by FORCEFUL terminate {forceful['id']} before the app "
                        "was stopped"))
                    op, ops = forceful, [forceful]
                    self.journal.step(op, "supersedes", opId=graceful["op"]["id"])
                else:
                    stop_s = max(0.0, deadline - time.monotonic())
            self._release(op, host, compute, iid, inst.get("_handle"), stop_s)
            self.packages.refresh_usage(inst["appDId"])
            ops += self._end_terminate(iid, graceful, ops)
            for one in ops:
                self.journal.finish(one)
        except Exception as e:   # noqa: BLE001 - op must end FAILED with the reason
            err = e if isinstance(e, MecorchError) else undo.internal(e)
            log.warning("terminate %s failed: %s", iid, err.detail)
            ops += self._end_terminate(iid, graceful, ops)
            for one in ops:
                self.journal.finish(one, err)
        finally:
            # _guarded ends the op it was given; a FORCEFUL one is ended here
            for one in ops:
                if graceful is not None and one is not graceful["op"]:
                    with self._busy_lock:
                        self._live.discard(one["id"])
                    logs.op_ended(one, self.store.get("instances", iid))

    def _end_terminate(self, iid: str, graceful: dict | None, ops: list[dict]) -> list[dict]:
        """Free the instance (before its ops are journalled as ended, so the
        next operation may start at once); the FORCEFUL op that came while
        the graceful one was stopping the app, if any: it ends with it."""
        with self._busy_lock:
            self._busy.discard(iid)
            if graceful is None:
                return []
            self._graceful.pop(iid, None)
            late = graceful["forceful"]
        if late is None or any(one["id"] == late["id"] for one in ops):
            return []
        self.journal.step(late, "joined", opId=graceful["op"]["id"],
                          note="the GRACEFUL terminate was already stopping the app")
        return [late]

    def _release(self, op: dict, host: EdgeHost, compute: ComputeDriver, iid: str,
                 handle: dict | None, stop_timeout: float | None) -> None:
        """Remove rules, stop, destroy, forget: the end of every instance.
        `stop_timeout` None: no stop of its own (FORCEFUL, or finishing an
        interrupted terminate): every driver's destroy takes a running
        runtime down at once, and a stop first would only add the engine's
        stop call to it (docker stop + remove: ~20 ms more than one forced
        remove)."""
        # Its rules out of service first: no new connection is steered to an
        # app that is stopping (a replica's part goes to the others at once,
        # as a Kubernetes endpoint leaves its Service when its pod
        # terminates); those it has may finish while it stops. Withdrawn,
        # not removed: a terminate that fails after this (the engine down)
        # leaves an INSTANTIATED app whose rules a reconcile round puts
        # back once it sees the runtime running (Reconciler._steer).
        self.journal.step(op, "begin:rules-removal")
        doc = self.store.get("rules", iid)
        if doc and doc.get("hostId") == host.id:
            self.mep.withdraw(host, iid, "down")
        if handle and stop_timeout is not None:
            self.journal.step(op, "begin:stop")
            compute.stop(handle, stop_timeout)
        self.journal.step(op, "begin:destroy")
        applogs.keep(self.logs_dir, compute, iid, handle)
        inst = self.get(iid)
        undo.destroy(compute, runtimes.current(inst), handle)
        self.mep.remove(host, iid)          # no longer placed (its rules gone already)
        for k in _DEPLOYED_KEYS:
            inst.pop(k, None)
        inst["instantiationState"] = InstantiationState.NOT_INSTANTIATED.value
        self.store.put("instances", iid, inst)
        self.journal.events.instance(inst)              # notifications
        self.journal.step(op, "released")

    # ------------------------------------------------------------ operate
    def operate(self, instance_id: str, body: dict) -> dict:
        to, graceful, timeout = parse_operate(body, self.default_graceful_s)
        with self._exclusive(instance_id):
            inst = self.get(instance_id)
            if inst["instantiationState"] != InstantiationState.INSTANTIATED.value:
                raise Conflict(f"app instance {instance_id} is NOT_INSTANTIATED")
            # moved out live (mecorch.mepm.live): START is the MEO's
            # rollback, whatever the record says of its state
            if not (live.moved_out(inst) and to is InstanceOperationalState.STARTED):
                refuse_same_state(instance_id, inst["instantiatedAppState"]["operationalState"],
                                  (inst.get("_observed") or {}).get("state"), to)
            op = self.journal.start(instance_id, LcmOperation.OPERATE, {
                "to": to.value, "timeout": timeout if graceful == "GRACEFUL" else 0})
            self._busy.add(instance_id)
            self._live.add(op["id"])
        self._pool.submit(self._guarded, instance_id, self._run_operate, op)
        return public(op)

    def _run_operate(self, op: dict) -> None:
        iid = op["appInstanceId"]
        try:
            inst = self.get(iid)
            host = self.inventory.get(inst["hostId"])
            compute = host.compute(DeploymentType(inst["deploymentType"]))
            self.journal.step(op, "begin:" + op["_plan"]["to"].lower())
            if op["_plan"]["to"] == InstanceOperationalState.STOPPED.value:
                stop_s = op["_plan"]["timeout"]
                if stop_s > 0:
                    # GRACEFUL: the app's AppTerminationNotification
                    # subscriptions are told (MEC 011 operationAction
                    # STOPPING, as a graceful terminate tells TERMINATING;
                    # an MEO's relocation stops the app so) and waited for
                    # within the one graceful timeout; the runtime's stop
                    # gets what is left
                    deadline = time.monotonic() + stop_s
                    if self.mep.notify_termination(iid, stop_s, "STOPPING"):
                        self.journal.step(op, "notified", confirmed=True)
                    stop_s = max(0.0, deadline - time.monotonic())
                # out of service first: no new client reaches an app stopping
                self.mep.follow_runtime(host, iid, "STOPPED")
                compute.stop(inst["_handle"], stop_s)
            else:
                compute.start(inst["_handle"])
                self.mep.follow_runtime(host, iid, "RUNNING")
            inst["instantiatedAppState"] = {"operationalState": op["_plan"]["to"]}
            started = op["_plan"]["to"] == InstanceOperationalState.STARTED.value
            inst["_observed"] = observed_now("RUNNING", "started by operate") if started \
                else observed_now("STOPPED", "stopped by operate")
            if started:
                inst.pop(live.MOVED_OUT, None)      # a live move's rollback: it runs here again
                # an operator's start ends a crash loop: the count begins again
                was = inst.get("_restart") or {}
                inst["_restart"] = new_restart(was.get("policy") or self.restart_default.to_doc(),
                                               was.get("total", 0))
            else:
                (inst.get("_restart") or {}).pop("nextAt", None)    # nothing is pending
            self.store.put("instances", iid, inst)
            self.journal.events.instance(inst)          # notifications
            self._free(iid)
            self.journal.finish(op)
        except Exception as e:   # noqa: BLE001
            self._free(iid)
            self.journal.finish(op, e if isinstance(e, MecorchError) else undo.internal(e))

    # ------------------------------------------------------------ a relocation's data
    def export_data(self, instance_id: str, into: Path) -> None:
        """The instance's data, as its driver writes it (mecorch.mepm.seeds)."""
        seeds.export_data(self, instance_id, into)

    def import_data(self, instance_id: str, write) -> None:
        """Keep the archive `write(out)` writes for the instance's next
        instantiate (mecorch.mepm.seeds)."""
        seeds.import_data(self, instance_id, write)

    # ------------------------------------------------------------ a live relocation
    def live_source(self, instance_id: str) -> dict:
        return live.live_source(self, instance_id)

    def prepare_incoming(self, instance_id: str, body: dict, source: dict) -> dict:
        return live.prepare_incoming(self, instance_id, body, source)

    def abort_incoming(self, instance_id: str) -> None:
        live.abort_incoming(self, instance_id)

    def migrate_out(self, instance_id: str, offer: dict) -> None:
        live.migrate_out(self, instance_id, offer)

    # ------------------------------------------------------------ change package
    def change_app_pkg(self, instance_id: str, body) -> dict:
        """A rolling upgrade to another version of the package (mecorch
        extension; mecorch.mepm.upgrade)."""
        return self.upgrader.start(instance_id, body)

    # ------------------------------------------------------------ recovery
    def recover(self) -> list[str]:
        """Finish or undo every operation a crash interrupted (or whose
        recovery failed before, e.g. with a backend down: called again by
        each reconciliation round). Operations running in this process are
        left alone. Returns what was done, one line each."""
        done = []
        for op in self.journal.in_progress():
            iid = op["appInstanceId"]
            with self._busy_lock:
                if op["id"] in self._live or iid in self._busy:
                    continue
                self._busy.add(iid)
            try:
                op = self.store.get("op_occs", op["id"])     # again, now that it is held
                if op["operationState"] in ("STARTING", "PROCESSING"):
                    done.append(self._recover_one(op))
            except MecorchError as e:
                done.append(f"could not recover op {op['id']} of {iid}: {e.detail}")
            finally:
                self._free(iid)
        return done

    def _recover_one(self, op: dict) -> str:
        iid = op["appInstanceId"]
        plan = op["_plan"]
        if op["lcmOperation"] == LcmOperation.INSTANTIATE.value:
            host = self.inventory.get(plan["hostId"])
            self._undo_instantiate(op, host, DeploymentType(plan["manner"]), None)
            self.journal.finish(op, Conflict("interrupted by a restart of mecorch; rolled back"))
            line = f"rolled back instantiate of {iid}"
        elif op["lcmOperation"] == LcmOperation.TERMINATE.value:
            host = self.inventory.get(plan["hostId"])
            compute = host.compute(DeploymentType(plan["manner"]))
            inst = self.get(iid)
            self._release(op, host, compute, iid, inst.get("_handle"), None)
            self.journal.finish(op)
            line = f"finished terminate of {iid}"
        elif op["lcmOperation"] == LcmOperation.CHANGE_APP_PKG.value:
            line = self.upgrader.recover(op)
        else:
            self.journal.finish(op, Conflict("interrupted by a restart of mecorch"))
            line = f"failed interrupted operate of {iid}"
        inst = self.store.get("instances", iid)
        if inst:
            self.packages.refresh_usage(inst["appDId"])
        logs.op_ended(op, inst)
        return line

    # ------------------------------------------------------------ helpers
    def _exclusive(self, instance_id: str):
        return exclusive(self._busy_lock, self._busy, instance_id)

    def _guarded(self, instance_id: str, fn, op: dict, *args) -> None:
        logs.op_started(op, self.store.get("instances", instance_id))
        try:
            fn(op, *args)
        finally:
            with self._busy_lock:
                self._live.discard(op["id"])
            self._free(instance_id)
            logs.op_ended(op, self.store.get("instances", instance_id))

    @contextlib.contextmanager
    def hold(self, instance_id: str):
        """Keep every LCM operation off the instance while the block runs
        (recovery, reconciliation); Conflict if one is in progress."""
        with self._exclusive(instance_id):
            self._busy.add(instance_id)
        try:
            yield
        finally:
            self._free(instance_id)

    def working_on(self, instance_id: str) -> bool:
        """An operation of the instance runs here or awaits recovery."""
        with self._busy_lock:
            if instance_id in self._busy:
                return True
        return bool(self.journal.in_progress(instance_id))

    def _free(self, instance_id: str) -> None:
        """End the instance's operation lock; called before the op is
        journalled as ended, so the next operation may start at once."""
        with self._busy_lock:
            self._busy.discard(instance_id)

    def used_by_host(self) -> dict[str, Need]:
        """Per host, what INSTANTIATED instances in the store hold."""
        used: dict[str, Need] = {}
        # every placement asks: only the two keys, not each whole document
        for inst in self.store.list("instances",
                                    instantiationState=InstantiationState.INSTANTIATED.value,
                                    keep=("hostId", "_need")):
            n = inst.get("_need")
            if not n:
                continue
            u = used.get(inst["hostId"], Need(0.0, 0, 0.0))
            used[inst["hostId"]] = Need(u.vcpu + n["vcpu"], u.memory_mb + n["memory_mb"],
                                        u.disk_gb + n["disk_gb"])
        return used


def observed_now(state: str, detail: str) -> dict:
    """An `_observed` record made by the operation that caused the state."""
    return {"state": state, "detail": detail, "at": timestamp()}


def new_restart(policy: dict, total: int = 0) -> dict:
    """An instance's `_restart` record with no restart counted yet in a row
    (`count`: what the backoff and limit read); `total`: every restart of
    the instance (restartCount in its view, as Kubernetes counts)."""
    return {"policy": policy, "count": 0, "total": total, "lastExitCode": None,
            "lastExitAt": None, "nextAt": None, "gaveUp": False, "since": time.time()}


TERMINATE_FIELDS = ("terminationType", "gracefulTerminationTimeout", *decision.TYPE_FIELDS)


def fingerprint(body) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def idempotency_mismatch() -> IdempotencyMismatch:
    return IdempotencyMismatch("Idempotency-Key was already used with a different request "
                               "body: use a new key for a new request")


def _check_named(named: DeploymentType | None, field: str | None, inst: dict) -> None:
    """A manner named in a TerminateAppRequest must be the instance's."""
    if named is not None and named.value != inst["deploymentType"]:
        raise InvalidInput(f"{field} says {named.value} but app instance "
                           f"{inst['id']} was deployed as {inst['deploymentType']}")


def parse_terminate(body, default_s: int) -> tuple[TerminationType, int]:
    """TerminateAppRequest -> (kind, graceful timeout; 0 when FORCEFUL)."""
    if not isinstance(body, dict):
        raise InvalidInput("body must be a TerminateAppRequest object")
    validate.known_fields(body, TERMINATE_FIELDS, "TerminateAppRequest")
    try:
        kind = TerminationType(body.get("terminationType"))
    except ValueError:
        raise InvalidInput("terminationType must be GRACEFUL or FORCEFUL") from None
    timeout = validate.integer(body.get("gracefulTerminationTimeout", default_s),
                               "gracefulTerminationTimeout", 0, 3600)
    return kind, 0 if kind is TerminationType.FORCEFUL else timeout


def refuse_same_state(instance_id: str, state: str | None, observed: str | None,
                      to: InstanceOperationalState) -> None:
    """Conflict for an operate to the state the instance is in already
    (`state`: its operationalState). STARTED again is allowed for a
    runtime seen dead (`observed` STOPPED: it crashed; CRASH_LOOP: the
    supervisor gave up): "already STARTED" would be untrue, and that start
    is the operator's way back. Both levels decide by this."""
    dead = observed in ("STOPPED", "CRASH_LOOP")
    if state == to.value and not (to is InstanceOperationalState.STARTED and dead):
        raise Conflict(f"app instance {instance_id} is already {to.value}")


def parse_operate(body, default_s: int) -> tuple[InstanceOperationalState, str, int]:
    """OperateAppRequest -> (target state, stop type, graceful stop timeout)."""
    if not isinstance(body, dict):
        raise InvalidInput("body must be an OperateAppRequest object")
    try:
        to = InstanceOperationalState(body.get("changeStateTo"))
    except ValueError:
        raise InvalidInput("changeStateTo must be STARTED or STOPPED") from None
    graceful = body.get("stopType", "GRACEFUL")
    if graceful not in ("GRACEFUL", "FORCEFUL"):
        raise InvalidInput("stopType must be GRACEFUL or FORCEFUL")
    timeout = validate.integer(body.get("gracefulStopTimeout", default_s),
                               "gracefulStopTimeout", 0, 3600)
    return to, graceful, timeout


def create_instance(store: Store, packages, body, idempotency_key: str | None,
                    instance_id: str | None = None) -> tuple[dict, bool]:
    """Store a new NOT_INSTANTIATED instance record for
    CreateAppInstanceRequest `body` (the MEO's and a host's alike); returns
    it and whether it was made now (False: a retry with the same
    Idempotency-Key, answered with the first one's record). `instance_id`:
    the id to make it under (an MEPM given the MEO's), else a new one."""
    if not isinstance(body, dict):
        raise InvalidInput("body must be a CreateAppInstanceRequest object")
    key = f"create|{validate.text(idempotency_key, 'Idempotency-Key', 128)}" \
        if idempotency_key else None
    if key and (seen := _seen_create(store, key, body)) is not None:
        return seen, False
    app_d_id = validate.ident(body.get("appDId"), "appDId")
    # mecorch extension: appPkgId picks one version of the app (an MEO
    # creates an instance from the exact package it copied to the host)
    pkg_id = body.get("appPkgId")
    pkg = packages.usable(app_d_id, validate.ident(pkg_id, "appPkgId")
                          if pkg_id is not None else None)
    iid = new_id() if instance_id is None else validate.ident(instance_id, "X-Mecorch-Meo-Id")
    doc = new_instance_doc(iid, body, pkg)
    with store.transaction():
        if key:
            # a twin request on another MEO replica: the first made it
            store.lock(key)
            if (seen := _seen_create(store, key, body)) is not None:
                return seen, False
        if instance_id is not None and store.get("instances", iid) is not None:
            raise Conflict(f"app instance {iid} already exists")
        store.put("instances", iid, doc)
        if key:
            store.put("idempotency", key, {"resource": iid, "fingerprint": fingerprint(body)})
    return doc, True


def replayed(store: Store, key: str, digest: str) -> dict | None:
    """The op occurrence a request with this idempotency key started (the
    MEO's and a host's instantiate alike), None: none; a different request
    under the same key is a 422."""
    seen = store.get("idempotency", key)
    if not seen:
        return None
    if seen.get("fingerprint") != digest:
        raise idempotency_mismatch()
    return public(store.get("op_occs", seen["resource"]))


def _seen_create(store: Store, key: str, body: dict) -> dict | None:
    """The instance a create with this Idempotency-Key made (None: none)."""
    seen = store.get("idempotency", key)
    if not seen:
        return None
    if seen.get("fingerprint", fingerprint(body)) != fingerprint(body):
        raise idempotency_mismatch()
    doc = store.get("instances", seen["resource"])
    if doc is None:
        raise NotFound(f"app instance {seen['resource']!r} does not exist")
    return doc


def new_instance_doc(iid: str, body: dict, pkg: dict) -> dict:
    """A NOT_INSTANTIATED AppInstanceInfo for CreateAppInstanceRequest `body`
    of package `pkg` (the MEO's and the MEPM's records alike)."""
    href = f"{LCM}/app_instances/{iid}"
    appd = pkg["_appd"]
    return {
        "id": iid,
        "appInstanceName": validate.text(body.get("appInstanceName") or appd["appName"],
                                         "appInstanceName"),
        "appInstanceDescription": validate.text(
            body.get("appInstanceDescription") or appd.get("appDescription") or "-",
            "appInstanceDescription", 1024),
        "appDId": pkg["appDId"],
        "appProvider": appd["appProvider"],
        "appName": appd["appName"],
        "appSoftVersion": appd["appSoftVersion"],
        "appDVersion": appd["appDVersion"],
        "appPkgId": pkg["id"],
        "instantiationState": InstantiationState.NOT_INSTANTIATED.value,
        "_links": {"self": {"href": href},
                   "instantiate": {"href": f"{href}/instantiate"},
                   "terminate": {"href": f"{href}/terminate"},
                   "operate": {"href": f"{href}/operate"}},
    }


def _request_doc(req: ResourceRequest) -> dict:
    d = dataclasses.asdict(req)
    d["manner"] = req.manner.value
    return d


def _allocation_view(alloc: Allocation, host_id: str) -> dict:
    return {
        "hostId": host_id,
        "compute": {"vcpu": alloc.vcpu, "memoryMb": alloc.memory_mb},
        "storage": list(alloc.storage),
        "network": [dataclasses.asdict(a) for a in alloc.addresses],
    }
