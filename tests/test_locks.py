"""Two builds of one recipe at once: the second is refused in one line while the first runs, the
first finishes with the same tables as a build alone, and no writer removes another's file."""

from __future__ import annotations

import re
import subprocess
import time

import polars as pl
from filelock import FileLock, Timeout
from openai_server import FakeOpenAIServer

from builders.tables import ITEMS, TableWriter
from conftest import fellowship, tiny_recipe


def _held(lock_path) -> bool:
    try:
        FileLock(lock_path, timeout=0).acquire().lock.release()
    except Timeout:
        return True
    return False


def test_a_second_build_of_a_running_recipe_is_refused_in_one_line(project, tmp_path):
    with FakeOpenAIServer(delay_s=0.3) as server:
        tiny_recipe(project, provider="openai-compatible", model="m", extra=f", base_url: '{server.base_url}', concurrency: 1")
        first = subprocess.Popen(["fellowship", "build", "tiny", "--no-progress"], cwd=project,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lock = tmp_path / "data" / "tiny" / ".lock"
        deadline = time.monotonic() + 60
        while not (lock.exists() and _held(lock)) and time.monotonic() < deadline and first.poll() is None:
            time.sleep(0.05)
        second = fellowship("build", "tiny", "--no-progress", cwd=project, check=False)
        first_out, first_err = first.communicate(timeout=300)
        assert first.returncode == 0, first_err
        assert second.returncode == 1
        [line] = second.stderr.strip().splitlines()
        assert line == (f"{lock}: another fellowship command is writing recipe 'tiny' in {lock.parent}; "
                        "wait for it to finish and run this one again")
        # once the first is done (its lock went with its process), the same build runs, from the cache
        data = tmp_path / "data" / "tiny"
        first_tables = {p.name: pl.read_parquet(p) for p in sorted(data.glob("*.parquet"))}
        again = fellowship("build", "tiny", "--no-progress", cwd=project)
    assert {int(n) for n in re.findall(r"(\d+) calls", again.stderr)} == {0}
    for name, df in first_tables.items():
        assert pl.read_parquet(data / name).equals(df), name
    assert list(data.glob(".*.tmp-*")) == []


def test_a_writer_never_removes_another_writers_file(tmp_path):
    """A second writer of the same table (another build, another process) starts while the first is
    half-way: both finish, and the table is the last one closed, whole."""
    rows = [{"item_id": f"i{k}", "prompt": f"p{k}", "source_row": k, "source_id": None} for k in range(3000)]
    first = TableWriter(ITEMS, tmp_path)
    first.ROW_GROUP_BYTES = 1  # its hidden file is on disk after the first chunk
    first.__enter__()
    first.write(rows[:1500])
    assert len(list(tmp_path.glob(".items.parquet.tmp-*"))) == 1
    with TableWriter(ITEMS, tmp_path) as second:
        second.write(rows[:10])
    first.write(rows[1500:])
    first.__exit__(None, None, None)
    assert pl.read_parquet(tmp_path / "items.parquet")["source_row"].to_list() == list(range(3000))
    assert list(tmp_path.glob(".items.parquet.tmp-*")) == []
