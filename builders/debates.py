"""Builder: `candidates` -> `debates` (LLM calls): the paper's LLM Debate (ChatEval-style, Tables 9-10).

For each item and each presentation order of its candidates (`judge.panel.orders`) the referees speak in turn,
General Public, Psychologist, Critic, for `rounds` rounds; each sees the question, the answers and
the discussion so far. Every turn is a row. The referees' final scores are asked for by the
`scores` stage, which reads this table. Without a debate in the recipe the table is empty.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from builders.judging import DEBATE, debate_messages
from builders.llm.engine import Engine
from builders.prompts import render
from builders.recipe import Recipe
from builders.scores import judged_candidates
from builders.strategies import presentation_orders
from builders.tables import CANDIDATES, DEBATES, ITEMS, content_id, frame, read_parts, read_rows_of, read_table, write_table

READS = ("items", "candidates")
WRITES = ("debates",)

def orders(recipe: Recipe, candidates: list[dict]) -> list[tuple[int, list[dict]]]:
    return list(enumerate(map(list, presentation_orders(tuple(candidates), recipe.judge.panel.orders))))


async def _debate(engine: Engine, recipe: Recipe, item: dict, presentation: int, shown: list[dict]) -> list[dict]:
    debate = recipe.judge.panel.debate
    ids = [c["candidate_id"] for c in shown]
    debate_id = content_id("debate", item["item_id"], ids)
    turns: list[dict] = []
    for round_ in range(1, debate.rounds + 1):
        for role in debate.roles():
            instruction = render(recipe, f"{DEBATE}.role_prompts.{role}")
            conversation = debate_messages(recipe, item["prompt"], [c["response"] for c in shown], turns, instruction,
                                           histories=[c["context"] or item["messages"] for c in shown],
                                           reference=item["reference"])
            r = await engine.chat(debate.referees[role], conversation.messages)
            turns.append({
                "turn_id": content_id(debate_id, len(turns)),
                "debate_id": debate_id,
                "item_id": item["item_id"],
                "candidate_ids": ids,
                "presentation": presentation,
                "round": round_,
                "turn": len(turns),
                "role": role,
                "referee_model": debate.referees[role],
                "message": r.text.strip(),
                "tokens_in": r.tokens_in,
                "tokens_out": r.tokens_out,
                "cost_usd": r.cost_usd,
                "latency_s": r.latency_s,
            })
    return turns


async def _run(engine: Engine, recipe: Recipe, items: pl.DataFrame, candidates: pl.DataFrame) -> list[dict]:
    by_item = judged_candidates(recipe, candidates)
    jobs = [
        _debate(engine, recipe, item, presentation, shown)
        for item in items.to_dicts()
        for presentation, shown in orders(recipe, by_item.get(item["item_id"], []))
    ]
    per_debate = await engine.gather(jobs, total=len(jobs), desc="debates")
    return [turn for turns in per_debate for turn in turns]


def models(recipe: Recipe) -> list[str]:
    debate = recipe.judge.panel.debate
    return list(debate.referees.values()) if debate else []


def build(recipe: Recipe, data_dir: Path, *, engine: Engine) -> None:
    rows = []
    if recipe.judge.panel.debate is not None:
        engine.prepare(models(recipe))
        rows = engine.run(_run(engine, recipe, read_table(ITEMS, data_dir), read_table(CANDIDATES, data_dir)))
    write_table(DEBATES, frame(DEBATES, rows), data_dir)


# The Ray executor (builders.ray_executor): each task runs the debates of a block of items.

def block_rows(recipe: Recipe, data_dir: Path, engine: Engine, items: list[dict]) -> list[dict]:
    if recipe.judge.panel.debate is None:
        return []
    engine.prepare(models(recipe))
    candidates = read_rows_of(CANDIDATES, data_dir, [i["item_id"] for i in items])
    return engine.run(_run(engine, recipe, frame(ITEMS, items), candidates))


def commit(recipe: Recipe, data_dir: Path, parts: list[Path]) -> None:
    write_table(DEBATES, read_parts(DEBATES, parts), data_dir)
