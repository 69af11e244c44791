"""Judge analytics: a jury's effective number of votes, Krippendorff's alpha among judges, model
families, and the style-controlled win rate; each against hand-worked values or a reference."""

from __future__ import annotations

import krippendorff
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metrics import bootstrap
from metrics.agreement import A, B, MISSING, TIE
from metrics.families import check, identify, relation, warning
from metrics.krippendorff import alpha_interval, nominal_alpha
from metrics.neff import ErrorCorrelation, errors, kish
from metrics.style import markdown_density, markdown_elements
from metrics.win_rate import length_controlled, style_controlled

# --- n_eff -------------------------------------------------------------------------------------


def _jury(err: list[list[int]]) -> ErrorCorrelation:
    e = np.array(err, dtype=float)
    return ErrorCorrelation([f"j{i}" for i in range(len(err))], e, bootstrap.weights(e.shape[1], 200, 0))


def test_n_eff_hand_worked():
    # Errors over 4 items: j0 and j1 err on the same two items (rho = 1); j2 errs on one of those and
    # one other: each error rate is 1/2, E[e0 e2] = 1/4 = 1/2 * 1/2, so rho(j0, j2) = rho(j1, j2) = 0.
    # mean rho = (1 + 0 + 0) / 3; n_eff = 3 / (1 + 2 * 1/3) = 9/5.
    c = _jury([[1, 1, 0, 0], [1, 1, 0, 0], [1, 0, 1, 0]])
    assert c.n_eff(("j0", "j1", "j2"))[0] == pytest.approx(1.8)
    assert c.mean_rho(("j0", "j1", "j2"))[0] == pytest.approx(1 / 3)
    assert c.n_eff(("j0", "j1"))[0] == pytest.approx(1.0)  # two copies of one judge: one vote
    assert c.n_eff(("j0", "j2"))[0] == pytest.approx(2.0)  # independent errors: two votes
    assert c.n_eff(("j1",)) == (1.0, 1.0, 1.0)


def test_n_eff_caps_cancelling_errors_and_skips_undefined_pairs():
    # j0 and j1 err on opposite items (rho = -1): 2 / (1 - 1) is unbounded; at most k votes.
    c = _jury([[1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 0, 0]])
    assert c.n_eff(("j0", "j1"))[0] == 2.0
    # j2 never errs: its correlations are undefined and left out of the mean (only rho(j0, j1) = -1)
    assert c.mean_rho(("j0", "j1", "j2"))[0] == pytest.approx(-1.0)
    assert c.n_eff(("j0", "j1", "j2"))[0] == 3.0
    assert np.isnan(c.n_eff(("j0", "j2"))[0])


def test_n_eff_from_labels_and_its_interval():
    human = np.array([A, B, TIE, A, B, A], dtype=np.int8)
    labels = np.array([[A, B, TIE, B, B, A], [A, B, MISSING, B, A, A]], dtype=np.int8)
    # MISSING counts as TIE, as in accuracy: the second judge is right on item 2
    assert errors(human, labels).tolist() == [[0, 0, 0, 1, 0, 0], [0, 0, 0, 1, 1, 0]]
    c = ErrorCorrelation(["x", "y"], errors(human, labels), bootstrap.weights(6, 300, 1))
    # e_x = item 3 only, e_y = items 3 and 4: rho = (1/6 - 1/6 * 2/6) / sqrt(5/36 * 8/36) = 0.632
    value, low, high = c.n_eff(("x", "y"))
    assert value == pytest.approx(2 / (1 + np.sqrt(0.4)))
    assert 1 <= low <= value <= high <= 2
    assert kish(9, 0.5) == pytest.approx(1.8)  # nine judges at mean rho 0.5 are worth 1.8 votes


# --- Krippendorff's alpha ----------------------------------------------------------------------

N = np.nan
# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C: 4 observers, 12 units,
# values 1..5 with missing data; nominal alpha = 0.743.
PUBLISHED = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, N, N, N],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, N, 3],
    [N, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, N],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, N],
]


def _codes(rows) -> np.ndarray:
    a = np.array(rows, dtype=float)
    return np.where(np.isnan(a), MISSING, a - 1).astype(np.int64)


def test_alpha_matches_the_published_worked_example():
    assert nominal_alpha(_codes(PUBLISHED), 5) == pytest.approx(0.743, abs=5e-4)
    assert nominal_alpha(_codes(PUBLISHED), 5) == pytest.approx(
        krippendorff.alpha(reliability_data=PUBLISHED, level_of_measurement="nominal"), abs=1e-12
    )


