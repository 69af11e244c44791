"""Builder: this recipe's picks vs the baselines -> `matches` (LLM calls; empty without `compare`).

The pick is the paper's: the judge's choice among a prompt's candidates (the `verdicts` stage; a
prompt with one candidate picks it). Every panel judge compares the pick with each baseline's answer
in one conversation, and again with the order swapped when `judge.panel.swap` is on. Failed calls are
rows with null scores and their outcome, within `judge.panel.max_parse_failure_rate`.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from builders.errors import BuildError
from builders.judging import messages
from builders.llm.engine import Engine
from builders.recipe import Recipe
from builders.scores import ask
from builders.tables import BASELINES, CANDIDATES, ITEMS, MATCHES, VERDICTS, content_id, frame, read_table, write_table

READS = ("items", "candidates", "verdicts", "baselines")
WRITES = ("matches",)


def picks(candidates: pl.DataFrame, verdicts: pl.DataFrame) -> dict[str, str]:
    """item -> the candidate this recipe puts forward: the verdict's choice, or the only candidate."""
    chosen = dict(verdicts.filter(pl.col("status") == "ok").select("item_id", "chosen_id").iter_rows())
    counts = candidates.group_by("item_id").agg(pl.col("candidate_id").first(), pl.len().alias("n"))
    single = {i: c for i, c, n in counts.iter_rows() if n == 1}
    return {**single, **chosen}


async def _match(engine: Engine, recipe: Recipe, judge: str, prompt: str, pick: dict, base: dict, order: int) -> dict:
    shown = [pick["response"], base["response"]][:: 1 if order == 0 else -1]
    answer = await ask(engine, recipe, judge, messages(recipe, prompt, shown), 2)
    scores = answer.judgment.scores if answer.ok else [None, None]
    mine, theirs = (scores[0], scores[1]) if order == 0 else (scores[1], scores[0])
    pair_id = content_id(pick["item_id"], pick["candidate_id"], base["baseline"])
    spec = recipe.models[judge]
    return {
        "match_call_id": content_id(judge, pair_id, order),
        "pair_id": pair_id,
        "item_id": pick["item_id"],
        "candidate_id": pick["candidate_id"],
        "baseline": base["baseline"],
        "judge": judge,
        "judge_model": f"{spec.provider}/{spec.model}",
        "presentation": order,
        "candidate_score": mine,
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
        prompts = dict(read_table(ITEMS, data_dir).select("item_id", "prompt").iter_rows())
        candidates = read_table(CANDIDATES, data_dir)
        chosen = picks(candidates, read_table(VERDICTS, data_dir))
        by_id = {c["candidate_id"]: c for c in candidates.to_dicts()}
        panel = recipe.judge.panel
        orders = (0, 1) if panel.swap else (0,)
        jobs = [
            _match(engine, recipe, judge, prompts[base["item_id"]], by_id[chosen[base["item_id"]]], base, order)
            for base in read_table(BASELINES, data_dir).to_dicts() if base["item_id"] in chosen
            for judge in panel.models
            for order in orders
        ]
        engine.prepare(panel.models)
        rows = engine.run(engine.gather(jobs, total=len(jobs), desc="matches"))
    df = frame(MATCHES, rows)
    failed = df.filter(pl.col("outcome") != "ok")
    budget = recipe.judge.panel.max_parse_failure_rate
    if df.height and failed.height / df.height > budget:
        raise BuildError(
            f"{recipe.path}: judge.panel.max_parse_failure_rate: {failed.height} of {df.height} match calls failed "
            f"(> {budget:.0%}); first: {failed['parse_error'][0]}"
        )
    write_table(MATCHES, df, data_dir)
