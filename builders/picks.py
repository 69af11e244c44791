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

from builders import candidates, scores, verdicts
from builders.by_item import Input, by_item
from builders.llm.engine import Engine
from builders.recipe import Recipe
from builders.tables import (
    CANDIDATES, DEBATES, ITEMS, PICKS, VERDICTS, TableWriter, content_id, frame, replace_atomically, scan_table, write_table,
)

READS = ("items",)
WRITES = ("picks",)
SUBDIR = "compare"


def entry_recipe(recipe: Recipe, name: str) -> Recipe:
    """The recipe as one `compare` entry sees it: the entry's workflow as its generation."""
    _, generation = recipe.compare.entries()[name]
    return recipe.model_copy(update={"generation": generation})


def _most_per_item(where: Path) -> int:
    """The most candidates any prompt has (the table keeps each prompt's rows together)."""
    most, run, previous = 0, 0, None
    for row in scan_table(CANDIDATES, where, ["item_id"])[1]:
        run = run + 1 if row["item_id"] == previous else 1
        most, previous = max(most, run), row["item_id"]
    return most


def _entry_tables(recipe: Recipe, data_dir: Path, name: str, engine: Engine) -> Path:
    """Build one entry's candidates, and its scores and verdicts when it writes several answers a prompt."""
    sub, where = entry_recipe(recipe, name), data_dir / SUBDIR / name
    where.mkdir(parents=True)
    replace_atomically(ITEMS.path(where), lambda tmp: shutil.copyfile(ITEMS.path(data_dir), tmp))
    write_table(DEBATES, frame(DEBATES, []), where)  # compare judges without debates
    candidates.build(sub, where, engine=engine)
    if _most_per_item(where) > 1:
        scores.build(sub, where, engine=engine)
        verdicts.build(sub, where)
    else:
        write_table(VERDICTS, frame(VERDICTS, []), where)
    return where


def _pick(name: str, kind: str, item_id: str, cands: list[dict], verdicts_of: list[dict]) -> dict | None:
    """The entry's pick on one prompt: the verdict's choice, or the only candidate; None if neither."""
    ok = [v["chosen_id"] for v in verdicts_of if v["status"] == "ok"]
    if ok:
        cid, how = ok[0], "judge"
    elif len(cands) == 1:
        cid, how = cands[0]["candidate_id"], "only"
    else:
        return None
    c = next(c for c in cands if c["candidate_id"] == cid)
    return {
        "pick_id": content_id(name, item_id),
        "entry": name,
        "role": kind[:-1],  # workflows -> workflow, baselines -> baseline
        "item_id": item_id,
        "candidate_id": cid,
        "response": c["response"],
        "generator": c["generator"],
        "iteration": c["iteration"],
        "n_candidates": len(cands),
        "how": how,
    }


def build(recipe: Recipe, data_dir: Path, *, engine: Engine) -> None:
    root = data_dir / SUBDIR
    if root.exists():
        shutil.rmtree(root)  # entries renamed or removed leave nothing behind
    entries = recipe.compare.entries() if recipe.compare else {}
    inputs = {}
    for name in entries:
        where = _entry_tables(recipe, data_dir, name, engine)
        inputs[f"{name}/candidates"] = Input(CANDIDATES, ["candidate_id", "response", "generator", "iteration"], where)
        inputs[f"{name}/verdicts"] = Input(VERDICTS, ["status", "chosen_id"], where)
    with TableWriter(PICKS, data_dir) as out:
        for item, rows in by_item(data_dir, ["item_id"], **inputs):
            picks = (_pick(name, kind, item["item_id"], rows[f"{name}/candidates"], rows[f"{name}/verdicts"])
                     for name, (kind, _) in entries.items())
            out.write([p for p in picks if p is not None])
