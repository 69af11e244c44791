"""Judge prompts, output grammars and parsing (the paper's combined scoring, adapted to N responses).

`parse_judgment` is pure: it reads a judge's text and returns the scores or a reason why none can be
read. It takes the *last* score given for each response, so the judge's final verdict wins over
anything it quoted earlier.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from builders.prompts import count_word, letter, render
from builders.recipe import Recipe

NUMBER = r"(-?\d+(?:[.,]\d+)?)"  # a sign is kept (and then rejected as out of range); "7,5" is 7.5
SCORE_LINE = re.compile(
    r"Score\s+(?:for\s+)?Assistant\s+([A-Z])\b[\s*_:#]*(?:-\s+)?" + NUMBER + r"(?:\s*/\s*(\d+))?",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Judgment:
    scores: tuple[float, ...] | None  # one per response, in presentation order
    error: str | None  # why no scores could be read

    @property
    def ok(self) -> bool:
        return self.scores is not None


def score_format(n: int, scale: int) -> str:
    return "\n".join(f"### Score Assistant {letter(i)}: {'XYZW'[i % 4]}/{scale}" for i in range(n))


def render_responses(responses: list[str]) -> str:
    blocks = []
    for i, text in enumerate(responses):
        a = letter(i)
        blocks.append(f"[The Start of Assistant {a}'s Answer]\n{text}\n[The End of Assistant {a}'s Answer]")
    return "\n\n".join(blocks)


def combined_messages(recipe: Recipe, question: str, responses: list[str]) -> list[dict]:
    n, scale = len(responses), recipe.judge.scale
    system = render(recipe, "judge.system_prompt", n=count_word(n), scale=scale, score_format=score_format(n, scale))
    user = render(recipe, "judge.user_prompt", question=question, responses=render_responses(responses))
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def reask_message(n: int, scale: int) -> dict:
    """The follow-up sent once when a judge's answer cannot be parsed."""
    return {
        "role": "user",
        "content": "Your verdict could not be read. Reply again with only the scores, exactly in this format:\n"
        + score_format(n, scale),
    }


def _score_rule(scale: int) -> str:
    return {5: '[0-5] ("." [0-9])?', 10: '("10" | [0-9] ("." [0-9])?)', 100: '("100" | [1-9]? [0-9])'}[scale]


def combined_grammar(n: int, scale: int) -> str:
    """GBNF forcing the combined-scoring format, for providers that support grammars."""
    scores = " ".join(f'"\\n### Score Assistant {letter(i)}: " score "/{scale}"' for i in range(n))
    return (
        f'root ::= "### Evaluation Evidence: " evidence {scores}\n'
        "evidence ::= [^#\\n]{1,700}\n"
        f"score ::= {_score_rule(scale)}\n"
    )


def parse_judgment(text: str, *, strategy: str = "combined", scale: int, n: int) -> Judgment:
    """Scores for `n` responses out of `scale` from a combined-scoring judge answer."""
    if strategy != "combined":
        raise ValueError(f"unknown strategy '{strategy}'")
    if not text or not text.strip():
        return Judgment(None, "empty answer")
    found: dict[int, float] = {}
    for m in SCORE_LINE.finditer(text):
        position = ord(m.group(1).upper()) - ord("A")
        value, out_of = float(m.group(2).replace(",", ".")), m.group(3)
        if out_of is not None and int(out_of) != scale:
            return Judgment(None, f"score for Assistant {m.group(1).upper()} is out of {out_of}, expected {scale}")
        if position < n:
            found[position] = value  # later mentions override earlier ones: the final verdict wins
    missing = [letter(i) for i in range(n) if i not in found]
    if missing:
        return Judgment(None, f"no score for Assistant {', '.join(missing)}")
    out_of_range = [letter(i) for i in range(n) if not 0 <= found[i] <= scale]
    if out_of_range:
        return Judgment(None, f"score for Assistant {out_of_range[0]} is outside 0..{scale}")
    return Judgment(tuple(found[i] for i in range(n)), None)
