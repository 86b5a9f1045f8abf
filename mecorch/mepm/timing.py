"""MEC 011 timing (mec_app_support/v1/timing): what this host can honestly
say about its clock, to every app of the host (access APPS).

- GET .../timing/current_time (CurrentTime): the host's realtime clock
  (seconds and nanoseconds since the epoch) and `timeSourceStatus`,
  TRACEABLE only when the kernel says the clock is synchronised: adjtimex(2)
  read-only (modes 0) gives neither TIME_ERROR nor the STA_UNSYNC status bit,
  which the kernel sets until a time daemon (chronyd, ntpd,
  systemd-timesyncd) disciplines the clock and again when it stops doing so
  for long. NONTRACEABLE otherwise, and when the kernel cannot be asked.
- GET .../timing/timing_caps (TimingCaps): `timeStamp` as above, and
  `ntpServers`: the servers in the configuration of the time daemon that
  runs on this host (found in /proc), when it can be read: chrony
  (/etc/chrony/chrony.conf or /etc/chrony.conf, with its confdir, sourcedir
  and include files), ntpd (/etc/ntp.conf, /etc/ntpsec/ntp.conf) or
  systemd-timesyncd (NTP= of timesyncd.conf and its drop-ins). A poll
  interval the file does not give is the daemon's documented default. What
  cannot be read or named in the ETSI types (an NTS server, a server from
  DHCP, timesyncd's built-in fallback) is left out, never guessed; no
  daemon found (a container without the host's processes, a host without
  one): no ntpServers. mecorch knows no PTP masters: no ptpMasters.
"""

from __future__ import annotations

import ctypes
import functools
import glob
import ipaddress
import logging
import math
import os
import re
import time
from pathlib import Path

from mecorch.kernel.http import APPS, Request, Response, Router

log = logging.getLogger("mecorch.mepm.timing")

