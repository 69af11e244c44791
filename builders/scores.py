"""Builder: `candidates` -> `scores` (LLM calls): every panel judge judges every item.

The strategy (`builders.strategies`) says which candidates one call shows: a pair (`direct`), one
(`independent`) or all of the item's (`combined`). `judge.panel.orders` says in which orders a group
of two or more is shown: `rotations` (default) shows each candidate once in every position, so a
judge's constant preference for a place cancels out in the candidate's mean; `reverse` adds the
reversed list; `single` one order. Debate referees give their final scores after each debate in the
`debates` table. A candidate that is no answer (`candidates.problem`) is not shown, except in a
human-labelled benchmark, whose pairs are judged as the humans saw them.

Each call gives one row per candidate it showed, with its score read as `score_mode` says. An answer
that cannot be read is asked for once more in the required format (as the paper does); if it still
cannot be, or the provider failed after its retries, the rows carry `score = null`, the typed
`outcome` and the reason. The stage fails, writing nothing, only when failed calls exceed
`judge.panel.max_parse_failure_rate`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from builders.errors import BuildError
from builders.judging import ask, debate_messages, final_instruction, messages
from builders.llm.engine import Engine
from builders.recipe import Recipe
from builders.strategies import JudgeSpec, presentation_orders
from builders.tables import CANDIDATES, DEBATES, ITEMS, SCORES, content_id, frame, read_parts, read_rows_of, read_table, write_table

READS = ("items", "candidates", "debates")
WRITES = ("scores",)


@dataclass(frozen=True)
class Call:
    """One judge call: what it shows, in which order."""

    judge: str  # the `judge` column: the model's recipe name, or a debate referee's role
    model: str  # the recipe model called
    item: dict
    shown: tuple[dict, ...]  # candidate rows in presentation order (A, B, ...)
    presentation: int  # 0: the first order; k: the k-th other order (a rotation, or the reversed list)
    turns: tuple[dict, ...] | None = None  # the debate before this referee's final scores

    @property
    def call_id(self) -> str:
        return content_id(self.judge, [c["candidate_id"] for c in self.shown])


def _debate_calls(recipe: Recipe, items: list[dict], by_item: dict[str, list[dict]], debates: pl.DataFrame) -> list[Call]:
    referees = recipe.judge.panel.debate.referees
    prompts = {i["item_id"]: i for i in items}
    calls = []
    for (_,), turns in debates.sort("turn").group_by("debate_id", maintain_order=True):
        first = turns.row(0, named=True)
        candidates = {c["candidate_id"]: c for c in by_item[first["item_id"]]}
        shown = tuple(candidates[cid] for cid in first["candidate_ids"])
        history = tuple(turns.to_dicts())
        for role in recipe.judge.panel.debate.roles():
            calls.append(Call(role, referees[role], prompts[first["item_id"]], shown, first["presentation"], history))
    return calls


def plan(recipe: Recipe, items: list[dict], by_item: dict[str, list[dict]], debates: pl.DataFrame) -> list[Call]:
    """Every judge call the recipe needs, in a stable order."""
    panel = recipe.judge.panel
    if panel.debate:
        return _debate_calls(recipe, items, by_item, debates)
    strategy = JudgeSpec.of(panel).strategy
    calls = []
    for item in items:
        groups = strategy.groups(by_item.get(item["item_id"], []))
        for judge in panel.models:
            for group in groups:
                for presentation, shown in enumerate(presentation_orders(group, panel.orders)):
                    calls.append(Call(judge, judge, item, shown, presentation))
    return calls


async def _judge(engine: Engine, recipe: Recipe, spec: JudgeSpec, call: Call) -> list[dict]:
    n = len(call.shown)
    responses_shown = [c["response"] for c in call.shown]
    histories = [c["context"] or call.item["messages"] for c in call.shown]
    if call.turns is None:
        conversation = messages(recipe, call.item["prompt"], responses_shown, histories=histories,
                                reference=call.item["reference"])
    else:
        conversation = debate_messages(recipe, call.item["prompt"], responses_shown, list(call.turns),
                                       final_instruction(recipe, call.judge, n), histories=histories,
                                       reference=call.item["reference"])
    answer = await ask(engine, spec, call.model, conversation, n)
    judgment, ok = answer.judgment, answer.ok
    model = recipe.models[call.model]
    return [
        {
            "score_id": content_id(call.call_id, c["candidate_id"]),
            "call_id": call.call_id,
            "item_id": call.item["item_id"],
            "candidate_id": c["candidate_id"],
            "judge": call.judge,
            "judge_model": f"{model.provider}/{model.model}",
            "strategy": "debate" if call.turns is not None else spec.strategy.name,
            "scale": spec.scale,
            "presentation": call.presentation,
            "is_swapped": call.presentation != 0,
            "position": position,
            "score": judgment.scores[position] if ok else None,
            "score_mode": spec.score_mode,
            "score_mass": judgment.mass[position] if ok and judgment.mass else None,
            "pick": judgment.pick if ok else None,
            "outcome": answer.outcome,
            "raw": answer.raw,
            "parse_error": answer.error,
            "attempts": answer.attempts,
            **answer.usage,
        }
        for position, c in enumerate(call.shown)
    ]


def judged_candidates(recipe: Recipe, candidates: pl.DataFrame) -> dict[str, list[dict]]:
    """item -> the candidates its judges see, by iteration: answers only, unless the source is a
    human-labelled benchmark (its pairs are judged as the humans saw them)."""
    if not recipe.source.labelled:
        candidates = candidates.filter(pl.col("problem").is_null())
    return {k[0]: g.sort("iteration").to_dicts() for k, g in candidates.group_by("item_id")}


async def _score(engine: Engine, recipe: Recipe, items: pl.DataFrame, candidates: pl.DataFrame,
                 debates: pl.DataFrame) -> list[dict]:
    calls = plan(recipe, items.to_dicts(), judged_candidates(recipe, candidates), debates)
    spec = JudgeSpec.of(recipe.judge.panel)
    per_call = await engine.gather((_judge(engine, recipe, spec, c) for c in calls), total=len(calls), desc="scores")
    return [row for rows in per_call for row in rows]


def check_failure_budget(recipe: Recipe, calls: pl.DataFrame, what: str = "judge calls") -> None:
    """Fail, naming counts, outcomes, items and reasons, when more than the recipe's share of `calls`
    (one row per call: outcome, item_id, parse_error) failed."""
    failed = calls.filter(pl.col("outcome") != "ok")
    budget = recipe.judge.panel.max_parse_failure_rate
    if calls.height and failed.height / calls.height > budget:
        examples = ", ".join(failed["item_id"].unique(maintain_order=True).head(3))
        reasons = failed["parse_error"].value_counts(sort=True)["parse_error"].head(3).to_list()
        outcomes = ", ".join(f"{o} {n}" for o, n in failed["outcome"].value_counts(sort=True).iter_rows())
        raise BuildError(
            f"{recipe.path}: judge.panel.max_parse_failure_rate: {failed.height} of {calls.height} {what} failed "
            f"({outcomes}; > {budget:.0%}); items {examples}; reasons: {'; '.join(reasons)}"
        )


def position_means(scores: pl.DataFrame) -> dict[str, list[float]]:
    """judge -> its mean score (as a share of the scale) in each position of calls showing several
    candidates: with every candidate in every position, unequal means are the judge's position bias."""
    shown = scores.filter(pl.col("outcome") == "ok", pl.col("strategy") != "independent")
    by = shown.group_by("judge", "position").agg((pl.col("score") / pl.col("scale")).mean().alias("mean")).sort("position")
    return {judge: group["mean"].to_list() for (judge,), group in by.group_by("judge", maintain_order=True)}


