"""File helpers shared by the core and the drivers."""

from __future__ import annotations

import hashlib
import os

CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def unlink_quietly(path: str | os.PathLike) -> None:
    """Remove a file; one that is already gone is fine."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
