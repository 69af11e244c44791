"""Keeping a long stage's resident memory flat in the number of items.

A streaming stage (`candidates` writes a row group of about 4 MB at a time) frees what it
allocates group after group, yet two allocators keep the freed pages, so the process's RSS creeps
up with the number of items although what it holds does not:

- Arrow's default pool (mimalloc, in the pyarrow wheels) keeps freed pages per thread. The system
  pool hands them back to the C library instead.
- glibc keeps freed pages inside its heap when live blocks are scattered among them (long-lived
  answers interleaved with short-lived request bodies); `malloc_trim` returns every free page.

`python benchmarks/engine.py memory` measures the effect (see benchmarks/README.md).
"""

from __future__ import annotations

import ctypes
import functools
import sys


def use_system_arrow_pool() -> None:
    """Allocate Arrow buffers (Parquet reads and writes) from the system allocator from now on."""
    import pyarrow as pa

    pa.set_memory_pool(pa.system_memory_pool())


@functools.cache
def _malloc_trim():
    """glibc's `malloc_trim`, or None where the C library has none (macOS, Windows, musl)."""
    if sys.platform != "linux":
        return None
    return getattr(ctypes.CDLL(None), "malloc_trim", None)


def release_free_memory() -> None:
    """Give the heap's free pages back to the operating system (a millisecond or two; a no-op
    without glibc)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
