"""The MEO's host registry as HTTP resources (a documented extension: ETSI
MEC 010-2 names no host inventory): the hosts with their state
(REACHABLE / UNREACHABLE) and last reported capacity, the
registration of an MEPM, the cordon of a host (no new placement there)
and its drain (cordon, then relocate what runs there)."""

from __future__ import annotations

from mecorch.kernel import validate
from mecorch.kernel.errors import InvalidInput, NotFound, UnsupportedAction
from mecorch.kernel.http import Request, Response, Router, warning
from mecorch.meo import drain, follow, services

HOSTS = "/mecorch/v1/hosts"
LEADER = "/mecorch/v1/leader"
MP1 = "/mec_app_support/v1"
# ETSI MEC 011's rules of an app, read at the MEO from the host that holds
# them (the MEP is the host's): read-only here.
_KINDS = {"traffic_rules": ("trafficRules", "trafficRuleId"),
          "dns_rules": ("dnsRules", "dnsRuleId")}


def install(r: Router, meo) -> None:
    reg = meo.registry

    def register(req: Request) -> Response:
        view = reg.register(req.json())
        return Response(201, view, {"Location": f"{HOSTS}/{view['hostId']}"})

    def deregister(req: Request) -> Response:
        reg.deregister(req.params["hostId"])
        return Response(204)

    def cordon(req: Request) -> Response:
        hid = req.params["hostId"]
        reg.cordon(hid, cordon_reason(req))
        return Response(200, reg.view(hid))

    def uncordon(req: Request) -> Response:
        hid = req.params["hostId"]
        reg.uncordon(hid)
        return Response(200, reg.view(hid))

    r.add("GET", HOSTS, lambda req: Response(200, reg.views()))
    r.add("POST", HOSTS, register)
    r.add("GET", f"{HOSTS}/{{hostId}}", lambda req: Response(200, reg.view(req.params["hostId"])))
    r.add("DELETE", f"{HOSTS}/{{hostId}}", deregister)
    r.add("POST", f"{HOSTS}/{{hostId}}/cordon", cordon)
    r.add("POST", f"{HOSTS}/{{hostId}}/uncordon", uncordon)

    def drain_host(req: Request) -> Response:
        """Cordon, then relocate each instance (meo/drain.py): 202, the
        relocations run as op occurrences of their own."""
        return Response(202, drain.drain(meo.lcm, reg, req.params["hostId"],
                                         cordon_reason(req)))
    r.add("POST", f"{HOSTS}/{{hostId}}/drain", drain_host)

    def leader(req: Request) -> Response:
        """Which replica runs the background work (mecorch.meo.leader), as
        this replica last read the lease; `leading`: this replica does."""
        lease = meo.lease
        row = lease.holder or {}
        return Response(200, {"replica": lease.me, "leading": lease.leading(),
                              "leader": row.get("holder"), "epoch": row.get("epoch"),
                              "leaderUrl": row.get("url"), "leaseS": lease.ttl_s})
    r.add("GET", LEADER, leader)

    # MEC 011 services of every host, read-only
    services.install(r, reg)
    # the hosts' op notifications (mecorch.meo.follow)
    follow.install(r, meo.lcm)

    # ---------------------------------------------------------------- Mp1, read through
    lcm = meo.lcm
    app = f"{MP1}/applications/{{app}}"

    def rules(kind: str):
        key, id_field = _KINDS[kind]

        def list_(req: Request) -> Response:
            got, warn = lcm.host_rules(req.params["app"])
            return Response(200, got[key], warning(warn))

        def get(req: Request) -> Response:
            got, warn = lcm.host_rules(req.params["app"])
            for rule in got[key]:
                if rule.get(id_field) == req.params["rule"]:
                    return Response(200, rule, warning(warn))
            raise NotFound(f"{kind[:-1].replace('_', ' ')} {req.params['rule']!r} of instance "
                           f"{req.params['app']} does not exist")

        def put(req: Request) -> Response:
            inst = lcm.get(req.params["app"])
            host = (inst.get("_hostInstance") or {}).get("hostId") or "its edge host"
            raise UnsupportedAction(f"an MEO shows an app's {kind.replace('_', ' ')} read-only: "
                                    f"change them at the MEPM of {host} (its Mp1, "
                                    f"{MP1}/applications/{{appInstanceId}}/{kind}/{{ruleId}})")
        r.add("GET", f"{app}/{kind}", list_)
        r.add("GET", f"{app}/{kind}/{{rule}}", get)
        r.add("PUT", f"{app}/{kind}/{{rule}}", put)

    rules("traffic_rules")
    rules("dns_rules")


def cordon_reason(req: Request) -> str:
    """The optional body of a cordon (or drain): {"reason": text}; none,
    or no reason, is ""."""
    if not req.raw:
        return ""
    body = req.json()
    if not isinstance(body, dict):
        raise InvalidInput('body must be an object: {"reason": text}')
    validate.known_fields(body, ("reason",), "cordon request")
    if body.get("reason") is None:
        return ""
    return validate.text(body["reason"], "reason", 256)
