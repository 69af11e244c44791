"""The fake OpenAI-compatible server itself (tests/openai_server.py), driven by the official `openai`
and `together` SDKs: the concurrency limit and its 429s, x-ratelimit headers, the OpenAI and Together
batch APIs from upload to output file, failing lines and failing batches, the stats endpoint, and the
server run as its own process.
"""

from __future__ import annotations

import http.client
import json
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import openai
import pytest
import together
from openai_server import FakeOpenAIServer, Fault, completion_body, duration

ROOT = Path(__file__).resolve().parent.parent
MESSAGES = [{"role": "user", "content": "Why is the sky blue?"}]


def openai_client(server: FakeOpenAIServer) -> openai.OpenAI:
    return openai.OpenAI(api_key="sk-test", base_url=server.base_url, max_retries=0)


def together_client(server: FakeOpenAIServer) -> together.Together:
    # Together's SDK appends /v1 itself: its base URL is the server root (as builders/llm/sdk.py sets it)
    return together.Together(api_key="tg-test", base_url=server.base_url.removesuffix("/v1"), max_retries=0)


def chat(client: openai.OpenAI, content: str = "Why is the sky blue?"):
    """One chat request; the raw response (headers and the parsed completion)."""
    messages = [{"role": "user", "content": content}]
    return client.chat.completions.with_raw_response.create(model="gpt-test", messages=messages)


def wait_until(condition, what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.005)


def write_batch_input(path: Path, n: int, *, openai_style: bool = True) -> list[dict]:
    """n request lines (OpenAI's form has `method` and `url`; Together's only `custom_id` and `body`)."""
    lines = []
    for i in range(n):
        messages = [{"role": "user", "content": f"question {i}"}]
        line = {"custom_id": f"req-{i}", "body": {"model": "gpt-test", "messages": messages}}
        if openai_style:
            line.update(method="POST", url="/v1/chat/completions")
        lines.append(line)
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return lines


def poll(retrieve, final: set[str], first: str | None = None, timeout: float = 5.0):
    """Retrieve until the status is one of `final`; the last batch and the statuses seen (after `first`)."""
    seen = [first] if first else []
    deadline = time.monotonic() + timeout
    while True:
        batch = retrieve()
        if not seen or seen[-1] != batch.status:
            seen.append(batch.status)
        if batch.status in final:
            return batch, seen
        assert time.monotonic() < deadline, f"batch still {batch.status}"
        time.sleep(0.01)


def jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


# -- rate limits ----------------------------------------------------------------------------------


def test_requests_over_the_limit_get_429_at_once_with_ratelimit_headers():
    with FakeOpenAIServer(max_in_flight=2, delay_s=0.4, retry_after_s=0.25) as server:
        client = openai_client(server)
        answers = []
        threads = [threading.Thread(target=lambda: answers.append(chat(client))) for _ in range(2)]
        for thread in threads:
            thread.start()
        wait_until(lambda: server.in_flight == 2, "two requests are being served")

        started = time.monotonic()
        with pytest.raises(openai.RateLimitError) as info:
            chat(client)
        rejected_after = time.monotonic() - started
        for thread in threads:
            thread.join()
        alone = chat(client)

    headers = info.value.response.headers
    assert rejected_after < 0.2  # not delayed like an answer (0.4 s)
    assert headers["retry-after"] == "0.25"
    assert headers["x-ratelimit-limit-requests"] == "2"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-reset-requests"] == "250ms"
    assert info.value.body["code"] == "rate_limit_exceeded"
    # every 200 says how many more requests fit: the limit minus those in flight, this one included
    assert {a.headers["x-ratelimit-remaining-requests"] for a in answers} <= {"0", "1"}
    assert all(a.headers["x-ratelimit-limit-requests"] == "2" for a in answers + [alone])
    assert alone.headers["x-ratelimit-remaining-requests"] == "1"
    assert alone.headers["x-ratelimit-reset-requests"] == "250ms"
    assert alone.parse().model_dump(exclude_none=True) == completion_body(server.requests[-1]["json"])
    assert (server.rejected_over_limit, server.faults_sent["429"]) == (1, 1)
    assert (server.peak_in_flight, server.completed, len(server.requests), server.in_flight) == (2, 3, 4, 0)


def test_without_a_limit_answers_carry_no_ratelimit_headers_unless_given():
    fixed = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "2s"}
    with FakeOpenAIServer() as plain, FakeOpenAIServer(ratelimit_headers=fixed) as scripted:
        plain_headers = chat(openai_client(plain)).headers
        scripted_headers = chat(openai_client(scripted)).headers
    with FakeOpenAIServer(max_in_flight=5, ratelimit_headers=fixed) as limited:
        limited_headers = chat(openai_client(limited)).headers

    assert not any(name.startswith("x-ratelimit") for name in plain_headers)
    assert scripted_headers["x-ratelimit-remaining-requests"] == "0"
    assert scripted_headers["x-ratelimit-reset-requests"] == "2s"
    assert "x-ratelimit-limit-requests" not in scripted_headers
    # the fixed headers win over the computed ones
    assert limited_headers["x-ratelimit-limit-requests"] == "5"
    assert limited_headers["x-ratelimit-remaining-requests"] == "0"
    assert limited_headers["x-ratelimit-reset-requests"] == "2s"


