"""Benchmark recipes end to end: a slice of a vendored benchmark judged by scripted fake judges whose
true agreement with the humans is known, then `meta-eval` and the export gate."""

from __future__ import annotations

import json
import re

import polars as pl
import pytest
from sklearn.metrics import cohen_kappa_score

from builders.errors import BuildError, RecipeError
from builders.llm.fake import FakeProvider
from builders.loader import load_recipe
from builders.sources import benchmark_path
from builders.stages import STAGES, run_stage
from builders.tables import TABLES, read_table
from conftest import ROOT, fellowship, tiny_recipe, write_recipe

BENCH = """\
schema_version: 1
name: {name}
source:
  benchmark: fair-eval
  sample: 16
  seed: 3
models:
  oracle: {{provider: fake, model: auto}}
  position: {{provider: fake, model: auto, temperature: 0.1}}
  longer: {{provider: fake, model: auto, temperature: 0.2}}
  contrarian: {{provider: fake, model: auto, temperature: 0.3}}
generation: {{workflow: import}}
export: {{}}
judge:
  panel:
    models: [oracle, position, longer, contrarian]
  mode: jury
  members: [oracle, position, longer]
"""

ROWS = pl.read_parquet(benchmark_path("fair-eval"))


def _shown(messages):
    """(row, is_swapped) of the FairEval pair in a combined-scoring conversation."""
    text = messages[-1]["content"]
    for row in ROWS.iter_rows(named=True):
        a, b = text.find(row["response_a"]), text.find(row["response_b"])
        if a >= 0 and b >= 0 and row["question"] in text:
            return row, b < a
    raise AssertionError("no FairEval pair in the prompt")


def _answer(policy):
    def answer(messages):
        row, swapped = _shown(messages)
        if policy == "position":
            first, second = 8, 4
        else:
            if policy == "longer":
                la, lb = len(row["response_a"]), len(row["response_b"])
                winner = "model_a" if la > lb else "model_b" if lb > la else "tie"
            else:
                winner = row["human_winner"]
                if policy == "contrarian":
                    winner = {"model_a": "model_b", "model_b": "model_a", "tie": "tie"}[winner]
            score_a, score_b = {"model_a": (9, 3), "model_b": (3, 9), "tie": (5, 5)}[winner]
            first, second = (score_b, score_a) if swapped else (score_a, score_b)
        return f"### Evaluation Evidence: scripted.\n### Score Assistant A: {first}/10\n### Score Assistant B: {second}/10"
    return answer


def _build(project, name="fair-slice", text=BENCH):
    path = write_recipe(project, name, text.format(name=name))
    recipe = load_recipe(path)
    providers = {m: FakeProvider(recipe.models[m], script=[_answer(m)] * 64) for m in recipe.judge.panel.models}
    for stage in STAGES:
        run_stage(recipe, stage, providers=providers, progress=False)
    return recipe, project.parent / "data" / name


def test_benchmark_recipe_imports_the_pairs_and_labels(project):
    recipe, data = _build(project)
    items = read_table(TABLES["items"], data)
    labels = read_table(TABLES["labels"], data)
    candidates = read_table(TABLES["candidates"], data)
    assert items.height == labels.height == 16 and candidates.height == 32
    assert set(items["item_id"]) == set(labels["item_id"]) and items["item_id"].str.starts_with("fair-eval-").all()
    assert set(candidates["workflow"]) == {"import"} and set(candidates["generator"]) == {"vicuna-13b", "gpt-3.5-turbo"}
    truth = ROWS.filter(pl.col("item_id").is_in(labels["item_id"].to_list()))
    joined = labels.join(truth.select("item_id", pl.col("human_winner").alias("truth")), on="item_id")
    assert (joined["human_winner"] == joined["truth"]).all()
    a = candidates.join(labels, left_on="candidate_id", right_on="candidate_a")
    assert set(a["generator"]) == {"vicuna-13b"}


