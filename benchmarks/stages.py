"""Every stage's peak memory and wall time on the default pipeline's shape, from 10,000 to 1,000,000
prompts.

The recipe has the shape of recipes/demo.yaml: a feedback loop (3 iterations, one reviewer), the
combined judge (scale 10, `orders: rotations`, `score_mode: expected`, the mean over the judge's
token probabilities, which the fake server gives), `tie_policy: later_iteration`, and the
`best_vs_rejected` export; every model is `openai-compatible` at the fake OpenAI-compatible server
of benchmarks/engine.py (`python -m tests.openai_server --delay D --no-record`, started by this
script on 127.0.0.1), `concurrency: C`. A prompt costs 8 calls: 3 answers and 2 reviews
(`candidates`), and 3 judge calls, one per rotation of its 3 answers (`scores`).

Each stage is built by a process of its own (`stage-child`), so each peak is that stage's alone. The
child imports the command line (`builders.cli`, the `build` command, the stage's builder module and
pyarrow.parquet), reads its RSS (`VmRSS`, "RSS after imports"), then runs the console script's
`builders.cli.main` in-process on `fellowship build RECIPE --stage STAGE --no-progress --data-dir
DIR` (its `gc.freeze` calls included), and at the end prints its peak RSS: `VmHWM` from
/proc/self/status, not `ru_maxrss`, which Linux carries over from the parent at fork and exec. Wall
is the time of `main` in the child (interpreter start-up and imports left out); rows are each written
table's Parquet row count. This process samples the child's RSS every second too (kept in the JSON).

Two modes:

- real: every stage of a fresh build (fresh data folder, cold response cache), every call answered
  by the fake server: items, candidates, labels, debates, scores, verdicts, dpo, kto, dpo_feedback,
  kto_feedback.
- synthesized: for N too large to run through the server (1,000,000 prompts are 8,000,000 calls),
  the `items` stage is built from a source of N prompts as in a real run, the LLM stages' tables are
  synthesized, and the pure stages (verdicts, dpo, kto, dpo_feedback, kto_feedback) are measured
  over them. The synthesized `candidates`, `debates` (empty, as the recipe has no debate) and
  `scores` tables copy a real run's rows (the template: `--template DIR`, the data folder of a real
  run, else a real run of `--template-prompts` prompts made first): item k of N takes the rows of
  template item k mod T, with the ids made again from item k's id as the builders make them
  (`candidate_id`, `call_id`, `score_id`), so texts, lengths, scores and verdicts have the real
  run's distribution. They are written with `TableWriter` in the items' order.

    python benchmarks/stages.py real --n 10000 --workdir /tmp/bench17
    python benchmarks/stages.py synthesized --n 10000,100000,1000000 --template /tmp/bench17/real-10000/data/stages
    python benchmarks/stages.py all            # real 10k and 100k, synthesized 10k, 100k and 1M (hours)
    python benchmarks/stages.py all --smoke    # 200 prompts real, 200 and 600 synthesized, to check the script
    python benchmarks/stages.py show           # the tables again, from benchmarks/results/stages.json

The targets (the issue's): every stage's peak RSS at most 300 MB, and within 10% from the smallest N
to the largest of the same mode. Results are printed as Markdown tables and merged into
benchmarks/results/stages.json.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # benchmark this checkout's code, whatever copy is installed

import click  # noqa: E402

# A `stage-child` process measures what `fellowship build` itself loads, so it does not import
# benchmarks/engine.py: that imports openai and the SDK providers (about 21 MB), which the command
# loads only for a stage that makes calls.
CHILD = __name__ == "__main__" and sys.argv[1:2] == ["stage-child"]
if not CHILD:
    from benchmarks import engine as bench  # the fake server, the prompts, the output helpers

RESULTS = ROOT / "benchmarks" / "results" / "stages.json"

TARGET_RSS_MB = 300.0
TARGET_RSS_GROWTH = 0.10

REAL_STAGES = ("items", "candidates", "labels", "debates", "scores", "verdicts", "dpo", "kto", "dpo_feedback", "kto_feedback")
PURE_STAGES = ("verdicts", "dpo", "kto", "dpo_feedback", "kto_feedback")
SYNTHESIZED = ("candidates", "debates", "scores")  # the tables the synthesized mode writes itself

DELAY_S = 0.01
CONCURRENCY = 200

RECIPE = """\
schema_version: 1
name: stages
description: stages benchmark, {prompts} prompts, the shape of recipes/demo.yaml on the fake server
source:
  path: '{source}'
  prompt_column: prompt
