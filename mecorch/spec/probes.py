"""Health checks (probes) of an app instance: what is probed, how often, and
what the thresholds are. Pure: parsed from the request and the AppD once
(spec/plan.py), run by mecorch.mepm.health on the edge host.

Where they come from:
- a CONTAINER's orchestrationInfo (a Kubernetes Pod or Deployment): its
  container's `livenessProbe`, `readinessProbe` and `startupProbe`
  (core/v1 Probe), with Kubernetes' defaults and ranges;
- the AppD's `healthChecks` (a mecorch extension of the AppD, for VMs and
  containers alike): {"livenessProbe": Probe, "readinessProbe": Probe,
  "startupProbe": Probe}, each the same shape but with httpGet or tcpSocket
  only (a VM has no exec; a port is a number). A probe the orchestrationInfo
  names replaces the AppD's of the same kind.

Honoured: httpGet (path, port: a number, or a container port's name;
scheme HTTP; httpHeaders), tcpSocket (port), exec (command; containers
only), initialDelaySeconds (0), periodSeconds (10), timeoutSeconds (1),
successThreshold (1; must be 1 for liveness and startup), failureThreshold
(3). Every probe is sent from the host to the instance's own address.
Refused by name: grpc, httpGet.host and tcpSocket.host (a probe goes to the
instance, never elsewhere), scheme HTTPS, terminationGracePeriodSeconds
(the restart a failed liveness check asks for stops the app as an operator's
stop does), and any other field.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from mecorch.kernel import validate
from mecorch.kernel.errors import InvalidInput
from mecorch.kernel.states import DeploymentType

KINDS = ("startupProbe", "livenessProbe", "readinessProbe")
APPD_FIELD = "healthChecks"
PROBE_FIELDS = ("httpGet", "tcpSocket", "exec", "grpc", "initialDelaySeconds", "periodSeconds",
                "timeoutSeconds", "successThreshold", "failureThreshold",
                "terminationGracePeriodSeconds")
HTTP_FIELDS = ("path", "port", "host", "scheme", "httpHeaders")
TCP_FIELDS = ("port", "host")
EXEC_FIELDS = ("command",)
# Kubernetes' ranges are open-ended; mecorch bounds them so that a typo
# (periodSeconds: 100000) is an error, not a probe that never runs.
MAX_SECONDS = 3600
MAX_THRESHOLD = 1000
MAX_HEADERS = 32


@dataclass(frozen=True)
class Probe:
    """One probe. `action` is "http", "tcp" or "exec"."""
    action: str
    port: int | None = None
    path: str = "/"
    headers: tuple[tuple[str, str], ...] = ()
    command: tuple[str, ...] = ()
    initial_delay_s: int = 0
    period_s: int = 10
    timeout_s: int = 1
    success_threshold: int = 1
    failure_threshold: int = 3

    def to_doc(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_doc(cls, doc: dict) -> "Probe":
        return cls(**{**doc, "headers": tuple(tuple(h) for h in doc.get("headers") or ()),
                      "command": tuple(doc.get("command") or ())})


@dataclass(frozen=True)
class Probes:
    """An instance's probes; None = not asked for."""
    startup: Probe | None = None
    liveness: Probe | None = None
    readiness: Probe | None = None

    def __bool__(self) -> bool:
        return any((self.startup, self.liveness, self.readiness))

    def to_doc(self) -> dict:
        """The stored form (the instance's `_probes`)."""
        return {k: p.to_doc() for k, p in (("startup", self.startup), ("liveness", self.liveness),
                                            ("readiness", self.readiness)) if p is not None}

    @classmethod
    def from_doc(cls, doc: dict | None) -> "Probes":
        doc = doc or {}
        return cls(**{k: Probe.from_doc(v) for k, v in doc.items()
                      if k in ("startup", "liveness", "readiness")})


_ATTR = {"startupProbe": "startup", "livenessProbe": "liveness", "readinessProbe": "readiness"}


def _mapping(value, where: str) -> dict:
    if not isinstance(value, dict):
        raise InvalidInput(f"{where}: must be a mapping")
    return value


