"""Every HTTP request mecorch itself makes goes through here: notifications
to northbound subscribers (mecorch.notifications.sender), termination notices to Mp1
subscribers (mecorch.mepm.termination), the calls between an MEO and its MEPMs
(mecorch.mepm.remote, used by mecorch.meo.registry and
mecorch.mepm.register), and the download of an app package from an
http(s) appPkgPath (mecorch.package.manager; its body streamed to disk by a
`sink`, never held in memory).

What holds for each request (issue 28):
- redirects are never followed: a 3xx is an answer like any other, so a
  peer cannot send mecorch on to another address or path;
- the destination is checked before anything is sent: `check_url` takes
  only an IP address (or localhost) inside the networks the config allows,
  no name is resolved; `check_token_url` sends a bearer token only over
  TLS or to loopback;
- a request has one TOTAL deadline (connect, send, answer and body): a
  socket timeout bounds each read only, so a peer dripping its answer one
  byte at a time would hold the caller for ever; a watchdog shuts the
  socket down at the deadline, which wakes a blocked read;
- an answer held in memory is at most MAX_ANSWER_BYTES; a larger body
  (a package) goes to a `sink` that reads it from the response itself,
  under the same deadline.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass, field

from mecorch.kernel import validate
from mecorch.kernel.errors import InvalidInput

MAX_ANSWER_BYTES = 16 * 1024 * 1024        # a peer cannot make mecorch hold more


class DeadlineExceeded(TimeoutError):
    """The whole request took longer than its deadline (an OSError, like
    every transport failure here)."""


@dataclass
class Answer:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)    # names in lower case


def check_url(url, networks: list, field: str) -> str:
    """An http(s) URL naming an IP address (or localhost) inside one of
    `networks` (ip_network objects); credentials in the URL are refused
    (they belong in a subscription's authentication)."""
    url = validate.text(url, field, 2048)
    parts = _split(url, field)
    if parts.username is not None or parts.password is not None:
        raise InvalidInput(f"{field} must not carry credentials; use authentication")
    addr = _address(parts.hostname)
    if addr is None:
        raise InvalidInput(f"{field} must name an IP address (or localhost)")
    if not any(addr in net for net in networks):
        raise InvalidInput(f"{field} address {addr} is not in the allowed callback networks "
                           "(api.callback_networks)")
    return url


def check_token_url(url: str, field: str) -> str:
    """A URL a bearer token may be sent to: https, or http to a loopback
    address (a token sent in clear over a network is a token given away)."""
    parts = _split(url, field)
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise InvalidInput(f"{field} {url} is plain http to a non-loopback address: a bearer "
                           "token would cross the network in clear; use https:// (with "
                           "api.tls_cert and api.tls_key on the other side) or a loopback "
                           "address")
    return url


def is_loopback(hostname: str | None) -> bool:
    addr = _address(hostname)
    return addr is not None and addr.is_loopback


def _split(url: str, field: str) -> urllib.parse.SplitResult:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(f"{field} must be an http(s) URL")
    try:
        parts.port                                   # raises on a bad port
    except ValueError:
        raise InvalidInput(f"{field} has an invalid port") from None
    return parts


def _address(hostname: str | None):
    """The IP address a URL's host names, without resolving anything:
    localhost is 127.0.0.1, any other name None."""
    if not hostname:
        return None
    if hostname == "localhost":
        return ipaddress.ip_address("127.0.0.1")
    try:
        return ipaddress.ip_address(hostname)
    except ValueError:
        return None


def connection(url: str, timeout_s: float,
               context: ssl.SSLContext | None = None) -> http.client.HTTPConnection:
    """A connection to the host of `url` (not yet opened); https gets
    `context` or the default verifying one."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "https":
        return http.client.HTTPSConnection(parts.hostname, parts.port, timeout=timeout_s,
                                           context=context or ssl.create_default_context())
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout_s)


def exchange(conn: http.client.HTTPConnection, method: str, path: str, deadline_s: float,
             body=None, headers: dict | None = None, sink=None) -> Answer:
    """One request on `conn`, answered in full within `deadline_s` seconds
    in total, or DeadlineExceeded (the connection is then closed). Other
    transport failures raise OSError or http.client.HTTPException.

    `sink(response)`, if given, reads the body itself (the Answer's body is
    then empty, the connection closed afterwards); what it raises goes to
    the caller, and a sink the deadline cut short is DeadlineExceeded even
    if its last read looked like the end of the body."""
    if deadline_s <= 0:                 # the caller's time is up: nothing is sent
        raise DeadlineExceeded("no time left for the request")
    end = time.monotonic() + deadline_s
    conn.timeout = deadline_s                        # connect and each read
    if conn.sock is not None:
        conn.sock.settimeout(deadline_s)
    fired = threading.Event()
    held: list[socket.socket] = []      # the socket an answer is read from

    def expire() -> None:
        fired.set()
        _shut(conn, held)

    watchdog = threading.Timer(deadline_s, expire)
    watchdog.daemon = True
    watchdog.start()
    try:
        cut = False
        try:
            conn.request(method, path, body=body, headers=headers or {})
        except (BrokenPipeError, ConnectionResetError):
            # the peer answered before it took the whole body (a 413 for
            # its Content-Length) and closed: its answer is read if it came
            if body is None or conn.sock is None:
                raise
            cut = True
        # an answer saying "Connection: close" takes the socket from `conn`
        # (getresponse forgets it): the watchdog must still reach it
        held.append(conn.sock)
        resp = conn.getresponse()
        if sink is not None:
            sink(resp)
            conn.close()                    # what the sink left unread goes with it
            if fired.is_set():
                raise DeadlineExceeded(f"no complete answer within {deadline_s:g} s")
            return Answer(resp.status, b"", {k.lower(): v for k, v in resp.getheaders()})
        payload = resp.read(MAX_ANSWER_BYTES + 1)
        if fired.is_set():      # a shut socket reads as an end: the body may be cut short
            raise DeadlineExceeded(f"no complete answer within {deadline_s:g} s")
        if len(payload) > MAX_ANSWER_BYTES:
            conn.close()
            raise http.client.HTTPException(f"answer over {MAX_ANSWER_BYTES} bytes")
        if cut or resp.getheader("Connection", "").lower() == "close":
            conn.close()
        answer = Answer(resp.status, payload, {k.lower(): v for k, v in resp.getheaders()})
    except (OSError, http.client.HTTPException):
        conn.close()
        if fired.is_set() or time.monotonic() >= end:
            raise DeadlineExceeded(f"no complete answer within {deadline_s:g} s") from None
        raise
    finally:
        watchdog.cancel()
    if fired.is_set():      # answered just before the deadline, socket shut since: not reusable
        conn.close()
    return answer


def request(url: str, method: str, deadline_s: float, body=None, headers: dict | None = None,
            context: ssl.SSLContext | None = None, sink=None) -> Answer:
    """One request on a connection of its own, closed afterwards. The
    caller has checked `url` (check_url / check_token_url)."""
    parts = urllib.parse.urlsplit(url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    conn = connection(url, deadline_s, context)
    try:
        return exchange(conn, method, path, deadline_s, body, headers, sink)
    finally:
        conn.close()


def _shut(conn: http.client.HTTPConnection, held: list) -> None:
    """Wake whatever blocks on the connection's socket (or on the one its
    answer is read from)."""
    for sock in {conn.sock, *held}:
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
