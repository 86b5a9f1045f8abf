"""The C heap of a long-running `mecorch serve`: glibc's malloc tuned for a
small threaded server, on an edge host that has little memory to spare.

- glibc gives each new thread an arena of its own, up to 8 per core. The
  API server runs a thread per connection: after a burst of requests every
  one of those arenas keeps the pages it touched, and the idle process
  stays ~10 MB larger (measured with 200 container deploys at concurrency
  8: 72.4 MB idle against 62.6 MB with two arenas). `limit_arenas` caps
  them before the threads start; the threads share the arenas instead.
- `trim` gives the free pages at the top and inside every arena back to
  the system (malloc_trim): a listing of hundreds of containers or a large
  page of the API leaves freed memory behind that glibc would keep.

Both are no-ops where the C library is not glibc (musl, other systems).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("mecorch.heap")

M_ARENA_MAX = -8            # <malloc.h>
ARENAS = 2


def _libc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


_LIBC = _libc()


def limit_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's malloc arenas (call before starting threads)."""
    if _LIBC is None:
        return False
    ok = bool(_LIBC.mallopt(M_ARENA_MAX, int(arenas)))
    if not ok:
        log.debug("mallopt(M_ARENA_MAX, %d) refused", arenas)
    return ok


def trim() -> bool:
    """Return free heap pages to the system; True when some were."""
    if _LIBC is None:
        return False
    return bool(_LIBC.malloc_trim(0))
