"""The embedded local model as a judge, measured against human labels in several configurations.

    python benchmarks/local_judge.py run [--only NAME ...]   # judge (long; resumes from the cache)
    python benchmarks/local_judge.py report                  # the table, from what `run` built
    python benchmarks/local_judge.py save                    # the judges' answers into the repository

Benchmarks: all 80 FairEval items and 100 seeded PandaLM-Eval items (seed 0). Configurations, all
with `orders: rotations` (each pair judged in both orders):

- `text-reasoning`: combined scoring out of 10, the paper's prompt (evaluation, then scores);
- `scores-only`: the same, scores only (`reasoning: false`);
- `scores-only-expected`: scores only, each score the mean of its token distribution;
- `direct-expected`: direct comparison, the answer only, read as P(A), P(B), P(C);
- `independent-expected`: each answer scored alone (no position to be biased by), the score only, expected.

Each configuration is a benchmark recipe written under the work folder and built with the project's
own stages; `report` runs `meta-eval` on each and prints kappa and accuracy with their bootstrap 95%
intervals, flip rate, position bias, longer-answer win rate and seconds per judge call, and writes
them to `benchmarks/results/local_judge.json`. Answers are kept in a response cache outside the
work tree (`--cache`, default ~/.cache/fellowship/local-judge/llm), so an interrupted `run` goes on
where it stopped, in this session or the next. `save` writes every answer the cache holds for these
recipes to `benchmarks/results/local_judge_answers.jsonl.gz` (the raw judge outputs, as the paper
publishes its own); `run` and `report` load that file into the cache first, so the table can be
reproduced, or the run continued, from a fresh clone.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.saved_answers import interval, load_answers, save_answers  # noqa: E402

WORK = Path.home() / ".cache" / "fellowship" / "local-judge"
RESULTS = ROOT / "benchmarks" / "results" / "local_judge.json"
ANSWERS = ROOT / "benchmarks" / "results" / "local_judge_answers.jsonl.gz"

BENCHMARKS = {"fair-eval": "{benchmark: fair-eval}", "pandalm-eval": "{benchmark: pandalm-eval, sample: 100, seed: 0}"}
CONFIGS = {  # name -> judge.panel settings
    "scores-only-expected": "strategy: combined, reasoning: false, score_mode: expected",
    "scores-only": "strategy: combined, reasoning: false",  # the same answers as expected: read from its cache
    "direct-expected": "strategy: direct, reasoning: false, score_mode: expected",
    "independent-expected": "strategy: independent, reasoning: false, score_mode: expected",
    "text-reasoning": "strategy: combined, reasoning: true",
}
RECIPE = """\
name: {name}
description: benchmarks/local_judge.py - {config} on {benchmark}
source: {source}
models:
  judge: {{provider: local, model: default, max_tokens: 200}}
generation: {{workflow: import}}
judge:
  panel: {{models: [judge], scale: 10, orders: rotations, max_parse_failure_rate: 1.0, {panel}}}
export: {{}}
"""


def recipes(work: Path) -> list[tuple[str, str, Path]]:
    """(configuration, benchmark, recipe path) for every pair, recipes written beside the project's prompts."""
    folder = work / "recipes"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copytree(ROOT / "recipes" / "prompts", folder / "prompts", dirs_exist_ok=True)
    out = []
    for config, panel in CONFIGS.items():
        for benchmark, source in BENCHMARKS.items():
            name = f"{benchmark}-{config}"
            path = folder / f"{name}.yaml"
            path.write_text(RECIPE.format(name=name, config=config, benchmark=benchmark, source=source, panel=panel))
            out.append((config, benchmark, path))
    return out


def run(work: Path, only: list[str]) -> None:
    from builders.loader import load_recipe
    from builders.stages import run_stage

    for config, benchmark, path in recipes(work):
        if only and config not in only:
            continue
        recipe = load_recipe(path)
        started = time.perf_counter()
        for stage in ("items", "candidates", "labels", "debates", "scores"):
            run_stage(recipe, stage, data_root=work / "data", progress=False)
        print(f"{config} on {benchmark}: {time.perf_counter() - started:.0f}s", file=sys.stderr, flush=True)


def report(work: Path) -> dict:
    import polars as pl

    from builders import meta_eval
    from builders.loader import load_recipe
    from builders.tables import AGREEMENT, SCORES, read_table

    out = {}
    for config, benchmark, path in recipes(work):
        data = work / "data" / path.stem
        if not (data / "scores.parquet").exists():
            continue
        recipe = load_recipe(path)
        meta_eval.build(recipe, data, resamples=1000, seed=0)
        row = read_table(AGREEMENT, data).filter(pl.col("evaluator") == "judge").to_dicts()[0]
        calls = read_table(SCORES, data).unique("call_id")
        out.setdefault(config, {})[benchmark] = {
            "items": row["n_items"],
            **{k: row[k] for k in row if k.split("_")[0] in ("kappa", "accuracy", "flip", "position", "longer")},
            "n_missing": row["n_missing"],
            "calls": calls.height,
            "seconds_per_call": calls["latency_s"].mean(),
        }
    return out



def table(results: dict) -> str:
    head = "| configuration | benchmark | items | kappa [95% CI] | accuracy [95% CI] | flip rate | position bias | longer wins | s / call |"
    lines = [head, "|" + "---|" * 9]
    for config, by in results.items():
        for benchmark, r in by.items():
            lines.append(
                f"| {config} | {benchmark} | {r['items']} | {interval(r, 'kappa')} | {interval(r, 'accuracy')} | "
                f"{interval(r, 'flip_rate')} | {interval(r, 'position_bias')} | {interval(r, 'longer_wins')} | {r['seconds_per_call']:.1f} |"
            )
    return "\n".join(lines)




def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("phase", choices=["run", "report", "save"])
    parser.add_argument("--only", nargs="*", default=[], choices=list(CONFIGS))
    parser.add_argument("--work", type=Path, default=WORK, help="recipes and tables (default: %(default)s)")
    parser.add_argument("--cache", type=Path, default=None, help="response cache (default: WORK/llm)")
    args = parser.parse_args()
    cache_dir = args.cache or args.work / "llm"
    os.environ["FELLOWSHIP_CACHE_DIR"] = str(cache_dir)
    if args.phase == "save":
        print(f"saved {save_answers(cache_dir, ANSWERS)} answers to {ANSWERS}")
        return
    print(f"loaded {load_answers(cache_dir, ANSWERS)} saved answers into {cache_dir}", file=sys.stderr)
    if args.phase == "run":
        run(args.work, args.only)
        return
    results = report(args.work)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))


if __name__ == "__main__":
    main()
