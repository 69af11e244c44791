"""Does the engine keep up with a bare asyncio + openai loop at scale?

Every figure is measured against a fake OpenAI-compatible server that this script starts as its own
process (`python -m tests.openai_server`, on 127.0.0.1), answering each call after `--delay` seconds
(1.25 s by default, like a hosted model). The issue's targets:

- speed: wall time of the `candidates` stage at C=50 and C=200 calls in flight, N=400 and N=10,000
  calls, at most 1.05x the bare loop's at the same concurrency; CPU per call within 1 ms of it.
- memory: peak RSS of a `candidates` stage over 100,000 prompts at most 300 MB, and flat in N.
- faults: with 10% HTTP 429, 5% HTTP 500, 1% broken JSON bodies and 1% dropped connections, no row
  lost (every answer equal to the fault-free run's) and the wall time at most 1.5x the fault-free one.
- resume: `kill -9` in the middle of the stage, then the same command again: the final table equals an
  uninterrupted run's, and no call whose answer had been stored is made again.

How each side is measured (speed, faults):

- Fellowship: a recipe (`workflow: single`, 2 samples per prompt, so N calls = N/2 prompts x 2) with
  an `openai-compatible` model at `concurrency: C`, a cold response cache and a fresh data folder per
  run. The `items` stage is built first, untimed; then `builders.stages.run_stage(recipe,
  "candidates")` is timed in this process: `time.perf_counter()` for wall, `time.process_time()` for
  CPU (the whole process, every thread).
- Bare loop: `openai.AsyncOpenAI` (no retries), an `asyncio.Semaphore(C)` and `asyncio.gather` over
  the same N requests (same messages, model, temperature, max_tokens, and seed + sample index, as
  the engine sends them), keeping the texts in a list. Timed the same way, in the same process, so
  interpreter start-up and imports are left out of both sides alike.
- Each run gets a fresh server process, so the server's `peak_in_flight` shows each side really kept
  C calls in flight. Sides alternate (bare, fellowship, bare, fellowship, ...); the median is reported.

Memory runs each N in a fresh subprocess (`memory-child`) against a fast server (`--delay 0.02`):
the child reports its own peak RSS (`ru_maxrss`) and its RSS after imports; this process samples its
RSS every second to show the curve.

Run from the repository root (the server is `python -m tests.openai_server`, imported from there):

    python benchmarks/engine.py speed --n 400 --c 50 --repeats 2
    python benchmarks/engine.py memory --n 10000,30000,100000
    python benchmarks/engine.py faults --n 2000 --c 50
    python benchmarks/engine.py resume --n 2000 --c 50
    python benchmarks/engine.py all          # the issue's whole grid (about an hour on 2 cores)
    python benchmarks/engine.py all --smoke  # the same, scaled down to check the script (about 2 minutes)
    python benchmarks/engine.py profile      # cProfile of the fellowship side (N=400, delay 0.05)
    python benchmarks/engine.py command --n 400 --c 50,200 --repeats 5           # whole commands, no faults
    python benchmarks/engine.py command --n 400 --c 50 --repeats 5 --faults      # with 10% 429 + 5% 500

`command` times whole commands instead, each side a fresh process (interpreter start-up and imports
counted): `fellowship build RECIPE --stage candidates --no-progress` (the `items` stage built before,
untimed) against a bare script (`python BARE_SCRIPT`: asyncio + openai, same requests, prompts from a
JSON file), alternating, a fresh server per run. With `--faults` the server draws 10% HTTP 429
(`Retry-After: 0`) and 5% HTTP 500 from each request's body; the bare script then retries with the
SDK's own backoff, up to the same 10 retries, so neither side loses a row.

Results are printed as Markdown tables and merged into benchmarks/results/engine.json.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import datetime
import gc
import io
import json
import math
import os
import platform
import pstats
import random
import re
import select
import shlex
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # benchmark this checkout's code, whatever copy is installed

import click  # noqa: E402
import openai  # noqa: E402
import polars as pl  # noqa: E402

import builders.llm.sdk  # noqa: E402,F401  (imported here so neither side pays for it inside a timed run)
from builders.errors import BuildError  # noqa: E402
from builders.loader import load_recipe  # noqa: E402
from builders.stages import run_stage  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "engine.json"

DELAY_S = 1.25  # the fake server's answer time, like a hosted model
FAULT_RATES = {"429": 0.10, "500": 0.05, "broken-json": 0.01, "drop": 0.01}
MODEL = "bench"
TEMPERATURE = 0.7
MAX_TOKENS = 64
SEED = 0
SAMPLES = 2  # candidates per prompt (`iterations`): judge.min_scored needs at least 2
TIMEOUT_S = 120.0
MAX_RETRIES = 10
MEASUREMENT_COLUMNS = ("latency_s", "cached")  # differ between any two runs of the same table

TARGET_SPEED_RATIO = 1.05
TARGET_CPU_MS = 1.0
TARGET_RSS_MB = 300.0
TARGET_RSS_GROWTH = 0.10  # "flat": the largest N's peak within 10% of the smallest N's
TARGET_FAULT_RATIO = 1.5

# How to start the fake server; the group's hidden --server-command option replaces it.
SERVER_COMMAND = [sys.executable, "-m", "tests.openai_server"]
# `fellowship` itself, run with this interpreter from the repository root (what the console script does).
FELLOWSHIP = [sys.executable, "-c", "from builders.cli import main; main()"]

RECIPE = """\
schema_version: 1
name: {name}
description: engine benchmark, {prompts} prompts x {samples} samples
source:
  path: '{source}'
  prompt_column: prompt
models:
  {model}:
    provider: openai-compatible
    base_url: '{base_url}'
    model: {model}
    concurrency: {concurrency}
    temperature: {temperature}
    max_tokens: {max_tokens}
    seed: {seed}
    timeout_s: {timeout_s}
    max_retries: {max_retries}
generation:
  workflow: single
  generator: {model}
  iterations: {samples}
judge:
  panel:
    models: [{model}]
    system_prompt: '{prompts_dir}/judge/combined_system.txt'
    user_prompt: '{prompts_dir}/judge/combined_user.txt'
    multi_turn_system_prompt: '{prompts_dir}/judge/combined_multi_turn_system.txt'
    multi_turn_user_prompt: '{prompts_dir}/judge/combined_multi_turn_user.txt'
  mode: judge