def test_meta_eval_measures_judges_whose_agreement_is_known(project):
    from builders import meta_eval

    recipe, data = _build(project)
    meta_eval.build(recipe, data, resamples=300)
    agreement = read_table(TABLES["agreement"], data)
    assert agreement.height == 15  # every jury of 4 judges: 4 + 6 + 4 + 1
    by = {r["evaluator"]: r for r in agreement.to_dicts()}
    oracle, position, contrarian = by["oracle"], by["position"], by["contrarian"]
    assert oracle["kappa"] == 1.0 and oracle["accuracy"] == 1.0 and oracle["flip_rate"] == 0.0
    assert oracle["rank"] == 1 and oracle["kappa_low"] == oracle["kappa_high"] == 1.0
    # it always prefers Assistant A: the winner flips on every item, so every label is a tie
    assert position["flip_rate"] == 1.0 and position["n_ties"] == 16 and position["longer_wins"] is None
    # it swaps every human win and keeps the ties: its kappa is that of the swapped labels
    human = read_table(TABLES["labels"], data)["human_winner"].to_list()
    swapped = [{"model_a": "model_b", "model_b": "model_a"}.get(h, h) for h in human]
    assert contrarian["kappa"] == pytest.approx(cohen_kappa_score(human, swapped), abs=1e-6)
    assert contrarian["accuracy"] == pytest.approx(human.count("tie") / 16, abs=1e-6)
    assert contrarian["kappa_low"] <= contrarian["kappa"] <= contrarian["kappa_high"]
    assert by["longer"]["longer_wins"] == 1.0
    # oracle + contrarian disagree on every non-tie item: the majority of two is then a tie
    assert by["oracle+contrarian"]["n_ties"] == 16
    configured = agreement.filter("configured").to_dicts()
    assert [c["evaluator"] for c in configured] == ["oracle+position+longer"]

    per_model = read_table(TABLES["model_agreement"], data)
    oracle_models = per_model.filter(evaluator="oracle")
    assert set(oracle_models["model"]) == {"vicuna-13b", "gpt-3.5-turbo"}
    assert (oracle_models["agreement"] == 1.0).all() and (oracle_models["bias"] == 0.0).all()

    metrics = json.loads((data / "metrics.json").read_text())
    assert metrics["judges"]["oracle"]["kappa"] == 1.0 and metrics["best"]["evaluator"] == "oracle"
    assert metrics["configured"]["evaluator"] == "oracle+position+longer"
    human = metrics["human"]
    assert human["model_a"] + human["model_b"] + human["tie"] == 16
    kappa_plot = json.loads((data / "plots" / "kappa.json").read_text())
    assert {p["evaluator"] for p in kappa_plot} == {"oracle", "position", "longer", "contrarian", "oracle+position+longer"}
    assert len(json.loads((data / "plots" / "juries.json").read_text())) == 15


def test_meta_eval_is_a_pure_function_of_the_tables(project):
    from builders import meta_eval

    recipe, data = _build(project)
    meta_eval.build(recipe, data, resamples=200, seed=4)
    first = read_table(TABLES["agreement"], data)
    meta_eval.build(recipe, data, resamples=200, seed=4)
    assert read_table(TABLES["agreement"], data).equals(first)


def test_meta_eval_refuses_a_recipe_without_human_labels(project):
    from builders import meta_eval

    recipe = load_recipe(tiny_recipe(project))
    with pytest.raises(BuildError, match="has none"):
        meta_eval.build(recipe, project.parent / "data" / "tiny")


GATED = """\
export:
  min_margin: 0
  gate: {{benchmark: {benchmark}, min_kappa: {min_kappa}{bound}}}
"""


def _gated_recipe(project, min_kappa, *, benchmark="fair-slice", bound="", judge_model="auto"):
    path = tiny_recipe(project, "gated")
    text = path.read_text().replace("export:\n  min_margin: 0\n", GATED.format(
        benchmark=benchmark, min_kappa=min_kappa, bound=f", bound: {bound}" if bound else ""))
    # the generation recipe's judge is the benchmark's `oracle`: same provider, model and sampling
    text = text.replace("  judge: {provider: fake, model: auto}", f"  judge: {{provider: fake, model: {judge_model}}}")
    path.write_text(text)
    return load_recipe(path)


