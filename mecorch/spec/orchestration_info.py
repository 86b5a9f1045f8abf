"""Reading a request's `orchestrationInfo`: what kind it is and what it asks.

`orchestrationInfo` is a mecorch extension of the ETSI InstantiateAppRequest:
a TOSCA service template (-> VM) or a Kubernetes-style Pod or Deployment
manifest (-> CONTAINER), given as a YAML string or as a JSON object. The
kind is told by CONTENT only (mecorch never sees a file name).

What is read (everything else is ignored, see `details`):

TOSCA (`topology_template.node_templates`, or `node_templates` at the top
level as in short fragments). Node types are matched by name, following
`derived_from` in the document's own `node_types`:
  compute  tosca.nodes.nfv.Vdu.Compute (ETSI NFV SOL001), tosca.nodes.Compute,
           Compute, Application: vCPU/memory/disk from
           capabilities.virtual_compute.properties.{virtual_cpu.num_virtual_cpu,
           virtual_memory.virtual_mem_size, virtual_local_storage[0].size_of_storage}
           (SOL001) or capabilities.host.properties / properties
           {num_cpus, mem_size, disk_size} (TOSCA Simple Profile); the image
           name from properties.sw_image_data.name and image artifacts.
  image    tosca.nodes.SoftwareComponent, SoftwareComponent: properties.image
           and image artifacts (an artifact whose type names an Image, or
           whose key is `image`/`sw_image`).
  volume   tosca.nodes.nfv.Vdu.VirtualBlockStorage
           (properties.virtual_block_storage_data.size_of_storage),
           LocalVolume, BlockStorage, tosca.nodes.BlockStorage,
           tosca.nodes.Storage.BlockStorage (properties.size); name from
           properties.name, else the node's name; mecorch extension
           properties.deletion_policy RETAIN|DELETE.
Other node types (connection points, virtual links...) are ignored:
networking is the MEP's business, and TOSCA interface operations (scripts)
are never run. Of `topology_template.policies`, mecorch.spec.restart reads
a `mecorch.policies.Restart` (the instance's restart policy).

Kubernetes (Pod: spec; Deployment: spec.template.spec, replicas absent or 1):
exactly one container (mecorch runs one app container per instance; a
sidecar or an init container it cannot run is refused, not dropped): image,
resources.limits (else resources.requests) cpu / memory / ephemeral-storage,
ports (containerPort, protocol, hostPort, hostIP), env (name/value; valueFrom
is refused), command (-> image entrypoint) and args (-> its arguments),
emptyDir volumes (sizeLimit; without one, the AppD's size for a volume of
that name, else 1 GB) with their volumeMounts (mountPath; subPath and
readOnly are refused), and the annotation `mecorch/retain-volumes: "a,b"`
(on the manifest or the pod template) marking volumes RETAIN. The
container's livenessProbe, readinessProbe and startupProbe are read by
spec/probes.py (the same one parse, through the Plan). Any other
volume source (hostPath, secret, PVC...) is refused. The pod spec's
`restartPolicy` is read by mecorch.spec.restart; its other fields are
checked by name, and so are the container's (K8S_POD_*, K8S_CONTAINER_*: a
typo, or a field mecorch does not honour given anything but Kubernetes'
default, is refused naming it).

Units. mecorch counts memory in MiB and storage in GiB, as Docker, libvirt
and Nova do and as mecorch reads the ETSI "MB"/"GB" fields of the AppD.
Kubernetes quantities are exact as Kubernetes defines them (M = 10^6,
Mi = 2^20); TOSCA scalar-unit sizes are read the way ETSI reads them: SOL001
is the TOSCA encoding of the same NFV descriptor as the AppD, so its
"256 MB" must mean what the AppD's `virtualMemSize: 256` means. TOSCA units
are therefore binary whatever their spelling (kB = KiB, MB = MiB, GB = GiB,
TB = TiB), case-insensitive as TOSCA says. Memory is rounded up to whole
MiB, storage up to whole MiB (the app gets at least what it asked).
"""

from __future__ import annotations

import math
import posixpath
import re
from dataclasses import dataclass, field
from decimal import Decimal

from mecorch.kernel import validate
from mecorch.kernel.errors import InvalidInput
from mecorch.driverapi.model import PortSpec
from mecorch.kernel.states import DeploymentType
from mecorch.kernel.yamlsafe import load_yaml

ROOT = "orchestrationInfo"

# -- limits (one place; decision.py uses them for the AppD and request too) --

VCPU_MIN, VCPU_MAX = 0.01, 64.0
MEMORY_MB_MIN, MEMORY_MB_MAX = 4, 256 * 1024          # 4 MiB .. 256 GiB
DISK_GB_MAX = 2048.0                                   # 2 TiB
VOLUME_GB_MIN = 1 / 1024                               # 1 MiB
MAX_VOLUMES = 16
MAX_PORTS = 64
MAX_ARGS = 256
RETAIN_ANNOTATION = "mecorch/retain-volumes"

