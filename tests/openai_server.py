"""A fake OpenAI-compatible server on 127.0.0.1 (chat completions, rate limits, files and batches),
for tests and benchmarks.

    with FakeOpenAIServer() as server:
        ...  # point a model at base_url=server.base_url ("http://127.0.0.1:PORT/v1")
        server.fail_next(Fault("429", retry_after=0.3), "drop")  # the next two requests fail
        assert server.completed == 1

Chat completions. Answers are deterministic: the text is `builders.llm.fake.auto_answer(messages)`,
so judge and reviewer formats are answered the way the offline `fake/auto` provider answers them.
Any path ending in `/chat/completions` is served. Faults:

- "429": HTTP 429 with a `Retry-After` header (seconds: `Fault.retry_after` for a scripted fault,
  `retry_after_s` for a drawn one)
- "500" / "400": HTTP 500 (retryable) / 400 (not retryable) with an OpenAI-style error body
- "broken-json": HTTP 200 whose JSON body is cut in half
- "drop": the connection is closed without any answer

Scripted faults (`fail_next`) apply to the next chat requests in arrival order. In rate mode
(`fault_rates={"500": 0.05, "drop": 0.02}, seed=0`) a request's fault is drawn from a hash of the
seed, its body and how many times that body was seen before, so a build meets the same faults
whatever order its requests arrive in. `delay_s` waits before every answer.

Constructor options:

- `delay_s`, `fault_rates`, `seed`: as above.
- `max_in_flight`: a concurrency limit like a provider's request limit. A chat request arriving while
  that many are being served gets HTTP 429 at once, with `Retry-After` and the `x-ratelimit-*-requests`
  headers (remaining 0); it counts in `faults_sent["429"]` and `rejected_over_limit`. Every 200 answer
  then carries `x-ratelimit-limit-requests`, `x-ratelimit-remaining-requests` (the limit minus the
  requests in flight, this one included) and `x-ratelimit-reset-requests`.
- `retry_after_s` (1.0): the `Retry-After` of the 429s the server decides on (over the limit, or drawn
  in rate mode), and the `x-ratelimit-reset-requests` duration (OpenAI's format: `1s`, `250ms`, `6m0s`).
- `ratelimit_headers`: fixed headers added to every 200 chat answer (they win over the computed ones).
- `batch_delay_s` (0.2): how long a batch takes from its creation: `validating` for the first quarter,
  then `in_progress`, then its outcome. Status is computed when a batch is read; there is no worker.
- `batch_fail` (None, "failed" or "expired"): every new batch ends in that status instead.
- `record` (True): keep every chat request in `requests`; False for long benchmark runs.
- `port` (0): the port to listen on; 0 picks a free one.

Counters (attributes): `requests` (path, headers with lower-case names, json, time (monotonic) of
each chat request), `requests_received`, `completed` (whole 200 answers), `in_flight` (chat requests
being served), `peak_in_flight`, `faults_sent` (by kind), `rejected_over_limit`, `completed_repeats`
(whole 200 answers to a body already answered 200; bodies are kept as sha256 digests only),
`files_uploaded`, `batches_created` (batch ids in creation order) and `api_calls` (files, batches and
stats requests by route, without `/v1`: `"POST /batches"`, `"GET /batches/{id}"`).
`GET /v1/_stats` returns the counts as JSON (`stats()`).

Files and batches (OpenAI's Batch API and Together's, on the same paths, told apart by the SDK's
`User-Agent`; Together's client uses the server root as its base URL):

- `POST /v1/files`: a multipart upload with a `file` part (OpenAI) stores the file; a form without one
  (Together's upload manager) gets `302` with `Location: <server>/_uploads/<id>` and
  `X-Together-File-Id`; the client PUTs the bytes there and then calls
  `POST /v1/files/<id>/preprocess`. Files get ids `file-<n>` and live in memory.
- `GET /v1/files`, `GET /v1/files/<id>`, `GET /v1/files/<id>/content`, `DELETE /v1/files/<id>`.
- `POST /v1/batches` (`input_file_id`, `endpoint` `/v1/chat/completions`): input lines are
  `{"custom_id", "body", ...}` (OpenAI's `method` and `url` are optional here, as with Together).
  A line's fault is drawn like a live request's (from `fault_rates`, over the line's `body` as compact
  sorted-key JSON); scripted faults never apply to batch lines. A line without a fault goes to the
  output file as `{"id", "custom_id", "response": {"status_code": 200, "request_id", "body":
  <chat.completion>}, "error": null}`; a line with any fault goes to the error file with status 500
  and an OpenAI error body. Invalid input (bad JSON, no `custom_id` or `body`, a repeated `custom_id`,
  another `url`) fails the batch after validation, with `errors` naming the line. An expired batch
  has no output file; its error file holds every line with error code `batch_expired`.
- `GET /v1/batches` (all, newest first, one page), `GET /v1/batches/<id>`,
  `POST /v1/batches/<id>/cancel` (`cancelling`, then `cancelled`, with no output).
- OpenAI shapes: `Batch` with lower-case statuses and `request_counts`; Together's: `BatchJob` with
  upper-case statuses, `progress` (0-100), ISO datetimes, `create` wrapped as `{"job", "warning"}`
  and `list` as a bare JSON array.

Run it as its own process from the repository root (it prints its base URL as the only stdout line
and serves until SIGTERM or SIGINT, then exits 0):

    python -m tests.openai_server --delay 1.25 --fault-rates 429=0.1,500=0.05 --seed 0 \\
        --retry-after 0 --max-in-flight 64 --batch-delay 0.5 --no-record
"""

