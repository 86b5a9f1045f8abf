"""A running VM moved live between two hosts (issue 34's last part): each
host's side of it (the MEO drives it, mecorch.meo.relocate; the hosts never
talk to each other but backend to backend, libvirtd to libvirtd).

- source, `live_source`: what the target needs to take the instance in
  (its driver's `LiveMovable.live_source`, the instance's Mp1 token digest);
- target, `prepare_incoming`: the InstantiateAppRequest planned as
  instantiate would (the manner, the host), its driver's
  `prepare_incoming`; the offer is kept in the NOT_INSTANTIATED record
  (`_incoming`) for its next instantiate, which hands it to the driver
  (`ResourceRequest.incoming`: the deploy adopts the arrived instance) and
  keeps the source's Mp1 token digest (the guest read its token at boot);
  it goes once that instantiation COMPLETES, by `abort_incoming` (the
  driver removes what the prepare made), or with the instance resource;
- source, `migrate_out`: the driver sends the running instance; the record
  then reads INSTANTIATED, operationalState STOPPED, marked `_movedOut`.
  The mark is set before the driver is called (a crash of the MEPM during
  the migration leaves it): nothing on the host starts a marked instance
  (the supervisor, reconciliation's revive, the fence's lifting, the
  health checks), only an operate START (the MEO's rollback) clears it;
  a terminate removes it with the rest.

Every instance is held (`Lcm.hold`) while its step runs: no LCM operation
races a migration.
"""

from __future__ import annotations

from mecorch.driverapi.contracts import LiveMovable
from mecorch.kernel import logs, validate
from mecorch.kernel.errors import Conflict, InvalidInput
from mecorch.kernel.states import DeploymentType, InstanceOperationalState, InstantiationState
from mecorch.kernel.timeutil import timestamp
from mecorch.spec.lost_after import FIELD as LOST_AFTER
from mecorch.spec.plan import INSTANTIATE_FIELDS

INCOMING = "_incoming"      # target, NOT_INSTANTIATED: {offer, mp1TokenDigest, hostId, manner}
MOVED_OUT = "_movedOut"     # source, after (or during) migrate_out: {at, sent}
# the driver's own bound of one migration (RemoteMepm's HTTP wait is longer)
MIGRATE_TIMEOUT_S = 1800.0
SOURCE_FIELDS = ("driver", "mp1TokenDigest")
INCOMING_FIELDS = ("instantiateAppRequest", "source")
MIGRATE_FIELDS = ("offer",)
OFFER_FIELDS = ("driver",)


def moved_out(inst: dict | None) -> bool:
    """The instance was sent to another host (or is being sent): nothing
    but an operate START runs it here again."""
    return bool((inst or {}).get(MOVED_OUT))


def incoming(inst: dict | None) -> bool:
    """The instance keeps a live move's offer: what its backend holds of it
    (the arrived, running guest) waits for its instantiate to adopt it."""
    return bool((inst or {}).get(INCOMING))


def driver_moves_live(host, manner: DeploymentType, instance_id: str) -> LiveMovable:
    """The host's driver of `manner`; UnsupportedAction, naming it, when it
    cannot move a running instance (not LiveMovable). Loaded, not opened."""
    return host.compute_that(manner, LiveMovable, instance_id, "move a running instance")


def _object(value, field: str) -> dict:
    if not isinstance(value, dict):
        raise InvalidInput(f"{field}: must be an object")
    return value


def parse_incoming(body) -> tuple[dict, dict]:
    """The body of POST .../incoming -> (InstantiateAppRequest, source)."""
    body = _object(body, "body")
    validate.known_fields(body, INCOMING_FIELDS, "the incoming request")
    request = _object(body.get("instantiateAppRequest"), "instantiateAppRequest")
    # as the instantiate will be sent (an MEO's carries its lostAfter:
    # nothing the plan reads)
    validate.known_fields(request, (*INSTANTIATE_FIELDS, LOST_AFTER), "instantiateAppRequest")
    return ({k: v for k, v in request.items() if k != LOST_AFTER},
            parse_source(body.get("source")))


def parse_source(source) -> dict:
    """A `live_source` answer, as a target takes it."""
    source = _object(source, "source")
    validate.known_fields(source, SOURCE_FIELDS, "source")
    digest = source.get("mp1TokenDigest")
    return {"driver": _object(source.get("driver"), "source.driver"),
            "mp1TokenDigest": None if digest is None
            else validate.sha256(digest, "source.mp1TokenDigest")}


def parse_migrate(body) -> dict:
    """The body of POST .../migrate -> the offer ({"driver": ...})."""
    body = _object(body, "body")
    validate.known_fields(body, MIGRATE_FIELDS, "the migrate request")
    return parse_offer(body.get("offer"))


def parse_offer(offer) -> dict:
    offer = _object(offer, "offer")
    validate.known_fields(offer, OFFER_FIELDS, "offer")
    return {"driver": _object(offer.get("driver"), "offer.driver")}


def _running(inst: dict) -> None:
    """Conflict unless INSTANTIATED and STARTED, and not moved out."""
    state = inst["instantiationState"]
    operational = (inst.get("instantiatedAppState") or {}).get("operationalState")
    if state != InstantiationState.INSTANTIATED.value \
            or operational != InstanceOperationalState.STARTED.value or moved_out(inst):
        raise Conflict(f"app instance {inst['id']} is {state}"
                       + (f" and {operational}" if operational else "")
                       + (" (moved out)" if moved_out(inst) else "")
                       + ": only an instance INSTANTIATED and STARTED moves live")