_MIB = 1 << 20
_GIB = 1 << 30


def _short(value) -> str:
    """A value quoted for an error message, never longer than ~60 chars."""
    r = repr(value)
    return r if len(r) <= 60 else r[:57] + "..."


def _key(key) -> str:
    """A mapping key from the document, made safe to put in a message."""
    return "".join(c if c.isprintable() else "?" for c in str(key)[:64])


# validate.number refuses NaN and infinities too (they fail the range test).

def check_vcpu(value, where: str) -> float:
    return validate.number(value, where, VCPU_MIN, VCPU_MAX)


def check_memory_mb(value, where: str) -> int:
    return int(math.ceil(validate.number(value, where, MEMORY_MB_MIN, MEMORY_MB_MAX)))


def check_disk_gb(value, where: str) -> float:
    return validate.number(value, where, 0, DISK_GB_MAX)


def check_volume_gb(value, where: str) -> float:
    return validate.number(value, where, VOLUME_GB_MIN, DISK_GB_MAX)


# -- quantities ---------------------------------------------------------------

_NUM = r"(?P<num>[0-9]{1,15}(?:\.[0-9]{1,9})?)"
_K8S_CPU = re.compile(_NUM + r"(?P<unit>m?)")
_K8S_BYTES = re.compile(_NUM + r"(?P<unit>Ki|Mi|Gi|Ti|Pi|k|M|G|T|P|)")
_K8S_MULT = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15,
             "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50}
_TOSCA_SIZE = re.compile(_NUM + r" ?(?P<unit>[A-Za-z]{1,3})")
_TOSCA_MULT = {"b": 1, "kb": 2**10, "kib": 2**10, "mb": 2**20, "mib": 2**20,
               "gb": 2**30, "gib": 2**30, "tb": 2**40, "tib": 2**40}


def _plain_number(value, where: str) -> Decimal | None:
    """A YAML/JSON number as an exact Decimal (None if not a number)."""
    if isinstance(value, bool):
        raise InvalidInput(f"{where}: must be a quantity, not true/false")
    if isinstance(value, int):
        if value < 0:
            raise InvalidInput(f"{where}: must not be negative")
        return Decimal(value)
    if isinstance(value, float):
        if not math.isfinite(value) or value < 0:
            raise InvalidInput(f"{where}: must be a finite, non-negative number")
        return Decimal(value)
    return None


def k8s_cpu(value, where: str) -> float:
    """A Kubernetes CPU quantity ("500m", "1", "0.5", 2) in cores."""
    num = _plain_number(value, where)
    if num is None:
        m = _K8S_CPU.fullmatch(value) if isinstance(value, str) else None
        if not m:
            raise InvalidInput(f"{where}: {_short(value)} is not a CPU quantity "
                               "(like \"500m\", \"1\" or \"0.5\")")
        num = Decimal(m["num"]) / (1000 if m["unit"] else 1)
    return check_vcpu(float(num), where)


def k8s_bytes(value, where: str) -> Decimal:
    """A Kubernetes byte quantity ("64Mi", "1Gi", "128M", 1048576) in bytes."""
    num = _plain_number(value, where)
    if num is not None:
        return num
    m = _K8S_BYTES.fullmatch(value) if isinstance(value, str) else None
    if not m:
        hint = ""
        if isinstance(value, str) and value[-1:] == "m" and value[:-1].isdigit():
            hint = f" (\"m\" is milli; did you mean {value[:-1]}Mi or {value[:-1]}M?)"
        raise InvalidInput(f"{where}: {_short(value)} is not a byte quantity "
                           f"(like \"64Mi\", \"1Gi\" or \"128M\"){hint}")
    return Decimal(m["num"]) * _K8S_MULT[m["unit"]]


def tosca_bytes(value, where: str) -> Decimal:
    """A TOSCA scalar-unit.size ("256 MB", "1 GiB") in bytes (units binary,
    see the module docstring)."""
    m = _TOSCA_SIZE.fullmatch(value) if isinstance(value, str) else None
    if not m or m["unit"].lower() not in _TOSCA_MULT:
        raise InvalidInput(f"{where}: {_short(value)} is not a TOSCA size "
                           "(a number and a unit: B, kB, MB, GB, TB, KiB, MiB, GiB, TiB)")
    return Decimal(m["num"]) * _TOSCA_MULT[m["unit"].lower()]


def bytes_to_mb(b: Decimal, where: str) -> int:
    # Compare before converting: a huge Decimal must not become a float.
    if b > MEMORY_MB_MAX * _MIB:
        raise InvalidInput(f"{where}: must be at most {MEMORY_MB_MAX} MiB")
    return check_memory_mb(int(math.ceil(b / _MIB)), where)


def bytes_to_gb(b: Decimal, where: str, volume: bool = False) -> float:
    if b > Decimal(DISK_GB_MAX) * _GIB:
        raise InvalidInput(f"{where}: must be at most {DISK_GB_MAX:g} GiB")
    gb = int(math.ceil(b / _MIB)) / 1024
    return check_volume_gb(gb, where) if volume else check_disk_gb(gb, where)


