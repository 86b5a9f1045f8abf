"""An MEPM announcing itself to its MEO (`mepm.meo_url`): POST
/mecorch/v1/hosts with its host id, the URL the MEO reaches it at, and a
token of its own API for the MEO to call it with. Retried in the
background until the MEO answers: an MEPM serves its apps whether or not
its MEO is there.

`mepm.meo_url` may list several URLs: the replicas of one MEO (one
database behind them). The registration goes to the first that answers:
an MEO that cannot be reached, or answers 5xx (not ready, no leader, a
proxy with no backend), is passed over for the next at once; a refusal
(4xx) is the MEO's answer, whichever replica gave it, so it is logged and
asked again of the same one after RETRY_S, never of another. When every
URL failed, the round starts again from the first after RETRY_S."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from mecorch.kernel.config import meo_urls
from mecorch.kernel.errors import BackendUnavailable, MecorchError
from mecorch.kernel.fileutil import token_lines
from mecorch.mepm.remote import RemoteMepm

log = logging.getLogger("mecorch.mepm.register")
RETRY_S = 5.0
HOSTS = "/mecorch/v1/hosts"


class Registration:
    def __init__(self, cfg: dict, server):
        mepm = cfg.get("mepm") or {}
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
        self._meos = [RemoteMepm("meo", url, self.meo_token, self.meo_ca_file, field=key)
                      for key, url in meo_urls(mepm)]
        if not self._meos:
            raise MecorchError("mepm.meo_url names no MEO to register with")
        self.meo_urls = [m.url for m in self._meos]
        self.meo_url: str | None = None       # the one that took the registration
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="mepm-register", daemon=True)
        self.registered = threading.Event()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                if self._round():
                    return
                self._stop.wait(RETRY_S)
        finally:
            for meo in self._meos:
                meo.close()

    def _round(self) -> bool:
        """Each URL in order until one answers; True once registered."""
        body = {"hostId": self.host_id, "url": self.url}
        if self.own_token:
            body["token"] = self.own_token
        for i, meo in enumerate(self._meos):
            try:
                meo.call("POST", HOSTS, body)
            except MecorchError as e:
                if not _answered(e):
                    nxt = self._meos[i + 1].url if i + 1 < len(self._meos) else None
                    log.warning("registration with the MEO at %s failed (%s): %s", meo.url,
                                f"trying {nxt}" if nxt else f"retrying in {RETRY_S:g} s",
                                e.detail)
                    continue
                if "already known" in e.detail or "already registered" in e.detail:
                    return self._done(meo)
                # the MEO said no: another replica of it says the same
                log.warning("the MEO at %s refused the registration (retrying in %g s): %s",
                            meo.url, RETRY_S, e.detail)
                return False
            log.info("registered host %s at %s with the MEO %s", self.host_id, self.url,
                     meo.url)
            return self._done(meo)
        return False

    def _done(self, meo: RemoteMepm) -> bool:
        self.meo_url = meo.url
        self.registered.set()
        return True


def _answered(e: MecorchError) -> bool:
    """A refusal of the MEO itself (4xx), not a replica away or not ready
    (unreachable, 5xx, a redirect: mecorch.mepm.remote's BackendError)."""
    return not isinstance(e, BackendUnavailable) and e.status < 500


def _first_line(path: str | None) -> str | None:
    if not path:
        return None
    return next(iter(token_lines(Path(path).read_text(encoding="utf-8"))), None)
