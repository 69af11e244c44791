"""One async engine for every role: cache, adaptive limits, retries, budget, batch jobs, usage and cost.

A stage hands the engine its work as a stream of jobs (one per item); the engine keeps a bounded
window of them running, so memory does not grow with the number of items, and yields each result as
it is done (`stream`) or all of them in order (`gather`). Each job makes its calls with `chat`:

1. the response cache answers calls made before (in any build);
2. a dry run (`fellowship plan`) answers the rest with a stand-in of the longest possible answer;
3. the budget reserves the call's worst-case cost, or stops the build;
4. the call goes out through one of two transports behind the same call path: in a stage marked
   `batch: true`, to a model whose provider has a batch API, the batch transport (the provider's next
   batch job, builders.llm.batch); otherwise the live one: the call waits for its model's adaptive
   limiter (builders.llm.limiter) and goes out, retried with backoff on 429, 5xx, timeouts, dropped
   connections and broken bodies.

The engine is built from an `EngineConfig` (builders.llm.config: the models, the stage's options,
the budget, the cache folder, dry run), never from the whole recipe, so a Ray task builds the same
engine from what it is given.

Every answer, new or cached, is redacted (`builders.redact`) before it is cached or used: a provider
may echo the request's credentials.

When a job fails, no new job starts and no new call goes out, but calls in flight finish and are
cached before the error is raised: a stopped build loses no paid answer.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import logging
import os
import random
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Iterable
from dataclasses import dataclass, replace
from typing import TypeVar

from tqdm import tqdm

from builders.errors import BuildError, ProviderError
from builders.llm.budget import Budget, Ledger, estimate_tokens
from builders.llm.cache import ResponseCache, cache_key
from builders.llm.fake import auto_answer, fake_logprobs
from builders.llm.limiter import AdaptiveLimiter
from builders.llm.config import EngineConfig, engine_config
from builders.llm.registry import create_provider, identity, provider_class
from builders.llm.types import TOP_LOGPROBS, ChatResponse, Completion, Message, OutputFormat, Provider
from builders.recipe import ModelSpec, Recipe
from builders.redact import redact

log = logging.getLogger(__name__)
T = TypeVar("T")
WORDS_PER_TOKEN = 0.75
BATCH_WINDOW = 50_000  # jobs alive at once in a batch stage: a batch job takes up to 50,000 requests
DRY_RUN_WINDOW = 64  # jobs alive at once in `fellowship plan`


@dataclass
class Usage:
    calls: int = 0  # requests answered by a provider in this run (a dry run: requests it would make)
    cached: int = 0  # requests answered by the cache
    retries: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0  # paid in this run
    cached_cost_usd: float = 0.0  # what the cached answers cost when they were made (at today's prices)
    batch_jobs: int = 0  # batch jobs started
    batch_jobs_resumed: int = 0  # batch jobs found in the journal and waited for

    def summary(self) -> str:
        jobs = f", {self.batch_jobs} batch jobs started, {self.batch_jobs_resumed} resumed" if self.batch_jobs or self.batch_jobs_resumed else ""
        return (
            f"{self.calls} calls, {self.cached} cached, {self.retries} retries, "
            f"{self.tokens_in} tokens in, {self.tokens_out} out, ${self.cost_usd:.4f}{jobs}"
        )


class _Chain:
    """A dry run's count of one job's rounds of calls: a call issued while others of its job are in
    flight (gathered) shares their round; one issued after they answered starts the next round."""

    def __init__(self) -> None:
        self.rounds = 0


_CHAIN: contextvars.ContextVar[_Chain | None] = contextvars.ContextVar("fellowship_chain", default=None)


async def _chained(job: Awaitable[T]) -> T:
    _CHAIN.set(_Chain())  # this job's task and the tasks it gathers share it
    return await job


class Stopped(BuildError):
    """A call not made because the stage is stopping after another job's error."""


def retry_base() -> float:
    return float(os.environ.get("FELLOWSHIP_RETRY_BASE_S", "0.5"))


def retry_delay(attempt: int, retry_after: float | None) -> float:
    """Seconds before retry `attempt + 1`: what the provider's Retry-After says when it says it
    (up to a minute), else exponential backoff from 0.5 s up to 8 s with jitter, as the official SDKs do."""
    if retry_after is not None:
        return min(60.0, retry_after)
    return min(8.0, retry_base() * 2**attempt) * (0.75 + random.random() / 4)


def _redacted(c: Completion) -> Completion:
    """`c` without credentials; token probabilities go too when the text held one (their tokens would
    spell it out)."""
    text = redact(c.text)
    return c if text == c.text else dataclasses.replace(c, text=text, logprobs=None)


