"""The Ray executor against the local one: throughput, CPU per call, the kill tests, and the plan of a
paper-scale recipe.

Every call goes to the fake OpenAI-compatible server of `benchmarks/engine.py`, started as its own
process (`python -m tests.openai_server --delay D --no-record`, on 127.0.0.1), and the recipe is
that script's: one `openai-compatible` model at `concurrency: C`, `workflow: single` with 2 samples
per prompt, so N calls are the `candidates` stage of N/2 prompts. Each run has a fresh server, a
fresh data folder and a cold response cache. The script starts its own Ray cluster, one node with 2
CPUs listening on 127.0.0.1 only (`tests/ray_cluster.py`, its own temp dir), and stops it after,
then ends what is left by the pids of that cluster's processes (never `ray stop`, which would stop
every Ray instance on the machine).

    python benchmarks/ray_executor.py throughput --n 2000 --c 50 --delay 0.5 --repeats 3  # I/O-bound
    python benchmarks/ray_executor.py throughput --n 2000 --n 10000 --c 50 --delay 0 --repeats 2  # CPU-bound
    python benchmarks/ray_executor.py kills --n 2000 --c 50 --delay 0.5 --repeats 2
    python benchmarks/ray_executor.py plan --prompts 1000000

throughput: three ways of running the same stage, in a rotating order (local, ray-1, ray-2; then
ray-1, ray-2, local; ...), `--repeats` times each: the local executor (`candidates.build` in this
process), and the Ray executor (`ray_executor.run`) with one task and with two tasks in flight (each
task's engine gets C/T of the model's concurrency, so C calls are in flight in every case). The stage
is timed in this process as `run_stage` runs it (engine from the recipe, the stage, the spend
record), after one untimed warm-up of each mode (so the cluster's worker processes exist and have
imported the code, and this process has connected to the cluster). CPU is measured per process:
this process (`time.process_time()`, every thread, minus the sampling thread's own time); the Ray
cluster's processes (every process whose command line names the cluster's temp dir, and all their
descendants: the GCS, the raylet and its agents, and the worker processes that run the tasks),
sampled with psutil every 0.25 s so a worker that exits mid-run keeps the CPU it had used; the fake
server's process. Every run must write N rows equal, apart from `latency_s`, to the first local run's.

kills: whole commands, `fellowship build bench --stage candidates --executor ray --address ADDR
--no-progress` (the items stage built before, untimed), against a server answering after `--delay`:
an uninterrupted build; a build whose Ray worker is sent SIGKILL once the server has answered
`--kill-at` of the calls (a worker of this cluster running one of the stage's tasks, as its process
title `ray::_answer_block` says, the one whose cache parts hold the most answers); a build whose
driver is sent SIGKILL at the same point, then the same command again. Each final table is compared
with a local build's (rows lost, texts different); the server counts the requests it received, the
answers it sent, and the answers it sent twice for the same body (`completed_repeats`); the build's
usage line gives the calls taken from the cache.

plan: a recipe of the paper's shape (feedback loop, 3 iterations, one reviewer; combined judge with
every rotation) over a synthetic source of `--prompts` prompts, on hosted models, every LLM stage
`batch: true`, planned by `fellowship plan` (a subprocess, with an empty cache; its text output is kept).

Results are printed as Markdown tables and merged into benchmarks/results/ray_executor.json.
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import io
import json
import logging
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # benchmark this checkout's code, whatever copy is installed
sys.path.insert(0, str(ROOT / "tests"))
from ray_cluster import ENV as RAY_ENV  # noqa: E402

os.environ.update(RAY_ENV)  # before Ray is imported: this process connects to a cluster on 127.0.0.1

import click  # noqa: E402
import polars as pl  # noqa: E402
import psutil  # noqa: E402

from benchmarks import engine as bench  # noqa: E402  (the fake server, the workload and the recipe)
from builders import candidates, ray_executor  # noqa: E402
from builders.llm.engine import Engine  # noqa: E402
from builders.loader import load_recipe  # noqa: E402
from builders.memory import use_system_arrow_pool  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "ray_executor.json"
MODES = ("local", "ray-1", "ray-2")  # the local executor; the Ray executor with 1 and 2 tasks in flight
CLUSTER_CPUS = 2
OBJECT_STORE_MB = 256  # the cluster's shared-memory object store (Ray's default is 30% of RAM)
SAMPLE_S = 0.25  # between CPU samples of the cluster's processes
MEASURED = ("latency_s",)  # measured by each build: the only column two builds of one recipe may differ in
PART_GLOB = "parts/bench/candidates/*.sqlite"  # a task's cache part: <block>-<pid>-<random>.sqlite
TASK_TITLE = f"ray::{ray_executor._answer_block.__name__}"  # a Ray worker's process title while it runs a task


# --- the cluster ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cluster_roots(temp_dir: str) -> list[psutil.Process]:
    """The processes whose command line names the cluster's temp dir (GCS, raylet, agents, ...)."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(temp_dir in part for part in p.info["cmdline"] or []):
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


