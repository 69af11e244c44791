"""A Ray task's cache part whose writer was killed in the middle of a commit (builders.llm.cache):
its committed answers are still found by a retried task and merged by the driver."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from builders.llm.cache import ResponseCache
from builders.llm.types import Completion

GROUP = "tiny/candidates"


def _killed_mid_commit(cache_dir, committed: int) -> None:
    """A task's part with `committed` answers committed, then a transaction big enough to spill pages
    into the file, and the process killed before it commits: a hot journal is left beside the part."""
    script = textwrap.dedent(f"""
        import os
        from builders.llm.cache import ResponseCache
        from builders.llm.types import Completion
        cache = ResponseCache({str(cache_dir)!r}, part=({GROUP!r}, "000000000000"))
        for i in range({committed}):
            cache.put(f"done-{{i}}", Completion(f"answer {{i}}", 1, 1), 0.1)
        cache.flush()
        cache._db.execute("pragma cache_size=5")
        cache._db.execute("begin")
        for i in range(2000):
            cache._db.execute("insert into responses values (?, ?, 0)", (f"torn-{{i}}", "x" * 500))
        os._exit(0)
    """)
    subprocess.run([sys.executable, "-c", script], check=True)
    assert list((cache_dir / "parts" / GROUP).glob("*.sqlite-journal")), "no hot journal: the test would prove nothing"


def test_a_retried_task_reads_the_part_of_an_attempt_killed_mid_commit(tmp_path):
    ResponseCache(tmp_path).close()  # responses.sqlite, as the driver leaves it
    _killed_mid_commit(tmp_path, committed=3)
    retry = ResponseCache(tmp_path, part=(GROUP, "000000000000"))
    try:
        found = retry.get("done-2")
        assert found is not None and found[0].text == "answer 2"
        assert retry.get("torn-0") is None  # the half-done commit was rolled back, not read
    finally:
        retry.close()


def test_the_driver_merges_a_part_whose_writer_was_killed_mid_commit(tmp_path):
    driver = ResponseCache(tmp_path)
    _killed_mid_commit(tmp_path, committed=4)
    try:
        assert driver.merge_parts(GROUP) == 4
        assert driver.get("done-3")[0].text == "answer 3" and driver.get("torn-0") is None
        assert not list((tmp_path / "parts" / GROUP).iterdir())  # the part and its journal are gone
    finally:
        driver.close()