models:
  writer: {{provider: openai-compatible, base_url: '{base_url}', model: writer, concurrency: {c}, max_tokens: 160, seed: 0, timeout_s: 120, max_retries: 10}}
  reviewer: {{provider: openai-compatible, base_url: '{base_url}', model: reviewer, concurrency: {c}, max_tokens: 160, seed: 0, timeout_s: 120, max_retries: 10}}
  judge: {{provider: openai-compatible, base_url: '{base_url}', model: judge, concurrency: {c}, max_tokens: 200, seed: 0, timeout_s: 120, max_retries: 10}}
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
    score_mode: expected
    reasoning: false
    max_parse_failure_rate: 0.34
  mode: judge
  tie_policy: later_iteration
export:
  pairing: best_vs_rejected
  min_margin: 0
"""


def write_recipe(folder: Path, *, source: Path, prompts: int, base_url: str, c: int) -> Path:
    """`folder/stages.yaml`, with `folder/prompts` linked to the repository's templates (a recipe's
    template paths are relative to its folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / "prompts"
    if not link.exists():
        link.symlink_to(ROOT / "recipes" / "prompts")
    path = folder / "stages.yaml"
    path.write_text(RECIPE.format(prompts=prompts, source=source, base_url=base_url, c=c))
    return path


# --- one stage in its own process -----------------------------------------------------------------


def status_mb(field: str) -> float:
    """This process's `VmRSS` (resident now) or `VmHWM` (its peak) in MB, from /proc/self/status."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def stage_child(recipe_path: Path, stage: str, data_root: Path) -> None:
    """Build `stage` with the console script's `main`, in this process; print one JSON line."""
    import importlib

    started = time.perf_counter()
    import pyarrow.parquet as pq

    import builders.cli
    import builders.cli.build  # noqa: F401  (registers `build`; main's own import of it is then a no-op)
    from builders.stages import BUILDERS, STAGES

    importlib.import_module(BUILDERS[stage])
    imports_s = time.perf_counter() - started
    after_imports = status_mb("VmRSS")
    argv = ["fellowship", "build", str(recipe_path), "--stage", stage, "--no-progress", "--data-dir", str(data_root)]
    sys.argv, code = argv, 0
    started = time.perf_counter()
    try:
        builders.cli.main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    wall = time.perf_counter() - started
    peak = status_mb("VmHWM")
    end = status_mb("VmRSS")
    data_dir = data_root / "stages"
    rows = {}
    if code == 0:
        from builders.tables import TABLES

        rows = {t: pq.ParquetFile(TABLES[t].path(data_dir)).metadata.num_rows for t in STAGES[stage].WRITES}
    print(json.dumps({"stage": stage, "exit_code": code, "imports_s": round(imports_s, 2),
                      "rss_after_imports_mb": round(after_imports, 1), "peak_rss_mb": round(peak, 1),
                      "rss_at_end_mb": round(end, 1), "wall_s": round(wall, 2), "rows": rows}), flush=True)


def run_child(recipe: Path, stage: str, data_root: Path, env: dict, log_path: Path, sample_s: float = 1.0) -> dict:
    """One `stage-child` process to its end, sampling its RSS; its JSON line, plus the samples."""
    with open(log_path, "a") as log:
        log.write(f"--- {stage}\n")
        log.flush()
        started = time.perf_counter()
        child = subprocess.Popen(
            [sys.executable, __file__, "stage-child", str(recipe), stage, "--data-root", str(data_root)],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=log, text=True,
        )
        samples = []
        while child.poll() is None:
            rss = bench.rss_mb(child.pid)
            if rss is not None:
                samples.append([round(time.perf_counter() - started, 1), round(rss, 1)])
            time.sleep(sample_s)
        out = child.stdout.read()
        process_s = time.perf_counter() - started
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if child.returncode != 0 or not lines:
        raise click.ClickException(f"stage {stage} failed (exit {child.returncode}); see {log_path}")
    result = json.loads(lines[-1])
    if result["exit_code"] != 0:
        raise click.ClickException(f"stage {stage}: fellowship exited with {result['exit_code']}; see {log_path}")
    return {**result, "process_s": round(process_s, 2), "rss_samples": samples}


