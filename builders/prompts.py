"""Prompt templates are files next to the recipe; this module loads, checks and renders them.

Templates use plain `{name}` placeholders, filled by `str.format`; write `{{` and `}}` for literal
braces. Format specs, conversions, indexes and attributes (`{question:>9}`, `{question!r}`) are
refused when the recipe is checked. Each template field of a recipe may use only the placeholders
its builder supplies.
"""

from __future__ import annotations

import string
from functools import lru_cache
from pathlib import Path

from builders.recipe import Recipe
from builders.strategies import STRATEGIES, USER_PLACEHOLDERS, VARIANTS, count_word, letter  # noqa: F401  (count_word, letter: re-exported)

GENERATION_PLACEHOLDERS: dict[str, frozenset[str]] = {
    "system_prompt": frozenset(),
    "revise_prompt": frozenset({"feedback"}),
    "revise_multi_prompt": frozenset({"feedbacks", "n"}),
    "reviewer_system_prompt": frozenset(),
    "reviewer_user_prompt": frozenset({"question", "response"}),
    "reviewer_multi_turn_user_prompt": frozenset({"conversation", "question", "response"}),
}
FEEDBACK_ONLY = {"revise_prompt", "revise_multi_prompt", "reviewer_system_prompt", "reviewer_user_prompt",
                 "reviewer_multi_turn_user_prompt"}

def debate_user_field(variant: str = "") -> str:
    """The debate field of a referee's user template: `user_prompt`, `multi_turn_user_prompt`, ..."""
    return f"{variant + '_' if variant else ''}user_prompt"


def judge_field(role: str, variant: str = "") -> str:
    """The recipe field of a judge template: `judge.panel.system_prompt`, `judge.panel.multi_turn_user_prompt`, ..."""
    return f"judge.panel.{variant + '_' if variant else ''}{role}_prompt"


DEBATE_PLACEHOLDERS: dict[str, frozenset[str]] = {
    "system_prompt": frozenset({"n", "scale"}),
    "final_prompt": frozenset({"role_name", "score_format"}),
    # a referee's user message, in each variant the judges have (the discussion so far and an instruction added)
    **{debate_user_field(v): USER_PLACEHOLDERS[v] | {"history", "instruction"} for v in VARIANTS},
}


_KNOWN: dict[int, tuple[Recipe, dict]] = {}  # id -> (recipe, its templates): rendering is per call


def templates(recipe: Recipe) -> dict[str, tuple[Path, frozenset[str]]]:
    """Every template the recipe uses: recipe field -> (file, placeholders its builder supplies).
    Worked out once per recipe object (recipes are frozen); do not change the returned dict."""
    known = _KNOWN.get(id(recipe))
    if known is not None and known[0] is recipe:
        return known[1]
    if len(_KNOWN) >= 64:
        _KNOWN.clear()
    out = _templates(recipe)
    _KNOWN[id(recipe)] = (recipe, out)
    return out


def _templates(recipe: Recipe) -> dict[str, tuple[Path, frozenset[str]]]:
    out = _generation_templates(recipe, recipe.generation, "generation")
    for name, (kind, entry) in (recipe.compare.entries().items() if recipe.compare else []):
        out |= _generation_templates(recipe, entry, f"compare.{kind}.{name}")
    panel = recipe.judge.panel
    # every variant an item of this source can need: conversations can come from any chat column
    needed = [v for v in VARIANTS if "reference" not in v or recipe.source.reference_column is not None]
    for v in needed:
        for role, allowed in (("system", STRATEGIES[panel.strategy].system_placeholders), ("user", USER_PLACEHOLDERS[v])):
            out[judge_field(role, v)] = (recipe.resolve(panel.template(role, v)), allowed)
    if panel.debate:
        d, where = panel.debate, "judge.panel.debate"
        for key, allowed in DEBATE_PLACEHOLDERS.items():
            if "reference" not in key or recipe.source.reference_column is not None:
                out[f"{where}.{key}"] = (recipe.resolve(getattr(d, key)), allowed)
        for role in d.roles():
            out[f"{where}.role_prompts.{role}"] = (recipe.resolve(d.role_prompts) / f"{role}.txt", frozenset())
    return out


def _generation_templates(recipe: Recipe, g, where: str) -> dict[str, tuple[Path, frozenset[str]]]:
    out = {}
    if g.workflow == "import":
        return out
    for key, allowed in GENERATION_PLACEHOLDERS.items():
        value = getattr(g, key)
        if value is not None and (key not in FEEDBACK_ONLY or g.workflow == "feedback"):
            out[f"{where}.{key}"] = (recipe.resolve(value), allowed)
    return out


@lru_cache(maxsize=128)
def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def template_texts(recipe: Recipe, prefix: str = "") -> dict[str, str]:
    """The text of every template the recipe uses whose field starts with `prefix`, by field."""
    return {field: _read(path) for field, (path, _) in sorted(templates(recipe).items()) if field.startswith(prefix)}


def fields_of(text: str) -> set[str]:
    """Placeholder names used by a template. A template field is a plain `{name}`: ValueError on
    unbalanced braces, and on a conversion (`{x!r}`), a format spec (`{x:d}`, `{x:>99}`), an index
    or attribute (`{x[0]}`, `{x.y}`) or a positional field (`{}`, `{0}`), which rendering would
    fail on (or blow up with) mid-build."""
    names = set()
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as e:
        raise ValueError(f"{e} (write {{{{ and }}}} for literal braces)") from None
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if conversion is not None or spec or not name.isidentifier():
            field = "{" + name + (f"!{conversion}" if conversion is not None else "") + (f":{spec}" if spec else "") + "}"
            raise ValueError(
                f"{field} is not a plain placeholder: write {{name}} with no format spec, conversion, index or "
                "attribute (and {{ and }} for literal braces)"
            )
        names.add(name)
    return names


def template_problems(recipe: Recipe) -> list[str]:
    problems = []
    for field, (path, allowed) in templates(recipe).items():
        if not path.is_file():
            problems.append(f"{field}: template file {path} does not exist")
            continue
        try:
            used = fields_of(_read(path))
        except UnicodeDecodeError as e:
            problems.append(f"{field}: template {path} is not UTF-8 text (at byte {e.start}); save it as UTF-8")
            continue
        except OSError as e:
            problems.append(f"{field}: cannot read template {path} ({e.strerror})")
            continue
        except ValueError as e:
            problems.append(f"{field}: template {path}: {e}")
            continue
        unknown = sorted(used - allowed)
        if unknown:
            known = ", ".join(sorted(allowed)) or "none"
            problems.append(f"{field}: template {path} has unknown placeholder {{{unknown[0]}}} (known: {known})")
    return problems


def render(recipe: Recipe, field: str, **values: object) -> str | None:
    """The template of `field` filled with `values`; None when the recipe sets no template there."""
    found = templates(recipe).get(field)
    if found is None:
        return None
    return _read(found[0]).format(**values).strip()


