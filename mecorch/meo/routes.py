"""The MEO's host registry as HTTP resources (a documented extension: ETSI
MEC 010-2 names no host inventory): the hosts with their state
(REACHABLE / UNREACHABLE) and last reported capacity, and the
registration of an MEPM."""

from __future__ import annotations

from mecorch.kernel.http import Request, Response, Router

HOSTS = "/mecorch/v1/hosts"


def install(r: Router, meo) -> None:
    reg = meo.registry

    def register(req: Request) -> Response:
        view = reg.register(req.json())
        return Response(201, view, {"Location": f"{HOSTS}/{view['hostId']}"})

    def deregister(req: Request) -> Response:
        reg.deregister(req.params["hostId"])
        return Response(204)

    r.add("GET", HOSTS, lambda req: Response(200, [e.view() for e in reg.entries()]))
    r.add("POST", HOSTS, register)
    r.add("GET", f"{HOSTS}/{{hostId}}",
          lambda req: Response(200, reg.get(req.params["hostId"]).view()))
    r.add("DELETE", f"{HOSTS}/{{hostId}}", deregister)
