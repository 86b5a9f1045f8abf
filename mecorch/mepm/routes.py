"""The host level's own extension of Mm3: what each edge host served here
reports of itself (`HostInfo`: manners, capacity, declared latency). ETSI
MEC 010-2 has no host inventory resource; documented in /openapi.yaml."""

from __future__ import annotations

from mecorch.kernel.http import Request, Response, Router
from mecorch.mepm.hostinfo import host_info

HOSTS = "/mecorch/v1/hosts"


def install(r: Router, orch) -> None:
    def list_(req: Request) -> Response:
        return Response(200, [host_info(orch, h).to_dict() for h in orch.inventory.hosts])

    def one(req: Request) -> Response:
        orch.inventory.get(req.params["hostId"])        # 404 for an unknown host
        return Response(200, host_info(orch, req.params["hostId"]).to_dict())

    r.add("GET", HOSTS, list_)
    r.add("GET", f"{HOSTS}/{{hostId}}", one)
