"""A recipe's judges against the models whose answers they grade: the family check of
`metrics.families`, for `fellowship validate` (from the recipe and its source), and for meta-eval,
the card and the report (from the `candidates` table)."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from builders.recipe import Generation, ModelSpec, Recipe
from metrics import families

CLOSENESS = ("same_model", "same_family", "same_maker", "unknown", "different")  # closest first


def model_id(spec: ModelSpec) -> str:
    """The provider's model id: `openai/gpt-4o`; the bundled local model by its file name."""
    if spec.provider == "local":
        from builders.llm.local import DEFAULT_MODEL_FILE  # no llama.cpp import: constants only

        return f"local/{DEFAULT_MODEL_FILE if spec.model == 'default' else Path(spec.model).name}"
    return f"{spec.provider}/{spec.model}"


def judges(recipe: Recipe) -> dict[str, str]:
    """Every judge of the panel (a debate: each referee role) -> its model id."""
    panel = recipe.judge.panel
    named = panel.debate.referees if panel.debate else {m: m for m in panel.models}
    return {judge: model_id(recipe.models[model]) for judge, model in named.items() if model in recipe.models}


def _generation_writers(recipe: Recipe, g: Generation) -> list[str]:
    if g.workflow != "import":
        return [model_id(recipe.models[g.generator])] if g.generator in recipe.models else []
    out = [a.model for a in g.answers if a.model]
    columns = [a.model_column for a in g.answers if a.model_column]
    if columns:
        from builders.errors import BuildError
        from builders.sources import column, read_source

        try:
            source = read_source(recipe)
        except BuildError:  # `validate` reports the source's own problems; nothing to check here
            return out
        for name in columns:
            values = column(source, name)
            out += [str(v) for v in values.drop_nulls().unique().to_list()] if values is not None else []
    return out


def recipe_writers(recipe: Recipe) -> list[str]:
    """Who will write the candidates, as the recipe (and an import's source columns) names them."""
    generations = [recipe.generation] + [g for _, g in (recipe.compare.entries().values() if recipe.compare else [])]
    return sorted({w for g in generations for w in _generation_writers(recipe, g)})


def table_writers(recipe: Recipe, candidates: pl.DataFrame) -> list[str]:
    """Who wrote the candidates: a generated answer's model id, an imported answer's named writer."""
    out = set()
    for workflow, generator, generator_model in candidates.select("workflow", "generator", "generator_model").unique().iter_rows():
        spec = recipe.models.get(generator) if workflow != "import" else None
        out.add(model_id(spec) if spec else generator_model)
    return sorted(out)


def rows(recipe: Recipe, writers: list[str]) -> list[dict]:
    return families.check(judges(recipe), writers)


def closest(relations: list[str]) -> str:
    return min(relations, key=CLOSENESS.index) if relations else "unknown"


def validate_warning(recipe: Recipe) -> str | None:
    """The one-line warning `fellowship validate` prints, or None."""
    return families.warning(rows(recipe, recipe_writers(recipe)))
