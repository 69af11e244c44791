"""The paper's LLM Feedback Loop: what the generator and the reviewers are sent, and what is stored."""

from __future__ import annotations

import polars as pl
import pytest

from builders.generation import parse_review
from builders.llm.fake import FakeProvider
from builders.loader import load_recipe
from builders.stages import run_stage
from conftest import tiny_recipe


def test_review_parsing():
    text = "### Evaluation: Decent.\n### Overall Score: 6.5/10\n### Feedback: Add an example."
    assert parse_review(text) == (6.5, "Add an example.")
    assert parse_review("**Overall Score**: 7\n**Feedback**: shorter") == (7.0, "shorter")
    assert parse_review("Looks fine to me.") == (None, "Looks fine to me.")


def _run(project, *, reviewers: int):
    path = tiny_recipe(project)
    text = path.read_text().replace("sample: 4", "sample: 1")
    if reviewers == 2:  # a second reviewer on another model: the same model would share cached answers
        text = text.replace("reviewers: [reviewer]", "reviewers: [reviewer, judge]")
        text = text.replace("judge: {provider: fake, model: auto}", "judge: {provider: fake, model: echo}")
    path.write_text(text)
    recipe = load_recipe(path)
    writer = FakeProvider(recipe.models["writer"], script=["first answer", "second answer", "third answer"])
    reviews = [f"### Evaluation: ok\n### Overall Score: {s}/10\n### Feedback: fix {s}" for s in (4, 6, 5, 7)]
    reviewer = FakeProvider(recipe.models["reviewer"], script=reviews[: 2])
    other = FakeProvider(recipe.models["judge"], script=reviews[2:])
    run_stage(recipe, "items", progress=False)
    run_stage(recipe, "candidates", providers={"writer": writer, "reviewer": reviewer, "judge": other}, progress=False)
    table = pl.read_parquet(next((project.parent / "data").rglob("candidates.parquet"))).sort("iteration")
    return writer, reviewer, other, table


def test_generator_revises_in_the_same_conversation(project):
    writer, reviewer, _, table = _run(project, reviewers=1)
    third = writer.calls[2]["messages"]
    assert [m["role"] for m in third] == ["user", "assistant", "user", "assistant", "user"]
    assert third[1]["content"] == "first answer" and third[3]["content"] == "second answer"
    assert "[Start of Feedback]\nfix 4\n[End of Feedback]" in third[2]["content"]
    assert "[Start of Feedback]\nfix 6\n[End of Feedback]" in third[4]["content"]
    assert "[Start of Assistant's Response]\nfirst answer\n[End of Assistant's Response]" in reviewer.calls[0]["messages"][1]["content"]
    assert table["response"].to_list() == ["first answer", "second answer", "third answer"]
    assert table["iteration"].to_list() == [1, 2, 3]
    assert table["review_score"].to_list() == [4.0, 6.0, None]
    assert table["feedback"].to_list() == [None, "fix 4", "fix 6"]


def test_two_reviewers_feedback_goes_in_one_message(project):
    writer, reviewer, other, table = _run(project, reviewers=2)
    revision = writer.calls[1]["messages"][-1]["content"]
    assert revision.startswith("Update your response based on the feedback by the two assistants:")
    assert "[Start of Assistant 1's Feedback]\nfix 4\n[End of Assistant 1's Feedback]" in revision
    assert "[Start of Assistant 2's Feedback]\nfix 5\n[End of Assistant 2's Feedback]" in revision
    assert table["review_score"].to_list()[:2] == [pytest.approx(4.5), pytest.approx(6.5)]
    assert table["reviewers"].to_list()[0] == ["reviewer", "judge"]
