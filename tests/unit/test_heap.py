"""mecorch.kernel.heap: glibc's malloc is reachable and takes the settings serve
makes (their effect on RSS is measured by bench/run.py, not here)."""

from __future__ import annotations

import platform

import pytest

from mecorch.kernel import heap


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_arenas_are_capped_and_freed_heap_memory_goes_back_on_glibc():
    assert heap.limit_arenas(heap.ARENAS) is True
    # 64 KiB blocks come from malloc's heap (below its mmap threshold). Every
    # other one is freed: holes between live blocks, which free() cannot
    # give back at the top of the heap and malloc_trim can (and says so).
    blocks = [bytearray(64 * 1024) for _ in range(200)]
    kept = blocks[1::2]
    del blocks
    assert heap.trim() is True
    assert len(kept) == 100