def child_env(work: Path) -> dict:
    return {**os.environ, "FELLOWSHIP_DATA_DIR": str(work / "data"), "FELLOWSHIP_CACHE_DIR": str(work / "cache"),
            "PYTHONPATH": str(ROOT)}


# --- real runs ------------------------------------------------------------------------------------


def real(n: int, *, c: int, delay: float, work: Path, save_key: str | None = "real") -> dict:
    """Every stage of a fresh build over n prompts, each in its own process, against the fake server."""
    folder = work / f"real-{n}"
    if folder.exists():
        raise click.ClickException(f"{folder} exists: a real run needs a fresh data folder and a cold cache")
    source, prompts = bench.write_source(work / "sources", n)
    del prompts
    stages: dict[str, dict] = {}
    started = time.perf_counter()
    with bench.FakeServer(delay=delay) as server:
        recipe = write_recipe(folder, source=source, prompts=n, base_url=server.base_url, c=c)
        for stage in REAL_STAGES:
            stages[stage] = run_child(recipe, stage, folder / "data", child_env(folder), folder / "build.log")
            click.echo(f"  real {n}: {stage}: peak {stages[stage]['peak_rss_mb']:.0f} MB, "
                       f"{stages[stage]['wall_s']:.1f} s, rows {stages[stage]['rows']}", err=True)
            if save_key and stage != REAL_STAGES[-1]:  # a long run's stages so far, should it be stopped
                save(save_key, f"prompts{n}", {"mode": "real", "prompts": n, "c": c, "delay_s": delay,
                                               "stages": stages, "complete": False})
        server_stats = server.stats()
    result = {"mode": "real", "prompts": n, "c": c, "delay_s": delay, "stages": stages, "complete": True,
              "total_s": round(time.perf_counter() - started, 1), "server": server_stats,
              "data_dir": str(folder / "data" / "stages")}
    if save_key:
        save(save_key, f"prompts{n}", result)
    return result


# --- synthesized runs -----------------------------------------------------------------------------


def _template(data_dir: Path) -> list[dict]:
    """Per template item, in the items' order: its candidates and its score rows."""
    from builders.by_item import by_item
    from builders.tables import CANDIDATES, SCORES

    out = []
    for item, rows in by_item(data_dir, ["item_id"], candidates=CANDIDATES, scores=SCORES):
        out.append({"item_id": item["item_id"], "candidates": rows["candidates"], "scores": rows["scores"]})
    if not out:
        raise click.ClickException(f"{data_dir}: the template has no items")
    return out


def synthesize(data_dir: Path, template_dir: Path) -> dict:
    """The candidates, debates and scores tables of `data_dir`'s items, copied from the template's rows
    (item k takes template item k mod T's), ids made again as the builders make them."""
    from builders.tables import CANDIDATES, DEBATES, ITEMS, SCORES, TableWriter, content_id, scan_table

    template = _template(template_dir)
    started = time.perf_counter()
    _, items = scan_table(ITEMS, data_dir, ["item_id"])
    with TableWriter(CANDIDATES, data_dir) as candidates, TableWriter(SCORES, data_dir) as scores:
        for k, item in enumerate(items):
            t, item_id = template[k % len(template)], item["item_id"]
            ids = {}
            rows = []
            for c in t["candidates"]:
                new = content_id(item_id, c["workflow"], c["generator"], c["reviewers"], c["iteration"])
                ids[c["candidate_id"]] = new
                rows.append({**c, "candidate_id": new, "item_id": item_id})
            candidates.write(rows)
            calls: dict[str, list[dict]] = {}
            for s in t["scores"]:
                calls.setdefault(s["call_id"], []).append(s)
            rows = []
            for shown in calls.values():
                by_position = sorted(shown, key=lambda s: s["position"])
                call_id = content_id(by_position[0]["judge"], [ids[s["candidate_id"]] for s in by_position])
                for s in shown:
                    cid = ids[s["candidate_id"]]
                    rows.append({**s, "score_id": content_id(call_id, cid), "call_id": call_id, "item_id": item_id,
                                 "candidate_id": cid})
            scores.write(rows)
    with TableWriter(DEBATES, data_dir):
        pass
    return {"template_items": len(template), "synthesis_s": round(time.perf_counter() - started, 1),
            "rows": {"candidates": candidates.rows, "scores": scores.rows, "debates": 0}}


