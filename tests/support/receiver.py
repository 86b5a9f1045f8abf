"""A notification receiver on loopback (an OSS's or an app's callback)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from support.lab import free_port


class Receiver:
    """A callback endpoint on loopback. mode: "ok" (204), "fail" (500),
    "hang" (reads the request, never answers). `stop()`/`start()` take it
    down and up on the same port. `got`: (headers, body) in arrival order."""

    def __init__(self, mode: str = "ok"):
        self.mode = mode
        self.got: list[tuple[dict, dict]] = []
        self.hanging = threading.Event()        # a request is being held
        self._release = threading.Event()
        self._lock = threading.Lock()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/cb/notify"
        self._server = None
        self.start()

    def start(self) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if outer.mode == "hang":
                    outer.hanging.set()
                    outer._release.wait(60)
                    return
                if outer.mode == "fail":
                    self.send_response(500)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                with outer._lock:
                    outer.got.append((dict(self.headers), body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *a):
                pass
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def close(self) -> None:
        self._release.set()
        self.stop()

    def bodies(self) -> list[dict]:
        with self._lock:
            return [b for _, b in self.got]

    def wait_for(self, n: int, timeout_s: float = 20) -> list[dict]:
        deadline = time.monotonic() + timeout_s
        while len(self.bodies()) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.bodies()
