"""LCM operation occurrences (ETSI AppInstanceLcmOpOcc) as a journal.

An op occurrence is written before any backend is touched and after every
step, so that after a crash `Lcm.recover` knows what was under way and what
had already been made (the compute handle, whether rules were applied).
"""

from __future__ import annotations

from typing import Callable

from mecorch.kernel.errors import MecorchError
from mecorch.kernel.events import NONE as NO_EVENTS, Events
from mecorch.kernel.states import LcmOperation, OperationState
from mecorch.kernel.store import Store
from mecorch.kernel.timeutil import new_id, timestamp

LCM = "/app_lcm/v1"
# ETSI's OperationParams is an enum of operation names, spelled correctly
# there, unlike LcmOperation's "INSTATIATE".
_PARAMS = {LcmOperation.INSTANTIATE: "INSTANTIATE",
           LcmOperation.OPERATE: "OPERATE",
           LcmOperation.TERMINATE: "TERMINATE",
           LcmOperation.CHANGE_APP_PKG: "CHANGE_APP_PKG",     # mecorch extension
           LcmOperation.RELOCATE: "RELOCATE"}                 # mecorch extension


class Journal:
    def __init__(self, store: Store):
        self.store = store
        # told of every operationState entered, and (by the Lcm) of instance
        # state changes: the notifications of mecorch.notifications.subscriptions
        self.events: Events = NO_EVENTS
        # run in the transaction of every step and end written: raises when
        # this process may no longer write them (an MEO replica that lost
        # the lease: mecorch.meo.leader.Lease.fence); None: always may
        self.guard: Callable[[], None] | None = None

    def start(self, instance_id: str, operation: LcmOperation, plan: dict) -> dict:
        now = timestamp()
        op_id = new_id()
        doc = {
            "id": op_id,
            "operationState": OperationState.STARTING.value,
            "stateEnteredTime": now,
            "startTime": now,
            "lcmOperation": operation.value,
            "operationParams": _PARAMS[operation],
            "appInstanceId": instance_id,
            "_links": {"self": {"href": f"{LCM}/app_lcm_op_occs/{op_id}"},
                       "appInstance": {"href": f"{LCM}/app_instances/{instance_id}"}},
            "_plan": plan,          # what was decided: manner, host, request
            "_steps": [],           # what was done, in order
        }
        self.store.put("op_occs", op_id, doc)
        self.events.operation(doc)
        return doc

    def step(self, op: dict, name: str, **data) -> dict:
        """Record a step done (or about to be done: 'begin:' steps) and move
        the op to PROCESSING."""
        op["_steps"].append({"step": name, **data})
        entered = op["operationState"] == OperationState.STARTING.value
        if entered:
            op["operationState"] = OperationState.PROCESSING.value
            op["stateEnteredTime"] = timestamp()
        self._write(op)
        if entered:
            self.events.operation(op)
        return op

    def done(self, op: dict, name: str) -> bool:
        return any(s["step"] == name for s in op["_steps"])

    def data(self, op: dict, name: str) -> dict | None:
        for s in op["_steps"]:
            if s["step"] == name:
                return s
        return None

    def finish(self, op: dict, error: MecorchError | None = None) -> dict:
        op["operationState"] = (OperationState.FAILED if error else OperationState.COMPLETED).value
        op["stateEnteredTime"] = timestamp()
        if error:
            op["error"] = error.problem(op["_links"]["self"]["href"])
        self._write(op)
        self.events.operation(op)
        return op

    def _write(self, op: dict) -> None:
        if self.guard is None:
            self.store.put("op_occs", op["id"], op)
            return
        with self.store.transaction():
            self.guard()
            self.store.put("op_occs", op["id"], op)

    def in_progress(self, instance_id: str | None = None) -> list[dict]:
        ops = []
        for state in (OperationState.STARTING, OperationState.PROCESSING):
            where = {"operationState": state.value}
            if instance_id:
                where["appInstanceId"] = instance_id
            ops.extend(self.store.list("op_occs", **where))
        return ops