def synthesized(n: int, *, template: Path, work: Path) -> dict:
    """items (built), candidates/debates/scores (synthesized), then each pure stage in its own process."""
    folder = work / f"synthesized-{n}"
    source, prompts = bench.write_source(work / "sources", n)
    del prompts
    recipe = write_recipe(folder, source=source, prompts=n, base_url="http://127.0.0.1:9/v1", c=CONCURRENCY)
    data_root = folder / "data"
    env, log = child_env(folder), folder / "build.log"
    stages = {"items": run_child(recipe, "items", data_root, env, log)}
    click.echo(f"  synthesized {n}: items: peak {stages['items']['peak_rss_mb']:.0f} MB, {stages['items']['wall_s']:.1f} s", err=True)
    made = synthesize(data_root / "stages", template)
    click.echo(f"  synthesized {n}: wrote candidates and scores in {made['synthesis_s']:.0f} s", err=True)
    for stage in PURE_STAGES:
        stages[stage] = run_child(recipe, stage, data_root, env, log)
        click.echo(f"  synthesized {n}: {stage}: peak {stages[stage]['peak_rss_mb']:.0f} MB, "
                   f"{stages[stage]['wall_s']:.1f} s, rows {stages[stage]['rows']}", err=True)
    result = {"mode": "synthesized", "prompts": n, "template": str(template), **made, "stages": stages}
    save("synthesized", f"prompts{n}", result)
    return result


# --- output ---------------------------------------------------------------------------------------


def save(section: str, key: str, value: dict) -> None:
    """Merge one result into RESULTS, with the commit and the machine (engine.py's `save`)."""
    saved, bench.RESULTS = bench.RESULTS, RESULTS
    try:
        bench.save(section, key, value)
    finally:
        bench.RESULTS = saved


def verdict_of(peaks: list[float]) -> tuple[float, bool]:
    growth = (peaks[-1] - peaks[0]) / peaks[0] if len(peaks) > 1 else 0.0
    return growth, max(peaks) <= TARGET_RSS_MB and growth <= TARGET_RSS_GROWTH


def print_runs(runs: list[dict]) -> None:
    """One table per mode: stage x N (peak RSS MB, wall s, rows), then growth and the verdict."""
    for mode in ("real", "synthesized"):
        chosen = sorted((r for r in runs if r["mode"] == mode), key=lambda r: r["prompts"])
        if not chosen:
            continue
        order = REAL_STAGES if mode == "real" else ("items", *PURE_STAGES)
        headers = ["stage"] + [f"{r['prompts']:,} prompts{' (unfinished)' if r.get('complete') is False else ''}: "
                               "peak MB / after imports MB / wall s / rows" for r in chosen]
        headers += ["peak growth", "target"]
        rows = []
        for stage in order:
            cells, peaks = [], []
            for r in chosen:
                x = r["stages"].get(stage)
                if x is None:
                    cells.append(None)
                    continue
                peaks.append(x["peak_rss_mb"])
                cells.append(f"{x['peak_rss_mb']:.0f} / {x['rss_after_imports_mb']:.0f} / {x['wall_s']:.2f} / "
                             f"{', '.join(f'{v:,}' for v in x['rows'].values())}")
            growth, ok = verdict_of(peaks)
            rows.append([stage, *cells, f"{growth:+.1%}" if len(peaks) > 1 else "-", bench.verdict(ok)])
        title = ("Real runs: every call answered by the fake server" if mode == "real" else
                 "Synthesized: items built, candidates and scores tables synthesized from a real run's rows, pure stages measured")
        bench.print_table(f"{title} (target: peak <= {TARGET_RSS_MB:g} MB, largest N within "
                          f"{TARGET_RSS_GROWTH:.0%} of smallest)", headers, rows)


def load_saved(section: str) -> list[dict]:
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    return list(results.get(section, {}).values())


