"""Stand-ins for the replicas of one MEO on loopback: real HTTP servers
that answer what a test tells them, and record what they were sent. For
the clients that know several MEO URLs (mecorch.mepm.register,
mecorch.kernel.client)."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DROP = 0        # a status meaning: read the request, close without an answer


class Replica:
    """Answers every request with `status` and the JSON `body` (a
    ProblemDetails for an error status when none is given); DROP: reads
    the request and closes the connection; `forward_to`: a proxy (see
    there). `seen`: (method, path, headers, JSON body) of each request, in
    order."""

    def __init__(self, status: int = 200, body=None, forward_to: str | None = None,
                 lose: tuple = ()):
        self.status, self.body = status, body
        # a proxy to this API: its answers relayed, but those of the methods
        # in `lose` lost on the way back (the request took effect there, the
        # client never heard)
        self.forward_to, self.lose = forward_to, lose
        self.seen: list[tuple[str, str, dict, object]] = []
        replica = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self):
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n) if n else b""
                try:
                    doc = json.loads(raw) if raw else None
                except ValueError:
                    doc = raw
                replica.seen.append((self.command, self.path, dict(self.headers), doc))
                if replica.forward_to:
                    hdrs = {k: v for k, v in self.headers.items()
                            if k.lower() not in ("host", "connection")}
                    req = urllib.request.Request(replica.forward_to + self.path,
                                                 data=raw or None, method=self.command,
                                                 headers=hdrs)
                    try:
                        with urllib.request.urlopen(req, timeout=10) as r:  # noqa: S310
                            status, ctype, data = r.status, r.headers["Content-Type"], r.read()
                    except urllib.error.HTTPError as e:
                        status, ctype, data = e.code, e.headers["Content-Type"], e.read()
                    if self.command not in replica.lose:
                        self.send_response(status)
                        self.send_header("Content-Type", ctype or "application/json")
                        self.send_header("Content-Length", str(len(data)))
                        self.end_headers()
                        self.wfile.write(data)
                        return
                if replica.status == DROP or replica.forward_to:
                    self.close_connection = True
                    self.wfile.flush()
                    self.connection.close()
                    return
                doc = replica.body
                if doc is None and replica.status >= 400:
                    doc = {"type": "about:blank", "title": "X", "status": replica.status,
                           "detail": f"said {replica.status}"}
                data = json.dumps(doc if doc is not None else {}).encode()
                self.send_response(replica.status)
                self.send_header("Content-Type", "application/problem+json"
                                 if replica.status >= 400 else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any

            def log_message(self, *a):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def paths(self) -> list[str]:
        return [f"{m} {p}" for m, p, _, _ in self.seen]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def refusing_url() -> str:
    """The URL of a replica that is gone: its port refuses connections."""
    gone = Replica()
    gone.close()
    return gone.url
