"""Does a judge grade answers written by itself or by a relative? (self-preference)

LLM judges tend to prefer answers of their own model and family: Arena-Hard v2 shows a Gemini judge
ranking Gemini 3rd where a GPT-4.1 judge ranks it 9th. This module reads a model's family and maker
from its provider's model id (`gpt-4o-mini`, `meta-llama/Llama-3.1-8B-Instruct`, a GGUF file name)
and names the closest relation between a judge and a writer:

- `same_model`: the same id, once the provider prefix, the letter case, a `.gguf` suffix and a
  quantisation suffix (`-q4_k_m`, `-awq`, ...) are set aside (`openai/gpt-4o` and `gpt-4o`);
- `same_family`: one line of models (`gpt-4o` and `gpt-4o-mini`; `llama-13b` and `vicuna-13b`, a
  fine-tune of LLaMA);
- `same_maker`: one developer, different lines (`gemini` and `gemma`; `gpt-4o` and `o3-mini`);
- `different`: both known, different developers;
- `unknown`: ids differ and the family of at least one is not in `FAMILIES`.

`same_model` and `same_family` are warnings (`fellowship validate`, the card, the report);
`same_maker` is shown; nothing is ever refused on these grounds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# (family, maker, pattern on the lower-case id): the first match wins, so the specific come first.
FAMILIES: tuple[tuple[str, str, str], ...] = (
    ("cerebras-gpt", "cerebras", r"cerebras"),
    ("pythia", "eleutherai", r"pythia|gpt-j|gpt-neo"),
    ("opt", "meta", r"(^|[/_-])opt-"),
    ("bloom", "bigscience", r"bloom"),
    ("o-series", "openai", r"(^|[/_-])o[1-9](-mini|-pro|-preview)?($|[/_-])"),
    ("gpt", "openai", r"gpt|chatgpt|davinci"),
    ("claude", "anthropic", r"claude"),
    ("gemini", "google", r"gemini"),
    ("gemma", "google", r"gemma"),
    ("llama", "meta", r"llama|vicuna|alpaca|koala"),  # vicuna, alpaca and koala are LLaMA fine-tunes
    ("qwen", "alibaba", r"qwen|qwq"),
    ("mistral", "mistral", r"mistral|mixtral|codestral|ministral|magistral"),
    ("deepseek", "deepseek", r"deepseek"),
    ("phi", "microsoft", r"(^|[/_-])phi-?\d"),
    ("command", "cohere", r"command-|(^|[/_-])aya"),
    ("yi", "01-ai", r"(^|[/_-])yi-"),
    ("falcon", "tii", r"falcon"),
    ("grok", "xai", r"grok"),
    ("olmo", "ai2", r"olmo"),
    ("glm", "zhipu", r"(^|[/_-])glm"),
    ("kimi", "moonshot", r"kimi|moonshot"),
)
WARN = ("same_model", "same_family")
QUANTISATION = re.compile(r"([-_.](q\d[\w]*|iq\d[\w]*|f16|bf16|fp16|fp8|awq|gptq|int4|int8|gguf))+$")
PROVIDERS = ("openai", "together", "openai-compatible", "local", "fake")


@dataclass(frozen=True)
class Model:
    id: str  # as given
    name: str  # normalised for comparison
    family: str | None
    maker: str | None


def normalise(model_id: str) -> str:
    """`together/meta-llama/Llama-3-8B-Instruct` -> `llama-3-8b-instruct`; `x-q4_k_m.gguf` -> `x`."""
    name = model_id.strip().lower()
    first, _, rest = name.partition("/")
    if rest and first in PROVIDERS:
        name = rest
    name = name.rsplit("/", 1)[-1].removesuffix(".gguf")
    return QUANTISATION.sub("", name)


def identify(model_id: str) -> Model:
    name = normalise(model_id)
    lowered = model_id.lower()
    for family, maker, pattern in FAMILIES:
        if re.search(pattern, name) or re.search(pattern, lowered):
            return Model(model_id, name, family, maker)
    return Model(model_id, name, None, None)


def relation(judge: str, writer: str) -> str:
    """The closest relation between a judge's model id and a writer's (see the module doc)."""
    j, w = identify(judge), identify(writer)
    if j.name == w.name:
        return "same_model"
    if j.family is None or w.family is None:
        return "unknown"
    if j.family == w.family:
        return "same_family"
    return "same_maker" if j.maker == w.maker else "different"


def check(judges: dict[str, str], writers: list[str]) -> list[dict]:
    """One row per judge (name -> model id) and writer: their relation, families and makers."""
    rows = []
    for name, model in judges.items():
        j = identify(model)
        for writer in sorted(set(writers)):
            w = identify(writer)
            rows.append({
                "judge": name, "judge_model": model, "judge_family": j.family,
                "writer": writer, "writer_family": w.family, "relation": relation(model, writer),
            })
    return rows


def warning(rows: list[dict]) -> str | None:
    """One line naming every judge that grades its own model's or family's answers, or None."""
    flagged = [r for r in rows if r["relation"] in WARN]
    if not flagged:
        return None
    parts = [
        f"judge '{r['judge']}' ({r['judge_model']}) grades answers by "
        f"{'its own model' if r['relation'] == 'same_model' else 'its family (' + r['judge_family'] + ')'}: {r['writer']}"
        for r in flagged
    ]
    return "; ".join(parts) + " (self-preference can favour them; a judge from another family is safer)"
