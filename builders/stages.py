"""The pipeline's stages, in order: one builder module per table, each declaring what it reads and writes."""

from __future__ import annotations

import importlib
import logging
import os
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType

from builders import build_log
from builders.llm.engine import Engine
from builders.llm.types import Provider
from builders.memory import use_system_arrow_pool
from builders.recipe import LLM_STAGES, RAY_STAGES, Recipe
from builders.tables import TABLES

log = logging.getLogger(__name__)

# stage -> its builder module, in build order; a module is imported when its stage is first looked
# up, so a command that runs one stage loads that stage's code only (builders.dvc_deps reads this table)
BUILDERS: dict[str, str] = {
    "items": "builders.items",
    "candidates": "builders.candidates",
    "labels": "builders.labels",
    "debates": "builders.debates",
    "scores": "builders.scores",
    "verdicts": "builders.verdicts",
    "dpo": "builders.dpo",
    "kto": "builders.kto",
    "dpo_feedback": "builders.dpo_feedback",
    "kto_feedback": "builders.kto_feedback",
    "picks": "builders.picks",
    "matches": "builders.matches",
    "win_rates": "builders.win_rates",
}


class _Stages(Mapping[str, ModuleType]):
    """Stage name -> its builder module (`BUILDERS`), imported on first use."""

    def __getitem__(self, stage: str) -> ModuleType:
        return importlib.import_module(BUILDERS[stage])

    def __iter__(self) -> Iterator[str]:
        return iter(BUILDERS)

    def __len__(self) -> int:
        return len(BUILDERS)


STAGES: Mapping[str, ModuleType] = _Stages()


def __getattr__(name: str):
    if name == "BUILT_TABLES":  # what `fellowship build` writes for any recipe (imports every builder)
        return tuple(t for module in STAGES.values() for t in module.WRITES)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def default_data_root() -> Path:
    return Path(os.environ.get("FELLOWSHIP_DATA_DIR", "data"))


def run_stage(
    recipe: Recipe,
    stage: str,
    *,
    data_root: Path | None = None,
    providers: dict[str, Provider] | None = None,
    progress: bool = True,
    executor: str | None = None,
    address: str | None = None,
) -> Engine | None:
    """Build one stage's table(s) for `recipe` under `data_root/<recipe name>/`. `executor` (`local`
    or `ray`, default: the recipe's `stages.<stage>.executor`) says who makes an LLM stage's calls;
    `address` is the Ray cluster's (builders.ray_executor)."""
    data_dir = (data_root or default_data_root()) / recipe.name
    module = STAGES[stage]
    started = time.perf_counter()
    use_system_arrow_pool()  # freed Arrow buffers go back to the OS (builders.memory)
    engine = None
    if stage in LLM_STAGES:
        engine = Engine.for_recipe(recipe, providers=providers, progress=progress, stage=stage)
        try:
            if stage_executor(recipe, stage, executor) == "ray":
                from builders import ray_executor

                ray_executor.run(recipe, stage, data_dir, engine, address=address, progress=progress)
            else:
                module.build(recipe, data_dir, engine=engine)
        finally:
            engine.record_spend()
    else:
        module.build(recipe, data_dir)
    elapsed = time.perf_counter() - started
    rows = {t: _rows(TABLES[t].path(data_dir)) for t in module.WRITES}
    written = ", ".join(f"{t} ({n} rows)" for t, n in rows.items())
    usage = f"; {engine.usage.summary()}" if engine else ""
    print(f"{recipe.name}: {stage}: wrote {written} in {elapsed:.1f}s{usage}", file=sys.stderr)
    build_log.record(data_dir, stage, elapsed, rows, engine)  # kept for the report
    return engine


def stage_executor(recipe: Recipe, stage: str, override: str | None) -> str:
    """`local` or `ray` for `stage`: the command line's choice, else the recipe's (only the stages
    the Ray executor runs can be sent to it; compare's run in the driver)."""
    if stage not in RAY_STAGES:
        return "local"
    return override or (recipe.stages[stage].executor if stage in recipe.stages else "local")


def _rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows
