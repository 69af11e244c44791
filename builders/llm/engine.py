"""One async engine for every role: cache, bounded concurrency, retries with backoff, usage and cost."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import sys
import time
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from tqdm import tqdm

from builders.errors import BuildError, ProviderError
from builders.llm.cache import ResponseCache, cache_key
from builders.llm.registry import create_provider, identity
from builders.llm.types import ChatResponse, Completion, Message, OutputFormat, Provider
from builders.recipe import ModelSpec, Recipe

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class Usage:
    calls: int = 0  # requests answered by a provider in this run
    cached: int = 0  # requests answered by the cache
    retries: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0

    def summary(self) -> str:
        return (
            f"{self.calls} calls, {self.cached} cached, {self.retries} retries, "
            f"{self.tokens_in} tokens in, {self.tokens_out} out, ${self.cost_usd:.4f}"
        )


def _retry_base() -> float:
    return float(os.environ.get("FELLOWSHIP_RETRY_BASE_S", "1.0"))


class Engine:
    def __init__(
        self,
        recipe: Recipe,
        *,
        providers: dict[str, Provider] | None = None,
        cache: ResponseCache | None = None,
        progress: bool = True,
    ):
        self.recipe = recipe
        self._providers: dict[str, Provider] = dict(providers or {})
        self._semaphores: dict[str, asyncio.Semaphore] = {}
        self._identities: dict[str, dict] = {}
        self.cache = cache if cache is not None else ResponseCache()
        self.progress = progress
        self.usage = Usage()
        self._bar: tqdm | None = None

    def spec(self, model: str) -> ModelSpec:
        return self.recipe.models[model]

    def prepare(self, models: Iterable[str]) -> None:
        """Create the providers a stage needs, so a missing key fails before any call is made."""
        for name in models:
            if name not in self._providers:
                self._providers[name] = create_provider(name, self.spec(name))

    def _semaphore(self, model: str) -> asyncio.Semaphore:
        """Calls in flight per recipe model. A provider that runs the model in this process, one call
        at a time (`runs_in_process`), gets one slot shared by every recipe name for that model: its
        calls wait here, before their timeout starts, instead of queueing inside a worker thread
        where the wait would count against the timeout and a timed-out thread cannot be stopped."""
        key, limit = model, self.spec(model).concurrency
        if getattr(self._providers.get(model), "runs_in_process", False):
            key, limit = f"in-process {sorted(self._identities[model].items())}", 1
        if key not in self._semaphores:
            self._semaphores[key] = asyncio.Semaphore(limit)
        return self._semaphores[key]

    async def chat(
        self, model: str, messages: list[Message], *, output: OutputFormat | None = None, sample_index: int = 0
    ) -> ChatResponse:
        spec = self.spec(model)
        sampling = spec.sampling()
        if model not in self._identities:
            self._identities[model] = identity(spec)
        key = cache_key(
            model=self._identities[model], messages=messages, sampling=sampling, output=output, sample_index=sample_index
        )
        hit = self.cache.get(key)
        if hit is not None:
            completion, latency = hit
            self.usage.cached += 1
            return self._response(spec, completion, latency, cached=True)
        self.prepare([model])
        async with self._semaphore(model):
            start = time.perf_counter()
            completion = await self._call_with_retries(model, spec, messages, sampling, output, sample_index)
            latency = time.perf_counter() - start
        self.cache.put(key, completion, latency)
        response = self._response(spec, completion, latency, cached=False)
        u = self.usage
        u.calls += 1
        u.tokens_in += completion.tokens_in
        u.tokens_out += completion.tokens_out
        u.cost_usd += response.cost_usd
        return response

    async def _call_with_retries(
        self, model: str, spec: ModelSpec, messages: list[Message], sampling: dict, output: OutputFormat | None, sample_index: int
    ) -> Completion:
        provider = self._providers[model]
        for attempt in range(spec.max_retries + 1):
            try:
                return await asyncio.wait_for(
                    provider.complete(messages, sampling=sampling, output=output, sample_index=sample_index),
                    timeout=spec.timeout_s,
                )
            except TimeoutError:
                error = ProviderError(f"timed out after {spec.timeout_s:g}s", retryable=True)
            except ProviderError as e:
                error = e
            if not error.retryable or attempt == spec.max_retries:
                raise ProviderError(
                    f"model '{model}' ({spec.provider}/{spec.model}): {error} "
                    f"(after {attempt + 1} attempt{'s' if attempt else ''})",
                    retryable=False,
                ) from error
            backoff = min(60.0, _retry_base() * 2**attempt) * (0.5 + random.random() / 2)
            delay = max(error.retry_after or 0.0, backoff)
            log.debug("model %s: %s; retrying in %.2fs", model, error, delay)
            self.usage.retries += 1
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    @staticmethod
    def _response(spec: ModelSpec, c: Completion, latency: float, *, cached: bool) -> ChatResponse:
        cost = (c.tokens_in * spec.price.input + c.tokens_out * spec.price.output) / 1e6
        return ChatResponse(c.text, c.tokens_in, c.tokens_out, cost, latency, cached, c.finish_reason)

    def run(self, job: Awaitable[T]) -> T:
        """Run a stage's top-level coroutine to completion in a fresh event loop."""
        self._semaphores.clear()
        return asyncio.run(job)

    async def gather(self, jobs: Iterable[Awaitable[T]], *, total: int, desc: str) -> list[T]:
        """Run `jobs` concurrently with a progress bar; the first failure cancels the rest and is raised."""
        bar = tqdm(total=total, desc=desc, file=sys.stderr, disable=not self.progress, unit="item", leave=True)

        async def one(job: Awaitable[T]) -> T:
            result = await job
            bar.update(1)
            bar.set_postfix_str(f"calls={self.usage.calls} cached={self.usage.cached} ${self.usage.cost_usd:.4f}")
            return result

        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(one(job)) for job in jobs]
        except BaseExceptionGroup as eg:
            raise _first_leaf(eg) from None
        finally:
            bar.close()
        return [t.result() for t in tasks]


def _first_leaf(eg: BaseExceptionGroup) -> BaseException:
    """The most useful exception of a group: a BuildError if there is one."""
    leaves: list[BaseException] = []

    def walk(e: BaseException) -> None:
        if isinstance(e, BaseExceptionGroup):
            for sub in e.exceptions:
                walk(sub)
        else:
            leaves.append(e)

    walk(eg)
    return next((e for e in leaves if isinstance(e, BuildError)), leaves[0])
