"""The embedded local model (llama.cpp, the offline default) on one prompt, through the real engine."""

from __future__ import annotations

import math

import pytest

from builders.judging import ask, messages
from builders.judgment_parser import parse_judgment
from builders.strategies import JudgeSpec
from builders.llm.cache import ResponseCache
from builders.llm.engine import Engine
from builders.llm.local import DEFAULT_MODEL_SHA256, default_model_path, fold_system
from builders.loader import load_recipe
from conftest import tiny_recipe

pytestmark = pytest.mark.local_model


@pytest.fixture(scope="module")
def model_path():
    return default_model_path()


def test_default_model_is_joined_from_its_chunks_and_checked(model_path):
    assert model_path.stat().st_size > 900_000_000
    assert model_path.with_suffix(".sha256").read_text().split()[0] == DEFAULT_MODEL_SHA256


def test_one_prompt_is_answered_deterministically(project, tmp_path, model_path):
    recipe = load_recipe(tiny_recipe(project, provider="local", model="default", extra=", max_tokens: 24"))
    question = [{"role": "user", "content": "Name the largest planet of the solar system."}]
    first = Engine.for_recipe(recipe, cache=ResponseCache(tmp_path / "a"), progress=False)
    answer = first.run(first.chat("writer", question))
    assert "Jupiter" in answer.text
    assert answer.tokens_in > 5 and 0 < answer.tokens_out <= 24 and not answer.cached
    second = Engine.for_recipe(recipe, cache=ResponseCache(tmp_path / "b"), progress=False)
    assert second.run(second.chat("writer", question)).text == answer.text


def test_grammar_makes_the_judge_answer_parseable(project, tmp_path, model_path):
    recipe = load_recipe(tiny_recipe(project, provider="local", model="default", extra=", max_tokens: 120"))
    conversation = messages(recipe, "What is 2 + 2?", ["4", "5"])
    engine = Engine.for_recipe(recipe, cache=ResponseCache(tmp_path / "c"), progress=False)
    answer = engine.run(engine.chat("judge", conversation.messages, output=JudgeSpec.of(recipe.judge.panel).output_format(2)))
    judgment = parse_judgment(answer.text, strategy="combined", scale=10, n=2)
    assert judgment.ok, answer.text


def test_system_prompt_folding():
    folded = fold_system([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
    assert folded == [{"role": "user", "content": "Be brief.\n\nHi"}]


def test_structured_json_verdict_from_the_local_model(project, tmp_path, model_path):
    path = tiny_recipe(project, provider="local", model="default", extra=", max_tokens: 160")
    path.write_text(path.read_text().replace("    models: [judge]\n", "    models: [judge]\n    structured: true\n"))
    recipe = load_recipe(path)
    conversation = messages(recipe, "What is 2 + 2?", ["4", "5"])
    engine = Engine.for_recipe(recipe, cache=ResponseCache(tmp_path / "d"), progress=False)
    answer = engine.run(engine.chat("judge", conversation.messages, output=JudgeSpec.of(recipe.judge.panel).output_format(2)))
    assert answer.text.lstrip().startswith("{")
    assert parse_judgment(answer.text, strategy="combined", scale=10, n=2).ok, answer.text


def _expected_judge(project):
    """The tiny recipe on the local model, judging by scores only, read as expected scores."""
    path = tiny_recipe(project, provider="local", model="default", extra=", max_tokens: 200")
    path.write_text(path.read_text().replace(
        "    models: [judge]\n", "    models: [judge]\n    score_mode: expected\n    reasoning: false\n"))
    recipe = load_recipe(path)
    return recipe, JudgeSpec.of(recipe.judge.panel)


def test_expected_scores_from_the_local_model(project, tmp_path, model_path):
    recipe, spec = _expected_judge(project)
    conversation = messages(recipe, "What is the capital of France?", ["Paris.", "I do not know."])
    engine = Engine.for_recipe(recipe, cache=ResponseCache(tmp_path / "e"), progress=False)
    answer = engine.run(ask(engine, spec, "judge", conversation, 2))
    assert answer.ok, answer.raw
    written = parse_judgment(answer.raw, strategy="combined", scale=10, n=2).scores
    assert all(0 <= s <= 10 for s in answer.judgment.scores)
    assert all(0.5 < m <= 1.0 + 1e-6 for m in answer.judgment.mass)  # most of the mass is on scores
    assert answer.judgment.scores != written  # a distribution, not the greedy digits
    response = engine.run(engine.chat("judge", conversation.messages, output=spec.output_format(2), max_tokens=spec.max_tokens(2)))
    assert response.cached and "".join(t.token for t in response.logprobs) == response.text
    for t in response.logprobs:
        assert t.top[0][1] >= t.top[-1][1] and sum(math.exp(lp) for _, lp in t.top) <= 1 + 1e-6


def test_a_prompt_scores_the_same_whatever_was_asked_before(project, tmp_path, model_path):
    recipe, spec = _expected_judge(project)
    first = messages(recipe, "Name a primary colour.", ["Red.", "Blue."])
    other = messages(recipe, "Name a primary colour.", ["Blue.", "Red."])  # shares a long prefix with `first`
    runs = []
    for k, order in enumerate([[first], [other, first]]):
        engine = Engine.for_recipe(recipe, cache=ResponseCache(tmp_path / f"run{k}"), progress=False)
        runs.append([engine.run(ask(engine, spec, "judge", c, 2)) for c in order][-1])
    assert runs[0].judgment.scores == runs[1].judgment.scores  # bit for bit, not only close
