"""The deployment decision and the one resource model (design.md, Deploy 1).

mecorch extends the ETSI MEC 010-2 requests with a deployment type
identifier, normalised here in one place (`deployment_type`):

- its names: `deploymentType`, or `deployMethod` (an alias: the deploy
  method); both may be given, and then must agree;
- its values: the words `VM` and `CONTAINER` in any case, or the bits `0`
  (VM) and `1` (CONTAINER) as a JSON number or a string;
- where it goes: InstantiateAppRequest (the manner to deploy by),
  CreateAppPkg (the manner the app is onboarded for: recorded, and checked
  against the package's images), TerminateAppRequest and the package DELETE
  (`?deploymentType=`: checked against what was recorded), and inside
  `orchestrationInfo` as its orchestration type (`ORCHESTRATION_TYPE_*`).

`decide_manner` picks VM or CONTAINER for an instantiation from every
signal; when the app is dual-format (its package holds a container image
AND a VM image) and nothing names a manner, `choose_manner` picks it by an
explained policy over host facts handed in (`HostFacts`). `resource_request`
reduces the AppD, the request's ETSI descriptors and orchestrationInfo to
one ResourceRequest. All of it is pure: no backend call; it raises
InvalidInput (HTTP 400) or CapacityExceeded (409) before anything exists.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

from mecorch.kernel import validate
from mecorch.kernel.errors import CapacityExceeded, InvalidInput
from mecorch.driverapi.model import ResourceRequest, VolumeSpec
from mecorch.spec.orchestration_info import (
    MAX_VOLUMES, RETAIN_ANNOTATION, Parsed, check_disk_gb, check_memory_mb, check_vcpu,
    check_volume_gb, details, orchestration_kind, parse)
from mecorch.kernel.states import DeploymentType
from mecorch.spec import capacity
from mecorch.kernel.yamlsafe import load_yaml

__all__ = ["Decision", "HostFacts", "ACCEPTED_FORMS", "appd_for_manner", "accel_required",
           "can_run", "choose_manner", "room_for", "decide_manner", "deployment_type", "image_manners",
           "named_type", "orchestration_kind", "preference_for", "read_orchestration_info",
           "resource_request"]

VM, CONTAINER = DeploymentType.VM, DeploymentType.CONTAINER
# The order signals are weighed in; "onboarding" is the app's recorded manner.
SIGNALS = ("deploymentType", "deployMethod", "orchestrationType", "orchestrationInfo",
           "onboarding")
TYPE_FIELDS = ("deploymentType", "deployMethod")        # the name and its alias
ACCEPTED_FORMS = ('"VM" or "CONTAINER" (any case), or 0 (VM) or 1 (CONTAINER) '
                  'as a number or a string')
_FORMS = {"VM": VM, "CONTAINER": CONTAINER, "0": VM, "1": CONTAINER}
# Where the orchestration type keyword goes inside orchestrationInfo:
# TOSCA: the service template's own `metadata` map (TOSCA 1.3 3.10), key
# ORCHESTRATION_TYPE_TOSCA; Kubernetes: an annotation of the manifest's
# metadata (annotations are Kubernetes' place for tool-specific data).
ORCHESTRATION_TYPE_TOSCA = "orchestrationType"
ORCHESTRATION_TYPE_ANNOTATION = "mecorch/orchestration-type"
# The AppD asks for hardware acceleration (a VM on KVM, not TCG) with an
# NFV-IFA 011 RequestedAdditionalCapabilityData in its compute descriptor's
# requestAdditionalCapabilities: this name, supportMandatory true.
ACCEL_CAPABILITY = "hardwareAcceleration"
# With both manners possible and no preference configured: a container is
# the smaller footprint and the faster start.
DEFAULT_PREFERENCE = CONTAINER


@dataclass(frozen=True)
class Decision:
    """The manner, which signal decided it, every signal present, and the
    reason in words (recorded as the instance's decisionReason)."""
    manner: DeploymentType
    source: str                         # one of SIGNALS, or "policy"
    signals: dict[str, DeploymentType] = field(default_factory=dict)
    reason: str = field(default="", compare=False)


def _shown(value) -> str:
    r = repr(value)
    return r if len(r) <= 40 else r[:37] + "..."


def deployment_type(value, where: str = "deploymentType") -> DeploymentType:
    """A deployment type identifier in any of its forms: "VM"/"CONTAINER" in
    any case, 0/1 (0 = VM, 1 = CONTAINER) as a number or a string. Anything
    else is an InvalidInput naming `where` and listing the accepted forms
    (true/false are not bits here: JSON booleans are a different type)."""
    if isinstance(value, DeploymentType):
        return value
    key = None
    if isinstance(value, int) and not isinstance(value, bool):
        key = str(value)
    elif isinstance(value, str) and len(value) <= 16:
        key = value.upper()
    if key in _FORMS:
        return _FORMS[key]
    raise InvalidInput(f"{where}: {_shown(value)} is not a deployment type; "
                       f"accepted: {ACCEPTED_FORMS}")


def named_type(body: dict, what: str) -> tuple[DeploymentType | None, str | None]:
    """(manner, field) named by `deploymentType` and/or its alias
    `deployMethod` in a request body (None, None if neither); both given
    and disagreeing is an InvalidInput naming both. A JSON null is absent."""
    found = {f: deployment_type(body[f], f) for f in TYPE_FIELDS if body.get(f) is not None}
    if len(set(found.values())) > 1:
        raise InvalidInput(f"contradicting deployment signals in {what}: " + " but ".join(
            f"{f} says {m.value}" for f, m in found.items()))
    for f, m in found.items():
        return m, f
    return None, None


def _orchestration_type(parsed: Parsed) -> DeploymentType | None:
    """The orchestration type keyword inside orchestrationInfo, if any."""
    meta = parsed.doc.get("metadata")
    if parsed.kind == "TOSCA":
        where, value = (f"orchestrationInfo.metadata.{ORCHESTRATION_TYPE_TOSCA}",
                        meta.get(ORCHESTRATION_TYPE_TOSCA) if isinstance(meta, dict) else None)
    else:
        notes = meta.get("annotations") if isinstance(meta, dict) else None
        where = f"orchestrationInfo.metadata.annotations[{ORCHESTRATION_TYPE_ANNOTATION}]"
        value = notes.get(ORCHESTRATION_TYPE_ANNOTATION) if isinstance(notes, dict) else None
    return None if value is None else deployment_type(value, where)


def _orchestration_manner(parsed: Parsed) -> tuple[DeploymentType, DeploymentType | None]:
    """(the manner orchestrationInfo describes, its keyword if any).

    TOSCA is a language for either manner: its orchestration type keyword
    says which, and without one a TOSCA template means a VM. A Kubernetes
    Pod/Deployment only ever describes a container: a keyword saying VM
    there contradicts the document (InvalidInput naming both)."""
    keyword = _orchestration_type(parsed)
    if keyword is None:
        return parsed.manner, None
    if parsed.kind != "TOSCA" and keyword != parsed.manner:
        raise InvalidInput(f"contradicting deployment signals: orchestrationInfo is "
                           f"{parsed.label} ({parsed.manner.value}) but its orchestration "
                           f"type ({ORCHESTRATION_TYPE_ANNOTATION}) says {keyword.value}")
    return keyword, keyword


def _manners(recorded) -> tuple[DeploymentType, ...]:
    """The app's recorded manner(s): one, a list (dual-format), or None."""
    if recorded is None:
        return ()
    items = [recorded] if isinstance(recorded, (str, DeploymentType)) else list(recorded)
    out: list[DeploymentType] = []
    for m in items:
        m = deployment_type(m, "recorded manner")
        if m not in out:
            out.append(m)
    return tuple(out)


def _images_phrase(manners: Sequence[DeploymentType]) -> str:
    if len(manners) > 1:
        return "its package holds a container image and a VM image"
    return "its package holds " + ("a VM image" if manners[0] is VM else "a container image")


def _phrase(signal: str, manner: DeploymentType, label: str = "",
            onboarded: Sequence[DeploymentType] = ()) -> str:
    if signal in TYPE_FIELDS:
        return f"{signal} says {manner.value}"
    if signal == "orchestrationType":
        return f"orchestrationInfo's orchestration type says {manner.value}"
    if signal == "orchestrationInfo":
        return f"orchestrationInfo is {label} ({manner.value})"
    return f"the app was onboarded as {manner.value} ({_images_phrase(onboarded or [manner])})"


Chooser = Callable[[tuple[DeploymentType, ...]], tuple[DeploymentType, str]]


# `parsed` left out: the function parses orchestrationInfo itself. The
# planned request (spec/plan.py) parses it once and hands it in.
_UNREAD = object()


def read_orchestration_info(request: dict) -> Parsed | None:
    """The request's orchestrationInfo parsed and recognised, None if it has
    none: the one parse of a request (spec/plan.py calls it once)."""
    info = request.get("orchestrationInfo") if isinstance(request, dict) else None
    return None if info is None else parse(info)


def decide_manner(request: dict, recorded, choose: Chooser | None = None,
                  parsed=_UNREAD) -> Decision:
    """Decide VM or CONTAINER for an InstantiateAppRequest.

    Order: an explicit `deploymentType` (or its alias `deployMethod`); else
    orchestrationInfo: its orchestration type keyword, else its kind (TOSCA
    -> VM, Kubernetes Pod/Deployment -> CONTAINER, by content); else
    `recorded`, the manner(s) recorded for the appDId at onboarding.

    Every present signal must agree. A single recorded manner counts as a
    signal: the package holds only that image, so a request for the other
    manner could not be deployed at all. A dual-format app (recorded: both
    manners) accepts either; when the request names none, `choose(manners)
    -> (manner, reason)` decides (the host-and-policy choice, see
    `choose_manner`); without `choose` that is an InvalidInput.

    Any disagreement is an InvalidInput (400) naming the signals and their
    values. An invalid identifier, an unrecognised orchestrationInfo, or no
    signal at all are InvalidInput too. A JSON null counts as absent.
    `parsed`: the request's orchestrationInfo as `read_orchestration_info`
    gave it (not given: read here).
    """
    if not isinstance(request, dict):
        raise InvalidInput("InstantiateAppRequest: must be a JSON object")
    if parsed is _UNREAD:
        parsed = read_orchestration_info(request)
    signals: dict[str, DeploymentType] = {}
    phrases: dict[str, str] = {}
    for f in TYPE_FIELDS:
        if request.get(f) is not None:
            signals[f] = deployment_type(request[f], f)
            phrases[f] = _phrase(f, signals[f])
    if parsed is not None:
        kind_manner, keyword = _orchestration_manner(parsed)
        if keyword is not None:
            signals["orchestrationType"] = keyword
            phrases["orchestrationType"] = _phrase("orchestrationType", keyword)
        else:
            signals["orchestrationInfo"] = kind_manner
            phrases["orchestrationInfo"] = _phrase("orchestrationInfo", kind_manner,
                                                   parsed.label)
    onboarded = _manners(recorded)
    if len(onboarded) == 1:
        signals["onboarding"] = onboarded[0]
        phrases["onboarding"] = _phrase("onboarding", onboarded[0])
    if not signals:
        if len(onboarded) > 1:
            if choose is None:
                raise InvalidInput("the app is dual-format (a container image and a VM "
                                   "image): give deploymentType (VM or CONTAINER)")
            manner, reason = choose(onboarded)
            return Decision(manner, "policy", {}, reason)
        raise InvalidInput("no deployment signal: give deploymentType (VM or CONTAINER) "
                           "or orchestrationInfo; no manner was recorded for the app")
    source = next(s for s in SIGNALS if s in signals)
    manner = signals[source]
    if any(m != manner for m in signals.values()):
        agree = [phrases[s] for s in SIGNALS if signals.get(s) == manner]
        differ = [phrases[s] for s in SIGNALS if s in signals and signals[s] != manner]
        raise InvalidInput("contradicting deployment signals: " + " and ".join(agree)
                           + " but " + " and ".join(differ))
    if len(onboarded) > 1:
        reason = phrases[source] + " (the app is dual-format: " + _images_phrase(onboarded) + ")"
    else:
        reason = phrases[source]
    return Decision(manner, source, signals, reason)


# -- dual-format AppDs ------------------------------------------------------------

def image_manner(sw: dict) -> DeploymentType:
    """The manner of one (validated) swImageDescriptor entry."""
    return CONTAINER if str(sw.get("containerFormat", "")).upper() == "DOCKER" else VM


def image_manners(appd: dict) -> tuple[DeploymentType, ...]:
    """The manners the AppD's software images provide, in AppD order."""
    sw = appd.get("swImageDescriptor")
    entries = sw if isinstance(sw, list) else [sw]
    return tuple(dict.fromkeys(image_manner(e) for e in entries if isinstance(e, dict)))


# Keys a swImageDescriptor entry of a dual-format AppD may carry besides the
# NFV SwImageDesc: that image's own compute and storage needs.
IMAGE_NEEDS = ("virtualComputeDescriptor", "virtualStorageDescriptor")


def appd_for_manner(appd: dict, manner: DeploymentType | str) -> dict:
    """The AppD as one manner sees it. A dual-format AppD has a list of
    swImageDescriptor entries, one per manner, each of which may carry its
    own virtualComputeDescriptor / virtualStorageDescriptor (a mecorch
    extension) replacing the AppD's top-level ones for that manner. A
    single-image AppD is returned as it is."""
    manner = deployment_type(manner, "manner")
    sw = appd.get("swImageDescriptor")
    if not isinstance(sw, list):
        return appd
    for entry in sw:
        if isinstance(entry, dict) and image_manner(entry) is manner:
            out = dict(appd)
            out["swImageDescriptor"] = {k: v for k, v in entry.items() if k not in IMAGE_NEEDS}
            for k in IMAGE_NEEDS:
                if entry.get(k) is not None:
                    out[k] = entry[k]
            return out
    raise InvalidInput(f"the AppD of {appd.get('appDId')!r} has no {manner.value} image")


def accel_required(appd: dict, manner: DeploymentType | str = VM) -> bool:
    """True when the AppD (as `manner` sees it) asks for hardware
    acceleration: a requestAdditionalCapabilities item named
    ACCEL_CAPABILITY with supportMandatory true."""
    vcd = appd_for_manner(appd, manner).get("virtualComputeDescriptor")
    caps = vcd.get("requestAdditionalCapabilities") if isinstance(vcd, dict) else None
    return isinstance(caps, list) and any(
        isinstance(c, dict) and c.get("requestedAdditionalCapabilityName") == ACCEL_CAPABILITY
        and c.get("supportMandatory") is True for c in caps)


# -- the host-and-policy choice ---------------------------------------------------

@dataclass(frozen=True)
class HostFacts:
    """What the policy needs to know of one edge host, gathered by the
    caller (the policy makes no backend call). free_*: what is left after
    everything already promised on the host; its cores, memory and disk
    are shared by its containers and VMs alike. vm_accel: "kvm", "tcg",
    or "" when not probed yet."""
    host_id: str
    can_container: bool
    can_vm: bool
    vm_accel: str = ""
    free_vcpu: float = 0.0
    free_memory_mb: float = 0.0
    free_disk_gb: float = 0.0


def can_run(h: HostFacts, manner: DeploymentType, accel: bool = False) -> str | None:
    """None if the host can take an instance of `manner`, else why not."""
    if manner is CONTAINER:
        return None if h.can_container else "no CIM (container engine)"
    if not h.can_vm:
        return "no VIM"
    return capacity.accel_refusal(h.vm_accel) if accel else None


def room_for(h: HostFacts, need) -> str | None:
    """None if `need` (vcpu, memory_mb, disk_gb) fits the host's free room."""
    if need is None:
        return None
    return capacity.shortfall(need, h.free_vcpu, h.free_memory_mb, h.free_disk_gb)


def preference_for(orchestrator_cfg: dict, app_d_id: str) -> tuple[DeploymentType | None, str]:
    """The configured preference for an app and where it comes from:
    orchestrator.prefer_by_app[appDId], else orchestrator.prefer, else none.
    Values: container | vm (any form deployment_type accepts)."""
    by_app = orchestrator_cfg.get("prefer_by_app") or {}
    if not isinstance(by_app, dict):
        raise InvalidInput("config orchestrator.prefer_by_app: must be a mapping "
                           "of appDId to container or vm")
    if by_app.get(app_d_id) is not None:
        return (deployment_type(by_app[app_d_id], f"orchestrator.prefer_by_app.{app_d_id}"),
                f"orchestrator.prefer_by_app[{app_d_id}]")
    if orchestrator_cfg.get("prefer") is not None:
        return deployment_type(orchestrator_cfg["prefer"], "orchestrator.prefer"), \
            "orchestrator.prefer"
    return None, ""


def choose_manner(manners_available: Iterable, host_facts: Sequence[HostFacts],
                  preference=None, needs: dict | None = None, accel: bool = False,
                  preference_from: str = "the configured preference"
                  ) -> tuple[DeploymentType, str]:
    """Choose the manner of a dual-format app whose request names none.

    1. A manner is possible on a host that can run it (`can_run`: a host
       without a VIM, or whose VIM is TCG-only when the AppD asks for
       hardware acceleration (`accel`), cannot take a VM) and has room for
       that manner's needs (`needs[manner]`: vcpu, memory_mb, disk_gb; a
       manner without needs only has to be runnable).
    2. If one manner is possible, it is chosen; if none, CapacityExceeded
       when some host could run a manner but lacks room, else InvalidInput.
    3. If both are, the preference decides (`preference`: container | vm,
       from `preference_from`); with none, CONTAINER (DEFAULT_PREFERENCE).

    Returns (manner, reason): the reason says which hosts could take which
    manner and why the others could not, and what decided.
    """
    available = _manners(list(manners_available))
    if not available:
        raise InvalidInput("the app has no software image to deploy")
    if len(available) == 1:
        return available[0], f"the app has only a {available[0].value} image"
    pref = None if preference is None else deployment_type(preference, "prefer")
    needs = needs or {}
    fits: dict[DeploymentType, list[str]] = {}
    why_not: dict[DeploymentType, list[str]] = {}
    runnable: set[DeploymentType] = set()
    for m in available:
        fits[m], why_not[m] = [], []
        for h in host_facts:
            why = can_run(h, m, accel and m is VM)
            if why is None:
                runnable.add(m)
                why = room_for(h, needs.get(m))
            (why_not[m] if why else fits[m]).append(f"{h.host_id}: {why}" if why else h.host_id)
    possible = [m for m in available if fits[m]]

    def no(m: DeploymentType) -> str:
        return f"no host can take {m.value} (" + ("; ".join(why_not[m]) or "no hosts") + ")"

    if not possible:
        detail = "no edge host can take the app in either manner: " + "; ".join(
            no(m) for m in available)
        raise (CapacityExceeded if runnable else InvalidInput)(detail)
    if len(possible) == 1:
        m = possible[0]
        others = [no(o) for o in available if o is not m]
        return m, f"{m.value}: only that manner fits ({m.value} on {', '.join(fits[m])}; " \
                  + "; ".join(others) + ")"
    both = "; ".join(f"{m.value} on {', '.join(fits[m])}" for m in available) + "".join(
        f"; {m.value} not on " + ", ".join(why_not[m]) for m in available if why_not[m])
    if pref is not None:
        return pref, f"{pref.value}: both manners fit ({both}); {preference_from} " \
                     f"prefers {pref.value.lower()}"
    return DEFAULT_PREFERENCE, (f"{DEFAULT_PREFERENCE.value}: both manners fit ({both}); "
                                "no preference configured, so the smaller footprint")


# -- the resource model ---------------------------------------------------------

def _nfv(value, where: str, required: bool = False) -> dict:
    """An NFV descriptor. The ETSI OpenAPI types them as "Ref NFV" strings,
    so a YAML/JSON text of the mapping is accepted as well as the mapping."""
    if value is None and not required:
        return {}
    if isinstance(value, str):
        value = load_yaml(value, what=where)
    if not isinstance(value, dict):
        raise InvalidInput(f"{where}: must be a mapping")
    return value


def _sub(d: dict, key: str, where: str) -> dict:
    v = d.get(key)
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise InvalidInput(f"{where}.{key}: must be a mapping")
    return v


class _Builder:
    """Accumulates the layers, remembering where each value came from so
    that a refusal can say so."""

    def __init__(self):
        self.vcpu, self.memory_mb, self.disk_gb = 1.0, 128, 1.0
        self.origin = {"vcpu": "the default", "memory_mb": "the default",
                       "disk_gb": "the default"}
        self.volumes: dict[str, VolumeSpec] = {}

    def set(self, name: str, value, where: str) -> None:
        if value is not None:
            setattr(self, name, value)
            self.origin[name] = where

    def compute(self, desc, where: str) -> None:
        """ETSI/NFV virtualComputeDescriptor: numVirtualCpu, virtualMemSize (MB)."""
        d = _nfv(desc, where)
        cpu = _sub(d, "virtualCpu", where).get("numVirtualCpu")
        mem = _sub(d, "virtualMemory", where).get("virtualMemSize")
        if cpu is not None:
            w = f"{where}.virtualCpu.numVirtualCpu"
            self.set("vcpu", check_vcpu(cpu, w), w)
        if mem is not None:
            w = f"{where}.virtualMemory.virtualMemSize"
            self.set("memory_mb", check_memory_mb(mem, w), w)

    def storage(self, entries, where: str) -> None:
        """ETSI/NFV virtualStorageDescriptor list, matched to what is
        already there by id: a known id has the fields given replaced, a new
        id is added (and needs its sizeOfStorage). Nothing is removed: the
        app may rely on a volume its AppD declares."""
        if entries is None:
            return
        if not isinstance(entries, list):
            raise InvalidInput(f"{where}: must be a list")
        if len(entries) > MAX_VOLUMES:
            raise InvalidInput(f"{where}: at most {MAX_VOLUMES} volumes")
        seen = set()
        for i, e in enumerate(entries):
            w = f"{where}[{i}]"
            e = _nfv(e, w, required=True)
            vid = validate.ident(e.get("id"), f"{w}.id")
            if vid in seen:
                raise InvalidInput(f"{w}.id: {vid!r} is given twice")
            seen.add(vid)
            kind = e.get("typeOfStorage", "BLOCK")
            if kind not in ("BLOCK", "FILE"):
                raise InvalidInput(f"{w}.typeOfStorage: must be BLOCK or FILE "
                                   "(OBJECT storage is not provided)")
            size = e.get("sizeOfStorage")
            if size is not None:
                size = check_volume_gb(size, f"{w}.sizeOfStorage")
            policy = e.get("deletionPolicy")
            if policy is not None and policy not in ("RETAIN", "DELETE"):
                raise InvalidInput(f"{w}.deletionPolicy: must be RETAIN or DELETE")
            old = self.volumes.get(vid)
            if old is None:
                if size is None:
                    raise InvalidInput(f"{w}.sizeOfStorage: is required for a new volume")
                self.volumes[vid] = VolumeSpec(vid, size, None, policy == "RETAIN")
            else:
                self.volumes[vid] = dataclasses.replace(
                    old, size_gb=old.size_gb if size is None else size,
                    reserved=old.reserved if policy is None else policy == "RETAIN")


def _image_names(image: str, sw: dict) -> set[str]:
    # Every name the verified package gives its one image.
    names = {image} | {sw[k] for k in ("swImage", "name", "id") if isinstance(sw.get(k), str)}
    if isinstance(sw.get("name"), str) and isinstance(sw.get("version"), str):
        names.add(f"{sw['name']}:{sw['version']}")
    return names


def resource_request(instance_id: str, appd: dict, manner: DeploymentType | str,
                     image: str, request: dict, parsed=_UNREAD) -> ResourceRequest:
    """Reduce the AppD, the InstantiateAppRequest and its orchestrationInfo
    to one ResourceRequest. Layers, later wins field by field:

    1. the AppD (of a dual-format AppD, the image of `manner` and its own
       needs: see appd_for_manner): virtualComputeDescriptor (numVirtualCpu, virtualMemSize MB),
       swImageDescriptor.minDisk (GB, the system disk), virtualStorageDescriptor
       (id, typeOfStorage BLOCK|FILE, sizeOfStorage GB, mecorch extension
       deletionPolicy RETAIN|DELETE, default DELETE);
    2. the request's own virtualComputeDescriptor / virtualStorageDescriptor
       (ETSI: they override the AppD's; volumes are matched by id);
    3. orchestrationInfo (see orchestration_info.py), which must be of the
       decided manner.

    The image always comes from the onboarded package (`image`): an image
    named in orchestrationInfo that is not one of the package's names for it
    (the reference it was stored under, or the AppD's swImageDescriptor
    swImage/name/id) is an InvalidInput naming both, because a request must
    not smuggle in an image that onboarding never verified, and silently
    running another image than the one asked for would be as bad.

    The result must respect the image's swImageDescriptor minRam (MB) and
    minDisk (GB); a VM gets a whole number of vCPUs. Kubernetes `command` is
    the image's entrypoint: it goes to `extra["entrypoint"]`, `args` to
    `command` (Docker's Entrypoint/Cmd, as Kubernetes maps them).
    `parsed`: as for `decide_manner`.
    """
    manner = deployment_type(manner, "manner")
    iid = validate.ident(instance_id, "instance_id")
    if not isinstance(appd, dict):
        raise InvalidInput("AppD: must be a mapping")
    if not isinstance(request, dict):
        raise InvalidInput("InstantiateAppRequest: must be a JSON object")
    app_d_id = validate.ident(appd.get("appDId"), "AppD.appDId")
    appd = appd_for_manner(appd, manner)        # a dual-format AppD: this manner's image
    if manner == DeploymentType.CONTAINER:
        image = validate.image_ref(image, "image")
    else:
        try:                                    # a VM image id, or a reference
            image = validate.ident(image, "image")
        except InvalidInput:
            image = validate.image_ref(image, "image")

    b = _Builder()
    # 1. AppD
    b.compute(appd.get("virtualComputeDescriptor"), "AppD.virtualComputeDescriptor")
    sw = _nfv(appd.get("swImageDescriptor"), "AppD.swImageDescriptor")
    min_disk = sw.get("minDisk")
    if min_disk is not None:
        min_disk = check_disk_gb(min_disk, "AppD.swImageDescriptor.minDisk")
        b.set("disk_gb", min_disk, "AppD.swImageDescriptor.minDisk")
    min_ram = sw.get("minRam")
    if min_ram is not None:
        min_ram = validate.number(min_ram, "AppD.swImageDescriptor.minRam", 0, 256 * 1024)
    b.storage(appd.get("virtualStorageDescriptor"), "AppD.virtualStorageDescriptor")
    # 2. the request's ETSI descriptors
    b.compute(request.get("virtualComputeDescriptor"), "virtualComputeDescriptor")
    b.storage(request.get("virtualStorageDescriptor"), "virtualStorageDescriptor")
    # 3. orchestrationInfo
    ports, env, command, extra = (), {}, (), {}
    if parsed is _UNREAD:
        parsed = read_orchestration_info(request)
    if parsed is not None:
        described, _ = _orchestration_manner(parsed)
        if described != manner:
            raise InvalidInput(f"orchestrationInfo is {parsed.label} ({described.value}) "
                               f"but the instance is deployed as {manner.value}")
        d = details(parsed)
        allowed = _image_names(image, sw)
        for where, named in d.images:
            if named not in allowed:
                raise InvalidInput(
                    f"{where} names image {named[:100]!r} but app {app_d_id} was onboarded "
                    f"with image {image!r}; the image always comes from the onboarded package")
        b.set("vcpu", d.vcpu, "orchestrationInfo")
        b.set("memory_mb", d.memory_mb, "orchestrationInfo")
        b.set("disk_gb", d.disk_gb, "orchestrationInfo")
        for v in d.volumes:
            old = b.volumes.get(v.name, VolumeSpec(v.name))
            b.volumes[v.name] = VolumeSpec(
                v.name, old.size_gb if v.size_gb is None else v.size_gb,
                v.mount_path or old.mount_path,
                old.reserved if v.reserved is None else v.reserved)
        unknown = sorted(d.retained - set(b.volumes))
        if unknown:
            raise InvalidInput(f"orchestrationInfo annotation {RETAIN_ANNOTATION} names "
                               f"{', '.join(unknown)}, which is not a volume of the app")
        for name in d.retained:         # the AppD's volumes may be named too
            b.volumes[name] = dataclasses.replace(b.volumes[name], reserved=True)
        ports, env = d.ports, d.env
        command = d.args or ()
        if d.entrypoint is not None:
            extra["entrypoint"] = list(d.entrypoint)

    # Checks on the merged result.
    if len(b.volumes) > MAX_VOLUMES:
        raise InvalidInput(f"volumes: at most {MAX_VOLUMES} (AppD and request together "
                           f"ask for {len(b.volumes)})")
    if min_ram is not None and b.memory_mb < min_ram:
        raise InvalidInput(f"memory: {b.memory_mb} MB (from {b.origin['memory_mb']}) is below "
                           f"the image's minRam of {min_ram:g} MB")
    if min_disk is not None and b.disk_gb < min_disk:
        raise InvalidInput(f"disk: {b.disk_gb:g} GB (from {b.origin['disk_gb']}) is below "
                           f"the image's minDisk of {min_disk:g} GB")
    if manner == DeploymentType.VM and b.vcpu != int(b.vcpu):
        raise InvalidInput(f"vcpu: a VM needs a whole number of vCPUs, {b.vcpu:g} "
                           f"comes from {b.origin['vcpu']}")
    return ResourceRequest(instance_id=iid, app_d_id=app_d_id, manner=manner, image=image,
                           vcpu=b.vcpu, memory_mb=b.memory_mb, disk_gb=b.disk_gb,
                           volumes=tuple(b.volumes.values()), ports=tuple(ports),
                           env=dict(env), command=tuple(command), extra=extra)