def models(recipe: Recipe) -> list[str]:
    panel = recipe.judge.panel
    return list(panel.debate.referees.values()) if panel.debate else list(panel.models)


def build(recipe: Recipe, data_dir: Path, *, engine: Engine) -> None:
    items = read_table(ITEMS, data_dir)
    candidates = read_table(CANDIDATES, data_dir)
    debates = read_table(DEBATES, data_dir)
    engine.prepare(models(recipe))
    _write(recipe, data_dir, frame(SCORES, engine.run(_score(engine, recipe, items, candidates, debates))))


def _write(recipe: Recipe, data_dir: Path, df: pl.DataFrame) -> None:
    check_failure_budget(recipe, df.unique("call_id"))
    write_table(SCORES, df, data_dir)
    for judge, means in sorted(position_means(df).items()):
        places = ", ".join(f"{chr(65 + i)} {m:.2f}" for i, m in enumerate(means))
        print(f"{recipe.name}: scores: {judge}: mean score by position {places} (share of the scale)", file=sys.stderr)


# The Ray executor (builders.ray_executor): each task judges a block of items; the parts are
# committed as `build` writes the table (the failure budget over every call, sorted by key).

def block_rows(recipe: Recipe, data_dir: Path, engine: Engine, items: list[dict]) -> list[dict]:
    ids = [i["item_id"] for i in items]
    engine.prepare(models(recipe))
    return engine.run(_score(engine, recipe, frame(ITEMS, items), read_rows_of(CANDIDATES, data_dir, ids),
                             read_rows_of(DEBATES, data_dir, ids)))


def commit(recipe: Recipe, data_dir: Path, parts: list[Path]) -> None:
    _write(recipe, data_dir, read_parts(SCORES, parts))
