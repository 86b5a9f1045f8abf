"""Rolling upgrade of a running instance to another version of its package
(`POST /app_lcm/v1/app_instances/{id}/change_app_pkg`).

MEC 010-2 has no such operation; this is a documented mecorch extension
modelled on NFV-SOL 003's "Change current VNF package": its own op
occurrence (lcmOperation CHANGE_APP_PKG), journalled and notified like the
others.

One op, under the instance's exclusivity (as operate):
1. plan the new runtime from the new package with the instance's own
   instantiate request (`_request`), under a runtime id of its own
   (`<id>.g<n>`, mecorch.mepm.runtimes: the drivers need no change);
2. deploy it beside the old one and wait until it is READY (its readiness
   probe, run against its own address; without one: RUNNING and a TCP
   connect to its first port, or else to the first port its traffic rules
   steer) within readyTimeoutS;
3. switch the instance's rules to it (one `PlatformRules.apply`: new
   connections go to the new runtime, established ones finish on the old;
   service address and DNS name unchanged), then update the record;
4. stop the old runtime gracefully and destroy it.
A new runtime that fails to deploy or never gets ready is destroyed and the
op FAILS with the reason: the old runtime and its rules were never touched.

Refused (nothing made): an instance holding a DNS name the new version's
package does not let it hold (400: its rules, names included, are kept,
and a name outside the host's domains is the grant of the package,
`spec.dns_names`), an instance with volumes (old and new would need
the same data at once), one that publishes host ports (both cannot bind
them), one instantiated before its request was stored.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
import time

from mecorch.kernel import logs, validate
from mecorch.kernel.errors import Conflict, InvalidInput, MecorchError
from mecorch.kernel.states import DeploymentType, InstantiationState, LcmOperation
from mecorch.kernel.timeutil import public, timestamp
from mecorch.mepm import health, runtimes, undo
from mecorch.spec.decision import TYPE_FIELDS
from mecorch.spec.plan import plan_request
from mecorch.spec.probes import Probes
from mecorch.spec.rules import DnsRule

log = logging.getLogger("mecorch.upgrade")
CHANGE_FIELDS = ("appPkgId", "readyTimeoutS")
DEFAULT_READY_S = 120
# How often readiness is asked while waiting: the probe's own period, but
# at most this (an upgrade should not wait 10 s for a second look).
MAX_POLL_S = 1.0
# What of an InstantiateAppRequest is kept on the instance to plan its
# upgrades: all of it but what may carry credentials.
_NOT_KEPT = ("vimConnectionInfo",)


def request_to_keep(body: dict) -> dict:
    """The instantiate request as the instance keeps it (`_request`)."""
    return {k: v for k, v in body.items() if k not in _NOT_KEPT}


def parse(body) -> tuple[str, int]:
    """ChangeAppPkgRequest -> (appPkgId, readyTimeoutS)."""
    if not isinstance(body, dict):
        raise InvalidInput("body must be a ChangeAppPkgRequest object")
    validate.known_fields(body, CHANGE_FIELDS, "ChangeAppPkgRequest")
    pkg_id = validate.ident(body.get("appPkgId"), "appPkgId")
    ready_s = validate.integer(body.get("readyTimeoutS", DEFAULT_READY_S), "readyTimeoutS",
                               1, 3600)
    return pkg_id, ready_s


def _tcp_open(ip: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((ip, port), timeout=timeout):
            return True
    except OSError:
        return False


class Upgrader:
    """The change_app_pkg operation of a host's Lcm. `runner` runs a probe
    (mecorch.mepm.health's by default), `connect` tells whether a TCP port
    answers: both replaceable by tests with fake backends."""

    def __init__(self, lcm, runner=None, connect=None):
        self.lcm = lcm
        self.runner = runner or health.run_probe(lcm.inventory)
        self.connect = connect or _tcp_open

    # ------------------------------------------------------------ start
    def start(self, iid: str, body) -> dict:
        pkg_id, ready_s = parse(body)
        lcm = self.lcm
        with lcm._exclusive(iid):
            inst = lcm.get(iid)
            if inst["instantiationState"] != InstantiationState.INSTANTIATED.value:
                raise Conflict(f"app instance {iid} is NOT_INSTANTIATED")
            if (inst.get("instantiatedAppState") or {}).get("operationalState") == "STOPPED":
                raise Conflict(f"app instance {iid} is STOPPED: an upgrade replaces a serving "
                               "runtime (operate it STARTED first)")
            if inst.get("appPkgId") == pkg_id:
                raise Conflict(f"app instance {iid} already runs app package {pkg_id}")
            pkg = lcm.packages.usable(inst["appDId"], pkg_id)
            manner = DeploymentType(inst["deploymentType"])
            if manner.value not in (pkg.get("_manners") or [pkg.get("_manner")]):
                raise Conflict(f"app package {pkg_id} holds no {manner.value} deployment of "
                               f"the app: instance {iid} runs as {manner.value}")
            kept = inst.get("_request")
            if kept is None:
                raise Conflict(f"app instance {iid} was instantiated by a mecorch that did not "
                               "keep its request: it cannot be upgraded in place (terminate "
                               "and instantiate it again)")
            generation = inst.get("_generation", 0) + 1
            rid = runtimes.runtime_id(iid, generation)
            if len(rid) > runtimes.MAX_ID:
                raise Conflict(f"app instance id {iid} is too long for an upgrade: its new "
                               f"runtime id {rid!r} would exceed {runtimes.MAX_ID} characters")
            # the same request, the manner fixed to the instance's own
            request_body = {k: v for k, v in kept.items() if k not in TYPE_FIELDS}
            request_body["deploymentType"] = manner.value
            p = plan_request(rid, pkg, request_body, None, lcm.restart_default)
            self._check(inst, p)
            host = lcm.inventory.get(inst["hostId"])
            rules = lcm.store.get("rules", iid) or {}
            # the DNS names are kept through the upgrade: the new version's
            # package must let the instance hold them too (400 naming one)
            lcm.mep.claims.check_names(host, iid, [DnsRule.from_etsi(r) for r in
                                                   rules.get("dnsRules") or []], pkg)
            token, digest = lcm.mep.new_app_token()
            op = lcm.journal.start(iid, LcmOperation.CHANGE_APP_PKG, {
                "hostId": host.id, "manner": manner.value,
                "fromPkgId": inst["appPkgId"], "toPkgId": pkg_id,
                "runtime": rid, "generation": generation, "readyTimeoutS": ready_s,
                "oldRuntime": runtimes.current(inst), "oldHandle": inst.get("_handle"),
                "oldIp": rules.get("targetIp"),
                "port": p.request.ports[0].port if p.request.ports else _rule_port(rules),
                "need": dataclasses.asdict(p.need), "probes": p.probes.to_doc(),
                "restart": p.restart.to_doc()})
            # the new runtime's Mp1 credential is accepted from now on (it
            # may register while it starts); the old one's until the switch
            inst["_mp1TokenNext"] = digest
            inst["_upgradeTo"] = pkg_id     # the target package is in use meanwhile
            lcm.store.put("instances", iid, inst)
            lcm.packages.refresh_usage(inst["appDId"])
            lcm._busy.add(iid)
            lcm._live.add(op["id"])
        request = dataclasses.replace(p.request, env={
            **p.request.env, **lcm.mep.app_env(iid, token, host, manner)})
        lcm._pool.submit(lcm._guarded, iid, self.run, op, request, host)
        return public(op)

    @staticmethod
    def _check(inst: dict, p) -> None:
        """What a runtime beside the old one cannot do (409, nothing made)."""
        iid = inst["id"]
        if p.request.volumes or (inst.get("allocatedResources") or {}).get("storage"):
            raise Conflict(f"app instance {iid} has volumes: a rolling upgrade would run the "
                           "old and the new version on the same data at once; terminate and "
                           "instantiate it with the new package instead")
        if any(port.host_port for port in p.request.ports):
            raise Conflict(f"app instance {iid} publishes ports on its host: the old and the "
                           "new version cannot both bind them")

    # ------------------------------------------------------------ the op
    def run(self, op: dict, request, host) -> None:
        lcm, journal = self.lcm, self.lcm.journal
        iid = op["appInstanceId"]
        plan = op["_plan"]
        alloc = None
        try:
            compute = host.compute(DeploymentType(plan["manner"]))
            journal.step(op, "begin:deploy")
            alloc = compute.deploy(request)
            ip = alloc.addresses[0].ip if alloc.addresses else None
            journal.step(op, "deploy", handle=alloc.handle, ip=ip)
            detail = self._wait_ready(plan, compute, alloc.handle, ip, request, host)
            journal.step(op, "ready", detail=detail[:300])
            journal.step(op, "begin:switch")
            lcm.mep.apply(host, iid, ip)
            inst = self._switched(op, alloc, ip, host)
        except Exception as e:   # noqa: BLE001 - every failure rolls back
            err = e if isinstance(e, MecorchError) else undo.internal(e)
            log.warning("change_app_pkg of %s failed: %s; rolling back", iid, err.detail)
            self._roll_back(op, host, alloc.handle if alloc else None)
            lcm._free(iid)
            journal.finish(op, type(err)(f"{err.detail}; rolled back: the old version "
                                         "still serves"))
            return
        self._retire(op, host)
        journal.events.instance(inst)                    # notifications
        lcm.packages.refresh_usage(inst["appDId"], ending=op["id"])
        lcm._free(iid)
        journal.finish(op)
        logs.event("instance.upgraded", instance=iid, package=plan["toPkgId"],
                   was=plan["fromPkgId"], runtime=plan["runtime"])

    def _wait_ready(self, plan: dict, compute, handle: dict, ip: str | None, request,
                    host) -> str:
        """Until the new runtime is ready, within readyTimeoutS; Conflict
        with the last reason when it is not (or when it stopped)."""
        deadline = time.monotonic() + plan["readyTimeoutS"]
        probe = Probes.from_doc(plan["probes"]).readiness
        port = plan.get("port")
        # what the runner reads of an instance (exec goes through its driver)
        target = {"hostId": host.id, "deploymentType": plan["manner"], "_handle": handle}
        if probe is not None:
            time.sleep(min(probe.initial_delay_s, max(0.0, deadline - time.monotonic())))
        passes, detail = 0, "not checked yet"
        while True:
            obs = compute.inspect(handle)
            if obs.state.value in ("STOPPED", "MISSING"):
                raise Conflict(f"the new version's runtime is {obs.state.value} before it got "
                               f"ready{': ' + obs.detail if obs.detail else ''}")
            if probe is not None:
                ok, detail = (self.runner(probe, ip, target) if ip or probe.action == "exec"
                              else (False, "the new runtime has no address to probe"))
                ok = ok and obs.state.value == "RUNNING"
                need = probe.success_threshold
            else:
                ok = obs.state.value == "RUNNING" and (
                    port is None or bool(ip) and self.connect(ip, port))
                detail = (f"{obs.state.value}" + (f", tcp {ip}:{port} "
                          f"{'answers' if ok else 'does not answer'}" if port else ""))
                need = 1
            passes = passes + 1 if ok else 0
            if passes >= need:
                return f"ready: {detail}"
            left = deadline - time.monotonic()
            if left <= 0:
                raise Conflict(f"the new version did not get ready within "
                               f"{plan['readyTimeoutS']} s (last: {detail})")
            time.sleep(min(left, MAX_POLL_S if probe is None
                           else min(probe.period_s, MAX_POLL_S)))

    def _switched(self, op: dict, alloc, ip: str | None, host) -> dict:
        """The record follows the new runtime (the rules already do)."""
        from mecorch.mepm.lcm import _allocation_view, new_restart, observed_now
        lcm = self.lcm
        plan = op["_plan"]
        iid = op["appInstanceId"]
        pkg = lcm.store.get("packages", plan["toPkgId"]) or {}
        appd = pkg.get("_appd") or {}
        inst = lcm.get(iid)
        if not _in_service(lcm, iid):
            # out of service for the old runtime (its readiness check failed,
            # or it was down): the new one runs and was found ready, so
            # neither holds. "fenced" (the host lost its MEO) is not the
            # upgrade's to lift.
            lcm.mep.restore(host, iid, "readiness")
            lcm.mep.follow_runtime(host, iid, "RUNNING")
        inst.update({
            "appPkgId": plan["toPkgId"],
            "appSoftVersion": appd.get("appSoftVersion", inst.get("appSoftVersion")),
            "appDVersion": appd.get("appDVersion", inst.get("appDVersion")),
            "allocatedResources": {**_allocation_view(alloc, host.id),
                                   **lcm._service_view(iid)},
            "_handle": alloc.handle, "_runtime": plan["runtime"],
            "_generation": plan["generation"], "_need": plan["need"],
            "_mp1Token": inst.get("_mp1TokenNext") or inst.get("_mp1Token"),
            # the health checker starts afresh with the new runtime (its key)
            "_opId": op["id"],
            "_restart": new_restart(plan["restart"],
                                    (inst.get("_restart") or {}).get("total", 0)),
            "_observed": observed_now("RUNNING", "started by change_app_pkg"),
        })
        if plan["probes"]:
            inst["_probes"] = plan["probes"]
        else:
            inst.pop("_probes", None)
        if plan["probes"].get("readiness"):
            inst["_health"] = {"ready": True, "live": None, "at": timestamp(),
                               "detail": "readiness: passed before the switch"}
        else:
            inst.pop("_health", None)
        for k in ("_mp1TokenNext", "_upgradeTo"):
            inst.pop(k, None)
        lcm.store.put("instances", iid, inst)
        # after the record: recovery reads `_runtime` to tell forward from back
        lcm.journal.step(op, "switched")
        return inst

    def _retire(self, op: dict, host) -> None:
        """Stop the old runtime gracefully, then destroy it. A failure here
        does not undo the upgrade: what is left is an orphan reconciliation
        removes."""
        plan = op["_plan"]
        self.lcm.journal.step(op, "begin:retire")
        try:
            compute = host.compute(DeploymentType(plan["manner"]))
            if plan.get("oldHandle"):
                try:
                    # its established connections finish meanwhile
                    compute.stop(plan["oldHandle"], self.lcm.default_graceful_s)
                except MecorchError as e:      # already gone or stopped: destroy says
                    log.info("stopping the old runtime of %s: %s", op["appInstanceId"],
                             e.detail)
            undo.destroy(compute, plan["oldRuntime"], plan.get("oldHandle"))
            self.lcm.journal.step(op, "retired")
        except MecorchError as e:
            log.warning("the old runtime of %s was not removed: %s (reconciliation removes "
                        "it as an orphan)", op["appInstanceId"], e.detail)
            self.lcm.journal.step(op, "retire-failed", detail=e.detail[:300])

    def _roll_back(self, op: dict, host, handle: dict | None) -> None:
        """The old runtime serves again (its rules, if the switch began) and
        the new one is gone; the record as before the op."""
        lcm, journal = self.lcm, self.lcm.journal
        plan = op["_plan"]
        iid = op["appInstanceId"]
        if journal.done(op, "begin:switch") and plan.get("oldIp"):
            undo.best_effort(f"rules of {iid} back to {plan['oldIp']}", lcm.mep.apply, host, iid,
                         plan["oldIp"])
        if journal.done(op, "begin:deploy"):
            handle = handle or (journal.data(op, "deploy") or {}).get("handle")
            undo.best_effort(f"remove the new runtime {plan['runtime']}", lambda: undo.destroy(
                host.compute(DeploymentType(plan["manner"])), plan["runtime"], handle))
        inst = lcm.store.get("instances", iid)
        if inst is not None:
            for k in ("_mp1TokenNext", "_upgradeTo"):
                inst.pop(k, None)
            lcm.store.put("instances", iid, inst)
            # the target version is no longer in use by this instance
            lcm.packages.refresh_usage(inst["appDId"], ending=op["id"])
        journal.step(op, "rolled-back")

    # ------------------------------------------------------------ recovery
    def recover(self, op: dict) -> str:
        """An upgrade a crash interrupted: forward when the record names the
        new runtime already (only the old one's removal was left), else
        back (the old one never stopped serving before the switch)."""
        iid = op["appInstanceId"]
        plan = op["_plan"]
        host = self.lcm.inventory.get(plan["hostId"])
        inst = self.lcm.store.get("instances", iid)
        if inst is not None and inst.get("_runtime") == plan["runtime"]:
            self._retire(op, host)
            self.lcm.journal.finish(op)
            return f"finished change of package of {iid} to {plan['toPkgId']}"
        self._roll_back(op, host, None)
        self.lcm.journal.finish(op, Conflict("interrupted by a restart of mecorch; rolled "
                                             "back: the old version still serves"))
        return f"rolled back change of package of {iid} to {plan['toPkgId']}"


def _rule_port(rules: dict) -> int | None:
    """The first destination port the instance's traffic rules steer (the
    port clients reach it on: the MEP's DNAT keeps it), for an app that
    declares no port of its own."""
    for rule in rules.get("trafficRules") or []:
        for flt in rule.get("trafficFilter") or []:
            for port in flt.get("dstPort") or []:
                first = str(port).split("-")[0]
                if first.isdigit():
                    return int(first)
    return None


def _in_service(lcm, iid: str) -> bool:
    from mecorch.mepm.platform_rules import in_service
    return in_service(lcm.store.get("rules", iid))
