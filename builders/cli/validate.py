from __future__ import annotations

import click

from builders.cli import cli, resolve_recipe_path
from builders.errors import RecipeError
from builders.family_check import validate_warning
from builders.loader import load_recipe


@cli.command()
@click.argument("recipes", nargs=-1, required=True)
def validate(recipes: tuple[str, ...]) -> None:
    """Check RECIPES (names or paths) without calling any model.

    Checks the schema (unknown keys, types), model references, providers, prompt templates and
    their placeholders, the source file and columns, and that API keys are set. Warns (on stderr,
    without failing) when a judge shares a model or family with a model whose answers it grades.
    """
    failed = []
    for name in recipes:
        try:
            recipe = load_recipe(resolve_recipe_path(name), check_keys=True)
        except RecipeError as e:
            failed.append(str(e))
            continue
        click.echo(f"{recipe.path}: ok")
        flagged = validate_warning(recipe)
        if flagged:
            click.echo(f"{recipe.path}: warning: {flagged}", err=True)
    if failed:
        raise RecipeError("\n".join(failed))
