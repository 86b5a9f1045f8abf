"""Re-placement of an app whose edge host is lost (a mecorch extension of
the MEO, modelled on Nomad's `disconnect { lost_after, replace = true }`).

Opt-in per instance: `lostAfter` (seconds) in the InstantiateAppRequest
sent to the MEO (parsed by mecorch.spec.lost_after). The MEO forwards it to
the host it places the app on: that MEPM fences the app itself once it has
not heard from its MEO that long (mecorch.mepm.fence), so a copy cut off
from the MEO serves nothing by the time the MEO re-places it.

- After every heartbeat round (`Registry.after_round`) `Replacer.check`
  looks at the INSTANTIATED instances that opted in: one whose host the
  registry has had UNREACHABLE for at least `lostAfter` seconds is placed
  again (`placement.choose_plan` over the hosts that answer, the lost one
  and any holding a stale copy of it left out, within the hosts the
  original request selected, if it selected some) and instantiated there
  through the MEO's own instantiate steps, under the same MEO instance id
  (the new host's copy under an id of that host's own, `create_on`):
  an INSTANTIATE op occurrence of its own whose decisionReason says
  "re-placed: edge host X unreachable for N s". The instance keeps living
  on the lost host (its record unchanged) until that op COMPLETES; then it
  names the new host and lists the move in `replacedFrom`. One
  re-placement at a time per instance (the instance is held like any
  op); an instance with another op in progress is left alone.
- No host fits: a FAILED op occurrence with the placement's reason (one per
  new reason, not one per round), retried every RETRY_S.
- The lost host's copy still runs there (edge autonomy: an MEPM serves its
  apps without its MEO). When the host answers again, before its
  instances are resynced, `remove_stale` terminates it FORCEFUL and deletes
  the host's instance resource, recorded as a TERMINATE op occurrence of
  the instance (`_plan.staleCopy`, decisionReason naming both hosts). Until
  done it is a `host_tasks` entry of that host (it survives an MEO restart
  and the instance's deletion), tried again every round the host answers.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time

from mecorch.kernel import logs
from mecorch.kernel.errors import Conflict, MecorchError, NotFound
from mecorch.kernel.states import InstantiationState, LcmOperation, TerminationType
from mecorch.kernel.timeutil import timestamp
from mecorch.meo.registry import REACHABLE
from mecorch.spec import placement
from mecorch.spec.lost_after import FIELD, MAX_LOST_AFTER_S, parse_lost_after  # noqa: F401
from mecorch.spec.plan import plan_request

log = logging.getLogger("mecorch.meo.replace")
STALE = "staleCopy"                     # an op's _plan key: the removal of a lost copy
# what an instance carries while INSTANTIATED with the opt-in (dropped with it)
DEPLOYED = (FIELD, "replacedFrom", "_placement", "_replace")
RETRY_S = 5.0                           # between two tries of one instance (or stale copy)
HISTORY = 10                            # moves kept in replacedFrom
INSTANTIATED = InstantiationState.INSTANTIATED.value
NOT_INSTANTIATED = InstantiationState.NOT_INSTANTIATED.value


def remember(inst: dict, lost_after: int | None, host_body: dict, wanted: list[str],
             pkg_id: str) -> None:
    """At instantiate: what a re-placement needs to place the instance again
    as it was asked (the host body with its manner, the hosts the request
    selected, the package version); without the opt-in, nothing (and what
    an earlier life of the instance had is dropped)."""
    for k in DEPLOYED:
        inst.pop(k, None)
    if lost_after is None:
        return
    inst[FIELD] = lost_after
    inst["_placement"] = {"body": {k: v for k, v in host_body.items()
                                   if k != "selectedMECHostInfo"},
                          "wanted": list(wanted), "pkgId": pkg_id}


def forget(store, iid: str) -> None:
    """An instantiate that FAILED: the instance, NOT_INSTANTIATED, keeps no
    opt-in (the next instantiate says again whether it opts in)."""
    inst = store.get("instances", iid)
    if inst is not None and inst.get("instantiationState") == NOT_INSTANTIATED \
            and any(k in inst for k in DEPLOYED):
        for k in DEPLOYED:
            inst.pop(k, None)
        store.put("instances", iid, inst)


def create_on(mepm, body: dict, op: dict) -> dict:
    """The instance resource on the new host, under an id of the host's own
    (the MEO maps it, as for a host's resource from before the MEO passed
    its ids): the lost host's copy still holds the MEO's id, and two host
    ids may share one backend (one dockerd), whose object names carry the
    id. The key is the op's: a retry after a broken link gets the same."""
    return mepm.create_instance(body, key=f"meo-{op['id']}")


