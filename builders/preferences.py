"""What the `dpo` and `kto` builders share: each ok verdict's chosen candidate and its rejected ones."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from builders.recipe import Recipe
from builders.tables import CANDIDATES, ITEMS, VERDICTS, read_table


@dataclass(frozen=True)
class Preference:
    item_id: str
    prompt: str
    chosen: dict  # candidate row plus "score"
    rejected: list[dict]  # candidate rows plus "score", best first, each strictly and at least `min_margin` below


def preferences(recipe: Recipe, data_dir: Path) -> list[Preference]:
    prompts = dict(read_table(ITEMS, data_dir).select("item_id", "prompt").iter_rows())
    candidates = {c["candidate_id"]: c for c in read_table(CANDIDATES, data_dir).to_dicts()}
    out = []
    for v in read_table(VERDICTS, data_dir).filter(status="ok").to_dicts():
        scored = [{**candidates[cid], "score": s} for cid, s in zip(v["ranking"], v["ranking_scores"])]
        chosen, others = scored[0], scored[1:]
        # A candidate sharing the best score is no worse than the chosen one: never a rejected answer.
        rejected = [
            c for c in others
            if c["score"] < chosen["score"]
            and chosen["score"] - c["score"] >= recipe.export.min_margin
            and c["response"] != chosen["response"]
        ]
        out.append(Preference(v["item_id"], prompts[v["item_id"]], chosen, rejected))
    return out
