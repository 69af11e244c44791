from __future__ import annotations

import json

import click

from builders.cli import cli, resolve_recipe_path
from builders.loader import load_recipe

COLUMNS = ("stage", "model", "calls", "cached", "tokens in", "tokens out ≤", "cost ≤", "cached cost", "hours")


@cli.command()
@click.argument("recipe")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON lines (one per stage and model, then the total).")
def plan(recipe: str, as_json: bool) -> None:
    """Calls, tokens, cost and hours of building RECIPE, per stage and model, before any call is made.

    Stages run in a temporary folder with a dry-run engine: the fan-out is the workflows' own, the
    prompts are the rendered templates, and calls already in the response cache cost nothing now.
    Prompt tokens are estimated at 4 characters a token; every new answer is counted at the model's
    max_tokens, so tokens out and cost are upper bounds (retries not included). No API key is needed.

    Hours: live calls at each model's concurrency, each taking its provider's typical latency (10 s
    for hosted models, 12 s for the bundled local one); in a batch stage, up to the provider's
    completion window (24 h for OpenAI and Together) per round of batch jobs (`≤` marks it). The
    total adds the stages, which run one after another.
    """
    from builders import plan as planning

    r = load_recipe(resolve_recipe_path(recipe), check_source=False)
    lines = planning.plan(r)
    total = planning.totals(lines)
    verdict = planning.budget_verdict(r, total)
    if as_json:
        for row in planning.as_dicts([*lines, total]):
            click.echo(json.dumps(row))
        return
    rows = [COLUMNS]
    for ln in [*lines, total]:
        name = f"{ln.model} ({ln.provider_model})" if ln.model else ("all" if ln.stage != "total" else "")
        stage = f"{ln.stage} [batch]" if ln.batch and ln.stage != "total" else ln.stage
        rows.append((stage, name, f"{ln.calls:,}", f"{ln.cached:,}", f"{ln.tokens_in:,}", f"{ln.tokens_out:,}",
                     f"${ln.cost_usd:.4f}", f"${ln.cached_cost_usd:.4f}", _hours(ln)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    for k, row in enumerate(rows):
        click.echo("  ".join(cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))).rstrip())
        if k == 0 or (k < len(rows) - 1 and rows[k + 1][0] == "total"):
            click.echo("  ".join("-" * w for w in widths))
    if verdict:
        click.echo(verdict)


def _hours(ln) -> str:
    bound = "≤ " if ln.batch else ""  # a batch job may take up to its window
    return f"{bound}{ln.hours:,.1f}" if ln.hours >= 0.1 or ln.hours == 0 else f"{bound}{ln.hours * 60:.1f} min"
