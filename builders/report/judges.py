"""What a recipe's own scores say about each judge, without human labels: how often its verdict
flipped with the order, how much it favours the first position, how often the longer answer won,
and how its scores are spread, each ratio with a bootstrap 95% interval over items.

- flip rate: of the items where the judge saw a group of candidates in two or more orders, the
  share where too few orders agreed on its best candidate (`builders.verdicts.judge_view`, the
  rule the verdicts use; `judge.min_order_agreement`);
- position bias: per call showing two or more candidates, the first-shown candidate's score minus
  the mean of the others', as a share of the scale (for two candidates, the `agreement` table's
  first-minus-second); 0 for a judge the order does not sway;
- longer-answer win rate: over every two of an item's candidates that the judge scored differently
  (means over its consistent orders) and whose lengths differ, the share won by the longer one.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import polars as pl

from builders.recipe import Recipe
from builders.scores import position_means
from builders.verdicts import judge_view
from metrics import bootstrap


def _estimate(w: np.ndarray, num: np.ndarray, den: np.ndarray) -> tuple[float | None, float | None, float | None]:
    if den.sum() == 0:
        return None, None, None
    low, high = bootstrap.ratio_interval(w, num, den)
    return float(num.sum() / den.sum()), low, high


def figures(recipe: Recipe, candidates: pl.DataFrame, scores: pl.DataFrame, resamples: int = bootstrap.RESAMPLES
            ) -> list[dict]:
    """One dict per panel judge: calls, failures, flip rate, position bias, longer-answer win rate."""
    items = candidates["item_id"].unique(maintain_order=True).to_list()
    index = {item: i for i, item in enumerate(items)}
    w = bootstrap.weights(len(items), resamples, seed=0)
    length = dict(zip(candidates["candidate_id"], candidates["response"].str.len_chars()))
    out = []
    for judge in recipe.judge.judges:
        mine = scores.filter(pl.col("judge") == judge)
        calls = mine.unique("call_id")
        ok = mine.filter(pl.col("outcome") == "ok").with_columns(share=pl.col("score") / pl.col("scale"))
        flipped, seen = np.zeros(len(items)), np.zeros(len(items))
        first, shown = np.zeros(len(items)), np.zeros(len(items))
        longer, pairs = np.zeros(len(items)), np.zeros(len(items))
        by_item: dict[str, list[list[dict]]] = defaultdict(list)
        for (_, item_id), rows in ok.group_by("call_id", "item_id", maintain_order=True):
            call = rows.select("candidate_id", "score", "position", "share").to_dicts()
            by_item[item_id].append(call)
            if len(call) >= 2:
                lead = [r["share"] for r in call if r["position"] == 0]
                rest = [r["share"] for r in call if r["position"] != 0]
                if lead and rest:
                    first[index[item_id]] += lead[0] - sum(rest) / len(rest)
                    shown[index[item_id]] += 1
        for item_id, calls_of_item in by_item.items():
            i = index[item_id]
            view = judge_view(calls_of_item, recipe.judge)
            if any(len(bests) >= 2 for _, bests in view.orders):
                seen[i], flipped[i] = 1, float(view.flipped)
            s = view.scores
            for a in s:
                for b in s:
                    if a < b and s[a] != s[b] and length[a] != length[b]:
                        pairs[i] += 1
                        longer[i] += (s[a] > s[b]) == (length[a] > length[b])
        positions = [{"position": k, "mean": m} for k, m in enumerate(position_means(mine).get(judge, []))]
        out.append({
            "judge": judge,
            "judge_model": mine["judge_model"][0] if mine.height else None,
            "calls": calls.height,
            "failed": int((calls["outcome"] != "ok").sum()),
            "flip_rate": _estimate(w, flipped, seen),
            "position_bias": _estimate(w, first, shown),
            "longer_wins": _estimate(w, longer, pairs),
            "by_position": positions,
        })
    return out


def score_bins(scores: pl.DataFrame, bins: int = 20) -> list[dict]:
    """Histogram data per judge: counts of score / scale in `bins` equal bins of [0, 1]."""
    ok = scores.filter(pl.col("outcome") == "ok")
    if ok.height == 0:
        return []
    binned = ok.with_columns(
        bin=((pl.col("score") / pl.col("scale") * bins).floor().clip(0, bins - 1) / bins).round(4)
    ).group_by("judge", "bin").agg(pl.len().alias("count")).sort("judge", "bin")
    return [{**r, "bin_end": round(r["bin"] + 1 / bins, 4)} for r in binned.to_dicts()]


def by_iteration(candidates: pl.DataFrame, scores: pl.DataFrame) -> list[dict]:
    """Per judge and candidate iteration: quartiles and mean of score / scale."""
    ok = scores.filter(pl.col("outcome") == "ok").join(candidates.select("candidate_id", "iteration"), on="candidate_id")
    if ok.height == 0:
        return []
    share = pl.col("score") / pl.col("scale")
    return (
        ok.group_by("judge", "iteration")
        .agg(share.mean().alias("mean"), share.quantile(0.25).alias("q1"), share.median().alias("median"),
             share.quantile(0.75).alias("q3"), pl.len().alias("n"))
        .sort("judge", "iteration").to_dicts()
    )

