"""The host level's own extension of Mm3: what each edge host served here
reports of itself (`HostInfo`: manners, capacity, declared latency), the
MEO's lifting of the host's fence of apps that are still its
(mecorch.mepm.fence), an instance's data carried by a relocation
(mecorch.mepm.seeds) and the host's steps of a live one (mecorch.mepm.live).
ETSI MEC 010-2 has none of these; documented in /openapi.yaml."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from mecorch.kernel import validate
from mecorch.kernel.errors import Forbidden, InvalidInput, PayloadTooLarge
from mecorch.kernel.http import FileBody, Request, Response, Router, UnsupportedMediaType
from mecorch.mepm import live, seeds
from mecorch.mepm.hostinfo import host_info

HOSTS = "/mecorch/v1/hosts"
DATA = "/mecorch/v1/app_instances/{id}/data"
LIVE_SOURCE = "/mecorch/v1/app_instances/{id}/live_source"
INCOMING = "/mecorch/v1/app_instances/{id}/incoming"
MIGRATE = "/mecorch/v1/app_instances/{id}/migrate"
TAR = "application/x-tar"
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

    def export(req: Request) -> Response:
        """The stopped instance's data, written by its driver to a file of
        the state dir, then sent from it in blocks (the file is unlinked
        once open: it goes when the answer is sent, or the server stops)."""
        lcm = orch.lcm
        iid = validate.ident(req.params["id"], "appInstanceId")
        lcm.seeds.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f"{iid}.", suffix=".export", dir=lcm.seeds.dir)
        os.close(fd)
        try:
            lcm.export_data(iid, name)
            f = open(name, "rb")            # closed by the server once sent
        finally:
            Path(name).unlink(missing_ok=True)      # a failed export removed it already
        return Response(200, FileBody(f, os.fstat(f.fileno()).st_size), content_type=TAR)

    def import_(req: Request) -> Response:
        """A relocation's data for the instance's next instantiate, streamed
        to the state dir (not held in memory, not bound by api.max_body_bytes:
        by orchestrator.max_data_bytes)."""
        ctype = req.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype != TAR:
            raise UnsupportedMediaType(f"the data must be sent as {TAR}")
        lcm = orch.lcm
        iid = validate.ident(req.params["id"], "appInstanceId")
        lcm.get(iid)                # 404 for an unknown instance, whatever the body's size
        try:
            req.stream.set_limit(lcm.seeds.max_bytes)     # a larger Content-Length: 413 now
        except PayloadTooLarge:
            raise PayloadTooLarge(f"the data archive is larger than orchestrator.max_data_bytes "
                                  f"({lcm.seeds.max_bytes} bytes)") from None
        lcm.import_data(iid, lambda out: seeds.copy(req.stream.read, out, lcm.seeds.max_bytes))
        return Response(204)

    def live_source(req: Request) -> Response:
        iid = validate.ident(req.params["id"], "appInstanceId")
        return Response(200, orch.lcm.live_source(iid))

    def prepare_incoming(req: Request) -> Response:
        iid = validate.ident(req.params["id"], "appInstanceId")
        body, source = live.parse_incoming(req.json())
        return Response(200, orch.lcm.prepare_incoming(iid, body, source))

    def abort_incoming(req: Request) -> Response:
        orch.lcm.abort_incoming(validate.ident(req.params["id"], "appInstanceId"))
        return Response(204)

    def migrate(req: Request) -> Response:
        """Synchronous: answered once the instance runs on the target (or
        the migration failed and it still runs here)."""
        iid = validate.ident(req.params["id"], "appInstanceId")
        orch.lcm.migrate_out(iid, live.parse_migrate(req.json()))
        return Response(204)

    r.add("GET", LIVE_SOURCE, live_source, query=())
    r.add("POST", INCOMING, prepare_incoming, query=())
    r.add("DELETE", INCOMING, abort_incoming, query=())
    r.add("POST", MIGRATE, migrate, query=())
    r.add("GET", DATA, export, produces=TAR, query=())
    r.add("PUT", DATA, import_, stream=True, query=())
    r.add("GET", HOSTS, list_)
    r.add("GET", f"{HOSTS}/{{hostId}}", one)
    r.add("POST", f"{HOSTS}/{{hostId}}/unfence", unfence)
