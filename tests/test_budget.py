"""`budget.usd`: a build stops before a call that could pass it, keeps every finished call, and goes on
from there, paying only for new calls, when the budget is raised."""

from __future__ import annotations

import json

import pytest
from conftest import fellowship, tiny_recipe, write_recipe
from openai_server import FakeOpenAIServer

from builders.llm.budget import BudgetReached
from builders.llm.cache import ResponseCache
from builders.loader import load_recipe
from builders.stages import STAGES, run_stage
from builders.tables import TABLES

PRICE = ", price: {input: 1000, output: 1000}"  # $0.001 a token: the tiny recipe's calls cost dollars


def budgeted(project, usd, **kwargs):
    text = tiny_recipe(project, extra=kwargs.pop("extra", PRICE), **kwargs).read_text()
    return write_recipe(project, "tiny", text + (f"budget: {{usd: {usd}}}\n" if usd else ""))


def spent(tmp_path):
    return json.loads((tmp_path / "cache" / "spend" / "tiny.json").read_text())


def test_build_stops_before_the_budget_keeps_its_calls_and_goes_on_when_raised(project, tmp_path):
    path = budgeted(project, 1.0)
    result = fellowship("build", str(path), "--no-progress", cwd=project, check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("budget reached: the next call could bring the recipe to $")
    assert not TABLES["candidates"].path(tmp_path / "data" / "tiny").exists()  # nothing half-written
    paid = len(ResponseCache())
    assert paid > 0 and spent(tmp_path)["candidates"] <= 1.0  # never past the cap

    again = fellowship("build", str(path), "--no-progress", cwd=project, check=False)
    assert again.returncode == 1 and spent(tmp_path)["candidates"] <= 1.0  # the same cap stops it again
    assert len(ResponseCache()) >= paid  # with every earlier answer kept
    paid = len(ResponseCache())

    budgeted(project, 100)
    done = fellowship("build", str(path), "--no-progress", cwd=project)
    assert f"0 calls, {paid} cached" not in done.stderr  # it went on...
    assert len(ResponseCache()) == 32  # ...and every call was paid once: 20 for candidates, 12 for scores (3 rotations)
    assert spent(tmp_path)["candidates"] + spent(tmp_path)["scores"] <= 100


def test_earlier_stages_count_against_the_budget(project, tmp_path):
    recipe = load_recipe(budgeted(project, None))
    for stage in ("items", "candidates", "labels", "debates"):
        run_stage(recipe, stage, progress=False)
    candidates_cost = spent(tmp_path)["candidates"]
    # enough for the judge's calls alone, not for them on top of the answers already written
    recipe = load_recipe(budgeted(project, candidates_cost + 0.5))
    assert run_stage(recipe, "candidates", progress=False).usage.calls == 0  # cached answers fit
    with pytest.raises(BudgetReached, match=r"by earlier stages"):
        run_stage(recipe, "scores", progress=False)


def test_calls_in_flight_when_the_budget_stops_are_finished_and_cached(project, tmp_path):
    with FakeOpenAIServer(delay_s=0.2) as server:
        extra = f", base_url: '{server.base_url}', concurrency: 4{PRICE}"
        recipe = load_recipe(budgeted(project, 1.5, provider="openai-compatible", model="m", extra=extra))
        run_stage(recipe, "items", progress=False)
        with pytest.raises(BudgetReached):
            run_stage(recipe, "candidates", progress=False)
        answered = server.completed
    assert answered >= 2 and len(ResponseCache()) == answered  # every answer the server gave was kept


def test_no_budget_no_stop(project, tmp_path):
    recipe = load_recipe(budgeted(project, None))
    engines = {s: run_stage(recipe, s, progress=False) for s in STAGES}
    assert engines["candidates"].usage.calls == 20 and engines["candidates"].budget is None
    assert spent(tmp_path)["candidates"] == pytest.approx(engines["candidates"].usage.cost_usd)
