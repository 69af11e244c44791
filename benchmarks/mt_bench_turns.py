"""The embedded local judge on MT-Bench's turn-2 rows, shown the first turn only or both turns.

    python benchmarks/mt_bench_turns.py run [--rows 40] [--chunk 8]   # judge (long; resumes from the cache)
    python benchmarks/mt_bench_turns.py report                        # the table, from what `run` built
    python benchmarks/mt_bench_turns.py save                          # the judges' answers into the repository

The paper's judges saw only the first turn of MT-Bench, even on the rows where the humans judged the
second (`source.turns: first`); MT-Bench's own judges see both turns of each model's conversation
(`source.turns: all`). Both configurations judge the same seeded sample of turn-2 rows (`--rows`,
seed 0) with the same judge: `provider: local`, combined scoring out of 10, scores only
(`reasoning: false`), read as the mean of their token probabilities (`score_mode: expected`), each
pair in both orders (`orders: rotations`).

The rows are judged `--chunk` at a time, both configurations per chunk: each round rewrites the
source to the first k rows and rebuilds both recipes (earlier rows come from the response cache), so
whenever `run` stops, both configurations cover the same rows, but for the chunk it stopped in.

With `--source FILE --reference-column COL` the script measures a judge with and without reference
answers instead (`without-reference`, `with-reference`) on a labelled file in the vendored
benchmarks' columns (`item_id`, `question`, `response_a`, `response_b`, `model_a`, `model_b`,
`human_winner`) plus the reference column; MT-Bench's vendored copy has no reference answers.
`--judge` replaces the judge model (a YAML flow mapping, e.g. `{provider: fake, model: auto}`).

`report` runs `meta-eval` on each configuration, over the rows that every configuration has scores
for (copied under WORK/report/, so a `run` going on is left alone), and prints kappa and accuracy
with their bootstrap 95% intervals, flip rate, position bias and seconds per judge call; it writes
them, with the rows' ids, to `benchmarks/results/mt_bench_turns.json`. Answers are kept in a response cache
outside the work tree (`--cache`, default ~/.cache/fellowship/mt-bench-turns/llm); `save` writes
them to `benchmarks/results/mt_bench_turns_answers.jsonl.gz`, which `run` and `report` load first.
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

WORK = Path.home() / ".cache" / "fellowship" / "mt-bench-turns"
RESULTS = ROOT / "benchmarks" / "results" / "mt_bench_turns.json"
ANSWERS = ROOT / "benchmarks" / "results" / "mt_bench_turns_answers.jsonl.gz"
JUDGE = "{provider: local, model: default, max_tokens: 200, context_tokens: 8192}"
SOURCE_FILE = "sources/rows.parquet"  # under the work folder's recipes/: the rows of the current round
RECIPE = """\
name: {name}
description: benchmarks/mt_bench_turns.py - {name}
source:
  path: {path}
  prompt_column: question
  id_column: item_id
  label_column: human_winner
{extra}models:
  judge: {judge}
generation:
  workflow: import
  answers: [{{column: response_a, model_column: model_a}}, {{column: response_b, model_column: model_b}}]
judge:
  panel: {{models: [judge], strategy: combined, scale: 10, orders: rotations, reasoning: false,
          score_mode: expected, max_parse_failure_rate: 1.0}}