def cluster_processes(temp_dir: str) -> dict[int, psutil.Process]:
    """The cluster's processes and all their descendants (the workers are the raylet's children)."""
    out: dict[int, psutil.Process] = {}
    for root in cluster_roots(temp_dir):
        out[root.pid] = root
        try:
            for child in root.children(recursive=True):
                out[child.pid] = child
        except psutil.NoSuchProcess:
            pass
    return out


def is_worker(p: psutil.Process) -> bool:
    """A Ray worker process (it renames itself `ray::...`; before that it runs default_worker.py)."""
    try:
        cmdline = p.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
    return bool(cmdline) and (cmdline[0].startswith("ray::") or any("default_worker.py" in c for c in cmdline))


@contextlib.contextmanager
def local_cluster(cpus: int = CLUSTER_CPUS):
    """A one-node Ray cluster on 127.0.0.1 (tests/ray_cluster.py) for the `with` block; yields
    (address, temp dir). Stopped when the helper's stdin closes; what is left is ended by its pid."""
    temp_dir = tempfile.mkdtemp(prefix="rfb", dir="/tmp")  # short: Ray's socket paths live under it
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    helper = subprocess.Popen([sys.executable, str(ROOT / "tests" / "ray_cluster.py"), "--nodes", "1", "--cpus", str(cpus),
                               "--temp-dir", temp_dir, "--object-store-mb", str(OBJECT_STORE_MB)], env=env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        address = helper.stdout.readline().strip()
        if not address:
            raise click.ClickException("the Ray cluster did not start (tests/ray_cluster.py)")
        yield address, temp_dir
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        helper.stdin.close()
        try:
            helper.wait(timeout=60)
        except subprocess.TimeoutExpired:
            helper.kill()
        for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 1.0)):
            for p in cluster_processes(temp_dir).values():
                with contextlib.suppress(psutil.NoSuchProcess):
                    p.send_signal(sig)
            time.sleep(wait)
        import shutil

        shutil.rmtree(temp_dir, ignore_errors=True)


# --- CPU of the processes involved ----------------------------------------------------------------


def cpu_s(p: psutil.Process) -> float:
    t = p.cpu_times()
    return t.user + t.system


class CpuMeter:
    """CPU seconds used by this process, by the cluster's workers and system processes, and by the
    fake server, between `start()` and `stop()`."""

    def __init__(self, temp_dir: str | None, server_pid: int):
        self.temp_dir, self.server = temp_dir, psutil.Process(server_pid)
        self.first: dict[int, float] = {}  # the CPU a process had at the start (0 for one that started later)
        self.last: dict[int, float] = {}
        self.kind: dict[int, str] = {}
        self.known: dict[int, psutil.Process] = {}
        self.sampler_cpu = 0.0
        self._done = threading.Event()

    def _sample(self) -> None:
        if self.temp_dir is None:
            return
        for pid, p in cluster_processes(self.temp_dir).items():
            if pid not in self.known:
                self.known[pid] = p
        for pid, p in list(self.known.items()):
            try:
                used = cpu_s(p)
                if pid not in self.kind or self.kind[pid] != "workers":
                    self.kind[pid] = "workers" if is_worker(p) else "ray system"
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                del self.known[pid]
                continue
            self.first.setdefault(pid, used if self._starting else 0.0)
            self.last[pid] = used

    def _loop(self) -> None:
        while not self._done.wait(SAMPLE_S):
            self._sample()
        self.sampler_cpu = time.thread_time()

    def start(self) -> None:
        self._starting = True
        self._sample()
        self._starting = False
        self.server_cpu = cpu_s(self.server)
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        self.process_cpu = time.process_time()

    def stop(self) -> dict:
        process_cpu = time.process_time() - self.process_cpu
        self._done.set()
        self._thread.join()
        self._sample()
        by_kind = {"workers": 0.0, "ray system": 0.0}
        for pid, used in self.last.items():
            by_kind[self.kind[pid]] += used - self.first[pid]
        return {"driver_cpu_s": process_cpu - self.sampler_cpu, "worker_cpu_s": by_kind["workers"],
                "ray_system_cpu_s": by_kind["ray system"], "server_cpu_s": cpu_s(self.server) - self.server_cpu,
                "sampler_cpu_s": self.sampler_cpu, "worker_pids": sorted(p for p, k in self.kind.items() if k == "workers")}