def test_drawn_429s_carry_the_servers_retry_after_and_scripted_ones_their_own():
    with FakeOpenAIServer(fault_rates={"429": 1.0}, retry_after_s=0.5) as server:
        client = openai_client(server)
        server.fail_next(Fault("429", retry_after=3))
        with pytest.raises(openai.RateLimitError) as scripted:
            chat(client)
        with pytest.raises(openai.RateLimitError) as drawn:
            chat(client)

    assert scripted.value.response.headers["retry-after"] == "3"
    assert drawn.value.response.headers["retry-after"] == "0.5"
    assert server.faults_sent["429"] == 2 and server.rejected_over_limit == 0


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0s"), (0.25, "250ms"), (1, "1s"), (1.5, "1.5s"), (360, "6m0s"), (3725, "1h2m5s")]
)
def test_reset_durations_are_written_the_way_openai_writes_them(seconds, text):
    assert duration(seconds) == text


def test_many_simultaneous_connections_are_served_concurrently():
    n = 64
    with FakeOpenAIServer(delay_s=0.3, record=False) as server:
        port = int(server.base_url.split(":")[2].split("/")[0])
        statuses = []

        def one(i: int) -> None:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            body = json.dumps({"model": "m", "messages": [{"role": "user", "content": f"q{i}"}]})
            connection.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
            statuses.append(connection.getresponse().status)
            connection.close()

        threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started

    assert statuses == [200] * n
    assert server.peak_in_flight == n and server.completed == n
    assert server.requests == []  # record=False
    assert elapsed < 0.3 * 4  # served side by side, not one after another


# -- batches through the OpenAI SDK ---------------------------------------------------------------


def test_openai_batch_round_trip(tmp_path):
    lines = write_batch_input(tmp_path / "input.jsonl", 4)
    with FakeOpenAIServer(batch_delay_s=0.4) as server:
        client = openai_client(server)
        server.fail_next("500")  # scripted faults are for live requests, never batch lines
        uploaded = client.files.create(file=(tmp_path / "input.jsonl").open("rb"), purpose="batch")
        created = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                        completion_window="24h", metadata={"stage": "scores"})
        batch, statuses = poll(lambda: client.batches.retrieve(created.id), {"completed"}, created.status)
        output = client.files.content(batch.output_file_id)
        output_info = client.files.retrieve(batch.output_file_id)
        input_text = client.files.content(uploaded.id).text
        with pytest.raises(openai.InternalServerError):
            chat(client)

    assert (uploaded.id, uploaded.purpose, uploaded.filename) == ("file-1", "batch", "input.jsonl")
    assert uploaded.bytes == len(input_text.encode()) and input_text == (tmp_path / "input.jsonl").read_text()
    assert created.status == "validating" and created.metadata == {"stage": "scores"}
    assert statuses == ["validating", "in_progress", "completed"]
    assert batch.request_counts.model_dump() == {"total": 4, "completed": 4, "failed": 0}
    assert batch.error_file_id is None and batch.completed_at is not None and batch.model == "gpt-test"
    assert output_info.purpose == "batch_output" and output_info.bytes == len(output.content)
    results = jsonl(output.text)
    assert [r["custom_id"] for r in results] == [line["custom_id"] for line in lines]
    for result, line in zip(results, lines):
        assert result["error"] is None and result["id"].startswith("batch_req_")
        assert result["response"]["status_code"] == 200 and result["response"]["request_id"]
        assert result["response"]["body"] == completion_body(line["body"])
    assert server.batches_created == [created.id] and server.files_uploaded == 1
    assert server.api_calls["POST /batches"] == 1 and server.api_calls["POST /files"] == 1
    assert server.completed == 0 and server.faults_sent == {"500": 1}  # batch lines are not live requests


