"""The workflow-improvement datasets (`dpo_feedback`, `kto_feedback`): preferences over the reviewer's
feedback, on a scripted feedback loop whose revisions a scripted judge ranks."""

from __future__ import annotations

import datasets
import polars as pl
import pytest

from builders.export_checks import dpo_problems, kto_problems
from builders.llm.fake import FakeProvider
from builders.loader import load_recipe
from builders.stages import run_stage
from builders.tables import TABLES, read_table
from builders.trl_format import trl_frame
from conftest import tiny_recipe

ANSWERS = ["first answer", "second answer", "third answer"]
REVIEWS = [f"### Evaluation: e{k}\n### Overall Score: {s}/10\n### Feedback: fix {k}" for k, s in ((1, 4), (2, 6))]


def _build(project, scores: tuple[float, float, float], *, extra_export: str = "", reviewers: str = "[reviewer]"):
    """One prompt, three answers (two reviews), the judge scoring answers 1, 2, 3 as `scores`."""
    path = tiny_recipe(project)
    text = path.read_text().replace("sample: 4", "sample: 1")
    text = text.replace("    models: [judge]\n", "    models: [judge]\n    orders: single\n")
    text = text.replace("  min_margin: 0\n", "  min_margin: 0\n" + extra_export).replace("reviewers: [reviewer]", f"reviewers: {reviewers}")
    path.write_text(text)
    recipe = load_recipe(path)
    verdict = "\n".join(f"### Score Assistant {x}: {s}/10" for x, s in zip("ABC", scores))
    providers = {
        "writer": FakeProvider(recipe.models["writer"], script=list(ANSWERS)),
        "reviewer": FakeProvider(recipe.models["reviewer"], script=list(REVIEWS)),
        "judge": FakeProvider(recipe.models["judge"], script=[verdict]),
    }
    for stage in ("items", "candidates", "labels", "debates", "scores", "verdicts", "dpo_feedback", "kto_feedback"):
        run_stage(recipe, stage, providers=providers, progress=False)
    data = project.parent / "data" / "tiny"
    return recipe, read_table(TABLES["dpo_feedback"], data), read_table(TABLES["kto_feedback"], data)


def _prompt_for(answer: str) -> str:
    return f"[Start of Assistant's Response]\n{answer}\n[End of Assistant's Response]"


def test_the_review_that_led_to_the_best_revision_is_chosen(project):
    # answer 3 (written after review 2) scores 9, answer 2 (after review 1) scores 4
    recipe, dpo, kto = _build(project, (5, 4, 9))
    assert dpo.height == 1
    row = dpo.row(0, named=True)
    assert row["chosen"] == REVIEWS[1] and row["rejected"] == REVIEWS[0]
    assert (row["chosen_iteration"], row["rejected_iteration"]) == (2, 1)
    assert (row["chosen_score"], row["rejected_score"], row["margin"]) == (9.0, 4.0, 5.0)
    # the reviewer's own prompt (Table 12), as the reviewer saw it: the question and the answer it reviewed
    assert _prompt_for("second answer") in row["prompt"] and "[Start of User Question]" in row["prompt"]
    assert _prompt_for("first answer") in row["rejected_prompt"]
    assert row["system"].startswith("Please give constructive feedback") and row["reviewer"] == "reviewer"
    assert kto.sort("iteration")["label"].to_list() == [False, True]
    assert kto.sort("iteration")["completion"].to_list() == REVIEWS
    assert kto["position"].to_list() == [0, 1] and kto["label"].to_list() == [True, False]


def test_a_revision_scored_higher_earlier_turns_the_preference_round(project):
    _, dpo, kto = _build(project, (3, 8, 6))
    row = dpo.row(0, named=True)
    assert row["chosen"] == REVIEWS[0] and row["rejected"] == REVIEWS[1] and row["margin"] == 2.0
    assert _prompt_for("first answer") in row["prompt"]


def test_a_tie_between_revisions_gives_no_pair(project):
    _, dpo, kto = _build(project, (3, 7, 7))
    assert dpo.height == 0 and kto["label"].to_list() == [True]


def test_several_reviewers_give_no_feedback_preferences(project):
    # both feedbacks reach the generator in one message: no revision can be credited to one review
    _, dpo, kto = _build(project, (5, 4, 9), reviewers="[reviewer, judge]")
    assert dpo.height == kto.height == 0


@pytest.mark.parametrize("fmt", ["conversational", "standard"])
def test_feedback_exports_keep_trls_contract_in_both_formats(project, tmp_path, fmt):
    recipe, dpo, kto = _build(project, (5, 4, 9), extra_export=f"  format: {fmt}\n")
    pairs, reviews = trl_frame("dpo_feedback", dpo, fmt), trl_frame("kto_feedback", kto, fmt)
    assert dpo_problems(pairs, "dpo_feedback") == [] and kto_problems(reviews, "kto_feedback") == []
    pairs.write_parquet(tmp_path / "pairs.parquet")
    loaded = datasets.load_dataset("parquet", data_files=str(tmp_path / "pairs.parquet"), split="train")[0]
    if fmt == "conversational":
        assert [m["role"] for m in loaded["prompt"]] == ["system", "user"]
        assert loaded["prompt"][0]["content"] == dpo["system"][0] and loaded["prompt"][1]["content"] == dpo["prompt"][0]
        assert loaded["chosen"] == [{"role": "assistant", "content": REVIEWS[1]}]
    else:
        assert loaded["prompt"] == dpo["system"][0] + "\n\n" + dpo["prompt"][0] and loaded["chosen"] == REVIEWS[1]
