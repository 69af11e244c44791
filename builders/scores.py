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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from builders.by_item import Input, by_item, count_items, rows_of_items
from builders.failure_budget import BudgetedWriter, Tally
from builders.judging import ask, debate_messages, final_instruction, messages
from builders.llm.engine import Engine, every
from builders.recipe import Recipe
from builders.strategies import JudgeSpec, presentation_orders
from builders.tables import CANDIDATES, DEBATES, SCORES, content_id, read_part

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


ITEM_COLUMNS = ["item_id", "prompt", "messages", "reference"]
CANDIDATE_COLUMNS = ["candidate_id", "item_id", "iteration", "response", "context", "problem"]


def judged(recipe: Recipe, candidates: list[dict]) -> list[dict]:
    """The candidates of one item its judges see, by iteration: answers only, unless the source is a
    human-labelled benchmark (its pairs are judged as the humans saw them)."""
    shown = [c for c in candidates if recipe.source.labelled or c["problem"] is None]
    return sorted(shown, key=lambda c: c["iteration"])


def _debate_calls(recipe: Recipe, item: dict, candidates: list[dict], turns: list[dict]) -> list[Call]:
    referees = recipe.judge.panel.debate.referees
    by_id = {c["candidate_id"]: c for c in candidates}
    debates: dict[str, list[dict]] = {}
    for turn in turns:
        debates.setdefault(turn["debate_id"], []).append(turn)
    calls = []
    for debate in debates.values():
        history = tuple(sorted(debate, key=lambda t: t["turn"]))
        first = history[0]
        shown = tuple(by_id[cid] for cid in first["candidate_ids"])
        for role in recipe.judge.panel.debate.roles():
            calls.append(Call(role, referees[role], item, shown, first["presentation"], history))
    return calls


def item_calls(recipe: Recipe, item: dict, candidates: list[dict], turns: list[dict]) -> list[Call]:
    """Every judge call one item needs (its candidates, and its debates' turns), in a stable order."""
    panel = recipe.judge.panel
    if panel.debate:
        return _debate_calls(recipe, item, candidates, turns)
    groups = JudgeSpec.of(panel).strategy.groups(judged(recipe, candidates))
    return [
        Call(judge, judge, item, shown, presentation)
        for judge in panel.models
        for group in groups
        for presentation, shown in enumerate(presentation_orders(group, panel.orders))
    ]


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


async def _item_rows(engine: Engine, recipe: Recipe, spec: JudgeSpec, calls: list[Call]) -> list[dict]:
    return [row for rows in await every(_judge(engine, recipe, spec, c) for c in calls) for row in rows]


def position_means(scores: pl.DataFrame) -> dict[str, list[float]]:
    """judge -> its mean score (as a share of the scale) in each position of calls showing several
    candidates: with every candidate in every position, unequal means are the judge's position bias."""
    shown = scores.filter(pl.col("outcome") == "ok", pl.col("strategy") != "independent")
    by = shown.group_by("judge", "position").agg((pl.col("score") / pl.col("scale")).mean().alias("mean")).sort("position")
    return {judge: group["mean"].to_list() for (judge,), group in by.group_by("judge", maintain_order=True)}


def models(recipe: Recipe) -> list[str]:
    panel = recipe.judge.panel
    return list(panel.debate.referees.values()) if panel.debate else list(panel.models)


def _inputs(data_dir: Path) -> Iterator[tuple[dict, dict[str, list[dict]]]]:
    return by_item(data_dir, ITEM_COLUMNS, candidates=Input(CANDIDATES, CANDIDATE_COLUMNS), debates=DEBATES)


async def _score(engine: Engine, recipe: Recipe, data_dir: Path, out: "ScoresWriter") -> None:
    spec = JudgeSpec.of(recipe.judge.panel)
    jobs = (
        _item_rows(engine, recipe, spec, item_calls(recipe, item, rows["candidates"], rows["debates"]))
        for item, rows in _inputs(data_dir)
    )
    async for rows in engine.stream(jobs, total=count_items(data_dir), desc="scores"):
        out.write(rows)


class ScoresWriter(BudgetedWriter):
    """The scores table: each judge's mean score by position is printed once it is written."""

    def __init__(self, recipe: Recipe, data_dir: Path):
        super().__init__(SCORES, recipe, data_dir, what="judge calls", count=Tally.add_scores)

    def close(self) -> Path:
        path = super().close()
        for judge, means in sorted(self.tally.position_means().items()):
            places = ", ".join(f"{chr(65 + i)} {m:.2f}" for i, m in enumerate(means))
            print(f"{self.recipe.name}: scores: {judge}: mean score by position {places} (share of the scale)", file=sys.stderr)
        return path


def build(recipe: Recipe, data_dir: Path, *, engine: Engine) -> None:
    engine.prepare(models(recipe))
    with ScoresWriter(recipe, data_dir) as out:
        engine.run(_score(engine, recipe, data_dir, out))


# The Ray executor (builders.ray_executor): each task judges a block of items; the parts are
# committed as `build` writes the table (the failure budget over every call, sorted by key).

def block_rows(recipe: Recipe, data_dir: Path, engine: Engine, items: list[dict]) -> list[dict]:
    ids = [i["item_id"] for i in items]
    engine.prepare(models(recipe))
    candidates = rows_of_items(CANDIDATES, data_dir, ids, CANDIDATE_COLUMNS)
    turns = rows_of_items(DEBATES, data_dir, ids)
    spec = JudgeSpec.of(recipe.judge.panel)
    jobs = [
        _item_rows(engine, recipe, spec, item_calls(recipe, item, candidates.get(item["item_id"], []), turns.get(item["item_id"], [])))
        for item in items
    ]
    per_item = engine.run(engine.gather(jobs, total=len(jobs), desc="scores"))
    return [row for rows in per_item for row in rows]


def commit(recipe: Recipe, data_dir: Path, parts: list[Path]) -> None:
    with ScoresWriter(recipe, data_dir) as out:
        for part in parts:
            out.write(read_part(SCORES, part).to_dicts())
