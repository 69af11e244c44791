"""The engine's scheduling of in-process models: their calls queue before the timeout starts."""

from __future__ import annotations

import asyncio
import threading
import time

from builders.llm.engine import Engine
from builders.llm.fake import FakeProvider
from builders.loader import load_recipe
from conftest import tiny_recipe


class SlowInProcess(FakeProvider):
    """Like the local provider: one call at a time behind a lock, in a worker thread."""

    runs_in_process = True
    lock = threading.Lock()
    running = 0
    most = 0

    async def complete(self, messages, *, sampling, output, sample_index):
        def work():
            with SlowInProcess.lock:
                SlowInProcess.running += 1
                SlowInProcess.most = max(SlowInProcess.most, SlowInProcess.running)
                time.sleep(0.15)
                SlowInProcess.running -= 1
            return messages

        await asyncio.to_thread(work)
        return await super().complete(messages, sampling=sampling, output=output, sample_index=sample_index)


def test_queued_in_process_calls_do_not_time_out(project):
    # eight calls of 0.15 s each, one at a time, with a 0.5 s timeout and concurrency 8: were the
    # queueing counted, the later calls would time out and be retried behind threads that cannot stop
    recipe = load_recipe(tiny_recipe(project, extra=", timeout_s: 0.5, concurrency: 8, max_retries: 0"))
    providers = {name: SlowInProcess(recipe.models[name]) for name in ("writer", "judge")}
    engine = Engine.for_recipe(recipe, providers=providers, progress=False)

    async def calls():
        jobs = [engine.chat(name, [{"role": "user", "content": f"q{k}"}]) for k in range(4) for name in ("writer", "judge")]
        return await asyncio.gather(*jobs)

    started = time.perf_counter()
    answers = engine.run(calls())
    assert len(answers) == 8 and engine.usage.retries == 0
    assert SlowInProcess.most == 1 and time.perf_counter() - started >= 8 * 0.15


def test_a_failing_item_stops_new_calls_but_lets_calls_in_flight_finish_and_be_cached(project):
    # items 0-2 have calls in flight when item 3 fails: those finish and are kept; the other 36
    # items never start, and nothing asked for after the failure goes out
    from builders.errors import BuildError
    from openai_server import FakeOpenAIServer

    with FakeOpenAIServer(delay_s=0.2) as server:
        recipe = load_recipe(tiny_recipe(project, provider="openai-compatible", model="m",
                                         extra=f", base_url: '{server.base_url}', concurrency: 4"))
        engine = Engine.for_recipe(recipe, progress=False)

        async def item(k):
            if k == 3:
                await asyncio.sleep(0.05)
                raise BuildError("item 3 is broken")
            first = await engine.chat("writer", [{"role": "user", "content": f"q{k}"}])
            return await engine.chat("writer", [{"role": "user", "content": first.text}])  # never sent

        engine.window = 4
        try:
            engine.run(engine.gather((item(k) for k in range(40)), total=40, desc="t"))
        except BuildError as e:
            assert str(e) == "item 3 is broken"
        else:
            raise AssertionError("the failure was not raised")
        assert server.completed == len(server.requests) == 3
    assert len(engine.cache) == 3 and engine.usage.calls == 3


def test_results_come_back_in_the_jobs_order_whatever_order_they_finish_in(project):
    recipe = load_recipe(tiny_recipe(project))
    engine = Engine.for_recipe(recipe, progress=False)

    async def job(k):
        await asyncio.sleep((7 * k % 10) / 1000)
        return k

    assert engine.run(engine.gather((job(k) for k in range(50)), total=50, desc="t")) == list(range(50))
