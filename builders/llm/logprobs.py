"""Token log probabilities as the chat-completions APIs return them, read into `TokenLogprob`s.

OpenAI (and vLLM, llama.cpp server, most OpenAI-compatible servers) answer `logprobs: true,
top_logprobs: k` with `choice.logprobs.content`: one entry per token, each with its `top_logprobs`
list. Together answers `logprobs: k` with the completions API's older shape: parallel lists
`tokens`, `token_logprobs` and `top_logprobs` (one {token: logprob} mapping per token).
"""

from __future__ import annotations

from builders.llm.types import TokenLogprob


def _plain(value: object) -> object:
    """An SDK model as plain data (the SDKs' models keep fields their types do not declare)."""
    dump = getattr(value, "model_dump", None)
    return dump(warnings=False) if dump else value


def read_logprobs(value: object) -> tuple[TokenLogprob, ...] | None:
    """The answer's tokens with their probabilities, or None when the provider gave none."""
    data = _plain(value)
    if not isinstance(data, dict):
        return None
    content = data.get("content")
    if isinstance(content, list):
        out = []
        for entry in map(_plain, content):
            top = tuple((str(t["token"]), float(t["logprob"])) for t in map(_plain, entry.get("top_logprobs") or []))
            token, logprob = str(entry["token"]), float(entry["logprob"])
            out.append(TokenLogprob(token, logprob, top or ((token, logprob),)))
        return tuple(out)
    tokens, logprobs = data.get("tokens"), data.get("token_logprobs")
    if isinstance(tokens, list) and isinstance(logprobs, list) and len(tokens) == len(logprobs):
        tops = data.get("top_logprobs")
        tops = tops if isinstance(tops, list) and len(tops) == len(tokens) else [None] * len(tokens)
        out = []
        for token, logprob, top in zip(tokens, logprobs, tops):
            pairs = tuple((str(t), float(lp)) for t, lp in (top or {}).items())
            out.append(TokenLogprob(str(token), float(logprob), pairs or ((str(token), float(logprob)),)))
        return tuple(out)
    return None
