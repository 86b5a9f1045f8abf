"""One planned request: an InstantiateAppRequest parsed and normalised once.

`plan_request` reads the request (its orchestrationInfo parsed exactly once) with
the instance's package into one frozen `Plan`: the decided manner and its
reason, the `ResourceRequest` the driver gets, its `Need`, the rules as
validated `spec.rules` values, the hosts wanted, the AppD's acceleration
and latency asks. The LCM of each level builds it once and hands it down
unchanged: placement reads it, the rules are claimed from its values, the
driver deploys its request. Across Mm3 the MEO sends the MEC 010-2 body,
not the plan: the MEPM plans again on its side (one parse per level) and
checks the result against its own host.

A dual-format app whose request names no manner is given one by a
`Chooser` (the manner policy of the level) from the resource requests of
both manners, computed from the same one parse.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from mecorch.kernel import validate
from mecorch.kernel.errors import InvalidInput
from mecorch.kernel.states import DeploymentType
from mecorch.driverapi.model import ResourceRequest
from mecorch.spec import decision, orchestration_info, placement, restart
from mecorch.spec.probes import Probes, probes_of
from mecorch.spec.capacity import Need, need_of
from mecorch.spec.decision import Decision
from mecorch.spec.rules import DnsRule, TrafficRule, fixed_addresses, instance_rules

__all__ = ["INSTANTIATE_FIELDS", "Chooser", "Plan", "image_of", "plan_request", "selected_hosts"]

# InstantiateAppRequest as mecorch defines it: ETSI's attributes and
# mecorch's documented extensions (a misspelling of one is refused).
INSTANTIATE_FIELDS = ("selectedMECHostInfo", "locationConstraints", "vimConnectionInfo",
                      "virtualComputeDescriptor", "virtualStorageDescriptor",
                      *decision.TYPE_FIELDS, "orchestrationInfo", "appTrafficRule", "appDNSRule",
                      "shareServiceAddress", "restartPolicy")

# The manner policy of a dual-format app: (the manners its package holds,
# each one's Need, whether the AppD asks for hardware acceleration) ->
# (manner, reason, the hosts found fit for it; empty: no restriction).
Chooser = Callable[[tuple[DeploymentType, ...], dict[DeploymentType, Need], bool],
                   tuple[DeploymentType, str, list[str]]]


@dataclass(frozen=True)
class Plan:
    """One instantiate request, decided: what every later step reads."""
    decision: Decision                      # manner, the signal that decided, reason
    request: ResourceRequest                # what the driver gets
    need: Need                              # what it takes of a host
    traffic: tuple[TrafficRule, ...]        # the instance's rules, validated
    dns: tuple[DnsRule, ...]
    wanted: tuple[str, ...]                 # selectedMECHostInfo, or the policy's fit hosts
    accel: bool                             # a VM whose AppD asks for acceleration
    max_latency_ns: int | None              # the AppD's appLatency
    probes: Probes = Probes()               # health checks (spec/probes.py)
    # mecorch extension: a replica, sharing the destinations and names of
    # the same app's instances on its host (`spec.rules.claim_conflict`)
    share: bool = False
    restart: restart.RestartPolicy = restart.RestartPolicy()   # spec/restart.py

    @property
    def fixed_addresses(self) -> tuple[str, ...]:
        """The service addresses the rules name (placement: a host whose
        range holds them); those they ask the host for are not here."""
        return fixed_addresses(self.traffic)

    @property
    def manner(self) -> DeploymentType:
        return self.decision.manner


def image_of(pkg: dict, manner: DeploymentType) -> str:
    """The package's stored image for `manner`."""
    return (pkg.get("_imageOf") or {}).get(manner.value) or pkg.get("_image") or ""


def plan_request(instance_id: str, pkg: dict, body: dict,
                 choose: Chooser | None = None,
                 restart_default: restart.RestartPolicy | None = None) -> Plan:
    """Plan an InstantiateAppRequest `body` for instance `instance_id` of
    package `pkg` (the stored AppPkgInfo: its AppD, manners and images).
    Pure but for `choose`; InvalidInput (400) / CapacityExceeded (409)
    before anything exists. orchestrationInfo is parsed here, once.
    `restart_default`: the host's restart policy (the MEO, which restarts
    nothing, leaves it None: the request is only checked)."""
    if not isinstance(body, dict):
        raise InvalidInput("body must be an InstantiateAppRequest object")
    appd = pkg["_appd"]
    parsed = decision.read_orchestration_info(body)
    requests: dict[DeploymentType, ResourceRequest] = {}

    def request_for(manner: DeploymentType) -> ResourceRequest:
        if manner not in requests:
            requests[manner] = decision.resource_request(
                instance_id, appd, manner, image_of(pkg, manner), body, parsed)
        return requests[manner]

    fit: list[str] = []

    def policy(manners: tuple[DeploymentType, ...]) -> tuple[DeploymentType, str]:
        needs = {m: need_of(request_for(m)) for m in manners}
        accel = DeploymentType.VM in manners and decision.accel_required(appd)
        manner, reason, hosts = choose(manners, needs, accel)
        fit[:] = hosts
        return manner, reason

    recorded = pkg.get("_manners") or [pkg["_manner"]]
    choice = decision.decide_manner(body, recorded, policy if choose else None, parsed)
    request = request_for(choice.manner)
    traffic, dns = instance_rules(appd, body)
    share = body.get("shareServiceAddress", False)
    if not isinstance(share, bool):
        raise InvalidInput("shareServiceAddress: must be true or false")
    said, where = _restart_said(parsed)
    restarts = restart.resolve(body, said, appd, restart_default or restart.RestartPolicy(),
                               where)
    return Plan(choice, request, need_of(request), traffic, dns,
                tuple(fit or selected_hosts(body)),
                choice.manner is DeploymentType.VM and decision.accel_required(appd),
                placement.max_latency_ns(appd),
                probes=probes_of(appd, choice.manner, parsed), share=share, restart=restarts)


def _restart_said(parsed) -> tuple[dict, str]:
    """What orchestrationInfo says of the restart policy, and where."""
    if parsed is None:
        return {}, ""
    if parsed.kind == "TOSCA":
        return restart.tosca_policy(parsed.doc)
    pod = orchestration_info.pod_spec_of(parsed)
    said = restart.kubernetes_policy(pod[0], parsed.kind, pod[1]) if pod else None
    return ({"policy": said}, f"{pod[1]}.restartPolicy") if said else ({}, "")


def selected_hosts(body: dict) -> list[str]:
    """Host ids named in selectedMECHostInfo (MECHostInformation.hostId is
    KeyValuePairs in the spec; mecorch reads {"id": ...} or a plain string)."""
    infos = body.get("selectedMECHostInfo") or []
    if not isinstance(infos, list):
        raise InvalidInput("selectedMECHostInfo must be an array of MECHostInformation")
    ids = []
    for i, info in enumerate(infos):
        hid = info.get("hostId") if isinstance(info, dict) else None
        if isinstance(hid, dict):
            hid = hid.get("id")
        ids.append(validate.ident(hid, f"selectedMECHostInfo[{i}].hostId"))
    return ids
