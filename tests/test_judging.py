"""Judging: prompts for every strategy, the calls each strategy and presentation order make, the
re-ask, typed outcomes (unparseable, refused, api_error) and the failure budget."""

from __future__ import annotations

import polars as pl
import pytest

from builders.errors import BuildError, ProviderError
from builders.judging import messages
from builders.strategies import STRATEGIES
from builders.llm.fake import FakeProvider
from builders.loader import load_recipe
from builders.stages import run_stage
from conftest import tiny_recipe


def _recipe(project, **panel):
    path = tiny_recipe(project)
    lines = "".join(f"    {k}: {v}\n" for k, v in panel.items())
    path.write_text(path.read_text().replace("    models: [judge]\n", "    models: [judge]\n" + lines))
    return load_recipe(path)


def test_combined_prompt_shows_every_response_and_asks_for_every_score(project):
    recipe = _recipe(project)
    conversation = messages(recipe, "Why is the sky blue?", ["one", "two", "three"])
    system, user = (m["content"] for m in conversation.messages)
    assert "provided by three AI assistants" in system and "### Score Assistant C: Z/10" in system
    fence = conversation.marker
    assert f"[The Start of Assistant C's Answer {fence}]\nthree\n[The End of Assistant C's Answer {fence}]" in user


def test_direct_and_independent_prompts_follow_the_paper(project):
    direct = _recipe(project, strategy="direct")
    conversation = messages(direct, "Q?", ["one", "two"])
    system, user = (m["content"] for m in conversation.messages)
    assert "C: If it is a tie" in system and system.endswith("### Answer: A or B or C")
    assert f"[The Start of Assistant B's Answer {conversation.marker}]\ntwo" in user
    independent = _recipe(project, strategy="independent", scale=100)
    conversation = messages(independent, "Q?", ["only"])
    system, user = (m["content"] for m in conversation.messages)
    assert "overall score out of 100" in system and system.endswith("### Overall Score: X/100")
    assert f"[The Start of Assistant's Answer {conversation.marker}]\nonly\n" in user


def test_grammars_name_every_verdict_line():
    assert STRATEGIES["combined"].grammar(3, 10, reasoning=True).count("### Score Assistant") == 3
    assert '"\\n### Answer: " [ABC]' in STRATEGIES["direct"].grammar(2, 10, reasoning=True)
    assert '"/5"' in STRATEGIES["independent"].grammar(1, 5, reasoning=True)
    brief = STRATEGIES["combined"].grammar(2, 10, reasoning=False, integer=True)
    assert brief.startswith('root ::= "### Score Assistant A: " score') and "Evidence" not in brief
    assert 'score ::= ("10" | [0-9])' in brief