export: {{}}
"""

WORDS = (
    "explain compare describe summarize list outline evaluate suggest why how when which what "
    "the a of to in for with on about between under during after before simple clear short "
    "detailed practical small large modern early common rare useful careful main key local "
    "history science garden recipe budget travel language music software network energy health "
    "river mountain city market school library museum bridge engine planet ocean forest winter"
).split()


# --- the fake server ------------------------------------------------------------------------------


class FakeServer:
    """The fake OpenAI-compatible server in its own process, for the length of a `with` block."""

    def __init__(self, *, delay: float, fault_rates: dict[str, float] | None = None, seed: int = 0):
        self.args = ["--delay", f"{delay:g}", "--seed", str(seed), "--retry-after", "0", "--no-record"]
        if fault_rates:
            self.args += ["--fault-rates", ",".join(f"{kind}={rate:g}" for kind, rate in fault_rates.items())]
        self.base_url = ""

    def __enter__(self) -> FakeServer:
        self.log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            SERVER_COMMAND + self.args, cwd=ROOT, stdout=subprocess.PIPE, stderr=self.log, text=True
        )
        ready, _, _ = select.select([self.process.stdout], [], [], 30)
        line = self.process.stdout.readline().strip() if ready else ""
        if not line.startswith("http"):
            self.__exit__()
            raise click.ClickException(f"the fake server did not start ({shlex.join(SERVER_COMMAND + self.args)})")
        self.base_url = line
        return self

    def stats(self) -> dict:
        """The server's counters: requests, completed, in_flight, peak_in_flight, faults, completed_repeats."""
        with urllib.request.urlopen(f"{self.base_url}/_stats", timeout=10) as response:
            return json.load(response)

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process.stdout.close()
        self.log.close()


# --- the workload ---------------------------------------------------------------------------------


def make_prompts(count: int) -> list[str]:
    """`count` distinct, deterministic prompts of 30 to 60 words."""
    prompts = []
    for i in range(count):
        rng = random.Random(i)
        words = [rng.choice(WORDS) for _ in range(rng.randint(28, 58))]
        prompts.append(f"Question {i}: " + " ".join(words) + "?")
    return prompts


def write_source(folder: Path, count: int) -> tuple[Path, list[str]]:
    """A Parquet source of `count` prompts (written once per count), and the prompts."""
    prompts = make_prompts(count)
    path = folder / f"prompts-{count}.parquet"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        pl.DataFrame({"prompt": prompts}).write_parquet(path)
    return path, prompts


def write_recipe(folder: Path, *, base_url: str, source: Path, prompts: int, concurrency: int) -> Path:
    """The benchmark recipe, `folder/bench.yaml` (a recipe's name is its file's stem). The judge is never
    called here, but its templates must exist: they are the repository's."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "bench.yaml"
    path.write_text(RECIPE.format(
        name="bench", prompts=prompts, samples=SAMPLES, source=source, model=MODEL, base_url=base_url,
        concurrency=concurrency, temperature=TEMPERATURE, max_tokens=MAX_TOKENS, seed=SEED,
        timeout_s=TIMEOUT_S, max_retries=MAX_RETRIES, prompts_dir=ROOT / "recipes" / "prompts",
    ))
    return path


def use_folders(work: Path) -> tuple[Path, Path]:
    """Point the cache and the data root at fresh folders under `work`; returns (data root, cache)."""
    data_root, cache_dir = work / "data", work / "cache"
    os.environ["FELLOWSHIP_DATA_DIR"] = str(data_root)
    os.environ["FELLOWSHIP_CACHE_DIR"] = str(cache_dir)
    return data_root, cache_dir


def build_items(recipe_path: Path, data_root: Path) -> None:
    """The `items` stage, untimed and quiet."""
    recipe = load_recipe(recipe_path, check_source=False)
    with contextlib.redirect_stderr(io.StringIO()):
        run_stage(recipe, "items", data_root=data_root, progress=False)


def candidates_path(data_root: Path) -> Path:
    return data_root / "bench" / "candidates.parquet"


USAGE_LINE = re.compile(r"(\d+) calls, (\d+) cached, (\d+) retries")


def usage_from_log(text: str) -> dict:
    """calls, cached and retries from the stage's usage line on stderr (the last one printed)."""
    found = USAGE_LINE.findall(text)
    if not found:
        return {"calls": None, "cached": None, "retries": None}
    calls, cached, retries = found[-1]
    return {"calls": int(calls), "cached": int(cached), "retries": int(retries)}


def usage_from_engine(engine, log: str) -> dict:
    """calls, cached and retries from `Engine.usage`, or from the usage line if it has no such fields."""
    usage = getattr(engine, "usage", None)
    if usage is not None and all(hasattr(usage, f) for f in ("calls", "cached", "retries")):
        return {"calls": usage.calls, "cached": usage.cached, "retries": usage.retries}
    return usage_from_log(log)


# --- one measured run of each side ----------------------------------------------------------------


def run_fellowship(recipe_path: Path, work: Path, *, profiler: cProfile.Profile | None = None) -> dict:
    """Build items, then time the `candidates` stage in this process. Returns the figures and the table."""
    data_root, _ = use_folders(work)
    build_items(recipe_path, data_root)
    recipe = load_recipe(recipe_path, check_source=False)
    log, engine, error = io.StringIO(), None, None
    gc.collect()
    if profiler:
        profiler.enable()
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        with contextlib.redirect_stderr(log):
            engine = run_stage(recipe, "candidates", data_root=data_root, progress=False)
    except BuildError as e:
        error = str(e).splitlines()[0]
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if profiler:
        profiler.disable()
    path = candidates_path(data_root)
    table = pl.read_parquet(path) if error is None and path.exists() else None
    slowest = table["latency_s"].max() if table is not None and "latency_s" in table.columns else None
    return {
        "wall_s": wall, "cpu_s": cpu, "rows": table.height if table is not None else 0,
        **usage_from_engine(engine, log.getvalue()), "limit_cuts": limit_cuts(engine),
        "slowest_call_s": slowest, "error": error, "table": table,
    }


def limit_cuts(engine) -> int | None:
    """How often the engine's adaptive limiters cut their limit (None if it has no such limiters)."""
    limiters = getattr(getattr(engine, "live", None), "limiters", None) or getattr(engine, "_limiters", None)
    if not limiters:
        return None
    return sum(getattr(limiter, "storms", 0) for limiter in limiters.values())


async def _bare_calls(base_url: str, prompts: list[str], concurrency: int, max_retries: int) -> list:
    """Every request the engine would send, `concurrency` at a time; a text per call, or the error's type."""
    client = openai.AsyncOpenAI(base_url=base_url, api_key="x", max_retries=max_retries, timeout=TIMEOUT_S)
    semaphore = asyncio.Semaphore(concurrency)

    async def one(prompt: str, sample: int) -> str | Exception:
        async with semaphore:
            try:
                response = await client.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": prompt}],
                    temperature=TEMPERATURE, max_tokens=MAX_TOKENS, seed=SEED + sample,
                )
            except Exception as e:  # with faults, a lost row; counted by the caller
                return e
        return response.choices[0].message.content

    try:
        return await asyncio.gather(*(one(p, k) for p in prompts for k in range(SAMPLES)))
    finally:
        await client.close()


