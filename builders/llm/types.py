"""Values passed between the engine and providers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from builders.llm.limiter import RateLimit

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": "..."}


@dataclass(frozen=True)
class OutputFormat:
    """Constraints on an answer's form. Each provider applies what it supports and ignores the rest,
    so callers state what they want without knowing which provider serves the model."""

    grammar: str | None = None  # GBNF (llama.cpp)
    json_schema: dict | None = None  # structured output: OpenAI-style response_format, or a llama.cpp grammar


@dataclass(frozen=True)
class Completion:
    """What a provider returns for one call."""

    text: str
    tokens_in: int
    tokens_out: int
    finish_reason: str | None = None
    ratelimit: RateLimit | None = field(default=None, compare=False)  # the response's rate-limit headers; never cached

    def stored(self) -> dict:
        """What the response cache keeps."""
        return {"text": self.text, "tokens_in": self.tokens_in, "tokens_out": self.tokens_out, "finish_reason": self.finish_reason}


@dataclass(frozen=True)
class ChatResponse:
    """What the engine returns: the completion plus what it cost and whether the cache answered."""

    text: str
    tokens_in: int
    tokens_out: int
    cost_usd: float
    latency_s: float
    cached: bool
    finish_reason: str | None = None


class Provider(Protocol):
    """One configured model endpoint. `complete` raises ProviderError on failure."""

    async def complete(
        self, messages: list[Message], *, sampling: dict, output: OutputFormat | None, sample_index: int
    ) -> Completion: ...