# --- one timed stage ------------------------------------------------------------------------------


class TaskCpu(logging.Handler):
    """The CPU the Ray tasks used in their phases (engine set-up, the stage's calls, the part
    written), as `ray_executor.run` logs it at debug level when the stage is done."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.figures: dict = {}
        self.logger = logging.getLogger("builders.ray_executor")
        self.level_before = self.logger.level
        self.logger.addHandler(self)
        self.logger.setLevel(logging.DEBUG)

    def emit(self, record: logging.LogRecord) -> None:
        if hasattr(record, "task_cpu"):
            self.figures = {f"task_{k}": v for k, v in record.task_cpu.items()} | {"blocks": record.blocks}

    def close(self) -> None:
        self.logger.removeHandler(self)
        self.logger.setLevel(self.level_before)
        super().close()


def timed_stage(recipe_path: Path, folder: Path, mode: str, *, address: str | None, temp_dir: str | None,
                server: bench.FakeServer) -> dict:
    """Build items (untimed), then time the candidates stage as `run_stage` runs it, in `mode`."""
    data_root, _ = bench.use_folders(folder)
    bench.build_items(recipe_path, data_root)
    recipe = load_recipe(recipe_path, check_source=False)
    data_dir = data_root / recipe.name
    gc.collect()
    tasks_cpu = TaskCpu()
    meter = CpuMeter(temp_dir, server.process.pid)
    meter.start()
    wall = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):
        use_system_arrow_pool()
        engine = Engine.for_recipe(recipe, progress=False, stage="candidates")
        try:
            if mode == "local":
                candidates.build(recipe, data_dir, engine=engine)
            else:
                ray_executor.run(recipe, "candidates", data_dir, engine, address=address, progress=False,
                                 tasks=int(mode.split("-")[1]))
        finally:
            engine.record_spend()
            tasks_cpu.close()
    wall = time.perf_counter() - wall
    cpu = meter.stop()
    cpu.update(tasks_cpu.figures)
    table = pl.read_parquet(bench.candidates_path(data_root))
    return {"mode": mode, "wall_s": wall, **cpu, "rows": table.height, "calls": engine.usage.calls,
            "cached": engine.usage.cached, "retries": engine.usage.retries, "server": server.stats(), "table": table}


def same_table(table: pl.DataFrame, reference: pl.DataFrame) -> bool:
    return table.drop(MEASURED).equals(reference.drop(MEASURED))


def rotation(r: int) -> list[str]:
    return [MODES[(r + k) % len(MODES)] for k in range(len(MODES))]


def throughput(n: int, c: int, *, delay: float, repeats: int, work: Path) -> dict:
    source, prompts = bench.write_source(work / "sources", n // bench.SAMPLES)
    runs: dict[str, list[dict]] = {m: [] for m in MODES}
    reference = None
    load = []
    with local_cluster() as (address, temp_dir):
        for mode in MODES:  # warm-up: connect, start the workers, import the code in them
            warm_source, _ = bench.write_source(work / "sources", 8)
            with bench.FakeServer(delay=0) as server:
                folder = work / f"warm-up-{mode}"
                recipe = bench.write_recipe(folder, base_url=server.base_url, source=warm_source, prompts=8, concurrency=c)
                timed_stage(recipe, folder, mode, address=address, temp_dir=temp_dir, server=server)
        for r in range(repeats):
            for mode in rotation(r):
                with bench.FakeServer(delay=delay) as server:
                    folder = work / f"tp-d{delay:g}-n{n}-{mode}-{r}"
                    recipe = bench.write_recipe(folder, base_url=server.base_url, source=source, prompts=len(prompts),
                                                concurrency=c)
                    run = timed_stage(recipe, folder, mode, address=address, temp_dir=temp_dir, server=server)
                reference = run["table"] if reference is None and mode == "local" else reference
                runs[mode].append(run)
                load.append(os.getloadavg()[0])
                click.echo(f"  delay {delay:g} N={n} {mode} #{r + 1}: {run['wall_s']:.2f}s, driver {run['driver_cpu_s']:.2f}"
                           f" + workers {run['worker_cpu_s']:.2f} + ray {run['ray_system_cpu_s']:.2f} CPU-s, "
                           f"server {run['server_cpu_s']:.2f}, load {load[-1]:.2f}", err=True)
    for mode_runs in runs.values():
        for run in mode_runs:
            run["equal_to_local"] = same_table(run.pop("table"), reference)
    case = {"n": n, "c": c, "delay_s": delay, "repeats": repeats, "ideal_s": n / c * delay if delay else None,
            "load_average_1m": {"min": round(min(load), 2), "median": round(statistics.median(load), 2),
                                "max": round(max(load), 2)},
            "runs": {m: [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in x.items()}
                         for x in xs] for m, xs in runs.items()}}
    case["summary"] = summarize(case)
    print_throughput(case)
    return case


def total_cpu_s(run: dict) -> float:
    """The CPU a build used: this process, plus the cluster's processes for a Ray build (a local
    build does not need the cluster: what its idle processes used meanwhile is left out)."""
    if run["mode"] == "local":
        return run["driver_cpu_s"]
    return run["driver_cpu_s"] + run["worker_cpu_s"] + run["ray_system_cpu_s"]


def summarize(case: dict) -> dict:
    """Medians per executor, and CPU per call."""
    n, summary = case["n"], {}
    for mode, xs in case["runs"].items():
        med = {k: statistics.median(x[k] for x in xs) for k in
               ("wall_s", "driver_cpu_s", "worker_cpu_s", "ray_system_cpu_s", "server_cpu_s")}
        med["total_cpu_s"] = statistics.median(total_cpu_s(x) for x in xs)
        for k in ("task_setup_s", "task_calls_s", "task_part_s"):
            if all(k in x for x in xs):
                med[k] = statistics.median(x[k] for x in xs)
        summary[mode] = {
            **{k: round(v, 3) for k, v in med.items()},
            "wall_range_s": [round(min(x["wall_s"] for x in xs), 3), round(max(x["wall_s"] for x in xs), 3)],
            "calls_per_s": round(n / med["wall_s"], 1),
            "cpu_ms_per_call": {k: round(med[k] / n * 1000, 3) for k in
                                ("driver_cpu_s", "worker_cpu_s", "ray_system_cpu_s", "total_cpu_s", "server_cpu_s",
                                 "task_setup_s", "task_calls_s", "task_part_s") if k in med},
            "peak_in_flight": [x["server"]["peak_in_flight"] for x in xs],
            "all_rows": all(x["rows"] == n for x in xs), "all_equal_to_local": all(x["equal_to_local"] for x in xs),
            "calls": [x["calls"] for x in xs],
        }
    return summary


def print_throughput(case: dict) -> None:
    local = case["summary"]["local"]["cpu_ms_per_call"]["total_cpu_s"]
    rows = []
    for mode, s in case["summary"].items():
        ms = s["cpu_ms_per_call"]
        idle = mode == "local"  # the cluster's processes idled beside it: shown in brackets, not counted
        rows.append([mode, f"{s['wall_s']:.2f} ({s['wall_range_s'][0]:.2f}-{s['wall_range_s'][1]:.2f})", f"{s['calls_per_s']:.1f}",
                     f"{ms['driver_cpu_s']:.2f}", f"({ms['worker_cpu_s']:.2f})" if idle else f"{ms['worker_cpu_s']:.2f}",
                     f"{ms['task_calls_s']:.2f}" if "task_calls_s" in ms else "",
                     f"({ms['ray_system_cpu_s']:.2f})" if idle else f"{ms['ray_system_cpu_s']:.2f}",
                     f"{ms['total_cpu_s']:.2f}", f"{ms['total_cpu_s'] - local:+.2f}", f"{ms['server_cpu_s']:.2f}",
                     max(s["peak_in_flight"]), "yes" if s["all_rows"] and s["all_equal_to_local"] else "NO"])
    bench.print_table(
        f"N={case['n']} calls, C={case['c']}, server delay {case['delay_s']:g}s: median (range) of {case['repeats']} rotating runs; "
        f"load average (1 min) {case['load_average_1m']['min']}-{case['load_average_1m']['max']}",
        ["executor", "wall s", "calls/s", "driver CPU ms/call", "workers", "of which the tasks' calls", "Ray system", "total", "vs local",
         "server CPU ms/call", "peak in flight", "rows = local's"], rows)


# --- the kill tests -------------------------------------------------------------------------------


def stored(cache: Path, pid: int | None = None) -> int:
    """Answers stored in the tasks' cache parts (of one worker's pid, or all). A part is read as the
    executor reads it, read-write: SQLite then rolls back a commit a killed writer left half done,
    where a read-only connection fails ("attempt to write a readonly database") and the part's
    answers would not be counted."""
    total = 0
    for part in cache.glob(PART_GLOB):
        if pid is not None and int(part.name.split("-")[1]) != pid:
            continue
        try:
            db = sqlite3.connect(f"file:{part}?mode=rw", uri=True, timeout=30)  # rw: never creates a file
        except sqlite3.Error:  # merged away meanwhile
            continue
        try:
            total += db.execute("select count(*) from responses").fetchone()[0]
        except sqlite3.Error:  # a part whose table is not created yet, or merged away meanwhile
            pass
        finally:
            db.close()
    return total


def task_workers(temp_dir: str) -> list[int]:
    """The pids of this cluster's worker processes running one of the stage's tasks: Ray sets a
    worker's process title to `ray::<function>` while it runs a task, `ray::IDLE` between tasks
    (`ray.util.state.list_tasks` is served over the dashboard's HTTP server, which the cluster does
    not start)."""
    found = []
    for pid, p in cluster_processes(temp_dir).items():
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            cmdline = p.cmdline()
            if cmdline and cmdline[0].strip() == TASK_TITLE:
                found.append(pid)
    return sorted(found)


def fellowship(recipe: Path, folder: Path, address: str) -> tuple[list[str], dict]:
    env = {**os.environ, "FELLOWSHIP_DATA_DIR": str(folder / "data"), "FELLOWSHIP_CACHE_DIR": str(folder / "cache")}
    return bench.FELLOWSHIP + ["build", str(recipe), "--stage", "candidates", "--executor", "ray", "--address", address,
                               "--no-progress"], env


def wait_for(condition, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise click.ClickException("timed out")
        time.sleep(0.02)


def kill_case(kind: str, n: int, c: int, *, delay: float, kill_at: float, source: Path, prompts: int,
              address: str, temp_dir: str, reference: pl.DataFrame, work: Path, r: int) -> dict:
    """One build of `kind` (none, worker, driver) with its own server, folder and cold cache."""
    folder = work / f"kill-{kind}-{r}"
    with bench.FakeServer(delay=delay) as server:
        recipe = bench.write_recipe(folder, base_url=server.base_url, source=source, prompts=prompts, concurrency=c)
        bench.build_items(recipe, folder / "data")
        command, env = fellowship(recipe, folder, address)
        cache = folder / "cache"
        out: dict = {"kind": kind}
        wall = time.perf_counter()
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if kind != "none":
            wait_for(lambda: server.stats()["completed"] >= kill_at * n)
            at = server.stats()
            if kind == "worker":
                wait_for(lambda: task_workers(temp_dir))
                victim = max(task_workers(temp_dir), key=lambda pid: stored(cache, pid))
                out["victim_stored"] = stored(cache, victim)
                out["task_workers_at_kill"] = len(task_workers(temp_dir))
                os.kill(victim, signal.SIGKILL)  # a Ray worker running one of this build's tasks
            else:
                process.send_signal(signal.SIGKILL)
            out.update(at_kill_completed=at["completed"], at_kill_in_flight=at["in_flight"], at_kill_s=time.perf_counter() - wall,
                       stored_at_kill=stored(cache))
        _, stderr = process.communicate(timeout=1200)
        if kind == "driver":
            time.sleep(1.0)  # the job's workers go with their driver
            out["stored_after_kill"] = stored(cache)
            out["completed_after_kill"] = server.stats()["completed"]
            again = time.perf_counter()
            rerun = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
            out["rerun_s"] = time.perf_counter() - again
            stderr, returncode = rerun.stderr, rerun.returncode
            out["rerun"] = bench.usage_from_log(stderr)
        else:
            returncode = process.returncode
        wall = time.perf_counter() - wall
        stats = server.stats()
    out.update(wall_s=wall, requests=stats["requests"], completed=stats["completed"],
               completed_repeats=stats["completed_repeats"], requests_beyond_unique=stats["requests"] - n)
    if returncode != 0:  # a figure too: recorded, not raised
        out.update(error=stderr.strip().splitlines()[-1] if stderr.strip() else f"exit {returncode}", rows=None,
                   rows_lost=None, texts_different=None, equal_to_local=False, stderr_tail=stderr[-3000:])
        click.echo(f"  kill {kind} #{r + 1}: FAILED after {wall:.2f}s: {out['error']}", err=True)
        return out
    table = pl.read_parquet(bench.candidates_path(folder / "data"))
    missing = reference.join(table, on="candidate_id", how="anti").height
    joined = reference.join(table, on="candidate_id", suffix="_run")
    different = joined.filter(pl.col("response") != pl.col("response_run")).height
    out.update(rows=table.height, rows_lost=missing, texts_different=different,
               equal_to_local=same_table(table, reference), usage=bench.usage_from_log(stderr))
    click.echo(f"  kill {kind} #{r + 1}: {wall:.2f}s, {table.height} rows, {missing} lost, requests {stats['requests']}, "
               f"repeats {stats['completed_repeats']}, load {os.getloadavg()[0]:.2f}", err=True)
    return out


def kills(n: int, c: int, *, delay: float, kill_at: float, repeats: int, work: Path) -> dict:
    source, prompts = bench.write_source(work / "sources", n // bench.SAMPLES)
    with bench.FakeServer(delay=0) as server:  # what a local build writes
        folder = work / "kill-reference"
        recipe = bench.write_recipe(folder, base_url=server.base_url, source=source, prompts=len(prompts), concurrency=c)
        reference = bench.run_fellowship(recipe, folder)["table"]
    runs: dict[str, list[dict]] = {"none": [], "worker": [], "driver": []}
    load = []
    with local_cluster() as (address, temp_dir):
        for r in range(repeats):
            for kind in (("none", "worker", "driver") if r % 2 == 0 else ("driver", "worker", "none")):
                runs[kind].append(kill_case(kind, n, c, delay=delay, kill_at=kill_at, source=source, prompts=len(prompts),
                                            address=address, temp_dir=temp_dir, reference=reference, work=work, r=r))
                load.append(os.getloadavg()[0])
    base = statistics.median(x["wall_s"] for x in runs["none"] if "error" not in x)
    for kind in ("worker", "driver"):
        for x in runs[kind]:
            x["extra_wall_s"] = x["wall_s"] - base
    case = {"n": n, "c": c, "delay_s": delay, "kill_at": kill_at, "repeats": repeats, "ideal_s": n / c * delay,
            "uninterrupted_median_s": round(base, 3),
            "load_average_1m": {"min": round(min(load), 2), "median": round(statistics.median(load), 2), "max": round(max(load), 2)},
            "runs": {k: [{kk: (round(v, 3) if isinstance(v, float) else v) for kk, v in x.items()} for x in xs] for k, xs in runs.items()}}
    print_kills(case)
    return case


def print_kills(case: dict) -> None:
    rows = []
    for kind, xs in case["runs"].items():
        for x in xs:
            rows.append([kind, f"{x['wall_s']:.2f}", f"{x.get('extra_wall_s', 0):+.2f}" if kind != "none" else "",
                         x.get("at_kill_completed", ""), x.get("at_kill_in_flight", ""), x.get("stored_at_kill", ""),
                         x["requests"], x["requests_beyond_unique"], x["completed_repeats"],
                         (x.get("usage") or {}).get("cached", ""), x["rows"], x["rows_lost"],
                         x["texts_different"], "yes" if x["equal_to_local"] else f"NO ({x['error']})" if "error" in x else "NO"])
    bench.print_table(
        f"Kills: N={case['n']} calls, C={case['c']}, server delay {case['delay_s']:g}s (ideal {case['ideal_s']:.1f}s), "
        f"killed at {case['kill_at']:.0%} of the answers; uninterrupted median {case['uninterrupted_median_s']:.2f}s; "
        f"load average (1 min) {case['load_average_1m']['min']}-{case['load_average_1m']['max']}",
        ["kill", "wall s", "extra s", "answered at kill", "in flight at kill", "stored at kill", "requests",
         "beyond unique", "answered twice", "taken from the cache", "rows", "lost", "texts differ", "table = local's"], rows)


# --- the paper-scale plan -------------------------------------------------------------------------

PLAN_RECIPE = """\
schema_version: 1
name: {name}
description: The paper's shape at {prompts:,} prompts on hosted models, every LLM stage through the batch APIs.
source:
  path: '{source}'
  prompt_column: prompt
