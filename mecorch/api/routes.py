"""Route table: ETSI paths to the orchestrator's services."""

from __future__ import annotations

import os
import urllib.parse

from mecorch.api import appd_forms
from mecorch.mepm import service_routes, timing
from mecorch.mepm.mp1 import MP1, etag
from mecorch.mepm.orchestrator import Orchestrator
from mecorch.package.manager import PKGM
from mecorch.kernel.journal import LCM
from mecorch.kernel import filters, paging
from mecorch.kernel.errors import Conflict, Forbidden, NotFound
from mecorch.kernel.states import OnboardingState
from mecorch.kernel.http import APP, FileBody, Request, Response, Router, UnsupportedMediaType


# The query parameters of the ETSI listings mecorch honours: every attribute
# is always returned (all_fields); fields / exclude_fields / exclude_default
# are refused by name rather than ignored.
LISTING = ("filter", "all_fields")
JSON, ZIP = "application/json", "application/zip"


# One identity across the levels: the MEO's id of the package or instance a
# POST creates (mecorch extension of Mm3), taken from the MEPM's MEO only.
MEO_ID = "X-Mecorch-Meo-Id"


def meo_id(req: Request) -> str | None:
    """The MEO's id for the resource `req` creates (None when the header is
    absent); refused from any caller but the MEPM's MEO. Validated as any
    id by the service that makes the resource."""
    given = req.headers.get(MEO_ID)
    if given is not None and not req.from_meo:
        raise Forbidden(f"{MEO_ID} is taken only from this MEPM's MEO: a single node "
                        "or an MEO names its resources itself")
    return given


