"""What the engine is given: the models it calls and how, never the whole recipe.

An `EngineConfig` is a plain, picklable value (frozen dataclass of pydantic specs and numbers), so a
Ray task on another machine builds the same engine from it as the driver would (`builders.executors`).
`engine_config` is the one place a recipe becomes one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from builders.llm.cache import default_cache_dir
from builders.recipe import ModelSpec, Recipe, StageOptions


@dataclass(frozen=True)
class EngineConfig:
    recipe: str  # the recipe's name: its spend ledger (`<cache dir>/spend/<recipe>.json`)
    models: Mapping[str, ModelSpec]  # every recipe model by name (the limiter's ceiling looks at all names of an endpoint)
    stage: str | None = None  # the stage whose calls these are (its options; its line in the ledger)
    options: StageOptions = field(default_factory=StageOptions)
    budget_usd: float | None = None  # the recipe's `budget.usd`, or None without a budget
    spent_usd: float | None = None  # what the recipe's other stages used; None: read from the ledger
    cache_dir: Path = field(default_factory=default_cache_dir)
    dry_run: bool = False  # `fellowship plan`: count calls, make none

    def spec(self, model: str) -> ModelSpec:
        return self.models[model]

    def replace(self, **changes) -> EngineConfig:
        return dataclasses.replace(self, **changes)

    def with_concurrency(self, share: float) -> EngineConfig:
        """This config with every model's `concurrency` multiplied by `share` (at least 1 each): the
        part of a cluster-wide ceiling one of several engines running at once may use."""
        models = {name: spec.model_copy(update={"concurrency": max(1, int(spec.concurrency * share))})
                  for name, spec in self.models.items()}
        return self.replace(models=models)


def engine_config(recipe: Recipe, *, stage: str | None = None, dry_run: bool = False,
                  cache_dir: Path | str | None = None) -> EngineConfig:
    """The engine configuration of `recipe`'s stage `stage`."""
    return EngineConfig(
        recipe=recipe.name,
        models=dict(recipe.models),
        stage=stage,
        options=recipe.stages.get(stage, StageOptions()) if stage else StageOptions(),
        budget_usd=recipe.budget.usd if recipe.budget is not None else None,
        cache_dir=Path(cache_dir) if cache_dir is not None else default_cache_dir(),
        dry_run=dry_run,
    )