from __future__ import annotations

import argparse
import datetime
import functools
import hashlib
import json
import math
import re
import signal
import socket
import sys
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from builders.llm.fake import auto_answer, fake_logprobs

FAULT_KINDS = ("429", "500", "400", "broken-json", "drop")
BATCH_FAILURES = ("failed", "expired")
BATCH_ENDPOINT = "/v1/chat/completions"
TOGETHER_STATUS = {
    "validating": "VALIDATING", "in_progress": "IN_PROGRESS", "completed": "COMPLETED", "failed": "FAILED",
    "expired": "EXPIRED", "cancelling": "CANCELLED", "cancelled": "CANCELLED",
}
DAY_S = 24 * 3600


@dataclass(frozen=True)
class Fault:
    kind: str
    retry_after: float = 0.0  # "429" only: the Retry-After header, in seconds

    def __post_init__(self):
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {self.kind!r} (known: {', '.join(FAULT_KINDS)})")


def duration(seconds: float) -> str:
    """A duration the way OpenAI's `x-ratelimit-reset-*` headers write it: `250ms`, `1s`, `1.5s`, `6m0s`."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        return f"{_trim(seconds * 1000)}ms"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{_trim(secs)}s"
    if hours:
        return f"{int(hours)}h{int(minutes)}m{text}"
    return f"{int(minutes)}m{text}" if minutes else text


def _trim(number: float) -> str:
    return f"{number:.3f}".rstrip("0").rstrip(".")


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


@dataclass
class StoredFile:
    id: str
    filename: str
    purpose: str
    created_at: int
    data: bytes | None = None  # None: a Together upload waiting for its PUT


@dataclass
class Batch:
    id: str
    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict | None
    model: str | None
    input_bytes: int
    created_at: float  # wall clock
    started: float  # monotonic
    total: int
    outcome: str  # "completed", "failed" or "expired"
    output_lines: list[str] = field(default_factory=list)
    error_lines: list[str] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)  # why a failed batch failed (OpenAI's `errors.data`)
    cancelled_at: float | None = None
    finished: bool = False
    output_file_id: str | None = None
    error_file_id: str | None = None


class FakeOpenAIServer:
    def __init__(
        self,
        *,
        delay_s: float = 0.0,
        fault_rates: dict[str, float] | None = None,
        seed: int = 0,
        max_in_flight: int | None = None,
        retry_after_s: float = 1.0,
        ratelimit_headers: dict[str, str] | None = None,
        batch_delay_s: float = 0.2,
        batch_fail: str | None = None,
        record: bool = True,
        port: int = 0,
        logprobs: bool = True,
    ):
        self.delay_s = delay_s
        self.fault_rates = {Fault(kind).kind: rate for kind, rate in (fault_rates or {}).items()}
        if sum(self.fault_rates.values()) > 1:
            raise ValueError("fault rates add up to more than 1")
        if max_in_flight is not None and max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        if batch_fail not in (None, *BATCH_FAILURES):
            raise ValueError(f"unknown batch_fail {batch_fail!r} (known: {', '.join(BATCH_FAILURES)})")
        self.seed = seed
        self.max_in_flight = max_in_flight
        self.retry_after_s = retry_after_s
        self.ratelimit_headers = dict(ratelimit_headers or {})
        self.batch_delay_s = batch_delay_s
        self.batch_fail = batch_fail
        self.record = record
        self.port = port
        self.logprobs = logprobs  # False: a server that ignores `logprobs` requests
        self._answers: deque[tuple[str, list | None]] = deque()  # scripted answers: text, OpenAI-style logprobs
        self.requests: list[dict] = []  # every chat request: path, headers (lower-case names), json, time (monotonic)
        self.requests_received = 0
        self.completed = 0  # whole 200 answers sent
        self.completed_repeats = 0  # whole 200 answers to a body that was already answered 200
        self.in_flight = 0  # chat requests admitted and not yet answered
        self.peak_in_flight = 0
        self.rejected_over_limit = 0
        self.faults_sent: Counter[str] = Counter()
        self.files_uploaded = 0
        self.batches_created: list[str] = []
        self.api_calls: Counter[str] = Counter()
        self.files: dict[str, StoredFile] = {}
        self.batches: dict[str, Batch] = {}
        self._script: deque[Fault] = deque()
        self._seen: Counter[bytes] = Counter()  # body digest -> times drawn for
        self._answered: set[bytes] = set()  # body digests answered 200
        self._ids: Counter[str] = Counter()  # prefix -> last number given
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None

    def answer_next(self, text: str, logprobs: list[tuple[str, list[tuple[str, float]]]] | None = None) -> None:
        """Answer the next chat request with `text` and, when asked for them, these token probabilities:
        (token, [(token, probability), ...] most likely first, the token itself among them)."""
        with self._lock:
            self._answers.append((text, logprobs))

    def fail_next(self, *faults: str | Fault) -> None:
        """Queue faults for the next chat requests, one per request, in order."""
        with self._lock:
            self._script.extend(f if isinstance(f, Fault) else Fault(f) for f in faults)

    @property
    def base_url(self) -> str:
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def stats(self) -> dict:
        with self._lock:
            return {
                "requests": self.requests_received,
                "completed": self.completed,
                "in_flight": self.in_flight,
                "peak_in_flight": self.peak_in_flight,
                "faults": dict(self.faults_sent),
                "rejected_over_limit": self.rejected_over_limit,
                "completed_repeats": self.completed_repeats,
                "batches_created": len(self.batches_created),
                "files_uploaded": self.files_uploaded,
            }

    def __enter__(self) -> FakeOpenAIServer:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._httpd = _QuietServer(("127.0.0.1", self.port), handler)
        serve = functools.partial(self._httpd.serve_forever, poll_interval=0.02)
        self._thread = threading.Thread(target=serve, name="fake-openai", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    # -- faults ---------------------------------------------------------------------------------

    def _next_fault(self, digest: bytes) -> Fault | None:
        with self._lock:
            if self._script:
                return self._script.popleft()
        return self._drawn_fault(digest)

    def _drawn_fault(self, digest: bytes) -> Fault | None:
        if not self.fault_rates:
            return None
        with self._lock:
            nth = self._seen[digest]
            self._seen[digest] += 1
        draw = hashlib.sha256(f"{self.seed}:{digest.hex()}:{nth}".encode()).digest()
        u, cumulative = int.from_bytes(draw[:8], "big") / 2**64, 0.0
        for kind, rate in sorted(self.fault_rates.items()):
            cumulative += rate
            if u < cumulative:
                return Fault(kind, retry_after=self.retry_after_s)
        return None

    # -- rate limits ----------------------------------------------------------------------------

    def _admit(self) -> bool:
        """Count a chat request in; False (and counted as rejected) when the limit is reached."""
        with self._lock:
            self.requests_received += 1
            if self.max_in_flight is not None and self.in_flight >= self.max_in_flight:
                self.rejected_over_limit += 1
                self.faults_sent["429"] += 1
                return False
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            return True

    def _limit_headers(self, remaining: int) -> dict[str, str]:
        return {
            "x-ratelimit-limit-requests": str(self.max_in_flight),
            "x-ratelimit-remaining-requests": str(max(0, remaining)),
            "x-ratelimit-reset-requests": duration(self.retry_after_s),
        }

    def _ok_headers(self) -> dict[str, str]:
        headers = {} if self.max_in_flight is None else self._limit_headers(self.max_in_flight - self.in_flight)
        headers.update(self.ratelimit_headers)
        return headers

    # -- files and batches (callers hold no lock) ---------------------------------------------

    def _new_id(self, prefix: str) -> str:  # the caller holds the lock
        self._ids[prefix] += 1
        return f"{prefix}{self._ids[prefix]}"

    def _store_file(self, filename: str, purpose: str, data: bytes | None) -> StoredFile:
        with self._lock:
            stored = StoredFile(self._new_id("file-"), filename, purpose, int(time.time()), data)
            self.files[stored.id] = stored
            self.files_uploaded += data is not None
        return stored

    def _file(self, file_id: str) -> StoredFile:
        stored = self.files.get(file_id)
        if stored is None:
            raise ApiError(404, f"No such File object: {file_id}")
        return stored

    def _batch(self, batch_id: str) -> Batch:
        batch = self.batches.get(batch_id)
        if batch is None:
            raise ApiError(404, f"No such Batch object: {batch_id}")
        return batch

    def _create_batch(self, body: dict) -> Batch:
        endpoint = body.get("endpoint")
        if endpoint != BATCH_ENDPOINT:
            raise ApiError(400, f"endpoint must be {BATCH_ENDPOINT!r}, not {endpoint!r}")
        stored = self._file(str(body.get("input_file_id")))
        if stored.data is None:
            raise ApiError(400, f"file {stored.id} has no content yet")
        lines, errors = _parse_batch_input(stored.data)
        with self._lock:
            batch_id = self._new_id("batch_")
        batch = Batch(
            id=batch_id, input_file_id=stored.id, endpoint=endpoint,
            completion_window=body.get("completion_window") or "24h", metadata=body.get("metadata"),
            model=body.get("model_id") or next((line["body"].get("model") for line in lines), None),
            input_bytes=len(stored.data), created_at=time.time(), started=time.monotonic(), total=len(lines),
            outcome="failed" if errors else (self.batch_fail or "completed"), errors=errors,
        )
        if batch.outcome == "failed" and not errors:
            message = "This batch failed (batch_fail)."
            batch.errors = [{"code": "fake_failure", "message": message, "param": None, "line": None}]
        for n, line in enumerate(lines):
            request_id = f"{batch_id.removeprefix('batch_')}_{n}"
            if batch.outcome == "expired":
                batch.error_lines.append(_result_line(request_id, line["custom_id"], None, {
                    "code": "batch_expired",
                    "message": "This request could not be executed before the completion window expired.",
                }))
                continue
            fault = self._drawn_fault(hashlib.sha256(_canonical(line["body"])).digest())
            if fault is None:
                body = completion_body(line["body"])
                response = {"status_code": 200, "request_id": f"req_{request_id}", "body": body}
                batch.output_lines.append(_result_line(request_id, line["custom_id"], response, None))
            else:
                error = {"message": f"fake {fault.kind} fault drawn for this request", "type": "server_error",
                         "param": None, "code": None}
                response = {"status_code": 500, "request_id": f"req_{request_id}", "body": {"error": error}}
                batch.error_lines.append(_result_line(request_id, line["custom_id"], response, None))
        with self._lock:
            self.batches[batch_id] = batch
            self.batches_created.append(batch_id)
        return batch

    def _batch_state(self, batch: Batch, now: float) -> tuple[str, float]:
        """The batch's status (OpenAI's names) and how far along it is (0..1); writes its files once done."""
        if batch.cancelled_at is not None:
            return "cancelled", 0.0
        elapsed, delay = now - batch.started, self.batch_delay_s
        if elapsed >= delay:
            self._finish(batch)
            return batch.outcome, 1.0
        if elapsed < delay / 4 or batch.outcome == "failed":
            return "validating", 0.0
        return "in_progress", (elapsed - delay / 4) / (delay - delay / 4)

    def _finish(self, batch: Batch) -> None:
        """Write a finished batch's output and error files, once (under the lock: no reader sees half of it)."""
        with self._lock:
            if batch.finished or batch.outcome == "failed":
                batch.finished = True
                return
            for lines, attribute, kind in ((batch.output_lines, "output_file_id", "output"),
                                           (batch.error_lines, "error_file_id", "error")):
                if lines:
                    data = "".join(line + "\n" for line in lines).encode()
                    name = f"{batch.id}_{kind}.jsonl"
                    stored = StoredFile(self._new_id("file-"), name, "batch_output", int(time.time()), data)
                    self.files[stored.id] = stored
                    setattr(batch, attribute, stored.id)
            batch.finished = True


