"""Reconciliation: what mecorch decided (the store, the op journal) against
what the backends report, on start and then every
`orchestrator.reconcile_interval_s` seconds.

Each round:
1. finishes or undoes the operations a crash interrupted (`Lcm.recover`:
   the journal part; operations running in this process are left alone);
2. per edge host and compute driver, lists what the backend has under
   mecorch's labels/metadata (`list_instances`, which only returns objects
   of this host id) and
   - adopts what belongs to an INSTANTIATED instance: nothing is stopped or
     started, only its observed state is recorded (`_observed`);
   - removes orphans: objects of instances the store does not have as
     INSTANTIATED by this manner on this host, and that no operation is
     working on;
   - marks INSTANTIATED instances whose runtime vanished as observed
     MISSING (the record is kept: an operator decides what happens next);
   - after a host reboot or daemon restart: starts again what stopped with
     its host (the driver's `revive`; never what the operator stopped,
     what crashed by itself, or what its host fenced: mecorch.mepm.fence),
     and moves the rules of an instance whose
     runtime came back with another address to that address;
3. per MEP, re-opens the driver when its own check fails (a dead dnsmasq
   is started again), removes rules of instances that are not
   INSTANTIATED there, and applies again the stored rules of INSTANTIATED
   instances the MEP does not hold as applied (`rules_applied`: after a
   reboot the chains are gone), except those a failed readiness check
   withdrew (`outOfService`: mecorch.mepm.health, mecorch.mepm.steering).

A backend that cannot be listed is skipped for the round with a log line:
"cannot list" never means "nothing exists". Every change to one instance is
made while holding that instance (`Lcm.hold`), so it cannot race an LCM
operation; an instance busy with one is left for the next round.
"""

from __future__ import annotations

import logging
import threading

from mecorch.kernel import heap, logs
from mecorch.kernel.errors import Conflict, MecorchError
from mecorch.mepm.inventory import EdgeHost, Inventory
from mecorch.mepm import replicas, runtimes
from mecorch.mepm.lcm import Lcm
from mecorch.mepm.mep import MepService
from mecorch.mepm.fence import fenced
from mecorch.mepm.live import incoming, moved_out
from mecorch.mepm.platform_rules import in_service
from mecorch.driverapi.contracts import Revivable, RuleAudit
from mecorch.driverapi.model import Observation
from mecorch.spec.rules import DnsRule, TrafficRule
from mecorch.kernel.states import (
    DeploymentType, InstanceOperationalState, InstantiationState, ObservedState)
from mecorch.kernel.store import Store
from mecorch.kernel.timeutil import timestamp

log = logging.getLogger("mecorch.reconcile")
INSTANTIATED = InstantiationState.INSTANTIATED.value


