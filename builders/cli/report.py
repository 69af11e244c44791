from __future__ import annotations

from pathlib import Path

import click

from builders.cli import cli, resolve_recipe_path
from builders.loader import load_recipe
from builders.report import DEFAULT_MAX_ITEMS
from builders.stages import default_data_root


@cli.command()
@click.argument("recipe")
@click.option("--open", "open_page", is_flag=True, help="Open the page in the default browser once written.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Root of the tables (default: data, or $FELLOWSHIP_DATA_DIR).")
@click.option("--max-items", type=click.IntRange(min=1), default=DEFAULT_MAX_ITEMS, show_default=True,
              help="Prompts in the page's pair list (the first ones in source order).")
def report(recipe: str, open_page: bool, data_dir: str | None, max_items: int) -> None:
    """Write RECIPE's report, data/<recipe>/report.html: one self-contained page (no network needed).

    The build (stages, rows, calls, cache hits, tokens, cost, wall time), the judges (agreement with
    humans when a benchmark measured them, each jury's n_eff and alpha, flip rate, position bias,
    longer-answer win rate, score distributions, model families), win rates for comparison
    recipes, and every prompt with its candidates, the judge's reasoning and scores in every
    order, the verdict and why, and its DPO pairs and KTO labels, with filters. Build the recipe
    first (`fellowship build RECIPE` or `dvc repro`); a table not built names its stage.
    """
    from builders import report as builder

    r = load_recipe(resolve_recipe_path(recipe), check_source=False)
    root = Path(data_dir) if data_dir else default_data_root()
    path = builder.build(r, root / r.name, max_items=max_items)
    click.echo(f"{r.name}: report: wrote {path}", err=True)
    if open_page:
        import webbrowser

        webbrowser.open(path.resolve().as_uri())