def _canonical(body) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def _result_line(request_id: str, custom_id: str, response: dict | None, error: dict | None) -> str:
    return json.dumps({"id": f"batch_req_{request_id}", "custom_id": custom_id, "response": response, "error": error})


def _parse_batch_input(data: bytes) -> tuple[list[dict], list[dict]]:
    """The request lines of a batch input file, and the validation errors (OpenAI's `errors.data`)."""
    lines, errors, seen = [], [], set()

    def problem(number: int | None, code: str, message: str) -> None:
        errors.append({"code": code, "message": message, "param": None, "line": number})

    for number, text in enumerate(data.decode("utf-8", "replace").splitlines(), start=1):
        if not text.strip():
            continue
        try:
            line = json.loads(text)
        except ValueError:
            problem(number, "invalid_json_line", "This line is not valid JSON.")
            continue
        well_formed = isinstance(line, dict) and isinstance(line.get("custom_id"), str)
        if not (well_formed and isinstance(line.get("body"), dict)):
            problem(number, "invalid_request", "A line needs a string `custom_id` and an object `body`.")
        elif line["custom_id"] in seen:
            problem(number, "duplicate_custom_id", f"The custom_id {line['custom_id']!r} is used more than once.")
        elif line.get("url", BATCH_ENDPOINT) != BATCH_ENDPOINT:
            problem(number, "mismatched_endpoint", f"The url {line['url']!r} is not the batch's endpoint.")
        else:
            seen.add(line["custom_id"])
            lines.append(line)
    if not lines and not errors:
        problem(None, "empty_file", "The input file has no requests.")
    return lines, errors


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc).isoformat().replace("+00:00", "Z")