def test_alpha_hand_worked():
    # two coders who always disagree, values balanced: D_o = 1, D_e = 4/7, alpha = 1 - 7/4
    assert nominal_alpha(np.array([[A, A, B, B], [B, B, A, A]]), 2) == pytest.approx(-0.75)
    assert nominal_alpha(np.array([[A, B, TIE], [A, B, TIE], [A, B, TIE]])) == 1.0
    assert np.isnan(nominal_alpha(np.array([[TIE, TIE], [TIE, TIE]])))  # nothing to disagree about
    # a unit with one label is not pairable: alpha is that of the other units alone
    assert nominal_alpha(np.array([[A, B, A], [A, B, MISSING]])) == 1.0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.sampled_from([A, B, TIE, MISSING]), min_size=8, max_size=8), min_size=2, max_size=5))
def test_alpha_agrees_with_the_krippendorff_package(rows):
    labels = np.array(rows)
    reference_data = np.where(labels == MISSING, np.nan, labels.astype(float))
    pairable = ((labels != MISSING).sum(axis=0) >= 2).any()
    values = set(labels[:, (labels != MISSING).sum(axis=0) >= 2].ravel().tolist()) - {MISSING}
    ours = nominal_alpha(labels)
    if not pairable or len(values) < 2:
        assert np.isnan(ours)
        return
    expected = krippendorff.alpha(reliability_data=reference_data, level_of_measurement="nominal",
                                  value_domain=[A, B, TIE])
    assert ours == pytest.approx(expected, abs=1e-9)


def test_alpha_interval_brackets_the_estimate():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 3, 60)
    labels = np.stack([np.where(rng.random(60) < 0.8, truth, rng.integers(0, 3, 60)) for _ in range(3)])
    low, high = alpha_interval(bootstrap.weights(60, 400, 0), labels)
    assert low < nominal_alpha(labels) < high


# --- model families ----------------------------------------------------------------------------

@pytest.mark.parametrize("judge, writer, expected", [
    ("openai/gpt-4o", "gpt-4o", "same_model"),
    ("openai/gpt-4o", "gpt-4o-mini", "same_family"),
    ("openai/gpt-4o", "gpt-3.5-turbo", "same_family"),
    ("openai/gpt-4o", "o3-mini", "same_maker"),
    ("together/meta-llama/Meta-Llama-3.1-8B-Instruct-Turbo", "Meta-Llama-3.1-8B-Instruct-Turbo", "same_model"),
    ("together/meta-llama/Llama-3.3-70B-Instruct-Turbo", "llama-13b", "same_family"),
    ("together/meta-llama/Llama-3.3-70B-Instruct-Turbo", "vicuna-13b", "same_family"),
    ("together/meta-llama/Llama-3.3-70B-Instruct-Turbo", "opt-7b", "same_maker"),
    ("together/google/gemma-2-9b-it", "gemini-2.5-pro", "same_maker"),
    ("together/google/gemma-2-9b-it", "gemma-2-9b", "same_family"),
    ("openai/gpt-4o", "cerebras-gpt-6.7B", "different"),  # Cerebras-GPT is not OpenAI's
    ("openai/gpt-4o", "claude-v1", "different"),
    ("local/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf", "Qwen/Qwen2.5-Coder-1.5B-Instruct", "same_model"),
    ("local/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf", "qwen2.5-72b-instruct", "same_family"),
    ("fake/auto", "fake/auto", "same_model"),
    ("fake/auto", "gpt-4o", "unknown"),
    ("openai-compatible/my-model", "pythia-6.9b", "unknown"),
])
def test_family_relations(judge, writer, expected):
    assert relation(judge, writer) == expected


def test_families_of_the_benchmarks_writers():
    assert {m: identify(m).family for m in ("bloom-7b", "pythia-6.9b", "alpaca-13b", "vicuna-13b-v1.2", "claude-v1")} == {
        "bloom-7b": "bloom", "pythia-6.9b": "pythia", "alpaca-13b": "llama", "vicuna-13b-v1.2": "llama",
        "claude-v1": "claude",
    }


