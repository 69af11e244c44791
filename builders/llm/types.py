"""Values passed between the engine and providers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from builders.llm.limiter import RateLimit
    from builders.recipe import ModelSpec

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


class Provider:
    """One configured model endpoint. `complete` raises ProviderError on failure.

    What a provider can do is declared here, with the defaults a plain chat endpoint has; a provider
    overrides only what differs (the registry, `builders.llm.registry`, reads these without creating
    one):

    - `runs_in_process`: the model runs in this process, one call at a time (the engine gives it one
      slot, taken before the call's timeout starts);
    - `batch_api_class`: the provider's batch API (`builders.llm.batch_api`), or None without one;
    - `identity(spec)`: what names the model whose answers the cache stores;
    - `model_problem(model)` / `logprobs_problem(model)`: why a model id cannot be used at all, or
      gives no token log probabilities (checked when a recipe is loaded).
    """

    runs_in_process: ClassVar[bool] = False
    batch_api_class: ClassVar[type | None] = None

    def __init__(self, spec: ModelSpec, *, api_key: str | None = None):
        self.spec = spec

    @classmethod
    def identity(cls, spec: ModelSpec) -> dict:
        return {"provider": spec.provider, "model": spec.model, "endpoint": None}

    @staticmethod
    def model_problem(model: str) -> str | None:
        return None

    @staticmethod
    def logprobs_problem(model: str) -> str | None:
        return None

    async def complete(
        self, messages: list[Message], *, sampling: dict, output: OutputFormat | None, sample_index: int
    ) -> Completion:
        raise NotImplementedError

    def request(self, messages: list[Message], sampling: dict, output: OutputFormat | None, sample_index: int) -> dict:
        """The request body of one call, as a line of a batch job (providers with a batch API)."""
        raise NotImplementedError(f"{type(self).__name__} has no batch API")