def _openai_file(stored: StoredFile) -> dict:
    return {"id": stored.id, "object": "file", "bytes": len(stored.data or b""), "created_at": stored.created_at,
            "filename": stored.filename, "purpose": stored.purpose, "status": "processed",
            "expires_at": None, "status_details": None}


def _together_file(stored: StoredFile) -> dict:
    purpose = "batch-api" if stored.purpose in ("batch", "batch_output") else stored.purpose
    extension = stored.filename.rsplit(".", 1)[-1]
    file_type = extension if extension in ("csv", "jsonl", "parquet") else "jsonl"
    return {"id": stored.id, "object": "file", "bytes": len(stored.data or b""), "created_at": stored.created_at,
            "filename": stored.filename, "FileType": file_type, "purpose": purpose,
            "processing_status": "PENDING" if stored.data is None else "COMPLETED"}


def _openai_batch(fake: FakeOpenAIServer, batch: Batch, status: str, progress: float) -> dict:
    delay, created = fake.batch_delay_s, batch.created_at
    ok, failed = int(len(batch.output_lines) * progress), int(len(batch.error_lines) * progress)
    if status in ("failed", "cancelled", "cancelling"):
        ok = failed = 0

    def at(when: bool, offset: float) -> int | None:
        return int(created + offset) if when else None

    return {
        "id": batch.id, "object": "batch", "endpoint": batch.endpoint, "model": batch.model,
        "errors": {"object": "list", "data": batch.errors} if status == "failed" else None,
        "input_file_id": batch.input_file_id, "completion_window": batch.completion_window, "status": status,
        "output_file_id": batch.output_file_id, "error_file_id": batch.error_file_id,
        "created_at": int(created), "in_progress_at": at(status not in ("validating", "failed"), delay / 4),
        "expires_at": int(created + DAY_S), "finalizing_at": at(status == "completed", delay),
        "completed_at": at(status == "completed", delay), "failed_at": at(status == "failed", delay),
        "expired_at": at(status == "expired", delay),
        "cancelling_at": int(batch.cancelled_at) if batch.cancelled_at else None,
        "cancelled_at": int(batch.cancelled_at) if batch.cancelled_at and status == "cancelled" else None,
        "request_counts": {"total": batch.total, "completed": ok, "failed": failed},
        "metadata": batch.metadata,
    }


