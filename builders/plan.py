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

The plan streams: the `items` table is built once, then the other stages run on GROUP_ITEMS items at
a time (in a folder of their own, emptied after each group), with one dry-run engine per stage
counting across the groups. A prompt's calls never depend on another prompt's, so the counts are
those of one pass over every item, in memory that does not grow with the number of items.

Hours (`estimate_hours`): a stage's calls go out one round after another (a feedback loop's answer,
review and revision; the judge's calls), each model's at most `concurrency` at a time, each taking
its latency (`models.<m>.latency_s`, else the provider's typical figure); in a batch stage each round
is a batch job that may take up to the provider's completion window (24 hours for OpenAI and Together).
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from builders.llm.engine import BATCH_WINDOW, Engine, Usage
from builders.llm.registry import PROVIDERS
from builders.recipe import LLM_STAGES, Recipe

NOT_PLANNED = ("dpo", "kto", "dpo_feedback", "kto_feedback", "win_rates")  # no calls, and exports wait for the judge gate
GROUP_ITEMS = 2_000  # items planned at once: bounds the plan's memory (made-up tables of this many items)


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
    hours: float = 0.0  # how long the calls to make would take (`estimate_hours`); a batch stage's: at most


def plan(recipe: Recipe) -> list[Line]:
    """One line per (LLM stage, model) with calls, then one per stage with its totals (model "")."""
    from builders.stages import STAGES
    from builders.tables import ITEMS, frame, scan_table, write_table

    stages = [s for s in STAGES if s not in NOT_PLANNED and s != "items"]
    engines = {s: Engine.for_recipe(recipe, progress=False, stage=s, dry_run=True) for s in stages if s in LLM_STAGES}
    with tempfile.TemporaryDirectory(prefix="fellowship-plan-") as tmp:
        items_dir, data_dir = Path(tmp) / "items" / recipe.name, Path(tmp) / "group" / recipe.name
        STAGES["items"].build(recipe, items_dir)
        _, rows = scan_table(ITEMS, items_dir)
        for group in _groups(rows, GROUP_ITEMS):
            write_table(ITEMS, frame(ITEMS, group), data_dir)
            for stage in stages:
                if stage in engines:
                    STAGES[stage].build(recipe, data_dir, engine=engines[stage])
                else:
                    STAGES[stage].build(recipe, data_dir)
            shutil.rmtree(data_dir)
    lines: list[Line] = []
    for stage, engine in engines.items():
        if not engine.by_model:
            continue  # the recipe makes no calls in this stage
        batch = recipe.stages[stage].batch if stage in recipe.stages else False
        hours = estimate_hours(engine)
        for model, usage in sorted(engine.by_model.items()):
            spec = recipe.models[model]
            lines.append(_line(stage, model, f"{spec.provider}/{spec.model}", batch, usage, hours[model]))
        lines.append(_line(stage, "", "", batch, engine.usage, max(hours.values())))
    return lines


def estimate_hours(engine: Engine) -> dict[str, float]:
    """Hours each model's calls of a planned stage would take (the stage takes the longest of them).

    A model whose calls go to its provider's batch API (a `batch: true` stage): the stage keeps
    BATCH_WINDOW items alive at once, and each round of their calls (the most one item made one
    after another) is a batch job, which may take up to the provider's completion window. A live
    model: its calls, and those of the recipe's other names for the same endpoint (they share one
    limiter), each taking the provider's `latency_s`, `concurrency` at a time, and never less than
    one item's rounds one after another."""
    config, hours = engine.config, {}
    windows = -(-engine.jobs // BATCH_WINDOW)
    for model, usage in engine.by_model.items():
        spec = config.spec(model)
        entry = PROVIDERS[spec.provider]
        if usage.calls == 0:
            hours[model] = 0.0
        elif engine.batched(model) and entry.batch_window_h is not None:
            hours[model] = windows * engine.rounds * entry.batch_window_h
        else:
            endpoint = (spec.provider, spec.model, spec.base_url)
            names = [m for m in engine.by_model if (config.spec(m).provider, config.spec(m).model, config.spec(m).base_url) == endpoint]
            ceiling = max(config.spec(m).concurrency for m in names)
            calls = sum(engine.by_model[m].calls for m in names)
            hours[model] = max(calls / ceiling, engine.rounds) * entry.latency_s / 3600
    return hours


def _groups(rows, size: int):
    """`rows` in lists of `size` (the last one shorter); one empty list when there are no rows."""
    group, given = [], False
    for row in rows:
        group.append(row)
        if len(group) == size:
            yield group
            group, given = [], True
    if group or not given:
        yield group


def _line(stage: str, model: str, provider_model: str, batch: bool, u: Usage, hours: float) -> Line:
    return Line(stage, model, provider_model, batch, u.calls, u.cached, u.tokens_in, u.tokens_out, u.cost_usd,
                u.cached_cost_usd, hours)


def totals(lines: list[Line]) -> Line:
    stages = [ln for ln in lines if not ln.model]
    return Line(
        "total", "", "", any(ln.batch for ln in stages),
        *(sum(getattr(ln, f) for ln in stages) for f in ("calls", "cached", "tokens_in", "tokens_out", "cost_usd", "cached_cost_usd",
                                                           "hours")),  # stages run one after another
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
