"""An instance's restart policy: what mecorch does when its runtime dies by
itself (mecorch.mepm.supervisor acts on it).

Where it comes from, the first that says wins per field:
1. the InstantiateAppRequest's `restartPolicy` (mecorch extension; the
   RESTART_FIELDS below, every one optional);
2. orchestrationInfo: the Kubernetes `restartPolicy` of a Pod's `spec`
   (or a Deployment's `spec.template.spec`, where Kubernetes allows only
   Always): the policy only, the timing comes from below; or in a TOSCA
   service template a policy of type `mecorch.policies.Restart` in
   `topology_template.policies`, its properties the RESTART_FIELDS;
3. the AppD's `restartPolicy` (mecorch extension, same shape as 1: the
   place for a VM app, which has no Kubernetes manifest);
4. the host default, `orchestrator.restart_policy` in the configuration.

The request's `policy` and orchestrationInfo's, when both are given, must
agree (a contradiction is refused naming both). A container's
own `restartPolicy` (the Kubernetes sidecar feature) is refused by
orchestration_info, not read here.

Default when nothing is said: the host default, whose own default is
`Never` (mecorch before restart policies: a crash stays visible as
STOPPED). Kubernetes' implicit Always is deliberately not applied to a
manifest that does not name one: the same manifest must not behave
differently from an AppD-only app on the same host, and an operator who
wants Kubernetes' behaviour sets `orchestrator.restart_policy.policy:
Always` for the host.

The timing: after the runtime dies, restart n (counting from 0) waits
`min(backoffInitialS * 2**n, backoffMaxS)`; after `limit` restarts with no
run of `resetAfterS` in between mecorch gives up (observed state
CRASH_LOOP). A run that lasts `resetAfterS` starts the count again.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from mecorch.kernel import validate
from mecorch.kernel.errors import InvalidInput

POLICIES = ("Always", "OnFailure", "Never")
# the wire names (request and AppD extension) of RestartPolicy's fields
RESTART_FIELDS = ("policy", "backoffInitialS", "backoffMaxS", "limit", "resetAfterS")
_ATTR = {"policy": "policy", "backoffInitialS": "backoff_initial_s",
         "backoffMaxS": "backoff_max_s", "limit": "limit", "resetAfterS": "reset_after_s"}
BACKOFF_MAX_S = 3600.0          # the longest wait between two restarts
LIMIT_MAX = 1000


@dataclass(frozen=True)
class RestartPolicy:
    policy: str = "Never"
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    limit: int = 10
    reset_after_s: float = 300.0

    def restarts_after(self, exit_code: int | None) -> bool:
        """Whether a runtime that ended with `exit_code` is started again
        (None: no exit code, e.g. a VM destroyed or crashed: a failure)."""
        if self.policy == "Always":
            return True
        return self.policy == "OnFailure" and exit_code != 0

    def delay(self, count: int) -> float:
        """The wait before restart number `count` (0 = the first)."""
        return min(self.backoff_initial_s * (2 ** min(count, 62)), self.backoff_max_s)

    def to_doc(self) -> dict:
        """As stored on the instance (`_restart.policy`) and shown."""
        return {wire: getattr(self, attr) for wire, attr in _ATTR.items()}

    @classmethod
    def from_doc(cls, doc: dict | None, default: "RestartPolicy") -> "RestartPolicy":
        """The stored form back; an instance made before restart policies
        (none stored) has the host default."""
        if not doc:
            return default
        return cls(**{attr: doc[wire] for wire, attr in _ATTR.items() if wire in doc})


def _policy(value, where: str) -> str:
    if value not in POLICIES:
        raise InvalidInput(f"{where}: must be one of {', '.join(POLICIES)} "
                           f"(got {str(value)[:40]!r})")
    return value


def _fields(doc, where: str) -> dict:
    """A RestartPolicy object (request or AppD extension) as attribute ->
    value, only the fields it gives, every one checked."""
    if not isinstance(doc, dict):
        raise InvalidInput(f"{where}: must be an object with {', '.join(RESTART_FIELDS)}")
    validate.known_fields(doc, RESTART_FIELDS, where)
    out = {}
    if "policy" in doc:
        out["policy"] = _policy(doc["policy"], f"{where}.policy")
    for name in ("backoffInitialS", "backoffMaxS", "resetAfterS"):
        if name in doc:
            out[_ATTR[name]] = validate.number(doc[name], f"{where}.{name}", 0, BACKOFF_MAX_S)
    if "limit" in doc:
        out["limit"] = validate.integer(doc["limit"], f"{where}.limit", 0, LIMIT_MAX)
    return out


def host_default(cfg_section: dict | None) -> RestartPolicy:
    """`orchestrator.restart_policy` of the configuration (its keys and
    types are checked by the config schema; the relation here)."""
    s = cfg_section or {}
    p = RestartPolicy(policy=s.get("policy", "Never"),
                      backoff_initial_s=float(s.get("backoff_initial_s", 1.0)),
                      backoff_max_s=float(s.get("backoff_max_s", 60.0)),
                      limit=int(s.get("limit", 10)),
                      reset_after_s=float(s.get("reset_after_s", 300.0)))
    _check_relation(p, "orchestrator.restart_policy", "backoff_initial_s", "backoff_max_s")
    return p


def _check_relation(p: RestartPolicy, where: str, first: str, most: str) -> None:
    if p.backoff_initial_s > p.backoff_max_s:
        raise InvalidInput(f"{where}.{first} ({p.backoff_initial_s:g}) must not be above "
                           f"{where}.{most} ({p.backoff_max_s:g})")


def kubernetes_policy(pod_spec: dict, kind: str, where: str) -> str | None:
    """The pod spec's `restartPolicy` (None when not given). Kubernetes
    accepts only Always in a Deployment's pod template: so does mecorch."""
    value = pod_spec.get("restartPolicy")
    if value is None:
        return None
    w = f"{where}.restartPolicy"
    _policy(value, w)
    if kind == "Deployment" and value != "Always":
        raise InvalidInput(f"{w}: a Deployment's pod template allows only Always "
                           f"(as in Kubernetes); got {value!r}")
    return value