def test_lines_that_draw_a_fault_go_to_the_error_file(tmp_path):
    write_batch_input(tmp_path / "input.jsonl", 12)
    with FakeOpenAIServer(fault_rates={"500": 0.3, "drop": 0.2}, seed=0, batch_delay_s=0) as server:
        client = openai_client(server)
        file = client.files.create(file=(tmp_path / "input.jsonl").open("rb"), purpose="batch")
        batch = client.batches.retrieve(client.batches.create(
            input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h").id)
        output = jsonl(client.files.content(batch.output_file_id).text)
        errors = jsonl(client.files.content(batch.error_file_id).text)

    assert batch.status == "completed"
    assert 0 < len(errors) < 12 and len(output) + len(errors) == 12
    assert batch.request_counts.model_dump() == {"total": 12, "completed": len(output), "failed": len(errors)}
    assert sorted(r["custom_id"] for r in output + errors) == sorted(f"req-{i}" for i in range(12))
    for line in errors:
        assert line["error"] is None and line["response"]["status_code"] == 500
        assert set(line["response"]["body"]["error"]) == {"message", "type", "param", "code"}
        assert line["response"]["body"]["error"]["type"] == "server_error"
    assert all(r["response"]["status_code"] == 200 for r in output)


def test_a_batch_where_every_line_fails_has_no_output_file(tmp_path):
    write_batch_input(tmp_path / "input.jsonl", 3)
    with FakeOpenAIServer(fault_rates={"429": 1.0}, batch_delay_s=0) as server:
        client = openai_client(server)
        file = client.files.create(file=(tmp_path / "input.jsonl").open("rb"), purpose="batch")
        batch = client.batches.retrieve(client.batches.create(
            input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h").id)
        errors = jsonl(client.files.content(batch.error_file_id).text)

    assert (batch.status, batch.output_file_id) == ("completed", None)
    assert batch.request_counts.model_dump() == {"total": 3, "completed": 0, "failed": 3}
    assert [line["response"]["status_code"] for line in errors] == [500, 500, 500]


@pytest.mark.parametrize("outcome", ["failed", "expired"])
def test_batch_fail_ends_every_batch_in_that_status(tmp_path, outcome):
    write_batch_input(tmp_path / "input.jsonl", 2)
    with FakeOpenAIServer(batch_fail=outcome, batch_delay_s=0.1) as server:
        client = openai_client(server)
        file = client.files.create(file=(tmp_path / "input.jsonl").open("rb"), purpose="batch")
        created = client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")
        batch, statuses = poll(lambda: client.batches.retrieve(created.id), {"failed", "expired", "completed"},
                               created.status)
        errors = jsonl(client.files.content(batch.error_file_id).text) if batch.error_file_id else []

    assert batch.status == outcome and batch.output_file_id is None
    if outcome == "failed":
        assert "in_progress" not in statuses  # a batch fails in validation
        assert batch.failed_at is not None and batch.errors.data[0].code == "fake_failure"
        assert batch.error_file_id is None
    else:
        assert batch.expired_at is not None
        assert [(e["response"], e["error"]["code"]) for e in errors] == [(None, "batch_expired")] * 2


def test_invalid_input_fails_the_batch_naming_the_line(tmp_path):
    path = tmp_path / "input.jsonl"
    lines = write_batch_input(path, 2)
    path.write_text(path.read_text() + json.dumps(lines[0]) + "\n")  # line 3 repeats a custom_id
    with FakeOpenAIServer(batch_delay_s=0) as server:
        client = openai_client(server)
        file = client.files.create(file=path.open("rb"), purpose="batch")
        batch = client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")
        batch = client.batches.retrieve(batch.id)
        with pytest.raises(openai.NotFoundError):
            client.batches.create(input_file_id="file-404", endpoint="/v1/chat/completions", completion_window="24h")

    assert batch.status == "failed"
    [error] = batch.errors.data
    assert (error.code, error.line) == ("duplicate_custom_id", 3)


def test_list_is_newest_first_in_one_page_and_cancel_stops_a_batch(tmp_path):
    write_batch_input(tmp_path / "input.jsonl", 2)
    with FakeOpenAIServer(batch_delay_s=30) as server:
        client = openai_client(server)
        file = client.files.create(file=(tmp_path / "input.jsonl").open("rb"), purpose="batch")
        ids = [client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions",
                                     completion_window="24h").id for _ in range(3)]
        page = client.batches.list()
        cancelling = client.batches.cancel(ids[1])
        cancelled = client.batches.retrieve(ids[1])
        server.batch_delay_s = 0  # the others are now done
        with pytest.raises(openai.BadRequestError):
            client.batches.cancel(ids[0])
        together_list = together_client(server).batches.list()

    assert [b.id for b in page.data] == ids[::-1] and page.has_more is False
    assert [b.id for b in page] == ids[::-1]  # iterating follows pages: has_more false ends it
    assert cancelling.status == "cancelling" and cancelled.status == "cancelled"
    assert cancelled.cancelled_at is not None and cancelled.output_file_id is None
    assert [(b.id, b.status) for b in together_list] == [
        (ids[2], "COMPLETED"), (ids[1], "CANCELLED"), (ids[0], "COMPLETED")]
    assert server.batches_created == ids


# -- batches through the Together SDK -------------------------------------------------------------


def test_together_batch_round_trip(tmp_path):
    lines = write_batch_input(tmp_path / "input.jsonl", 3, openai_style=False)
    with FakeOpenAIServer(batch_delay_s=0.4, fault_rates={"500": 0.4}, seed=3) as server:
        client = together_client(server)
        uploaded = client.files.upload(tmp_path / "input.jsonl", purpose="batch-api")
        created = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions")
        batch, statuses = poll(lambda: client.batches.retrieve(created.job.id), {"COMPLETED"}, created.job.status)
        output = jsonl(client.files.content(batch.output_file_id).text()) if batch.output_file_id else []
        errors = jsonl(client.files.content(batch.error_file_id).read().decode()) if batch.error_file_id else []
        info = client.files.retrieve(uploaded.id)

    # the upload manager's presigned-URL dance: POST /v1/files -> 302 Location, PUT there, then preprocess
    assert server.api_calls["POST /files"] == 1 and server.api_calls["PUT /_uploads/{id}"] == 1
    assert server.api_calls["POST /files/{id}/preprocess"] == 1 and server.files_uploaded == 1
    assert (uploaded.id, uploaded.purpose, uploaded.file_type) == ("file-1", "batch-api", "jsonl")
    assert uploaded.filename == "input.jsonl"
    assert info.bytes == (tmp_path / "input.jsonl").stat().st_size == uploaded.bytes
    assert created.job.status == "VALIDATING" and created.job.input_file_id == uploaded.id
    assert statuses == ["VALIDATING", "IN_PROGRESS", "COMPLETED"]
    assert batch.progress == 100.0 and batch.completed_at is not None and batch.error is None
    assert output and errors  # seed 3 draws a fault for some lines, not all
    by_id = {line["custom_id"]: line["body"] for line in lines}
    for result in output:
        assert result["response"]["body"] == completion_body(by_id[result["custom_id"]])
    assert sorted(r["custom_id"] for r in output + errors) == sorted(by_id)
    assert server.batches_created == [created.job.id]


def test_together_failed_batch_says_why(tmp_path):
    write_batch_input(tmp_path / "input.jsonl", 2, openai_style=False)
    with FakeOpenAIServer(batch_fail="failed", batch_delay_s=0) as server:
        client = together_client(server)
        file = client.files.upload(tmp_path / "input.jsonl", purpose="batch-api", check=False)
        created = client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions")
        batch = client.batches.retrieve(created.job.id)

    assert batch.status == "FAILED" and batch.error and batch.output_file_id is None


# -- stats and the server as a process ------------------------------------------------------------


def test_stats_endpoint_counts_requests_faults_and_repeats(tmp_path):
    write_batch_input(tmp_path / "input.jsonl", 1)
    with FakeOpenAIServer(record=False, max_in_flight=3) as server:
        client = openai_client(server)
        chat(client, "one")
        chat(client, "one")  # the same body answered twice: one repeat
        server.fail_next("500")
        with pytest.raises(openai.InternalServerError):
            chat(client, "two")
        chat(client, "two")  # answered 200 for the first time
        file = client.files.create(file=(tmp_path / "input.jsonl").open("rb"), purpose="batch")
        client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")
        stats = get_json(f"{server.base_url}/_stats")

    assert stats == {
        "requests": 4, "completed": 3, "in_flight": 0, "peak_in_flight": 1, "faults": {"500": 1},
        "rejected_over_limit": 0, "completed_repeats": 1, "batches_created": 1, "files_uploaded": 1,
    }
    assert stats == server.stats() and server.requests == []


def test_runs_as_its_own_process_until_sigterm():
    command = [sys.executable, "-m", "tests.openai_server", "--delay", "0", "--fault-rates", "500=0,drop=0",
               "--seed", "1", "--retry-after", "0", "--max-in-flight", "8", "--batch-delay", "0.5", "--no-record"]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        base_url = proc.stdout.readline().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v1", base_url), base_url
        client = openai.OpenAI(api_key="sk-test", base_url=base_url, max_retries=0)
        response = client.chat.completions.with_raw_response.create(model="gpt-test", messages=MESSAGES)
        # the server counts an answer once it has sent it: the client may ask before the count moves
        wait_until(lambda: get_json(f"{base_url}/_stats")["completed"] == 1, "the answer is counted")
        stats = get_json(f"{base_url}/_stats")
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)

    assert response.headers["x-ratelimit-limit-requests"] == "8"
    expected = completion_body({"model": "gpt-test", "messages": MESSAGES})
    assert response.parse().choices[0].message.content == expected["choices"][0]["message"]["content"]
    assert (stats["requests"], stats["completed"], stats["faults"]) == (1, 1, {})
    assert proc.returncode == 0, err
    assert out == "" and err == ""  # the URL was the only output
