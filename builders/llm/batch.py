"""The batch transport, for a stage marked `batch: true`: its calls go to the provider's batch API
(about half the price, answers within 24 hours) instead of one request each. It is the engine's
other transport beside the live one (`builders.llm.engine.LiveTransport`), behind the same call path.

The stage's workflows run as usual; each call that misses the cache waits here instead of going out.
When no new call has arrived for a moment (every running job of the stage is waiting for an answer),
the waiting calls are sent, one job per model endpoint and up to 50,000 lines per job. A workflow
with several rounds (feedback loop, debate) sends one job per round.

Every job is journaled in the response cache's database before it is started (the uploaded file's
id, then the job's id), and its answers go to the response cache when it ends. A build killed while
jobs run finds them on restart, by the journal, and waits for them instead of submitting the same
requests again; one killed between uploading a file and recording its job looks the job up by file.
Lines the provider could not answer are made as live calls, with the usual retries; lines a job
left unanswered (expired, cancelled) are sent again in the next job.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field

from builders.errors import ProviderError
from builders.llm.batch_api import JobState, jsonl, line, parse_result
from builders.llm.engine import retry_base
from builders.llm.types import Completion

log = logging.getLogger(__name__)
SETTLE_S = 0.05  # no new call for this long: every job of the stage is waiting
MAX_LINES = 50_000  # per job (OpenAI's limit)


@dataclass
class _Call:
    model: str
    body: dict  # the chat-completions request
    args: tuple  # messages, sampling, output, sample_index: for a live retry
    future: asyncio.Future = field(default_factory=lambda: _future())


def _future() -> asyncio.Future:
    """A future for a call's answer; its failure is read here too, so a call whose caller has gone
    (the stage stopping) leaves no "exception was never retrieved" warning."""
    future = asyncio.get_running_loop().create_future()
    future.add_done_callback(lambda f: f.cancelled() or f.exception())
    return future


class BatchTransport:
    """Built from what it uses: the engine's config (models, the stage's `poll_s`), its providers,
    response cache (answers and the journal), usage counters, and the live transport (for lines a
    job could not answer)."""

    def __init__(self, config, providers, cache, usage, live):
        self.config, self.providers, self.cache, self.usage, self.live = config, providers, cache, usage, live
        self.pending: dict[str, _Call] = {}  # by cache key, not yet sent
        self.sent: dict[str, _Call] = {}  # in a job
        self._flusher: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()

    def endpoint(self, model: str) -> str:
        spec = self.config.spec(model)
        return json.dumps([spec.provider, spec.model, spec.base_url])

    async def send(self, model: str, key: str, messages, sampling, output, sample_index) -> tuple[Completion, float]:
        started = time.perf_counter()
        call = self.pending.get(key) or self.sent.get(key)
        if call is None:
            body = self.providers.get(model).request(messages, sampling, output, sample_index)
            call = self.pending[key] = _Call(model, body, (messages, sampling, output, sample_index))
            self._wake_sender()
        completion = await asyncio.shield(call.future)
        return completion, time.perf_counter() - started

    def _wake_sender(self) -> None:
        """Make sure a task will send the pending calls once they settle."""
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._send_when_settled())

    async def _send_when_settled(self) -> None:
        seen = -1
        while self.pending:
            await asyncio.sleep(SETTLE_S)
            if len(self.pending) != seen:
                seen = len(self.pending)
                continue
            calls, self.pending, seen = self.pending, {}, -1
            self.sent.update(calls)
            by_endpoint: dict[str, dict[str, _Call]] = {}
            for key, call in calls.items():
                by_endpoint.setdefault(self.endpoint(call.model), {})[key] = call
            for endpoint, group in by_endpoint.items():
                task = asyncio.ensure_future(self._send(endpoint, group))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _send(self, endpoint: str, calls: dict[str, _Call]) -> None:
        """Resume the journaled jobs holding any of `calls`, start jobs for the rest, and answer them."""
        model = next(iter(calls.values())).model
        api = self.providers.get(model).batch_api
        cache = self.cache
        try:
            jobs, covered = [], set()
            for file_id, job_id, keys in cache.journal_open(endpoint):
                if covered.isdisjoint(keys) and not calls.keys().isdisjoint(keys):
                    jobs.append((file_id, job_id, keys))
                    covered.update(keys)
            fresh = [k for k in calls if k not in covered]
            for i in range(0, len(fresh), MAX_LINES):
                keys = fresh[i : i + MAX_LINES]
                file_id = await self._retried(model, api.upload, jsonl([line(k, calls[k].body) for k in keys]))
                cache.journal_upload(file_id, endpoint, keys)
                jobs.append((file_id, None, keys))
            await asyncio.gather(*(self._follow(model, api, endpoint, *job, calls) for job in jobs))
        except BaseException as e:
            for call in calls.values():
                if not call.future.done():
                    call.future.set_exception(e)
            if not isinstance(e, Exception):
                raise

    async def _follow(self, model: str, api, endpoint: str, file_id: str, job_id: str | None, keys: list[str], calls: dict[str, _Call]) -> None:
        if job_id is None:  # uploaded; started too, if a build was killed before writing its id down
            job_id = await self._retried(model, api.find, file_id)
            if job_id is None:
                job_id = await self._retried(model, api.create, file_id, {"fellowship": endpoint[:500]})
                self.usage.batch_jobs += 1
            else:
                self.usage.batch_jobs_resumed += 1
            self.cache.journal_submit(file_id, job_id)
        else:
            self.usage.batch_jobs_resumed += 1
        log.info("batch job %s (%d requests) for %s", job_id, len(keys), model)
        submitted = time.perf_counter()
        state = await self._retried(model, api.state, job_id)
        while state.state == "running":
            await asyncio.sleep(self.config.options.poll_s)
            state = await self._retried(model, api.state, job_id)
        results = await self._results(model, api, state)
        latency = time.perf_counter() - submitted
        for key, result in results.items():
            if isinstance(result, Completion):
                self.cache.put(key, result, latency)
        self.cache.journal_done(file_id)
        if state.state == "failed":
            raise ProviderError(f"model '{model}': batch job {job_id} failed ({state.detail})", retryable=False)
        for key in keys:
            call = calls.get(key)
            if call is None or call.future.done():
                continue  # a journaled job's answer this build did not ask for: cached for later
            result = results.get(key)
            if isinstance(result, Completion):
                call.future.set_result(result)
            elif result is not None:  # the provider failed this line: made live, with retries
                self._live(key, call, result)
            else:  # never answered (job expired or cancelled): into the next job
                del self.sent[key]
                self.pending[key] = call
                self._wake_sender()

    async def _results(self, model: str, api, state: JobState) -> dict[str, Completion | str]:
        results: dict[str, Completion | str] = {}
        for file_id in (state.output_file_id, state.error_file_id):
            if file_id:
                for text in (await self._retried(model, api.read, file_id)).splitlines():
                    if text.strip():
                        key, result = parse_result(json.loads(text))
                        if result is not None:
                            results[key] = result
        return results

    def _live(self, key: str, call: _Call, why: str) -> None:
        log.info("batch line %s failed (%s): calling live", key[:12], why)

        async def live() -> None:
            try:
                completion, _ = await self.live.send(call.model, key, *call.args)
                call.future.set_result(completion)
            except BaseException as e:
                call.future.set_exception(e)

        task = asyncio.ensure_future(live())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _retried(self, model: str, method, *args):
        """A batch-API request, retried like a call on connection errors, 429s and 5xx."""
        spec, sdk = self.config.spec(model), self.providers.get(model).sdk
        for attempt in range(spec.max_retries + 1):
            try:
                return await method(*args)
            except sdk.APIStatusError as e:
                retryable = e.status_code >= 500 or e.status_code == 429
                error = f"HTTP {e.status_code}"
            except sdk.APIConnectionError:  # timeouts included
                retryable, error = True, "connection failed"
            if not retryable or attempt == spec.max_retries:
                raise ProviderError(f"model '{model}': batch API {method.__name__}: {error}", retryable=False)
            self.usage.retries += 1
            await asyncio.sleep(min(60.0, retry_base() * 2**attempt))
        raise AssertionError("unreachable")
