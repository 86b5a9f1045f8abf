"""The deployment decision and the one resource model (design.md, Deploy 1).

mecorch extends the ETSI MEC 010-2 InstantiateAppRequest with two documented
fields: `deploymentType` ("VM" | "CONTAINER") and `orchestrationInfo` (a TOSCA
service template or a Kubernetes Pod/Deployment, as a YAML string or a JSON
object; see mecorch/orchestration_info.py for what is read from it).

`decide_manner` picks VM or CONTAINER; `resource_request` reduces the AppD,
the request's ETSI descriptors and orchestrationInfo to one ResourceRequest.
Both are pure: they raise InvalidInput (HTTP 400) before anything exists.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from . import validate
from .errors import InvalidInput
from .model import ResourceRequest, VolumeSpec
from .orchestration_info import (MAX_VOLUMES, RETAIN_ANNOTATION, check_disk_gb,
                                 check_memory_mb, check_vcpu, check_volume_gb, details,
                                 orchestration_kind, parse)
from .states import DeploymentType
from .yamlsafe import load_yaml

__all__ = ["Decision", "decide_manner", "resource_request", "orchestration_kind",
           "deployment_type"]

SIGNALS = ("deploymentType", "orchestrationInfo", "onboarding")


@dataclass(frozen=True)
class Decision:
    """The manner, which signal decided it, and every signal present."""
    manner: DeploymentType
    source: str                                     # one of SIGNALS
    signals: dict[str, DeploymentType] = field(default_factory=dict)


def deployment_type(value, where: str = "deploymentType") -> DeploymentType:
    """The request's deploymentType, exactly "VM" or "CONTAINER"."""
    if isinstance(value, DeploymentType):
        return value
    if isinstance(value, str) and value in DeploymentType.__members__:
        return DeploymentType(value)
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
    raise InvalidInput(f"{where}: must be \"VM\" or \"CONTAINER\", not {shown}")


def _phrase(signal: str, manner: DeploymentType, label: str = "") -> str:
    if signal == "deploymentType":
        return f"deploymentType says {manner.value}"
    if signal == "orchestrationInfo":
        return f"orchestrationInfo is {label} ({manner.value})"
    image = "a VM image" if manner == DeploymentType.VM else "a container image"
    return f"the app was onboarded as {manner.value} (its package holds {image})"


def decide_manner(request: dict, recorded: DeploymentType | str | None) -> Decision:
    """Decide VM or CONTAINER for an InstantiateAppRequest.

    Order: an explicit `deploymentType`; else the kind of `orchestrationInfo`
    (TOSCA -> VM, Kubernetes Pod/Deployment -> CONTAINER, by content); else
    `recorded`, the manner recorded for the appDId at onboarding.

    Every present signal must agree, the recorded manner included: the
    onboarded package holds either a container image or a VM image, so a
    request for the other manner could not be deployed at all. Any
    disagreement is an InvalidInput (400) naming the signals and their
    values. An invalid deploymentType, an unrecognised orchestrationInfo, or
    no signal at all are InvalidInput too. A JSON null counts as absent.
    """
    if not isinstance(request, dict):
        raise InvalidInput("InstantiateAppRequest: must be a JSON object")
    signals: dict[str, DeploymentType] = {}
    phrases: dict[str, str] = {}
    if request.get("deploymentType") is not None:
        signals["deploymentType"] = deployment_type(request["deploymentType"])
        phrases["deploymentType"] = _phrase("deploymentType", signals["deploymentType"])
    if request.get("orchestrationInfo") is not None:
        parsed = parse(request["orchestrationInfo"])
        signals["orchestrationInfo"] = parsed.manner
        phrases["orchestrationInfo"] = _phrase("orchestrationInfo", parsed.manner, parsed.label)
    if recorded is not None:
        signals["onboarding"] = deployment_type(recorded, "recorded manner")
        phrases["onboarding"] = _phrase("onboarding", signals["onboarding"])
    if not signals:
        raise InvalidInput("no deployment signal: give deploymentType (VM or CONTAINER) "
                           "or orchestrationInfo; no manner was recorded for the app")
    source = next(s for s in SIGNALS if s in signals)
    manner = signals[source]
    if any(m != manner for m in signals.values()):
        agree = [phrases[s] for s in SIGNALS if signals.get(s) == manner]
        differ = [phrases[s] for s in SIGNALS if s in signals and signals[s] != manner]
        raise InvalidInput("contradicting deployment signals: " + " and ".join(agree)
                           + " but " + " and ".join(differ))
    return Decision(manner, source, signals)


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
                     image: str, request: dict) -> ResourceRequest:
    """Reduce the AppD, the InstantiateAppRequest and its orchestrationInfo
    to one ResourceRequest. Layers, later wins field by field:

    1. the AppD: virtualComputeDescriptor (numVirtualCpu, virtualMemSize MB),
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
    """
    manner = deployment_type(manner, "manner")
    iid = validate.ident(instance_id, "instance_id")
    if not isinstance(appd, dict):
        raise InvalidInput("AppD: must be a mapping")
    if not isinstance(request, dict):
        raise InvalidInput("InstantiateAppRequest: must be a JSON object")
    app_d_id = validate.ident(appd.get("appDId"), "AppD.appDId")
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
    if request.get("orchestrationInfo") is not None:
        parsed = parse(request["orchestrationInfo"])
        if parsed.manner != manner:
            raise InvalidInput(f"orchestrationInfo is {parsed.label} ({parsed.manner.value}) "
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