def _source_side(lcm, inst: dict):
    """(its host, its opened LiveMovable driver) of a running instance that
    may move out (the caller holds it): Conflict / UnsupportedAction else."""
    _running(inst)
    host = lcm.inventory.get(inst["hostId"])
    manner = DeploymentType(inst["deploymentType"])
    driver_moves_live(host, manner, inst["id"])
    return host, host.compute(manner)


def live_source(lcm, instance_id: str) -> dict:
    with lcm.hold(instance_id):
        inst = lcm.get(instance_id)
        _, compute = _source_side(lcm, inst)
        facts = compute.live_source(inst["_handle"])
    return {"driver": facts, "mp1TokenDigest": inst.get("_mp1Token")}


def prepare_incoming(lcm, instance_id: str, body: dict, source: dict) -> dict:
    """`body`, `source` as `parse_incoming` answers them. A prepare again
    (the MEO's retry) replaces the kept one, its driver's part undone."""
    validate.ident(instance_id, "appInstanceId")
    with lcm.hold(instance_id):
        inst = lcm.get(instance_id)
        if inst["instantiationState"] != InstantiationState.NOT_INSTANTIATED.value:
            raise Conflict(f"app instance {instance_id} is {inst['instantiationState']}: an "
                           "instance moving in live must be NOT_INSTANTIATED")
        if lcm.seeds.of(instance_id) is not None:
            raise Conflict(f"app instance {instance_id} has data imported for a cold move: "
                           "it cannot also take a live one")
        used = lcm.used_by_host()
        plan = lcm.plan(inst, body, used)
        # the host its instantiate will take (the same placement); its
        # resources are held by that instantiate, not now
        host, _ = lcm.inventory.reserve_explained(instance_id, plan, used)
        lcm.inventory.release(instance_id)
        driver = driver_moves_live(host, plan.manner, instance_id)
        if abort_kept(lcm, inst):               # gone before the new one is made
            lcm.store.put("instances", instance_id, inst)
        host.compute(plan.manner)               # opened
        offer = driver.prepare_incoming(plan.request, source["driver"])
        inst[INCOMING] = {"offer": offer, "mp1TokenDigest": source["mp1TokenDigest"],
                          "hostId": host.id, "manner": plan.manner.value}
        lcm.store.put("instances", instance_id, inst)
    logs.event("instance.incoming", instance=instance_id, host=host.id)
    return {"driver": offer}


def abort_incoming(lcm, instance_id: str) -> None:
    """Nothing kept, or no such instance: nothing to do."""
    with lcm.hold(instance_id):
        inst = lcm.store.get("instances", instance_id)
        if inst is not None and abort_kept(lcm, inst):
            lcm.store.put("instances", instance_id, inst)


def abort_kept(lcm, inst: dict) -> bool:
    """The driver removes what the kept prepare made; the record (not
    stored here) forgets it. False: nothing was kept. The caller holds the
    instance (an abort, a prepare again, the resource's deletion)."""
    kept = inst.get(INCOMING)
    if not kept:
        return False
    host = lcm.inventory.get(kept["hostId"])
    manner = DeploymentType(kept["manner"])
    driver_moves_live(host, manner, inst["id"])
    host.compute(manner).abort_incoming(inst["id"])
    inst.pop(INCOMING)
    return True


def kept_for(lcm, inst: dict, host, manner: DeploymentType) -> dict | None:
    """At instantiate (the instance held): the kept offer's record, None
    when none; Conflict when the instantiate was placed otherwise than the
    prepare (another host or manner: the instance arrived elsewhere)."""
    kept = inst.get(INCOMING)
    if not kept:
        return None
    if kept["hostId"] != host.id or kept["manner"] != manner.value:
        raise Conflict(f"app instance {inst['id']} was prepared to arrive live on host "
                       f"{kept['hostId']} as {kept['manner']}, not on {host.id} as "
                       f"{manner.value}: instantiate it as prepared, or abort the incoming")
    driver_moves_live(host, manner, inst["id"])
    return kept


def migrate_out(lcm, instance_id: str, offer: dict) -> None:
    """`offer` as `parse_offer` answers it."""
    with lcm.hold(instance_id):
        inst = lcm.get(instance_id)
        host, compute = _source_side(lcm, inst)
        # marked first: an MEPM that stops half-way starts nothing again
        inst[MOVED_OUT] = {"at": timestamp(), "sent": False}
        lcm.store.put("instances", instance_id, inst)
        try:
            compute.migrate_out(inst["_handle"], offer["driver"], MIGRATE_TIMEOUT_S)
        except BaseException:
            inst = lcm.get(instance_id)
            inst.pop(MOVED_OUT, None)               # it still runs here
            lcm.store.put("instances", instance_id, inst)
            raise
        # it runs on the target now: here its rules go out of service and
        # the record tells it is stopped (the shut-off copy a rollback starts)
        lcm.mep.follow_runtime(host, instance_id, "STOPPED")
        inst = lcm.get(instance_id)
        inst[MOVED_OUT] = {"at": timestamp(), "sent": True}
        inst["instantiatedAppState"] = {
            "operationalState": InstanceOperationalState.STOPPED.value}
        inst["_observed"] = {"state": "STOPPED", "at": timestamp(),
                             "detail": "moved out live to another host"}
        (inst.get("_restart") or {}).pop("nextAt", None)
        lcm.store.put("instances", instance_id, inst)
        lcm.journal.events.instance(inst)           # notifications
    logs.event("instance.moved_out", instance=instance_id, host=host.id)