def _port(value, where: str, names: dict[str, int] | None) -> int:
    """A port number, or (names given) the name of one of the container's
    ports, as Kubernetes' IntOrString."""
    # isascii: "²".isdigit() is true, and int() refuses it
    if isinstance(value, str) and not (value.isascii() and value.isdigit()):
        if names is None:
            raise InvalidInput(f"{where}: must be a port number (a named port is only "
                               "known in a container's ports)")
        if value not in names:
            known = ", ".join(sorted(names)) or "none"
            raise InvalidInput(f"{where}: {value[:40]!r} is not the name of one of the "
                               f"container's ports (named: {known})")
        return names[value]
    if isinstance(value, str):
        value = int(value)
    return validate.port(value, where)


def _http(h, where: str, names) -> dict:
    h = _mapping(h, where)
    validate.known_fields(h, HTTP_FIELDS, where)
    if h.get("host") is not None:
        raise InvalidInput(f"{where}.host: is not supported (mecorch probes the instance's "
                           "own address)")
    scheme = h.get("scheme", "HTTP")
    if scheme != "HTTP":
        raise InvalidInput(f"{where}.scheme: only HTTP is supported"
                           + (" (HTTPS probes are not)" if scheme == "HTTPS" else ""))
    if "port" not in h:
        raise InvalidInput(f"{where}.port: is required")
    path = validate.text(h.get("path", "/"), f"{where}.path", 1024)
    if not path.startswith("/") or any(c in path for c in " \r\n\t"):
        raise InvalidInput(f"{where}.path: must start with / and hold no white space")
    headers = []
    raw = h.get("httpHeaders") or []
    if not isinstance(raw, list) or len(raw) > MAX_HEADERS:
        raise InvalidInput(f"{where}.httpHeaders: must be a list of at most {MAX_HEADERS}")
    for i, hd in enumerate(raw):
        w = f"{where}.httpHeaders[{i}]"
        hd = _mapping(hd, w)
        validate.known_fields(hd, ("name", "value"), w)
        name = validate.text(hd.get("name"), f"{w}.name", 128)
        if not all(c.isalnum() or c in "-_" for c in name):
            raise InvalidInput(f"{w}.name: must be a header name (letters, digits, - and _)")
        # validate.text refuses control characters: no header injection
        value = hd.get("value")
        value = "" if value in (None, "") else validate.text(value, f"{w}.value", 1024)
        headers.append((name, value))
    return {"action": "http", "port": _port(h["port"], f"{where}.port", names),
            "path": path, "headers": tuple(headers)}


def _tcp(t, where: str, names) -> dict:
    t = _mapping(t, where)
    validate.known_fields(t, TCP_FIELDS, where)
    if t.get("host") is not None:
        raise InvalidInput(f"{where}.host: is not supported (mecorch probes the instance's "
                           "own address)")
    if "port" not in t:
        raise InvalidInput(f"{where}.port: is required")
    return {"action": "tcp", "port": _port(t["port"], f"{where}.port", names)}


def _exec(e, where: str) -> dict:
    e = _mapping(e, where)
    validate.known_fields(e, EXEC_FIELDS, where)
    cmd = e.get("command")
    if not isinstance(cmd, list) or not cmd or len(cmd) > 64:
        raise InvalidInput(f"{where}.command: must be a list of 1 to 64 strings")
    return {"action": "exec", "command": tuple(validate.text(a, f"{where}.command[{i}]", 4096)
                                                for i, a in enumerate(cmd))}


