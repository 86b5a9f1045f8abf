"""One operation at a time per instance (a host's LCM and the MEO's alike)."""

from __future__ import annotations

import contextlib
import threading
from typing import Iterator

from mecorch.kernel.errors import Conflict


@contextlib.contextmanager
def exclusive(lock: threading.Lock, busy: set[str], instance_id: str) -> Iterator[None]:
    """Hold `lock` for the block, refusing (409) an instance that has an
    operation in progress (`busy`): the check and what the block starts
    cannot be split by a twin request."""
    with lock:
        if instance_id in busy:
            raise Conflict(f"app instance {instance_id} has an operation in progress")
        yield
