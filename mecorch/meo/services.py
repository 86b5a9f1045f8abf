"""The MEC 011 services of every edge host, as the MEO shows them to its
operator: read from each reachable host's registry when asked
(`Mepm.services`), read-only (the apps publish on their own host's MEPM,
mecorch.mepm.services), each with the `hostId` it runs on (a mecorch
extension of ServiceInfo). Nothing is kept: a host that is away is left
out of the answer and named in its warning."""

from __future__ import annotations

from mecorch.kernel.errors import BackendUnavailable, InvalidInput, MecorchError, NotFound
from mecorch.kernel.http import Request, Response, Router, warning
from mecorch.meo.registry import REACHABLE, Registry
from mecorch.spec.services import QUERY, Discovery, ServiceInfo

SERVICE_MGMT = "/mec_service_mgmt/v1"


def every_host(registry: Registry) -> tuple[list[dict], list[str]]:
    """(every service of the reachable hosts, each with its hostId; the
    hosts left out and why)."""
    found, away = [], []
    for entry in registry.entries():
        if entry.state != REACHABLE:
            away.append(f"{entry.host_id} ({entry.state})")
            continue
        try:
            got = entry.mepm.services()
        except BackendUnavailable as e:
            away.append(f"{entry.host_id} ({e.detail[:200]})")
            continue
        except MecorchError as e:       # an MEPM older than its registry
            away.append(f"{entry.host_id} (answered {e.status}: {e.detail[:200]})")
            continue
        found += [{**s, "hostId": entry.host_id} for s in got]
    return found, away


def install(r: Router, registry: Registry) -> None:
    def listing(req: Request) -> Response:
        wanted = Discovery.parse(req.query_all)
        if wanted.is_local is not None:
            raise InvalidInput("is_local is relative to the app asking: an MEO has no app "
                               "(ask the app's host)")
        found, away = every_host(registry)
        out = [s for s in found
               if wanted.matches(s["serInstanceId"], ServiceInfo.parse(_info(s)), True)]
        return Response(200, out, warning(away and "services of edge hosts " + ", ".join(away)
                                          + " are left out: not reachable"))

    def one(req: Request) -> Response:
        found, away = every_host(registry)
        for s in found:
            if s["serInstanceId"] == req.params["serviceId"]:
                return Response(200, s)
        where = f" (not asked: {', '.join(away)})" if away else ""
        raise NotFound(f"service {req.params['serviceId']!r} is on no reachable edge "
                       f"host{where}")

    json = "application/json"
    r.add("GET", f"{SERVICE_MGMT}/services", listing, produces=json, query=QUERY)
    r.add("GET", f"{SERVICE_MGMT}/services/{{serviceId}}", one, produces=json, query=())


def _info(service: dict) -> dict:
    """The ServiceInfo a host answered, without what the MEO added."""
    return {k: v for k, v in service.items() if k != "hostId"}
