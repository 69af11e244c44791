"""The Ray executor on a local cluster this module starts (a head and a second node, 127.0.0.1 only)
and stops: the same tables as the local executor, worker and driver deaths, bad input."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from builders.stages import BUILT_TABLES
from builders.tables import TABLES
from conftest import ROOT, assert_one_line, tiny_recipe
from openai_server import FakeOpenAIServer
from ray_cluster import ENV as RAY_ENV

ray = pytest.importorskip("ray", reason="needs the [ray] extra")
pytestmark = pytest.mark.ray
FELLOWSHIP = [sys.executable, "-c", "from builders.cli import main; main()"]
MEASURED = ("latency_s",)  # measured by each build: the only columns two builds of one recipe may differ in


def _unflushed(delay_s: float) -> int:
    """The most answers a task's cache part holds back uncommitted (builders.llm.cache commits a part's
    answers in groups: GROUP_ANSWERS, or once the oldest has waited GROUP_SECONDS), for a task with one
    call in flight at a time on a server answering after `delay_s`; a killed task loses these, and they
    are asked again."""
    import math

    from builders.llm.cache import GROUP_ANSWERS, GROUP_SECONDS

    return min(GROUP_ANSWERS, math.ceil(GROUP_SECONDS / delay_s) + 1)


def _processes_of(temp_dir: str) -> list[int]:
    """The pids of the Ray processes whose command line names `temp_dir` (this cluster's, and only
    it), with their descendants (Ray's agents rename themselves, and their command line with it)."""
    import psutil

    found = {}
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(temp_dir in part for part in proc.info["cmdline"] or []):
                found[proc.pid] = proc
                found.update((c.pid, c) for c in proc.children(recursive=True))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return sorted(found)


CLUSTER_DIRS: list[Path] = []  # the temp folder (logs, sessions) of the module's cluster
SENTINEL_KEY = "sk-ray-sentinel-4f0c9a"


@pytest.fixture(scope="module")
def cluster():
    """A head and a second node on 127.0.0.1, one CPU each (tests/ray_cluster.py, which stops them
    when its stdin closes; any process of theirs left after is ended by its pid)."""
    import tempfile

    temp_dir = tempfile.mkdtemp(prefix="rfs", dir="/tmp")  # short: Ray's socket paths live under it
    CLUSTER_DIRS.append(Path(temp_dir))
    env = {**os.environ, **RAY_ENV}
    helper = subprocess.Popen([sys.executable, str(ROOT / "tests" / "ray_cluster.py"), "--nodes", "2", "--cpus", "1",
                               "--temp-dir", temp_dir], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        address = helper.stdout.readline().strip()
        assert address.startswith("127.0.0.1:"), helper.communicate(timeout=60)[1][-2000:]
        yield address
    finally:
        helper.stdin.close()
        try:
            helper.wait(timeout=60)
        except subprocess.TimeoutExpired:
            helper.kill()
            helper.wait()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in _processes_of(temp_dir):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            time.sleep(1)
        shutil.rmtree(temp_dir, ignore_errors=True)


def build(project: Path, tmp_path: Path, name: str, *extra: str, check: bool = True, wait: bool = True):
    """`fellowship build tiny ...` with its own data and cache folders `tmp_path/<name>-{data,cache}`."""
    env = {**os.environ, **RAY_ENV, "FELLOWSHIP_DATA_DIR": str(tmp_path / f"{name}-data"),
           "FELLOWSHIP_CACHE_DIR": str(tmp_path / f"{name}-cache")}
    command = FELLOWSHIP + ["build", "tiny", "--no-progress", *extra]
    if not wait:
        return subprocess.Popen(command, cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    result = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def tables(tmp_path: Path, name: str, which=BUILT_TABLES) -> dict[str, pl.DataFrame]:
    data = tmp_path / f"{name}-data" / "tiny"
    return {t: pl.read_parquet(TABLES[t].path(data)).drop(MEASURED, strict=False) for t in which}


def server_recipe(project: Path, server: FakeOpenAIServer, items: int = 4, concurrency: int = 4, extra: str = "") -> None:
    path = tiny_recipe(project, provider="openai-compatible", model="m",
                       extra=f", base_url: '{server.base_url}', concurrency: {concurrency}{extra}")
    path.write_text(path.read_text().replace("sample: 4", f"sample: {items}"))


def test_a_ray_build_writes_the_tables_a_local_build_writes(cluster, project, tmp_path, monkeypatch):
    # the demo's shape (feedback loop with a reviewer, combined judge in every rotation), on the fake
    # OpenAI-compatible server; two blocks per stage so the parts really are committed in order
    monkeypatch.setenv("OPENAI_API_KEY", SENTINEL_KEY)  # the key the tasks' providers need
    with FakeOpenAIServer() as server:
        server_recipe(project, server, items=6, extra=", api_key_env: OPENAI_API_KEY")
        build(project, tmp_path, "local")
        local_calls = server.completed
        done = build(project, tmp_path, "ray", "--executor", "ray", "--address", cluster)
    assert "candidates: wrote candidates (18 rows)" in done.stderr and "Traceback" not in done.stderr
    assert server.completed == 2 * local_calls  # the same calls, each made once per build (own caches)
    local, on_ray = tables(tmp_path, "local"), tables(tmp_path, "ray")
    for name in BUILT_TABLES:
        assert on_ray[name].equals(local[name]), name
    assert not list((tmp_path / "ray-cache").glob("parts/**/*.sqlite"))  # every part merged
    assert not (tmp_path / "ray-data" / "tiny" / ".parts").exists()
    assert SENTINEL_KEY not in done.stdout + done.stderr
    written = [p for d in (tmp_path, *CLUSTER_DIRS) for p in d.rglob("*") if p.is_file() and not p.is_socket()]
    assert written and not [p for p in written if SENTINEL_KEY.encode() in p.read_bytes()]


def test_a_recipe_can_send_one_stage_to_ray(cluster, project, tmp_path):
    path = tiny_recipe(project)
    path.write_text(path.read_text() + "stages:\n  scores: {executor: ray}\n")
    build(project, tmp_path, "local", "--executor", "local")
    done = build(project, tmp_path, "ray", "--address", cluster)
    assert "scores: wrote scores (36 rows)" in done.stderr
    local, on_ray = tables(tmp_path, "local"), tables(tmp_path, "ray")
    assert all(on_ray[t].equals(local[t]) for t in BUILT_TABLES)


def test_executor_ray_is_refused_for_stages_it_does_not_run(project, tmp_path):
    path = tiny_recipe(project)
    path.write_text(path.read_text() + "stages:\n  picks: {executor: ray}\n")
    result = build(project, tmp_path, "x", check=False)
    assert_one_line(result, "stages: picks: executor `ray` runs only candidates, debates, scores")


def _parts(cache: Path) -> list[tuple[Path, int, int]]:
    """(file, worker pid, answers committed) of each task's cache part. Read as the executor reads a
    part, read-write: SQLite then rolls back a commit a killed writer left half done, which a
    read-only reader cannot (it fails with "attempt to write a readonly database")."""
    found = []
    for part in sorted(cache.glob("parts/tiny/candidates/*.sqlite")):
        db = sqlite3.connect(part, timeout=30)
        try:
            count = db.execute("select count(*) from responses").fetchone()[0]
        except sqlite3.OperationalError as e:  # a part whose table is not created yet
            assert "no such table" in str(e), e
            count = 0
        finally:
            db.close()
        found.append((part, int(part.name.split("-")[1]), count))
    return found


def _stored(cache: Path) -> int:
    return sum(count for _, _, count in _parts(cache))


def _running_part(cache: Path, data: Path, answers: int) -> tuple[int, int] | None:
    """(worker pid, answers committed) of a part holding at least `answers` whose block has no table
    part yet (its task is still running), or None."""
    for part, pid, count in _parts(cache):
        if count >= answers and not (data / ".parts" / "candidates" / f"{part.name.split('-')[0]}.parquet").exists():
            return pid, count
    return None


def _wait(condition, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_killed_ray_worker_loses_no_row_and_repeats_no_cached_call(cluster, project, tmp_path):
    with FakeOpenAIServer(delay_s=0.2) as server:
        server_recipe(project, server, items=8, concurrency=2)
        reference = FakeOpenAIServer(delay_s=0)
        with reference:  # what a local build writes (its own server, cache and data)
            server_recipe(project, reference, items=8, concurrency=2)
            build(project, tmp_path, "local", "--stage", "items", "--stage", "candidates")
        server_recipe(project, server, items=8, concurrency=2)
        process = build(project, tmp_path, "ray", "--stage", "items", "--stage", "candidates", "--executor", "ray",
                        "--address", cluster, wait=False)
        cache, data = tmp_path / "ray-cache", tmp_path / "ray-data" / "tiny"
        _wait(lambda: _running_part(cache, data, 3) is not None)
        victim, stored = _running_part(cache, data, 3)  # a worker of this build's job, answering a block
        in_flight = server.in_flight
        os.kill(victim, signal.SIGKILL)
        _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    assert tables(tmp_path, "ray", ["candidates"])["candidates"].equals(tables(tmp_path, "local", ["candidates"])["candidates"])
    # the answers the dead worker's task had committed were taken from its part by the task's retry;
    # at most the calls in flight and the answers its part had not yet committed went out again (each
    # task has one call in flight: concurrency 2 over 2 tasks)
    assert server.completed_repeats <= in_flight + _unflushed(0.2)
    assert server.completed == 8 * 5 + server.completed_repeats
    cached = int(stderr.split(" cached")[0].rsplit(", ", 1)[-1])
    assert cached >= stored >= 3, stderr


def test_a_killed_driver_resumes_from_the_cache(cluster, project, tmp_path):
    with FakeOpenAIServer(delay_s=0.2) as server:
        server_recipe(project, server, items=8, concurrency=2)
        args = ("--stage", "items", "--stage", "candidates", "--executor", "ray", "--address", cluster)
        process = build(project, tmp_path, "ray", *args, wait=False)
        cache = tmp_path / "ray-cache"
        _wait(lambda: _stored(cache) >= 4)
        process.send_signal(signal.SIGKILL)
        process.wait()
        time.sleep(1.0)  # the job's workers go with their driver
        stored, in_flight = _stored(cache), server.in_flight
        before = server.completed
        done = build(project, tmp_path, "ray", *args)
        made = server.completed - before
    assert "candidates: wrote candidates (24 rows)" in done.stderr
    assert not (tmp_path / "ray-data" / "tiny" / ".parts").exists()
    assert server.completed_repeats <= in_flight + 2 * _unflushed(0.2)  # both tasks' uncommitted answers
    assert made <= 8 * 5 - stored + in_flight, (made, stored)
    with FakeOpenAIServer() as reference:
        server_recipe(project, reference, items=8, concurrency=2)
        build(project, tmp_path, "local", "--stage", "items", "--stage", "candidates")
    assert tables(tmp_path, "ray", ["candidates"])["candidates"].equals(tables(tmp_path, "local", ["candidates"])["candidates"])


def test_a_budget_stop_under_ray_is_clean_and_resumes(cluster, project, tmp_path):
    with FakeOpenAIServer() as server:
        path = tiny_recipe(project, provider="openai-compatible", model="m",
                           extra=f", base_url: '{server.base_url}', price: {{input: 1000, output: 1000}}, max_tokens: 64")
        path.write_text(path.read_text() + "budget: {usd: 1.0}\n")
        result = build(project, tmp_path, "ray", "--executor", "ray", "--address", cluster, check=False)
        assert_one_line(result, "budget reached")
        data = tmp_path / "ray-data" / "tiny"
        assert not (data / "candidates.parquet").exists() and not (data / ".parts").exists()
        assert not list((tmp_path / "ray-cache").glob("parts/**/*.sqlite"))  # answers merged into the cache
        made = server.completed
        assert made > 0
        again = build(project, tmp_path, "ray", "--executor", "ray", "--address", cluster, check=False)
        assert_one_line(again, "budget reached")  # the answers of the first come from the cache, at their price
        assert not (data / "candidates.parquet").exists()
        assert server.completed_repeats == 0


def test_executor_ray_without_ray_installed_is_one_line(project, tmp_path):
    fake = tmp_path / "no-ray" / "ray"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named ray')\n")
    tiny_recipe(project)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "no-ray"), os.environ["PYTHONPATH"]]),
           "FELLOWSHIP_DATA_DIR": str(tmp_path / "data")}
    result = subprocess.run(FELLOWSHIP + ["build", "tiny", "--executor", "ray"], cwd=project, env=env,
                            capture_output=True, text=True)
    assert_one_line(result, "--executor ray needs Ray", "pip install -e '.[ray]'")
    assert not (tmp_path / "data").exists()


