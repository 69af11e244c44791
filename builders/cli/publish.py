from __future__ import annotations

from pathlib import Path

import click

from builders.cli import cli, resolve_recipe_path
from builders.errors import BuildError
from builders.loader import load_recipe
from builders.locks import recipe_lock
from builders.stages import default_data_root

PLACEHOLDER_USER = "your-hf-user"


@cli.command()
@click.argument("recipe")
@click.option("--repo", "repo_id", default=None, help="Hub dataset id (default: the recipe's export.hub_repo).")
@click.option("--public", is_flag=True, help="Create the dataset public (default: private).")
@click.option("--revision", default=None, help="Branch to push to (created if missing; default: main).")
@click.option("--message", default=None, help="Commit message (default: 'Publish <recipe>').")
@click.option("--dry-run", is_flag=True, help="Check and write the folder that would be uploaded; upload nothing.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Root of the tables (default: data, or $FELLOWSHIP_DATA_DIR).")
def publish(recipe: str, repo_id: str | None, public: bool, revision: str | None, message: str | None,
            dry_run: bool, data_dir: str | None) -> None:
    """Push RECIPE's dpo and kto tables (and dpo_feedback, kto_feedback when a feedback loop gave
    them rows) to the Hugging Face Hub as configs of one dataset, in TRL's export.format, with a
    dataset card (README.md) that tells how they were made.

    Refuses, with a one-line reason, when `dvc status` shows the exports stale against the recipe or
    code, when the judge fails its export.gate, or when an export breaks TRL's column contracts.
    The token comes from HF_TOKEN or `hf auth login`, never from a file, and is never printed.
    The folder uploaded is kept under data/<recipe>/hub/.
    """
    from builders import publish as pub

    r = load_recipe(resolve_recipe_path(recipe), check_source=False)
    repo_id = repo_id or r.export.hub_repo
    unnamed = not repo_id
    if unnamed and not dry_run:
        raise BuildError(f"{r.path}: export.hub_repo: name the Hub dataset (or pass --repo)")
    if unnamed:  # a preview needs no Hub id: the card's snippets show a placeholder to replace
        repo_id = f"{PLACEHOLDER_USER}/{r.name}"
    data = (Path(data_dir) if data_dir else default_data_root()) / r.name
    with recipe_lock(data, r.name):  # no build changes the exports while they are checked and copied
        pub.check(r, data, Path.cwd())
        folder = pub.prepare(r, data, repo_id, data / "hub")
        summary = pub.summary(data)
    click.echo(summary)
    if dry_run:
        configs = sorted(d.name for d in folder.iterdir() if d.is_dir())
        click.echo(f"{r.name}: checked; would upload {folder} to {repo_id} ({'public' if public else 'private'}); "
                   f"configs: {', '.join(configs)}")
        if unnamed:
            click.echo(f"{r.name}: no Hub id yet: {repo_id} is a placeholder; set export.hub_repo or pass --repo to publish")
        return
    info = pub.upload(folder, repo_id, private=not public, revision=revision, message=message or f"Publish {r.name}")
    click.echo(f"{r.name}: published to {repo_id} ({'public' if public else 'private'}): {getattr(info, 'commit_url', info)}")
