"""Providers that speak the chat-completions API through an official SDK: OpenAI, Together, and any
OpenAI-compatible server (vLLM, Ollama, llama.cpp server) through the OpenAI SDK with a base URL.

The SDKs' own retries are switched off: the engine retries, so that every attempt is counted and
Retry-After is honoured the same way for every provider.
"""

from __future__ import annotations

import datetime
import email.utils
import inspect
import json
import re
import time
from types import ModuleType

from builders.errors import ProviderError
from builders.llm.batch_api import OpenAIBatchAPI, TogetherBatchAPI
from builders.llm.limiter import rate_limit
from builders.llm.logprobs import read_logprobs
from builders.llm.types import Completion, Message, OutputFormat, Provider
from builders.recipe import ModelSpec
from builders.redact import redact

RETRYABLE_STATUS = {408, 409, 425, 429}


def retry_after(headers) -> float | None:
    """Seconds to wait from `retry-after-ms` or `retry-after` (seconds or an HTTP date), if present."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return float(ms) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, parsed.timestamp() - time.time())


class ChatSDKProvider(Provider):
    sdk_name = "openai"
    client_class = "AsyncOpenAI"
    max_tokens_param = "max_tokens"

    def __init__(self, spec: ModelSpec, *, api_key: str | None):
        super().__init__(spec)
        self.sdk: ModuleType = __import__(self.sdk_name)
        kwargs = {"api_key": api_key or "unused", "max_retries": 0, "timeout": spec.timeout_s}
        if spec.base_url:
            kwargs["base_url"] = self.base_url(spec.base_url)
        self.client = getattr(self.sdk, self.client_class)(**kwargs)
        if self.batch_api_class is not None:
            self.batch_api = self.batch_api_class(self.client)

    @staticmethod
    def base_url(url: str) -> str:
        return url

    def request(self, messages: list[Message], sampling: dict, output: OutputFormat | None, sample_index: int) -> dict:
        """The chat-completions request body for one call (sent live, or as a line of a batch job)."""
        params = {"model": self.spec.model, "messages": messages, "temperature": sampling["temperature"],
                  self.max_tokens_param: sampling["max_tokens"]}
        if sampling.get("top_p") is not None:
            params["top_p"] = sampling["top_p"]
        if sampling.get("seed") is not None:
            params["seed"] = sampling["seed"] + sample_index  # independent samples get their own seed
        if output is not None and output.top_logprobs:
            params |= self.logprob_params(output.top_logprobs)
        return params | _response_format(output)

    @staticmethod
    def logprob_params(k: int) -> dict:
        """How the API asks for the `k` most likely tokens at each position."""
        return {"logprobs": True, "top_logprobs": k}

    async def complete(
        self, messages: list[Message], *, sampling: dict, output: OutputFormat | None, sample_index: int
    ) -> Completion:
        sdk = self.sdk
        try:
            raw = await self.client.chat.completions.with_raw_response.create(**self.request(messages, sampling, output, sample_index))
            response = raw.parse()
            if inspect.isawaitable(response):
                response = await response
        except sdk.APIStatusError as e:
            status = e.status_code
            retryable = status >= 500 or status in RETRYABLE_STATUS
            raise ProviderError(
                f"HTTP {status}: {_short(e)}", retryable=retryable, retry_after=retry_after(e.response.headers),
                rate_limited=status == 429,
            ) from None
        except sdk.APITimeoutError:
            raise ProviderError("request timed out", retryable=True) from None
        except sdk.APIConnectionError as e:
            raise ProviderError(f"connection failed: {_short(e)}", retryable=True) from None
        except (sdk.APIResponseValidationError, json.JSONDecodeError, ValueError) as e:
            raise ProviderError(f"unreadable response body: {_short(e)}", retryable=True) from None
        if not getattr(response, "choices", None):
            raise ProviderError("response has no choices", retryable=True)
        choice = response.choices[0]
        text = choice.message.content if choice.message is not None else None
        usage = response.usage
        asked = output is not None and output.top_logprobs
        return Completion(
            text=text or "",
            tokens_in=getattr(usage, "prompt_tokens", 0) or 0,
            tokens_out=getattr(usage, "completion_tokens", 0) or 0,
            finish_reason=choice.finish_reason,
            ratelimit=rate_limit(raw.headers),
            logprobs=read_logprobs(getattr(choice, "logprobs", None)) if asked else None,
        )


def _response_format(output: OutputFormat | None) -> dict:
    """Structured output as the chat-completions API takes it (grammars are not part of that API)."""
    if output is None or output.json_schema is None:
        return {}
    schema = {"name": "answer", "schema": output.json_schema, "strict": True}
    return {"response_format": {"type": "json_schema", "json_schema": schema}}


def _short(e: Exception) -> str:
    return redact(str(e)).splitlines()[0][:200] if str(e) else type(e).__name__  # redacted before it is cut


class OpenAIProvider(ChatSDKProvider):
    max_tokens_param = "max_completion_tokens"
    batch_api_class = OpenAIBatchAPI

    @staticmethod
    def logprobs_problem(model: str) -> str | None:
        """OpenAI's reasoning models (o1, o3, o4-mini, gpt-5 and their variants) refuse `logprobs`."""
        if re.match(r"(?:o\d|gpt-5)(?:\b|-|$)", model):
            return f"OpenAI's reasoning model {model} gives no token log probabilities"
        return None


class OpenAICompatibleProvider(ChatSDKProvider):
    @classmethod
    def identity(cls, spec: ModelSpec) -> dict:
        """Two servers may serve different models under one name: the server is part of the identity."""
        return {"provider": spec.provider, "model": spec.model, "endpoint": spec.base_url}


class TogetherProvider(ChatSDKProvider):
    sdk_name = "together"
    client_class = "AsyncTogether"
    batch_api_class = TogetherBatchAPI

    @staticmethod
    def logprob_params(k: int) -> dict:
        return {"logprobs": k}  # Together's API takes the number of most likely tokens

    @staticmethod
    def base_url(url: str) -> str:
        """The Together SDK (2.x and later) appends `/v1/...` itself; accept URLs written either way."""
        url = url.rstrip("/")
        return url[: -len("/v1")] if url.endswith("/v1") else url
