"""The host level's own extension of Mm3: what each edge host served here
reports of itself (`HostInfo`: manners, capacity, declared latency), and
the MEO's lifting of the host's fence of apps that are still its
(mecorch.mepm.fence). ETSI MEC 010-2 has no host inventory resource;
documented in /openapi.yaml."""

from __future__ import annotations

from mecorch.kernel import validate
from mecorch.kernel.errors import Forbidden, InvalidInput
from mecorch.kernel.http import Request, Response, Router
from mecorch.mepm.hostinfo import host_info

HOSTS = "/mecorch/v1/hosts"
MAX_UNFENCE = 1000          # ids in one unfence request


def install(r: Router, orch) -> None:
    def list_(req: Request) -> Response:
        return Response(200, [host_info(orch, h).to_dict() for h in orch.inventory.hosts])

    def one(req: Request) -> Response:
        orch.inventory.get(req.params["hostId"])        # 404 for an unknown host
        return Response(200, host_info(orch, req.params["hostId"]).to_dict())

    def unfence(req: Request) -> Response:
        """Only the MEO lifts a fence: it alone knows whether it re-placed
        the app meanwhile (an operator who wants the copy back without its
        MEO terminates and instantiates it)."""
        if not req.from_meo:
            raise Forbidden("only this MEPM's MEO lifts a fence (it alone knows whether the "
                            "app was re-placed on another host meanwhile)")
        orch.inventory.get(req.params["hostId"])        # 404 for an unknown host
        body = req.json()
        if not isinstance(body, dict) or set(body) != {"appInstanceIds"} \
                or not isinstance(body["appInstanceIds"], list):
            raise InvalidInput("body must be {\"appInstanceIds\": [ids]}")
        if len(body["appInstanceIds"]) > MAX_UNFENCE:
            raise InvalidInput(f"appInstanceIds: at most {MAX_UNFENCE} ids in one request")
        ids = [validate.ident(i, "appInstanceIds[]") for i in body["appInstanceIds"]]
        return Response(200, orch.fence.unfence(ids))

    r.add("GET", HOSTS, list_)
    r.add("GET", f"{HOSTS}/{{hostId}}", one)
    r.add("POST", f"{HOSTS}/{{hostId}}/unfence", unfence)
