"""The `fake` provider: deterministic or scripted answers, registered like any real provider.

Models:
- `fake/auto`: answers in whatever `### Header: ...` format the last user message (or else the
  system prompt) asks for, filling
  `X/10`-style placeholders with numbers that are a pure function of the conversation; with no such
  format it writes a plain answer derived from the conversation. Judges, reviewers and generators
  all work with it, so a whole recipe runs offline and reproducibly.
- `fake/echo`: returns the last user message.
- `fake/garbage`: returns text no judge or reviewer parser can read.
- `fake/scripted`: returns the texts (or raises the exceptions) given as `script`, in order. A
  provider built with a `script` (in tests, injected into a stage) is scripted whatever its model id.

Asked for token probabilities, every model gives the deterministic ones of `fake_logprobs` (unless
built with `logprobs=False`, to play a model that gives none).

Every call is recorded in `calls` so tests can assert exactly what was sent.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import deque

from builders.errors import BuildError
from builders.llm.types import Completion, Message, OutputFormat, Provider, TokenLogprob
from builders.recipe import ModelSpec

HEADER = re.compile(r"###\s*([^:\n#]+):\s*(\[[^\]]*\]|[A-Z]\s*/\s*\d+|[A-Z](?: or [A-Z])+)?")
OUT_OF = re.compile(r"[A-Z]\s*/\s*(\d+)")
MODELS = ("auto", "echo", "garbage", "scripted")
WORDS = ("clear", "careful", "direct", "concise", "thorough", "plain", "useful", "exact", "friendly", "sound")


def _digest(*parts: str) -> bytes:
    return hashlib.sha256("\x1f".join(parts).encode()).digest()


def _tokens(text: str) -> int:
    return max(1, len(text.split()))


TOKEN = re.compile(r"\d|[A-Za-z]+|\s+|[^\w\s]")  # digits one by one, as Qwen's and Gemma's tokenizers split numbers


def fake_logprobs(text: str, k: int) -> tuple[TokenLogprob, ...]:
    """Deterministic token probabilities for `text`: each token has probability 0.6; a digit shares
    the rest with its neighbours (0.2 and 0.15), a capital letter with the next two letters; the
    model would stop a number after any other digit (`after`)."""
    out = []
    for token in TOKEN.findall(text):
        if token.isdigit():
            others = [str(d) for d in (int(token) + 1, int(token) - 1) if 0 <= d <= 9]
            top = [(token, math.log(0.6)), *zip(others, map(math.log, (0.2, 0.15)))][:k]
            after = {t: (("/", 0.0),) for t, _ in top[1:]}
        elif len(token) == 1 and token.isupper():
            others = [chr((ord(token) - 65 + i) % 3 + 65) for i in (1, 2)] if token in "ABC" else []
            top, after = [(token, math.log(0.6)), *zip(others, map(math.log, (0.25, 0.1)))][:k], None
        else:
            top, after = [(token, math.log(0.6))], None
        out.append(TokenLogprob(token, top[0][1], tuple(top), after))
    return tuple(out)


def auto_answer(messages: list[Message], sample_index: int = 0, *, words: int | None = None) -> str:
    """The `auto` answer; a plain answer (no format asked) is padded to `words` words when given."""
    system = next((m["content"] for m in messages if m["role"] == "system"), "")
    convo = "\x1e".join(f"{m['role']}:{m['content']}" for m in messages) + (f"#{sample_index}" if sample_index else "")
    last_user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    asked = last_user if "format" in last_user else system  # a follow-up or final request may restate it
    fmt = asked.rsplit("format", 1)[-1] if "format" in asked else ""
    headers = HEADER.findall(fmt)
    if not headers:
        d = _digest(convo)
        question = next((m["content"] for m in messages if m["role"] == "user"), "")
        adjectives = " ".join(WORDS[b % len(WORDS)] for b in d[: 4 + d[0] % 12])
        text = f"Answer {d.hex()[:8]} to '{question[:40]}': a {adjectives} reply."
        missing = (words or 0) - len(text.split())
        return text + "".join(f" {WORDS[(d[i % len(d)] + i) % len(WORDS)]}" for i in range(missing))
    lines = []
    for name, placeholder in headers:
        out_of = OUT_OF.match(placeholder or "")
        if out_of:
            top = int(out_of.group(1))
            value = 1 + _digest(convo, name)[0] % top
            lines.append(f"### {name.strip()}: {value}/{top}")
        elif placeholder and " or " in placeholder:
            options = placeholder.split(" or ")
            lines.append(f"### {name.strip()}: {options[_digest(convo, name)[0] % len(options)].strip()}")
        else:
            lines.append(f"### {name.strip()}: Deterministic remark {_digest(convo, name).hex()[:6]}.")
    return "\n".join(lines)


class FakeProvider(Provider):
    def __init__(self, spec: ModelSpec, *, api_key: str | None = None, script: list | None = None, logprobs: bool = True):
        super().__init__(spec)
        self.calls: list[dict] = []
        self.script = deque(script or [])
        problem = self.model_problem(spec.model)
        if problem:
            raise BuildError(problem)
        answers = {"auto": auto_answer, "echo": self._echo, "garbage": self._garbage, "scripted": self._scripted}
        self._answer = self._scripted if script is not None else answers[spec.model]
        self.logprobs = logprobs

    @staticmethod
    def model_problem(model: str) -> str | None:
        return None if model in MODELS else f"unknown fake model '{model}' (known: {', '.join(MODELS)})"

    @staticmethod
    def _echo(messages: list[Message], sample_index: int) -> str:
        return messages[-1]["content"]

    @staticmethod
    def _garbage(messages: list[Message], sample_index: int) -> str:
        return "I would rather not put a number on these."

    def _scripted(self, messages: list[Message], sample_index: int) -> str:
        if not self.script:
            raise BuildError("fake provider ran out of scripted outputs")
        item = self.script.popleft()
        if isinstance(item, BaseException):
            raise item
        return item(messages) if callable(item) else item

    async def complete(
        self, messages: list[Message], *, sampling: dict, output: OutputFormat | None, sample_index: int
    ) -> Completion:
        self.calls.append({"messages": messages, "sampling": sampling, "output": output, "sample_index": sample_index})
        text = self._answer(messages, sample_index)
        prompt_tokens = sum(_tokens(m["content"]) for m in messages)
        logprobs = fake_logprobs(text, output.top_logprobs) if output and output.top_logprobs and self.logprobs else None
        return Completion(text=text, tokens_in=prompt_tokens, tokens_out=_tokens(text), finish_reason="stop", logprobs=logprobs)
