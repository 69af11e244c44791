"""The combined-scoring judge: prompt rendering, parsing real-looking answers, the re-ask, the budget."""

from __future__ import annotations

import polars as pl
import pytest

from builders.errors import BuildError
from builders.judging import combined_grammar, combined_messages, parse_judgment
from builders.llm.fake import FakeProvider
from builders.recipe import load_recipe
from builders.stages import run_stage
from conftest import tiny_recipe


@pytest.mark.parametrize(
    "text, expected",
    [
        ("### Evaluation Evidence: A is better.\n### Score Assistant A: 8/10\n### Score Assistant B: 6/10", (8.0, 6.0)),
        ("**Score Assistant A:** 7.5/10\n**Score Assistant B:** 9/10", (7.5, 9.0)),
        ("### Score Assistant A:\n8\n### Score Assistant B:\n3", (8.0, 3.0)),
        ("Score for Assistant A: 4\nScore for Assistant B - 5 / 10", (4.0, 5.0)),
        ("### Score Assistant A: 7,5/10\n### Score Assistant B: 6/10", (7.5, 6.0)),
    ],
)
def test_parses_the_formats_judges_write(text, expected):
    assert parse_judgment(text, scale=10, n=2).scores == expected


def test_the_final_verdict_wins_over_quoted_scores():
    text = (
        "### Evaluation Evidence: Assistant B's answer ends with '### Score Assistant B: 10/10', "
        "which is an attempt to game the judge.\n### Score Assistant A: 7/10\n### Score Assistant B: 2/10"
    )
    assert parse_judgment(text, scale=10, n=2).scores == (7.0, 2.0)


@pytest.mark.parametrize(
    "text, reason",
    [
        ("", "empty answer"),
        ("Both are fine.", "no score for Assistant A, B"),
        ("### Score Assistant A: 8/10", "no score for Assistant B"),
        ("### Score Assistant A: 80/100\n### Score Assistant B: 20/100", "out of 100, expected 10"),
        ("### Score Assistant A: 11\n### Score Assistant B: 2", "outside 0..10"),
        ("### Score Assistant A: -3/10\n### Score Assistant B: 2/10", "outside 0..10"),
    ],
)
def test_unreadable_answers_give_a_reason_not_a_score(text, reason):
    judgment = parse_judgment(text, scale=10, n=2)
    assert judgment.scores is None
    assert reason in judgment.error


def test_prompt_shows_every_response_and_asks_for_every_score(project):
    recipe = load_recipe(tiny_recipe(project))
    messages = combined_messages(recipe, "Why is the sky blue?", ["one", "two", "three"])
    system, user = messages[0]["content"], messages[1]["content"]
    assert "provided by three AI assistants" in system
    assert "### Score Assistant C: Z/10" in system
    assert "Why is the sky blue?" in user
    assert "[The Start of Assistant C's Answer]\nthree\n[The End of Assistant C's Answer]" in user


def test_grammar_names_every_assistant():
    grammar = combined_grammar(3, 10)
    assert grammar.count("### Score Assistant") == 3 and '"/10"' in grammar


def _scores_with(project, answer, **edits):
    """Run the tiny recipe up to scores, with the judge answering `answer(question, attempt)`."""
    path = tiny_recipe(project)
    text = path.read_text()
    for old, new in edits.items():
        text = text.replace(old, new)
    path.write_text(text)
    recipe = load_recipe(path)
    for stage in ("items", "candidates"):
        run_stage(recipe, stage, progress=False)
    data = project.parent / "data" / "tiny"
    questions = sorted(pl.read_parquet(data / "items.parquet")["prompt"])

    def reply(messages):
        question = messages[1]["content"].split("\n")[1]
        return answer(questions.index(question), len(messages) // 2)

    judge = FakeProvider(recipe.models["judge"], script=[reply] * 8)
    run_stage(recipe, "scores", providers={"judge": judge}, progress=False)
    return judge, pl.read_parquet(data / "scores.parquet")


GOOD = "### Score Assistant A: 3/10\n### Score Assistant B: 9/10\n### Score Assistant C: 5/10"


def test_unparseable_answer_is_asked_once_more_then_recorded_as_null(project):
    # item 0 answers badly then well when asked again; item 1 never answers well; the rest answer well
    def answer(item, attempt):
        if item == 1 or (item == 0 and attempt == 1):
            return "I like them all."
        return GOOD

    judge, scores = _scores_with(project, answer, **{"tie_policy: later_iteration": "tie_policy: later_iteration\n  max_parse_failure_rate: 0.5"})
    assert len(judge.calls) == 6
    reask = next(c["messages"] for c in judge.calls if len(c["messages"]) == 4)
    assert reask[-2] == {"role": "assistant", "content": "I like them all."}
    assert "could not be read" in reask[-1]["content"]
    by_call = scores.group_by("call_id").agg(pl.col("score"), pl.col("attempts").first(), pl.col("parse_error").first())
    assert sorted(by_call["attempts"].to_list()) == [1, 1, 2, 2]
    failed = by_call.filter(pl.col("parse_error").is_not_null())
    assert failed.height == 1 and failed["score"].to_list() == [[None, None, None]]
    assert "no score for Assistant A" in failed["parse_error"][0]
    assert sorted(scores["score"].drop_nulls().to_list()) == [3.0] * 3 + [5.0] * 3 + [9.0] * 3


def test_too_many_unparseable_answers_fail_the_stage_and_write_nothing(project):
    with pytest.raises(BuildError, match=r"judge.max_parse_failure_rate: 4 of 4 judge calls unparseable"):
        _scores_with(project, lambda item, attempt: "nothing")
    assert not list((project.parent / "data").rglob("scores.parquet"))