# -- parsing and kind ---------------------------------------------------------

@dataclass(frozen=True)
class Parsed:
    """orchestrationInfo, parsed and recognised."""
    manner: DeploymentType
    label: str                  # "a TOSCA service template", "a Kubernetes Pod"
    kind: str                   # "TOSCA" | "Pod" | "Deployment"
    doc: dict


def _get(d, key):
    return d.get(key) if isinstance(d, dict) else None


def _node_templates(doc: dict, root: str = ROOT):
    tt = doc.get("topology_template")
    if isinstance(tt, dict) and "node_templates" in tt:
        return tt["node_templates"], f"{root}.topology_template.node_templates"
    return doc.get("node_templates"), f"{root}.node_templates"


def _looks_tosca(doc: dict) -> bool:
    if isinstance(doc.get("tosca_definitions_version"), str):
        return True
    nodes, _ = _node_templates(doc)
    return (isinstance(nodes, dict) and bool(nodes)
            and all(isinstance(n, dict) and isinstance(n.get("type"), str)
                    for n in nodes.values()))


def _k8s_kind(doc: dict) -> str | None:
    """'Pod'/'Deployment' for a manifest with containers, the kind text for
    another Kubernetes object, None if it is not a manifest at all."""
    kind = doc.get("kind")
    if not (isinstance(doc.get("apiVersion"), str) and isinstance(kind, str)):
        return None
    if kind not in ("Pod", "Deployment"):
        return f"a Kubernetes {kind[:40]!r} manifest"
    spec = _get(doc, "spec")
    pod_spec = spec if kind == "Pod" else _get(_get(spec, "template"), "spec")
    if isinstance(_get(pod_spec, "containers"), list):
        return kind
    return f"a Kubernetes {kind!r} without spec containers"


def load(info) -> dict:
    """orchestrationInfo as a mapping: a YAML string parsed strictly, or the
    JSON object itself."""
    if isinstance(info, str):
        doc = load_yaml(info, what=ROOT)
    elif isinstance(info, dict):
        doc = info
    else:
        raise InvalidInput(f"{ROOT}: must be a YAML string or a JSON object")
    if not isinstance(doc, dict):
        raise InvalidInput(f"{ROOT}: must be a mapping (a TOSCA service template or "
                           f"a Kubernetes Pod/Deployment), not {type(doc).__name__}")
    return doc


def parse(info) -> Parsed:
    """Parse and recognise orchestrationInfo by content; InvalidInput says
    what was (or was not) recognised."""
    doc = load(info)
    tosca = _looks_tosca(doc)
    k8s = _k8s_kind(doc)
    if tosca and k8s:
        raise InvalidInput(f"{ROOT}: is ambiguous: it has both TOSCA keys "
                           "(tosca_definitions_version/node_templates) and Kubernetes "
                           "keys (apiVersion/kind)")
    if tosca:
        return Parsed(DeploymentType.VM, "a TOSCA service template", "TOSCA", doc)
    if k8s in ("Pod", "Deployment"):
        return Parsed(DeploymentType.CONTAINER, f"a Kubernetes {k8s}", k8s, doc)
    if k8s:
        raise InvalidInput(f"{ROOT}: recognised {k8s}, but only a Pod or a Deployment "
                           "with spec containers (CONTAINER) or a TOSCA service "
                           "template (VM) is supported")
    keys = ", ".join(_short(k) for k in list(doc)[:5]) or "none"
    raise InvalidInput(f"{ROOT}: recognised neither a TOSCA service template "
                       "(tosca_definitions_version, topology_template.node_templates) "
                       "nor a Kubernetes Pod/Deployment (apiVersion, kind, spec.containers); "
                       f"top-level keys: {keys}")


def orchestration_kind(info) -> DeploymentType:
    """VM for a TOSCA service template, CONTAINER for a Kubernetes Pod or
    Deployment; InvalidInput for anything else."""
    return parse(info).manner


# -- details ------------------------------------------------------------------

@dataclass(frozen=True)
class VolumeOverride:
    """A volume as orchestrationInfo states it; None = not said."""
    name: str
    size_gb: float | None = None
    mount_path: str | None = None
    reserved: bool | None = None


