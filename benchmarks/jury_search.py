"""How fast is the meta-evaluation's jury search?

Issue target: every combination of 6 judges (63 juries) over MT-Bench's 2,396 items in about a second,
computed from a scores table without any LLM call.

The scores table is synthetic but shaped like a real build of a benchmark recipe: 6 judges, both
presentation orders, one row per answer (6 x 2,396 x 2 x 2 = 57,504 rows), over the vendored MT-Bench
labels. Judge k follows the human label with probability 0.45 + 0.08k, else answers at random, and
prefers Assistant A in 15% of its calls (so some verdicts flip with the order).

Run: python benchmarks/jury_search.py [--resamples 1000] [--repeats 5]
It prints the wall time of each phase (best of the repeats) and the top juries.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import polars as pl

from builders import meta_eval
from builders.loader import load_recipe
from builders.sources import benchmark_path
from builders.tables import content_id
from metrics import bootstrap
from metrics.evaluator import kappa, labels_of
from metrics.judgments import judgments
from metrics.jury import all_juries

JUDGES = [f"judge{k}" for k in range(6)]
RECIPE = """\
name: mt-bench-six
source: {benchmark: mt-bench}
models:
%s
generation: {workflow: import}
judge:
  panel: {models: [%s]}
  mode: jury
export: {}
""" % ("\n".join(f"  {j}: {{provider: fake, model: auto, temperature: 0.{k}}}" for k, j in enumerate(JUDGES)),
       ", ".join(JUDGES))


def tables(seed: int = 0) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    bench = pl.read_parquet(benchmark_path("mt-bench"))
    n = bench.height
    cand_a = [content_id(i, "import", "response_a") for i in bench["item_id"]]
    cand_b = [content_id(i, "import", "response_b") for i in bench["item_id"]]
    labels = pl.DataFrame({
        "item_id": bench["item_id"], "candidate_a": cand_a, "candidate_b": cand_b,
        "model_a": bench["model_a"], "model_b": bench["model_b"], "human_winner": bench["human_winner"],
    })
    candidates = pl.DataFrame({
        "candidate_id": cand_a + cand_b,
        "item_id": bench["item_id"].to_list() * 2,
        "response": bench["response_a"].to_list() + bench["response_b"].to_list(),
    })
    rng = np.random.default_rng(seed)
    human = bench["human_winner"].replace_strict({"model_a": 0, "model_b": 1, "tie": 2}).to_numpy()
    rows = {k: [] for k in ("judge", "item_id", "candidate_id", "presentation", "score", "scale", "outcome")}
    for k, judge in enumerate(JUDGES):
        follows = rng.random(n) < 0.45 + 0.08 * k
        label = np.where(follows, human, rng.integers(0, 3, n))
        for presentation in (0, 1):
            first_bias = rng.random(n) < 0.15
            a = np.where(label == 0, 8, np.where(label == 1, 4, 6))
            b = np.where(label == 1, 8, np.where(label == 0, 4, 6))
            shown_first = b if presentation else a
            shown_first = np.where(first_bias, 10, shown_first)
            a_score = shown_first if presentation == 0 else a
            b_score = shown_first if presentation == 1 else b
            for cands, score in ((cand_a, a_score), (cand_b, b_score)):
                rows["judge"] += [judge] * n
                rows["item_id"] += bench["item_id"].to_list()
                rows["candidate_id"] += cands
                rows["presentation"] += [presentation] * n
                rows["score"] += score.astype(float).tolist()
                rows["scale"] += [10] * n
                rows["outcome"] += ["ok"] * n
    return labels, candidates, pl.DataFrame(rows)


def best_of(repeats: int, fn):
    times, out = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - started)
    return min(times), out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--resamples", type=int, default=bootstrap.RESAMPLES)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    work = Path("/tmp/fellowship-jury-bench")
    work.mkdir(exist_ok=True)
    (work / "mt-bench-six.yaml").write_text(RECIPE)
    (work / "prompts").symlink_to(Path("recipes/prompts").resolve()) if not (work / "prompts").exists() else None
    recipe = load_recipe(work / "mt-bench-six.yaml")
    labels, candidates, scores = tables()
    print(f"scores table: {scores.height:,} rows, {len(JUDGES)} judges, {labels.height:,} items")

    t_labels, j = best_of(args.repeats, lambda: judgments(labels, candidates, scores, JUDGES))
    print(f"scores -> per-judge labels (both orders):           {t_labels * 1000:8.1f} ms")

    juries = all_juries(JUDGES)
    no_resamples = np.zeros((0, j.n), dtype=np.float32)

    def kappas_only():
        return sorted(((float(kappa(j, labels_of(j, m, "majority")[0], no_resamples).value), m) for m in juries),
                      reverse=True)

    t_kappa, ranked = best_of(args.repeats, kappas_only)
    print(f"{len(juries)} juries, kappa only:                        {t_kappa * 1000:8.1f} ms")

    t_full, (rows, model_rows, summary) = best_of(
        args.repeats, lambda: meta_eval.evaluate(recipe, labels, candidates, scores, resamples=args.resamples))
    print(f"{len(rows)} juries, full meta-eval ({args.resamples} resamples, every metric with its 95% interval, "
          f"{len(model_rows)} per-model rows): {t_full * 1000:8.1f} ms")
    print("top 3 juries:")
    for r in rows[:3]:
        print(f"  {r['evaluator']:<40} kappa {r['kappa']:.3f} [{r['kappa_low']:.3f}, {r['kappa_high']:.3f}]")
    assert [r["evaluator"] for r in rows[:1]] == ["+".join(ranked[0][1])]


if __name__ == "__main__":
    main()