def _oracle_only(project):
    """The benchmark with `oracle` as the only judge, measured."""
    from builders import meta_eval

    text = BENCH.replace("  mode: jury\n  members: [oracle, position, longer]\n", "  members: [oracle]\n")
    recipe, data = _build(project, text=text)
    meta_eval.build(recipe, data, resamples=200)
    return recipe


def test_gate_lets_a_measured_judge_above_min_kappa_export(project):
    _oracle_only(project)
    recipe = _gated_recipe(project, 0.9, bound="lower")
    for stage in STAGES:
        run_stage(recipe, stage, progress=False)
    assert read_table(TABLES["dpo"], project.parent / "data" / "gated").height > 0


def test_gate_refuses_an_unmeasured_judge_and_removes_a_stale_export(project):
    _oracle_only(project)
    ungated = load_recipe(tiny_recipe(project, "gated"))
    for stage in STAGES:
        run_stage(ungated, stage, progress=False)
    dpo = TABLES["dpo"].path(project.parent / "data" / "gated")
    assert dpo.exists()
    run_stage(_gated_recipe(project, 1.0), "dpo", progress=False)  # the oracle's kappa is 1.0: passes
    unmeasured = _gated_recipe(project, 0.5, judge_model="echo")  # a judge the benchmark never measured
    with pytest.raises(BuildError, match="judge of judge.*was not measured by 'fair-slice'"):
        run_stage(unmeasured, "dpo", progress=False)
    assert not dpo.exists()


def test_gate_refuses_a_judge_below_the_threshold(project):
    from builders import meta_eval

    text = BENCH.replace("  mode: jury\n  members: [oracle, position, longer]\n", "  members: [contrarian]\n")
    text = text.replace("  contrarian: {{provider: fake, model: auto, temperature: 0.3}}",
                        "  contrarian: {{provider: fake, model: auto}}")
    text = text.replace("  oracle: {{provider: fake, model: auto}}", "  oracle: {{provider: fake, model: auto, temperature: 0.4}}")
    recipe, data = _build(project, text=text)
    meta_eval.build(recipe, data, resamples=200)
    gated = _gated_recipe(project, 0.2)
    for stage in ("items", "candidates", "labels", "debates", "scores", "verdicts"):
        run_stage(gated, stage, progress=False)
    with pytest.raises(BuildError) as err:
        run_stage(gated, "kto", progress=False)
    message = str(err.value)
    assert len(message.splitlines()) == 1
    assert "kappa of the judge (contrarian) on 'fair-slice' is 0.070 [95% CI" in message
    assert "16 items], below min_kappa 0.2; exports refused" in message
    assert not TABLES["kto"].path(project.parent / "data" / "gated").exists()


def test_gate_before_the_benchmark_was_measured_names_the_fix(project):
    write_recipe(project, "fair-slice", BENCH.format(name="fair-slice"))
    recipe = _gated_recipe(project, 0.3)
    for stage in ("items", "candidates", "labels", "debates", "scores", "verdicts"):
        run_stage(recipe, stage, progress=False)
    with pytest.raises(BuildError, match="fellowship meta-eval fair-slice"):
        run_stage(recipe, "dpo", progress=False)


def test_gate_must_name_an_existing_benchmark_recipe(project):
    with pytest.raises(RecipeError, match="export.gate.benchmark: no benchmark recipe 'nope'"):
        _gated_recipe(project, 0.3, benchmark="nope")
    with pytest.raises(RecipeError, match="has no human labels"):
        tiny_recipe(project, "plain")
        _gated_recipe(project, 0.3, benchmark="plain")


def test_benchmark_recipe_errors_are_one_line(project):
    bad = BENCH.format(name="bad").replace("  sample: 16\n", "  sample: 16\n  path: sources/capybara-demo.jsonl\n")
    write_recipe(project, "bad", bad)
    with pytest.raises(RecipeError, match="source.path: a benchmark is read from its vendored copy"):
        load_recipe(project / "recipes" / "bad.yaml")
    wrong = BENCH.format(name="wrong").replace(
        "generation: {workflow: import}", "generation: {workflow: import, answers: [{column: response_z, model: x}, {column: response_b, model: y}]}")
    write_recipe(project, "wrong", wrong)
    with pytest.raises(RecipeError, match=r"generation.answers\[0\].column: column 'response_z' not in benchmark fair-eval"):
        load_recipe(project / "recipes" / "wrong.yaml")