def moved(store, inst: dict, op: dict, host_id: str, host_instance: str) -> None:
    """The re-placement COMPLETED: the instance names its new host, the move
    is listed, and the lost host owes the removal of its copy."""
    old = op["_plan"]["replaces"]
    inst["_hostInstance"] = {"hostId": host_id, "id": host_instance}
    moves = inst.get("replacedFrom") or []
    if any(m.get("opId") == op["id"] for m in moves):
        return      # recorded already: the op resumed after the MEO stopped before its end
    moves.append({"hostId": old["hostId"], "replacedAt": timestamp(), "opId": op["id"],
                  "reason": op.get("decisionReason", ""), "staleCopy": "PENDING_REMOVAL"})
    inst["replacedFrom"] = moves[-HISTORY:]
    inst.pop("_replace", None)
    key = _task_key(old["hostId"], inst["id"])
    store.put("host_tasks", key, {"id": key, "hostId": old["hostId"], STALE: old["id"],
                                  "appInstanceId": inst["id"], "replacedBy": host_id,
                                  "opId": op["id"]})


def not_moved(store, entry, op: dict, reason: str) -> None:
    """The re-placement FAILED: the instance stays on the lost host; what the
    new host made for it goes (best effort), and it is tried again later."""
    made = next((s for s in op["_steps"] if s["step"] == "created"), None)
    if made is not None:
        try:
            view = entry.mepm.get_instance(made["id"])
            if view is not None and view.get("instantiationState") == NOT_INSTANTIATED:
                entry.mepm.delete_instance(made["id"])
        except MecorchError as e:
            log.warning("re-placement %s: the instance resource on %s not removed: %s",
                        op["id"], entry.host_id, e.detail)
    inst = store.get("instances", op["appInstanceId"])
    if inst is not None:
        inst["_replace"] = {"lastFailure": reason, "nextAt": time.time() + RETRY_S}
        store.put("instances", inst["id"], inst)


def _task_key(host_id: str, iid: str) -> str:
    return f"{host_id}|stale|{iid}"


