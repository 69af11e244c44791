"""A build killed mid-stage resumes from the response cache: it writes no half table, the rerun pays only
for the calls the killed build had not stored, and the result equals an uninterrupted build's.
A finished build, run again, makes no request at all.

The builds run as `fellowship build` subprocesses (they inherit FELLOWSHIP_CACHE_DIR / FELLOWSHIP_DATA_DIR
from the autouse `isolated` fixture) against the fake OpenAI-compatible server in tests/openai_server.py.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
from conftest import tiny_recipe
from openai_server import FakeOpenAIServer
from polars.testing import assert_frame_equal

from builders.llm.cache import ResponseCache
from builders.stages import BUILT_TABLES
from builders.tables import TABLES

CONCURRENCY = 2
MODELS_CALLED = 2  # the candidates stage calls the writer and the reviewer
KILL_AFTER = 6  # completed answers before the kill; the uninterrupted candidates stage needs 20
# Each prompt's 5 calls are sequential, so with 0.1 s per answer the stage takes at least 0.5 s: the kill
# (at ~0.2 s) always lands mid-stage. The delay only widens that window; nothing asserts on timing.
DELAY_S = 0.1
VOLATILE = ("latency_s",)  # timings of calls the two runs each made afresh


FELLOWSHIP = [shutil.which("fellowship")] if shutil.which("fellowship") else [
    sys.executable, "-c", "from builders.cli import main; main()"]


def fellowship(*args: str, env: dict | None = None, cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run([*FELLOWSHIP, *args], capture_output=True, text=True, env=env, cwd=cwd)
    assert result.returncode == 0, result.stderr
    return result


def wait_until(condition, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.005)


def read(table: str, data_dir: Path) -> pl.DataFrame:
    df = pl.read_parquet(TABLES[table].path(data_dir))
    return df.drop([c for c in VOLATILE if c in df.columns])


def test_killed_build_resumes_without_paying_twice(project, tmp_path):
    with FakeOpenAIServer(delay_s=DELAY_S) as server:
        extra = f", base_url: '{server.base_url}', concurrency: {CONCURRENCY}"
        recipe = str(tiny_recipe(project, provider="openai-compatible", model="gpt-test", extra=extra))

        # The reference: an uninterrupted build in its own cache and data folders.
        ref_env = {**os.environ, "FELLOWSHIP_CACHE_DIR": str(tmp_path / "ref-cache"),
                   "FELLOWSHIP_DATA_DIR": str(tmp_path / "ref-data")}
        fellowship("build", recipe, "--stage", "items", "--stage", "candidates", "--no-progress", env=ref_env, cwd=project)
        uninterrupted = server.completed
        assert uninterrupted == 20  # 4 prompts x (3 answers + 2 reviews)

        # Build the items, then start the candidates stage and kill it part-way.
        fellowship("build", recipe, "--stage", "items", cwd=project)
        before = server.completed
        proc = subprocess.Popen(
            [*FELLOWSHIP, "build", recipe, "--stage", "candidates", "--no-progress"],
            cwd=project, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        try:
            wait_until(lambda: server.completed - before >= KILL_AFTER or proc.poll() is not None, "some answers")
            assert proc.poll() is None, f"the build ended before it could be killed:\n{proc.stderr.read()}"
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.stderr.close()
        wait_until(lambda: server.in_flight == 0, "the killed build's requests are answered or dropped")
        killed = server.completed - before

        data_dir = tmp_path / "data" / "tiny"
        assert [p.name for p in data_dir.iterdir() if "candidates" in p.name] == []  # no table, no temp file
        cache = ResponseCache(tmp_path / "cache")
        stored = len(cache)  # answers the killed build committed before it died
        cache.close()
        assert 0 < stored <= killed < uninterrupted

        # Resume.
        before, requests_before = server.completed, len(server.requests)
        result = fellowship("build", recipe, "--stage", "candidates", "--no-progress", cwd=project)
        rerun = server.completed - before

    # Exactly the calls the killed build had not stored are made again, and every one is answered.
    assert rerun == uninterrupted - stored
    assert len(server.requests) - requests_before == rerun
    assert f"{rerun} calls, {stored} cached" in result.stderr
    # An answer the killed build received but had not committed is paid twice; only calls in flight at
    # the kill can be in that state, at most `concurrency` per model. Every other answer is paid once.
    assert uninterrupted <= killed + rerun <= uninterrupted + MODELS_CALLED * CONCURRENCY
    assert_frame_equal(read("candidates", data_dir), read("candidates", tmp_path / "ref-data" / "tiny"))


def test_second_full_build_makes_no_requests(project, tmp_path):
    with FakeOpenAIServer() as server:
        recipe = str(tiny_recipe(project, provider="openai-compatible", model="gpt-test",
                                 extra=f", base_url: '{server.base_url}'"))
        fellowship("build", recipe, "--no-progress", cwd=project)
        data_dir = tmp_path / "data" / "tiny"
        first = {name: pl.read_parquet(TABLES[name].path(data_dir)) for name in BUILT_TABLES}
        requests = len(server.requests)
        assert requests == server.completed > 0

        result = fellowship("build", recipe, "--no-progress", cwd=project)

        assert len(server.requests) == requests
    llm_lines = [line for line in result.stderr.splitlines() if ": candidates: wrote" in line or ": scores: wrote" in line]
    assert len(llm_lines) == 2 and all("; 0 calls, " in line for line in llm_lines), result.stderr
    for name, table in first.items():
        assert_frame_equal(pl.read_parquet(TABLES[name].path(data_dir)), table)  # timings included


# A Ray task's cache part (builders.llm.cache, ResponseCache(part=...)) commits its answers in groups.

def _committed(part) -> int:
    import sqlite3

    with sqlite3.connect(f"file:{part}?mode=ro", uri=True) as db:
        return db.execute("select count(*) from responses").fetchone()[0]


def test_a_cache_part_commits_its_answers_in_groups_and_on_close(tmp_path, monkeypatch):
    from builders.llm import cache as cache_module
    from builders.llm.types import Completion

    monkeypatch.setattr(cache_module, "GROUP_SECONDS", 3600.0)
    part = ResponseCache(tmp_path, part=("r/s", "000000000000"))
    answer = Completion(text="a", tokens_in=1, tokens_out=1)
    for i in range(cache_module.GROUP_ANSWERS - 1):
        part.put(f"k{i}", answer, 0.1)
    assert _committed(part.writes) == 0  # held back, yet the task's own lookups see them
    assert part.get("k0") == (answer, 0.1)
    part.put("last", answer, 0.1)
    assert _committed(part.writes) == cache_module.GROUP_ANSWERS  # a full group is committed
    part.put("one more", answer, 0.1)
    assert _committed(part.writes) == cache_module.GROUP_ANSWERS
    part.close()
    assert _committed(part.writes) == cache_module.GROUP_ANSWERS + 1  # close commits the rest
    monkeypatch.setattr(cache_module, "GROUP_SECONDS", 0.0)
    again = ResponseCache(tmp_path, part=("r/s", "000000000000"))  # a retried attempt sees the first's part
    assert again.get("one more") == (answer, 0.1)
    again.put("new", answer, 0.1)
    assert _committed(again.writes) == 1  # the oldest answer waited GROUP_SECONDS: committed at once
    again.close()
    main = ResponseCache(tmp_path)
    assert main.merge_parts("r/s") == cache_module.GROUP_ANSWERS + 2 and len(main) == cache_module.GROUP_ANSWERS + 2
    main.close()


def test_cache_errors_name_the_file_that_failed(tmp_path):
    import pytest

    from builders.llm.cache import PARTS, CacheError

    folder = tmp_path / PARTS / "r" / "s"
    folder.mkdir(parents=True)
    damaged = folder / "000000000000-1-dead.sqlite"
    damaged.write_bytes(b"not a database" * 100)
    part = ResponseCache(tmp_path, part=("r/s", "000000000000"))
    with pytest.raises(CacheError, match=f"response cache {damaged}: file is not a database"):
        part.get("k")
    part.close()
    main = ResponseCache(tmp_path)
    with pytest.raises(CacheError, match=f"response cache {damaged}: file is not a database"):
        main.merge_parts("r/s")
    main.close()
