"""Builder: `candidates` -> `debates` (LLM calls): the paper's LLM Debate (ChatEval-style, Tables 9-10).

For each item and each presentation order of its candidates (`judge.panel.orders`) the referees speak in turn,
General Public, Psychologist, Critic, for `rounds` rounds; each sees the question, the answers and
the discussion so far. Every turn is a row. The referees' final scores are asked for by the
`scores` stage, which reads this table. Without a debate in the recipe the table is empty.
"""

from __future__ import annotations

from pathlib import Path

from builders.by_item import Input, by_item, count_items, rows_of_items
from builders.judging import DEBATE, debate_messages
from builders.llm.engine import Engine, every
from builders.prompts import render
from builders.recipe import Recipe
from builders.scores import CANDIDATE_COLUMNS, ITEM_COLUMNS, judged
from builders.strategies import presentation_orders
from builders.tables import CANDIDATES, DEBATES, TableWriter, content_id, read_part

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


async def _item_turns(engine: Engine, recipe: Recipe, item: dict, candidates: list[dict]) -> list[dict]:
    """Every debate of one item (one per presentation order of its candidates), its turns in order."""
    per_debate = await every(_debate(engine, recipe, item, presentation, shown) for presentation, shown in orders(recipe, judged(recipe, candidates)))
    return [turn for turns in per_debate for turn in turns]


async def _run(engine: Engine, recipe: Recipe, data_dir: Path, out: TableWriter) -> None:
    inputs = by_item(data_dir, ITEM_COLUMNS, candidates=Input(CANDIDATES, CANDIDATE_COLUMNS))
    jobs = (_item_turns(engine, recipe, item, rows["candidates"]) for item, rows in inputs)
    async for turns in engine.stream(jobs, total=count_items(data_dir), desc="debates"):
        out.write(turns)


def models(recipe: Recipe) -> list[str]:
    debate = recipe.judge.panel.debate
    return list(debate.referees.values()) if debate else []


def build(recipe: Recipe, data_dir: Path, *, engine: Engine) -> None:
    with TableWriter(DEBATES, data_dir) as out:
        if recipe.judge.panel.debate is not None:
            engine.prepare(models(recipe))
            engine.run(_run(engine, recipe, data_dir, out))


# The Ray executor (builders.ray_executor): each task runs the debates of a block of items.

def block_rows(recipe: Recipe, data_dir: Path, engine: Engine, items: list[dict]) -> list[dict]:
    if recipe.judge.panel.debate is None:
        return []
    engine.prepare(models(recipe))
    ids = [i["item_id"] for i in items]
    candidates = rows_of_items(CANDIDATES, data_dir, ids, CANDIDATE_COLUMNS)
    jobs = [_item_turns(engine, recipe, item, candidates.get(item["item_id"], [])) for item in items]
    per_item = engine.run(engine.gather(jobs, total=len(jobs), desc="debates"))
    return [turn for turns in per_item for turn in turns]


def commit(recipe: Recipe, data_dir: Path, parts: list[Path]) -> None:
    with TableWriter(DEBATES, data_dir) as out:
        for part in parts:
            out.write(read_part(DEBATES, part).to_dicts())