models:
  writer:
    provider: openai
    model: gpt-4o-mini
    max_tokens: 512
    price: {{input: 0.15, output: 0.60, batch: 0.5}}
  reviewer:
    provider: openai
    model: gpt-4o-mini
    max_tokens: 512
    price: {{input: 0.15, output: 0.60, batch: 0.5}}
  judge:
    provider: openai
    model: gpt-4o
    max_tokens: 512
    price: {{input: 2.50, output: 10.00, batch: 0.5}}
generation:
  workflow: feedback
  generator: writer
  reviewers: [reviewer]
  iterations: 3
judge:
  panel:
    models: [judge]
    strategy: combined
    scale: 10
    orders: rotations
    reasoning: true
  mode: judge
  tie_policy: later_iteration
export:
  pairing: best_vs_rejected
stages:
  candidates: {{batch: true}}
  scores: {{batch: true}}
"""


def plan(prompts: int, work: Path) -> dict:
    import re

    folder = work / f"plan-{prompts}"
    folder.mkdir(parents=True, exist_ok=True)
    source = folder / "prompts.parquet"
    if not source.exists():
        started = time.perf_counter()
        pl.DataFrame({"prompt": bench.make_prompts(prompts)}).write_parquet(source)
        click.echo(f"  wrote {prompts:,} prompts in {time.perf_counter() - started:.1f}s", err=True)
    prompts_dir = folder / "prompts"  # the default templates, named relative to the recipe
    if not prompts_dir.exists():
        prompts_dir.symlink_to(ROOT / "recipes" / "prompts")
    recipe = folder / "paper-scale.yaml"
    recipe.write_text(PLAN_RECIPE.format(name="paper-scale", prompts=prompts, source=source))
    env = {**os.environ, "FELLOWSHIP_CACHE_DIR": str(folder / "cache")}  # empty: every call is new
    # the command reports its own peak RSS (VmHWM) as it exits
    peak = ("import atexit, sys; atexit.register(lambda: print('VmHWM', open('/proc/self/status').read()"
            ".split('VmHWM:')[1].split()[0], file=sys.stderr)); from builders.cli import main; main()")
    load_before = round(os.getloadavg()[0], 2)
    run = bench.timed_process([sys.executable, "-c", peak, "plan", str(recipe)], env)
    peak_mb = int(re.findall(r"^VmHWM (\d+)", run["stderr"], re.M)[-1]) / 1024
    out = {"text": run["stdout"], "wall_s": round(run["wall_s"], 1), "cpu_s": round(run["cpu_s"], 1)}
    result = {"prompts": prompts, "recipe": PLAN_RECIPE.format(name="paper-scale", prompts=prompts, source="PROMPTS"),
              "text": out["text"], "wall_s": out["wall_s"], "cpu_s": out["cpu_s"], "peak_rss_mb": round(peak_mb),
              "load_average_1m": [load_before, round(os.getloadavg()[0], 2)]}
    print(f"`fellowship plan` of {prompts:,} prompts ({out['wall_s']}s wall, {out['cpu_s']}s CPU, peak RSS {peak_mb:.0f} MB):\n")
    print("```\n" + out["text"].rstrip() + "\n```")
    return result


# --- results and command line ---------------------------------------------------------------------


def save(section: str, key: str, value: dict) -> None:
    """Merge one result into benchmarks/results/ray_executor.json (other sections and keys are kept)."""
    import ray

    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    value = {**value, "recorded_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
             "code": bench.code_version(), "machine": {**bench.machine(), "ray": ray.__version__, "nice": os.nice(0)}}
    results.setdefault(section, {})[key] = json.loads(json.dumps(value, default=str))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, RESULTS)


@click.group()
@click.option("--workdir", type=click.Path(file_okay=False), help="Keep recipes, tables, caches and logs here.")
def cli(workdir: str | None) -> None:
    """The Ray executor beside the local one, on the fake OpenAI-compatible server."""
    os.chdir(ROOT)


@cli.command("throughput")
@click.option("--n", "ns", multiple=True, type=int, default=[2000], show_default=True,
              help="Calls (N/2 prompts x 2 samples); give two or more to split fixed from per-call CPU.")
@click.option("--c", default=50, show_default=True, help="Calls in flight (the model's concurrency).")
@click.option("--delay", default=0.5, show_default=True, help="Server seconds per call (0: CPU-bound).")
@click.option("--repeats", default=3, show_default=True, help="Runs of each executor, in rotating order.")
@click.pass_context
def throughput_command(ctx, ns, c, delay, repeats):
    """Wall time, calls/s and CPU per call: local, Ray with 1 task, Ray with 2 tasks."""
    cases = []
    with bench.workspace(ctx) as work:
        for n in ns:
            cases.append(throughput(bench.even(n), c, delay=delay, repeats=repeats, work=work))
            save("throughput", f"N{n} C{c} delay{delay:g}", cases[-1])
    if len(cases) > 1:
        fit = scaling(cases)
        print_scaling(fit)
        save("scaling", f"N{'+'.join(map(str, ns))} C{c} delay{delay:g}", fit)


def scaling(cases: list[dict]) -> dict:
    """Per executor, the median total CPU against N fitted by a line (least squares over the Ns):
    the slope is the CPU per call, the intercept the fixed CPU of a stage."""
    fit = {"ns": [case["n"] for case in cases], "c": cases[0]["c"], "delay_s": cases[0]["delay_s"],
           "load_average_1m": [case["load_average_1m"] for case in cases], "modes": {}}
    for mode in MODES:
        points = [(case["n"], case["summary"][mode]["total_cpu_s"]) for case in cases]
        slope, intercept = statistics.linear_regression([x for x, _ in points], [y for _, y in points])
        tasks = [(case["n"], case["summary"][mode].get("task_calls_s")) for case in cases]
        fit["modes"][mode] = {"cpu_ms_per_call": round(slope * 1000, 3), "fixed_cpu_s": round(intercept, 3),
                              "points": points, "task_calls_s": tasks}
    return fit


def print_scaling(fit: dict) -> None:
    local = fit["modes"]["local"]["cpu_ms_per_call"]
    rows = [[mode, f"{m['cpu_ms_per_call']:.2f}", f"{m['cpu_ms_per_call'] - local:+.2f}", f"{m['fixed_cpu_s']:.2f}",
             ", ".join(f"{y:.2f}" for _, y in m["points"])] for mode, m in fit["modes"].items()]
    bench.print_table(
        f"CPU against N = {', '.join(map(str, fit['ns']))} (C={fit['c']}, delay {fit['delay_s']:g}s): slope and intercept of "
        "the medians' line", ["executor", "CPU ms/call (slope)", "vs local", "fixed CPU s (intercept)", "median total CPU s"],
        rows)


@cli.command("report")
def report_command():
    """Print the tables of benchmarks/results/ray_executor.json again (summaries recomputed from its runs)."""
    results = json.loads(RESULTS.read_text())
    for case in results.get("throughput", {}).values():
        case["summary"] = summarize(case)
        print_throughput(case)
    for fit in results.get("scaling", {}).values():
        print_scaling(fit)
    for case in results.get("kills", {}).values():
        print_kills(case)
    for result in results.get("plan", {}).values():
        print(f"`fellowship plan` of {result['prompts']:,} prompts ({result['wall_s']}s wall, {result['cpu_s']}s CPU):\n")
        print("```\n" + result["text"].rstrip() + "\n```")


@cli.command("kills")
@click.option("--n", default=2000, show_default=True, help="Calls.")
@click.option("--c", default=50, show_default=True, help="Calls in flight.")
@click.option("--delay", default=0.5, show_default=True, help="Server seconds per call.")
@click.option("--kill-at", default=0.4, show_default=True, help="Kill once the server has answered this share of N.")
@click.option("--repeats", default=2, show_default=True, help="Builds of each kind.")
@click.pass_context
def kills_command(ctx, n, c, delay, kill_at, repeats):
    """A Ray worker and the driver killed mid-stage: calls repeated, rows lost, extra wall time."""
    with bench.workspace(ctx) as work:
        case = kills(bench.even(n), c, delay=delay, kill_at=kill_at, repeats=repeats, work=work)
    save("kills", f"N{n} C{c} delay{delay:g}", case)


@cli.command("plan")
@click.option("--prompts", default=1_000_000, show_default=True, help="Prompts in the synthetic source.")
@click.pass_context
def plan_command(ctx, prompts):
    """`fellowship plan` of the paper's recipe shape on hosted models with batch APIs."""
    with bench.workspace(ctx) as work:
        result = plan(prompts, work)
    save("plan", f"prompts{prompts}", result)


if __name__ == "__main__":
    cli()
