"""The embedded local model (llama.cpp, the offline default) on one prompt, through the real engine."""

from __future__ import annotations

import pytest

from builders.judging import messages, output_format, parse_judgment
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
    first = Engine(recipe, cache=ResponseCache(tmp_path / "a"), progress=False)
    answer = first.run(first.chat("writer", question))
    assert "Jupiter" in answer.text
    assert answer.tokens_in > 5 and 0 < answer.tokens_out <= 24 and not answer.cached
    second = Engine(recipe, cache=ResponseCache(tmp_path / "b"), progress=False)
    assert second.run(second.chat("writer", question)).text == answer.text


def test_grammar_makes_the_judge_answer_parseable(project, tmp_path, model_path):
    recipe = load_recipe(tiny_recipe(project, provider="local", model="default", extra=", max_tokens: 120"))
    conversation = messages(recipe, "What is 2 + 2?", ["4", "5"])
    engine = Engine(recipe, cache=ResponseCache(tmp_path / "c"), progress=False)
    answer = engine.run(engine.chat("judge", conversation, output=output_format(recipe, 2)))
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
    engine = Engine(recipe, cache=ResponseCache(tmp_path / "d"), progress=False)
    answer = engine.run(engine.chat("judge", conversation, output=output_format(recipe, 2)))
    assert answer.text.lstrip().startswith("{")
    assert parse_judgment(answer.text, strategy="combined", scale=10, n=2).ok, answer.text
