"""Builder: `candidates` -> `scores` (LLM calls): every panel judge judges every item.

Calls per item and judge, by strategy:
- combined: all candidates in one conversation, and again in reverse order when `swap` is on;
- independent: one conversation per candidate;
- direct: one conversation per pair of candidates, and again with A and B swapped when `swap` is on;
- debate: after each debate in the `debates` table, every referee gives its final scores.

Each call gives one row per candidate it showed. An answer that cannot be parsed is asked for once
more in the required format (as the paper does); if it still cannot be parsed, or the provider
failed after its retries, the rows carry `score = null`, the typed `outcome` and the reason. The
stage fails, writing nothing, only when failed calls exceed `judge.panel.max_parse_failure_rate`.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import polars as pl

from builders.errors import BuildError, ProviderError
from builders.judging import (
    Judgment, debate_messages, messages, output_format, parse_judgment, reask_message, role_name, score_format,
)
from builders.prompts import render
from builders.llm.engine import Engine
from builders.recipe import Recipe
from builders.tables import CANDIDATES, DEBATES, ITEMS, SCORES, content_id, frame, read_table, write_table

READS = ("items", "candidates", "debates")
WRITES = ("scores",)


@dataclass(frozen=True)
class Call:
    """One judge call: what it shows, in which order."""

    judge: str  # the `judge` column: the model's recipe name, or a debate referee's role
    model: str  # the recipe model called
    item: dict
    shown: tuple[dict, ...]  # candidate rows in presentation order (A, B, ...)
    presentation: int  # 0: first order; 1: the same candidates with the order swapped
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
    calls = []
    for item in items:
        candidates = by_item.get(item["item_id"], [])
        if panel.strategy == "independent":
            groups = [(c,) for c in candidates]
        elif panel.strategy == "direct":
            groups = list(combinations(candidates, 2))
        else:  # one candidate alone has nothing to be compared with (a single-answer contender in `compare`)
            groups = [tuple(candidates)] if len(candidates) > 1 else []
        for judge in panel.models:
            for group in groups:
                calls.append(Call(judge, judge, item, group, 0))
                if panel.swap and len(group) > 1:
                    calls.append(Call(judge, judge, item, tuple(reversed(group)), 1))
    return calls


@dataclass(frozen=True)
class Answer:
    """A judge's final answer to one call: the parsed judgment (None after an api_error), its outcome,
    why it failed, the raw last answer, how many answers it took, and the call's usage columns."""

    judgment: Judgment | None
    outcome: str
    error: str | None
    raw: str
    attempts: int
    usage: dict

    @property
    def ok(self) -> bool:
        return self.judgment is not None and self.judgment.ok


async def ask(engine: Engine, recipe: Recipe, model: str, conversation: list[dict], n: int) -> Answer:
    """One judge call over `n` responses; an unreadable verdict is asked for once more in the format
    (as the paper does). Provider failures after retries become `api_error`, never a score."""
    panel = recipe.judge.panel
    forced = output_format(recipe, n)
    responses = []
    try:
        responses.append(await engine.chat(model, conversation, output=forced))
        judgment = parse_judgment(responses[-1].text, strategy=panel.strategy, scale=panel.scale, n=n)
        if not judgment.ok:
            followup = conversation + [
                {"role": "assistant", "content": responses[-1].text},
                reask_message(panel.strategy, n, panel.scale),
            ]
            responses.append(await engine.chat(model, followup, output=forced))
            judgment = parse_judgment(responses[-1].text, strategy=panel.strategy, scale=panel.scale, n=n)
        outcome, error = judgment.outcome, judgment.error
    except ProviderError as e:  # retries exhausted or not retryable: recorded, never a score
        judgment, outcome, error = None, "api_error", str(e)
    usage = {
        "tokens_in": sum(r.tokens_in for r in responses),
        "tokens_out": sum(r.tokens_out for r in responses),
        "cost_usd": sum(r.cost_usd for r in responses),
        "latency_s": sum(r.latency_s for r in responses),
    }
    return Answer(judgment, outcome, error, responses[-1].text if responses else "", len(responses), usage)


async def _judge(engine: Engine, recipe: Recipe, call: Call) -> list[dict]:
    panel = recipe.judge.panel
    n = len(call.shown)
    responses_shown = [c["response"] for c in call.shown]
    if call.turns is None:
        conversation = messages(recipe, call.item["prompt"], responses_shown)
    else:
        final = render(recipe, "judge.panel.debate.final_prompt", role_name=role_name(call.judge),
                       score_format=score_format(n, panel.scale))
        conversation = debate_messages(recipe, call.item["prompt"], responses_shown, list(call.turns), final)
    answer = await ask(engine, recipe, call.model, conversation, n)
    judgment, ok = answer.judgment, answer.ok
    spec = recipe.models[call.model]
    return [
        {
            "score_id": content_id(call.call_id, c["candidate_id"]),
            "call_id": call.call_id,
            "item_id": call.item["item_id"],
            "candidate_id": c["candidate_id"],
            "judge": call.judge,
            "judge_model": f"{spec.provider}/{spec.model}",
            "strategy": "debate" if call.turns is not None else panel.strategy,
            "scale": panel.scale,
            "presentation": call.presentation,
            "is_swapped": call.presentation == 1,
            "position": position,
            "score": judgment.scores[position] if ok else None,
            "pick": judgment.pick if ok else None,
            "outcome": answer.outcome,
            "raw": answer.raw,
            "parse_error": answer.error,
            "attempts": answer.attempts,
            **answer.usage,
        }
        for position, c in enumerate(call.shown)
    ]


async def _score(engine: Engine, recipe: Recipe, items: pl.DataFrame, candidates: pl.DataFrame,
                 debates: pl.DataFrame) -> list[dict]:
    by_item = {k[0]: g.sort("iteration").to_dicts() for k, g in candidates.group_by("item_id")}
    calls = plan(recipe, items.to_dicts(), by_item, debates)
    per_call = await engine.gather((_judge(engine, recipe, c) for c in calls), total=len(calls), desc="scores")
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


def build(recipe: Recipe, data_dir: Path, *, engine: Engine) -> None:
    items = read_table(ITEMS, data_dir)
    candidates = read_table(CANDIDATES, data_dir)
    debates = read_table(DEBATES, data_dir)
    panel = recipe.judge.panel
    engine.prepare(panel.debate.referees.values() if panel.debate else panel.models)
    df = frame(SCORES, engine.run(_score(engine, recipe, items, candidates, debates)))
    check_failure_budget(recipe, df.unique("call_id"))
    write_table(SCORES, df, data_dir)
