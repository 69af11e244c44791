"""The `import` workflow: answers that already exist in the source (a benchmark's two responses, or
baseline answers shipped with a prompt set) become candidates without any LLM call."""

from __future__ import annotations

import polars as pl

from builders.errors import RecipeError
from builders.no_answer import problem
from builders.recipe import Recipe
from builders.sources import column, read_source, turn_column
from builders.tables import content_id


def imported_candidates(recipe: Recipe, items: pl.DataFrame) -> list[dict]:
    """One candidate row per item and `generation.answers` entry, in the answers' order (iteration 1, 2, ...)."""
    source = read_source(recipe)
    answers = recipe.generation.answers
    writers = [column(source, a.model_column) if a.model_column else None for a in answers]
    later = recipe.source.turns == "all"
    rows = []
    for item_id, source_row in items.select("item_id", "source_row").iter_rows():
        turn = (source["turn"][source_row] or 1) if later else 1
        for k, answer in enumerate(answers):
            text = column(source, turn_column(answer.column, turn))[source_row]
            context = _own_context(source, answer.column, source_row, turn) if turn > 1 else None
            model = answer.model if writers[k] is None else writers[k][source_row]
            for value, what in ((text, answer.column), (model, answer.model_column)):
                if value is None:
                    raise RecipeError(
                        f"{recipe.path}: source row {source_row} of {recipe.source.where()}: column '{what}' is empty "
                        f"(generation.answers[{k}])"
                    )
            rows.append({
                "candidate_id": content_id(item_id, "import", answer.column),
                "item_id": item_id,
                "workflow": "import",
                "generator": str(model),
                "generator_model": str(model),
                "reviewers": [],
                "iteration": k + 1,
                "response": str(text),
                "context": context,
                "problem": problem(str(text)),
                "finish_reason": None,
                "feedback": None,
                "review": None,
                "review_score": None,
                "tokens_in": 0,
                "tokens_out": 0,
                "cost_usd": 0.0,
                "latency_s": 0.0,
                "review_tokens_in": 0,
                "review_tokens_out": 0,
                "review_cost_usd": 0.0,
            })
    return rows


def _own_context(source: pl.DataFrame, answer_column: str, row: int, turn: int) -> list[dict]:
    """The conversation an answer to `turn` follows: every earlier user turn, each followed by the
    same model's own answer to it (MT-Bench's layout: one conversation per model), then this turn."""
    users = source["turns"][row].to_list()
    out = []
    for t in range(1, turn):
        out += [{"role": "user", "content": users[t - 1]},
                {"role": "assistant", "content": str(column(source, turn_column(answer_column, t))[row])}]
    return out + [{"role": "user", "content": users[turn - 1]}]