def test_an_unreachable_address_is_one_line(project, tmp_path):
    tiny_recipe(project)
    result = build(project, tmp_path, "x", "--executor", "ray", "--address", "127.0.0.1:1", check=False)
    assert_one_line(result, "cannot reach the Ray cluster at 127.0.0.1:1")
    assert not (tmp_path / "x-data").exists()


@pytest.mark.skipif(shutil.which("unshare") is None or os.geteuid() != 0, reason="needs unshare and root")
def test_a_cluster_that_does_not_share_the_cache_folder_is_one_line(cluster, project, tmp_path):
    # the driver sees its cache folder on a tmpfs of its own mount namespace: the cluster's nodes,
    # outside it, see an empty folder there, as nodes without the shared storage would
    tiny_recipe(project)
    cache = tmp_path / "private-cache"
    cache.mkdir()
    env = {**os.environ, **RAY_ENV, "FELLOWSHIP_DATA_DIR": str(tmp_path / "data"), "FELLOWSHIP_CACHE_DIR": str(cache)}
    command = " ".join(FELLOWSHIP[:2]) + f" '{FELLOWSHIP[2]}' build tiny --executor ray --address {cluster}"
    result = subprocess.run(["unshare", "-m", "sh", "-c", f"mount -t tmpfs none {cache} && exec {command}"],
                            cwd=project, env=env, capture_output=True, text=True)
    assert_one_line(result, "needs the cache folder", "on storage every node sees", "does not see the cache folder")
    assert not (tmp_path / "data").exists() and not list(cache.iterdir())