@dataclass(frozen=True)
class Details:
    """What orchestrationInfo asks for; None/empty = not said (keep the
    AppD's or the request descriptors' value)."""
    images: tuple[tuple[str, str], ...] = ()      # (where, image named)
    vcpu: float | None = None
    memory_mb: int | None = None
    disk_gb: float | None = None
    volumes: tuple[VolumeOverride, ...] = ()
    ports: tuple[PortSpec, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    entrypoint: tuple[str, ...] | None = None
    args: tuple[str, ...] | None = None
    retained: frozenset[str] = frozenset()        # volumes to mark RETAIN


def _mapping(value, where: str, required: bool = False) -> dict:
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(f"{where}: must be a mapping")
    return value


def _sequence(value, where: str, limit: int) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidInput(f"{where}: must be a list")
    if len(value) > limit:
        raise InvalidInput(f"{where}: at most {limit} entries")
    return value


def _at(node: dict, path: tuple[str, ...], where: str):
    """The value at `path` inside a node template (None if absent); every
    step on the way must be a mapping."""
    cur = node
    for i, key in enumerate(path):
        if cur is None:
            return None
        if not isinstance(cur, dict):
            raise InvalidInput(f"{where}.{'.'.join(path[:i])}: must be a mapping")
        cur = cur.get(key)
    return cur


def _same(found: list[tuple[str, object, object]]):
    """The one value several places state (where, value, as written), or
    InvalidInput if they differ."""
    if not found:
        return None
    first_where, first, first_raw = found[0]
    for where, v, raw in found[1:]:
        if v != first:
            raise InvalidInput(f"{first_where} says {_short(first_raw)} but {where} "
                               f"says {_short(raw)}")
    return first


def details(parsed: Parsed) -> Details:
    """What the recognised orchestrationInfo asks for, every value checked."""
    if parsed.kind == "TOSCA":
        return _tosca(parsed.doc)
    return _kubernetes(parsed.doc, parsed.kind)


# TOSCA -----------------------------------------------------------------------

_COMPUTE = {"tosca.nodes.nfv.Vdu.Compute", "tosca.nodes.Compute", "Compute", "Application"}
_SOFTWARE = {"tosca.nodes.SoftwareComponent", "SoftwareComponent"}
_VOLUME = {"tosca.nodes.nfv.Vdu.VirtualBlockStorage", "tosca.nodes.BlockStorage",
           "tosca.nodes.Storage.BlockStorage", "BlockStorage", "LocalVolume"}


ROLES = {**{t: "compute" for t in _COMPUTE}, **{t: "software" for t in _SOFTWARE},
         **{t: "volume" for t in _VOLUME}}


def _role(type_name: str, node_types: dict, roles: dict[str, str] = ROLES) -> str | None:
    """The role of a node type: its own, or that of the nearest type it is
    derived from (through the document's node_types) that `roles` knows."""
    seen = set()
    t = type_name
    while isinstance(t, str) and t not in seen and len(seen) < 16:
        seen.add(t)
        if t in roles:
            return roles[t]
        t = _get(node_types.get(t), "derived_from")
    return None


def tosca_nodes(doc: dict, root: str = ROOT, roles: dict[str, str] = ROLES,
                node_types: dict | None = None) -> list[tuple[str, dict, str, str | None]]:
    """The node templates of a TOSCA service template as (name, node,
    where, role): the one TOSCA reader of orchestrationInfo and of the
    TOSCA AppD (mecorch.package.tosca_appd). `node_types` adds type
    definitions from imported files to the document's own."""
    nodes, where = _node_templates(doc, root)
    nodes = _mapping(nodes, where)
    types = {**(node_types or {}), **_mapping(doc.get("node_types"), f"{root}.node_types")}
    out = []
    for name, node in nodes.items():
        n_where = f"{where}.{_key(name)}"
        if not isinstance(node, dict) or not isinstance(node.get("type"), str):
            raise InvalidInput(f"{n_where}: must be a mapping with a 'type'")
        out.append((name, node, n_where, _role(node["type"], types, roles)))
    return out


def _image_artifacts(node: dict, where: str) -> list[tuple[str, str]]:
    out = []
    for key, art in _mapping(node.get("artifacts"), f"{where}.artifacts").items():
        a_where = f"{where}.artifacts.{_key(key)}"
        if isinstance(art, str):            # short notation: key: file
            is_image, file = key in ("image", "sw_image"), art
        elif isinstance(art, dict):
            a_type = art.get("type")
            is_image = (key in ("image", "sw_image")
                        or (isinstance(a_type, str) and "Image" in a_type))
            file, a_where = art.get("file"), f"{a_where}.file"
        else:
            raise InvalidInput(f"{a_where}: must be a file name or a mapping")
        if is_image:
            out.append((a_where, validate.text(file, a_where, max_len=255)))
    return out


def _plain(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _memory(v, w, plain=False):
    # plain: a bare number is MB, as the AppD's virtualMemSize (EdgeGallery
    # TOSCA AppDs write them so); orchestrationInfo requires a unit
    if plain and _plain(v):
        return check_memory_mb(v, w)
    return bytes_to_mb(tosca_bytes(v, w), w)


def _disk(v, w, plain=False):
    if plain and _plain(v):
        return check_disk_gb(v, w)
    return bytes_to_gb(tosca_bytes(v, w), w)


def _volume_size(v, w, plain=False):
    if plain and _plain(v):
        return check_volume_gb(v, w)
    return bytes_to_gb(tosca_bytes(v, w), w, volume=True)


_VC = ("capabilities", "virtual_compute", "properties")    # SOL001 Vdu.Compute
_HOST = ("capabilities", "host", "properties")             # TOSCA Compute
# (what, reader, where inside the node template)
_COMPUTE_FIELDS = (
    ("vcpu", check_vcpu, ("properties", "num_cpus")),
    ("vcpu", check_vcpu, _HOST + ("num_cpus",)),
    ("vcpu", check_vcpu, _VC + ("virtual_cpu", "num_virtual_cpu")),
    ("memory_mb", _memory, ("properties", "mem_size")),
    ("memory_mb", _memory, _HOST + ("mem_size",)),
    ("memory_mb", _memory, _VC + ("virtual_memory", "virtual_mem_size")),
    ("disk_gb", _disk, ("properties", "disk_size")),
    ("disk_gb", _disk, _HOST + ("disk_size",)),
)
# The property names a TOSCA Compute host capability has (TOSCA Simple
# Profile tosca.capabilities.Compute): another name there is a typo that
# would silently deploy with the AppD's size instead.
TOSCA_HOST_PROPERTIES = ("name", "num_cpus", "cpu_frequency", "disk_size", "mem_size")
K8S_RESOURCES_FIELDS = ("limits", "requests", "claims")
# Every field of a Kubernetes PodSpec (core/v1): what mecorch reads
# (containers, volumes, restartPolicy; initContainers only empty), and the
# rest, refused by name unless given the value Kubernetes itself defaults
# it to (a manifest exported with `kubectl get -o yaml` spells those out
# and asks nothing by them). Placement asks are refused too (mecorch places
# by selectedMECHostInfo), and so are privilege asks either way: a
# securityContext may also drop privileges, and an app must not be started
# believing it runs read-only or unprivileged when nothing made it so. A
# name in neither group is a typo, refused with the closest known name.
K8S_POD_READ = ("containers", "initContainers", "volumes", "restartPolicy")
K8S_POD_REFUSED = (
    "activeDeadlineSeconds", "affinity", "automountServiceAccountToken", "dnsConfig",
    "dnsPolicy", "enableServiceLinks", "ephemeralContainers", "hostAliases", "hostIPC",
    "hostNetwork", "hostPID", "hostUsers", "hostname", "imagePullSecrets", "nodeName",
    "nodeSelector", "os", "overhead", "preemptionPolicy", "priority", "priorityClassName",
    "readinessGates", "resourceClaims", "resources", "runtimeClassName", "schedulerName",
    "schedulingGates", "securityContext", "serviceAccount", "serviceAccountName",
    "setHostnameAsFQDN", "shareProcessNamespace", "subdomain",
    "terminationGracePeriodSeconds", "tolerations", "topologySpreadConstraints")
# A container's fields: read (the probes by spec/probes.py), or refused by
# name unless at Kubernetes' default. imagePullPolicy: the image is the
# package's, pulled by digest from the host's registry, so Always and
# IfNotPresent both describe what happens; Never does not.
K8S_CONTAINER_READ = (
    "name", "image", "command", "args", "ports", "env", "resources", "volumeMounts",
    "livenessProbe", "readinessProbe", "startupProbe")
K8S_CONTAINER_REFUSED = (
    "envFrom", "lifecycle", "resizePolicy", "securityContext", "stdin", "stdinOnce",
    "terminationMessagePath", "terminationMessagePolicy", "tty", "volumeDevices",
    "workingDir", "imagePullPolicy", "restartPolicy")
K8S_CONTAINER_FIELDS = K8S_CONTAINER_READ + K8S_CONTAINER_REFUSED
# The values that ask nothing: Kubernetes' own defaults (and, for
# imagePullPolicy, what mecorch does anyway).
K8S_HARMLESS = {
    "automountServiceAccountToken": (True,), "dnsPolicy": ("ClusterFirst",),
    "enableServiceLinks": (True,), "hostIPC": (False,), "hostNetwork": (False,),
    "hostPID": (False,), "preemptionPolicy": ("PreemptLowerPriority",),
    "schedulerName": ("default-scheduler",), "securityContext": ({},),
    "setHostnameAsFQDN": (False,), "shareProcessNamespace": (False,),
    "serviceAccount": ("default",), "serviceAccountName": ("default",),
    "stdin": (False,), "stdinOnce": (False,), "tty": (False,),
    "terminationMessagePath": ("/dev/termination-log",),
    "terminationMessagePolicy": ("File",), "imagePullPolicy": ("Always", "IfNotPresent"),
    "terminationGracePeriodSeconds": (30,)}


def _refuse_unhonoured(fields: dict, refused: tuple[str, ...], where: str, why: str) -> None:
    """A field mecorch does not honour, given a value that asks something,
    is an error that names it (never accepted and ignored)."""
    for name in refused:
        if name in fields and not any(fields[name] == v and type(fields[name]) is type(v)
                                      for v in K8S_HARMLESS.get(name, ())):
            raise InvalidInput(f"{where}.{_key(name)}: is not supported by mecorch ({why})")


_VOLUME_SIZES = (("properties", "size"),
                 ("properties", "virtual_block_storage_data", "size_of_storage"))


def _tosca_compute(node: dict, where: str, plain: bool = False) -> dict:
    """vCPU, memory, disk and image names of a compute node. `plain`
    (TOSCA AppDs): bare numbers are MB / GB, and virtual_local_storage may
    be one mapping instead of a list of one, as EdgeGallery writes them."""
    host_props = _at(node, _HOST, where)
    if isinstance(host_props, dict):
        validate.known_fields(host_props, TOSCA_HOST_PROPERTIES, f"{where}.{'.'.join(_HOST)}")
    found: dict[str, list] = {"vcpu": [], "memory_mb": [], "disk_gb": []}
    for what, read, path in _COMPUTE_FIELDS:
        raw = _at(node, path, where)
        if raw is not None:
            w = f"{where}.{'.'.join(path)}"
            value = read(raw, w) if read is check_vcpu else read(raw, w, plain)
            found[what].append((w, value, raw))
    lw = f"{where}.{'.'.join(_VC)}.virtual_local_storage"
    local = _at(node, _VC + ("virtual_local_storage",), where)
    if plain and isinstance(local, dict):
        local = [local]
    local = _sequence(local, lw, 1)
    if local:
        raw = _mapping(local[0], f"{lw}[0]").get("size_of_storage")
        found["disk_gb"].append((f"{lw}[0].size_of_storage",
                                 _disk(raw, f"{lw}[0].size_of_storage", plain), raw))
    out = {what: _same(values) for what, values in found.items()}
    images = _image_artifacts(node, where)
    name = _at(node, ("properties", "sw_image_data", "name"), where)
    if name is not None:
        w = f"{where}.properties.sw_image_data.name"
        images.append((w, validate.text(name, w, max_len=255)))
    out["images"] = images
    return out


def _tosca_volume(name, node: dict, where: str, plain: bool = False) -> VolumeOverride:
    props = _mapping(node.get("properties"), f"{where}.properties")
    if "name" in props:
        vname = validate.ident(props["name"], f"{where}.properties.name")
    else:
        vname = validate.ident(name, f"{where} (the node's name, used as the volume name)")
    if props.get("sw_image_data") is not None:
        raise InvalidInput(f"{where}.properties.sw_image_data: volumes made from an "
                           "image are not supported")
    sizes = []
    for path in _VOLUME_SIZES:
        raw = _at(node, path, where)
        if raw is not None:
            w = f"{where}.{'.'.join(path)}"
            sizes.append((w, _volume_size(raw, w, plain), raw))
    policy = props.get("deletion_policy")
    if policy is not None and policy not in ("RETAIN", "DELETE"):
        raise InvalidInput(f"{where}.properties.deletion_policy: must be RETAIN or DELETE")
    return VolumeOverride(vname, _same(sizes), None,
                          None if policy is None else policy == "RETAIN")


def _tosca(doc: dict) -> Details:
    _, where = _node_templates(doc)
    computes, images, volumes = [], [], []
    for name, node, n_where, role in tosca_nodes(doc):
        if role == "compute":
            computes.append((n_where, _tosca_compute(node, n_where)))
        elif role == "software":
            props = _mapping(node.get("properties"), f"{n_where}.properties")
            if props.get("image") is not None:
                w = f"{n_where}.properties.image"
                images.append((w, validate.text(props["image"], w, max_len=255)))
            images.extend(_image_artifacts(node, n_where))
        elif role == "volume":
            volumes.append(_tosca_volume(name, node, n_where))
    if len(computes) > 1:
        raise InvalidInput(f"{where}: has {len(computes)} compute nodes "
                           f"({', '.join(w for w, _ in computes)}); one instance is one VM")
    if len(volumes) > MAX_VOLUMES:
        raise InvalidInput(f"{where}: at most {MAX_VOLUMES} volumes")
    names = [v.name for v in volumes]
    if len(set(names)) != len(names):
        raise InvalidInput(f"{where}: a volume name is used twice ({', '.join(names)})")
    c = computes[0][1] if computes else {"images": []}
    return Details(images=tuple(c["images"] + images), vcpu=c.get("vcpu"),
                   memory_mb=c.get("memory_mb"), disk_gb=c.get("disk_gb"),
                   volumes=tuple(volumes))


# Kubernetes -------------------------------------------------------------------

_PROTOCOLS = {"TCP": "tcp", "UDP": "udp", "SCTP": "sctp"}


def _mount_path(value, where: str) -> str:
    path = validate.text(value, where, max_len=1024)
    # ':' and ',' separate fields in Docker's mount syntax.
    if not path.startswith("/") or ":" in path or "," in path:
        raise InvalidInput(f"{where}: must be an absolute path without ':' or ','")
    if ".." in path.split("/") or posixpath.normpath(path) == "/":
        raise InvalidInput(f"{where}: must not be '/' or contain '..'")
    return posixpath.normpath(path)


def _argv(value, where: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    return tuple(validate.text(a, f"{where}[{i}]", max_len=4096)
                 for i, a in enumerate(_sequence(value, where, MAX_ARGS)))


def _ports(c: dict, where: str) -> tuple[PortSpec, ...]:
    out, seen, host_seen = [], set(), set()
    for i, p in enumerate(_sequence(c.get("ports"), f"{where}.ports", MAX_PORTS)):
        w = f"{where}.ports[{i}]"
        p = _mapping(p, w, required=True)
        port = validate.port(p.get("containerPort"), f"{w}.containerPort")
        proto = p.get("protocol", "TCP")
        if not isinstance(proto, str) or proto not in _PROTOCOLS:
            raise InvalidInput(f"{w}.protocol: must be TCP, UDP or SCTP")
        if (port, proto) in seen:
            raise InvalidInput(f"{w}: {port}/{proto} is given twice")
        seen.add((port, proto))
        host_port, host_ip = p.get("hostPort"), "127.0.0.1"
        if host_port is not None:
            host_port = validate.port(host_port, f"{w}.hostPort")
            if p.get("hostIP") is not None:
                host_ip = validate.ip_address(p["hostIP"], f"{w}.hostIP")
            if (host_ip, host_port, proto) in host_seen:
                raise InvalidInput(f"{w}.hostPort: {host_ip}:{host_port}/{proto} "
                                   "is published twice")
            host_seen.add((host_ip, host_port, proto))
        elif p.get("hostIP") is not None:
            raise InvalidInput(f"{w}.hostIP: needs a hostPort")
        out.append(PortSpec(port, _PROTOCOLS[proto], host_port, host_ip))
    return tuple(out)


def _env(c: dict, where: str) -> dict[str, str]:
    out = {}
    for i, e in enumerate(_sequence(c.get("env"), f"{where}.env", 128)):
        w = f"{where}.env[{i}]"
        e = _mapping(e, w, required=True)
        if e.get("valueFrom") is not None:
            raise InvalidInput(f"{w}.valueFrom: is not supported (give a value)")
        name, value = e.get("name"), e.get("value", "")
        if not isinstance(name, str):
            raise InvalidInput(f"{w}.name: must be a string")
        validate.env({name: value}, w)
        if name in out:
            raise InvalidInput(f"{w}.name: {name!r} is given twice")
        out[name] = value
    return out


def _volumes(pod_spec: dict, c: dict, where: str, c_where: str) -> tuple[VolumeOverride, ...]:
    sizes: dict[str, float | None] = {}
    for i, v in enumerate(_sequence(pod_spec.get("volumes"), f"{where}.volumes", MAX_VOLUMES)):
        w = f"{where}.volumes[{i}]"
        v = _mapping(v, w, required=True)
        name = validate.ident(v.get("name"), f"{w}.name")
        if name in sizes:
            raise InvalidInput(f"{w}.name: {name!r} is given twice")
        other = sorted(_key(k) for k in v if k not in ("name", "emptyDir"))
        if other or "emptyDir" not in v:
            raise InvalidInput(f"{w}: only emptyDir volumes are supported"
                               + (f" (found {', '.join(other)[:80]})" if other else ""))
        ed = _mapping(v.get("emptyDir"), f"{w}.emptyDir")
        size = None
        if ed.get("sizeLimit") is not None:
            sw = f"{w}.emptyDir.sizeLimit"
            size = bytes_to_gb(k8s_bytes(ed["sizeLimit"], sw), sw, volume=True)
        sizes[name] = size
    mounts: dict[str, str] = {}
    for i, m in enumerate(_sequence(c.get("volumeMounts"), f"{c_where}.volumeMounts", MAX_VOLUMES)):
        w = f"{c_where}.volumeMounts[{i}]"
        m = _mapping(m, w, required=True)
        name = m.get("name")
        if not isinstance(name, str) or name not in sizes:
            raise InvalidInput(f"{w}.name: {_short(name)} is not a volume of the pod")
        if name in mounts:
            raise InvalidInput(f"{w}.name: volume {name!r} is mounted twice")
        for unsupported in ("subPath", "subPathExpr"):
            if m.get(unsupported) is not None:
                raise InvalidInput(f"{w}.{unsupported}: is not supported")
        if m.get("readOnly") not in (None, False):
            raise InvalidInput(f"{w}.readOnly: read-only mounts are not supported")
        path = _mount_path(m.get("mountPath"), f"{w}.mountPath")
        if path in mounts.values():
            raise InvalidInput(f"{w}.mountPath: {path} is used twice")
        mounts[name] = path
    return tuple(VolumeOverride(n, s, mounts.get(n)) for n, s in sizes.items())


def _retained(metas: list[tuple[dict, str]]) -> frozenset[str]:
    # A name may be a pod volume or one of the AppD's: decision.py checks
    # it against the merged set.
    out = set()
    for meta, w in metas:
        ann = _mapping(_mapping(meta, w).get("annotations"), f"{w}.annotations")
        value = ann.get(RETAIN_ANNOTATION)
        if value is None:
            continue
        aw = f"{w}.annotations.{RETAIN_ANNOTATION}"
        text = validate.text(value, aw, max_len=1024)
        for name in text.split(","):
            out.add(validate.ident(name.strip(), aw))
    return frozenset(out)


def _pod_fields(pod_spec: dict, where: str) -> None:
    validate.known_fields(pod_spec, K8S_POD_READ + K8S_POD_REFUSED, where)
    _refuse_unhonoured(pod_spec, K8S_POD_REFUSED, where,
                       "one app container per instance, placed by selectedMECHostInfo, "
                       "no cluster")


def pod_spec_of(parsed: Parsed) -> tuple[dict, str] | None:
    """A Kubernetes manifest's pod spec and where it is (None for TOSCA or
    a manifest without one: `details` refuses those)."""
    if parsed.kind == "Pod":
        spec, where = _get(parsed.doc, "spec"), f"{ROOT}.spec"
    elif parsed.kind == "Deployment":
        spec, where = _get(_get(_get(parsed.doc, "spec"), "template"), "spec"), \
            f"{ROOT}.spec.template.spec"
    else:
        return None
    return (spec, where) if isinstance(spec, dict) else None


def _kubernetes(doc: dict, kind: str) -> Details:
    metas = [(doc.get("metadata"), f"{ROOT}.metadata")]
    if kind == "Deployment":
        spec = _mapping(doc.get("spec"), f"{ROOT}.spec", required=True)
        replicas = spec.get("replicas")
        if replicas is not None and (isinstance(replicas, bool) or replicas != 1):
            raise InvalidInput(f"{ROOT}.spec.replicas: must be 1 (one instance is one "
                               "app container; ask for more instances instead)")
        template = _mapping(spec.get("template"), f"{ROOT}.spec.template", required=True)
        metas.append((template.get("metadata"), f"{ROOT}.spec.template.metadata"))
        where = f"{ROOT}.spec.template.spec"
        pod_spec = _mapping(template.get("spec"), where, required=True)
    else:
        where = f"{ROOT}.spec"
        pod_spec = _mapping(doc.get("spec"), where, required=True)
    _pod_fields(pod_spec, where)
    containers = _sequence(pod_spec.get("containers"), f"{where}.containers", 16)
    if len(containers) != 1:
        raise InvalidInput(f"{where}.containers: must hold exactly one container "
                           f"(found {len(containers)}); mecorch runs one app container "
                           "per instance")
    if pod_spec.get("initContainers"):
        raise InvalidInput(f"{where}.initContainers: is not supported")
    c_where = f"{where}.containers[0]"
    c = _mapping(containers[0], c_where, required=True)
    if c.get("restartPolicy") is not None:
        # Kubernetes' sidecar feature (a restartable init container), not
        # the pod's policy: said here it would be silently something else
        raise InvalidInput(f"{c_where}.restartPolicy: a container's own restartPolicy (the "
                           "Kubernetes sidecar feature) is not supported; give the pod's "
                           f"{where}.restartPolicy")
    validate.known_fields(c, K8S_CONTAINER_FIELDS, c_where)
    _refuse_unhonoured(c, K8S_CONTAINER_REFUSED, c_where,
                       "not honoured for an app container; only its Kubernetes default is "
                       "accepted")
    images = []
    if c.get("image") is not None:
        images.append((f"{c_where}.image", validate.text(c["image"], f"{c_where}.image", 255)))
    res = _mapping(c.get("resources"), f"{c_where}.resources")
    validate.known_fields(res, K8S_RESOURCES_FIELDS, f"{c_where}.resources")
    limits = _mapping(res.get("limits"), f"{c_where}.resources.limits")
    requests = _mapping(res.get("requests"), f"{c_where}.resources.requests")

    def quantity(key):
        # Limits are what the runtime enforces; requests stand in for them
        # when no limit is given.
        if limits.get(key) is not None:
            return limits[key], f"{c_where}.resources.limits.{key}"
        if requests.get(key) is not None:
            return requests[key], f"{c_where}.resources.requests.{key}"
        return None, ""

    vcpu = memory_mb = disk_gb = None
    value, w = quantity("cpu")
    if value is not None:
        vcpu = k8s_cpu(value, w)
    value, w = quantity("memory")
    if value is not None:
        memory_mb = bytes_to_mb(k8s_bytes(value, w), w)
    value, w = quantity("ephemeral-storage")
    if value is not None:
        disk_gb = bytes_to_gb(k8s_bytes(value, w), w)
    return Details(images=tuple(images), vcpu=vcpu, memory_mb=memory_mb, disk_gb=disk_gb,
                   volumes=_volumes(pod_spec, c, where, c_where), retained=_retained(metas),
                   ports=_ports(c, c_where), env=_env(c, c_where),
                   entrypoint=_argv(c.get("command"), f"{c_where}.command"),
                   args=_argv(c.get("args"), f"{c_where}.args"))
