"""Relocation: the MEO moves an INSTANTIATED instance to another edge host
(a mecorch extension: `POST .../app_instances/{id}/relocate`, an op
occurrence with lcmOperation RELOCATE). Cold: the app stops on its source
host, its data is carried, it starts on the target host. Live (a running
VM between two hosts whose VIMs take live migration on guest networks of
one range, `live_refusal`; `live: true` asks for it, `false` refuses it,
absent is live where it can be): the VM moves running, memory and disks,
by its backend (LiveMovable), and the target adopts it. The instance
keeps its id, package version, DNS name and traffic rules (the target's
MEP takes them from the same request; an address its MEP allocated is
allocated again from the target's range).

Re-placement (mecorch.meo.replace) moves an app off a lost host; this moves
one off a host that answers, so the source copy is stopped before the
target starts, and removed only once the target serves. The shape is the
same: the target's copy under an id of that host's own (`replace.create_on`:
two host ids may share one backend, whose object names carry the id), the
MEO's instance naming its new host only when the op COMPLETES.

One op, its steps journalled (`_steps`), so that a resumed op (a broken
link, an MEO restart, a new leader) does each step once:

1. start (`start`, under the instance's lock and the placement lock): the
   target is the host named (`hostId`: registered, REACHABLE, holding the
   instance's manner, room for it, not cordoned) or placement as for a
   deploy (the request's selected hosts, if it selected some) with the
   source left out; its need is reserved there.
2. "package", "created": the package and the instance resource on the
   target (SystemLcm._made_on_host, as an instantiate).
3. "sourceStop": the source stopped GRACEFUL (its graceful timeout) through
   the host's operate; skipped for an instance that was STOPPED.
4. "imported": the source's `export_data` into a file of the MEO, handed to
   the target's `import_data` (the file goes either way).
   Live, 3-4 instead: "incoming" (the source's `live_source` handed to the
   target's `prepare_incoming`: its offer), "migrating", "migrated" (the
   source's `migrate_out` to that offer: the VM runs on the target, its
   source copy shut off and kept until step 6).
5. "dispatched": the target's instantiate with the request the instance
   was deployed with (same package, manner, rules), followed to its end.
   An instance that was STOPPED is stopped there again ("targetStop").
6. "sourceTerminate", "sourceDeleted": the source's copy terminated
   FORCEFUL and its resource deleted; its MEP releases the rules and the
   DNS name only now.
7. the instance names the target (`_hostInstance`, hostId), the move is
   listed in `relocatedFrom`; the op COMPLETES.

A failure in 2-6 rolls back ("rollback" step, with the reason): the
target's copy terminated FORCEFUL and deleted (deleting what is gone is
success), the source started again if it was started; the op FAILED with
the reason. A host that does not answer during the rollback leaves the op
PROCESSING: the rollback goes on when it answers (SystemLcm.tick, resync);
a host that refuses a rollback step ends the op FAILED naming what was
left undone (never an op stuck on an error that will not pass).
Once the source's copy is down (its terminate COMPLETED, or failed after
taking the copy out of INSTANTIATED) there is no way back to it, and the
target serves: what remains of the source (its terminate, the resource's
deletion) is owed to the source host (a stale-copy task,
`replace.Replacer.remove_stale`), and the op COMPLETES.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

from mecorch.kernel import logs, validate
from mecorch.kernel.errors import (
    BackendUnavailable, Conflict, InvalidInput, MecorchError, NotFound, StoreUnavailable)
from mecorch.kernel.states import (
    InstantiationState, LcmOperation, OperationState, TerminationType)
from mecorch.kernel.timeutil import public, timestamp
# mecorch.meo.lcm imports this module: its names are read at call time
from mecorch.meo import lcm as system_lcm, replace
from mecorch.meo.leader import Fenced
from mecorch.meo.registry import REACHABLE, UNREACHABLE
from mecorch.spec import placement
from mecorch.spec.plan import plan_request

log = logging.getLogger("mecorch.meo.relocate")
FIELDS = ("hostId", "gracefulStopTimeout", "live")   # RelocateAppRequest (mecorch extension)
MAX_GRACEFUL_S = 3600                           # as OperateAppRequest's
HISTORY = 10                                    # moves kept in relocatedFrom
KEY = "relocates"                               # an op's _plan key: the source copy
INSTANTIATED = InstantiationState.INSTANTIATED.value
STARTED, STOPPED = "STARTED", "STOPPED"
ENDED = ("COMPLETED", "FAILED", "ROLLED_BACK")


def parse(body, default_graceful_s: int) -> tuple[str | None, int, bool | None]:
    """RelocateAppRequest -> (the target host named, or None; the source's
    graceful stop timeout in seconds; live: True asked, False refused, None
    live where it can be)."""
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise InvalidInput("body must be a RelocateAppRequest object "
                           "({hostId?, gracefulStopTimeout?, live?})")
    validate.known_fields(body, FIELDS, "RelocateAppRequest")
    host = body.get("hostId")
    if host is not None:
        host = validate.ident(host, "hostId")
    graceful = validate.integer(body.get("gracefulStopTimeout", default_graceful_s),
                                "gracefulStopTimeout", 0, MAX_GRACEFUL_S)
    live = body.get("live")
    if live is not None and not isinstance(live, bool):
        raise InvalidInput("live: must be true or false")
    return host, graceful, live


def live_refusal(manner: str, started: bool, source, target) -> str | None:
    """Why the instance cannot move live from `source` to `target` (registry
    entries), None when it can: a running VM between two hosts whose VIMs
    take live migration (HostInfo.live) on guest networks of one range (the
    guest keeps its address, so the target's network must hold it)."""
    if manner != "VM":
        return "it is a container: a container moves cold (its runtime's memory is not carried)"
    if not started:
        return "it is STOPPED: a stopped VM moves cold"
    ends = []
    for entry in (source, target):
        live = entry.info.live if entry.info else None
        if not live:
            return (f"edge host {entry.host_id!r} takes no live migration (its VIM has no "
                    "vim.live_uri)")
        ends.append(live)
    if ends[0].get("networkCidr") != ends[1].get("networkCidr"):
        return (f"the guest networks differ ({source.host_id}: {ends[0].get('networkCidr')}, "
                f"{target.host_id}: {ends[1].get('networkCidr')}): a live move keeps the "
                "guest's address")
    return None


def deployed_with(store, inst: dict) -> tuple[dict, list[str], str]:
    """(the host request the instance was deployed with, less the host it
    named; the hosts the OSS's request selected, [] for any; the MEO's
    package id): from the newest COMPLETED instantiate or relocation of
    the instance (a re-placement's is an instantiate too)."""
    ops = [o for o in store.list("op_occs", appInstanceId=inst["id"])
           if o["lcmOperation"] in (LcmOperation.INSTANTIATE.value, LcmOperation.RELOCATE.value)
           and o["operationState"] == OperationState.COMPLETED.value
           and (o.get("_plan") or {}).get("body")]
    if not ops:
        raise Conflict(f"app instance {inst['id']} has no completed instantiation the MEO "
                       "recorded: its request is unknown, so it cannot be deployed elsewhere")
    plan = max(ops, key=lambda o: (o["startTime"]["seconds"], o["startTime"]["nanoSeconds"],
                                   o["id"]))["_plan"]
    body = {k: v for k, v in plan["body"].items() if k != "selectedMECHostInfo"}
    # the hosts the request selected: as the instance keeps them (the
    # drain's _selectedHosts), else as its op recorded them, else as a
    # re-placement's opt-in kept them
    wanted = inst.get("_selectedHosts")
    if wanted is None:
        wanted = plan.get("wanted")
    if wanted is None:
        wanted = (inst.get("_placement") or {}).get("wanted") or []
    return body, list(wanted), plan["pkgId"]


def cordoned(registry, host_id: str) -> str | None:
    """Why the host takes no new placement (the registry's cordon), or None."""
    mark = registry.cordons().get(host_id)
    if not mark:
        return None
    reason = mark.get("reason") if isinstance(mark, dict) else None
    return f"edge host {host_id!r} is cordoned" + (f" ({reason})" if reason else "")


# ---------------------------------------------------------------------- start
def start(lcm, iid: str, body) -> dict:
    """Check and place the relocation of `iid`, journal its op occurrence and
    hand it to a worker (the leader's); the op occurrence's view. Conflict /
    InvalidInput / NotFound / CapacityExceeded, with the reason, when it
    cannot start (nothing made)."""
    named, graceful, want_live = parse(body, lcm.default_graceful_s)
    registry, store = lcm.registry, lcm.store
    # read and planned before the store's transaction (every other store
    # user of this process waits while it is open), checked again in it
    inst = lcm.get(iid)
    if lcm._is_busy(iid):
        raise Conflict(f"app instance {iid} has an operation in progress")
    lcm._no_unfinished_op(iid)
    source, src = _source(lcm, inst)
    # whether the app runs, as its host has it (the MEO's copy may lag):
    # the target is left as the source was
    view = src.mepm.get_instance(source["id"])
    if view is None or view.get("instantiationState") != INSTANTIATED:
        raise Conflict(f"app instance {iid}: edge host {src.host_id!r} has it "
                       f"{(view or {}).get('instantiationState', 'no more')}: nothing to "
                       "relocate (the MEO's view catches up at its next resync)")
    started = (view.get("instantiatedAppState") or {}).get("operationalState") == STARTED
    request, wanted, pkg_id = deployed_with(store, inst)
    pkg = lcm.packages.usable(inst["appDId"], pkg_id)
    # hosts holding a copy of it (its source; one owing a stale copy's
    # removal) are no place for it
    out = {src.host_id} | {t["hostId"] for t in store.list("host_tasks")
                           if t.get("appInstanceId") == iid and t.get(replace.STALE)}
    if named is not None:
        target_ids = [_named_target(lcm, iid, named, out)]
    else:
        target_ids = [h for h in wanted if h not in out]
        if wanted and not target_ids:
            raise Conflict(f"app instance {iid}: no other edge host to relocate it to: its "
                           f"request selected only {', '.join(wanted)}")
    host_body = dict(request)
    if target_ids:
        host_body["selectedMECHostInfo"] = [{"hostId": {"id": h}} for h in target_ids]
    p = plan_request(iid, pkg, host_body, lcm._chooser(pkg, target_ids))
    with lcm._exclusive(iid):
        inst = lcm.get(iid)
        lcm._no_unfinished_op(iid)
        if _source(lcm, inst)[0] != source:
            raise Conflict(f"app instance {iid} changed meanwhile (another operation): "
                           "try again")
        with lcm._place_lock:
            store.lock("placement")
            held = lcm._held(but=iid)
            candidates = [dataclasses.replace(c, held=held.get(c.host_id, ()))
                          for c in registry.candidates()
                          if c.host_id not in out and c.cordoned is None]
            if want_live and candidates:
                # asked live: only a host it can move to live
                why_not = {c.host_id: live_refusal(p.manner.value, started, src,
                                                   registry.get(c.host_id))
                           for c in candidates}
                candidates = [c for c in candidates if why_not[c.host_id] is None]
                if not candidates:
                    raise Conflict(f"app instance {iid} cannot be relocated live: "
                                   + "; ".join(sorted(set(why_not.values()))))
            if not candidates:
                others = "no other edge host is registered" if len(registry.entries()) <= 1 \
                    else "every other edge host is cordoned or holds a copy of it"
                raise Conflict(f"app instance {iid} cannot be relocated: it runs on "
                               f"{src.host_id} and {others}")
            try:
                host_id, where = placement.choose_plan(p, candidates, inst["appDId"])
            except MecorchError as e:
                log.info("relocation of %s not placed: %s", iid, e.detail)
                logs.event("placement.refused", instance=iid, app=inst["appDId"],
                           manner=p.manner.value,
                           reasons=",".join(system_lcm.refusal_reasons(e)))
                raise _reworded(e, f"app instance {iid} cannot be relocated: ") from None
            registry.reserve(host_id, iid, p.need)
            cold_why = (live_refusal(p.manner.value, started, src, registry.get(host_id))
                        if want_live is not False else "a cold move was asked (live: false)")
        logs.event("placement.decided", instance=iid, app=inst["appDId"], host=host_id,
                   manner=p.manner.value, decidedBy="relocation")
        try:
            host_body["selectedMECHostInfo"] = [{"hostId": {"id": host_id}}]
            op = lcm.journal.start(iid, LcmOperation.RELOCATE, {
                "hostId": host_id, KEY: dict(source), "manner": p.manner.value,
                "decidedBy": "relocation", "body": host_body, "pkgId": pkg["id"],
                "wanted": wanted, "gracefulStopTimeout": graceful, "started": started,
                "live": cold_why is None})
            # (a container moves cold, always: no need to say so)
            how = ("" if p.manner.value != "VM" else "live " if cold_why is None
                   else f"cold ({cold_why}) ")
            op["decisionReason"] = (f"relocated {how}from edge host {src.host_id}"
                                    f"{' (the host named)' if named else ''}; placed on {where}")
            store.put("op_occs", op["id"], op)
            inst["_opId"] = op["id"]
            store.put("instances", iid, inst)
            logs.op_started(op, inst)
        except BaseException:
            registry.unreserve(host_id, iid)
            raise
        log.info("instance %s: relocating from %s to %s (op %s)", iid, src.host_id, host_id,
                 op["id"])
        here = lcm._runs_here(iid, op)
    if here:
        lcm._pool.submit(lcm._guarded, iid, lambda o: run(lcm, o), op)
    return public(op)


def _source(lcm, inst: dict) -> tuple[dict, object]:
    """(the instance's copy on its host {hostId, id}, that host's registry
    entry); Conflict when it is not deployed or its host does not answer."""
    source = inst.get("_hostInstance")
    if inst["instantiationState"] != INSTANTIATED or not source:
        raise Conflict(f"app instance {inst['id']} is NOT_INSTANTIATED: there is nothing to "
                       "relocate")
    try:
        src = lcm.registry.get(source["hostId"])
    except NotFound:
        raise Conflict(f"app instance {inst['id']}: its edge host {source['hostId']!r} is no "
                       "longer registered: there is no copy to stop and carry") from None
    if src.state != REACHABLE:
        raise Conflict(f"app instance {inst['id']}: its edge host {src.host_id!r} is "
                       f"{src.state}; a relocation stops the app there and carries its data, "
                       "so it needs the host to answer (re-placement moves apps off a lost "
                       "host: lostAfter)")
    return source, src


def _named_target(lcm, iid: str, host_id: str, out: set[str]) -> str:
    """The named target host, checked (registered, answering, no copy of the
    instance, not cordoned); the manner and the room are placement's."""
    try:
        entry = lcm.registry.get(host_id)
    except NotFound as e:
        raise InvalidInput(f"hostId: {e.detail}") from None
    if host_id in out:
        raise Conflict(f"app instance {iid} runs on edge host {host_id!r} already"
                       if host_id == (lcm.get(iid).get("_hostInstance") or {}).get("hostId")
                       else
                       f"edge host {host_id!r} still holds a stale copy of app instance {iid} "
                       "(removed when it answers): no place for it")
    if entry.state != REACHABLE:
        raise Conflict(f"edge host {host_id!r} is {entry.state}: no place to relocate to")
    why = cordoned(lcm.registry, host_id)
    if why:
        raise Conflict(f"{why}: it takes no new placements")
    return host_id


def _reworded(e: MecorchError, prefix: str) -> MecorchError:
    out = type(e)(prefix + e.detail)
    out.status, out.title = e.status, e.title
    return out


# ---------------------------------------------------------------------- the worker
def resumable(lcm, op: dict, unknown_ok: bool = False) -> bool:
    """Whether both hosts of the relocation answer (a resume then goes on).
    A host the registry does not know (yet: the hosts are attached one by
    one) is waited for; `unknown_ok` (the MEO's recovery, every host known
    by then): not, the op rolls back as far as it can."""
    for hid in (op["_plan"]["hostId"], op["_plan"][KEY]["hostId"]):
        try:
            if lcm.registry.get(hid).state == UNREACHABLE:
                return False
        except NotFound:
            if not unknown_ok:
                return False
    return True


def run(lcm, op: dict) -> None:
    """The relocation's steps from where its journal says it is, to its end
    (or to a host that does not answer: the op stays PROCESSING)."""
    HostAway = system_lcm.HostAway
    iid, journal = op["appInstanceId"], lcm.journal
    try:
        if not journal.done(op, "rollback"):
            try:
                _forward(lcm, op)
                return
            except (HostAway, Fenced, StoreUnavailable):
                raise
            except Exception as e:  # noqa: BLE001 - any failure rolls back, with its reason
                err = e if isinstance(e, MecorchError) else _internal(e)
                log.warning("relocation %s of %s failed: %s; rolling back", op["id"], iid,
                            err.detail)
                journal.step(op, "rollback", detail=err.detail, status=err.status,
                             title=err.title)
        _roll_back(lcm, op)
    except HostAway:
        log.warning("relocation %s of %s: a host is away; the op stays PROCESSING until it "
                    "answers", op["id"], iid)
    except (Fenced, StoreUnavailable) as e:
        log.warning("relocation %s of %s left to the leader: %s", op["id"], iid, e.detail)
    except BackendUnavailable as e:
        # a host that does not answer: the rollback goes on when it does
        # (SystemLcm.tick, resync)
        log.warning("relocation %s of %s: rollback not finished (%s); the op stays PROCESSING "
                    "until the hosts answer", op["id"], iid, e.detail)
        _note(journal, op, "rollbackWaits", e.detail)
    except Exception as e:  # noqa: BLE001 - a fault of the rollback itself: the op ends
        err = _internal(e)
        journal.finish(op, MecorchError(f"relocation failed and its rollback did not finish: "
                                        f"{err.detail}"))
        lcm._free(iid)


def _forward(lcm, op: dict) -> None:
    journal, plan, iid = lcm.journal, op["_plan"], op["appInstanceId"]
    target = lcm.registry.get(plan["hostId"])
    source = lcm.registry.get(plan[KEY]["hostId"])
    src_id = plan[KEY]["id"]
    remote = lcm._made_on_host(op, target)                     # 2. package, created
    if plan.get("live"):                                        # 3-4 live: it moves running
        _migrate(lcm, op, source, src_id, target, remote["id"])
    elif plan["started"]:                                       # 3. the source stops
        _host_op(lcm, op, source, src_id, "sourceStop", False, {
            "changeStateTo": STOPPED, "stopType": "GRACEFUL",
            "gracefulStopTimeout": plan["gracefulStopTimeout"]}, already=STOPPED)
    if not plan.get("live") and not journal.done(op, "imported"):   # 4. its data
        carrier = Path(lcm.state_dir) / "relocations" / f"{op['id']}.tar"
        carrier.parent.mkdir(parents=True, exist_ok=True)
        try:
            source.mepm.export_data(src_id, carrier)
            target.mepm.import_data(remote["id"], carrier)
        finally:
            carrier.unlink(missing_ok=True)
        journal.step(op, "imported")
    sent = journal.data(op, "dispatched")                       # 5. the target deploys
    if sent is None:
        host_op = target.mepm.instantiate(remote["id"], plan["body"], key=f"meo-{op['id']}")
        sent = journal.step(op, "dispatched", opId=host_op["id"])["_steps"][-1]
    lcm.registry.dispatched(target.host_id, iid)
    ended = lcm._await(target, sent["opId"])
    if ended["operationState"] != OperationState.COMPLETED.value:
        raise _failure(lcm, target.host_id, ended, remote["id"], iid)
    view = target.mepm.get_instance(remote["id"])
    if (view or {}).get("instantiationState") != INSTANTIATED:
        raise MecorchError(f"edge host {target.host_id!r}: the instance is not INSTANTIATED "
                           "there after its instantiate COMPLETED")
    if not journal.done(op, "targetServing"):
        journal.step(op, "targetServing", at=time.time())     # (the outage's end)
    if not plan["started"]:
        _host_op(lcm, op, target, remote["id"], "targetStop", False, {
            "changeStateTo": STOPPED, "stopType": "FORCEFUL"}, already=STOPPED)
    owed = None                                                 # 6. the source goes
    try:
        _host_op(lcm, op, source, src_id, "sourceTerminate", True,
                 {"terminationType": TerminationType.FORCEFUL.value})
    except MecorchError as e:
        if isinstance(e, BackendUnavailable) or _instantiated(source, src_id):
            raise       # the source's copy is whole: started again by the rollback
        # its terminate took it down and then failed: there is no copy to
        # start again, the target serves: the rest is owed to the host
        owed = e.detail
    if owed is None and not journal.done(op, "sourceDeleted"):
        try:
            source.mepm.delete_instance(src_id)
        except NotFound:
            pass
        except Exception as e:  # noqa: BLE001 - owed to the host: no way back now
            owed = getattr(e, "detail", None) or f"{type(e).__name__}: {e}"
        journal.step(op, "sourceDeleted", owed=owed)
    elif owed is None:
        owed = journal.data(op, "sourceDeleted").get("owed")
    _moved(lcm, op, target, remote["id"], owed)                 # 7. the instance follows


def _migrate(lcm, op: dict, source, src_id: str, target, rid: str) -> None:
    """A live move's middle (mecorch.driverapi.contracts.LiveMovable): the
    target prepares for the running VM ("incoming": its offer journalled),
    the source's backend sends it there ("migrated"); it runs on the
    target from then on, its source copy shut off, kept for a rollback
    until the target's instantiate adopts it. A resume after the MEO lost
    the migrate's answer asks the source: STOPPED there means it went."""
    journal = lcm.journal
    incoming = journal.data(op, "incoming")
    if incoming is None:
        facts = source.mepm.live_source(src_id)
        offer = target.mepm.prepare_incoming(rid, op["_plan"]["body"], facts)
        incoming = journal.step(op, "incoming", offer=offer)["_steps"][-1]
    if journal.done(op, "migrated"):
        return
    if journal.done(op, "migrating") and _operational(source, src_id) == STOPPED:
        journal.step(op, "migrated", at=time.time())
        return
    journal.step(op, "migrating", at=time.time())
    source.mepm.migrate_out(src_id, incoming["offer"])
    journal.step(op, "migrated", at=time.time())


def _operational(entry, rid: str) -> str | None:
    view = entry.mepm.get_instance(rid)
    return ((view or {}).get("instantiatedAppState") or {}).get("operationalState")


def _instantiated(entry, rid: str) -> bool:
    """Whether the host has the instance INSTANTIATED (True when it cannot
    tell: the safe side, the source copy is taken as whole)."""
    try:
        view = entry.mepm.get_instance(rid)
    except MecorchError:
        return True
    return (view or {}).get("instantiationState") == INSTANTIATED


def _host_op(lcm, op: dict, entry, rid: str, step: str, terminate: bool, body: dict,
             already: str | None = None) -> None:
    """One host op of the relocation (journalled as `step` with the host's op
    id), followed to COMPLETED. The host having done it already (a resume:
    its instance STOPPED / gone) counts as done."""
    journal = lcm.journal
    sent = journal.data(op, step)
    if sent is None:
        try:
            host_op = lcm._dispatch(entry, {"hostInstance": rid, "body": body}, terminate)
        except Conflict:
            view = entry.mepm.get_instance(rid)
            state = ((view or {}).get("instantiatedAppState") or {}).get("operationalState")
            if already is None or state != already:
                raise
            host_op = None
        sent = journal.step(op, step, opId=host_op["id"] if host_op else None,
                            at=time.time())["_steps"][-1]
    if sent.get("opId"):
        ended = lcm._await(entry, sent["opId"])
        if ended["operationState"] != OperationState.COMPLETED.value:
            raise _failure(lcm, entry.host_id, ended, rid, op["appInstanceId"])


def _moved(lcm, op: dict, target, rid: str, stale: str | None) -> None:
    """The target serves: the MEO's instance names it, the move is listed
    (and a removal the source still owes recorded), the op COMPLETES."""
    store, iid, journal = lcm.store, op["appInstanceId"], lcm.journal
    source = op["_plan"][KEY]
    view = target.mepm.get_instance(rid)
    with store.transaction():
        lcm._fenced()
        inst = lcm.get(iid)
        was = system_lcm._app_state(inst)
        lcm._copy_host_view(inst, view, target.host_id)
        inst["_hostInstance"] = {"hostId": target.host_id, "id": rid}
        if inst.get("_claims"):
            inst["_claims"]["hostId"] = target.host_id
        inst["decisionReason"] = op["decisionReason"]
        moves = [m for m in inst.get("relocatedFrom") or [] if m.get("opId") != op["id"]]
        live = bool(op["_plan"].get("live"))
        move = {"hostId": source["hostId"], "relocatedAt": timestamp(), "opId": op["id"],
                "sourceCopy": "PENDING_REMOVAL" if stale else "REMOVED",
                "moveType": "LIVE" if live else "COLD"}
        # how long it served nowhere, as the MEO saw it: cold, from the
        # source's stop sent to the target's instantiate COMPLETED (an app
        # that was STOPPED had none); live, from the migration's end (the
        # guest runs on the target, its rules still the source's) to then
        stop = lcm.journal.data(op, "migrated" if live else "sourceStop")
        serving = lcm.journal.data(op, "targetServing")
        if stop and serving and stop.get("at") and serving.get("at"):
            move["outageS"] = round(max(0.0, serving["at"] - stop["at"]), 3)
        moves.append(move)
        inst["relocatedFrom"] = moves[-HISTORY:]
        store.put("instances", iid, inst)
        store.delete("rules", iid)              # those read from the source
        if stale:
            key = f"{source['hostId']}|stale|{iid}"
            store.put("host_tasks", key, {"id": key, "hostId": source["hostId"],
                                          replace.STALE: source["id"], "appInstanceId": iid,
                                          "replacedBy": target.host_id, "opId": op["id"],
                                          "relocated": True})
    with store.transaction():
        if system_lcm._app_state(inst) != was:
            # (stopped at its host meanwhile, the MEO's copy not caught up:
            # its subscribers hear of the state it is relocated in)
            journal.events.instance(inst)
        ended = journal.finish(op)
    lcm._free(iid)
    logs.op_ended(ended, inst)
    log.info("instance %s relocated from %s to %s (op %s)%s", iid, source["hostId"],
             target.host_id, op["id"],
             f"; its copy there is removed later: {stale}" if stale else "")


def _roll_back(lcm, op: dict) -> None:
    """Nothing on the target, the source serving as before; the op FAILED
    with the reason the "rollback" step recorded. A host that does not
    answer (BackendUnavailable, HostAway) leaves the op PROCESSING, the
    rollback to go on when it does; any other refusal is named in the op's
    error (an operator's turn: the op ends, never stuck)."""
    journal, plan, iid = lcm.journal, op["_plan"], op["appInstanceId"]
    lcm.registry.unreserve(plan["hostId"], iid)
    left = []                   # what the rollback could not do, and why
    made = journal.data(op, "created")
    target = _entry(lcm, plan["hostId"])
    if made is not None and target is None:
        left.append(f"its copy on {plan['hostId']} not removed: the host is no longer "
                    "registered")
    if made is not None and target is not None and not journal.done(op, "targetRemoved"):
        try:
            _settle(lcm, target, made["id"])    # its instantiate first ends, if it runs
            if _instantiated(target, made["id"]):
                _host_op(lcm, op, target, made["id"], "targetTerminate", True,
                         {"terminationType": TerminationType.FORCEFUL.value})
            try:
                target.mepm.delete_instance(made["id"])
            except NotFound:
                pass
            journal.step(op, "targetRemoved")
        except BackendUnavailable:
            raise
        except MecorchError as e:
            left.append(f"its copy on {plan['hostId']} not removed: {e.detail}")
    source = _entry(lcm, plan[KEY]["hostId"])
    if plan["started"] and source is None and (journal.done(op, "sourceStop")
                                               or journal.done(op, "migrating")):
        left.append(f"not started again on {plan[KEY]['hostId']}: the host is no longer "
                    "registered")
    if plan["started"] and source is not None and not journal.done(op, "sourceStarted"):
        try:
            view = source.mepm.get_instance(plan[KEY]["id"])
            state = ((view or {}).get("instantiatedAppState") or {}).get("operationalState")
            if (view or {}).get("instantiationState") != INSTANTIATED:
                raise MecorchError("it is not INSTANTIATED there any more")
            if state != STARTED:
                _host_op(lcm, op, source, plan[KEY]["id"], "sourceStart", False,
                         {"changeStateTo": STARTED}, already=STARTED)
            journal.step(op, "sourceStarted")
        except BackendUnavailable:
            raise
        except MecorchError as e:
            left.append(f"not started again on {plan[KEY]['hostId']}: {e.detail}")
    why = journal.data(op, "rollback")
    if left:
        detail = (f"relocation failed and its rollback did not finish ({'; '.join(left)}): "
                  f"{why['detail']}")
    else:
        detail = (f"relocation rolled back (the app serves on edge host {plan[KEY]['hostId']} "
                  f"as before, nothing left on {plan['hostId']}): {why['detail']}")
    err = MecorchError(detail)
    err.status, err.title = why.get("status", 500), why.get("title", err.title)
    with lcm.store.transaction():
        ended = journal.finish(op, err)
    inst = lcm.store.get("instances", iid)
    lcm._free(iid)
    logs.op_ended(ended, inst)


def _entry(lcm, host_id: str):
    """The host's registry entry; None when it was deregistered meanwhile
    (nothing can be done there: the rollback goes as far as it can)."""
    try:
        return lcm.registry.get(host_id)
    except NotFound:
        log.warning("relocation: edge host %s is no longer registered: left out of the "
                    "rollback", host_id)
        return None


def _settle(lcm, entry, rid: str) -> None:
    """The target's instantiate still running (a rollback after the MEO lost
    track of it): wait for the host's op to end before its copy goes."""
    for host_op in entry.mepm.ops_of(rid):
        if host_op["operationState"] not in ENDED:
            lcm._await(entry, host_op["id"])


def _failure(lcm, host_id: str, ended: dict, rid: str, iid: str) -> MecorchError:
    """A host op that did not COMPLETE, in the MEO's words (its id for the
    host's)."""
    err = system_lcm._host_failure(host_id, ended)
    if rid != iid and rid in err.detail:
        out = type(err)(err.detail.replace(rid, iid))
        out.status, out.title = err.status, err.title
        return out
    return err


def _note(journal, op: dict, name: str, why: str) -> None:
    """Record why the op is left PROCESSING (once per reason)."""
    last = op["_steps"][-1] if op["_steps"] else {}
    if last.get("step") != name or last.get("detail") != why:
        journal.step(op, name, detail=why, at=time.time())


def _internal(e: Exception) -> MecorchError:
    log.exception("relocation: internal error")
    return MecorchError(f"internal error: {type(e).__name__}: {e}")