TOSCA_POLICY_TYPE = "mecorch.policies.Restart"


def tosca_policy(doc: dict, root: str = "orchestrationInfo") -> tuple[dict, str]:
    """The fields of the service template's `mecorch.policies.Restart`
    policy and where it is ({} when it has none). TOSCA 1.3 writes
    `policies` as a list of one-entry mappings; a mapping is read too."""
    tt = doc.get("topology_template")
    policies = tt.get("policies") if isinstance(tt, dict) else None
    where = f"{root}.topology_template.policies"
    if policies is None:
        return {}, ""
    if isinstance(policies, dict):
        entries = [(f"{where}.{str(k)[:64]}", k, v) for k, v in policies.items()]
    elif isinstance(policies, list):
        entries = []
        for i, one in enumerate(policies):
            if not isinstance(one, dict) or len(one) != 1:
                raise InvalidInput(f"{where}[{i}]: must be a mapping of one policy name "
                                   "to its definition")
            (name, value), = one.items()
            entries.append((f"{where}[{i}].{str(name)[:64]}", name, value))
    else:
        raise InvalidInput(f"{where}: must be a list of policies")
    found = [(w, v) for w, _, v in entries
             if isinstance(v, dict) and v.get("type") == TOSCA_POLICY_TYPE]
    if len(found) > 1:
        raise InvalidInput(f"{found[1][0]}: a second {TOSCA_POLICY_TYPE} (one instance has "
                           "one restart policy)")
    if not found:
        return {}, ""
    w, policy = found[0]
    validate.known_fields(policy, ("type", "description", "properties", "targets"), w)
    props = policy.get("properties")
    return _fields({} if props is None else props, f"{w}.properties"), \
        f"{w}.properties"


def resolve(request: dict, manifest: dict, appd: dict, default: RestartPolicy,
            manifest_where: str = "orchestrationInfo") -> RestartPolicy:
    """The instance's policy from the four places (module docstring).
    `manifest`: what orchestrationInfo says (attribute -> value, as
    `_fields` gives them), found at `manifest_where`."""
    values = asdict(default)
    if appd.get("restartPolicy") is not None:
        values.update(_fields(appd["restartPolicy"], "AppD.restartPolicy"))
    values.update(manifest)
    if request.get("restartPolicy") is not None:
        given = _fields(request["restartPolicy"], "restartPolicy")
        said = manifest.get("policy")
        if said is not None and given.get("policy", said) != said:
            raise InvalidInput(f"restartPolicy.policy says {given['policy']!r} but "
                               f"{manifest_where} says {said!r}")
        values.update(given)
    p = RestartPolicy(**values)
    if p.backoff_initial_s > p.backoff_max_s:
        # either may come from the request, the AppD or the host default
        raise InvalidInput(f"restartPolicy: backoffInitialS ({p.backoff_initial_s:g}) is "
                           f"above backoffMaxS ({p.backoff_max_s:g}) (request, AppD and host "
                           "default merged)")
    return p


def check_appd(appd: dict) -> None:
    """The AppD's extension, checked at onboarding (refused naming the field)."""
    if appd.get("restartPolicy") is not None:
        given = _fields(appd["restartPolicy"], "AppD.restartPolicy")
        if {"backoff_initial_s", "backoff_max_s"} <= set(given):
            _check_relation(RestartPolicy(**given), "AppD.restartPolicy",
                            "backoffInitialS", "backoffMaxS")
