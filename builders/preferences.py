"""What the `dpo` and `kto` builders share: each ok verdict's chosen candidate and its rejected ones."""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from builders.by_item import by_item
from builders.prompts import template_texts
from builders.recipe import Recipe
from builders.strategies import JudgeSpec
from builders.tables import CANDIDATES, VERDICTS, Table, TableWriter, content_id

RECIPE_SECTIONS = ("source", "models", "generation", "judge", "export")  # what `recipe_hash` covers


@dataclass(frozen=True)
class Preference:
    item_id: str
    prompt: str  # the user's last turn
    messages: list[dict]  # the whole conversation, `prompt` last
    chosen: dict  # candidate row plus "score"
    rejected: list[dict]  # candidate rows plus "score", best first, each strictly and at least `min_margin` below


def _preference(recipe: Recipe, item: dict, candidates: list[dict], verdict: dict) -> Preference | None:
    by_id = {c["candidate_id"]: c for c in candidates}
    scored = [{**by_id[cid], "score": s} for cid, s in zip(verdict["ranking"], verdict["ranking_scores"])]
    chosen, others = scored[0], scored[1:]
    if item["messages"] is None:  # each answer follows its own earlier answers: no shared prompt
        return None
    if chosen["problem"] is not None:  # no answer is never a good answer (a benchmark judges them all)
        return None
    # A candidate sharing the best score is no worse than the chosen one: never a rejected answer;
    # no answer is never exported, not even as the rejected side.
    rejected = [
        c for c in others
        if c["problem"] is None
        and c["score"] < chosen["score"]
        and chosen["score"] - c["score"] >= recipe.export.min_margin
        and c["response"] != chosen["response"]
    ]
    unique: dict[str, dict] = {}  # a revision that repeats an answer word for word is one example, not two
    for c in rejected:
        unique.setdefault(c["response"], c)
    return Preference(item["item_id"], item["prompt"], item["messages"], chosen, list(unique.values()))


def preferences(recipe: Recipe, data_dir: Path) -> Iterator[Preference]:
    """The preference of every item with an ok verdict, in the items' order, read an item at a time."""
    for item, rows in by_item(data_dir, ["item_id", "prompt", "messages"], candidates=CANDIDATES, verdicts=VERDICTS):
        for verdict in rows["verdicts"]:
            if verdict["status"] == "ok":
                preference = _preference(recipe, item, rows["candidates"], verdict)
                if preference is not None:
                    yield preference


def judge_description(recipe: Recipe) -> str:
    """How the verdicts were reached, in one line: `jury of a, b, c (majority; combined, scale 10, orders rotations)`."""
    j, panel = recipe.judge, recipe.judge.panel
    how = f"{'debate, ' if panel.debate else ''}{JudgeSpec.of(panel).describe()}"
    if len(j.voters) == 1:
        return f"{j.voters[0]} ({how})"
    return f"{j.mode} of {', '.join(j.voters)} ({j.rule}; {how})"


def lineage(recipe: Recipe) -> dict:
    """The columns every exported row carries about how it was made."""
    panel = recipe.judge.panel
    models = [panel.debate.referees[v] for v in recipe.judge.voters] if panel.debate else recipe.judge.voters
    texts = template_texts(recipe)
    sections = recipe.model_dump(mode="json", include=set(RECIPE_SECTIONS))
    return {
        "judge": judge_description(recipe),
        "judge_models": [f"{recipe.models[m].provider}/{recipe.models[m].model}" for m in models],
        "template_hash": content_id(texts),
        "recipe_hash": content_id(sections),
    }


def side(candidate: dict, prefix: str = "") -> dict:
    """The writer columns of one candidate, named `<prefix>generator` etc."""
    return {
        f"{prefix}generator": candidate["generator"],
        f"{prefix}reviewers": list(candidate["reviewers"]),
        f"{prefix}iteration": candidate["iteration"],
    }


KTO_WINDOW = 4096  # KTO rows interleaved together: the order is made a window at a time


def interleave(rows: list[dict], seed: int | random.Random, group: str = "item_id") -> list[dict]:
    """KTO rows in the order TRL reads them, each with its `position`: desirable and undesirable
    rows alternate while both last, and a row's `group` (its prompt) differs from the row before
    whenever another row is left that allows it. The order within each label is a shuffle under
    `seed` (a number, or the random generator to draw from) of the rows sorted by `example_id`, so
    it is the same on every build."""
    rng = seed if isinstance(seed, random.Random) else random.Random(seed)
    pools = {}
    for label in (True, False):
        pool = sorted((r for r in rows if r["label"] is label), key=lambda r: r["example_id"])
        rng.shuffle(pool)
        pools[label] = pool
    out: list[dict] = []
    want = True
    while pools[True] or pools[False]:
        pool = pools[want] or pools[not want]
        previous = out[-1][group] if out else None
        i = next((i for i, r in enumerate(pool) if r[group] != previous), 0)
        out.append({**pool.pop(i), "position": len(out)})
        want = not out[-1]["label"]
    return out


def interleaved(rows: Iterable[dict], seed: int, group: str = "item_id", window: int = KTO_WINDOW) -> Iterator[dict]:
    """`interleave` over a stream of rows (in the items' order), a window of `window` rows at a
    time, so memory does not grow with the table: every window alternates its labels and prompts
    as `interleave` does (its surplus label at its end), the windows drawing from one generator
    seeded with `seed`; `position` counts over the whole stream. Up to `window` rows this is
    exactly `interleave(rows, seed)`."""
    rng, start, rows = random.Random(seed), 0, iter(rows)
    while chunk := list(islice(rows, window)):
        for row in interleave(chunk, rng, group):
            row["position"] += start
            yield row
        start += len(chunk)


def write_interleaved(table: Table, data_dir: Path, rows: Iterable[dict], seed: int) -> None:
    """A KTO table from its rows in the items' order, written as `interleaved` orders them."""
    with TableWriter(table, data_dir) as out:
        for row in interleaved(rows, seed):
            out.write([row])