def test_meta_eval_command_and_hub_copy_of_a_benchmark(project, tmp_path):
    """The same benchmark read through `datasets.load_dataset` by id (a local folder stands in for the Hub)."""
    hub = tmp_path / "hub-fair-eval"
    hub.mkdir()
    ROWS.write_parquet(hub / "train.parquet")
    text = BENCH.format(name="hub-slice").replace("  benchmark: fair-eval\n", f"  benchmark: fair-eval\n  dataset: {hub}\n")
    text = text.replace("  mode: jury\n  members: [oracle, position, longer]\n", "  members: [oracle]\n")
    write_recipe(project, "hub-slice", text.replace("sample: 16", "sample: 6"))
    recipe = load_recipe(project / "recipes" / "hub-slice.yaml")
    assert recipe.source.dataset == str(hub)
    providers = {m: FakeProvider(recipe.models[m], script=[_answer(m)] * 64) for m in recipe.judge.panel.models}
    for stage in STAGES:
        run_stage(recipe, stage, providers=providers, progress=False)
    result = fellowship("meta-eval", "hub-slice", "--resamples", "200", cwd=project)
    assert "hub-slice: meta-eval: 15 evaluators over 6 items" in result.stderr
    assert "oracle: kappa 1.000" in result.stderr
    assert json.loads((project.parent / "data" / "hub-slice" / "metrics.json").read_text())["items"] == 6


def test_vendored_benchmarks_hold_the_papers_items_and_equal_the_shared_copies():
    shared = ROOT.parent / "shared" / "data" / "benchmarks"
    for name, rows, counts in (("fair-eval", 80, (25, 41, 14)), ("pandalm-eval", 999, (422, 472, 105)),
                               ("mt-bench", 2396, (911, 902, 583))):
        ours = pl.read_parquet(benchmark_path(name))
        assert ours.height == rows and ours["item_id"].n_unique() == rows
        assert tuple(ours["human_winner"].value_counts().sort("human_winner")["count"]) == counts
        if shared.exists():  # CI checks out ../shared beside the project
            assert ours.equals(pl.read_ndjson(shared / f"{name}.jsonl", infer_schema_length=None))


LABELLED = """\
name: {name}
source:
  path: sources/pairs.jsonl
  prompt_column: q
  id_column: id
  label_column: winner
models:
  judge: {{provider: fake, model: auto}}
generation:
  workflow: import
  answers:
    - {{column: first, model_column: who_first}}
    - {{column: second, model: baseline}}
judge:
  panel: {{models: [judge]}}
export: {{}}
"""


