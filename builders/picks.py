"""Builder: every `compare` entry's answers, and the one it puts forward per prompt -> `picks` (LLM calls).

Each workflow and baseline of `compare` is built like a recipe of its own, with this recipe's prompts
and judge, under `data/<recipe>/compare/<entry>/`: its `candidates`, then `scores` and `verdicts`
when it writes several candidates per prompt. Its pick is the paper's: the judge's choice among the
prompt's candidates (the verdict), or the single candidate when there is one. Prompts the judge could
not decide (ties dropped, order flips) get no pick and are counted out of the win rates.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl

from builders import candidates, scores, verdicts
from builders.llm.engine import Engine
from builders.recipe import Recipe
from builders.tables import CANDIDATES, DEBATES, ITEMS, PICKS, VERDICTS, content_id, frame, read_table, write_table

READS = ("items",)
WRITES = ("picks",)
SUBDIR = "compare"


def entry_recipe(recipe: Recipe, name: str) -> Recipe:
    """The recipe as one `compare` entry sees it: the entry's workflow as its generation."""
    _, generation = recipe.compare.entries()[name]
    return recipe.model_copy(update={"generation": generation})


def chosen(cands: pl.DataFrame, verdict_rows: pl.DataFrame) -> dict[str, tuple[str, str]]:
    """item -> (candidate, how): the verdict's choice, or the only candidate."""
    picked = {i: (c, "judge") for i, c in verdict_rows.filter(pl.col("status") == "ok").select("item_id", "chosen_id").iter_rows()}
    counts = cands.group_by("item_id").agg(pl.col("candidate_id").first(), pl.len().alias("n"))
    return {**{i: (c, "only") for i, c, n in counts.iter_rows() if n == 1}, **picked}


def build(recipe: Recipe, data_dir: Path, *, engine: Engine) -> None:
    rows = []
    items = read_table(ITEMS, data_dir)
    root = data_dir / SUBDIR
    if root.exists():
        shutil.rmtree(root)  # entries renamed or removed leave nothing behind
    for name, (kind, _) in (recipe.compare.entries().items() if recipe.compare else []):
        sub, where = entry_recipe(recipe, name), root / name
        write_table(ITEMS, items, where)
        write_table(DEBATES, frame(DEBATES, []), where)  # compare judges without debates
        candidates.build(sub, where, engine=engine)
        cands = read_table(CANDIDATES, where)
        if cands.group_by("item_id").len()["len"].max() > 1:
            scores.build(sub, where, engine=engine)
            verdicts.build(sub, where)
            verdict_rows = read_table(VERDICTS, where)
        else:
            verdict_rows = frame(VERDICTS, [])
        by_id = {c["candidate_id"]: c for c in cands.to_dicts()}
        n_of = dict(cands.group_by("item_id").len().iter_rows())
        for item_id, (cid, how) in sorted(chosen(cands, verdict_rows).items()):
            c = by_id[cid]
            rows.append({
                "pick_id": content_id(name, item_id),
                "entry": name,
                "role": kind[:-1],  # workflows -> workflow, baselines -> baseline
                "item_id": item_id,
                "candidate_id": cid,
                "response": c["response"],
                "generator": c["generator"],
                "iteration": c["iteration"],
                "n_candidates": n_of[item_id],
                "how": how,
            })
    write_table(PICKS, frame(PICKS, rows), data_dir)