TIMING = "/mec_app_support/v1/timing"
TRACEABLE, NONTRACEABLE = "TRACEABLE", "NONTRACEABLE"
# adjtimex(2): the clock state TIME_ERROR and the status bit STA_UNSYNC
TIME_ERROR = 5
STA_UNSYNC = 0x0040
MAX_CONF_BYTES = 64 << 10
MAX_CONF_FILES = 32
MAX_SERVERS = 32
# a DNS name as NTP daemons take it: labels of letters, digits, '-', '_'
_DNS_NAME = re.compile(r"(?=.{1,253}\.?$)([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.)*"
                       r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.?")
# the process names (/proc/PID/comm, at most 15 characters) of the daemons
_DAEMONS = {"chronyd": "chrony", "ntpd": "ntpd", "systemd-timesyn": "timesyncd"}
# documented default poll intervals (log2 seconds): chrony.conf(5) and
# ntp.conf(5) minpoll 6, maxpoll 10; timesyncd.conf(5) PollIntervalMinSec=32,
# PollIntervalMaxSec=2048
_DEFAULT_POLL = {"chrony": (6, 10), "ntpd": (6, 10), "timesyncd": (5, 11)}


# ---------------------------------------------------------------- the clock
class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class _Timex(ctypes.Structure):
    """struct timex of glibc and musl (adjtimex(2)); the trailing padding
    is the kernel's reserved space, and more."""
    _fields_ = [("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
                ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long),
                ("status", ctypes.c_int), ("constant", ctypes.c_long),
                ("precision", ctypes.c_long), ("tolerance", ctypes.c_long),
                ("time", _Timeval), ("tick", ctypes.c_long), ("ppsfreq", ctypes.c_long),
                ("jitter", ctypes.c_long), ("shift", ctypes.c_int), ("stabil", ctypes.c_long),
                ("jitcnt", ctypes.c_long), ("calcnt", ctypes.c_long),
                ("errcnt", ctypes.c_long), ("stbcnt", ctypes.c_long), ("tai", ctypes.c_int),
                ("_reserved", ctypes.c_int * 32)]


@functools.cache
def _adjtimex():
    """libc's adjtimex, from the symbols the process has loaded already
    (CDLL(None): no ctypes.util.find_library, which runs ldconfig), or
    None."""
    try:
        return ctypes.CDLL(None, use_errno=True).adjtimex
    except (OSError, AttributeError):
        return None


def clock_state() -> tuple[int, int] | None:
    """(adjtimex's return value, the timex status bits), read only (modes
    0, allowed to any process); None when the kernel cannot be asked."""
    adjtimex = _adjtimex()
    if adjtimex is None:
        return None
    tx = _Timex()
    tx.modes = 0
    state = adjtimex(ctypes.byref(tx))
    if state < 0:
        log.debug("adjtimex failed: %s", os.strerror(ctypes.get_errno()))
        return None
    return state, tx.status


def time_source_status(state: tuple[int, int] | None) -> str:
    """TRACEABLE when adjtimex says the clock is synchronised (see the
    module docstring), else NONTRACEABLE."""
    if state is None:
        return NONTRACEABLE
    code, status = state
    if code == TIME_ERROR or status & STA_UNSYNC:
        return NONTRACEABLE
    return TRACEABLE


def now() -> dict:
    """The host's realtime clock as the ETSI TimeStamp."""
    seconds, nanos = divmod(time.time_ns(), 1_000_000_000)
    return {"seconds": seconds, "nanoSeconds": nanos}


def current_time() -> dict:
    """CurrentTime (MEC 011)."""
    return {**now(), "timeSourceStatus": time_source_status(clock_state())}


def timing_caps(root: Path = Path("/")) -> dict:
    """TimingCaps (MEC 011): the time stamp, and the configured NTP servers
    when they can be read (see the module docstring)."""
    caps = {"timeStamp": now()}
    servers = configured_servers(root)
    if servers:
        caps["ntpServers"] = servers
    return caps


# ---------------------------------------------------------------- NTP servers
def running_daemon(root: Path = Path("/")) -> str | None:
    """"chrony", "ntpd" or "timesyncd": the time daemon running on this
    host (the first found in /proc), else None."""
    try:
        pids = [p for p in os.listdir(root / "proc") if p.isdigit()]
    except OSError:
        return None
    for pid in pids:
        try:
            comm = (root / "proc" / pid / "comm").read_text(errors="replace").strip()
        except OSError:
            continue                    # gone meanwhile
        if comm in _DAEMONS:
            return _DAEMONS[comm]
    return None


def configured_servers(root: Path = Path("/")) -> list[dict]:
    """The NTP servers (TimingCaps.NtpServers) of the running daemon's
    configuration; [] when none can be read honestly."""
    daemon = running_daemon(root)
    if daemon == "chrony":
        return parse_chrony(_chrony_lines(root))
    if daemon == "ntpd":
        for name in ("etc/ntpsec/ntp.conf", "etc/ntp.conf"):
            text = _read(root / name)
            if text is not None:
                return parse_ntpd(text.splitlines())
        return []
    if daemon == "timesyncd":
        return parse_timesyncd([t for t in map(_read, _timesyncd_files(root)) if t is not None])
    return []


def _read(path: Path) -> str | None:
    """A configuration file's text; None when it is not a regular file,
    cannot be read or is larger than MAX_CONF_BYTES (a device, a FIFO or
    a huge file is not read)."""
    try:
        if not path.is_file():
            return None
        with open(path, "rb") as f:
            data = f.read(MAX_CONF_BYTES + 1)
    except OSError:
        return None
    if len(data) > MAX_CONF_BYTES:
        log.warning("%s: larger than %d bytes: not read", path, MAX_CONF_BYTES)
        return None
    return data.decode("utf-8", errors="replace")


def _chrony_lines(root: Path) -> list[str]:
    """The lines of chrony.conf and of the files it pulls in (confdir,
    sourcedir, include), one level deep, at most MAX_CONF_FILES files."""
    for name in ("etc/chrony/chrony.conf", "etc/chrony.conf"):
        main = _read(root / name)
        if main is not None:
            break
    else:
        return []
    lines, files = [], 1
    for line in main.splitlines():
        words = line.split()
        if not words or words[0].lower() not in ("confdir", "sourcedir", "include"):
            lines.append(line)
            continue
        if words[0].lower() == "include":
            paths = _glob(root, words[1]) if len(words) > 1 else []
        else:
            suffix = ".conf" if words[0].lower() == "confdir" else ".sources"
            paths = sorted({p for d in words[1:8] for p in _glob(root, f"{d}/*{suffix}")},
                           key=lambda p: p.name)
        for path in paths:
            if files >= MAX_CONF_FILES:
                break
            text = _read(path)
            if text is not None:
                files += 1
                # one level: what these files include is not followed
                lines += [x for x in text.splitlines()
                          if x.split()[:1] not in (["confdir"], ["sourcedir"], ["include"])]
    return lines


def _glob(root: Path, pattern: str) -> list[Path]:
    """Files matching an absolute pattern of the configuration, under `root`."""
    if not pattern.startswith("/") or "\0" in pattern or ".." in pattern.split("/"):
        return []
    return [Path(p) for p in sorted(glob.glob(str(root / pattern.lstrip("/"))))[:MAX_CONF_FILES]]


def _timesyncd_files(root: Path) -> list[Path]:
    """timesyncd.conf, then its drop-ins in the order of their names (a
    name in /etc hides the same name in /run and /usr/lib)."""
    drop_ins: dict[str, Path] = {}
    for d in ("usr/lib/systemd/timesyncd.conf.d", "run/systemd/timesyncd.conf.d",
              "etc/systemd/timesyncd.conf.d"):
        for p in _glob(root, f"/{d}/*.conf"):
            drop_ins[p.name] = p
    return [root / "etc/systemd/timesyncd.conf",
            *(drop_ins[n] for n in sorted(drop_ins))][:MAX_CONF_FILES]


def parse_chrony(lines: list[str]) -> list[dict]:
    """`server` and `pool` directives of chrony.conf(5)."""
    return _parse_directives(lines, "chrony", ("server", "pool"))


def parse_ntpd(lines: list[str]) -> list[dict]:
    """`server` and `pool` commands of ntp.conf(5); refclocks (127.127.x.x)
    are not NTP servers."""
    return _parse_directives(lines, "ntpd", ("server", "pool"))


def _parse_directives(lines: list[str], daemon: str, keywords: tuple[str, ...]) -> list[dict]:
    out: list[dict] = []
    # chrony.conf: a line starting with !, ;, # or % is a comment;
    # ntp.conf: # starts a comment anywhere
    comment = ("!", ";", "#", "%") if daemon == "chrony" else ("#",)
    for line in lines:
        words = line.split("#", 1)[0].split() if daemon == "ntpd" else line.split()
        if words[:1] and words[0].startswith(comment):
            continue
        if len(words) < 2 or words[0].lower() not in keywords:
            continue
        args = words[1:]
        while daemon == "ntpd" and args and args[0] in ("-4", "-6"):
            args = args[1:]
        if not args or (daemon == "ntpd" and args[0].startswith("127.127.")):
            continue
        server = _server(args[0], args[1:], daemon, len(out) + 1)
        if server is not None:
            out.append(server)
        if len(out) >= MAX_SERVERS:
            break
    return out


def _server(addr: str, options: list[str], daemon: str, priority: int) -> dict | None:
    """One TimingCaps.NtpServers, or None for what cannot be named
    honestly (a malformed address or option, NTS authentication)."""
    addr_type = _address_type(addr)
    if addr_type is None:
        return None
    low, high = _DEFAULT_POLL[daemon]
    auth, key = "NONE", 0           # 0: no key (NTP key ids start at 1)
    i = 0
    while i < len(options):
        opt = options[i].lower()
        value = options[i + 1] if i + 1 < len(options) else None
        if opt in ("minpoll", "maxpoll", "key"):
            number = _int(value)
            if number is None:
                return None         # the daemon would refuse the line too
            if opt == "minpoll":
                low = number
            elif opt == "maxpoll":
                high = number
            else:
                auth, key = "SYMMETRIC_KEY", number
            i += 2
            continue
        if opt == "autokey":
            auth = "AUTO_KEY"
        elif opt == "nts":
            return None             # NTS: none of the ETSI authentication options
        i += 1
    return {"ntpServerAddrType": addr_type, "ntpServerAddr": addr,
            "minPollingInterval": low, "maxPollingInterval": high,
            "localPriority": priority, "authenticationOption": auth,
            "authenticationKeyNum": key}


def _address_type(addr: str) -> str | None:
    try:
        ipaddress.ip_address(addr)
        return "IP_ADDRESS"
    except ValueError:
        pass
    if addr.isascii() and _DNS_NAME.fullmatch(addr) and not addr.replace(".", "").isdigit():
        return "DNS_NAME"
    return None


def _int(text: str | None) -> int | None:
    if text is None or not re.fullmatch(r"-?[0-9]{1,6}", text):
        return None
    return int(text)


def parse_timesyncd(texts: list[str]) -> list[dict]:
    """NTP= of timesyncd.conf(5), the files in order (each assignment
    adds servers, an empty one resets the list), with PollIntervalMinSec
    and PollIntervalMaxSec. An invalid value is ignored, as timesyncd
    ignores it. FallbackNTP= is left out: whether it is used depends on
    servers from the network, which this does not read."""
    names: list[str] = []
    low, high = _DEFAULT_POLL["timesyncd"]
    for text in texts:
        section = None
        for line in text.splitlines():
            line = line.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("[") and line.endswith("]"):
                section = line[1:-1].strip()
                continue
            key, eq, value = line.partition("=")
            if not eq or section != "Time":
                continue
            key, value = key.strip(), value.strip()
            if key == "NTP":
                names = [] if not value else names + value.split()
            elif key in ("PollIntervalMinSec", "PollIntervalMaxSec"):
                seconds = _timespan(value)
                if seconds is not None and seconds >= 1:
                    if key == "PollIntervalMinSec":
                        low = int(math.log2(seconds))
                    else:
                        high = int(math.log2(seconds))
    out: list[dict] = []
    for name in dict.fromkeys(names):
        server = _server(name, [], "timesyncd", len(out) + 1)
        if server is not None:
            out.append(server | {"minPollingInterval": low, "maxPollingInterval": high})
        if len(out) >= MAX_SERVERS:
            break
    return out


_SPAN_UNITS = {"": 1, "s": 1, "sec": 1, "second": 1, "seconds": 1, "m": 60, "min": 60,
               "minute": 60, "minutes": 60, "h": 3600, "hr": 3600, "hour": 3600,
               "hours": 3600, "d": 86400, "day": 86400, "days": 86400}


def _timespan(value: str) -> float | None:
    """A systemd time span ("32", "32s", "1min 4s") in seconds; None if it
    does not parse."""
    parts = re.findall(r"\s*([0-9]{1,9}(?:\.[0-9]{1,6})?)\s*([a-z]*)", value)
    if not parts or "".join(n + u for n, u in parts) != re.sub(r"\s+", "", value):
        return None
    total = 0.0
    for number, unit in parts:
        if unit not in _SPAN_UNITS:
            return None
        total += float(number) * _SPAN_UNITS[unit]
    return total


# ---------------------------------------------------------------- routes
def install(r: Router, orch) -> None:
    """The two timing resources, for every app of this host (APPS)."""
    def caps(req: Request) -> Response:
        return Response(200, timing_caps())

    def current(req: Request) -> Response:
        return Response(200, current_time())
    r.add("GET", f"{TIMING}/timing_caps", caps, APPS, produces="application/json", query=())
    r.add("GET", f"{TIMING}/current_time", current, APPS, produces="application/json",
          query=())
