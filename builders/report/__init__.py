"""`fellowship report`: one self-contained HTML page per recipe, `data/<recipe>/report.html`.

The page shows the build (stages, rows, calls, cache hits, tokens, cost, wall time), the judges
(agreement with humans when a benchmark measured them, n_eff, alpha, flip rate, position bias,
longer-answer win rate, score distributions, model families), win rates for comparison recipes,
and a filterable list of every prompt with its candidates, the judge's reasoning and scores in each
order, the verdict and why, and the DPO pairs and KTO labels it gave. Charts are Vega-Lite specs
drawn by the vega-embed bundle vendored in `builders/report_assets/` and inlined in the page, so it
needs no network. Everything comes from the tables (and `build_log.json`); the page is written
atomically, and not at all when a table it needs is not built.

Parts: `sections` (build, judges, win rates: the figures), `items` (the pair list), `charts`
(Vega-Lite specs), `page` (HTML).
"""

from __future__ import annotations

import os
from pathlib import Path

from builders.errors import BuildError
from builders.recipe import Recipe
from builders.tables import TABLES

NAME = "report.html"
DEFAULT_MAX_ITEMS = 1000
ALWAYS = ("items", "candidates", "labels", "debates", "scores", "verdicts", "dpo", "kto")  # every recipe's stages
BENCHMARK = ("agreement", "model_agreement")  # written by `meta-eval`
COMPARISON = ("picks", "matches", "win_rates")


def needed(recipe: Recipe) -> list[str]:
    """The tables the report of `recipe` reads, in build order."""
    return [*ALWAYS, *(COMPARISON if recipe.compare else ()), *(BENCHMARK if recipe.source.labelled else ())]


def missing_stage(recipe: Recipe, data_dir: Path) -> str | None:
    """One line naming the first stage whose table is not built, or None."""
    for table in needed(recipe):
        path = TABLES[table].path(data_dir)
        if not path.exists():
            if table in BENCHMARK:
                how = f"`fellowship meta-eval {recipe.name}`"
                stage = "meta-eval"
            else:
                stage = table
                how = f"`fellowship build {recipe.name} --stage {table}`"
            return f"{recipe.path}: report: {path} is not built: build the `{stage}` stage first ({how}, or `dvc repro`)"
    return None


def render(recipe: Recipe, data_dir: Path, *, max_items: int = DEFAULT_MAX_ITEMS) -> str:
    """The page's HTML (raises BuildError, writing nothing, when a table is not built)."""
    problem = missing_stage(recipe, data_dir)
    if problem:
        raise BuildError(problem)
    from builders.report import page, sections
    from builders.report.items import item_records

    context = sections.Context.load(recipe, data_dir)
    return page.html_page(recipe, sections.all_sections(context), item_records(context, max_items))


def build(recipe: Recipe, data_dir: Path, *, max_items: int = DEFAULT_MAX_ITEMS) -> Path:
    """Write `data_dir/report.html` atomically; returns its path."""
    text = render(recipe, data_dir, max_items=max_items)
    path = data_dir / NAME
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path
