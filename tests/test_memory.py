"""A long stage gives freed memory back to the OS instead of growing with its items
(builders.memory; the RSS figures themselves come from `benchmarks/engine.py memory`)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from builders.memory import _malloc_trim, release_free_memory


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(_malloc_trim() is None or not Path("/proc/self/status").exists(), reason="needs glibc and /proc")
def test_free_pages_scattered_among_live_blocks_go_back_to_the_os():
    blocks = [bytes(4096) + i.to_bytes(4, "little") for i in range(25_000)]  # ~100 MB on the C heap
    kept = blocks[::50]  # a live block every 200 KB pins the heap: glibc cannot shrink it on its own
    del blocks
    before = rss_mb()
    release_free_memory()
    after = rss_mb()
    assert before - after > 50, (before, after)
    assert len(kept) == 500


def test_stages_read_and_write_arrow_through_the_system_allocator(tmp_path):
    from builders.loader import load_recipe
    from builders.stages import run_stage
    from conftest import ROOT

    pa.set_memory_pool(pa.mimalloc_memory_pool())
    recipe = load_recipe(ROOT / "recipes" / "demo.yaml")
    run_stage(recipe, "items", data_root=tmp_path, progress=False)
    assert pa.default_memory_pool().backend_name == "system"
