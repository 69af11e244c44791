"""`fellowship plan`: what a recipe's build will call and cost, worked out before any call.

The plan runs every stage up to the verdicts for real, in a temporary folder, with a dry-run engine:
the workflows' own code decides the fan-out (samples, feedback rounds, reviewers, debate turns, both
judging orders, compare entries), the prompts are rendered from the recipe's templates, and the
response cache says which calls were made before. A call not in the cache is counted, not made:
its prompt tokens are estimated from its length (4 characters a token), its answer is taken to be
`max_tokens` long (so later prompts that quote it are as long as they can be), and its cost is
priced from the recipe (`price.batch` share in a batch stage). The figures are thus upper bounds on
tokens out and cost, up to the token estimate; retries are not counted. Answers the plan makes up
to go on are in the form the prompts ask for, so the fan-out of stages that depend on a judge's
verdicts (compare picks and matches) is the one those stand-ins lead to.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from builders.llm.engine import Engine, Usage
from builders.recipe import LLM_STAGES, Recipe

NOT_PLANNED = ("dpo", "kto", "dpo_feedback", "kto_feedback", "win_rates")  # no calls, and exports wait for the judge gate


@dataclass(frozen=True)
class Line:
    stage: str
    model: str  # recipe model name, or "" for the stage's total
    provider_model: str
    batch: bool
    calls: int  # calls to make
    cached: int  # calls answered by the cache
    tokens_in: int
    tokens_out: int  # at most
    cost_usd: float  # at most, for the calls to make
    cached_cost_usd: float  # what the cached answers cost (they count against the budget)


def plan(recipe: Recipe) -> list[Line]:
    """One line per (LLM stage, model) with calls, then one per stage with its totals (model "")."""
    from builders.stages import STAGES

    lines: list[Line] = []
    with tempfile.TemporaryDirectory(prefix="fellowship-plan-") as tmp:
        data_dir = Path(tmp) / recipe.name
        for stage, module in STAGES.items():
            if stage in NOT_PLANNED:
                continue
            if stage not in LLM_STAGES:
                module.build(recipe, data_dir)
                continue
            engine = Engine.for_recipe(recipe, progress=False, stage=stage, dry_run=True)
            module.build(recipe, data_dir, engine=engine)
            batch = recipe.stages[stage].batch if stage in recipe.stages else False
            if not engine.by_model:
                continue  # the recipe makes no calls in this stage
            for model, usage in sorted(engine.by_model.items()):
                spec = recipe.models[model]
                lines.append(_line(stage, model, f"{spec.provider}/{spec.model}", batch, usage))
            lines.append(_line(stage, "", "", batch, engine.usage))
    return lines


def _line(stage: str, model: str, provider_model: str, batch: bool, u: Usage) -> Line:
    return Line(stage, model, provider_model, batch, u.calls, u.cached, u.tokens_in, u.tokens_out, u.cost_usd, u.cached_cost_usd)


def totals(lines: list[Line]) -> Line:
    stages = [ln for ln in lines if not ln.model]
    return Line(
        "total", "", "", any(ln.batch for ln in stages),
        *(sum(getattr(ln, f) for ln in stages) for f in ("calls", "cached", "tokens_in", "tokens_out", "cost_usd", "cached_cost_usd")),
    )


def budget_verdict(recipe: Recipe, total: Line) -> str | None:
    """One sentence comparing the plan with `budget.usd`, or None without a budget."""
    if recipe.budget is None:
        return None
    need = total.cost_usd + total.cached_cost_usd
    if need <= recipe.budget.usd:
        return f"budget.usd ${recipe.budget.usd:g}: the worst case, ${need:.4f} (cached answers included), fits"
    return (
        f"budget.usd ${recipe.budget.usd:g}: the worst case, ${need:.4f} (cached answers included), does not fit; "
        "the build would stop before the call that could pass it"
    )


def as_dicts(lines: list[Line]) -> list[dict]:
    return [asdict(ln) for ln in lines]
