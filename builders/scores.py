"""Builder: `candidates` -> `scores` (LLM calls): the judge scores all of a prompt's candidates at once.

An answer that cannot be parsed is asked for once more in the required format (as the paper does);
if it still cannot be parsed, each candidate gets a row with `score = null` and a `parse_error`.
The stage fails, writing nothing, only when unparseable calls exceed `judge.max_parse_failure_rate`.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from builders.errors import BuildError
from builders.judging import combined_grammar, combined_messages, parse_judgment, reask_message
from builders.llm.engine import Engine
from builders.recipe import Recipe
from builders.tables import CANDIDATES, ITEMS, SCORES, content_id, frame, read_table, write_table

READS = ("items", "candidates")
WRITES = ("scores",)


async def _judge_item(engine: Engine, recipe: Recipe, judge: str, item: dict, candidates: list[dict]) -> list[dict]:
    j = recipe.judge
    n = len(candidates)
    messages = combined_messages(recipe, item["prompt"], [c["response"] for c in candidates])
    grammar = combined_grammar(n, j.scale) if engine.spec(judge).provider == "local" else None
    first = await engine.chat(judge, messages, grammar=grammar)
    responses = [first]
    judgment = parse_judgment(first.text, strategy=j.strategy, scale=j.scale, n=n)
    if not judgment.ok:
        followup = messages + [{"role": "assistant", "content": first.text}, reask_message(n, j.scale)]
        responses.append(await engine.chat(judge, followup, grammar=grammar))
        judgment = parse_judgment(responses[-1].text, strategy=j.strategy, scale=j.scale, n=n)
    spec = recipe.models[judge]
    call_id = content_id("combined", judge, j.scale, [c["candidate_id"] for c in candidates])
    usage = {
        "tokens_in": sum(r.tokens_in for r in responses),
        "tokens_out": sum(r.tokens_out for r in responses),
        "cost_usd": sum(r.cost_usd for r in responses),
        "latency_s": sum(r.latency_s for r in responses),
        "cached": all(r.cached for r in responses),
    }
    return [
        {
            "score_id": content_id(call_id, c["candidate_id"]),
            "call_id": call_id,
            "item_id": item["item_id"],
            "candidate_id": c["candidate_id"],
            "judge": judge,
            "judge_model": f"{spec.provider}/{spec.model}",
            "strategy": j.strategy,
            "scale": j.scale,
            "position": position,
            "score": judgment.scores[position] if judgment.ok else None,
            "raw": responses[-1].text,
            "parse_error": judgment.error,
            "attempts": len(responses),
            **usage,
        }
        for position, c in enumerate(candidates)
    ]


async def _score(engine: Engine, recipe: Recipe, items: pl.DataFrame, candidates: pl.DataFrame) -> list[dict]:
    by_item = {k[0]: g.sort("iteration").to_dicts() for k, g in candidates.group_by("item_id")}
    jobs = [
        _judge_item(engine, recipe, judge, item, by_item[item["item_id"]])
        for item in items.to_dicts()
        if item["item_id"] in by_item
        for judge in recipe.judge.models
    ]
    per_call = await engine.gather(jobs, total=len(jobs), desc="scores")
    return [row for rows in per_call for row in rows]


def check_failure_budget(recipe: Recipe, scores: pl.DataFrame) -> None:
    calls = scores.unique("call_id")
    failed = calls.filter(pl.col("parse_error").is_not_null())
    if calls.height and failed.height / calls.height > recipe.judge.max_parse_failure_rate:
        examples = ", ".join(failed["item_id"].head(3))
        reasons = failed["parse_error"].value_counts(sort=True)["parse_error"].head(3).to_list()
        raise BuildError(
            f"{recipe.path}: judge.max_parse_failure_rate: {failed.height} of {calls.height} judge calls unparseable "
            f"(> {recipe.judge.max_parse_failure_rate:.0%}); items {examples}; reasons: {'; '.join(reasons)}"
        )


def build(recipe: Recipe, data_dir: Path, *, engine: Engine) -> None:
    items = read_table(ITEMS, data_dir)
    candidates = read_table(CANDIDATES, data_dir)
    engine.prepare(recipe.judge.models)
    df = frame(SCORES, engine.run(_score(engine, recipe, items, candidates)))
    check_failure_budget(recipe, df)
    write_table(SCORES, df, data_dir)
