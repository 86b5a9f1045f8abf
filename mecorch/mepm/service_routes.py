"""Routes of the MEC 011 service registry (/mec_service_mgmt/v1,
mecorch.mepm.services), as MecServiceMgmtApi.yaml v2.1.1 names them:

- applications/{appInstanceId}/services[/{serviceId}]: an app's own
  services (APP: its own Mp1 token, or an operator's);
- applications/{appInstanceId}/subscriptions[/{subscriptionId}]: its
  service-availability subscriptions (APP);
- services[/{serviceId}], transports: discovery, open to every app of the
  MEPM and its operator (APPS).
"""

from __future__ import annotations

from mecorch.kernel.http import APP, APPS, Request, Response, Router
from mecorch.mepm.services import SERVICE_MGMT, TRANSPORTS, ServiceRegistry, etag
from mecorch.spec.services import QUERY

JSON = "application/json"


def install(r: Router, registry: ServiceRegistry) -> None:
    app = f"{SERVICE_MGMT}/applications/{{app}}"

    def own(req: Request) -> Response:
        return Response(200, registry.own(req.params["app"], req.query_all))

    def register(req: Request) -> Response:
        info = registry.register(req.params["app"], req.json())
        href = f"{SERVICE_MGMT}/applications/{req.params['app']}/services/" \
               f"{info['serInstanceId']}"
        return Response(201, info, {"Location": href})

    def own_one(req: Request) -> Response:
        info = registry.own_one(req.params["app"], req.params["serviceId"])
        return Response(200, info, {"ETag": f'"{etag(info)}"'})

    def update(req: Request) -> Response:
        info = registry.update(req.params["app"], req.params["serviceId"], req.json(),
                               req.headers.get("If-Match"))
        return Response(200, info, {"ETag": f'"{etag(info)}"'})

    def delete(req: Request) -> Response:
        registry.delete(req.params["app"], req.params["serviceId"])
        return Response(204)

    def subscribe(req: Request) -> Response:
        sub = registry.subscribe(req.params["app"], req.json())
        return Response(201, sub, {"Location": sub["_links"]["self"]["href"]})

    def unsubscribe(req: Request) -> Response:
        registry.unsubscribe(req.params["app"], req.params["sub"])
        return Response(204)

    r.add("GET", f"{app}/services", own, APP, produces=JSON, query=QUERY)
    r.add("POST", f"{app}/services", register, APP, produces=JSON, query=())
    r.add("GET", f"{app}/services/{{serviceId}}", own_one, APP, produces=JSON, query=())
    r.add("PUT", f"{app}/services/{{serviceId}}", update, APP, produces=JSON, query=())
    r.add("DELETE", f"{app}/services/{{serviceId}}", delete, APP, query=())
    r.add("GET", f"{app}/subscriptions",
          lambda req: Response(200, registry.subscriptions(req.params["app"])), APP,
          produces=JSON, query=())
    r.add("POST", f"{app}/subscriptions", subscribe, APP, produces=JSON, query=())
    r.add("GET", f"{app}/subscriptions/{{sub}}",
          lambda req: Response(200, registry.subscription(req.params["app"],
                                                          req.params["sub"])),
          APP, produces=JSON, query=())
    r.add("DELETE", f"{app}/subscriptions/{{sub}}", unsubscribe, APP, query=())

    r.add("GET", f"{SERVICE_MGMT}/services",
          lambda req: Response(200, registry.discover(req.query_all, req.app)), APPS,
          produces=JSON, query=QUERY)
    r.add("GET", f"{SERVICE_MGMT}/services/{{serviceId}}",
          lambda req: Response(200, registry.one(req.params["serviceId"], req.app)), APPS,
          produces=JSON, query=())
    r.add("GET", f"{SERVICE_MGMT}/transports",
          lambda req: Response(200, [dict(t) for t in TRANSPORTS]), APPS, produces=JSON,
          query=())
