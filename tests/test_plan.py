"""`fellowship plan`: calls, tokens and cost per stage before any call, from the workflows' own fan-out."""

from __future__ import annotations

import json

import pytest

from conftest import fellowship, tiny_recipe, write_recipe
from openai_server import FakeOpenAIServer

from builders import plan
from builders.llm.cache import ResponseCache
from builders.loader import load_recipe
from builders.stages import STAGES, run_stage

PRICE = ", price: {input: 1000, output: 1000}"


def by_stage(lines):
    return {ln.stage: ln for ln in lines if not ln.model}


def test_plan_counts_the_calls_a_build_then_makes_and_bounds_its_cost(project, tmp_path):
    recipe = load_recipe(tiny_recipe(project, extra=PRICE))
    planned = by_stage(plan.plan(recipe))
    assert len(ResponseCache()) == 0 and not (tmp_path / "data").exists()  # nothing called, nothing written

    engines = {s: run_stage(recipe, s, progress=False) for s in STAGES}
    for stage in ("candidates", "scores"):
        made = engines[stage].usage
        assert planned[stage].calls == made.calls  # 4 prompts x (3 answers + 2 reviews); 4 x 2 orders
        assert planned[stage].tokens_out >= made.tokens_out and planned[stage].cost_usd >= made.cost_usd
    assert set(planned) == {"candidates", "scores"}  # stages this recipe makes no calls in are left out

    after = by_stage(plan.plan(recipe))  # now everything is in the cache
    assert after["candidates"].calls == 0 and after["candidates"].cached == 20
    assert after["candidates"].cached_cost_usd == engines["candidates"].usage.cost_usd


def test_plan_splits_calls_by_model_and_needs_no_key_or_server(project):
    with FakeOpenAIServer() as server:  # never reached: the plan makes no request and needs no key
        text = tiny_recipe(project, provider="openai", model="gpt-test",
                           extra=f", base_url: '{server.base_url}', max_tokens: 100{PRICE}").read_text()
        write_recipe(project, "tiny", text.replace("  judge: {provider: openai, model: gpt-test",
                                                   "  judge: {provider: openai, model: gpt-judge"))
        result = fellowship("plan", "tiny", "--json", cwd=project)
        assert server.requests == []
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    rows = {(r["stage"], r["model"]): r for r in lines}
    assert rows[("candidates", "writer")]["calls"] == 12 and rows[("candidates", "reviewer")]["calls"] == 8
    assert rows[("scores", "judge")]["provider_model"] == "openai/gpt-judge"
    assert rows[("candidates", "writer")]["tokens_out"] == 12 * 100  # every new answer at max_tokens
    total = lines[-1]
    assert total["stage"] == "total" and total["calls"] == 32  # 12 judge calls: 4 items x 3 rotations
    assert total["cost_usd"] == sum(r["cost_usd"] for r in lines if r["model"] == "" and r["stage"] != "total")


def test_plan_says_whether_the_budget_fits(project):
    base = tiny_recipe(project, extra=PRICE).read_text()
    write_recipe(project, "tiny", base + "budget: {usd: 1}\n")
    out = fellowship("plan", "tiny", cwd=project).stdout
    assert "budget.usd $1: the worst case" in out and "does not fit" in out
    assert out.splitlines()[0].split()[:3] == ["stage", "model", "calls"]

    write_recipe(project, "tiny", base + "budget: {usd: 10000}\n")
    out = fellowship("plan", "tiny", cwd=project).stdout
    assert "budget.usd $10000: the worst case" in out and "fits" in out and "does not fit" not in out


def test_plan_prices_batch_stages_at_the_batch_share(project):
    recipe = load_recipe(tiny_recipe(project, extra=PRICE))
    live = by_stage(plan.plan(recipe))["scores"].cost_usd
    text = tiny_recipe(project, provider="openai", model="gpt-test", extra=", base_url: 'http://127.0.0.1:9/v1'" + PRICE).read_text()
    batched = load_recipe(write_recipe(project, "tiny", text + "stages:\n  scores: {batch: true}\n"))
    line = by_stage(plan.plan(batched))["scores"]
    assert line.batch and line.cost_usd < live


def test_plan_in_groups_of_items_counts_what_one_pass_counts(project, monkeypatch):
    recipe = load_recipe(tiny_recipe(project, extra=PRICE))
    whole = plan.plan(recipe)
    monkeypatch.setattr(plan, "GROUP_ITEMS", 1)  # 4 items, one at a time
    grouped = plan.plan(recipe)
    counts = lambda lines: [(ln.stage, ln.model, ln.calls, ln.cached, ln.tokens_in, ln.tokens_out, ln.hours) for ln in lines]
    assert counts(grouped) == counts(whole)
    assert [ln.cost_usd for ln in grouped] == pytest.approx([ln.cost_usd for ln in whole])  # summed in another order


def test_plan_gives_hours_from_concurrency_latency_and_batch_windows(project):
    text = tiny_recipe(project, provider="openai", model="gpt-test", extra=", base_url: 'http://127.0.0.1:9/v1'" + PRICE).read_text()
    live = by_stage(plan.plan(load_recipe(write_recipe(project, "tiny", text))))
    # 20 candidates calls on one endpoint at the default concurrency 8, 10 s each (but one item's
    # feedback loop alone is 5 calls one after another)
    assert live["candidates"].hours == max(20 / 8, 5) * 10.0 / 3600
    batched = by_stage(plan.plan(load_recipe(write_recipe(project, "tiny", text + "stages:\n  scores: {batch: true}\n"))))
    assert batched["scores"].hours == 24.0  # one round of judge calls, one job of at most a day
    assert plan.totals(list(batched.values())).hours == batched["candidates"].hours + 24.0
