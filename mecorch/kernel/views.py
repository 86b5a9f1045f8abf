"""What the API shows of a stored document (its view), one function per
resource, and the sets of them a store keeps beside its documents
(store.Views): an edge host's store (the MEPM's) and the MEO's.

A view is a pure function of the document: the store builds it when the
document is written, and a page of a listing is sent as stored. Bump
VERSION when what a function returns changes, so stores rebuild theirs.
"""

from __future__ import annotations

from mecorch.kernel.states import InstantiationState, OnboardingState, OperationalState, UsageState
from mecorch.kernel.store import Views
from mecorch.kernel.timeutil import public

VERSION = 3


def package_view(doc: dict) -> dict:
    """AppPkgInfo."""
    out = public(doc)
    out["deletionPending"] = bool(doc.get("_deletionPending"))   # mecorch extension
    if doc["onboardingState"] != OnboardingState.ONBOARDED.value:
        # what only the content tells is not known yet: the fields the
        # ETSI schema requires anyway are empty until it is onboarded
        for key in ("appDId", "appName", "appSoftwareVersion", "appDVersion"):
            out.setdefault(key, "")
        out.setdefault("softwareImages", [])
        out.setdefault("operationalState", OperationalState.DISABLED.value)
        out.setdefault("usageState", UsageState.NOT_IN_USE.value)
    return out


def host_instance_view(doc: dict) -> dict:
    """AppInstanceInfo on the edge host that runs it."""
    out = public(doc)
    observed = doc.get("_observed")
    if observed and doc["instantiationState"] == InstantiationState.INSTANTIATED.value:
        # mecorch extension: what reconciliation last saw of the runtime
        out["observedState"] = observed["state"]
        out["observedStateDetail"] = observed.get("detail", "")
        out["observedStateTime"] = observed.get("at")
    if doc.get("_probes") and doc["instantiationState"] == InstantiationState.INSTANTIATED.value:
        out["health"] = health_view(doc)
    rs = doc.get("_restart")
    if rs and doc["instantiationState"] == InstantiationState.INSTANTIATED.value:
        # mecorch extensions: the restart policy at work (mepm/supervisor.py)
        out["restartPolicy"] = rs.get("policy")
        out["restartCount"] = rs.get("total", 0)
        if rs.get("lastExitAt"):
            out["lastExitCode"] = rs.get("lastExitCode")
            out["lastExitTime"] = rs["lastExitAt"]
        if rs.get("nextAt"):
            out["nextRestartTime"] = rs["nextAt"]
    if doc.get("_lostAfter") is not None:
        # mecorch extensions: the MEO's opt-in, and this host's fence of the
        # app after that long without its MEO (mecorch.mepm.fence)
        out["lostAfter"] = doc["_lostAfter"]
    if doc.get("_fenced"):
        out["fenced"] = {"time": doc["_fenced"].get("at"),
                         "reason": doc["_fenced"].get("reason", "")}
    return out


def health_view(doc: dict) -> dict:
    """mecorch extension `health`: what the instance's health checks
    (mecorch.mepm.health) last decided; ready false from instantiation
    until a readiness check passes; null: no check of that kind decided."""
    h = doc.get("_health") or {}
    kinds = [k for k in ("startup", "liveness", "readiness") if k in doc["_probes"]]
    return {"ready": h.get("ready"), "live": h.get("live"), "checks": kinds,
            "detail": h.get("detail") or "not checked yet", "time": h.get("at")}


def system_instance_view(doc: dict) -> dict:
    """AppInstanceInfo at the MEO: what it copied from the host, as it is."""
    return public(doc)


MEPM = Views(VERSION, {"packages": package_view, "instances": host_instance_view})
MEO = Views(VERSION, {"packages": package_view, "instances": system_instance_view})
