"""The real `openai` and `together` SDK code paths (builders/llm/sdk.py, driven by the Engine) against a
fake OpenAI-compatible server on 127.0.0.1: answers, usage, keys, retries on every transient fault,
errors that must not be retried, the response cache, and the missing-key message of the CLI.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

import pytest
from conftest import tiny_recipe
from openai_server import FakeOpenAIServer, Fault, completion_body

from builders.errors import MissingKeyError, ProviderError
from builders.llm.engine import Engine
from builders.llm.fake import auto_answer
from builders.loader import load_recipe

KEY_VARIABLE = {"openai": "OPENAI_API_KEY", "together": "TOGETHER_API_KEY", "openai-compatible": None}
API_KEY = "sk-test-0123456789-secret"
MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Why is the sky blue?"},
]


@pytest.fixture
def server():
    with FakeOpenAIServer() as s:
        yield s


@pytest.fixture(params=list(KEY_VARIABLE))
def provider(request, monkeypatch) -> str:
    """Each SDK provider, with its API key (if it needs one) set to a dummy."""
    if KEY_VARIABLE[request.param]:
        monkeypatch.setenv(KEY_VARIABLE[request.param], API_KEY)
    return request.param


def make_engine(project, server, provider: str, extra: str = "") -> Engine:
    """An engine for the tiny recipe with every role on `provider`/gpt-test at the fake server."""
    path = tiny_recipe(project, provider=provider, model="gpt-test", extra=f", base_url: '{server.base_url}'{extra}")
    return Engine.for_recipe(load_recipe(path), progress=False)


def ask(engine: Engine, messages=MESSAGES):
    return engine.run(engine.chat("writer", messages))


def test_call_returns_the_text_and_token_usage(project, server, provider):
    engine = make_engine(project, server, provider, extra=", price: {input: 2.0, output: 10.0}")
    response = ask(engine)

    [request] = server.requests
    expected = completion_body(request["json"])["usage"]
    assert request["path"].endswith("/chat/completions")
    assert request["json"]["model"] == "gpt-test"
    assert request["json"]["messages"] == MESSAGES
    assert request["json"]["temperature"] == 0.0 and request["json"]["seed"] == 0
    max_tokens_param = "max_completion_tokens" if provider == "openai" else "max_tokens"
    assert request["json"][max_tokens_param] == 512
    assert response.text == auto_answer(MESSAGES)
    assert (response.tokens_in, response.tokens_out) == (expected["prompt_tokens"], expected["completion_tokens"])
    assert response.cost_usd == pytest.approx((2.0 * response.tokens_in + 10.0 * response.tokens_out) / 1e6)
    assert response.finish_reason == "stop" and response.cached is False
    assert (engine.usage.calls, engine.usage.retries, engine.usage.tokens_in) == (1, 0, response.tokens_in)


@pytest.mark.parametrize("provider", ["openai", "together"], indirect=True)
def test_api_key_is_sent_as_bearer_token_and_never_cached(project, server, provider, tmp_path):
    engine = make_engine(project, server, provider)
    ask(engine)
    engine.cache.close()  # checkpoint the WAL into the database file

    assert server.requests[0]["headers"]["authorization"] == f"Bearer {API_KEY}"
    cache_files = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert cache_files
    for path in cache_files:
        assert API_KEY.encode() not in path.read_bytes(), path


def test_openai_compatible_server_uses_the_key_variable_the_recipe_names(project, server, monkeypatch):
    monkeypatch.setenv("MY_VLLM_KEY", API_KEY)
    ask(make_engine(project, server, "openai-compatible", extra=", api_key_env: MY_VLLM_KEY"))
    assert server.requests[0]["headers"]["authorization"] == f"Bearer {API_KEY}"


def test_rate_limit_is_retried_after_the_servers_retry_after(project, server, provider):
    server.fail_next(Fault("429", retry_after=0.3))
    engine = make_engine(project, server, provider)
    started = time.monotonic()
    response = ask(engine)
    elapsed = time.monotonic() - started

    assert response.text == auto_answer(MESSAGES)
    assert len(server.requests) == 2 and server.completed == 1
    assert engine.usage.retries == 1
    # FELLOWSHIP_RETRY_BASE_S=0 makes the engine's own backoff 0: any wait comes from Retry-After.
    # (5 ms of slack for the event loop's clock resolution.)
    assert server.requests[1]["time"] - server.requests[0]["time"] >= 0.3 - 0.005
    assert elapsed >= 0.3 - 0.005


@pytest.mark.parametrize("fault", ["500", "broken-json", "drop"])
def test_transient_fault_is_retried_then_succeeds(project, server, provider, fault):
    server.fail_next(fault)
    engine = make_engine(project, server, provider)
    response = ask(engine)

    assert response.text == auto_answer(MESSAGES)
    assert server.faults_sent[fault] == 1
    assert len(server.requests) == 2 and server.completed == 1
    assert (engine.usage.calls, engine.usage.retries) == (1, 1)


def test_bad_request_is_not_retried(project, server, provider):
    server.fail_next("400")
    engine = make_engine(project, server, provider)
    with pytest.raises(ProviderError, match="HTTP 400") as info:
        ask(engine)

    assert "model 'writer'" in str(info.value) and "after 1 attempt)" in str(info.value)
    assert len(server.requests) == 1
    assert engine.usage.retries == 0 and len(engine.cache) == 0


def test_exhausted_retries_raise_provider_error_naming_the_model(project, server, provider):
    server.fail_next("500", "drop", "500")
    engine = make_engine(project, server, provider, extra=", max_retries: 2")
    with pytest.raises(ProviderError) as info:
        ask(engine)

    message = str(info.value)
    assert f"model 'writer' ({provider}/gpt-test)" in message
    assert "HTTP 500" in message and "after 3 attempts" in message
    assert len(server.requests) == 3 and server.completed == 0
    assert len(engine.cache) == 0


def test_identical_call_is_served_by_the_cache(project, server, provider):
    first = ask(make_engine(project, server, provider))
    engine = make_engine(project, server, provider)  # a new run, same cache folder
    second = ask(engine)

    assert len(server.requests) == 1
    assert second.cached is True and first.cached is False
    assert (second.text, second.tokens_in, second.tokens_out) == (first.text, first.tokens_in, first.tokens_out)
    assert (engine.usage.calls, engine.usage.cached) == (0, 1)


@pytest.mark.parametrize("provider", ["openai", "together"])
def test_missing_key_raises_error_naming_the_variable(project, server, provider):
    engine = make_engine(project, server, provider)
    with pytest.raises(MissingKeyError, match=KEY_VARIABLE[provider]) as info:
        ask(engine)
    assert info.value.variable == KEY_VARIABLE[provider]
    assert server.requests == []


def _fellowship() -> list[str]:
    exe = shutil.which("fellowship")
    return [exe] if exe else [sys.executable, "-c", "from builders.cli import main; main()"]


@pytest.mark.parametrize("command", ["validate", "build"])
def test_cli_reports_a_missing_key_in_one_line(project, server, command):
    # the writer on OpenAI, the other roles offline: exactly one problem to report
    path = tiny_recipe(project)
    writer = f"  writer: {{provider: openai, model: gpt-test, base_url: '{server.base_url}'}}"
    path.write_text(path.read_text().replace("  writer: {provider: fake, model: auto}", writer))

    result = subprocess.run([*_fellowship(), command, str(path)], capture_output=True, text=True, cwd=project)

    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "OPENAI_API_KEY" in lines[0] and "writer" in lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    assert server.requests == []


def test_retry_after_header_forms():
    from builders.llm.sdk import retry_after

    assert retry_after({"retry-after": "2"}) == 2.0
    assert retry_after({"retry-after-ms": "250"}) == 0.25
    assert retry_after({"retry-after": "soon"}) is None
    assert retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0  # a date in the past: no wait
    assert retry_after({}) is None


def test_together_base_url_is_accepted_with_or_without_v1():
    from builders.llm.sdk import TogetherProvider

    assert TogetherProvider.base_url("https://api.together.xyz/v1") == "https://api.together.xyz"
    assert TogetherProvider.base_url("https://api.together.xyz/") == "https://api.together.xyz"


def test_independent_samples_get_their_own_seed(project, server, provider):
    engine = make_engine(project, server, provider, extra=", temperature: 0.8, seed: 10")

    async def three_samples():
        return [await engine.chat("writer", MESSAGES, sample_index=k) for k in range(3)]

    engine.run(three_samples())
    assert [r["json"]["seed"] for r in server.requests] == [10, 11, 12]