def install(r: Router, o: Orchestrator) -> None:
    pk, lcm, mep = o.packages, o.lcm, o.mep

    # ---------------------------------------------------------------- app_pkgm
    def onboard(req: Request) -> Response:
        info = pk.view(pk.resource(pk.onboard(req.json(), meo_id(req))["id"]))
        return Response(201, info, {"Location": info["_links"]["self"]["href"]})

    def upload(req: Request) -> Response:
        """Two-step onboarding: the zip of a package created without
        appPkgPath, streamed to disk (never held whole in memory)."""
        ctype = req.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype != "application/zip":
            raise UnsupportedMediaType("package content must be sent as application/zip")
        info = pk.upload(req.params["id"], req.stream)
        return Response(202, None, {"Location": info["_links"]["self"]["href"]})

    def list_packages(req: Request) -> Response:
        filters.check(req.query.get("filter"), "AppPkgInfo")
        # NFV-SOL 013 paging: a Link rel="next" header while more remain
        items, marker = pk.list_page(req.query.get("filter"),
                                     req.query.get("nextpage_opaque_marker"),
                                     int(o.cfg["api"]["page_size"]))
        headers = {}
        if marker:
            query = {k: v for k, v in req.query.items() if k != "nextpage_opaque_marker"}
            query["nextpage_opaque_marker"] = marker
            headers["Link"] = f'<{PKGM}/app_packages?{urllib.parse.urlencode(query)}>; rel="next"'
        return Response(200, paging.body(items), headers)

    def get_package(req: Request) -> Response:
        return Response(200, pk.view(pk.resource(req.params["id"])))

    def patch_package(req: Request) -> Response:
        return Response(200, pk.modify(req.params["id"], req.json()))

    def delete_package(req: Request) -> Response:
        gone = pk.delete(req.params["id"], req.query)
        return Response(204) if gone else Response(202)

    def appd(req: Request) -> Response:
        """The AppD as text/plain, application/zip (ETSI's) or JSON
        (mecorch's), as negotiated (mecorch.api.appd_forms)."""
        doc = pk.get(req.params["id"]) if "id" in req.params else pk.by_appd(req.params["appDId"])
        return appd_forms.answer(doc, req.media_types)

    def content(req: Request) -> Response:
        """The package zip, sent from the file in blocks."""
        if "id" in req.params:
            doc = pk.resource(req.params["id"])
            if doc["onboardingState"] != OnboardingState.ONBOARDED.value:
                raise Conflict(f"app package {doc['id']} is {doc['onboardingState']}: "
                               "it has no content yet")
        else:
            doc = pk.by_appd(req.params["appDId"])
        try:
            f = open(doc["_zip"], "rb")       # closed by the server once sent
        except FileNotFoundError:             # deleted meanwhile
            raise NotFound(f"app package {doc['id']} has no content any more") from None
        return Response(200, FileBody(f, os.fstat(f.fileno()).st_size),
                        content_type="application/zip")

    r.add("POST", f"{PKGM}/app_packages", onboard, produces=JSON)
    r.add("GET", f"{PKGM}/app_packages", list_packages, produces=JSON,
          query=LISTING + ("nextpage_opaque_marker",))
    r.add("GET", f"{PKGM}/app_packages/{{id}}", get_package, produces=JSON)
    r.add("PATCH", f"{PKGM}/app_packages/{{id}}", patch_package, produces=JSON)
    r.add("DELETE", f"{PKGM}/app_packages/{{id}}", delete_package)
    r.add("GET", f"{PKGM}/app_packages/{{id}}/appd", appd, produces=appd_forms.APPD_TYPES)
    r.add("GET", f"{PKGM}/onboarded_app_packages/{{appDId}}/appd", appd,
          produces=appd_forms.APPD_TYPES)
    r.add("GET", f"{PKGM}/app_packages/{{id}}/package_content", content, produces=ZIP)
    r.add("PUT", f"{PKGM}/app_packages/{{id}}/package_content", upload, stream=True, query=())
    r.add("GET", f"{PKGM}/onboarded_app_packages/{{appDId}}/package_content", content,
          produces=ZIP)

    # ---------------------------------------------------------------- app_lcm
    def create_instance(req: Request) -> Response:
        info = lcm.create(req.json(), req.headers.get("Idempotency-Key"), meo_id(req))
        return Response(201, info, {"Location": info["_links"]["self"]["href"]})

    def list_instances(req: Request) -> Response:
        filters.check(req.query.get("filter"), "AppInstanceInfo")
        # NFV-SOL 013 paging, as the package listing
        items, marker = lcm.list_page(req.query.get("filter"),
                                      req.query.get("nextpage_opaque_marker"),
                                      int(o.cfg["api"]["page_size"]))
        headers = {}
        if marker:
            query = {k: v for k, v in req.query.items() if k != "nextpage_opaque_marker"}
            query["nextpage_opaque_marker"] = marker
            headers["Link"] = f'<{LCM}/app_instances?{urllib.parse.urlencode(query)}>; rel="next"'
        return Response(200, paging.body(items), headers)

    def get_instance(req: Request) -> Response:
        return Response(200, lcm.view(lcm.get(req.params["id"])))

    def delete_instance(req: Request) -> Response:
        lcm.delete(req.params["id"])
        return Response(204)

    def accepted(op: dict) -> Response:
        return Response(202, op, {"Location": op["_links"]["self"]["href"]})

    r.add("POST", f"{LCM}/app_instances", create_instance, produces=JSON)
    r.add("GET", f"{LCM}/app_instances", list_instances, produces=JSON,
          query=LISTING + ("nextpage_opaque_marker",))
    r.add("GET", f"{LCM}/app_instances/{{id}}", get_instance, produces=JSON)
    r.add("DELETE", f"{LCM}/app_instances/{{id}}", delete_instance)
    r.add("POST", f"{LCM}/app_instances/{{id}}/instantiate",
          lambda req: accepted(lcm.instantiate(req.params["id"], req.json(),
                                               req.headers.get("Idempotency-Key"),
                                               from_meo=req.from_meo)),
          produces=JSON)
    r.add("POST", f"{LCM}/app_instances/{{id}}/terminate",
          lambda req: accepted(lcm.terminate(req.params["id"], req.json())), produces=JSON)
    r.add("POST", f"{LCM}/app_instances/{{id}}/operate",
          lambda req: accepted(lcm.operate(req.params["id"], req.json())), produces=JSON)
    # mecorch extension: a rolling upgrade (mecorch.mepm.upgrade)
    r.add("POST", f"{LCM}/app_instances/{{id}}/change_app_pkg",
          lambda req: accepted(lcm.change_app_pkg(req.params["id"], req.json())),
          produces=JSON)

    def relocate(req: Request) -> Response:
        """mecorch extension: the MEO moves the instance to another edge host
        (mecorch.meo.relocate). A host's MEPM, or a single node, has no
        other host to move it to."""
        if not hasattr(lcm, "relocate"):
            lcm.get(req.params["id"])           # 404 for an unknown instance first
            raise Conflict("relocation moves an instance to another edge host: this mecorch "
                           "runs one edge host (a single node, or one host's MEPM), so there "
                           "is no other host to relocate to; an MEO (mecorch serve --role "
                           "meo) relocates between its hosts")
        # its fields are all optional: no body is {}
        return accepted(lcm.relocate(req.params["id"], req.json() if req.raw else {}))
    r.add("POST", f"{LCM}/app_instances/{{id}}/relocate", relocate, produces=JSON)

    def list_ops(req: Request) -> Response:
        filters.check(req.query.get("filter"), "AppInstanceLcmOpOcc")
        return Response(200, filters.apply(lcm.ops(), req.query.get("filter")))
    r.add("GET", f"{LCM}/app_lcm_op_occs", list_ops, produces=JSON, query=LISTING)
    r.add("GET", f"{LCM}/app_lcm_op_occs/{{id}}",
          lambda req: Response(200, lcm.op(req.params["id"])), produces=JSON)

    # ---------------------------------------------------------------- Mp1
    if mep is None:
        return                  # an MEO: apps talk to their own host's MEPM
    # APP: an app may call these with its own Mp1 token, for itself only.
    app = f"{MP1}/applications/{{app}}"

    def rules(kind: str):
        def list_(req: Request) -> Response:
            return Response(200, mep.list_rules(req.params["app"], kind))

        def get(req: Request) -> Response:
            rule = mep.get_rule(req.params["app"], kind, req.params["rule"])
            return Response(200, rule, {"ETag": f'"{etag(rule)}"'})

        def put(req: Request) -> Response:
            rule = mep.put_rule(req.params["app"], kind, req.params["rule"], req.json(),
                                req.headers.get("If-Match"))
            return Response(200, rule, {"ETag": f'"{etag(rule)}"'})
        r.add("GET", f"{app}/{kind}", list_, APP)
        r.add("GET", f"{app}/{kind}/{{rule}}", get, APP)
        r.add("PUT", f"{app}/{kind}/{{rule}}", put, APP)

    rules("traffic_rules")
    rules("dns_rules")

    def subscribe(req: Request) -> Response:
        sub = mep.subscribe(req.params["app"], req.json())
        return Response(201, sub, {"Location": sub["_links"]["self"]["href"]})

    def unsubscribe(req: Request) -> Response:
        mep.unsubscribe(req.params["app"], req.params["sub"])
        return Response(204)

    def confirm(fn):
        def handler(req: Request) -> Response:
            fn(req.params["app"], req.json())
            return Response(204)
        return handler

    r.add("GET", f"{app}/subscriptions",
          lambda req: Response(200, mep.subscriptions(req.params["app"])), APP)
    r.add("POST", f"{app}/subscriptions", subscribe, APP)
    r.add("GET", f"{app}/subscriptions/{{sub}}",
          lambda req: Response(200, mep.subscription(req.params["app"], req.params["sub"])), APP)
    r.add("DELETE", f"{app}/subscriptions/{{sub}}", unsubscribe, APP)
    r.add("POST", f"{app}/confirm_termination", confirm(mep.confirm_termination), APP)
    r.add("POST", f"{app}/confirm_ready", confirm(mep.confirm_ready), APP)
    # MEC 011 timing: for every app of this host (APPS)
    timing.install(r, o)

    # MEC 011 service management: the host's service registry
    service_routes.install(r, mep.services)