def _pairs(project, rows):
    (project / "recipes" / "sources" / "pairs.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def _row(i, winner="model_a", **extra):
    return {"id": f"p{i}", "q": "same question", "first": f"answer {i}", "who_first": "m1", "second": f"other {i}",
            "winner": winner, **extra}


def test_any_labelled_source_works_and_repeated_questions_stay_separate_items(project):
    _pairs(project, [_row(0), _row(1, "tie"), _row(2, "model_b")])
    result = fellowship("build", "mine", "--no-progress", cwd=write_recipe(project, "mine", LABELLED.format(name="mine")).parents[1])
    assert "mine: meta-eval: 1 evaluators over 3 items" in result.stderr  # `build` ends with the meta-eval
    data = project.parent / "data" / "mine"
    labels = read_table(TABLES["labels"], data).sort("item_id")
    assert labels["item_id"].to_list() == ["p0", "p1", "p2"]
    assert labels["human_winner"].to_list() == ["model_a", "tie", "model_b"]
    assert set(labels["model_a"]) == {"m1"} and set(labels["model_b"]) == {"baseline"}


@pytest.mark.parametrize("rows, message", [
    ([_row(0), _row(1, "B")], "source row 1 of sources/pairs.jsonl: column 'winner' holds 'B', expected one of model_a, model_b, tie"),
    ([_row(0), _row(0)], "source row 1 of sources/pairs.jsonl: id 'p0' in column 'id' is used by an earlier row"),
    ([_row(0), {**_row(1), "first": None}], "source row 1 of sources/pairs.jsonl: column 'first' is empty (generation.answers[0])"),
])
def test_bad_labelled_rows_are_named(project, rows, message):
    _pairs(project, rows)
    write_recipe(project, "mine", LABELLED.format(name="mine"))
    result = fellowship("build", "mine", "--no-progress", cwd=project, check=False)
    assert result.returncode == 1 and message in result.stderr and "Traceback" not in result.stderr
    assert not (project.parent / "data" / "mine" / "labels.parquet").exists()


def test_answers_can_come_from_a_struct_column(project):
    """The 500 Capybara prompts ship their baselines as `responses.{model}`: each imports as a candidate."""
    rows = [{"prompt_id": f"c{i}", "prompt": f"question {i}", "responses": {"gpt-4o": f"g{i}", "gemma": f"m{i}"}}
            for i in range(3)]
    (project / "recipes" / "sources" / "baselines.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    text = LABELLED.format(name="base").replace("  path: sources/pairs.jsonl\n  prompt_column: q\n  id_column: id\n  label_column: winner\n",
                                                "  path: sources/baselines.jsonl\n")
    text = text.replace("    - {column: first, model_column: who_first}\n    - {column: second, model: baseline}\n",
                        "    - {column: responses.gpt-4o, model: gpt-4o}\n    - {column: responses.gemma, model: gemma}\n")
    recipe = load_recipe(write_recipe(project, "base", text))
    for stage in ("items", "candidates"):
        run_stage(recipe, stage, progress=False)
    candidates = read_table(TABLES["candidates"], project.parent / "data" / "base").sort("generator", "response")
    assert candidates["generator"].to_list() == ["gemma"] * 3 + ["gpt-4o"] * 3
    assert candidates["response"].to_list() == ["m0", "m1", "m2", "g0", "g1", "g2"]
    assert (candidates["tokens_in"] == 0).all() and set(candidates["workflow"]) == {"import"}


@pytest.mark.parametrize("generation, message", [
    ("{workflow: import}", "generation.answers: name the source columns that hold the answers to import"),
    ("{workflow: import, generator: judge, answers: [{column: a, model: x}, {column: b, model: y}]}",
     "generation.generator: the import workflow generates nothing"),
    ("{workflow: single}", "generation.generator: the single workflow needs a generator model"),
    ("{workflow: import, answers: [{column: a}]}", "generation.answers[0]: give exactly one of `model` or `model_column`"),
])
def test_import_workflow_errors(project, generation, message):
    text = LABELLED.format(name="imp").replace("  label_column: winner\n", "")
    start = text.index("generation:")
    text = text[:start] + f"generation: {generation}\n" + text[text.index("\njudge:") + 1:]
    _pairs(project, [_row(0)])
    with pytest.raises(RecipeError, match=re.escape(message)):
        load_recipe(write_recipe(project, "imp", text))


def test_a_debate_benchmark_measures_each_referee_and_their_vote(project):
    from builders import meta_eval

    text = BENCH.replace("  panel:\n    models: [oracle, position, longer, contrarian]\n  mode: jury\n  members: [oracle, position, longer]\n",
                         "  panel:\n    debate:\n      rounds: 1\n      referees: {{general_public: oracle, psychologist: longer, critic: contrarian}}\n  mode: debate\n")
    text = text.replace("sample: 16", "sample: 5")
    recipe = load_recipe(write_recipe(project, "fair-debate", text.format(name="fair-debate")))
    for stage in STAGES:
        run_stage(recipe, stage, progress=False)
    data = project.parent / "data" / "fair-debate"
    meta_eval.build(recipe, data, resamples=200)
    agreement = read_table(TABLES["agreement"], data)
    assert set(agreement["evaluator"]) == {
        "general_public", "psychologist", "critic", "general_public+psychologist", "general_public+critic",
        "psychologist+critic", "general_public+psychologist+critic"}
    configured = agreement.filter("configured")
    assert configured["evaluator"].to_list() == ["general_public+psychologist+critic"]
    assert (agreement["n_items"] == 5).all() and agreement["fingerprint"].n_unique() == 7
    assert json.loads((data / "metrics.json").read_text())["strategy"] == "debate"