class Providers:
    """The providers an engine calls, created on first use (so a missing key fails before any call)."""

    def __init__(self, config: EngineConfig, given: dict[str, Provider] | None = None):
        self.config = config
        self._made: dict[str, Provider] = dict(given or {})

    def prepare(self, models: Iterable[str]) -> None:
        for name in models:
            self.get(name)

    def get(self, model: str) -> Provider:
        if model not in self._made:
            self._made[model] = create_provider(model, self.config.spec(model))
        return self._made[model]

    def runs_in_process(self, model: str) -> bool:
        made = self._made.get(model)
        return (type(made) if made is not None else provider_class(self.config.spec(model))).runs_in_process


class Stop:
    """The stage's stop flag: the first failure of any job; no new call starts once it is set."""

    def __init__(self) -> None:
        self.error: BaseException | None = None

    def check(self) -> None:
        if self.error is not None:
            raise Stopped("stopped")


class LiveTransport:
    """One request per call, through the model's adaptive limiter, retried with backoff."""

    def __init__(self, config: EngineConfig, providers: Providers, usage: Usage, stop: Stop):
        self.config, self.providers, self.usage, self.stop = config, providers, usage, stop
        self.limiters: dict[tuple, AdaptiveLimiter] = {}

    def limiter(self, model: str) -> AdaptiveLimiter:
        """The limiter of the model `model` names, shared by every recipe name for it. Its ceiling is
        the highest `concurrency` among those names; a provider that runs the model in this process,
        one call at a time (`runs_in_process`), gets one slot, taken before the call's timeout starts,
        so queueing never counts against the timeout."""
        spec = self.config.spec(model)
        key = (spec.provider, spec.model, spec.base_url)
        if key not in self.limiters:
            if self.providers.runs_in_process(model):
                ceiling = 1
            else:
                ceiling = max(s.concurrency for s in self.config.models.values() if (s.provider, s.model, s.base_url) == key)
            self.limiters[key] = AdaptiveLimiter(ceiling)
        return self.limiters[key]

    async def send(
        self, model: str, key: str, messages: list[Message], sampling: dict, output: OutputFormat | None, sample_index: int
    ) -> tuple[Completion, float]:
        """One call, retried; returns the completion and the seconds from its first sending to its
        answer (time queued for the limiter not included). Waiting to retry holds no slot."""
        spec = self.config.spec(model)
        provider, limiter = self.providers.get(model), self.limiter(model)
        first_sent = None
        for attempt in range(spec.max_retries + 1):
            await limiter.acquire(first=attempt > 0)
            if self.stop.error is not None:
                limiter.release()
                raise Stopped("stopped")
            sent = time.perf_counter()
            first_sent = first_sent or sent
            try:
                async with asyncio.timeout(spec.timeout_s):  # no extra task per call, unlike wait_for
                    completion = await provider.complete(messages, sampling=sampling, output=output, sample_index=sample_index)
                limiter.succeeded(time.perf_counter() - sent, completion.ratelimit)
                return completion, time.perf_counter() - first_sent
            except TimeoutError:
                error = ProviderError(f"timed out after {spec.timeout_s:g}s", retryable=True)
            except ProviderError as e:
                error = e
            finally:
                limiter.release()
            if error.rate_limited:
                limiter.rate_limited(error.retry_after)
            if not error.retryable or attempt == spec.max_retries:
                raise ProviderError(
                    f"model '{model}' ({spec.provider}/{spec.model}): {error} "
                    f"(after {attempt + 1} attempt{'s' if attempt else ''})",
                    retryable=False,
                ) from error
            delay = retry_delay(attempt, error.retry_after)
            log.debug("model %s: %s; retrying in %.2fs", model, error, delay)
            self.usage.retries += 1
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")


