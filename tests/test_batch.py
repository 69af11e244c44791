"""Stages marked `batch: true`: their calls go through the OpenAI and Together batch APIs (the official
SDKs against the fake server), answers match live calls, and the job journal means a restart never
submits the same requests twice."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import polars as pl
import pytest
from conftest import tiny_recipe, write_recipe
from openai_server import FakeOpenAIServer

from builders.llm import batch_api
from builders.llm.cache import ResponseCache
from builders.loader import load_recipe
from builders.stages import STAGES, run_stage
from builders.tables import TABLES

KEYS = {"openai": "OPENAI_API_KEY", "together": "TOGETHER_API_KEY"}
ROUNDS = 5  # the tiny recipe's feedback loop: answer, review, revise, review, revise


def batch_recipe(project, server, provider="openai", stages="candidates, scores", extra=""):
    path = tiny_recipe(project, provider=provider, model="gpt-test",
                       extra=f", base_url: '{server.base_url}', price: {{input: 1.0, output: 2.0}}{extra}")
    options = "".join(f"  {s.strip()}: {{batch: true, poll_s: 0.02}}\n" for s in stages.split(","))
    return write_recipe(project, "tiny", path.read_text() + f"stages:\n{options}")


@pytest.fixture(autouse=True)
def keys(monkeypatch):
    for variable in KEYS.values():
        monkeypatch.setenv(variable, "sk-test-batch")


def build(recipe, stages=STAGES):
    return {s: run_stage(recipe, s, progress=False) for s in stages}


@pytest.mark.parametrize("provider", ["openai", "together"])
def test_batch_stages_send_one_job_per_round_and_answer_like_live_calls(project, tmp_path, monkeypatch, provider):
    with FakeOpenAIServer(batch_delay_s=0.05) as server:
        engines = build(load_recipe(batch_recipe(project, server, provider)))
        assert server.requests == []  # no live call: everything went through batch jobs
        assert len(server.batches_created) == ROUNDS + 1  # the loop's rounds, then one job of judge calls (both orders)
        assert engines["candidates"].usage.batch_jobs == ROUNDS and engines["scores"].usage.batch_jobs == 1
        batched = {t: pl.read_parquet(TABLES[t].path(tmp_path / "data" / "tiny")) for t in ("candidates", "scores")}

        monkeypatch.setenv("FELLOWSHIP_CACHE_DIR", str(tmp_path / "live-cache"))
        monkeypatch.setenv("FELLOWSHIP_DATA_DIR", str(tmp_path / "live-data"))
        live_recipe = load_recipe(tiny_recipe(project, provider=provider, model="gpt-test",
                                              extra=f", base_url: '{server.base_url}', price: {{input: 1.0, output: 2.0}}"))
        build(live_recipe)
        live = {t: pl.read_parquet(TABLES[t].path(tmp_path / "live-data" / "tiny")) for t in ("candidates", "scores")}
    assert batched["candidates"]["response"].to_list() == live["candidates"]["response"].to_list()
    assert batched["scores"]["score"].to_list() == live["scores"]["score"].to_list()
    # batch answers cost the batch share of the price (0.5 by default)
    assert batched["candidates"]["cost_usd"].sum() == pytest.approx(live["candidates"]["cost_usd"].sum() / 2)


def test_failed_lines_are_made_live_and_no_row_is_lost(project, tmp_path):
    with FakeOpenAIServer(batch_delay_s=0.02, fault_rates={"500": 0.3}, seed=3) as server:
        recipe = load_recipe(batch_recipe(project, server, stages="candidates"))
        engines = build(recipe, ("items", "candidates"))
        live_calls = len(server.requests)
    candidates = pl.read_parquet(TABLES["candidates"].path(tmp_path / "data" / "tiny"))
    assert candidates.height == 12 and candidates["response"].str.len_chars().min() > 0
    assert live_calls > 0 and engines["candidates"].usage.calls == 20


def test_a_failed_job_fails_the_stage_and_the_next_build_submits_anew(project, tmp_path):
    with FakeOpenAIServer(batch_delay_s=0.02, batch_fail="failed") as server:
        path = batch_recipe(project, server, stages="candidates")
        run_stage(load_recipe(path), "items", progress=False)
        result = subprocess.run(["fellowship", "build", str(path), "--stage", "candidates", "--no-progress"],
                                capture_output=True, text=True, cwd=project)
        assert result.returncode == 1
        assert result.stderr.strip().splitlines()[-1].startswith("model 'writer': batch job ")
        assert "failed" in result.stderr and "Traceback" not in result.stderr
        assert not TABLES["candidates"].path(tmp_path / "data" / "tiny").exists()

        server.batch_fail = None
        engine = run_stage(load_recipe(path), "candidates", progress=False)
    assert engine.usage.batch_jobs == ROUNDS and engine.usage.batch_jobs_resumed == 0


def test_lines_an_expired_job_never_answered_go_into_the_next_job(project, tmp_path):
    with FakeOpenAIServer(batch_delay_s=0.05, batch_fail="expired") as server:

        def recover():  # only the first job expires
            while not server.batches_created:
                time.sleep(0.002)
            server.batch_fail = None

        watcher = threading.Thread(target=recover)
        watcher.start()
        recipe = load_recipe(batch_recipe(project, server, stages="candidates"))
        engines = build(recipe, ("items", "candidates"))
        watcher.join()
    assert engines["candidates"].usage.batch_jobs == ROUNDS + 1 and server.requests == []
    assert pl.read_parquet(TABLES["candidates"].path(tmp_path / "data" / "tiny")).height == 12


def test_killed_build_waits_for_its_journaled_job_instead_of_resubmitting(project, tmp_path):
    with FakeOpenAIServer(batch_delay_s=1.0) as server:
        path = batch_recipe(project, server, stages="candidates")
        run_stage(load_recipe(path), "items", progress=False)
        command = ["fellowship", "build", str(path), "--stage", "candidates", "--no-progress"]
        first = subprocess.Popen(command, cwd=project, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while len(server.batches_created) < 2 and time.monotonic() < deadline:  # killed while its 2nd job runs
            time.sleep(0.01)
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        killed_after = list(server.batches_created)

        result = subprocess.run(command, capture_output=True, text=True, cwd=project)
    assert result.returncode == 0, result.stderr
    assert len(killed_after) == 2
    assert len(server.batches_created) == ROUNDS  # the job running at the kill was waited for, not sent again
    assert server.batches_created[:2] == killed_after
    assert "1 resumed" in result.stderr
    assert pl.read_parquet(TABLES["candidates"].path(tmp_path / "data" / "tiny")).height == 12


def test_a_job_started_but_not_journaled_is_found_by_its_file(project, tmp_path, monkeypatch):
    # killed between starting a job and writing its id down: the next build finds it by its input file
    original = batch_api.OpenAIBatchAPI.create

    async def create_then_die(self, file_id, metadata):
        await original(self, file_id, metadata)
        raise KeyboardInterrupt  # as if killed right here

    with FakeOpenAIServer(batch_delay_s=0.02) as server:
        recipe = load_recipe(batch_recipe(project, server, stages="candidates"))
        run_stage(recipe, "items", progress=False)
        monkeypatch.setattr(batch_api.OpenAIBatchAPI, "create", create_then_die)
        with pytest.raises(KeyboardInterrupt):
            run_stage(recipe, "candidates", progress=False)
        assert len(server.batches_created) == 1
        [(file_id, job_id, keys)] = ResponseCache().journal_open(next(iter(_endpoints(recipe))))
        assert job_id is None and len(keys) == 4

        monkeypatch.setattr(batch_api.OpenAIBatchAPI, "create", original)
        engine = run_stage(recipe, "candidates", progress=False)
    assert len(server.batches_created) == ROUNDS  # the orphan was adopted, not sent again
    assert (engine.usage.batch_jobs, engine.usage.batch_jobs_resumed) == (ROUNDS - 1, 1)


def _endpoints(recipe):
    import json

    return {json.dumps([s.provider, s.model, s.base_url]) for s in recipe.models.values()}