# --- command line ---------------------------------------------------------------------------------


def int_list(ctx, param, values: tuple[str, ...]) -> list[int]:
    """`--n 10000,100000` or `--n 10000 --n 100000`."""
    numbers = [int(v) for value in values for v in value.split(",") if v.strip()]
    if any(x < 1 for x in numbers):
        raise click.BadParameter("must be positive")
    return numbers


def workspace(ctx: click.Context) -> Path:
    given = ctx.find_root().params.get("workdir")
    path = Path(given) if given else Path(tempfile.mkdtemp(prefix="fellowship-stages-"))
    path.mkdir(parents=True, exist_ok=True)
    return path.resolve()


@click.group()
@click.option("--workdir", type=click.Path(file_okay=False), help="Keep sources, recipes, tables, caches and logs here "
              "(default: a new temporary folder, kept).")
def cli(workdir: str | None) -> None:
    """Every stage's peak RSS and wall time, real runs on the fake server and synthesized inputs."""
    os.chdir(ROOT)


@cli.command("real")
@click.option("--n", "ns", multiple=True, default=["10000"], callback=int_list, help="Prompts, comma-separated  [default: 10000].")
@click.option("--c", default=CONCURRENCY, show_default=True, help="Calls in flight per model.")
@click.option("--delay", default=DELAY_S, show_default=True, help="Server seconds per call.")
@click.pass_context
def real_command(ctx, ns, c, delay):
    """Every stage of a fresh build, every call answered by the fake server."""
    work = workspace(ctx)
    print_runs([real(n, c=c, delay=delay, work=work) for n in sorted(ns)])


@cli.command("synthesized")
@click.option("--n", "ns", multiple=True, default=["10000,100000,1000000"], callback=int_list,
              help="Prompts, comma-separated  [default: 10000,100000,1000000].")
@click.option("--template", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Data folder of a real run (…/real-N/data/stages) whose rows are copied.")
@click.option("--template-prompts", default=1000, show_default=True, help="Without --template: a real run of this many prompts first.")
@click.option("--c", default=CONCURRENCY, show_default=True, help="Calls in flight (template run).")
@click.option("--delay", default=DELAY_S, show_default=True, help="Server seconds per call (template run).")
@click.pass_context
def synthesized_command(ctx, ns, template, template_prompts, c, delay):
    """items built, candidates and scores synthesized, the pure stages measured."""
    work = workspace(ctx)
    if template is None:
        template = Path(real(template_prompts, c=c, delay=delay, work=work, save_key=None)["data_dir"])
    print_runs([synthesized(n, template=template.resolve(), work=work) for n in sorted(ns)])


@cli.command("stage-child", hidden=True)
@click.argument("recipe_path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("stage")
@click.option("--data-root", type=click.Path(file_okay=False, path_type=Path), required=True)
def stage_child_command(recipe_path, stage, data_root):
    """(internal) One stage, built in this process; prints its figures as one JSON line."""
    stage_child(recipe_path, stage, data_root)


@cli.command("show")
def show_command():
    """Print the tables of the results saved in benchmarks/results/stages.json."""
    print_runs(load_saved("real") + load_saved("synthesized"))


GRID = {"real": [10_000, 100_000], "synthesized": [10_000, 100_000, 1_000_000]}
SMOKE = {"real": [200], "synthesized": [200, 600]}


@cli.command("all")
@click.option("--smoke", is_flag=True, help="200 prompts real, 200 and 600 synthesized; results stay in the work folder.")
@click.option("--c", default=CONCURRENCY, show_default=True, help="Calls in flight per model.")
@click.option("--delay", default=DELAY_S, show_default=True, help="Server seconds per call.")
@click.pass_context
def all_command(ctx, smoke, c, delay):
    """Real runs, then synthesized runs from the smallest real run's rows; one table per mode."""
    global RESULTS
    grid = SMOKE if smoke else GRID
    work = workspace(ctx)
    if smoke:
        RESULTS = work / "stages.json"
    runs = [real(n, c=c, delay=delay, work=work) for n in grid["real"]]
    template = Path(runs[0]["data_dir"])
    runs += [synthesized(n, template=template, work=work) for n in grid["synthesized"]]
    print_runs(runs)


if __name__ == "__main__":
    cli()