def test_family_warning_is_one_line_naming_each_flagged_pair():
    rows = check({"judge": "openai/gpt-4o", "other": "together/google/gemma-2-9b-it"},
                 ["gpt-4o-mini", "claude-v1", "gemma-2-9b"])
    assert {(r["judge"], r["writer"]): r["relation"] for r in rows}[("other", "gpt-4o-mini")] == "different"
    line = warning(rows)
    assert "\n" not in line and "judge 'judge' (openai/gpt-4o)" in line and "gpt-4o-mini" in line
    assert "judge 'other'" in line and "gemma-2-9b" in line and "claude-v1" not in line
    assert warning(check({"j": "openai/gpt-4o"}, ["claude-v1"])) is None


# --- style control -----------------------------------------------------------------------------

def test_markdown_density():
    text = "# Title\n\n- one\n- two\n\n**Bold** words and a | stray pipe.\n"
    assert markdown_elements(text) == 4
    assert markdown_density(text) == pytest.approx(4000 / len(text))
    assert markdown_density("") == 0.0 and markdown_elements("plain text, 3 * 4 = 12") == 0


def test_style_control_removes_a_judge_that_only_likes_markdown():
    # The contender writes more markdown and the judge prefers whichever answer has more of it;
    # lengths have nothing to do with the verdict. At equal markdown the contender is even.
    rng = np.random.default_rng(3)
    n = 400
    markdown_diff = rng.normal(4, 5, n)
    length_diff = rng.normal(0, 200, n)
    labels = np.where(markdown_diff + rng.normal(0, 1, n) > 0, A, B).astype(np.int8)
    raw = float((labels == A).mean())
    assert raw > 0.7
    length, _, _ = length_controlled(labels, length_diff, "half")
    style, low, high = style_controlled(labels, length_diff, markdown_diff, "half", bootstrap.weights(n, 50, 0))
    assert length == pytest.approx(raw, abs=0.03)  # length control cannot see the style
    assert style == pytest.approx(0.5, abs=0.12) and low <= style <= high


# --- in meta-eval ------------------------------------------------------------------------------

def _jury_recipe() -> str:
    """test_meta_eval's FairEval slice, judged by two GPT-4o models and a Llama model."""
    from test_meta_eval import BENCH

    return BENCH.split("models:")[0] + """models:
  gpt: {{provider: openai, model: gpt-4o}}
  clone: {{provider: openai, model: gpt-4o-mini}}
  other: {{provider: together, model: meta-llama/Llama-3.3-70B-Instruct-Turbo}}
generation: {{workflow: import}}
export: {{}}
judge:
  panel:
    models: [gpt, clone, other]
  mode: jury
"""


JURY = _jury_recipe()


def _noisy(wrong_on):
    """A scripted judge that follows the human winner except on the items `wrong_on` picks (swapped)."""
    from test_meta_eval import _shown

    def answer(messages):
        row, swapped = _shown(messages)
        winner = row["human_winner"]
        if wrong_on(row["item_id"]):
            winner = {"model_a": "model_b", "model_b": "model_a", "tie": "model_a"}[winner]
        a, b = {"model_a": (9, 3), "model_b": (3, 9), "tie": (5, 5)}[winner]
        first, second = (b, a) if swapped else (a, b)
        return f"### Evaluation Evidence: scripted.\n### Score Assistant A: {first}/10\n### Score Assistant B: {second}/10"
    return answer


def noisy_jury(project, name="jury-slice"):
    """A fair-eval slice judged by three scripted judges: `gpt` and `clone` err on the same items,
    `other` on items of its own."""
    import hashlib

    from builders.llm.fake import FakeProvider
    from builders.loader import load_recipe
    from builders.stages import STAGES, run_stage
    from conftest import write_recipe

    bucket = lambda item, salt: hashlib.sha256(f"{salt}{item}".encode()).digest()[0] % 4 == 0  # about 1 in 4
    policies = {"gpt": _noisy(lambda i: bucket(i, "a")), "clone": _noisy(lambda i: bucket(i, "a")),
                "other": _noisy(lambda i: bucket(i, "b"))}
    recipe = load_recipe(write_recipe(project, name, JURY.format(name=name)), check_source=False)
    providers = {m: FakeProvider(recipe.models[m].model_copy(update={"provider": "fake", "model": "scripted"}),
                                 script=[policies[m]] * 200) for m in policies}
    for stage in STAGES:
        run_stage(recipe, stage, providers=providers, progress=False)
    return recipe, project.parent / "data" / name


