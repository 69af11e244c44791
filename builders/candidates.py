"""Builder: `items` -> `candidates`, through the recipe's generation workflow (LLM calls), or
imported from the source (`workflow: import`, no calls)."""

from __future__ import annotations

from pathlib import Path

from builders.generation import WORKFLOWS, Answer
from builders.imported import imported_candidates
from builders.llm.engine import Engine
from builders.no_answer import problem
from builders.recipe import Recipe
from builders.tables import CANDIDATES, ITEMS, TableWriter, content_id, frame, read_part, read_table, scan_table, write_table

READS = ("items",)
WRITES = ("candidates",)


def _row(recipe: Recipe, item_id: str, answer: Answer) -> dict:
    g = recipe.generation
    spec = recipe.models[g.generator]
    r, reviews = answer.response, answer.reviews
    scores = [rv.score for rv in reviews if rv.score is not None]
    return {
        "candidate_id": content_id(item_id, g.workflow, g.generator, g.reviewers, answer.iteration),
        "item_id": item_id,
        "workflow": g.workflow,
        "generator": g.generator,
        "generator_model": f"{spec.provider}/{spec.model}",
        "reviewers": list(g.reviewers),
        "iteration": answer.iteration,
        "response": r.text,
        "context": None,  # it answers the item's own conversation
        "problem": problem(r.text, r.finish_reason, drop_truncated=g.drop_truncated),
        "finish_reason": r.finish_reason,
        "feedback": answer.feedback,
        "review": "\n\n".join(rv.text for rv in reviews) if reviews else None,
        "review_score": sum(scores) / len(scores) if scores else None,
        "tokens_in": r.tokens_in,
        "tokens_out": r.tokens_out,
        "cost_usd": r.cost_usd,
        "latency_s": r.latency_s,
        "review_tokens_in": sum(rv.response.tokens_in for rv in reviews),
        "review_tokens_out": sum(rv.response.tokens_out for rv in reviews),
        "review_cost_usd": sum(rv.response.cost_usd for rv in reviews),
    }


async def _item_rows(engine: Engine, recipe: Recipe, item: dict) -> list[dict]:
    answers = await WORKFLOWS[recipe.generation.workflow](engine, recipe, item["messages"])
    return [_row(recipe, item["item_id"], a) for a in answers]


async def _generate(engine: Engine, recipe: Recipe, data_dir: Path, out: TableWriter) -> None:
    """Every item's answers, streamed to `out` as each item is done (memory stays flat in the items)."""
    total, items = scan_table(ITEMS, data_dir, columns=["item_id", "messages"])
    async for rows in engine.stream((_item_rows(engine, recipe, i) for i in items), total=total, desc="candidates"):
        out.write(rows)


def models(recipe: Recipe) -> list[str]:
    g = recipe.generation
    return [g.generator, *g.reviewers] if g.workflow != "import" else []


def build(recipe: Recipe, data_dir: Path, *, engine: Engine) -> None:
    g = recipe.generation
    if g.workflow == "import":
        rows = imported_candidates(recipe, read_table(ITEMS, data_dir))
        write_table(CANDIDATES, frame(CANDIDATES, rows), data_dir)
        return
    engine.prepare(models(recipe))
    with TableWriter(CANDIDATES, data_dir) as out:
        engine.run(_generate(engine, recipe, data_dir, out))


# The Ray executor (builders.ray_executor): each task answers a block of items; the parts are
# committed in the items' order, so the table is the one `build` writes.

def block_rows(recipe: Recipe, data_dir: Path, engine: Engine, items: list[dict]) -> list[dict]:
    """The rows of `items` (a block of the items table, in its order)."""
    engine.prepare(models(recipe))
    per_item = engine.run(engine.gather((_item_rows(engine, recipe, i) for i in items), total=len(items), desc="candidates"))
    return [row for rows in per_item for row in rows]


def commit(recipe: Recipe, data_dir: Path, parts: list[Path]) -> None:
    """The parts (in the items' order) as the table."""
    with TableWriter(CANDIDATES, data_dir) as out:
        for part in parts:
            out.write(read_part(CANDIDATES, part).to_dicts())
