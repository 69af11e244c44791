"""The judge gate: a recipe may export only if its judge configuration reached a minimum Cohen's
kappa against human labels on a benchmark recipe.

A judge configuration is named by a fingerprint of everything that decides its labels: each voting
judge's model identity and sampling, the panel's strategy, scale, presentation orders, score mode,
reasoning, structured output
and prompt texts (and the debate, when there is one), and the vote rule when several judges vote.
Recipe-local model names do not count, so a benchmark recipe and a generation recipe that call the
same models the same way share a fingerprint. `meta-eval` writes every fingerprint it measured to
`<data root>/_gates/<benchmark>.json`; the export stages look theirs up there.
"""

from __future__ import annotations

import json
from pathlib import Path

from builders.errors import BuildError, first_line
from builders.llm.registry import identity
from builders.prompts import template_texts
from builders.recipe import Recipe
from builders.strategies import JudgeSpec
from builders.tables import content_id

GATES_DIR = "_gates"


def _model(recipe: Recipe, name: str) -> dict:
    spec = recipe.models[name]
    return {**identity(spec), **spec.sampling()}


def fingerprint(recipe: Recipe, members: tuple[str, ...] | list[str]) -> str:
    """The fingerprint of `recipe`'s panel with `members` (judge names, or referee roles) voting."""
    panel = recipe.judge.panel
    prompts = template_texts(recipe, "judge.")
    debate = None
    if panel.debate:
        debate = {
            "rounds": panel.debate.rounds,
            "referees": {role: _model(recipe, m) for role, m in sorted(panel.debate.referees.items())},
        }
        voters = sorted(members)
    else:
        voters = sorted(json.dumps(_model(recipe, m), sort_keys=True) for m in members)
    return content_id({
        "voters": voters,
        "rule": recipe.judge.rule if len(members) > 1 else None,
        "strategy": panel.strategy,
        "scale": panel.scale,
        "orders": panel.orders,
        "score_mode": panel.score_mode,
        "reasoning": panel.reasoning,
        "structured": panel.structured,
        "prompts": prompts,
        "debate": debate,
    })


def gate_path(data_root: Path, benchmark: str) -> Path:
    return data_root / GATES_DIR / f"{benchmark}.json"


def read_gate(path: Path) -> list[dict]:
    """The evaluators a gate file records; one line naming the file when it is not one."""
    try:
        evaluators = json.loads(path.read_bytes().decode("utf-8"))["evaluators"]
        if not isinstance(evaluators, list) or not all(isinstance(e, dict) and "fingerprint" in e for e in evaluators):
            raise ValueError("`evaluators` is not a list of measured configurations")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise BuildError(
            f"{path}: not a gate file written by meta-eval ({first_line(e)}); rebuild it with `fellowship meta-eval {path.stem}`"
        ) from None
    return evaluators


def describe(recipe: Recipe) -> str:
    j = recipe.judge
    who = ", ".join(j.voters)
    rule = f", rule {j.rule}" if len(j.voters) > 1 else ""
    return f"{j.mode} of {who} ({JudgeSpec.of(j.panel).describe()}{rule})"


def check_gate(recipe: Recipe, data_dir: Path, output: Path) -> None:
    """Raise BuildError (one line) unless the recipe's judge passed its gate; nothing to do without one.

    A refused export also removes `output`, the table an earlier build may have left, so no stale
    dataset outlives the judge that no longer passes.
    """
    try:
        _check(recipe, data_dir)
    except BuildError:
        output.unlink(missing_ok=True)
        raise


def gate_problem(recipe: Recipe, data_dir: Path) -> str | None:
    """Why the recipe's judge fails its gate, or None when it passes (or has no gate)."""
    try:
        _check(recipe, data_dir)
    except BuildError as e:
        return str(e)
    return None


def _check(recipe: Recipe, data_dir: Path) -> None:
    gate = recipe.export.gate
    if gate is None:
        return
    where = f"{recipe.path}: export.gate"
    path = gate_path(data_dir.parent, gate.benchmark)
    if not path.exists():
        raise BuildError(
            f"{where}: no judge has been measured on benchmark recipe '{gate.benchmark}' ({path} is missing); "
            f"list it under `benchmarks` in params.yaml and run `dvc repro`, or `fellowship build {gate.benchmark}` "
            f"and `fellowship meta-eval {gate.benchmark}`"
        )
    measured = read_gate(path)
    mine = fingerprint(recipe, recipe.judge.voters)
    found = next((e for e in measured if e["fingerprint"] == mine), None)
    if found is None:
        raise BuildError(
            f"{where}: this recipe's judge, {describe(recipe)}, was not measured by '{gate.benchmark}' "
            f"(it measured {len(measured)} configuration(s) with other models, prompts or settings); exports refused"
        )
    value = found["kappa_low"] if gate.bound == "lower" else found["kappa"]
    label = "the lower bound of the 95% interval of kappa" if gate.bound == "lower" else "kappa"
    if value is None or value < gate.min_kappa:
        shown = "undefined" if value is None else f"{value:.3f}"
        raise BuildError(
            f"{where}: {label} of the judge ({found['evaluator']}) on '{gate.benchmark}' is {shown} "
            f"[95% CI {_fmt(found['kappa_low'])}, {_fmt(found['kappa_high'])}; {found['n_items']} items], "
            f"below min_kappa {gate.min_kappa}; exports refused"
        )


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"