def _together_batch(fake: FakeOpenAIServer, batch: Batch, status: str, progress: float) -> dict:
    errors = "; ".join(e["message"] for e in batch.errors) if status == "failed" else None
    if status == "expired":
        errors = "The batch did not finish before its deadline."
    return {
        "id": batch.id, "user_id": "fake-user", "input_file_id": batch.input_file_id,
        "file_size_bytes": batch.input_bytes, "status": TOGETHER_STATUS[status],
        "job_deadline": _iso(batch.created_at + DAY_S), "created_at": _iso(batch.created_at),
        "endpoint": batch.endpoint, "progress": round(100.0 * progress, 1), "model_id": batch.model,
        "output_file_id": batch.output_file_id, "error_file_id": batch.error_file_id, "error": errors,
        "completed_at": _iso(batch.created_at + fake.batch_delay_s) if status == "completed" else None,
    }


def _multipart(content_type: str, raw: bytes) -> dict[str, tuple[str | None, bytes]]:
    """The fields of a multipart/form-data body: name -> (filename, content)."""
    boundary = re.search(r'boundary="?([^";]+)"?', content_type)
    if not content_type.startswith("multipart/form-data") or boundary is None:
        raise ApiError(400, "expected a multipart/form-data body")
    fields = {}
    for part in raw.split(b"--" + boundary.group(1).encode())[1:]:
        if part.startswith(b"--"):
            break
        head, _, content = part.partition(b"\r\n\r\n")
        name = re.search(rb'\bname="([^"]*)"', head)
        filename = re.search(rb'\bfilename="([^"]*)"', head)
        if name:
            fields[name.group(1).decode()] = (
                filename.group(1).decode() if filename else None,
                content[:-2] if content.endswith(b"\r\n") else content,
            )
    return fields


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # the listen backlog: hundreds of clients may connect at once

    def handle_error(self, request, client_address) -> None:  # a client that went away is no error here
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _instance(schema: dict, noise) -> object:
    """A deterministic value of a JSON schema (objects, strings, numbers 1..10, enums)."""
    if "enum" in schema:
        return schema["enum"][next(noise) % len(schema["enum"])]
    if schema.get("type") == "object":
        return {k: _instance(v, noise) for k, v in schema["properties"].items()}
    if schema.get("type") == "number":
        return 1 + next(noise) % 10
    return "A structured evaluation."