def parse_probe(value, where: str, kind: str, manner: DeploymentType,
                names: dict[str, int] | None) -> Probe:
    """One core/v1 Probe at `where`; `kind` is its field name (livenessProbe,
    ...); `names`: the container's named ports (None: numbers only)."""
    p = _mapping(value, where)
    validate.known_fields(p, PROBE_FIELDS, where)
    for refused, why in (("grpc", "gRPC probes are not supported (use httpGet, tcpSocket"
                          + (" or exec)" if manner is DeploymentType.CONTAINER else ")")),
                         ("terminationGracePeriodSeconds",
                          "is not supported (a failed check stops the app as an operator's "
                          "stop does)")):
        if p.get(refused) is not None:
            raise InvalidInput(f"{where}.{refused}: {why}")
    handlers = [h for h in ("httpGet", "tcpSocket", "exec") if p.get(h) is not None]
    if len(handlers) != 1:
        raise InvalidInput(f"{where}: must have exactly one of httpGet, tcpSocket"
                           + (", exec" if manner is DeploymentType.CONTAINER else "")
                           + (f" (found {', '.join(handlers)})" if handlers else ""))
    if handlers[0] == "httpGet":
        action = _http(p["httpGet"], f"{where}.httpGet", names)
    elif handlers[0] == "tcpSocket":
        action = _tcp(p["tcpSocket"], f"{where}.tcpSocket", names)
    else:
        if manner is not DeploymentType.CONTAINER:
            raise InvalidInput(f"{where}.exec: is not supported for a VM (mecorch runs no "
                               "command inside a VM; use httpGet or tcpSocket)")
        action = _exec(p["exec"], f"{where}.exec")

    def num(key, default, lo, hi):
        return validate.integer(p.get(key, default), f"{where}.{key}", lo, hi) \
            if p.get(key) is not None else default
    success = num("successThreshold", 1, 1, MAX_THRESHOLD)
    if kind != "readinessProbe" and success != 1:
        raise InvalidInput(f"{where}.successThreshold: must be 1 for a {kind} "
                           "(as Kubernetes requires)")
    return Probe(**action, initial_delay_s=num("initialDelaySeconds", 0, 0, MAX_SECONDS),
                 period_s=num("periodSeconds", 10, 1, MAX_SECONDS),
                 timeout_s=num("timeoutSeconds", 1, 1, MAX_SECONDS),
                 success_threshold=success,
                 failure_threshold=num("failureThreshold", 3, 1, MAX_THRESHOLD))


def _read(holder: dict, where: str, manner: DeploymentType,
          names: dict[str, int] | None) -> dict[str, Probe]:
    return {_ATTR[k]: parse_probe(holder[k], f"{where}.{k}", k, manner, names)
            for k in KINDS if holder.get(k) is not None}


def appd_probes(appd: dict, manner: DeploymentType = DeploymentType.VM) -> dict[str, Probe]:
    """The AppD's `healthChecks` extension (httpGet and tcpSocket only, port
    numbers only: one AppD serves either manner)."""
    hc = appd.get(APPD_FIELD)
    if hc is None:
        return {}
    hc = _mapping(hc, APPD_FIELD)
    validate.known_fields(hc, KINDS, APPD_FIELD)
    # read as for a VM whatever the manner: exec is refused, ports are numbers
    return _read(hc, APPD_FIELD, DeploymentType.VM, None)


def check_appd(value, field: str = APPD_FIELD) -> None:
    """The AppD attribute check (package/appd.py ATTRIBUTES)."""
    appd_probes({APPD_FIELD: value})


def _container(doc: dict, kind: str) -> tuple[dict, str]:
    """The one container of a Pod or Deployment (orchestration_info.details
    has checked the shape already) and where it is."""
    if kind == "Deployment":
        return doc["spec"]["template"]["spec"]["containers"][0], \
            "orchestrationInfo.spec.template.spec.containers[0]"
    return doc["spec"]["containers"][0], "orchestrationInfo.spec.containers[0]"


def _port_names(c: dict, where: str) -> dict[str, int]:
    names = {}
    for i, p in enumerate(c.get("ports") or []):
        if isinstance(p, dict) and p.get("name") is not None:
            name = validate.text(p["name"], f"{where}.ports[{i}].name", 15)
            if name in names:
                raise InvalidInput(f"{where}.ports[{i}].name: {name!r} is given twice")
            names[name] = validate.port(p.get("containerPort"), f"{where}.ports[{i}].containerPort")
    return names


def probes_of(appd: dict, manner: DeploymentType, parsed=None) -> Probes:
    """The instance's probes: the AppD's, each replaced by the container's
    own probe of the same kind (`parsed`: the request's orchestrationInfo,
    as spec.orchestration_info.parse recognised it, or None)."""
    found = appd_probes(appd, manner)
    if parsed is not None and parsed.kind in ("Pod", "Deployment"):
        c, where = _container(parsed.doc, parsed.kind)
        found.update(_read(c, where, manner, _port_names(c, where)))
    return Probes(**found)
