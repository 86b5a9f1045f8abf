"""mecorch.heap: glibc's malloc is reachable and takes the settings serve
makes (their effect on RSS is measured by bench/run.py, not here)."""

from __future__ import annotations

import platform

import pytest

from mecorch import heap


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_arenas_are_capped_and_freed_heap_memory_goes_back_on_glibc():
    assert heap.limit_arenas(heap.ARENAS) is True
    # 64 KiB blocks come from malloc's heap (below its mmap threshold); once
    # freed, malloc_trim has pages to give back and says so
    junk = [bytearray(64 * 1024) for _ in range(200)]
    del junk
    assert heap.trim() is True