def _logprobs(request: dict, text: str, scripted: list | None) -> dict | None:
    """The answer's token probabilities in the shape the request asked for: OpenAI's (`logprobs: true,
    top_logprobs: k`: a `content` list) or Together's (`logprobs: k`: parallel lists)."""
    asked = request.get("logprobs")
    if not asked:
        return None
    k = request.get("top_logprobs") or 0 if asked is True else int(asked)
    if scripted is None:
        scripted = [(t.token, [(a, math.exp(lp)) for a, lp in t.top]) for t in fake_logprobs(text, max(k, 1))]
    rows = [(token, [(a, math.log(p)) for a, p in top][:k]) for token, top in scripted]
    own = [next((lp for a, lp in top if a == token), math.log(1e-9)) for token, top in rows]
    if asked is True:
        return {"content": [{"token": token, "logprob": lp, "bytes": list(token.encode()),
                             "top_logprobs": [{"token": a, "logprob": x, "bytes": list(a.encode())} for a, x in top]}
                            for (token, top), lp in zip(rows, own)]}
    return {"tokens": [t for t, _ in rows], "token_logprobs": own, "top_logprobs": [dict(top) for _, top in rows]}


def completion_body(request: dict, scripted: tuple[str, list | None] | None = None, logprobs: bool = True) -> dict:
    """A chat.completion object answering `request` (a parsed chat-completions request body), with
    the `scripted` answer (text, token probabilities) when given."""
    messages = request.get("messages") or []
    response_format = request.get("response_format") or {}
    if scripted is not None:
        text = scripted[0]
    elif response_format.get("type") == "json_schema":  # structured output: a JSON object of the schema
        digest = hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).digest()
        text = json.dumps(_instance(response_format["json_schema"]["schema"], iter(digest * 4)))
    else:
        text = auto_answer(messages)
    prompt_tokens = sum(max(1, len(str(m.get("content", "")).split())) for m in messages)
    completion_tokens = max(1, len(text.split()))
    digest = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()
    choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
    if logprobs and (tokens := _logprobs(request, text, scripted[1] if scripted else None)) is not None:
        choice["logprobs"] = tokens
    return {
        "id": f"chatcmpl-{digest[:24]}",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": request.get("model", "unknown"),
        "choices": [choice],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like real servers
    disable_nagle_algorithm = True  # headers and body go out as two writes: don't let the second wait
    fake: FakeOpenAIServer

    # (method, path without the /v1 prefix) -> handler method; groups of the pattern are its arguments
    ROUTES = [
        ("GET", re.compile(r"/_stats"), "_get_stats"),
        ("POST", re.compile(r"/files"), "_post_file"),
        ("GET", re.compile(r"/files"), "_list_files"),
        ("GET", re.compile(r"/files/([^/]+)"), "_get_file"),
        ("DELETE", re.compile(r"/files/([^/]+)"), "_delete_file"),
        ("GET", re.compile(r"/files/([^/]+)/content"), "_get_file_content"),
        ("POST", re.compile(r"/files/([^/]+)/preprocess"), "_preprocess_file"),
        ("PUT", re.compile(r"/_uploads/([^/]+)"), "_put_upload"),
        ("POST", re.compile(r"/batches"), "_post_batch"),
        ("GET", re.compile(r"/batches"), "_list_batches"),
        ("GET", re.compile(r"/batches/([^/]+)"), "_get_batch"),
        ("POST", re.compile(r"/batches/([^/]+)/cancel"), "_cancel_batch"),
    ]

    def log_message(self, *args) -> None:
        pass

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None,
              content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def _json(self, value, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(value).encode(), headers)

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        body = {"error": {"message": message, "type": "fake_error", "code": status}}
        self._send(status, json.dumps(body).encode(), headers)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0], 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                pass
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_POST(self) -> None:
        raw = self._read_body()
        if self.path.split("?", 1)[0].rstrip("/").endswith("/chat/completions"):
            self._chat(raw)
        else:
            self._api("POST", raw)

    def do_GET(self) -> None:
        self._api("GET", b"")

    def do_PUT(self) -> None:
        self._api("PUT", self._read_body())

    def do_DELETE(self) -> None:
        self._api("DELETE", b"")

    # -- chat completions -----------------------------------------------------------------------

    def _chat(self, raw: bytes) -> None:
        fake = self.fake
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = None
        if fake.record:
            headers = {k.lower(): v for k, v in self.headers.items()}
            with fake._lock:
                fake.requests.append({"path": self.path, "headers": headers, "json": parsed, "time": time.monotonic()})
        if not fake._admit():
            body = {"error": {"message": "Rate limit reached for requests", "type": "requests",
                              "param": None, "code": "rate_limit_exceeded"}}
            headers = {"Retry-After": f"{fake.retry_after_s:g}", **fake._limit_headers(0)}
            self._json(body, 429, headers)
            return
        try:
            digest = hashlib.sha256(raw).digest()
            if self._answer(fake, digest, parsed):
                with fake._lock:
                    fake.completed += 1
                    if digest in fake._answered:
                        fake.completed_repeats += 1
                    else:
                        fake._answered.add(digest)
        finally:
            with fake._lock:
                fake.in_flight -= 1

    def _answer(self, fake: FakeOpenAIServer, digest: bytes, parsed) -> bool:
        """Answer or fail one chat request; True when a whole 200 answer was sent."""
        if not isinstance(parsed, dict):
            self._error(400, "request body is not a JSON object")
            return False
        fault = fake._next_fault(digest)
        time.sleep(fake.delay_s)
        if fault is None:
            with fake._lock:
                scripted = fake._answers.popleft() if fake._answers else None
            body = json.dumps(completion_body(parsed, scripted, fake.logprobs)).encode()
            with fake._lock:
                headers = fake._ok_headers()
            self._send(200, body, headers)
            return True
        with fake._lock:
            fake.faults_sent[fault.kind] += 1
        if fault.kind == "drop":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
        elif fault.kind == "429":
            self._error(429, "rate limited", {"Retry-After": f"{fault.retry_after:g}"})
        elif fault.kind == "broken-json":
            body = json.dumps(completion_body(parsed)).encode()
            self._send(200, body[: len(body) // 2])
        else:
            self._error(int(fault.kind), f"fake HTTP {fault.kind}")
        return False

    # -- files, batches, stats ------------------------------------------------------------------

    @property
    def _together(self) -> bool:
        return "together" in self.headers.get("User-Agent", "").lower()

    def _api(self, method: str, raw: bytes) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        route = path[len("/v1"):] if path.startswith("/v1/") else path
        for route_method, pattern, name in self.ROUTES:
            match = pattern.fullmatch(route)
            if match and route_method == method:
                with self.fake._lock:
                    self.fake.api_calls[f"{method} {pattern.pattern.replace('([^/]+)', '{id}')}"] += 1
                try:
                    getattr(self, name)(*match.groups(), raw=raw)
                except ApiError as e:
                    body = {"error": {"message": e.message, "type": e.kind, "param": None, "code": None}}
                    self._json(body, e.status)
                return
        self._error(404, f"no route {method} {self.path}")

    def _get_stats(self, raw: bytes) -> None:
        self._json(self.fake.stats())

    def _render_file(self, stored: StoredFile) -> dict:
        return _together_file(stored) if self._together else _openai_file(stored)

    def _post_file(self, raw: bytes) -> None:
        fields = _multipart(self.headers.get("Content-Type", ""), raw)
        purpose = fields.get("purpose", (None, b""))[1].decode()
        if "file" in fields:  # OpenAI: the bytes are in the form
            filename, data = fields["file"]
            self._json(self._render_file(self.fake._store_file(filename or "upload.jsonl", purpose, data)))
            return
        if "file_name" not in fields:
            raise ApiError(400, "expected a `file` part (or Together's `file_name` to get an upload URL)")
        stored = self.fake._store_file(fields["file_name"][1].decode(), purpose, None)
        host = self.headers.get("Host") or f"127.0.0.1:{self.server.server_address[1]}"
        headers = {"Location": f"http://{host}/_uploads/{stored.id}", "X-Together-File-Id": stored.id}
        self._send(302, b"", headers)

    def _put_upload(self, file_id: str, raw: bytes) -> None:
        stored = self.fake._file(file_id)
        with self.fake._lock:
            if stored.data is None:
                self.fake.files_uploaded += 1
            stored.data = raw
        self._send(200, b"", {"ETag": f'"{hashlib.md5(raw).hexdigest()}"'})

    def _preprocess_file(self, file_id: str, raw: bytes) -> None:
        stored = self.fake._file(file_id)
        if stored.data is None:
            raise ApiError(400, f"file {file_id} was never uploaded")
        self._json(self._render_file(stored))

    def _list_files(self, raw: bytes) -> None:
        with self.fake._lock:
            stored = list(self.fake.files.values())
        data = [self._render_file(f) for f in reversed(stored)]
        self._json({"data": data} if self._together else {"object": "list", "data": data, "has_more": False})

    def _get_file(self, file_id: str, raw: bytes) -> None:
        self._json(self._render_file(self.fake._file(file_id)))

    def _get_file_content(self, file_id: str, raw: bytes) -> None:
        stored = self.fake._file(file_id)
        self._send(200, stored.data or b"", content_type="application/octet-stream")

    def _delete_file(self, file_id: str, raw: bytes) -> None:
        self.fake._file(file_id)
        with self.fake._lock:
            del self.fake.files[file_id]
        deleted = {"id": file_id, "deleted": True}
        self._json(deleted if self._together else {**deleted, "object": "file"})

    def _render_batch(self, batch: Batch, status: str | None = None) -> dict:
        state, progress = self.fake._batch_state(batch, time.monotonic())
        render = _together_batch if self._together else _openai_batch
        return render(self.fake, batch, status or state, progress)

    def _post_batch(self, raw: bytes) -> None:
        try:
            body = json.loads(raw)
        except ValueError:
            raise ApiError(400, "request body is not JSON") from None
        batch = self.fake._create_batch(body if isinstance(body, dict) else {})
        rendered = self._render_batch(batch)
        self._json({"job": rendered, "warning": None} if self._together else rendered)

    def _list_batches(self, raw: bytes) -> None:
        with self.fake._lock:
            ids = list(reversed(self.fake.batches_created))
        data = [self._render_batch(self.fake.batches[i]) for i in ids]
        self._json(data if self._together else {
            "object": "list", "data": data, "has_more": False,
            "first_id": ids[0] if ids else None, "last_id": ids[-1] if ids else None,
        })

    def _get_batch(self, batch_id: str, raw: bytes) -> None:
        self._json(self._render_batch(self.fake._batch(batch_id)))

    def _cancel_batch(self, batch_id: str, raw: bytes) -> None:
        batch = self.fake._batch(batch_id)
        status, _ = self.fake._batch_state(batch, time.monotonic())
        if status not in ("validating", "in_progress"):
            raise ApiError(400, f"Cannot cancel a batch with status '{status}'.")
        batch.cancelled_at = time.time()
        self._json(self._render_batch(batch, status="cancelling"))


def _fault_rates(text: str) -> dict[str, float]:
    """`429=0.1,500=0.05` -> {"429": 0.1, "500": 0.05}."""
    rates = {}
    for item in filter(None, text.split(",")):
        kind, _, rate = item.partition("=")
        try:
            rates[Fault(kind.strip()).kind] = float(rate)
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"{item!r}: {e}") from None
    return rates


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.openai_server",
        description="Serve the fake OpenAI-compatible API until SIGTERM or SIGINT; print its base URL.",
    )
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before every chat answer")
    parser.add_argument("--fault-rates", type=_fault_rates, default={},
                        help="e.g. 429=0.1,500=0.05,broken-json=0.01,drop=0.01")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault draws")
    parser.add_argument("--retry-after", type=float, default=1.0, help="Retry-After (s) of the server's own 429s")
    parser.add_argument("--max-in-flight", type=int, default=None,
                        help="answer 429 beyond this many concurrent requests")
    parser.add_argument("--ratelimit-header", action="append", default=[], metavar="NAME=VALUE",
                        help="a fixed header for every 200 answer (repeatable)")
    parser.add_argument("--batch-delay", type=float, default=0.2, help="seconds from a batch's creation to its end")
    parser.add_argument("--batch-fail", choices=BATCH_FAILURES, default=None, help="end every batch in this status")
    parser.add_argument("--no-record", action="store_true", help="do not keep every request in memory")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default: a free one)")
    args = parser.parse_args(argv)

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    if any("=" not in header for header in args.ratelimit_header):
        parser.error("--ratelimit-header takes NAME=VALUE")
    try:
        server = FakeOpenAIServer(
            delay_s=args.delay, fault_rates=args.fault_rates, seed=args.seed, max_in_flight=args.max_in_flight,
            retry_after_s=args.retry_after, ratelimit_headers=dict(h.split("=", 1) for h in args.ratelimit_header),
            batch_delay_s=args.batch_delay, batch_fail=args.batch_fail, record=not args.no_record, port=args.port,
        )
    except ValueError as e:
        parser.error(str(e))
    with server:
        print(server.base_url, flush=True)
        while not stop.wait(0.2):
            pass


if __name__ == "__main__":
    main()
