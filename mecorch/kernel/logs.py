"""mecorch's log: one structured line per operation and state change.

`event("instance.instantiated", instance=..., package=..., host=..., op=...)`
writes one INFO line on the logger `mecorch.events`, with the fields as
`key=value` pairs (text, the default) or as the keys of one JSON object per
line (`mecorch serve --log-format json`). Events are named `<thing>.<what
happened>`: serve.start, package.onboarded, package.enabled,
package.disabled, package.deleted, instance.created, instance.deleted,
op.started, op.completed, op.failed, instance.state, rule.changed,
recovery, backend.down, backend.up.

Listeners (`listen`) get every event too: the metrics count and time
operations from the same calls, so a log line and a metric never disagree.

Libraries (docker, urllib3, libvirt's Python glue) log at WARNING unless
`-vv` asks for everything; `-v` turns on mecorch's own debug lines.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from typing import Any, Callable

log = logging.getLogger("mecorch.events")
Listener = Callable[[str, dict], None]
_listeners: list[Listener] = []
_lock = threading.Lock()


def listen(fn: Listener) -> None:
    """Call `fn(name, fields)` on every event from now on."""
    with _lock:
        if fn not in _listeners:
            _listeners.append(fn)


def unlisten(fn: Listener) -> None:
    with _lock:
        if fn in _listeners:
            _listeners.remove(fn)


def event(name: str, level: int = logging.INFO, /, **fields: Any) -> None:
    """Log one event and tell the listeners. Fields that are None are left
    out; an event never raises (a log line must not fail an operation)."""
    fields = {k: v for k, v in fields.items() if v is not None}
    try:
        log.log(level, name, extra={"mecorch_fields": fields})
        for fn in list(_listeners):
            fn(name, fields)
    except Exception:                   # noqa: BLE001 - see the docstring
        logging.getLogger("mecorch").debug("event %s: listener failed", name, exc_info=True)


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


def _text_value(v: Any) -> str:
    s = v if isinstance(v, str) else json.dumps(v, separators=(",", ":"))
    if s == "" or any(c in s for c in ' "=\n\t'):
        return json.dumps(s)
    return s


class TextFormatter(logging.Formatter):
    """`2026-12-01T22:47:02.123Z INFO mecorch.lcm op.completed instance=... op=...`"""

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "mecorch_fields", None) or {}
        line = f"{_iso(record.created)} {record.levelname} {record.name} {record.getMessage()}"
        if fields:
            line += " " + " ".join(f"{k}={_text_value(v)}" for k, v in fields.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg (the event name for
    events, with `event` set too) and the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "mecorch_fields", None)
        doc: dict[str, Any] = {"ts": _iso(record.created), "level": record.levelname,
                               "logger": record.name, "msg": record.getMessage()}
        if fields is not None:
            doc["event"] = record.getMessage()
            for k, v in fields.items():
                doc.setdefault(k, v)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def setup(verbose: int = 0, fmt: str = "text", stream=None) -> logging.Handler:
    """Configure the root logger for `mecorch serve`: mecorch at INFO (-v:
    DEBUG), everything else at WARNING (-vv: DEBUG)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose >= 2 else logging.WARNING)
    logging.getLogger("mecorch").setLevel(logging.DEBUG if verbose >= 1 else logging.INFO)
    # The drivers' loggers are named after their packages (drivers.*).
    logging.getLogger("drivers").setLevel(logging.DEBUG if verbose >= 1 else logging.INFO)
    return handler


# ---------------------------------------------------------------- LCM operations
def _seconds(ts: dict | None) -> float | None:
    if not isinstance(ts, dict):
        return None
    return ts.get("seconds", 0) + ts.get("nanoSeconds", 0) / 1e9


def _op_fields(op: dict, inst: dict | None) -> dict:
    plan = op.get("_plan") or {}
    inst = inst or {}
    return {"op": op["id"], "operation": op.get("operationParams"),
            "instance": op.get("appInstanceId"), "package": inst.get("appPkgId"),
            "app": inst.get("appDId"), "host": plan.get("hostId") or inst.get("hostId"),
            "manner": plan.get("manner") or inst.get("deploymentType")}


def op_started(op: dict, inst: dict | None) -> None:
    """An LCM op occurrence began running (instantiate, terminate, operate)."""
    fields = _op_fields(op, inst)
    if op.get("operationParams") == "OPERATE":
        fields["to"] = (op.get("_plan") or {}).get("to")
    event("op.started", **fields)


def op_ended(op: dict, inst: dict | None) -> None:
    """The op ended (COMPLETED or FAILED): its line with the duration, and
    the instance's new state when it completed."""
    state = op.get("operationState")
    if state not in ("COMPLETED", "FAILED"):
        return
    fields = _op_fields(op, inst)
    start, end = _seconds(op.get("startTime")), _seconds(op.get("stateEnteredTime"))
    if start is not None and end is not None:
        fields["duration_s"] = round(max(0.0, end - start), 3)
    if state == "FAILED":
        event("op.failed", logging.WARNING, error=(op.get("error") or {}).get("detail"),
              **fields)
        return
    event("op.completed", **fields)
    ids = {k: fields[k] for k in ("instance", "package", "host", "op", "manner")}
    kind = op.get("operationParams")
    if kind == "INSTANTIATE":
        addrs = [a.get("ip") for a in ((inst or {}).get("allocatedResources") or {})
                 .get("network", [])]
        event("instance.state", state="INSTANTIATED", addresses=",".join(addrs) or None, **ids)
    elif kind == "TERMINATE":
        event("instance.state", state="NOT_INSTANTIATED", **ids)
    elif kind == "OPERATE":
        event("instance.state", state="INSTANTIATED",
              operational=(op.get("_plan") or {}).get("to"), **ids)


_UUID = None


def recovery(line: str) -> None:
    """A recovery or reconciliation action (one line of what it did), with
    the instance and host it names as fields."""
    global _UUID
    import re
    if _UUID is None:
        _UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
    ids = _UUID.findall(line)
    host = re.search(r"\bhost (\S+?)(?:[\s:,;)]|$)", line)
    event("recovery", logging.WARNING, action=line, instance=ids[0] if ids else None,
          host=host.group(1) if host else None)
