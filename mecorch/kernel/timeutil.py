"""ETSI TimeStamp and other small shared helpers."""

from __future__ import annotations

import time
import uuid


def timestamp() -> dict:
    """An ETSI MEC TimeStamp {seconds, nanoSeconds} for now."""
    ns = time.time_ns()
    return {"seconds": ns // 1_000_000_000, "nanoSeconds": ns % 1_000_000_000}


def new_id() -> str:
    return str(uuid.uuid4())


def public(doc: dict) -> dict:
    """The document without mecorch's internal keys (those starting '_'
    except HAL-style '_links')."""
    return {k: v for k, v in doc.items() if not k.startswith("_") or k == "_links"}
