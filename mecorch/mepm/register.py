"""An MEPM announcing itself to its MEO (`mepm.meo_url`): POST
/mecorch/v1/hosts with its host id, the URL the MEO reaches it at, and a
token of its own API for the MEO to call it with. Retried in the
background until the MEO answers: an MEPM serves its apps whether or not
its MEO is there."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from mecorch.kernel.errors import MecorchError
from mecorch.kernel.fileutil import token_lines
from mecorch.mepm.remote import RemoteMepm

log = logging.getLogger("mecorch.mepm.register")
RETRY_S = 5.0


class Registration:
    def __init__(self, cfg: dict, server):
        mepm = cfg.get("mepm") or {}
        self.meo_url = mepm["meo_url"]
        self.meo_ca_file = mepm.get("meo_ca_file")
        self.meo_token = _first_line(mepm.get("meo_token_file"))
        host, port = server.server_address[:2]
        scheme = "https" if cfg["api"].get("tls_cert") else "http"
        self.url = mepm.get("advertise_url") or f"{scheme}://{host}:{port}"
        self.host_id = cfg["hosts"][0]["id"]
        self.own_token = _first_line(cfg["api"].get("token_file"))
        # made here, not in the thread, so that a refusal stops `serve`: an
        # http:// meo_url off loopback (config.load refuses it already)
        # would carry this MEPM's token in clear
        self._meo = RemoteMepm("meo", self.meo_url, self.meo_token, self.meo_ca_file,
                               field="mepm.meo_url")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="mepm-register", daemon=True)
        self.registered = threading.Event()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def _loop(self) -> None:
        meo = self._meo
        body = {"hostId": self.host_id, "url": self.url}
        if self.own_token:
            body["token"] = self.own_token
        while not self._stop.is_set():
            try:
                meo.call("POST", "/mecorch/v1/hosts", body)
                log.info("registered host %s at %s with the MEO %s", self.host_id, self.url,
                         self.meo_url)
                self.registered.set()
                return
            except MecorchError as e:
                if "already known" in e.detail or "already registered" in e.detail:
                    self.registered.set()
                    return
                log.warning("registration with the MEO %s failed (retrying in %g s): %s",
                            self.meo_url, RETRY_S, e.detail)
            self._stop.wait(RETRY_S)
        meo.close()


def _first_line(path: str | None) -> str | None:
    if not path:
        return None
    return next(iter(token_lines(Path(path).read_text(encoding="utf-8"))), None)
