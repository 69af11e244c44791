"""The whole pipeline on the deterministic fake provider: golden tables, invariants, and a free re-run."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from builders.loader import load_recipe
from builders.stages import BUILT_TABLES, STAGES, run_stage
from builders.tables import TABLES, read_table
from conftest import tiny_recipe

GOLDEN = Path(__file__).parent / "golden" / "tiny"
RUN_DEPENDENT = {"latency_s"}  # timings differ from one fresh run to another


def build_all(recipe, **kwargs):
    return {stage: run_stage(recipe, stage, progress=False, **kwargs) for stage in STAGES}


def as_jsonl(df: pl.DataFrame) -> str:
    df = df.drop([c for c in df.columns if c in RUN_DEPENDENT])
    return "".join(json.dumps(row, sort_keys=True, ensure_ascii=False) + "\n" for row in df.to_dicts())


@pytest.fixture
def built(project):
    recipe = load_recipe(tiny_recipe(project))
    engines = build_all(recipe)
    return recipe, project.parent / "data" / "tiny", engines


def test_tables_match_golden_files(built, request):
    _, data, _ = built
    for name, table in ((n, TABLES[n]) for n in BUILT_TABLES):
        text = as_jsonl(read_table(table, data))
        golden = GOLDEN / f"{name}.jsonl"
        if request.config.getoption("--update-golden"):
            golden.parent.mkdir(parents=True, exist_ok=True)
            golden.write_text(text)
        assert golden.read_text() == text, f"{name} differs from {golden} (pytest --update-golden rewrites it)"


def test_second_run_makes_no_calls_and_writes_the_same_tables(built):
    recipe, data, _ = built
    before = {n: read_table(TABLES[n], data) for n in BUILT_TABLES}
    engines = build_all(recipe)
    assert engines["candidates"].usage.calls == 0 and engines["scores"].usage.calls == 0
    assert engines["candidates"].usage.cached == 4 * 5 and engines["scores"].usage.cached == 4 * 3  # three rotations
    for name, table in before.items():  # every column, timings included: a table is a function of its inputs
        assert read_table(TABLES[name], data).equals(table), name


def test_training_exports_follow_trl_and_the_verdicts(built):
    recipe, data, _ = built
    dpo, kto = read_table(TABLES["dpo"], data), read_table(TABLES["kto"], data)
    verdicts = read_table(TABLES["verdicts"], data)
    assert {"prompt", "chosen", "rejected"} <= set(dpo.columns)
    assert {"prompt", "completion", "label"} <= set(kto.columns)
    assert dpo.height > 0 and (dpo["chosen"] != dpo["rejected"]).all()
    assert (dpo["chosen_score"] >= dpo["rejected_score"] + recipe.export.min_margin).all()
    assert (dpo["chosen_score"] > dpo["rejected_score"]).all()  # a tie is never a preference
    ok = verdicts.filter(status="ok")
    assert set(dpo["chosen_id"]) == set(ok["chosen_id"]) == set(kto.filter("label")["candidate_id"])
    assert kto.filter("label").height == ok.height
    assert set(kto.filter(~pl.col("label"))["candidate_id"]) == set(dpo["rejected_id"])


def test_usage_is_recorded_on_every_llm_written_row(built):
    _, data, engines = built
    candidates = read_table(TABLES["candidates"], data)
    scores = read_table(TABLES["scores"], data)
    assert (candidates["tokens_out"] > 0).all() and engines["candidates"].usage.cached == 0
    assert candidates.filter(pl.col("iteration") < 3)["review_tokens_out"].min() > 0
    assert scores.unique("call_id")["tokens_in"].sum() == engines["scores"].usage.tokens_in


def test_best_vs_worst_and_margin(project):
    path = tiny_recipe(project)
    path.write_text(path.read_text().replace("min_margin: 0", "min_margin: 2\n  pairing: best_vs_worst"))
    recipe = load_recipe(path)
    build_all(recipe)
    data = project.parent / "data" / "tiny"
    dpo, verdicts = read_table(TABLES["dpo"], data), read_table(TABLES["verdicts"], data)
    assert dpo["item_id"].is_unique().all()
    assert (dpo["margin"] >= 2).all()
    for row in dpo.to_dicts():
        v = verdicts.filter(item_id=row["item_id"]).row(0, named=True)
        assert row["rejected_id"] == v["ranking"][-1] and row["chosen_id"] == v["ranking"][0]


def test_a_candidate_tied_with_the_chosen_one_is_never_rejected(project):
    from builders.llm.fake import FakeProvider

    path = tiny_recipe(project)
    path.write_text(path.read_text().replace("    models: [judge]\n", "    models: [judge]\n    orders: single\n"))
    recipe = load_recipe(path)
    tie = "### Score Assistant A: 8/10\n### Score Assistant B: 5/10\n### Score Assistant C: 8/10"
    judge = FakeProvider(recipe.models["judge"], script=[tie] * 4)  # 4 items, one order
    build_all(recipe, providers={"judge": judge})
    data = project.parent / "data" / "tiny"
    candidates = read_table(TABLES["candidates"], data).select("candidate_id", "iteration")
    dpo = read_table(TABLES["dpo"], data).join(candidates, left_on="rejected_id", right_on="candidate_id")
    kto = read_table(TABLES["kto"], data).join(candidates, on="candidate_id")
    assert dpo.height == 4 and set(dpo["iteration"]) == {2} and set(dpo["margin"]) == {3.0}
    assert set(kto.filter("label")["iteration"]) == {3} and set(kto.filter(~pl.col("label"))["iteration"]) == {2}