class Replacer:
    """The MEO's loop over the opted-in instances and the lost hosts' stale
    copies (`check`, after every heartbeat round), and the removal of a
    returning host's stale copies (`remove_stale`, before its resync)."""

    def __init__(self, lcm, registry):
        self.lcm = lcm
        self.registry = registry
        self.store = lcm.store
        self.journal = lcm.journal
        # the heartbeat thread and a registration request may both find a
        # host returned: one removal of its stale copies at a time
        self._removing = threading.Lock()

    def recover(self) -> list[str]:
        """At the MEO's start, before any host is reached: a stale copy's
        removal a stop of the MEO interrupted ends FAILED (its task stays:
        it is done again when the host answers)."""
        done = []
        for op in self.journal.in_progress():
            if op["_plan"].get(STALE):
                self.journal.finish(op, MecorchError(
                    "interrupted by a stop of the MEO; the removal is done again when the "
                    "host answers"))
                done.append(f"stale-copy removal {op['id']} interrupted: done again")
        return done

    # ------------------------------------------------------------ the loop
    def check(self, now: float | None = None) -> list[str]:
        """One round; returns what it did, one line each."""
        now = now or time.time()
        done = []
        entries = self.registry.entries()
        lost = {e.host_id: e for e in entries if e.unreachable_for_s(now) is not None}
        # every round, every heartbeat: with no host lost nothing is read, and
        # then only the few keys this needs of each instance
        for inst in self.store.list("instances", instantiationState=INSTANTIATED,
                                    keep=("id", FIELD, "_hostInstance", "_replace")) \
                if lost else ():
            if inst.get(FIELD) is None or not inst.get("_hostInstance"):
                continue
            entry = lost.get(inst["_hostInstance"]["hostId"])
            if entry is None:
                continue            # its host answers (or was deregistered: an operator's call)
            lost_s = entry.unreachable_for_s(now)
            if lost_s is None or lost_s < inst[FIELD]:
                continue
            if (inst.get("_replace") or {}).get("nextAt", 0) > now:
                continue
            try:
                line = self.replace(inst["id"], entry.host_id, lost_s)
            except (Conflict, NotFound):
                continue            # busy with an op (the next round), or deleted
            if line:
                done.append(line)
        owed = {t["hostId"] for t in self.store.list("host_tasks", keep=("hostId", STALE))
                if t.get(STALE)}
        for entry in entries:
            if entry.state == REACHABLE and entry.host_id in owed:
                done += self.remove_stale(entry, now)
        return done

    def replace(self, iid: str, lost_host: str, lost_s: float) -> str | None:
        """Place and start the re-placement of `iid` (its worker follows it to
        the end); or record why no host takes it. What it did, or None."""
        lcm = self.lcm
        with lcm._exclusive(iid):
            inst = lcm.get(iid)
            old = inst.get("_hostInstance") or {}
            if inst["instantiationState"] != INSTANTIATED or old.get("hostId") != lost_host:
                return None
            if any(not o["_plan"].get(STALE) for o in self.journal.in_progress(iid)):
                return None         # an op of its own waits for the lost host
            plan = inst["_placement"]
            # hosts holding a copy of it (the lost one, and any whose removal
            # is still owed) are no place for it
            out = {lost_host} | {t["hostId"] for t in self.store.list("host_tasks")
                                 if t.get("appInstanceId") == iid and t.get(STALE)}
            reason = (f"edge host {lost_host} unreachable for {lost_s:.0f} s "
                      f"(lostAfter {inst[FIELD]} s)")
            try:
                wanted = [h for h in plan["wanted"] if h not in out]
                if plan["wanted"] and not wanted:
                    raise Conflict(f"no other selected edge host: the request selected only "
                                   f"{', '.join(plan['wanted'])}")
                pkg = lcm.packages.usable(inst["appDId"], plan["pkgId"])
                body = dict(plan["body"])
                if wanted:
                    body["selectedMECHostInfo"] = [{"hostId": {"id": h}} for h in wanted]
                p = plan_request(iid, pkg, body, lcm._chooser(pkg, wanted))
                with lcm._place_lock:
                    # one placement at a time across replicas, as an
                    # instantiate's (the reservations commit in seq order)
                    self.store.lock("placement")
                    held = lcm._held(but=iid)
                    candidates = [dataclasses.replace(c, held=held.get(c.host_id, ()))
                                  for c in self.registry.candidates() if c.host_id not in out]
                    host_id, where = placement.choose_plan(p, candidates, inst["appDId"])
                    self.registry.reserve(host_id, iid, p.need)
            except MecorchError as e:
                return self._no_fit(inst, reason, e)
            # the metrics count it as any placement (mecorch_placements_total)
            logs.event("placement.decided", instance=iid, app=inst["appDId"], host=host_id,
                       manner=p.manner.value, decidedBy="re-placement")
            host_body = {**plan["body"], "selectedMECHostInfo": [{"hostId": {"id": host_id}}]}
            try:
                op = self.journal.start(iid, LcmOperation.INSTANTIATE, {
                    "hostId": host_id, "manner": p.manner.value, "decidedBy": "re-placement",
                    "body": host_body, "pkgId": pkg["id"], "replaces": dict(old)})
                op["decisionReason"] = f"re-placed: {reason}; placed on {where}"
                self.store.put("op_occs", op["id"], op)
                inst["_opId"] = op["id"]
                self.store.put("instances", iid, inst)
            except BaseException:
                self.registry.unreserve(host_id, iid)
                raise
            logs.op_started(op, inst)
            log.warning("instance %s: %s; re-placing it on %s (op %s)", iid, reason, host_id,
                        op["id"])
            lcm._busy.add(iid)
            lcm._live.add(op["id"])
        lcm._pool.submit(lcm._guarded, iid, lcm._run_instantiate, op)
        return f"re-placing instance {iid} from {lost_host} on {host_id}"

    def _no_fit(self, inst: dict, lost: str, e: MecorchError) -> str | None:
        """No host takes it now: a FAILED op occurrence saying why (only when
        the placement's reason is new: not one per round), and a try again
        later."""
        state = inst.get("_replace") or {}
        inst["_replace"] = {"lastFailure": e.detail, "nextAt": time.time() + RETRY_S}
        self.store.put("instances", inst["id"], inst)
        if state.get("lastFailure") == e.detail:
            return None
        from mecorch.meo.lcm import refusal_reasons     # lcm imports this module
        logs.event("placement.refused", instance=inst["id"], app=inst["appDId"],
                   manner=inst["_placement"]["body"].get("deploymentType"),
                   reasons=",".join(refusal_reasons(e)))
        detail = f"re-placement: {lost}: {e.detail}"
        old = inst["_hostInstance"]
        op = self.journal.start(inst["id"], LcmOperation.INSTANTIATE, {
            "hostId": old["hostId"], "decidedBy": "re-placement", "replaces": dict(old)})
        op["decisionReason"] = detail
        err = type(e)(detail)
        err.status, err.title = e.status, e.title
        logs.op_ended(self.journal.finish(op, err), inst)
        log.warning("instance %s: %s (tried again every %g s)", inst["id"], detail, RETRY_S)
        return f"instance {inst['id']} not re-placed: {detail}"

    # ------------------------------------------------------------ stale copies
    def remove_stale(self, entry, now: float | None = None) -> list[str]:
        """The host answers again: its copies of instances re-placed meanwhile
        are terminated FORCEFUL and their resources deleted, before anything
        else is read from it. Returns what was done."""
        now = now or time.time()
        done = []
        with self._removing:
            for task in self.store.list("host_tasks", hostId=entry.host_id):
                if not task.get(STALE) or task.get("nextAt", 0) > now:
                    continue
                line = self._remove_one(entry, task)
                if line:
                    done.append(line)
        return done

    def _remove_one(self, entry, task: dict) -> str | None:
        iid, copy = task["appInstanceId"], task[STALE]
        inst = self.store.get("instances", iid)
        if inst is not None and (inst.get("_hostInstance") or {}).get("hostId") == entry.host_id:
            # never the copy the MEO counts as the instance (placement leaves
            # out a host that owes a removal: this is only a safety net)
            log.error("instance %s lives on %s again: its stale-copy task there is dropped",
                      iid, entry.host_id)
            self.store.delete("host_tasks", task["id"])
            return None
        op = None
        if inst is not None:
            op = self.journal.start(iid, LcmOperation.TERMINATE, {
                "hostId": entry.host_id, "hostInstance": copy, STALE: True,
                "body": {"terminationType": TerminationType.FORCEFUL.value}})
            moved = (f"relocated to {task['replacedBy']} (op {task['opId']}) and its copy "
                     f"here not deleted then" if task.get("relocated") else
                     f"re-placed on {task['replacedBy']} (op {task['opId']}) while "
                     f"{entry.host_id} was unreachable")
            op["decisionReason"] = (f"stale copy on edge host {entry.host_id} removed: the "
                                    f"instance was {moved}")
            self.store.put("op_occs", op["id"], op)
        try:
            self._terminate_and_delete(entry, copy, op)
        except Exception as e:  # noqa: BLE001 - MecorchError, or the host going away (HostAway)
            why = getattr(e, "detail", None) or "the host stopped answering"
            task["nextAt"] = time.time() + RETRY_S
            self.store.put("host_tasks", task["id"], task)
            if op is not None:
                op["decisionReason"] = op["decisionReason"].replace(" removed:", " not removed "
                                                                    "yet:", 1)
                self.journal.finish(op, MecorchError(
                    f"edge host {entry.host_id!r}: stale copy not removed yet (tried again "
                    f"while the host answers): {why}"))
            log.warning("instance %s: stale copy on %s not removed yet: %s", iid,
                        entry.host_id, why)
            return None
        self.store.delete("host_tasks", task["id"])
        if op is not None:
            self.journal.finish(op)
        inst = self.store.get("instances", iid)
        if inst is not None:
            for move in inst.get("replacedFrom") or []:
                if move.get("opId") == task["opId"]:
                    move["staleCopy"] = "REMOVED"
            for move in inst.get("relocatedFrom") or []:    # (mecorch.meo.relocate)
                if move.get("opId") == task["opId"]:
                    move["sourceCopy"] = "REMOVED"
            self.store.put("instances", iid, inst)
        log.warning("instance %s: stale copy on %s terminated and removed (it runs on %s)",
                    iid, entry.host_id, task["replacedBy"])
        return f"removed the stale copy of instance {iid} from host {entry.host_id}"

    def _terminate_and_delete(self, entry, copy: str, op: dict | None) -> None:
        mepm = entry.mepm
        view = mepm.get_instance(copy)
        if view is not None and view.get("instantiationState") == INSTANTIATED:
            plan = {"hostInstance": copy,
                    "body": {"terminationType": TerminationType.FORCEFUL.value}}
            # a host op already running on it (the host's own, from before
            # the outage) is superseded by FORCEFUL, or followed
            host_op = self.lcm._dispatch(entry, plan, terminate=True)
            if host_op is not None:
                if op is not None:
                    self.journal.step(op, "dispatched", opId=host_op["id"])
                ended = self.lcm._await(entry, host_op["id"])
                if ended["operationState"] != "COMPLETED":
                    err = ended.get("error") or {}
                    raise MecorchError(err.get("detail") or
                                       f"the host's terminate ended {ended['operationState']}")
            view = mepm.get_instance(copy)
        if view is not None:
            mepm.delete_instance(copy)
