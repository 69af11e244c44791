from __future__ import annotations

from pathlib import Path

import click

from builders.cli import cli, resolve_recipe_path
from builders.loader import load_recipe
from builders.locks import recipe_lock
from builders.stages import default_data_root
from metrics.bootstrap import RESAMPLES


@cli.command("meta-eval")
@click.argument("recipes", nargs=-1, required=True)
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Root of the tables (default: data, or $FELLOWSHIP_DATA_DIR).")
@click.option("--resamples", type=click.IntRange(min=100, max=10_000), default=RESAMPLES, show_default=True,
              help="Bootstrap resamples for the 95% intervals.")
@click.option("--seed", type=click.IntRange(min=0, max=2**32 - 1), default=0, show_default=True,
              help="Seed of the bootstrap resamples.")
def meta_eval(recipes: tuple[str, ...], data_dir: str | None, resamples: int, seed: int) -> None:
    """Measure benchmark RECIPES' judges against the human labels (no LLM calls).

    For every combination of the panel's judges: Cohen's kappa, accuracy, position-flip rate,
    longer-answer win rate, per-model agreement and bias score, with bootstrap 95% intervals.
    Writes the `agreement` and `model_agreement` tables, data/<recipe>/metrics.json and plots/,
    and the measured configurations that export gates read (data/_gates/<recipe>.json).
    Build the recipe's scores first (`fellowship build RECIPE` or `dvc repro`).
    """
    from builders import meta_eval as builder

    root = Path(data_dir) if data_dir else default_data_root()
    for name in recipes:
        recipe = load_recipe(resolve_recipe_path(name), check_source=False)
        with recipe_lock(root / recipe.name, recipe.name):
            builder.build(recipe, root / recipe.name, resamples=resamples, seed=seed)
