"""Prompt templates are files next to the recipe; this module loads, checks and renders them.

Templates use Python `str.format` fields (`{question}`); write `{{` and `}}` for literal braces.
Each template field of a recipe may use only the placeholders its builder supplies.
"""

from __future__ import annotations

import string
from functools import lru_cache
from pathlib import Path

from builders.recipe import Recipe

# recipe field (section.key) -> placeholders the builder supplies for it
PLACEHOLDERS: dict[str, frozenset[str]] = {
    "generation.system_prompt": frozenset(),
    "generation.revise_prompt": frozenset({"feedback"}),
    "generation.revise_multi_prompt": frozenset({"feedbacks", "n"}),
    "generation.reviewer_system_prompt": frozenset(),
    "generation.reviewer_user_prompt": frozenset({"question", "response"}),
    "judge.system_prompt": frozenset({"n", "scale", "score_format"}),
    "judge.user_prompt": frozenset({"question", "responses"}),
}

FEEDBACK_ONLY = {k for k in PLACEHOLDERS if k.startswith("generation.") and k != "generation.system_prompt"}


def _template_path(recipe: Recipe, field: str) -> Path | None:
    section, key = field.split(".")
    value = getattr(getattr(recipe, section), key)
    return None if value is None else recipe.resolve(value)


@lru_cache(maxsize=128)
def _read(path: Path) -> str:
    return path.read_text()


def fields_of(text: str) -> set[str]:
    """Placeholder names used by a template; ValueError on unbalanced braces."""
    return {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}


def template_problems(recipe: Recipe) -> list[str]:
    problems = []
    for field, allowed in PLACEHOLDERS.items():
        if field in FEEDBACK_ONLY and recipe.generation.workflow != "feedback":
            continue
        path = _template_path(recipe, field)
        if path is None:
            continue
        if not path.is_file():
            problems.append(f"{field}: template file {path} does not exist")
            continue
        try:
            used = fields_of(_read(path))
        except ValueError as e:
            problems.append(f"{field}: template {path}: {e} (write {{{{ and }}}} for literal braces)")
            continue
        unknown = sorted(used - allowed)
        if unknown:
            known = ", ".join(sorted(allowed)) or "none"
            problems.append(f"{field}: template {path} has unknown placeholder {{{unknown[0]}}} (known: {known})")
    return problems


def render(recipe: Recipe, field: str, **values: object) -> str | None:
    """The template of `field` filled with `values`; None when the recipe sets no template there."""
    path = _template_path(recipe, field)
    if path is None:
        return None
    return _read(path).format(**values).strip()


NUMBER_WORDS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine", 10: "ten"}


def count_word(n: int) -> str:
    """2 -> 'two', as the paper's prompts write it; digits beyond ten."""
    return NUMBER_WORDS.get(n, str(n))


def letter(position: int) -> str:
    """0 -> 'A', 1 -> 'B', ...: how prompts name the responses they show."""
    return chr(ord("A") + position)