def _scores_with(project, answer, **panel):
    """Run the tiny recipe up to scores, with the judge answering `answer(item, shown, attempt)`.

    `item` is the item's index in prompt order, `shown` the iterations shown in order."""
    recipe = _recipe(project, **panel)
    for stage in ("items", "candidates", "debates"):
        run_stage(recipe, stage, progress=False)
    data = project.parent / "data" / "tiny"
    questions = sorted(pl.read_parquet(data / "items.parquet")["prompt"])
    candidates = pl.read_parquet(data / "candidates.parquet")
    iteration = dict(candidates.select("response", "iteration").iter_rows())

    def reply(conversation):
        user = conversation[1]["content"]
        question = user.split("\n")[1]
        shown = [it for text, it in sorted(iteration.items(), key=lambda kv: user.find(kv[0])) if text in user]
        return answer(questions.index(question), shown, len(conversation) // 2)

    judge = FakeProvider(recipe.models["judge"], script=[reply] * 100)
    run_stage(recipe, "scores", providers={"judge": judge}, progress=False)
    return judge, pl.read_parquet(data / "scores.parquet")


GOOD = "### Score Assistant A: 3/10\n### Score Assistant B: 9/10\n### Score Assistant C: 5/10"


def test_rotations_show_every_candidate_in_every_position_and_record_it(project):
    judge, scores = _scores_with(project, lambda item, shown, attempt: GOOD)
    assert len(judge.calls) == 12  # 4 items x 3 rotations of their 3 candidates
    assert scores.group_by("presentation").len().sort("presentation")["len"].to_list() == [12, 12, 12]
    places = scores.group_by("candidate_id").agg(pl.col("position").sort())
    assert all(p == [0, 1, 2] for p in places["position"].to_list())
    assert scores.filter("is_swapped")["presentation"].min() == 1


def test_reverse_and_single_orders(project):
    judge, scores = _scores_with(project, lambda item, shown, attempt: GOOD, orders="reverse")
    assert len(judge.calls) == 8
    swapped = scores.filter("is_swapped").join(scores.filter(~pl.col("is_swapped")), on="candidate_id")
    assert (swapped["position"] == 2 - swapped["position_right"]).all()


def test_direct_strategy_judges_every_pair_both_ways(project):
    def answer(item, shown, attempt):
        return "### Evaluation Evidence: later is better\n### Answer: " + ("A" if shown[0] > shown[1] else "B")

    judge, scores = _scores_with(project, answer, strategy="direct")
    assert len(judge.calls) == 4 * 3 * 2  # items x pairs x orders
    assert set(scores["pick"]) == {"A", "B"} and set(scores["score"]) == {0.0, 1.0}
    wins = scores.group_by("candidate_id").agg(pl.col("score").mean())
    assert sorted(wins["score"].to_list()) == [0.0] * 4 + [0.5] * 4 + [1.0] * 4


def test_independent_strategy_judges_each_answer_alone(project):
    judge, scores = _scores_with(project, lambda item, shown, attempt: "### Overall Score: 7/10", strategy="independent")
    assert len(judge.calls) == 12 and scores.height == 12 and (scores["position"] == 0).all()
    assert all(len(c["messages"]) == 2 for c in judge.calls)


def test_unparseable_answer_is_asked_once_more_then_recorded_as_null(project):
    # item 0 answers badly then well when asked again; item 1 never answers well; the rest answer well
    def answer(item, shown, attempt):
        return "I like them all." if item == 1 or (item == 0 and attempt == 1) else GOOD

    judge, scores = _scores_with(project, answer, orders="single", max_parse_failure_rate=0.5)
    assert len(judge.calls) == 6
    reask = next(c["messages"] for c in judge.calls if len(c["messages"]) == 4)
    assert reask[-2] == {"role": "assistant", "content": "I like them all."}
    assert "could not be read" in reask[-1]["content"]
    by_call = scores.group_by("call_id").agg(pl.col("score"), pl.col("attempts", "outcome", "parse_error").first())
    assert sorted(by_call["attempts"].to_list()) == [1, 1, 2, 2]
    failed = by_call.filter(pl.col("outcome") != "ok")
    assert failed["outcome"].to_list() == ["unparseable"] and failed["score"].to_list() == [[None, None, None]]
    assert "Assistant A" in failed["parse_error"][0]
    assert sorted(scores["score"].drop_nulls().to_list()) == [3.0] * 3 + [5.0] * 3 + [9.0] * 3


def test_refusals_and_provider_failures_are_typed_rows(project):
    def answer(item, shown, attempt):
        if item == 0:
            return "I'm sorry, but I can't help with evaluating these responses."
        if item == 1:
            raise ProviderError("HTTP 400: context too long", retryable=False)
        return GOOD

    _, scores = _scores_with(project, answer, orders="single", max_parse_failure_rate=0.5)
    outcomes = scores.group_by("outcome").agg(pl.col("call_id").n_unique()).sort("outcome")
    assert dict(outcomes.iter_rows()) == {"api_error": 1, "ok": 2, "refused": 1}
    failed = scores.filter(pl.col("outcome") != "ok")
    assert failed["score"].null_count() == failed.height
    assert "context too long" in failed.filter(outcome="api_error")["parse_error"][0]


def test_too_many_failed_calls_fail_the_stage_and_write_nothing(project):
    with pytest.raises(BuildError, match=r"max_parse_failure_rate: 12 of 12 judge calls failed \(unparseable 12"):
        _scores_with(project, lambda item, shown, attempt: "nothing")
    assert not list((project.parent / "data").rglob("scores.parquet"))


def test_structured_verdicts_through_an_openai_compatible_server(project, tmp_path):
    import json

    from openai_server import FakeOpenAIServer

    with FakeOpenAIServer() as server:
        path = tiny_recipe(project)
        text = path.read_text().replace(
            "  judge: {provider: fake, model: auto}",
            f"  judge: {{provider: openai-compatible, model: judge-model, base_url: '{server.base_url}'}}",
        )
        path.write_text(text.replace("    models: [judge]\n", "    models: [judge]\n    structured: true\n"))
        recipe = load_recipe(path)
        for stage in ("items", "candidates", "debates", "scores"):
            run_stage(recipe, stage, progress=False)
        scores = pl.read_parquet(project.parent / "data" / "tiny" / "scores.parquet")
        schema = server.requests[0]["json"]["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["scores"]["required"] == ["A", "B", "C"]
    assert (scores["outcome"] == "ok").all() and scores.height == 36
    first = scores.row(0, named=True)
    assert json.loads(first["raw"])["scores"][chr(ord("A") + first["position"])] == first["score"]