class Engine:
    def __init__(
        self,
        config: EngineConfig,
        *,
        providers: dict[str, Provider] | None = None,
        cache: ResponseCache | None = None,
        progress: bool = True,
    ):
        self.config = config
        self.stage = config.stage
        self.options = config.options
        self.dry_run = config.dry_run
        self.providers = Providers(config, providers)
        self._identities: dict[str, dict] = {}
        self._batch_models: dict[str, bool] = {}
        self.cache = cache if cache is not None else ResponseCache(config.cache_dir)
        self.progress = progress
        self.usage = Usage()
        self.by_model: dict[str, Usage] = {}  # the same, per recipe model
        self.jobs = 0  # jobs (items) streamed; a dry run also counts the most rounds of calls one job made
        self.rounds = 0
        self.ledger = Ledger(self.cache.path.parent, config.recipe)
        # a damaged ledger stops the stage here, before any call
        spent = self.ledger.read() if config.spent_usd is None else None
        self.budget = None
        if config.budget_usd is not None:
            earlier = config.spent_usd if spent is None else sum(usd for s, usd in spent.items() if s != config.stage)
            self.budget = Budget(config.budget_usd, earlier_usd=earlier)
        self.stop = Stop()
        self.live = LiveTransport(config, self.providers, self.usage, self.stop)
        self._batch = None
        # jobs alive at once: enough to keep every model's calls busy, few enough to bound memory (a
        # dry run waits for no call: a small window, whatever the recipe's concurrency)
        if config.dry_run:
            self.window = DRY_RUN_WINDOW
        else:
            self.window = BATCH_WINDOW if self.options.batch else max(64, 4 * sum(s.concurrency for s in config.models.values()))

    @classmethod
    def for_recipe(cls, recipe: Recipe, *, stage: str | None = None, dry_run: bool = False, **kwargs) -> Engine:
        """The engine of `recipe`'s stage `stage` (`engine_config`)."""
        return cls(engine_config(recipe, stage=stage, dry_run=dry_run), **kwargs)

    def spec(self, model: str) -> ModelSpec:
        return self.config.spec(model)

    def prepare(self, models: Iterable[str]) -> None:
        """Create the providers a stage needs, so a missing key fails before any call is made."""
        if not self.dry_run:
            self.providers.prepare(models)

    def batched(self, model: str) -> bool:
        """True when `model`'s calls in this stage go through its provider's batch API (worked out
        once per model: it is asked twice a call)."""
        if model not in self._batch_models:
            has_api = provider_class(self.spec(model)).batch_api_class is not None
            self._batch_models[model] = self.options.batch and has_api
        return self._batch_models[model]

    def _transport(self, model: str):
        if not self.batched(model):
            return self.live
        if self._batch is None:
            from builders.llm.batch import BatchTransport

            self._batch = BatchTransport(self.config, self.providers, self.cache, self.usage, self.live)
        return self._batch

    def _price_share(self, model: str) -> float:
        return self.spec(model).price.batch if self.batched(model) else 1.0

    def _cost(self, model: str, tokens_in: int, tokens_out: int) -> float:
        price = self.spec(model).price
        return (tokens_in * price.input + tokens_out * price.output) / 1e6 * self._price_share(model)

    async def chat(
        self, model: str, messages: list[Message], *, output: OutputFormat | None = None, sample_index: int = 0,
        max_tokens: int | None = None,
    ) -> ChatResponse:
        """One call; `max_tokens` lowers the model's own limit for answers known to be short."""
        self.stop.check()
        spec = self.spec(model)
        sampling = spec.sampling()
        if max_tokens is not None:
            sampling["max_tokens"] = min(sampling["max_tokens"], max_tokens)
        if model not in self._identities:
            self._identities[model] = identity(spec)
        key = cache_key(
            model=self._identities[model], messages=messages, sampling=sampling, output=output, sample_index=sample_index
        )
        hit = self.cache.get(key)
        if hit is None and output is not None and output.top_logprobs is None:  # the same call made with token
            with_logprobs = replace(output, top_logprobs=TOP_LOGPROBS)       # probabilities wrote the same answer
            hit = self.cache.get(cache_key(model=self._identities[model], messages=messages, sampling=sampling,
                                           output=with_logprobs, sample_index=sample_index))
        if hit is not None:
            completion, latency = _redacted(hit[0]), hit[1]
            response = self._response(model, completion, latency, cached=True)
            for u in (self.usage, self.by_model.setdefault(model, Usage())):
                u.cached += 1
                u.cached_cost_usd += response.cost_usd
            if self.budget:
                self.budget.count(response.cost_usd)
            return response
        self.prepare([model])
        worst = self._cost(model, estimate_tokens(messages), sampling["max_tokens"])
        if self.dry_run:
            chain = _CHAIN.get()
            start = chain.rounds if chain is not None else 0
            await asyncio.sleep(0)  # the job's other calls issued now (gathered) are in the same round
            if chain is not None:
                chain.rounds = max(chain.rounds, start + 1)
                self.rounds = max(self.rounds, chain.rounds)
            completion, latency = self._stand_in(sampling["max_tokens"], messages, output, sample_index), 0.0
        else:
            if self.budget:
                await self.budget.reserve(worst)
            try:
                completion, latency = await self._transport(model).send(model, key, messages, sampling, output, sample_index)
            except BaseException:
                if self.budget:
                    self.budget.settle(worst, 0.0)
                raise
            if output and output.top_logprobs and completion.logprobs is None:
                raise BuildError(
                    f"model '{model}' ({spec.provider}/{spec.model}) returned no token log probabilities, which "
                    "judge.panel.score_mode `expected` reads; use score_mode `text` for this model"
                )
            completion = _redacted(completion)
            self.cache.put(key, completion, latency)
        response = self._response(model, completion, latency, cached=False)
        if self.budget:
            self.budget.settle(worst, response.cost_usd)
        for u in (self.usage, self.by_model.setdefault(model, Usage())):
            u.calls += 1
            u.tokens_in += completion.tokens_in
            u.tokens_out += completion.tokens_out
            u.cost_usd += response.cost_usd
        return response

    @staticmethod
    def _stand_in(max_tokens: int, messages: list[Message], output: OutputFormat | None, sample_index: int) -> Completion:
        """A dry run's answer: in the form the prompt asks for, as long as `max_tokens` allows when free text."""
        words = None if output else int(max_tokens * WORDS_PER_TOKEN)
        text = auto_answer(messages, sample_index, words=words)
        logprobs = fake_logprobs(text, output.top_logprobs) if output and output.top_logprobs else None
        return Completion(text, estimate_tokens(messages), max_tokens, "planned", logprobs=logprobs)

    def _response(self, model: str, c: Completion, latency: float, *, cached: bool) -> ChatResponse:
        cost = self._cost(model, c.tokens_in, c.tokens_out)
        return ChatResponse(c.text, c.tokens_in, c.tokens_out, cost, latency, cached, c.finish_reason, c.logprobs)

    def run(self, job: Awaitable[T]) -> T:
        """Run a stage's top-level coroutine to completion in a fresh event loop."""
        # limiters and batch jobs in progress belong to one event loop
        self.live = LiveTransport(self.config, self.providers, self.usage, self.stop)
        self._batch = None
        return asyncio.run(job)

    async def stream(self, jobs: Iterable[Awaitable[T]], *, total: int, desc: str) -> AsyncIterator[T]:
        """Run `jobs` (taken from the iterable only as room frees up) and yield their results in
        the jobs' order. At most `window` jobs run at once; results done ahead of an earlier, slower
        job wait for it, up to another window of them, before new jobs start. After a failure no new
        job or call starts; those in flight finish, then the failure is raised (a BuildError in
        preference to the `Stopped` calls it caused)."""
        bar = tqdm(total=total, desc=desc, file=sys.stderr, disable=not self.progress, unit="item", leave=True)
        pending = enumerate(jobs)
        running: dict[asyncio.Future, int] = {}
        finished: asyncio.Queue[asyncio.Future] = asyncio.Queue()
        ready: dict[int, T] = {}  # results waiting for an earlier job
        failures: list[BaseException] = []
        started = next_out = 0

        def launch() -> None:
            nonlocal started
            while self.stop.error is None and len(running) < self.window and started - next_out < 2 * self.window:
                index, job = next(pending, (None, None))
                if job is None:
                    return
                task = asyncio.ensure_future(_chained(job) if self.dry_run else job)
                running[task] = index
                started += 1
                self.jobs += 1
                task.add_done_callback(finished.put_nowait)

        try:
            launch()
            while running:
                task = await finished.get()
                index = running.pop(task)
                if task.cancelled() or task.exception() is not None:
                    error = asyncio.CancelledError() if task.cancelled() else task.exception()
                    failures.append(error)
                    self.stop.error = self.stop.error or error
                    continue
                ready[index] = task.result()
                bar.update(1)
                if self.progress:
                    u = self.usage
                    bar.set_postfix_str(f"calls={u.calls} cached={u.cached} ${u.cost_usd:.4f}", refresh=False)
                while next_out in ready and not failures:
                    yield ready.pop(next_out)
                    next_out += 1
                launch()
        finally:
            bar.close()
            for task in running:
                task.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)
        if failures:
            raise next((e for e in failures if isinstance(e, BuildError) and not isinstance(e, Stopped)), failures[0])

    async def gather(self, jobs: Iterable[Awaitable[T]], *, total: int, desc: str) -> list[T]:
        """`stream`, collected."""
        return [result async for result in self.stream(jobs, total=total, desc=desc)]

    def record_spend(self) -> None:
        """Write what this stage used to the recipe's ledger (the budget of later stages reads it)."""
        if self.stage and not self.dry_run:
            self.ledger.record(self.stage, self.usage.cost_usd + self.usage.cached_cost_usd)


async def every(jobs: Iterable[Awaitable[T]]) -> list[T]:
    """The results of `jobs`, run at once; a failure is raised once all of them have ended (none is
    left running behind the stage)."""
    results = await asyncio.gather(*jobs, return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return results