def run_bare(base_url: str, prompts: list[str], concurrency: int, *, max_retries: int = 0) -> dict:
    """Time the bare loop over len(prompts) x SAMPLES calls."""
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    results = asyncio.run(_bare_calls(base_url, prompts, concurrency, max_retries))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    errors: dict[str, int] = {}
    for r in results:
        if isinstance(r, Exception):
            errors[type(r).__name__] = errors.get(type(r).__name__, 0) + 1
    return {"wall_s": wall, "cpu_s": cpu, "rows": len(results) - sum(errors.values()), "errors": errors}


def public(run: dict) -> dict:
    """A run's figures without its table, rounded for the JSON file."""
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in run.items() if k != "table"}


def warm_up(work: Path) -> None:
    """One tiny untimed run of each side, so lazy imports and first-use setup fall outside the timings."""
    source, prompts = write_source(work / "sources", 4)
    with FakeServer(delay=0) as server:
        run_bare(server.base_url, prompts, 4)
        recipe = write_recipe(work / "warm-up", base_url=server.base_url, source=source, prompts=4, concurrency=4)
        run_fellowship(recipe, work / "warm-up")


# --- speed ----------------------------------------------------------------------------------------


def speed_case(n: int, c: int, *, repeats: int, delay: float, work: Path) -> dict:
    """Bare and fellowship alternately, `repeats` times each, at N calls and C in flight."""
    source, prompts = write_source(work / "sources", n // SAMPLES)
    runs: dict[str, list[dict]] = {"bare": [], "fellowship": []}
    for r in range(repeats):
        with FakeServer(delay=delay) as server:
            run = run_bare(server.base_url, prompts, c)
            runs["bare"].append({**run, "server": server.stats()})
        with FakeServer(delay=delay) as server:
            folder = work / f"speed-c{c}-n{n}-{r}"
            recipe = write_recipe(folder, base_url=server.base_url, source=source, prompts=len(prompts), concurrency=c)
            run = run_fellowship(recipe, folder)
            runs["fellowship"].append({**public(run), "server": server.stats()})
        click.echo(f"  C={c} N={n} repeat {r + 1}: bare {runs['bare'][-1]['wall_s']:.2f}s, "
                   f"fellowship {runs['fellowship'][-1]['wall_s']:.2f}s", err=True)
    bare_s = statistics.median(x["wall_s"] for x in runs["bare"])
    fellowship_s = statistics.median(x["wall_s"] for x in runs["fellowship"])
    bare_cpu = statistics.median(x["cpu_s"] for x in runs["bare"]) / n * 1000
    fellowship_cpu = statistics.median(x["cpu_s"] for x in runs["fellowship"]) / n * 1000
    all_rows = all(x["rows"] == n for side in runs.values() for x in side)
    return {
        "n": n, "c": c, "delay_s": delay, "repeats": repeats, "ideal_s": n / c * delay,
        "bare_s": round(bare_s, 3), "fellowship_s": round(fellowship_s, 3), "ratio": round(fellowship_s / bare_s, 4),
        "bare_cpu_ms_per_call": round(bare_cpu, 3), "fellowship_cpu_ms_per_call": round(fellowship_cpu, 3),
        "cpu_diff_ms": round(fellowship_cpu - bare_cpu, 3), "all_rows": all_rows,
        "peak_in_flight": {side: [x["server"].get("peak_in_flight") for x in xs] for side, xs in runs.items()},
        "ok": fellowship_s / bare_s <= TARGET_SPEED_RATIO and fellowship_cpu - bare_cpu <= TARGET_CPU_MS and all_rows,
        "runs": runs,
    }


def print_speed(cases: list[dict]) -> None:
    rows = [[
        x["c"], x["n"], f"{x['ideal_s']:.1f}", f"{x['bare_s']:.2f} {spread(x['runs']['bare'])}",
        f"{x['fellowship_s']:.2f} {spread(x['runs']['fellowship'])}", f"{x['ratio']:.3f}",
        f"{x['bare_cpu_ms_per_call']:.2f}", f"{x['fellowship_cpu_ms_per_call']:.2f}", f"{x['cpu_diff_ms']:+.2f}",
        "/".join(str(max(p or 0 for p in v)) for v in x["peak_in_flight"].values()),
        "yes" if x["all_rows"] else "NO", verdict(x["ok"]),
    ] for x in cases]
    print_table(
        f"Speed: median (and range) of {cases[0]['repeats']} alternating runs, server delay {cases[0]['delay_s']:g}s"
        f" (target: ratio <= {TARGET_SPEED_RATIO}, CPU within {TARGET_CPU_MS:g} ms/call)",
        ["C", "N calls", "ideal s", "bare s", "fellowship s", "ratio", "bare CPU ms/call",
         "fellowship CPU ms/call", "diff ms", "peak in flight bare/fell.", "all rows", "target"],
        rows,
    )


def spread(runs: list[dict]) -> str:
    walls = [x["wall_s"] for x in runs]
    return f"({min(walls):.2f}-{max(walls):.2f})" if len(walls) > 1 else ""


def speed(ns: list[int], cs: list[int], *, repeats: int, delay: float, work: Path) -> list[dict]:
    warm_up(work)
    cases = []
    for c in cs:
        for n in ns:
            case = speed_case(n, c, repeats=repeats, delay=delay, work=work)
            save("speed", f"C{c} N{n} delay{delay:g}", case)
            cases.append(case)
    print_speed(cases)
    return cases


# --- whole commands -------------------------------------------------------------------------------

COMMAND_FAULTS = {"429": 0.10, "500": 0.05}

BARE_SCRIPT = """\
import asyncio, json, sys

import openai

base_url, prompts_file, concurrency, retries = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
MODEL, TEMPERATURE, MAX_TOKENS, SEED, SAMPLES, TIMEOUT_S = {constants}


async def main():
    prompts = json.load(open(prompts_file))
    client = openai.AsyncOpenAI(base_url=base_url, api_key="x", max_retries=retries, timeout=TIMEOUT_S)
    semaphore = asyncio.Semaphore(concurrency)

    async def one(prompt, sample):
        async with semaphore:
            response = await client.chat.completions.create(
                model=MODEL, messages=[{{"role": "user", "content": prompt}}],
                temperature=TEMPERATURE, max_tokens=MAX_TOKENS, seed=SEED + sample,
            )
        return response.choices[0].message.content

    texts = await asyncio.gather(*(one(p, k) for p in prompts for k in range(SAMPLES)))
    await client.close()
    print(len(texts))


asyncio.run(main())
"""


def timed_process(command: list[str], env: dict | None = None) -> dict:
    """Run `command` to its end: wall seconds, CPU seconds (user + system of the child) and its output."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise click.ClickException(f"{shlex.join(command[:3])}... exited with {result.returncode}:\n{result.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu, "stdout": result.stdout, "stderr": result.stderr}


def command_case(n: int, c: int, *, repeats: int, delay: float, faults: bool, work: Path) -> dict:
    """The bare script and `fellowship build --stage candidates`, alternately, `repeats` times each."""
    source, prompts = write_source(work / "sources", n // SAMPLES)
    prompts_file = work / "sources" / f"prompts-{len(prompts)}.json"
    prompts_file.write_text(json.dumps(prompts))
    script = work / "bare.py"
    script.write_text(BARE_SCRIPT.format(constants=repr((MODEL, TEMPERATURE, MAX_TOKENS, SEED, SAMPLES, TIMEOUT_S))))
    rates = COMMAND_FAULTS if faults else None
    runs: dict[str, list[dict]] = {"bare": [], "fellowship": []}
    for r in range(repeats):
        with FakeServer(delay=delay, fault_rates=rates) as server:
            run = timed_process([sys.executable, str(script), server.base_url, str(prompts_file), str(c),
                                 str(MAX_RETRIES if faults else 0)])
            rows = int(run["stdout"].strip() or 0)
            runs["bare"].append({"wall_s": run["wall_s"], "cpu_s": run["cpu_s"], "rows": rows, "server": server.stats()})
        with FakeServer(delay=delay, fault_rates=rates) as server:
            folder = work / f"command-c{c}-n{n}-{'faults-' if faults else ''}{r}"
            recipe = write_recipe(folder, base_url=server.base_url, source=source, prompts=len(prompts), concurrency=c)
            data_root, cache_dir = folder / "data", folder / "cache"
            build_items(recipe, data_root)
            env = {**os.environ, "FELLOWSHIP_DATA_DIR": str(data_root), "FELLOWSHIP_CACHE_DIR": str(cache_dir)}
            run = timed_process(FELLOWSHIP + ["build", str(recipe), "--stage", "candidates", "--no-progress",
                                              "--data-dir", str(data_root)], env)
            rows = pl.read_parquet(candidates_path(data_root)).height
            runs["fellowship"].append({"wall_s": run["wall_s"], "cpu_s": run["cpu_s"], "rows": rows,
                                       **usage_from_log(run["stderr"]), "server": server.stats()})
        click.echo(f"  C={c} N={n}{' faults' if faults else ''} repeat {r + 1}: bare {runs['bare'][-1]['wall_s']:.2f}s, "
                   f"fellowship {runs['fellowship'][-1]['wall_s']:.2f}s", err=True)
    bare_s = statistics.median(x["wall_s"] for x in runs["bare"])
    fellowship_s = statistics.median(x["wall_s"] for x in runs["fellowship"])
    ratios = [f["wall_s"] / b["wall_s"] for b, f in zip(runs["bare"], runs["fellowship"])]
    all_rows = all(x["rows"] == n for side in runs.values() for x in side)
    ideal = n / c * delay
    return {
        "n": n, "c": c, "delay_s": delay, "faults": rates, "repeats": repeats, "ideal_s": ideal,
        "bare_s": round(bare_s, 3), "fellowship_s": round(fellowship_s, 3), "ratio": round(fellowship_s / bare_s, 4),
        "pair_ratios": [round(x, 4) for x in ratios], "median_pair_ratio": round(statistics.median(ratios), 4),
        "bare_of_ideal": round(bare_s / ideal, 3), "fellowship_of_ideal": round(fellowship_s / ideal, 3),
        "bare_cpu_s": round(statistics.median(x["cpu_s"] for x in runs["bare"]), 3),
        "fellowship_cpu_s": round(statistics.median(x["cpu_s"] for x in runs["fellowship"]), 3),
        "all_rows": all_rows, "ok": fellowship_s / bare_s <= TARGET_SPEED_RATIO and all_rows, "runs": runs,
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }


def print_command(cases: list[dict]) -> None:
    rows = [[
        x["c"], x["n"], "10% 429 + 5% 500" if x["faults"] else "none", f"{x['ideal_s']:.1f}",
        f"{x['bare_s']:.2f} {spread(x['runs']['bare'])}", f"{x['fellowship_s']:.2f} {spread(x['runs']['fellowship'])}",
        f"{x['ratio']:.3f}", f"{x['median_pair_ratio']:.3f}", f"{x['bare_of_ideal']:.2f} / {x['fellowship_of_ideal']:.2f}",
        f"{x['bare_cpu_s']:.2f} / {x['fellowship_cpu_s']:.2f}", "yes" if x["all_rows"] else "NO", verdict(x["ok"]),
    ] for x in cases]
    print_table(
        f"Whole commands: median (and range) of {cases[0]['repeats']} alternating runs, server delay {cases[0]['delay_s']:g}s"
        f" (target: ratio <= {TARGET_SPEED_RATIO})",
        ["C", "N calls", "faults", "ideal s", "bare s", "fellowship s", "ratio of medians", "median of pair ratios",
         "of ideal bare / fell.", "CPU s bare / fell.", "all rows", "target"],
        rows,
    )


def command_runs(ns: list[int], cs: list[int], *, repeats: int, delay: float, faults: bool, work: Path) -> list[dict]:
    cases = []
    for c in cs:
        for n in ns:
            case = command_case(n, c, repeats=repeats, delay=delay, faults=faults, work=work)
            save("command", f"C{c} N{n} delay{delay:g}{' faults' if faults else ''}", case)
            cases.append(case)
    print_command(cases)
    return cases


# --- memory ---------------------------------------------------------------------------------------


def rss_mb(pid: int, field: str = "VmRSS") -> float | None:
    """A process's resident set (or `VmHWM`, its peak) in MB, from /proc; None once it has gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def memory_case(prompts: int, c: int, *, delay: float, sample_s: float, work: Path) -> dict:
    """One `candidates` stage over `prompts` prompts in a fresh subprocess, sampling its RSS."""
    source, _ = write_source(work / "sources", prompts)
    folder = work / f"memory-{prompts}"
    with FakeServer(delay=delay) as server:
        recipe = write_recipe(folder, base_url=server.base_url, source=source, prompts=prompts, concurrency=c)
        data_root, _ = use_folders(folder)
        build_items(recipe, data_root)
        log_path = folder / "child.log"
        with open(log_path, "w") as log:
            child = subprocess.Popen(
                [sys.executable, __file__, "memory-child", str(recipe), "--data-root", str(data_root)],
                cwd=ROOT, env=dict(os.environ), stdout=subprocess.PIPE, stderr=log, text=True,
            )
            samples, started = [], time.perf_counter()
            while child.poll() is None:
                rss = rss_mb(child.pid)
                if rss is not None:
                    samples.append([round(time.perf_counter() - started, 1), round(rss, 1)])
                time.sleep(sample_s)
            report = child.stdout.read()
        stats = server.stats()
    if child.returncode != 0:
        raise click.ClickException(f"memory-child failed; see its log:\n{log_path.read_text()[-2000:]}")
    return {"prompts": prompts, "calls": prompts * SAMPLES, "c": c, "delay_s": delay, **json.loads(report),
            "rss_samples": samples, "server": stats}


def over_time(samples: list[list[float]], points: int = 10) -> list[float]:
    """The sampled RSS at 10%, 20%, ..., 100% of the run."""
    if not samples:
        return []
    last = len(samples) - 1
    return [samples[min(last, max(0, math.ceil(len(samples) * k / points) - 1))][1] for k in range(1, points + 1)]


def memory(ns: list[int], *, c: int, delay: float, sample_s: float, work: Path) -> dict:
    cases = []
    for n in ns:
        case = memory_case(n, c, delay=delay, sample_s=sample_s, work=work)
        click.echo(f"  {n} prompts: peak {case['peak_rss_mb']:.0f} MB in {case['wall_s']:.0f}s", err=True)
        save("memory", f"prompts{n}", case)
        cases.append(case)
    peaks = [x["peak_rss_mb"] for x in cases]
    growth = (peaks[-1] - peaks[0]) / peaks[0] if len(cases) > 1 else 0.0
    slope = statistics.linear_regression(ns, peaks).slope * 10_000 if len(set(ns)) > 1 else 0.0
    summary = {
        "prompts": ns, "peak_rss_mb": peaks, "max_peak_mb": max(peaks), "growth": round(growth, 4),
        "mb_per_10k_prompts": round(slope, 2),
        "baseline_rss_mb": cases[0]["baseline_rss_mb"],
        "ok": max(peaks) <= TARGET_RSS_MB and growth <= TARGET_RSS_GROWTH and all(x["rows"] == x["calls"] for x in cases),
    }
    save("memory", "summary", summary)
    print_table(
        f"Memory: candidates stage in a fresh process, C={c}, server delay {delay:g}s "
        f"(target: peak <= {TARGET_RSS_MB:g} MB, flat: largest N within {TARGET_RSS_GROWTH:.0%} of smallest)",
        ["prompts", "calls", "wall s", "RSS after imports MB", "peak RSS MB", "RSS at 10%..100% of the run (MB)", "rows ok"],
        [[x["prompts"], x["calls"], f"{x['wall_s']:.0f}", f"{x['baseline_rss_mb']:.0f}", f"{x['peak_rss_mb']:.0f}",
          " ".join(f"{v:.0f}" for v in over_time(x["rss_samples"])), "yes" if x["rows"] == x["calls"] else "NO"]
         for x in cases],
    )
    print(f"Peak RSS from {ns[0]} to {ns[-1]} prompts: {growth:+.1%} ({slope:+.1f} MB per 10,000 prompts, "
          f"least squares); {verdict(summary['ok'])}\n")
    return summary


def memory_child(recipe_path: Path, data_root: Path) -> None:
    """Run the `candidates` stage and print one JSON line: RSS after imports, peak RSS, wall, rows."""
    baseline = rss_mb(os.getpid())
    recipe = load_recipe(recipe_path, check_source=False)
    started = time.perf_counter()
    engine = run_stage(recipe, "candidates", data_root=data_root, progress=False)
    wall = time.perf_counter() - started
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent at fork and exec, so a child
    # of a big parent (the `all` command, after its in-process speed runs) would report the parent's size
    peak = rss_mb(os.getpid(), "VmHWM")
    rows = pl.scan_parquet(candidates_path(data_root)).select(pl.len()).collect().item()
    print(json.dumps({"baseline_rss_mb": round(baseline, 1), "peak_rss_mb": round(peak, 1), "wall_s": round(wall, 2),
                      "rows": rows, **usage_from_engine(engine, "")}))


# --- faults ---------------------------------------------------------------------------------------


def compare_texts(table: pl.DataFrame | None, reference: pl.DataFrame) -> dict:
    """Rows of `reference` missing from `table`, and rows whose response differs."""
    if table is None:
        return {"missing": reference.height, "different": 0}
    joined = reference.select("candidate_id", "response").join(
        table.select("candidate_id", pl.col("response").alias("got")), on="candidate_id", how="left"
    )
    missing = joined.filter(pl.col("got").is_null()).height
    different = joined.filter(pl.col("got").is_not_null() & (pl.col("got") != pl.col("response"))).height
    return {"missing": missing, "different": different}


def faults(n: int, c: int, *, delay: float, bare: bool, work: Path) -> dict:
    """The fellowship side with and without faults, the same N and C; optionally the bare loop with the
    SDK's default retries against the same faults, for context."""
    source, prompts = write_source(work / "sources", n // SAMPLES)
    results = {}
    for label, rates in (("fault-free", None), ("faults", FAULT_RATES)):
        with FakeServer(delay=delay, fault_rates=rates) as server:
            folder = work / f"faults-{label}-n{n}"
            recipe = write_recipe(folder, base_url=server.base_url, source=source, prompts=len(prompts), concurrency=c)
            results[label] = {**run_fellowship(recipe, folder), "server": server.stats()}
        click.echo(f"  fellowship, {label}: {results[label]['wall_s']:.1f}s", err=True)
    clean, faulty = results["fault-free"], results["faults"]
    if clean["table"] is None:
        raise click.ClickException(f"the fault-free run failed: {clean['error']}")
    lost = compare_texts(faulty["table"], clean["table"])
    ratio = faulty["wall_s"] / clean["wall_s"]
    summary = {
        "n": n, "c": c, "delay_s": delay, "fault_rates": FAULT_RATES, "max_retries": MAX_RETRIES,
        "retry_base_s": os.environ.get("FELLOWSHIP_RETRY_BASE_S", "default"),
        "fault_free": public(clean), "faults": public(faulty), "rows_missing": lost["missing"],
        "rows_different": lost["different"], "wall_ratio": round(ratio, 4),
        "ok": lost["missing"] == 0 and lost["different"] == 0 and faulty["error"] is None and ratio <= TARGET_FAULT_RATIO,
    }
    rows = [
        ["fellowship, no faults", f"{clean['wall_s']:.1f}", "1.00", clean["rows"], 0, 0, clean["retries"],
         clean["limit_cuts"], number(clean["slowest_call_s"]), "-"],
        ["fellowship, faults", f"{faulty['wall_s']:.1f}", f"{ratio:.2f}", faulty["rows"], lost["missing"],
         lost["different"], faulty["retries"], faulty["limit_cuts"], number(faulty["slowest_call_s"]),
         fault_counts(faulty["server"])],
    ]
    if bare:
        with FakeServer(delay=delay, fault_rates=FAULT_RATES) as server:
            run = run_bare(server.base_url, prompts, c, max_retries=openai.DEFAULT_MAX_RETRIES)
            run["server"] = server.stats()
        summary["bare_sdk_retries"] = {**run, "max_retries": openai.DEFAULT_MAX_RETRIES}
        rows.append([f"bare loop, faults, SDK retries ({openai.DEFAULT_MAX_RETRIES})", f"{run['wall_s']:.1f}",
                     f"{run['wall_s'] / clean['wall_s']:.2f}", run["rows"], n - run["rows"], "-", "-", "-", "-",
                     fault_counts(run["server"])])
    if faulty["error"]:
        print(f"The run with faults failed: {faulty['error']}")
    print_table(
        f"Faults: N={n} calls, C={c}, server delay {delay:g}s, fault rates "
        + ", ".join(f"{k} {v:.0%}" for k, v in FAULT_RATES.items())
        + f" (target: 0 rows lost, wall <= {TARGET_FAULT_RATIO}x fault-free)",
        ["run", "wall s", "x fault-free", "rows", "rows lost", "texts differ", "retries", "limit cuts",
         "slowest call s", "faults sent by the server"],
        rows,
    )
    print(f"{verdict(summary['ok'])}\n")
    save("faults", f"N{n} C{c} delay{delay:g}", summary)
    return summary


def number(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def fault_counts(stats: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted((stats.get("faults") or {}).items())) or "none"


# --- resume ---------------------------------------------------------------------------------------


def start_build(recipe_path: Path, work: Path, log_name: str) -> subprocess.Popen:
    """`fellowship build RECIPE --stage candidates --no-progress` with its own cache and data folders."""
    data_root, cache_dir = work / "data", work / "cache"
    env = {**os.environ, "FELLOWSHIP_DATA_DIR": str(data_root), "FELLOWSHIP_CACHE_DIR": str(cache_dir)}
    command = FELLOWSHIP + ["build", str(recipe_path), "--stage", "candidates", "--no-progress", "--data-dir", str(data_root)]
    log = open(work / log_name, "w")
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log)
    log.close()  # the child has its own copy
    return process


def finish_build(process: subprocess.Popen, work: Path, log_name: str) -> dict:
    """Wait for a build to end; its usage figures, or the tail of its log if it failed."""
    started = time.perf_counter()
    code = process.wait()
    text = (work / log_name).read_text()
    if code != 0:
        raise click.ClickException(f"`fellowship build` exited with {code}:\n{text[-2000:]}")
    return {"wait_s": round(time.perf_counter() - started, 2), **usage_from_log(text)}


def cache_rows(cache_dir: Path) -> int | None:
    """Answers stored in the response cache (None when it is not the SQLite cache this script knows)."""
    path = cache_dir / "responses.sqlite"
    if not path.exists():
        return None
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            return db.execute("select count(*) from responses").fetchone()[0]
    except sqlite3.Error:
        return None


def table_differences(table: pl.DataFrame, reference: pl.DataFrame) -> dict:
    """Whether two candidates tables are equal (sorted by candidate_id), which columns differ, and
    whether only measured columns (latency; whether the cache answered, if recorded) differ."""
    measured = [c for c in MEASUREMENT_COLUMNS if c in reference.columns]
    a, b = table.sort("candidate_id"), reference.sort("candidate_id")
    if a.columns != b.columns or a.height != b.height or not a["candidate_id"].equals(b["candidate_id"]):
        return {"identical": False, "identical_but_measurements": False, "columns": ["(rows or columns differ)"],
                "measurement_columns": measured}
    columns = [c for c in a.columns if not a[c].equals(b[c])]
    return {"identical": a.equals(b), "identical_but_measurements": set(columns) <= set(measured),
            "columns": columns, "measurement_columns": measured}


def resume(n: int, c: int, *, delay: float, kill_at: float, work: Path) -> dict:
    """kill -9 a `candidates` build once the server has answered `kill_at` of the calls, run it again,
    and compare the final table with an uninterrupted build's (its own server, cache and data)."""
    source, prompts = write_source(work / "sources", n // SAMPLES)

    reference_dir = work / "resume-reference"
    with FakeServer(delay=delay) as server:
        recipe = write_recipe(reference_dir, base_url=server.base_url, source=source, prompts=len(prompts), concurrency=c)
        build_items(recipe, reference_dir / "data")
        reference = finish_build(start_build(recipe, reference_dir, "build.log"), reference_dir, "build.log")
    click.echo(f"  uninterrupted build: {reference['wait_s']:.1f}s", err=True)

    killed_dir = work / "resume-killed"
    with FakeServer(delay=delay) as server:
        recipe = write_recipe(killed_dir, base_url=server.base_url, source=source, prompts=len(prompts), concurrency=c)
        build_items(recipe, killed_dir / "data")
        process = start_build(recipe, killed_dir, "first.log")
        while server.stats()["completed"] < kill_at * n:
            if process.poll() is not None:
                raise click.ClickException("the build ended before the kill; raise --n or lower --kill-at")
            time.sleep(0.05)
        at_kill = server.stats()
        process.send_signal(signal.SIGKILL)
        process.wait()
        time.sleep(delay + 1.0)  # the server finishes answering the killed build's requests
        settled = server.stats()
        stored = cache_rows(killed_dir / "cache")
        table_at_kill = candidates_path(killed_dir / "data").exists()
        click.echo(f"  killed after {at_kill['completed']} answers ({stored} stored); running it again", err=True)
        rerun = finish_build(start_build(recipe, killed_dir, "rerun.log"), killed_dir, "rerun.log")
        final = server.stats()

    table = pl.read_parquet(candidates_path(killed_dir / "data"))
    diff = table_differences(table, pl.read_parquet(candidates_path(reference_dir / "data")))
    unreceived = settled["completed"] - stored if stored is not None else None  # answered, never stored
    repeats = final.get("completed_repeats")
    calls_ok = stored is None or (rerun["cached"] == stored and rerun["calls"] == n - stored)
    summary = {
        "n": n, "c": c, "delay_s": delay, "kill_at": kill_at,
        "server_completed_at_kill": at_kill["completed"], "server_in_flight_at_kill": at_kill["in_flight"],
        "server_completed_after_kill": settled["completed"], "answers_stored_at_kill": stored,
        "table_written_before_kill": table_at_kill, "rerun": rerun, "reference": reference,
        "server_completed_repeats": repeats, "server_requests_total": final.get("requests"),
        "answered_but_not_stored": unreceived, "rows": table.height, **diff,
        "ok": diff["identical_but_measurements"] and table.height == n and calls_ok
              and (unreceived is None or (repeats is not None and repeats <= unreceived)),
    }
    print_table(
        f"Resume: kill -9 after {kill_at:.0%} of N={n} calls, C={c}, server delay {delay:g}s, then the same command "
        "(target: final table equal to an uninterrupted run's, no stored answer asked for again)",
        ["figure", "value"],
        [
            ["answers sent by the server before the kill (in flight then)", f"{at_kill['completed']} ({at_kill['in_flight']})"],
            ["answers sent by the server to the killed build, in all", settled["completed"]],
            ["answers the killed build had stored (cache rows)", stored],
            ["candidates table written before the kill", "yes" if table_at_kill else "no"],
            ["rerun: calls made / answers from the cache", f"{rerun['calls']} / {rerun['cached']}"],
            ["server: bodies answered 200 twice (completed_repeats)", repeats],
            ["answers sent to the killed build that it never stored (may be asked again)", unreceived],
            ["final rows", f"{table.height} of {n}"],
            ["final table equal to the uninterrupted run's", "yes" if diff["identical"] else "no"],
            ["columns that differ", ", ".join(diff["columns"]) or "none"],
            [f"equal apart from {', '.join(diff['measurement_columns'])}", "yes" if diff["identical_but_measurements"] else "NO"],
        ],
    )
    print(f"{verdict(summary['ok'])}\n")
    save("resume", f"N{n} C{c} delay{delay:g}", summary)
    return summary


# --- profile --------------------------------------------------------------------------------------


def profile(n: int, c: int, *, delay: float, top: int, work: Path) -> None:
    """cProfile one run of each side; print builders/ functions by cumulative time, and the functions
    where the fellowship side spends more of its own time than the bare loop."""
    warm_up(work)
    source, prompts = write_source(work / "sources", n // SAMPLES)
    bare, fellowship = cProfile.Profile(), cProfile.Profile()
    with FakeServer(delay=delay) as server:
        bare.enable()
        bare_run = run_bare(server.base_url, prompts, c)
        bare.disable()
    with FakeServer(delay=delay) as server:
        recipe = write_recipe(work / "profile", base_url=server.base_url, source=source, prompts=len(prompts), concurrency=c)
        run = run_fellowship(recipe, work / "profile", profiler=fellowship)
    print(f"Profiled (CPU is inflated by the profiler): N={n} calls, C={c}, server delay {delay:g}s, ideal "
          f"{n / c * delay:.2f}s; bare {bare_run['wall_s']:.2f}s wall, {bare_run['cpu_s'] / n * 1000:.2f} ms CPU/call; "
          f"fellowship {run['wall_s']:.2f}s wall, {run['cpu_s'] / n * 1000:.2f} ms CPU/call")
    ours = own_times(fellowship)
    in_builders = sorted((v for k, v in ours.items() if k.startswith("builders/")), key=lambda v: v[2], reverse=True)
    print_table("Fellowship side: builders/ functions by cumulative time", ["cumulative s", "own s", "calls", "function"],
                [[f"{ct:.3f}", f"{tt:.3f}", nc, name] for name, tt, ct, nc in in_builders[:top]])
    theirs = own_times(bare)
    extra = sorted(((v[1] - theirs.get(k, (k, 0.0, 0.0, 0))[1], k) for k, v in ours.items()), reverse=True)
    print_table("Own time the fellowship side spends beyond the bare loop's, by function",
                ["extra own s", "fellowship own s", "bare own s", "calls fellowship/bare", "function"],
                [[f"{d:+.3f}", f"{ours[k][1]:.3f}", f"{theirs.get(k, (k, 0.0, 0.0, 0))[1]:.3f}",
                  f"{ours[k][3]}/{theirs.get(k, (k, 0.0, 0.0, 0))[3]}", k] for d, k in extra[:top]])


def own_times(profiler: cProfile.Profile) -> dict[str, tuple[str, float, float, int]]:
    """function -> (function, own s, cumulative s, calls); this repository's files named relative to it."""
    out = {}
    for (file, line, func), (_, calls, own, cumulative, _) in pstats.Stats(profiler).stats.items():
        where = str(Path(file).relative_to(ROOT)) if file.startswith(str(ROOT)) else file.replace(sys.prefix, "<python>")
        name = f"{where}:{line}({func})"
        out[name] = (name, own, cumulative, calls)
    return out


# --- output ---------------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "meets the target" if ok else "MISSES the target"


def print_table(title: str, headers: list[str], rows: list[list]) -> None:
    """A Markdown table on stdout, columns padded to their widest cell."""
    cells = [[str(h) for h in headers]] + [["-" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    line = lambda row: "| " + " | ".join(v.ljust(w) for v, w in zip(row, widths)) + " |"  # noqa: E731
    print(f"\n{title}\n")
    print(line(cells[0]))
    print("| " + " | ".join("-" * w for w in widths) + " |")
    for row in cells[1:]:
        print(line(row))
    print()


def code_version() -> dict:
    """The commit measured, and whether the engine's code differs from it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    changed = git("status", "--porcelain", "--", "builders").splitlines()
    return {"commit": git("rev-parse", "--short", "HEAD"), "builders_changed": [line[3:] for line in changed]}


def machine() -> dict:
    return {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "openai": openai.__version__, "load_average": [round(x, 2) for x in os.getloadavg()]}


def save(section: str, key: str, value: dict) -> None:
    """Merge one result into benchmarks/results/engine.json (other sections and keys are kept)."""
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    value = {**value, "recorded_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
             "code": code_version(), "machine": machine()}
    results.setdefault(section, {})[key] = json.loads(json.dumps(value, default=str))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, RESULTS)


# --- command line ---------------------------------------------------------------------------------


def int_list(ctx, param, values: tuple[str, ...]) -> list[int]:
    """`--n 400,10000` or `--n 400 --n 10000`."""
    numbers = [int(v) for value in values for v in value.split(",") if v.strip()]
    if any(x < 1 for x in numbers):
        raise click.BadParameter("must be positive")
    return numbers


@contextlib.contextmanager
def workspace(ctx: click.Context):
    """The group's --workdir (kept), or a temporary folder removed afterwards."""
    given = ctx.find_root().params.get("workdir")
    if given:
        Path(given).mkdir(parents=True, exist_ok=True)
        yield Path(given).resolve()
    else:
        with tempfile.TemporaryDirectory(prefix="fellowship-bench-") as tmp:
            yield Path(tmp)


def even(n: int) -> int:
    if n % SAMPLES:
        raise click.BadParameter(f"N calls must be a multiple of {SAMPLES} (N/{SAMPLES} prompts x {SAMPLES} samples)")
    return n


@click.group()
@click.option("--workdir", type=click.Path(file_okay=False), help="Keep recipes, tables, caches and logs here.")
@click.option("--server-command", hidden=True, help="Start the fake server with this command instead.")
def cli(workdir: str | None, server_command: str | None) -> None:
    """Engine at scale: fellowship's `candidates` stage beside a bare asyncio + openai loop."""
    global SERVER_COMMAND
    if server_command:
        SERVER_COMMAND = shlex.split(server_command)
    os.chdir(ROOT)


@cli.command("speed")
@click.option("--n", "ns", multiple=True, default=["400"], callback=int_list, help="Calls, comma-separated  [default: 400].")
@click.option("--c", "cs", multiple=True, default=["50"], callback=int_list, help="Calls in flight, comma-separated  [default: 50].")
@click.option("--repeats", default=2, show_default=True, help="Runs of each side, alternating.")
@click.option("--delay", default=DELAY_S, show_default=True, help="Server seconds per call.")
@click.pass_context
def speed_command(ctx, ns, cs, repeats, delay):
    """Wall time and CPU per call, bare loop vs fellowship."""
    with workspace(ctx) as work:
        speed([even(n) for n in ns], cs, repeats=repeats, delay=delay, work=work)


@cli.command("command")
@click.option("--n", "ns", multiple=True, default=["400"], callback=int_list, help="Calls, comma-separated  [default: 400].")
@click.option("--c", "cs", multiple=True, default=["50"], callback=int_list, help="Calls in flight, comma-separated  [default: 50].")
@click.option("--repeats", default=3, show_default=True, help="Runs of each side, alternating.")
@click.option("--delay", default=DELAY_S, show_default=True, help="Server seconds per call.")
@click.option("--faults", is_flag=True, help="The server answers 10% HTTP 429 and 5% HTTP 500.")
@click.pass_context
def command_command(ctx, ns, cs, repeats, delay, faults):
    """Whole commands, each side a fresh process: bare script vs `fellowship build --stage candidates`."""
    with workspace(ctx) as work:
        command_runs([even(n) for n in ns], cs, repeats=repeats, delay=delay, faults=faults, work=work)


@cli.command("memory")
@click.option("--n", "ns", multiple=True, default=["10000,30000,100000"], callback=int_list, help="Prompts, comma-separated  [default: 10000,30000,100000].")
@click.option("--c", default=200, show_default=True, help="Calls in flight.")
@click.option("--delay", default=0.02, show_default=True, help="Server seconds per call.")
@click.option("--sample-s", default=1.0, show_default=True, help="Seconds between RSS samples.")
@click.pass_context
def memory_command(ctx, ns, c, delay, sample_s):
    """Peak RSS of the candidates stage for each number of prompts (2 calls each), in fresh processes."""
    with workspace(ctx) as work:
        memory(sorted(ns), c=c, delay=delay, sample_s=sample_s, work=work)


@cli.command("memory-child", hidden=True)
@click.argument("recipe_path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--data-root", type=click.Path(file_okay=False, path_type=Path), required=True)
def memory_child_command(recipe_path, data_root):
    """(internal) One measured candidates stage for `memory`."""
    memory_child(recipe_path, data_root)


@cli.command("faults")
@click.option("--n", default=2000, show_default=True, help="Calls.")
@click.option("--c", default=50, show_default=True, help="Calls in flight.")
@click.option("--delay", default=DELAY_S, show_default=True, help="Server seconds per call.")
@click.option("--bare/--no-bare", default=True, show_default=True, help="Also the bare loop with the SDK's retries.")
@click.pass_context
def faults_command(ctx, n, c, delay, bare):
    """Rows lost and wall time with faults, against the same run without."""
    with workspace(ctx) as work:
        faults(even(n), c, delay=delay, bare=bare, work=work)


@cli.command("resume")
@click.option("--n", default=2000, show_default=True, help="Calls.")
@click.option("--c", default=50, show_default=True, help="Calls in flight.")
@click.option("--delay", default=DELAY_S, show_default=True, help="Server seconds per call.")
@click.option("--kill-at", default=0.5, show_default=True, help="Kill once the server has answered this share of N.")
@click.pass_context
def resume_command(ctx, n, c, delay, kill_at):
    """kill -9 in the middle of the candidates stage, rerun, compare with an uninterrupted run."""
    with workspace(ctx) as work:
        resume(even(n), c, delay=delay, kill_at=kill_at, work=work)


@cli.command("profile")
@click.option("--n", default=400, show_default=True, help="Calls.")
@click.option("--c", default=50, show_default=True, help="Calls in flight.")
@click.option("--delay", default=0.05, show_default=True, help="Server seconds per call.")
@click.option("--top", default=25, show_default=True, help="Entries per table.")
@click.pass_context
def profile_command(ctx, n, c, delay, top):
    """cProfile of both sides: where the fellowship side's extra CPU goes."""
    with workspace(ctx) as work:
        profile(even(n), c, delay=delay, top=top, work=work)


# The grid, and a scaled-down copy of it that checks the script end to end in about two minutes.
GRID = {"speed_n": [400, 10_000], "speed_c": [50, 200], "delay": DELAY_S, "memory_n": [10_000, 30_000, 100_000],
        "memory_delay": 0.02, "faults_n": 2000, "resume_n": 2000, "c": 50}
SMOKE = {"speed_n": [40], "speed_c": [10], "delay": 0.25, "memory_n": [200, 600],
         "memory_delay": 0.02, "faults_n": 200, "resume_n": 200, "c": 10}


@cli.command("all")
@click.option("--repeats", default=2, show_default=True, help="Speed runs of each side.")
@click.option("--smoke", is_flag=True, help="A scaled-down grid to check the script; results stay in the work folder.")
@click.pass_context
def all_command(ctx, repeats, smoke):
    """The issue's whole grid (about an hour on 2 cores), then one summary table."""
    global RESULTS
    grid = SMOKE if smoke else GRID
    with workspace(ctx) as work:
        if smoke:
            RESULTS = work / "engine.json"
        cases = speed(grid["speed_n"], grid["speed_c"], repeats=repeats, delay=grid["delay"], work=work)
        mem = memory(grid["memory_n"], c=200, delay=grid["memory_delay"], sample_s=1.0, work=work)
        fault = faults(grid["faults_n"], grid["c"], delay=grid["delay"], bare=True, work=work)
        res = resume(grid["resume_n"], grid["c"], delay=grid["delay"], kill_at=0.5, work=work)
    print_summary(cases, mem, fault, res)


def print_summary(cases: list[dict], mem: dict, fault: dict, res: dict) -> None:
    rows = [[f"speed C={x['c']} N={x['n']}", f"<= {TARGET_SPEED_RATIO}x bare, CPU +{TARGET_CPU_MS:g} ms/call",
             f"{x['ratio']:.3f}x, CPU {x['cpu_diff_ms']:+.2f} ms/call", verdict(x["ok"])] for x in cases]
    rows += [
        ["memory", f"peak <= {TARGET_RSS_MB:g} MB, flat in N",
         f"peaks {', '.join(f'{p:.0f}' for p in mem['peak_rss_mb'])} MB at {', '.join(map(str, mem['prompts']))} prompts",
         verdict(mem["ok"])],
        ["faults", f"0 rows lost, <= {TARGET_FAULT_RATIO}x fault-free",
         f"{fault['rows_missing']} lost, {fault['rows_different']} differ, {fault['wall_ratio']:.2f}x", verdict(fault["ok"])],
        ["resume", "same table, no stored answer asked again",
         f"differs in {', '.join(res['columns']) or 'nothing'}; rerun {res['rerun']['calls']} calls, "
         f"{res['rerun']['cached']} cached; server repeats {res['server_completed_repeats']}", verdict(res["ok"])],
    ]
    print_table("Summary", ["target", "goal", "measured", "verdict"], rows)


if __name__ == "__main__":
    cli()
