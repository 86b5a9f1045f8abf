"""Where an instance goes: the one placement engine of both levels. Pure:
each host's facts are handed in as a `Candidate` (its room per manner by
`spec.capacity`, reservations included; reachability; declared latency), so
every rule is tested without a backend or a network. The MEO places over
the hosts' last reports (`meo/registry.py`); the single node over its own
inventory (`mepm/inventory.py`); the rules and their wording are the same.

Order, as ETSI's MEO "selects an appropriate mobile edge host ... based on
a constraint":
1. an explicit `selectedMECHostInfo` restricts the candidates to those
   hosts (an unknown one is a 404);
2. a host must not be cordoned (an MEO's operator took it out of
   placement: `meo/registry.py`), be reachable, support the decided
   manner (a host without a VIM takes no VM), have room for vCPU, memory
   and disk, and meet the AppD's `appLatency` when it declares its
   latency (and, for a VM whose
   AppD asks for hardware acceleration, have a KVM VIM); its driver must
   take the request as its declared capabilities say (limits of one
   instance, RETAIN volumes, host ports: `capacity.unfit_for`); and a
   request that names fixed service addresses (trafficFilter.dstAddress)
   goes only to a host whose service range holds them all (a host that
   reports no range is not held to one: its MEP checks the rules), and
   not to a host where another instance holds one of the destinations
   (address:port/protocol) or DNS names it claims, as the level knows the
   host's claims (`Candidate.held`; the host's own ledger checks again);
3. among the hosts left, the one with the most free capacity after the
   placement wins (the smaller of its free vCPU and memory shares), then
   the host id, so the choice is stable.
"No host fits" is a 409 that names every host and why it was left out.
The choice explains itself (`choose`): the winner and why, then every
host left out and why ("edge2: most room left of 2 fitting; edge1: no
VIM: takes no VM"), recorded in the op's and instance's decisionReason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mecorch.kernel.errors import CapacityExceeded, NotFound
from mecorch.driverapi.contracts import Capabilities
from mecorch.driverapi.model import ResourceRequest
from mecorch.kernel.states import DeploymentType
from mecorch.spec import capacity, rules
from mecorch.spec.capacity import Need, Room
from mecorch.spec.decision import HostFacts

# A placement's reason (the op's and instance's decisionReason) names at
# most this many tied hosts and hosts that do not fit, then counts the
# rest: with 1,000 hosts it named them all, ~10 KB in every instance.
NAMED = 5
_LAST = chr(0x10FFFF)       # after every character a host id may hold


@dataclass(frozen=True)
class Candidate:
    host_id: str
    reachable: bool
    rooms: dict[str, Room] = field(default_factory=dict)   # manner value -> room
    vm_accel: str = ""                  # the VIM's: "kvm" | "tcg" once probed
    latency_ms: float | None = None     # declared one-way latency to its UEs
    # manner value -> the driver's declared Capabilities (none: not declared)
    capabilities: dict[str, Capabilities] = field(default_factory=dict)
    service_cidr: str | None = None     # its MEP's service range (None: not reported)
    # the claims of its other instances as the placing level knows them:
    # (instance id, rule set: ETSI trafficRules, dnsRules, and appDId)
    held: tuple[tuple[str, dict], ...] = ()
    # an MEO's operator cordoned it (its reason, "" when none was given):
    # it takes no new placement (None: not cordoned)
    cordoned: str | None = None


@dataclass(frozen=True)
class Claims:
    """What a request claims on its host before the host gives it an
    address: its rules' fixed destinations and its DNS names."""
    traffic: tuple = ()
    dns: tuple = ()
    app_d_id: str | None = None     # the app (its instances share DNS names)
    share: bool = False             # a replica: shares the app's destinations too

    def taken_on(self, c: Candidate) -> str | None:
        """The host's wording of what another instance there holds, or None."""
        return rules.claim_conflict(self.traffic, self.dns, self.app_d_id, c.held,
                                    self.share) if c.held else None


def why_not(c: Candidate, manner: DeploymentType, need: Need,
            max_latency_ns: int | None = None, accel: bool = False,
            request: ResourceRequest | None = None, fixed: tuple[str, ...] = (),
            claims: Claims | None = None) -> str | None:
    """Why the host cannot take the instance, or None when it can.
    `fixed`: the service addresses the request names; `claims`: what it
    claims against the host's other instances (`Candidate.held`)."""
    if c.cordoned is not None:
        return cordon_words(c.cordoned)
    if not c.reachable:
        return "UNREACHABLE"
    if fixed and c.service_cidr:
        outside = [a for a in fixed if not rules.in_range(a, c.service_cidr)]
        if outside:
            return (f"its service range {c.service_cidr} does not hold "
                    f"{', '.join(outside)}")
    if claims is not None:
        taken = claims.taken_on(c)
        if taken:
            return taken
    room = c.rooms.get(manner.value)
    if room is None:
        return "no VIM: takes no VM" if manner is DeploymentType.VM \
            else "no CIM: takes no container"
    if accel and manner is DeploymentType.VM:
        refused = capacity.accel_refusal(c.vm_accel)
        if refused:
            return refused
    if max_latency_ns is not None and c.latency_ms is not None \
            and c.latency_ms * 1_000_000 > max_latency_ns:
        return (f"latency {c.latency_ms:g} ms over the app's maximum "
                f"{max_latency_ns / 1_000_000:g} ms")
    caps = c.capabilities.get(manner.value)
    if request is not None and caps is not None:
        refused = capacity.unfit_for(caps, request)
        if refused:
            return refused
    return room.why_not(need)


