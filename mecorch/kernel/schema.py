"""The vocabulary of the configuration schema: value types, one row (`Key`)
and its markers. `kernel/config.py` holds the core's rows; each driver
declares the rows of its own section in `drivers/<name>/settings.py`
(`ROLE` and `SCHEMA`, paths relative to the section, no driver name: the
core adds both) and the core composes them into one schema, checked in one
pass when the configuration is loaded.

A driver's settings module imports this module only (never its backend
library): the core imports it to compose the schema of every installed
driver, named or not.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Iterable

# The entry point group drivers are found by name in (pyproject.toml).
DRIVER_GROUP = "mecorch.drivers"

# ---------------------------------------------------------------- value types
# A type is (name shown in errors, check).
STR = ("a string", lambda v: isinstance(v, str))
INT = ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool))
NUMBER = ("a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool))
POSITIVE = ("a number above 0", lambda v: NUMBER[1](v) and v > 0)
BOOL = ("true or false", lambda v: isinstance(v, bool))
STRS = ("a list of strings", lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v))
# one URL, or the URLs of one service's replicas (tried in order)
URLS = ("a URL or a non-empty list of URLs", lambda v: isinstance(v, str) or (
    isinstance(v, list) and bool(v) and all(isinstance(x, str) for x in v)))
LIST = ("a list", lambda v: isinstance(v, list))          # of mappings: see its "[]" rows
MAP = ("a mapping", lambda v: isinstance(v, dict))       # its keys: the rows below it
# a mapping whose keys its driver checks (they depend on one another)
OPEN_MAP = ("a mapping", lambda v: isinstance(v, dict))
# appDId -> manner preference; its keys are app ids, so not schema rows
PREFS = ("a mapping of appDId to container or vm", lambda v: isinstance(v, dict) and all(
    isinstance(k, str) and x in ("container", "vm") for k, x in v.items()))

ABSENT = object()       # an optional key with no default: not in DEFAULT
REQUIRED = object()     # an item key that must be given (in list items)
ONE_ITEM = object()     # a list whose default is one item made of its "[]" rows' defaults


@dataclass(frozen=True)
class Key:
    path: str           # dotted; "x[]" is "each item of the list x"
    type: tuple
    default: Any
    doc: str
    nullable: bool = False
    choices: tuple = ()
    driver: str | None = None   # in a host role section: only for this driver
    bounds: tuple = ()          # (least, most) of a number


def key(path, type_, default, doc, nullable=False, choices=(), driver=None, bounds=()) -> Key:
    return Key(path, type_, default, doc, nullable, choices, driver, bounds)


def read(rows: Iterable[Key], section: dict[str, Any]) -> dict[str, Any]:
    """A driver section's values by its own rows (relative paths): the
    section's value of each row, else the row's default (None for an
    optional row without one). What the core's check refuses is not checked
    again here; the other keys of the section (`state_dir`, `host_id`...)
    are kept as they are."""
    out = dict(section)
    for row in rows:
        if row.path not in out:
            out[row.path] = None if row.default in (ABSENT, REQUIRED) \
                else copy.deepcopy(row.default)
    return out


# ---------------------------------------------------------------- names per host
# The machine's own default node: its objects keep the names they have
# always had (an installed node finds its network, pool, chains and link
# again after an upgrade); every other host id gets names of its own.
DEFAULT_HOST = "default"
LINK_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,14}"        # IFNAMSIZ: 15 characters


def host_name(base: str, host_id: str, limit: int, sep: str = "-",
              allowed: str = "A-Za-z0-9_.-") -> str:
    """The name of an object `base` made for `host_id`: `base<sep><host id>`
    when that fits in `limit` characters of the `allowed` set, else the
    host id's head cut to fit and a hash of the whole id (two ids never
    share a name because one was cut or had characters replaced)."""
    import hashlib
    import re
    clean = re.sub(f"[^{allowed}]", "_", host_id)
    name = f"{base}{sep}{clean}"
    if clean == host_id and len(name) <= limit:
        return name
    digest = hashlib.sha256(host_id.encode()).hexdigest()[:6]
    room = limit - len(base) - 2 * len(sep) - len(digest)
    return f"{base}{sep}{clean[:room]}{sep}{digest}" if room > 0 else f"{base}{sep}{digest}"
