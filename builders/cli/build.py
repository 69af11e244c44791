from __future__ import annotations

import click

from builders.cli import cli, resolve_recipe_path
from builders.loader import load_recipe
from builders.locks import recipe_lock
from builders.stages import STAGES, default_data_root, run_stage, stage_executor


@cli.command()
@click.argument("recipe")
@click.option("--stage", "stages", multiple=True, type=click.Choice(list(STAGES)),
              help="Build only this stage (repeatable). Default: every stage, in order.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Root of the tables (default: data, or $FELLOWSHIP_DATA_DIR).")
@click.option("--no-progress", is_flag=True, help="Hide the progress bars.")
@click.option("--executor", type=click.Choice(["local", "ray"]), default=None,
              help="Who makes the calls of candidates, debates and scores: this process (local), or tasks on a Ray "
              "cluster (ray; needs the [ray] extra). Default: each stage's stages.<stage>.executor, else local.")
@click.option("--address", default=None, metavar="HOST:PORT",
              help="The Ray cluster's head (default: $RAY_ADDRESS, else a Ray instance started on this machine).")
def build(recipe: str, stages: tuple[str, ...], data_dir: str | None, no_progress: bool, executor: str | None,
          address: str | None) -> None:
    """Build RECIPE's tables under data/<recipe>/: items, candidates, labels, debates, scores, verdicts,
    dpo, kto, dpo_feedback, kto_feedback (preferences over the reviewer's feedback); for a benchmark recipe, then its meta-evaluation (see `fellowship meta-eval`).

    Model calls are cached (.cache/llm, or $FELLOWSHIP_CACHE_DIR): a re-run makes no calls and an
    interrupted build resumes, paying only for the calls it had not finished. One command at a time
    writes a recipe's tables: a second build of the same recipe is refused while the first runs.

    With the Ray executor, each stage's items are split into blocks answered by Ray tasks; the cache
    folder, the data folder and the recipe must be on storage every node of the cluster sees.
    """
    from pathlib import Path

    r = load_recipe(resolve_recipe_path(recipe), check_keys=True, check_source=False)
    root = Path(data_dir) if data_dir else default_data_root()
    chosen = [s for s in STAGES if s in stages] if stages else list(STAGES)
    if any(stage_executor(r, s, executor) == "ray" for s in chosen):
        from builders import ray_executor

        ray_executor.prepare(r, root / r.name, address=address)  # Ray, the cluster and its storage, before any stage
    with recipe_lock(root / r.name, r.name):
        for stage in chosen:
            run_stage(r, stage, data_root=root, progress=not no_progress, executor=executor, address=address)
        if r.source.labelled and not stages:
            from builders import meta_eval

            meta_eval.build(r, root / r.name)
