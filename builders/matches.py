"""Builder: every workflow's picks against every baseline's -> `matches` (LLM calls; empty without `compare`).

For each prompt where both put an answer forward, every panel judge compares the workflow's pick with
the baseline's in one conversation, in both orders unless `judge.panel.orders` is `single`.
Failed calls are rows with null scores and their outcome, within `judge.panel.max_parse_failure_rate`.
"""

from __future__ import annotations

from collections.abc import Awaitable
from pathlib import Path

from builders.by_item import Input, by_item, count_items
from builders.judging import ask, messages
from builders.failure_budget import BudgetedWriter, Tally
from builders.llm.engine import Engine, every
from builders.recipe import Recipe
from builders.scores import ITEM_COLUMNS
from builders.strategies import JudgeSpec, presentation_orders
from builders.tables import MATCHES, PICKS, content_id

READS = ("items", "picks")
WRITES = ("matches",)


async def _match(engine: Engine, recipe: Recipe, judge: str, item: dict, mine: dict, base: dict, order: int) -> dict:
    shown = [mine["response"], base["response"]][:: 1 if order == 0 else -1]
    conversation = messages(recipe, item["prompt"], shown, histories=[item["messages"]] * 2, reference=item["reference"])
    answer = await ask(engine, JudgeSpec.of(recipe.judge.panel), judge, conversation, 2)
    scores = answer.judgment.scores if answer.ok else [None, None]
    ours, theirs = (scores[0], scores[1]) if order == 0 else (scores[1], scores[0])
    pair_id = content_id(mine["item_id"], mine["entry"], base["entry"])
    spec = recipe.models[judge]
    return {
        "match_call_id": content_id(judge, pair_id, order),
        "pair_id": pair_id,
        "item_id": mine["item_id"],
        "workflow": mine["entry"],
        "baseline": base["entry"],
        "candidate_id": mine["candidate_id"],
        "baseline_candidate_id": base["candidate_id"],
        "judge": judge,
        "judge_model": f"{spec.provider}/{spec.model}",
        "presentation": order,
        "candidate_score": ours,
        "baseline_score": theirs,
        "outcome": answer.outcome,
        "raw": answer.raw,
        "parse_error": answer.error,
        "attempts": answer.attempts,
        **answer.usage,
    }


def _item_jobs(engine: Engine, recipe: Recipe, item: dict, picks: list[dict]) -> list[Awaitable[dict]]:
    """The match calls of one prompt: every workflow's pick against every baseline's, by every judge, in every order."""
    by = {p["entry"]: p for p in picks}
    panel = recipe.judge.panel
    orders = range(len(presentation_orders((0, 1), panel.orders)))
    return [
        _match(engine, recipe, judge, item, by[w], by[b], order)
        for w in recipe.compare.workflows
        for b in recipe.compare.baselines
        if w in by and b in by
        for judge in panel.models
        for order in orders
    ]


async def _run(engine: Engine, recipe: Recipe, data_dir: Path, out: BudgetedWriter) -> None:
    inputs = by_item(data_dir, ITEM_COLUMNS, picks=Input(PICKS, ["entry", "item_id", "candidate_id", "response"]))
    jobs = (every(_item_jobs(engine, recipe, item, rows["picks"])) for item, rows in inputs)
    async for rows in engine.stream(jobs, total=count_items(data_dir), desc="matches"):
        out.write(rows)


def build(recipe: Recipe, data_dir: Path, *, engine: Engine) -> None:
    with BudgetedWriter(MATCHES, recipe, data_dir, what="match calls", count=Tally.add_rows) as out:
        if recipe.compare:
            engine.prepare(recipe.judge.panel.models)
            engine.run(_run(engine, recipe, data_dir, out))