def test_meta_eval_reports_each_jurys_independent_votes_and_the_judges_alpha(project):
    import json

    from builders import meta_eval
    from builders.tables import TABLES, read_table
    from metrics.judgments import judgments

    recipe, data = noisy_jury(project)
    meta_eval.build(recipe, data, resamples=300)
    by = {r["evaluator"]: r for r in read_table(TABLES["agreement"], data).to_dicts()}
    j = judgments(*(read_table(TABLES[t], data) for t in ("labels", "candidates", "scores")), recipe.judge.judges)
    err = errors(j.human, j.final)
    rho = np.corrcoef(err)
    assert by["gpt+clone"]["n_eff"] == pytest.approx(1.0) and by["gpt+clone"]["error_correlation"] == pytest.approx(1.0)
    assert by["gpt+other"]["n_eff"] == pytest.approx(2 / (1 + rho[0, 2]), abs=1e-6)
    mean_rho = (rho[0, 1] + rho[0, 2] + rho[1, 2]) / 3
    whole = by["gpt+clone+other"]
    assert whole["n_eff"] == pytest.approx(3 / (1 + 2 * mean_rho), abs=1e-6)
    assert whole["n_eff_low"] <= whole["n_eff"] <= whole["n_eff_high"]
    assert by["gpt"]["n_eff"] == 1.0 and by["gpt"]["alpha"] is None and by["gpt"]["error_correlation"] is None
    expected_alpha = krippendorff.alpha(reliability_data=np.where(j.final == MISSING, np.nan, j.final).astype(float),
                                        level_of_measurement="nominal", value_domain=[A, B, TIE])
    assert whole["alpha"] == pytest.approx(expected_alpha, abs=1e-6)
    assert whole["alpha_low"] <= whole["alpha"] <= whole["alpha_high"]

    metrics = json.loads((data / "metrics.json").read_text())
    assert metrics["panel"]["n_eff"] == whole["n_eff"] and metrics["panel"]["alpha"] == whole["alpha"]
    assert metrics["configured"]["n_eff"] == whole["n_eff"]
    relations = {(f["judge"], f["writer"]): f["relation"] for f in metrics["families"]}
    assert relations[("gpt", "gpt-3.5-turbo")] == "same_family" and relations[("other", "vicuna-13b")] == "same_family"
    assert relations[("gpt", "vicuna-13b")] == "different"
    per_model = read_table(TABLES["model_agreement"], data).filter(evaluator="gpt+clone+other")
    assert dict(per_model.select("model", "family").iter_rows()) == {"gpt-3.5-turbo": "same_family", "vicuna-13b": "same_family"}
    assert dict(read_table(TABLES["model_agreement"], data).filter(evaluator="gpt").select("model", "family").iter_rows()) == {
        "gpt-3.5-turbo": "same_family", "vicuna-13b": "different"}


def test_validate_warns_in_one_line_when_a_judge_grades_its_own_family(project):
    from conftest import fellowship, tiny_recipe, write_recipe

    tiny_recipe(project)
    result = fellowship("validate", "tiny", cwd=project)
    assert result.returncode == 0 and "tiny.yaml: ok" in result.stdout
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("recipes/tiny.yaml: warning: judge 'judge' (fake/auto) grades answers by its own model")
    write_recipe(project, "jury-slice", JURY.format(name="jury-slice"))
    keys = {"OPENAI_API_KEY": "x", "TOGETHER_API_KEY": "x"}
    import os
    import subprocess

    benchmark = subprocess.run(["fellowship", "validate", "jury-slice"], cwd=project, capture_output=True, text=True,
                               env={**os.environ, **keys})
    assert benchmark.returncode == 0, benchmark.stderr
    (line,) = benchmark.stderr.strip().splitlines()
    assert "judge 'gpt' (openai/gpt-4o) grades answers by its family (gpt): gpt-3.5-turbo" in line
    assert "judge 'other' (together/meta-llama/Llama-3.3-70B-Instruct-Turbo) grades answers by its family (llama): vicuna-13b" in line


def test_the_card_names_the_self_preference_risk(project):
    from builders import card
    from builders.loader import load_recipe
    from builders.stages import STAGES, run_stage
    from conftest import tiny_recipe

    recipe = load_recipe(tiny_recipe(project))
    for stage in STAGES:
        run_stage(recipe, stage, progress=False)
    text = card.card(recipe, project.parent / "data" / "tiny", "me/tiny")
    assert "- **Self-preference risk:** judge 'judge' (fake/auto) grades answers by its own model: fake/auto" in text
