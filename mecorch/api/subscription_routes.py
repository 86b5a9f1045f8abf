"""Routes of the northbound subscriptions (ETSI GS MEC 010-2):
/app_pkgm/v1/subscriptions[/{subscriptionId}] and
/app_lcm/v1/subscriptions[/{subscriptionId}] (mecorch.notifications.subscriptions)."""

from __future__ import annotations

from mecorch.kernel.errors import NotFound
from mecorch.notifications.subscriptions import LCM_SUBS, PKGM_SUBS, Duplicate
from mecorch.kernel.http import Request, Response, Router

LCM_QUERY = ("subscriptionType",)


def install(r: Router, o) -> None:
    def subs():
        # bound per request: a process without subscriptions (an MEO
        # today) answers 404 rather than failing
        service = getattr(o, "subscriptions", None)
        if service is None:
            raise NotFound("this mecorch does not serve subscriptions")
        return service

    def create(api: str):
        def handler(req: Request) -> Response:
            try:
                info = subs().create(api, req.json(), req.query.get("subscriptionType"))
            except Duplicate as d:
                # the same subscription exists: See Other, no second one
                return Response(303, None, {"Location": d.existing["_links"]["self"]["href"]})
            return Response(201, info, {"Location": info["_links"]["self"]["href"]})
        return handler

    def listing(api: str):
        return lambda req: Response(200, subs().list(api, req.query.get("subscriptionType")))

    def one(api: str):
        return lambda req: Response(200, subs().get(api, req.params["id"],
                                                    req.query.get("subscriptionType")))

    def delete(api: str):
        def handler(req: Request) -> Response:
            subs().delete(api, req.params["id"])
            return Response(204)
        return handler

    json = "application/json"
    r.add("POST", PKGM_SUBS, create("pkgm"), produces=json, query=())
    r.add("GET", PKGM_SUBS, listing("pkgm"), produces=json, query=())
    r.add("GET", f"{PKGM_SUBS}/{{id}}", one("pkgm"), produces=json, query=())
    r.add("DELETE", f"{PKGM_SUBS}/{{id}}", delete("pkgm"), query=())
    r.add("POST", LCM_SUBS, create("lcm"), produces=json, query=LCM_QUERY)
    r.add("GET", LCM_SUBS, listing("lcm"), produces=json, query=LCM_QUERY)
    r.add("GET", f"{LCM_SUBS}/{{id}}", one("lcm"), produces=json, query=LCM_QUERY)
    r.add("DELETE", f"{LCM_SUBS}/{{id}}", delete("lcm"), query=())
