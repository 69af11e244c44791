"""A fake OpenAI-compatible chat-completions server on 127.0.0.1, for tests and benchmarks.

    with FakeOpenAIServer() as server:
        ...  # point a model at base_url=server.base_url ("http://127.0.0.1:PORT/v1")
        server.fail_next(Fault("429", retry_after=0.3), "drop")  # the next two requests fail
        assert server.completed == 1

Answers are deterministic: the text is `builders.llm.fake.auto_answer(messages)`, so judge and reviewer
formats are answered the way the offline `fake/auto` provider answers them. Any path ending in
`/chat/completions` is served. Faults:

- "429": HTTP 429 with a `Retry-After` header (seconds, `Fault.retry_after`)
- "500" / "400": HTTP 500 (retryable) / 400 (not retryable) with an OpenAI-style error body
- "broken-json": HTTP 200 whose JSON body is cut in half
- "drop": the connection is closed without any answer

Scripted faults (`fail_next`) apply to the next requests in arrival order. In rate mode
(`fault_rates={"500": 0.05, "drop": 0.02}, seed=0`) a request's fault is drawn from a hash of the seed,
its body and how many times that body was seen before, so a build meets the same faults whatever
order its requests arrive in. `delay_s` waits before every answer.
"""

from __future__ import annotations

import functools
import hashlib
import json
import socket
import sys
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from builders.llm.fake import auto_answer

FAULT_KINDS = ("429", "500", "400", "broken-json", "drop")


@dataclass(frozen=True)
class Fault:
    kind: str
    retry_after: float = 0.0  # "429" only: the Retry-After header, in seconds

    def __post_init__(self):
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {self.kind!r} (known: {', '.join(FAULT_KINDS)})")


class FakeOpenAIServer:
    def __init__(self, *, delay_s: float = 0.0, fault_rates: dict[str, float] | None = None, seed: int = 0):
        self.delay_s = delay_s
        self.fault_rates = {Fault(kind).kind: rate for kind, rate in (fault_rates or {}).items()}
        if sum(self.fault_rates.values()) > 1:
            raise ValueError("fault rates add up to more than 1")
        self.seed = seed
        self.requests: list[dict] = []  # every request: path, headers (lower-case names), json, time (monotonic)
        self.completed = 0  # whole 200 answers sent
        self.in_flight = 0  # requests received and not yet answered
        self.faults_sent: Counter[str] = Counter()
        self._script: deque[Fault] = deque()
        self._seen: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None

    def fail_next(self, *faults: str | Fault) -> None:
        """Queue faults for the next requests, one per request, in order."""
        with self._lock:
            self._script.extend(f if isinstance(f, Fault) else Fault(f) for f in faults)

    @property
    def base_url(self) -> str:
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def __enter__(self) -> FakeOpenAIServer:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._httpd = _QuietServer(("127.0.0.1", 0), handler)
        serve = functools.partial(self._httpd.serve_forever, poll_interval=0.02)
        self._thread = threading.Thread(target=serve, name="fake-openai", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def _next_fault(self, raw_body: bytes) -> Fault | None:
        with self._lock:
            if self._script:
                return self._script.popleft()
            if not self.fault_rates:
                return None
            body_hash = hashlib.sha256(raw_body).hexdigest()
            nth = self._seen[body_hash]
            self._seen[body_hash] += 1
        digest = hashlib.sha256(f"{self.seed}:{body_hash}:{nth}".encode()).digest()
        u, cumulative = int.from_bytes(digest[:8], "big") / 2**64, 0.0
        for kind, rate in sorted(self.fault_rates.items()):
            cumulative += rate
            if u < cumulative:
                return Fault(kind)
        return None


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

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


def completion_body(request: dict) -> dict:
    """A chat.completion object answering `request` (a parsed chat-completions request body)."""
    messages = request.get("messages") or []
    response_format = request.get("response_format") or {}
    if response_format.get("type") == "json_schema":  # structured output: a JSON object of the schema
        digest = hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).digest()
        text = json.dumps(_instance(response_format["json_schema"]["schema"], iter(digest * 4)))
    else:
        text = auto_answer(messages)
    prompt_tokens = sum(max(1, len(str(m.get("content", "")).split())) for m in messages)
    completion_tokens = max(1, len(text.split()))
    digest = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()
    return {
        "id": f"chatcmpl-{digest[:24]}",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": request.get("model", "unknown"),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like real servers
    fake: FakeOpenAIServer

    def log_message(self, *args) -> None:
        pass

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        body = {"error": {"message": message, "type": "fake_error", "code": status}}
        self._send(status, json.dumps(body).encode(), headers)

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = None
        fake = self.fake
        with fake._lock:
            headers = {k.lower(): v for k, v in self.headers.items()}
            fake.requests.append({"path": self.path, "headers": headers, "json": parsed, "time": time.monotonic()})
            fake.in_flight += 1
        try:
            if self._answer(fake, raw, parsed):
                with fake._lock:
                    fake.completed += 1
        finally:
            with fake._lock:
                fake.in_flight -= 1

    def _answer(self, fake: FakeOpenAIServer, raw: bytes, parsed) -> bool:
        """Answer or fail one request; True when a whole 200 answer was sent."""
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._error(404, f"no route {self.path}")
            return False
        if not isinstance(parsed, dict):
            self._error(400, "request body is not a JSON object")
            return False
        fault = fake._next_fault(raw)
        time.sleep(fake.delay_s)
        if fault is None:
            self._send(200, json.dumps(completion_body(parsed)).encode())
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
