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
    top_logprobs: int | None = None  # return this many most likely tokens, with log probabilities, at each position


TOP_LOGPROBS = 20  # most likely tokens asked for at each position, when asked (the most OpenAI gives)


@dataclass(frozen=True)
class TokenLogprob:
    """One token of an answer: its text, its log probability, the most likely tokens at its place
    (`top`: (text, logprob), the token itself among them), and, where the provider can tell, what
    the model would write next after each of those other tokens (`after`: token text -> next top
    tokens). Numbers split over tokens ("1", "0" for 10) are read through `after`."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...]
    after: dict[str, tuple[tuple[str, float], ...]] | None = None

    def stored(self) -> list:
        return [self.token, self.logprob, [list(t) for t in self.top],
                {k: [list(t) for t in v] for k, v in self.after.items()} if self.after else None]

    @classmethod
    def from_stored(cls, row: list) -> "TokenLogprob":
        token, logprob, top, after = row
        pairs = lambda xs: tuple((str(t), float(lp)) for t, lp in xs)  # noqa: E731
        return cls(token, float(logprob), pairs(top), {k: pairs(v) for k, v in after.items()} if after else None)


@dataclass(frozen=True)
class Completion:
    """What a provider returns for one call."""

    text: str
    tokens_in: int
    tokens_out: int
    finish_reason: str | None = None
    ratelimit: RateLimit | None = field(default=None, compare=False)  # the response's rate-limit headers; never cached
    logprobs: tuple[TokenLogprob, ...] | None = None  # when asked for (OutputFormat.top_logprobs) and given

    def stored(self) -> dict:
        """What the response cache keeps."""
        out = {"text": self.text, "tokens_in": self.tokens_in, "tokens_out": self.tokens_out, "finish_reason": self.finish_reason}
        if self.logprobs is not None:
            out["logprobs"] = [t.stored() for t in self.logprobs]
        return out

    @classmethod
    def from_stored(cls, data: dict) -> "Completion":
        logprobs = data.pop("logprobs", None)
        return cls(**data, logprobs=tuple(TokenLogprob.from_stored(t) for t in logprobs) if logprobs is not None else None)


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
    logprobs: tuple[TokenLogprob, ...] | None = None


class Provider(Protocol):
    """One configured model endpoint. `complete` raises ProviderError on failure."""

    async def complete(
        self, messages: list[Message], *, sampling: dict, output: OutputFormat | None, sample_index: int
    ) -> Completion: ...
