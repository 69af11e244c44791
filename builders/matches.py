"""Builder: every workflow's picks against every baseline's -> `matches` (LLM calls; empty without `compare`).

For each prompt where both put an answer forward, every panel judge compares the workflow's pick with
the baseline's in one conversation, in both orders unless `judge.panel.orders` is `single`.
Failed calls are rows with null scores and their outcome, within `judge.panel.max_parse_failure_rate`.
"""

from __future__ import annotations

from pathlib import Path

from builders.judging import ask, messages
from builders.llm.engine import Engine
from builders.recipe import Recipe
from builders.scores import check_failure_budget
from builders.strategies import JudgeSpec, presentation_orders
from builders.tables import ITEMS, MATCHES, PICKS, content_id, frame, read_table, write_table

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


def build(recipe: Recipe, data_dir: Path, *, engine: Engine) -> None:
    rows = []
    if recipe.compare:
        prompts = {i["item_id"]: i for i in read_table(ITEMS, data_dir).to_dicts()}
        picks = read_table(PICKS, data_dir)
        by = {(p["entry"], p["item_id"]): p for p in picks.to_dicts()}
        panel = recipe.judge.panel
        orders = range(len(presentation_orders((0, 1), panel.orders)))
        jobs = [
            _match(engine, recipe, judge, prompts[item], by[(w, item)], by[(b, item)], order)
            for w in recipe.compare.workflows
            for b in recipe.compare.baselines
            for item in sorted(prompts)
            if (w, item) in by and (b, item) in by
            for judge in panel.models
            for order in orders
        ]
        engine.prepare(panel.models)
        rows = engine.run(engine.gather(jobs, total=len(jobs), desc="matches"))
    df = frame(MATCHES, rows)
    check_failure_budget(recipe, df, "match calls")  # one row per call
    write_table(MATCHES, df, data_dir)