class Reconciler:
    def __init__(self, store: Store, inventory: Inventory, lcm: Lcm, mep: MepService,
                 interval_s: float):
        self.store = store
        self.inventory = inventory
        self.lcm = lcm
        self.mep = mep
        self.interval_s = float(interval_s)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._round_lock = threading.Lock()     # one round at a time
        # mecorch.mepm.supervisor, set by the orchestrator: a stopped
        # runtime is given to it after the round recorded it
        self.supervisor = None

    # ------------------------------------------------------------ the loop
    def start(self) -> None:
        """Run a round every interval in a daemon thread (the first round is
        the caller's: `run_once` before serving)."""
        if self._thread is None and self.interval_s > 0:
            self._thread = threading.Thread(target=self._loop, name="reconcile", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                for line in self.run_once():
                    logs.recovery(line)
            except Exception:      # noqa: BLE001 - the loop must survive anything
                log.exception("reconcile round failed; retrying next round")
            # what the round (and the requests since the last one) freed
            # goes back to the system: an idle node stays small
            heap.trim()

    # ------------------------------------------------------------ one round
    def run_once(self) -> list[str]:
        """One reconciliation round; returns what it did, one line each."""
        with self._round_lock:
            done = self.lcm.recover()
            for host in self.inventory.hosts.values():
                for manner in DeploymentType:
                    if host.has(manner):
                        done += self._compute(host, manner)
                if host.section("mep"):
                    done += self._rules(host)
            return done

    def _compute(self, host: EdgeHost, manner: DeploymentType) -> list[str]:
        # Snapshot the instances before listing: one that became
        # INSTANTIATED while we listed may have objects the list missed.
        before = {i["id"]: (i.get("_opId"), runtimes.current(i))
                  for i in self._instantiated(host, manner)}
        try:
            observed = host.compute(manner).list_instances()
        except MecorchError as e:       # logged by the caller, like every line
            return [f"skipped {manner.value} of host {host.id}: {e.detail}"]
        done = []
        # by runtime id: an instance's current runtime, or one a rolling
        # upgrade made beside it (mecorch.mepm.runtimes)
        seen: dict[str, list[Observation]] = {}
        for obs in observed:
            seen.setdefault(obs.instance_id, []).append(obs)
        for rid, obs_list in seen.items():
            done += self._one_observed(host, manner, rid, obs_list)
        for iid, (op_id, rid) in before.items():
            if rid not in seen:
                done += self._vanished(host, manner, iid, op_id)
        return done

    def _one_observed(self, host: EdgeHost, manner: DeploymentType, rid: str,
                      obs_list: list[Observation]) -> list[str]:
        """`rid`: a runtime id; the instance's current runtime is adopted,
        any other runtime of it is an orphan unless an operation of the
        instance (its upgrade) works on it."""
        iid = runtimes.owner(rid)
        inst = self.store.get("instances", iid)
        if self._owned(inst, host, manner) and runtimes.is_current(inst, rid):
            obs_list = [runtimes.as_instance(o) for o in obs_list]
            done = self._readdress(host, iid, obs_list[0])
            if obs_list[0].state is ObservedState.STOPPED:
                revived = self._revive(host, manner, iid, obs_list[0])
                if revived:
                    return done + revived
            if self.supervisor is not None and self.supervisor.pending(iid):
                return done         # dead, counted, its restart waits: leave its record
            done += self._adopt(inst, obs_list[0])
            if self.supervisor is not None and obs_list[0].state is ObservedState.STOPPED:
                line = self.supervisor.died(host, manner, obs_list[0])
                done += [line] if line else []
            return done
        # A live move's arrival (or one arriving): it runs here before its
        # instance's instantiate adopts it; the kept offer says so
        if self.lcm.working_on(iid) or incoming(inst):
            return []
        try:
            with self.lcm.hold(iid):
                inst = self.store.get("instances", iid)     # again, now that it is held
                if self._owned(inst, host, manner) and runtimes.is_current(inst, rid) \
                        or self.lcm.journal.in_progress(iid) or incoming(inst):
                    return []
                compute = host.compute(manner)
                # Listed before the hold: a terminate and delete that ended
                # meanwhile removed these objects itself. Only what the
                # backend still shows now is an orphan (and worth a line).
                obs_list = [o for o in compute.list_instances() if o.instance_id == rid]
                for obs in obs_list:
                    compute.destroy(obs.handle)
                if not obs_list:
                    return []
                which = f" (runtime {rid}, not its current one)" \
                    if self._owned(inst, host, manner) else ""
                return [f"removed orphaned {manner.value} objects of instance {iid}{which} "
                        f"on host {host.id}"]
        except Conflict:
            return []               # an operation started meanwhile: next round
        except MecorchError as e:
            log.warning("reconcile: removing orphan %s failed: %s", iid, e.detail)
            return [f"could not remove orphaned {manner.value} of {iid}: {e.detail}"]

    def _adopt(self, inst: dict, obs: Observation) -> list[str]:
        """A running instance is left as it is: only what was observed is
        recorded, and only when it changed (the first observation of an
        instance recorded by an older mecorch too: the view shows from the
        first round what runs). A crash loop the supervisor gave up on
        stays recorded as such while its runtime stays stopped."""
        old = (inst.get("_observed") or {}).get("state")
        if old == obs.state.value or (old == ObservedState.CRASH_LOOP.value
                                      and obs.state is ObservedState.STOPPED):
            return self._steer(inst, obs)
        if not self._record(inst["id"], obs.state, obs.detail):
            return []
        if obs.fault and obs.state is not ObservedState.RUNNING:
            self.tell_fault(runtimes.as_instance(obs))     # its event was missed
        if old is None and obs.state is ObservedState.RUNNING:
            return []               # the normal case: recorded, nothing to report
        return [f"instance {inst['id']} observed {obs.state.value} (was {old or 'unknown'})"]

    def _steer(self, inst: dict, obs: Observation) -> list[str]:
        """Rules out of service exactly while the runtime does not run
        (`MepService.follow_runtime`): a change whose steering failed, or
        could not hold the instance, is caught up here."""
        doc = self.store.get("rules", inst["id"]) or {}
        down = "down" in (doc.get("outOfService") or ())
        running = obs.state is ObservedState.RUNNING
        host = self.inventory.hosts.get(doc.get("hostId"))
        if host is None or down != running or self.lcm.working_on(inst["id"]):
            return []
        try:
            with self.lcm.hold(inst["id"]):
                if self.lcm.journal.in_progress(inst["id"]):
                    return []
                self.mep.follow_runtime(host, inst["id"], obs.state.value)
        except Conflict:
            return []
        return [f"instance {inst['id']}: rules {'back in' if running else 'out of'} service "
                f"(its runtime is {obs.state.value})"]

    def _readdress(self, host: EdgeHost, iid: str, obs: Observation) -> list[str]:
        """The runtime has another address than the one its rules steer to
        (a container restarted by dockerd gets the first free address): the
        rules are applied again to the new one and the record follows."""
        now = (obs.handle or {}).get("address") or {}
        doc = self.store.get("rules", iid) or {}
        if not now.get("ip") or doc.get("hostId") != host.id \
                or doc.get("targetIp") in (None, now["ip"]) or self.lcm.working_on(iid):
            return []
        try:
            with self.lcm.hold(iid):
                inst = self.store.get("instances", iid)
                doc = self.store.get("rules", iid) or {}
                old = doc.get("targetIp")
                if not self._rules_owned(iid, host) or doc.get("hostId") != host.id \
                        or old in (None, now["ip"]) or self.lcm.journal.in_progress(iid):
                    return []
                self.mep.apply(host, iid, now["ip"])
                nets = (inst.get("allocatedResources") or {}).get("network") or []
                for n in nets:
                    if n.get("ip") == old:
                        n.update(ip=now["ip"], mac=now.get("mac") or n.get("mac"))
                self.store.put("instances", iid, inst)
        except Conflict:
            return []
        except MecorchError as e:
            return [f"could not move the rules of {iid} to its new address: {e.detail}"]
        return [f"instance {iid} has a new address {now['ip']} (was {old}): its rules follow"]

    def _revive(self, host: EdgeHost, manner: DeploymentType, iid: str,
                obs: Observation) -> list[str]:
        """A stopped instance the operator did not stop, whose runtime died
        with its host (a reboot, a daemon restart): the driver starts it
        again (a `Revivable`'s `revive`, which tells that case from a crash).
        Another driver (libvirt: domain autostart does it) is left alone."""
        driver = host.compute(manner)
        inst = self.store.get("instances", iid)
        state = ((inst or {}).get("instantiatedAppState") or {}).get("operationalState")
        # a fenced app stays stopped until its MEO lifts the fence (mepm/fence.py),
        # one moved out live runs elsewhere (mepm/live.py)
        if not isinstance(driver, Revivable) or state != "STARTED" or fenced(inst) \
                or moved_out(inst) or self.lcm.working_on(iid):
            return []
        try:
            if not driver.revive(obs.handle, check_only=True):    # a crash: not held
                return []
            with self.lcm.hold(iid):
                inst = self.store.get("instances", iid)
                state = ((inst or {}).get("instantiatedAppState") or {}).get("operationalState")
                if not self._owned(inst, host, manner) or state != "STARTED" or fenced(inst) \
                        or moved_out(inst) or self.lcm.journal.in_progress(iid):
                    return []
                if not driver.revive(obs.handle):
                    return []
        except Conflict:
            return []
        except MecorchError as e:
            return [f"could not start {manner.value} of instance {iid} again: {e.detail}"]
        self._record(iid, ObservedState.RUNNING, "started again after its host restarted")
        return [f"instance {iid} started again on host {host.id} (its runtime stopped "
                f"with the host)"]

    def _vanished(self, host: EdgeHost, manner: DeploymentType, iid: str,
                  op_id: str | None) -> list[str]:
        inst = self.store.get("instances", iid)
        if not self._owned(inst, host, manner) or inst.get("_opId") != op_id:
            return []               # terminated or redeployed meanwhile
        if (inst.get("_observed") or {}).get("state") == ObservedState.MISSING.value:
            return []
        detail = f"no {manner.value} runtime found on host {host.id}"
        if self._record(iid, ObservedState.MISSING, detail, expect_op=op_id):
            return [f"instance {iid} is INSTANTIATED but its runtime is MISSING"]
        return []

    def tell_fault(self, obs: Observation) -> None:
        """A fault the backend named as the runtime ended (a container OOM
        killed, a VM crashed or paused on a disk I/O error), just recorded:
        AppInstanceStateChange to the STOPPED subscribers, with
        observedStateDetail saying which (as a crash loop is told: the
        operator's operationalState is still STARTED); logged
        (instance.fault). Told by the watcher, or by a round when the
        backend's event was missed."""
        inst = self.store.get("instances", obs.instance_id)
        if inst is None:
            return
        logs.event("instance.fault", logging.WARNING, instance=obs.instance_id,
                   package=inst.get("appPkgId"), host=inst.get("hostId"), fault=obs.fault,
                   detail=obs.detail)
        self.lcm.journal.events.instance(inst, InstanceOperationalState.STOPPED.value)

    def _record(self, iid: str, state: ObservedState, detail: str,
                expect_op: str | None = None) -> bool:
        try:
            with self.lcm.hold(iid):
                inst = self.store.get("instances", iid)
                if inst is None or inst["instantiationState"] != INSTANTIATED:
                    return False
                if expect_op is not None and inst.get("_opId") != expect_op:
                    return False
                if fenced(inst) and state is not ObservedState.RUNNING:
                    detail = inst["_fenced"]["reason"]     # why it stopped: the fence
                inst["_observed"] = {"state": state.value, "detail": detail[:500],
                                     "at": timestamp()}
                self.store.put("instances", iid, inst)
                host = self.inventory.hosts.get(inst.get("hostId"))
                if host is not None:
                    self.mep.follow_runtime(host, iid, state.value)
                return True
        except Conflict:
            return False

    # ------------------------------------------------------------ MEP
    def _rules(self, host: EdgeHost) -> list[str]:
        done = []
        try:
            mep = host.mep()
            failed = [c.name for c in mep.check() if not c.ok]
            if failed:
                # open() is idempotent: it makes the chains, hooks and a live
                # dnsmasq exist again. Only then: nothing is redone that works.
                mep.open()
                done.append(f"MEP of host {host.id} re-opened ({', '.join(failed)} failed)")
            owners = mep.rule_owners()
        except MecorchError as e:
            return done + [f"skipped MEP of host {host.id}: {e.detail}"]
        for iid in sorted(owners):
            if self._rules_owned(iid, host) or self.lcm.working_on(iid):
                continue
            try:
                with self.lcm.hold(iid):
                    if self._rules_owned(iid, host) or self.lcm.journal.in_progress(iid):
                        continue
                    self.mep.remove(host, iid)
                    done.append(f"removed orphaned rules of instance {iid} on host {host.id}")
            except Conflict:
                continue
            except MecorchError as e:
                done.append(f"could not remove orphaned rules of {iid}: {e.detail}")
        return done + self._reapply(host, mep)

    def _reapply(self, host: EdgeHost, mep) -> list[str]:
        """Apply again the stored rules of every INSTANTIATED instance of the
        host whose rules the MEP does not hold as applied (after a reboot
        the chains are gone). Rules in place are not touched. A MEP that
        cannot tell (no `RuleAudit`) is left alone."""
        if not isinstance(mep, RuleAudit):
            return []
        done = []
        try:
            saved = mep.snapshot()      # one read for the round's first look at every instance
        except MecorchError as e:
            return [f"skipped re-applying rules on host {host.id}: {e.detail}"]
        # the host's applied sets, read once: each instance's share of its
        # replicas is part of what must be in place
        placed = self.mep.rules.placed(host.id)

        def shares(doc: dict, placed: list[dict]) -> dict:
            return replicas.shares(placed, host.id, doc["id"], doc.get("appDId"),
                                   doc["trafficRules"])
        for inst in self.store.list("instances", instantiationState=INSTANTIATED,
                                    hostId=host.id, keep=("id",)):
            iid = inst["id"]
            doc = self.store.get("rules", iid)
            # withdrawn by a failed readiness check: its rules stay off the
            # MEP until the check passes again (mecorch.mepm.health)
            if not doc or doc.get("hostId") != host.id or not doc.get("targetIp") \
                    or not in_service(doc) or self.lcm.working_on(iid):
                continue
            try:
                # Checked first without holding the instance: a round must
                # not make every API operation of it wait (409) meanwhile.
                first = (iid, doc["targetIp"],
                         [TrafficRule.from_etsi(r) for r in doc["trafficRules"]],
                         [DnsRule.from_etsi(r) for r in doc["dnsRules"]])
                if mep.rules_applied(*first, saved=saved,
                                     **_shares_kw(shares(doc, placed))):
                    continue
                with self.lcm.hold(iid):
                    doc = self.store.get("rules", iid)
                    if not self._rules_owned(iid, host) or not doc or not in_service(doc) \
                            or doc.get("hostId") != host.id or self.lcm.journal.in_progress(iid):
                        continue
                    if mep.rules_applied(iid, doc["targetIp"],
                               [TrafficRule.from_etsi(r) for r in doc["trafficRules"]],
                               [DnsRule.from_etsi(r) for r in doc["dnsRules"]],
                               **_shares_kw(shares(doc, self.mep.rules.placed(host.id)))):
                        continue
                    self.mep.apply(host, iid, doc["targetIp"])
                    done.append(f"re-applied the rules of instance {iid} on host {host.id}")
            except Conflict:
                continue
            except MecorchError as e:
                done.append(f"could not re-apply the rules of {iid}: {e.detail}")
        return done

    def _rules_owned(self, iid: str, host: EdgeHost) -> bool:
        inst = self.store.get("instances", iid)
        return bool(inst) and inst["instantiationState"] == INSTANTIATED \
            and inst.get("hostId") == host.id

    # ------------------------------------------------------------ helpers
    def _instantiated(self, host: EdgeHost, manner: DeploymentType) -> list[dict]:
        """id, _opId and _runtime of the host's INSTANTIATED instances of
        one manner."""
        return [i for i in self.store.list("instances", instantiationState=INSTANTIATED,
                                           hostId=host.id,
                                           keep=("id", "_opId", "deploymentType", "_runtime"))
                if i["deploymentType"] == manner.value]

    @staticmethod
    def _owned(inst: dict | None, host: EdgeHost, manner: DeploymentType) -> bool:
        return bool(inst) and inst["instantiationState"] == INSTANTIATED \
            and inst.get("hostId") == host.id and inst.get("deploymentType") == manner.value


def _shares_kw(shares: dict) -> dict:
    """`rules_applied`'s shares argument, only when there are replicas: a
    MEP driver's check of a set of its own is the call it always had."""
    return {"shares": shares} if shares else {}