def cordon_words(reason: str) -> str:
    """How a cordoned host is left out: "cordoned" with its reason."""
    return f"cordoned ({reason})" if reason else "cordoned"


def place(manner: DeploymentType, need: Need, candidates: list[Candidate],
          wanted: list[str] | None = None, max_latency_ns: int | None = None,
          accel: bool = False, request: ResourceRequest | None = None,
          fixed: tuple[str, ...] = (), claims: Claims | None = None) -> str:
    """The host id the instance goes to; CapacityExceeded (409) naming every
    host's reason when none fits; NotFound (404) for an unknown wanted host.
    `request`: checked against each host's declared driver capabilities;
    `fixed`: the service addresses it names (a host's range must hold them);
    `claims`: what it claims (no other instance of the host may hold it)."""
    return choose(manner, need, candidates, wanted, max_latency_ns, accel, request, fixed,
                  claims)[0]


def choose(manner: DeploymentType, need: Need, candidates: list[Candidate],
           wanted: list[str] | None = None, max_latency_ns: int | None = None,
           accel: bool = False, request: ResourceRequest | None = None,
           fixed: tuple[str, ...] = (), claims: Claims | None = None) -> tuple[str, str]:
    """`place`, with its reason: (host id, "edge2: most room left of 2
    fitting; edge1: no VIM: takes no VM")."""
    by_id = {c.host_id: c for c in candidates}
    if wanted:
        unknown = [h for h in wanted if h not in by_id]
        if unknown:
            raise NotFound(f"unknown edge host {unknown[0]!r}; known: "
                           f"{', '.join(sorted(by_id)) or 'none'}")
        pool = [by_id[h] for h in dict.fromkeys(wanted)]
    else:
        pool = sorted(candidates, key=lambda c: c.host_id)
    fits, reasons = [], []
    for c in pool:
        why = why_not(c, manner, need, max_latency_ns, accel, request, fixed, claims)
        if why is None:
            fits.append(c)
        else:
            reasons.append(f"{c.host_id}: {why}")
    if not fits:
        asked = f", service address {', '.join(fixed)}" if fixed else ""
        raise CapacityExceeded(
            f"no edge host fits {manner.value} {need.vcpu:g} vCPU, {need.memory_mb} MB, "
            f"{need.disk_gb:g} GB{asked} ({'; '.join(reasons) or 'no edge host is registered'})")
    # each host's share left reckoned once, its id's key only among the
    # most free (1,000 hosts: it was a third of a placement's time)
    lefts = {c.host_id: c.rooms[manner.value].share_left(need) for c in fits}
    most = max(lefts.values())
    # ties go to the host id smaller at the first character that differs,
    # the longer when one id begins the other (as a max() over each id's
    # negated code points did, without a tuple per host)
    best = min((c for c in fits if lefts[c.host_id] == most), key=lambda c: c.host_id + _LAST)
    if len(fits) == 1:
        why = ("the selected host that fits" if wanted and len(pool) > 1
               else "the selected host" if wanted else "the only host that fits")
    else:
        left = lefts[best.host_id]
        why = (f"most room left of {len(fits)} fitting ({left:.0%} of its vCPU and "
               f"memory free after it)")
        tied = [c.host_id for c in fits if c is not best and lefts[c.host_id] == left]
        if tied:
            why += f" (tied with {_some(tied)}: the first host id)"
    if fixed and best.service_cidr:
        why += f", its service range {best.service_cidr} holds {', '.join(fixed)}"
    if len(reasons) > NAMED:
        reasons = [*reasons[:NAMED], f"{len(reasons) - NAMED} more hosts that do not fit"]
    return best.host_id, "; ".join([f"{best.host_id}: {why}", *reasons])


def _some(host_ids: list[str]) -> str:
    """At most NAMED host ids, and how many more."""
    if len(host_ids) <= NAMED:
        return ", ".join(host_ids)
    return f"{', '.join(host_ids[:NAMED])} and {len(host_ids) - NAMED} more"


def facts(c: Candidate) -> HostFacts:
    """The host as the manner policy (`decision.choose_manner`) sees it: its
    cores, memory and disk are shared by its containers and VMs, so its
    room is the least either reports."""
    return HostFacts(c.host_id, DeploymentType.CONTAINER.value in c.rooms,
                     DeploymentType.VM.value in c.rooms, c.vm_accel,
                     *capacity.shared(list(c.rooms.values())))


def max_latency_ns(appd: dict) -> int | None:
    """The AppD's appLatency.maxLatency (nanoseconds), or None."""
    lat = appd.get("appLatency")
    if isinstance(lat, dict) and isinstance(lat.get("maxLatency"), int):
        return lat["maxLatency"]
    return None


def plan_claims(plan, app_d_id: str | None = None) -> Claims:
    """What a planned request claims before its host gives it an address."""
    return Claims(rules.with_fixed_addresses(plan.traffic), tuple(plan.dns), app_d_id,
                  plan.share)


def choose_plan(plan, candidates: list[Candidate],
                app_d_id: str | None = None) -> tuple[str, str]:
    """`choose` for a planned request (`spec.plan.Plan`): its manner, need,
    wanted hosts, latency and acceleration asks, its request against each
    host's declared capabilities, the service addresses it names, and its
    claims against each host's `held` (`app_d_id`: the request's app)."""
    return choose(plan.manner, plan.need, candidates, list(plan.wanted), plan.max_latency_ns,
                  plan.accel, plan.request, plan.fixed_addresses, plan_claims(plan, app_d_id))