export: {{}}
"""


def configs(reference_column: str | None) -> dict[str, str]:
    """name -> the lines each configuration adds to `source`."""
    if reference_column is None:
        return {"turns-first": "  turns: first\n", "turns-all": "  turns: all\n"}
    return {"without-reference": "", "with-reference": f"  reference_column: {reference_column}\n"}


def sample_rows(source: Path | None, rows: int):
    """The rows measured, in the order they are judged: MT-Bench's turn-2 rows (seeded sample), or
    every row of `source`."""
    import polars as pl

    from builders.sources import benchmark_path

    if source is not None:
        return pl.read_parquet(source) if source.suffix == ".parquet" else pl.read_ndjson(source, infer_schema_length=None)
    turn2 = pl.read_parquet(benchmark_path("mt-bench")).filter(pl.col("turn") == 2)
    return turn2.sample(n=min(rows, turn2.height), seed=0, shuffle=True)


def recipes(work: Path, names: dict[str, str], judge: str) -> dict[str, Path]:
    folder = work / "recipes"
    (folder / "sources").mkdir(parents=True, exist_ok=True)
    shutil.copytree(ROOT / "recipes" / "prompts", folder / "prompts", dirs_exist_ok=True)
    out = {}
    for name, extra in names.items():
        path = folder / f"{name}.yaml"
        path.write_text(RECIPE.format(name=name, path=SOURCE_FILE, extra=extra, judge=judge))
        out[name] = path
    return out


def run(work: Path, df, names: dict[str, str], judge: str, chunk: int) -> None:
    from builders.loader import load_recipe
    from builders.stages import run_stage

    paths = recipes(work, names, judge)
    for done in range(chunk, df.height + chunk, chunk):
        df.head(done).write_parquet(work / "recipes" / SOURCE_FILE)
        for name, path in paths.items():
            recipe = load_recipe(path)
            started = time.perf_counter()
            for stage in ("items", "candidates", "labels", "debates", "scores"):
                run_stage(recipe, stage, data_root=work / "data", progress=False)
            print(f"{name}: rows 1-{min(done, df.height)} of {df.height}: {time.perf_counter() - started:.0f}s",
                  file=sys.stderr, flush=True)


def report(work: Path, names: dict[str, str], judge: str) -> dict:
    import polars as pl

    from builders import meta_eval
    from builders.loader import load_recipe
    from builders.tables import AGREEMENT, SCORES, read_table

    paths = {n: p for n, p in recipes(work, names, judge).items() if (work / "data" / n / "scores.parquet").exists()}
    labels = {}
    scored = {n: set(read_table(SCORES, work / "data" / n)["item_id"]) for n in paths}
    common = set.intersection(*scored.values()) if scored else set()
    out = {}
    for name, path in paths.items():
        data = _snapshot(work / "data" / name, work / "report" / name, common)
        recipe = load_recipe(path, check_source=False)
        meta_eval.build(recipe, data, resamples=1000, seed=0)
        row = read_table(AGREEMENT, data).filter(pl.col("evaluator") == "judge").to_dicts()[0]
        scores = read_table(SCORES, data)
        calls = scores.unique("call_id")
        out[name] = {
            "items": row["n_items"],
            "item_ids": sorted(common),
            **{k: row[k] for k in row if k.split("_")[0] in ("kappa", "accuracy", "flip", "position")},
            "n_missing": row["n_missing"],
            "calls": calls.height,
            "failed_calls": calls.filter(pl.col("outcome") != "ok").height,
            "seconds_per_call": calls["latency_s"].mean(),
        }
        labels[name] = _judge_labels(data)
    if len(labels) == 2:
        (a, first), (b, second) = labels.items()
        out["difference"] = {"of": f"{b} - {a}", **kappa_difference(first, second)}
    return out


def _judge_labels(data: Path):
    """(item ids, human label codes, the judge's label codes) of one configuration's snapshot."""
    from builders.tables import CANDIDATES, LABELS, SCORES, read_table
    from metrics.judgments import judgments

    j = judgments(read_table(LABELS, data), read_table(CANDIDATES, data), read_table(SCORES, data), ["judge"])
    return j.items, j.human, j.final[0]


def kappa_difference(first, second, resamples: int = 1000, seed: int = 0) -> dict:
    """Kappa of `second` minus kappa of `first` over the same items, with a paired bootstrap 95%
    interval (each resample draws the same items for both, so what the items share cancels)."""
    import numpy as np

    from metrics import bootstrap
    from metrics.agreement import kappa_from_confusion, pair_codes

    order = {item: i for i, item in enumerate(first[0])}
    at = np.array([order[item] for item in second[0]])
    assert (first[1][at] == second[1]).all(), "the configurations disagree on the human labels"
    w = bootstrap.weights(len(at), resamples, seed)

    def kappas(codes):
        onehot = np.zeros((codes.size, 9), dtype=np.float32)
        onehot[np.arange(codes.size), codes] = 1
        point = kappa_from_confusion(np.bincount(codes, minlength=9).reshape(3, 3).astype(np.float64))
        return float(point), kappa_from_confusion((w @ onehot).astype(np.float64).reshape(-1, 3, 3))

    (k1, r1), (k2, r2) = kappas(pair_codes(first[1][at], first[2][at])), kappas(pair_codes(second[1], second[2]))
    low, high = bootstrap.percentile_interval(r2 - r1)
    return {"kappa": k2 - k1, "kappa_low": low, "kappa_high": high}


def _snapshot(data: Path, dest: Path, item_ids: set[str]) -> Path:
    """The tables `meta-eval` reads, limited to `item_ids` (the rows every configuration has scores
    for: a `run` that is going on may have written a later round's items before its scores)."""
    import polars as pl

    from builders.tables import CANDIDATES, ITEMS, LABELS, SCORES, read_table, write_table

    for table in (ITEMS, CANDIDATES, LABELS, SCORES):
        write_table(table, read_table(table, data).filter(pl.col("item_id").is_in(sorted(item_ids))), dest)
    return dest



def table(results: dict) -> str:
    head = ("| configuration | rows | kappa [95% CI] | accuracy [95% CI] | flip rate [95% CI] | position bias [95% CI] "
            "| failed calls | s / call |")
    lines = [head, "|" + "---|" * 8]
    for name, r in results.items():
        if name == "difference":
            continue
        lines.append(f"| {name} | {r['items']} | {interval(r, 'kappa')} | {interval(r, 'accuracy')} | {interval(r, 'flip_rate')} | "
                     f"{interval(r, 'position_bias')} | {r['failed_calls']} of {r['calls']} | {r['seconds_per_call']:.1f} |")
    if "difference" in results:
        d = results["difference"]
        lines.append(f"\nkappa {d['of']}: {interval(d, 'kappa')} (paired bootstrap over the same rows)")
    return "\n".join(lines)




def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("phase", choices=["run", "report", "save"])
    parser.add_argument("--rows", type=int, default=40, help="MT-Bench turn-2 rows, seeded sample (default: %(default)s)")
    parser.add_argument("--chunk", type=int, default=8, help="rows judged per round, by both configurations")
    parser.add_argument("--source", type=Path, default=None, help="a labelled file to measure instead (with --reference-column)")
    parser.add_argument("--reference-column", default=None, help="measure with and without this column's reference answers")
    parser.add_argument("--judge", default=JUDGE, help="the judge model, a YAML flow mapping (default: %(default)s)")
    parser.add_argument("--work", type=Path, default=WORK, help="recipes and tables (default: %(default)s)")
    parser.add_argument("--cache", type=Path, default=None, help="response cache (default: WORK/llm)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where `report` writes its JSON")
    parser.add_argument("--answers", type=Path, default=ANSWERS, help="the saved answers `save` writes and `run` loads")
    args = parser.parse_args(argv)
    if (args.source is None) != (args.reference_column is None):
        parser.error("--source and --reference-column go together")
    cache_dir = args.cache or args.work / "llm"
    os.environ["FELLOWSHIP_CACHE_DIR"] = str(cache_dir)
    names = configs(args.reference_column)
    if args.phase == "save":
        print(f"saved {save_answers(cache_dir, args.answers)} answers to {args.answers}")
        return
    print(f"loaded {load_answers(cache_dir, args.answers)} saved answers into {cache_dir}", file=sys.stderr)
    if args.phase == "run":
        run(args.work, sample_rows(args.source, args.rows), names, args.judge, args.chunk)
        return
    results = report(args.work, names, args.judge)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))


if __name__ == "__main__":
    main()
