"""Judge strategies: each one object in a registry, like the providers (`STRATEGIES`).

A strategy says everything that differs between the paper's three ways of judging (Table 8):

- which candidates one call shows (`groups`): a pair (`direct`), one (`independent`), all (`combined`);
- the placeholders its prompt templates may use, and their values for one call (`values`);
- the verdict lines it asks for (`answer_format`), the GBNF grammar and JSON schema that force them;
- how a verdict is read from the text (`parse`) and from token probabilities (`expected`).

How a panel judges is a `JudgeSpec` built once from the recipe (`JudgeSpec.of`): the strategy, the
scale, whether the judge writes its reasoning, how scores are read and the presentation orders. Every
function below takes the values it needs, never the whole recipe.

Every answer a judge sees is fenced by a marker drawn for the call (`fence_marker`) that no shown
text contains, so an answer cannot close its own block; the parser reads verdicts only from the
judge's own lines (outside those fences, and not copies of an answer's lines).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import ClassVar

from builders.conversation import transcript
from builders.judgment_parser import Judgment, parse_judgment
from builders.llm.types import TOP_LOGPROBS, OutputFormat, TokenLogprob
from builders.logprob_scores import LETTER_NAMES, expected_pick, expected_scores

VERDICT_TOKENS = 12  # tokens one verdict line needs at most ("### Score Assistant A: 10/10\n")


NUMBER_WORDS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine", 10: "ten"}


def count_word(n: int) -> str:
    """2 -> 'two', as the paper's prompts write it; digits beyond ten."""
    return NUMBER_WORDS.get(n, str(n))


def letter(position: int) -> str:
    """0 -> 'A', 1 -> 'B', ...: how prompts name the responses they show."""
    return chr(ord("A") + position)


def fence_marker(texts: list[str]) -> str:
    """A marker for one call's answer fences: drawn from the texts shown (so a re-run shows the same
    prompt and hits the cache), and redrawn until none of them contains it."""
    digest = hashlib.sha256("\x1f".join(texts).encode()).hexdigest()
    while any(digest[:12] in t for t in texts):
        digest = hashlib.sha256(digest.encode()).hexdigest()
    return digest[:12]


def render_responses(responses: list[str], marker: str, *, names: list[str] | None = None) -> str:
    """The answers, each between a start and an end line that carry the call's marker."""
    blocks = []
    for i, text in enumerate(responses):
        who = names[i] if names else f"Assistant {letter(i)}'s"
        blocks.append(f"[The Start of {who} Answer {marker}]\n{text}\n[The End of {who} Answer {marker}]")
    return "\n\n".join(blocks)


def render_conversations(histories: list[list[dict]], responses: list[str], marker: str, *,
                         names: list[str] | None = None) -> str:
    """Each assistant's conversation with the user, as MT-Bench's multi-turn judges see it: the
    conversation before its answer (its own, when each model's earlier answers differ), then its
    answer, all between a start and an end line that carry the call's marker."""
    blocks = []
    for i, (history, text) in enumerate(zip(histories, responses)):
        who = names[i] if names else f"Assistant {letter(i)}"
        blocks.append(f"[The Start of {who}'s Conversation with User {marker}]\n\n{transcript(history, text, who)}\n\n"
                      f"[The End of {who}'s Conversation with User {marker}]")
    return "\n\n".join(blocks)


def render_reference(reference: str, marker: str) -> str:
    return f"[The Start of Reference Answer {marker}]\n{reference}\n[The End of Reference Answer {marker}]"


# The judge prompts' variants: the paper's Table 8 for single-turn items, MT-Bench's layouts for the
# rest (its multi-turn and reference-guided judge prompts), and the placeholders each user template may use.
VARIANTS = ("", "multi_turn", "reference", "multi_turn_reference")
USER_PLACEHOLDERS = {
    "": frozenset({"question", "responses"}),
    "multi_turn": frozenset({"question", "conversations"}),
    "reference": frozenset({"question", "reference", "responses"}),
    "multi_turn_reference": frozenset({"question", "conversations", "reference"}),
}


def variant(multi_turn: bool, reference: bool) -> str:
    return "_".join(v for v, on in (("multi_turn", multi_turn), ("reference", reference)) if on)


def score_format(n: int, scale: int) -> str:
    return "\n".join(f"### Score Assistant {letter(i)}: {'XYZW'[i % 4]}/{scale}" for i in range(n))


def _score_rule(scale: int, integer: bool) -> str:
    if integer:  # one number token path per score, so its probabilities can be read
        return {5: "[0-5]", 10: '("10" | [0-9])', 100: '("100" | [1-9]? [0-9])'}[scale]
    return {5: '[0-5] ("." [0-9])?', 10: '("10" | [0-9] ("." [0-9])?)', 100: '("100" | [1-9]? [0-9])'}[scale]


@dataclass(frozen=True)
class Strategy:
    """One way of judging. Subclasses set the class attributes and the verdict's shape."""

    name: ClassVar[str]
    system_placeholders: ClassVar[frozenset[str]]
    names: ClassVar[list[str] | None] = None  # how the prompts name the answers (None: Assistant A, B, ...)

    def groups(self, candidates: list) -> list[tuple]:
        """The candidate groups judged together, one call per group and order."""
        raise NotImplementedError

    def shown(self, n: int) -> int:
        """Responses a verdict of this strategy names (`parse_judgment`'s n)."""
        return n

    def system_values(self, n: int, scale: int, reasoning: bool) -> dict:
        return {}

    def user_values(self, question: str, responses: list[str], marker: str, *,
                    histories: list[list[dict]] | None = None, reference: str | None = None) -> dict:
        """The user template's values: the question and the fenced answers; with `histories`, each
        answer's conversation; with `reference`, the fenced reference answer."""
        names = [f"{n}'s" for n in self.names] if self.names else None
        values = {"question": question, "responses": render_responses(responses, marker, names=names)}
        if histories is not None:
            values["conversations"] = render_conversations(histories, responses, marker, names=self.names)
        if reference is not None:
            values["reference"] = render_reference(reference, marker)
        return values

    def answer_format(self, n: int, scale: int) -> str:
        raise NotImplementedError

    def verdict_rule(self, n: int, scale: int, integer: bool) -> str:
        """The GBNF of the verdict lines (after the evidence line, when there is one)."""
        raise NotImplementedError

    def verdict_schema(self, n: int) -> dict:
        raise NotImplementedError

    def grammar(self, n: int, scale: int, *, reasoning: bool, integer: bool = False) -> str:
        verdict = self.verdict_rule(n, scale, integer)
        if not reasoning:  # the verdict alone: nothing before it, nothing after it
            return f"root ::= {_no_leading_newline(verdict)}\nscore ::= {_score_rule(scale, integer)}\n"
        return (
            f'root ::= "### Evaluation Evidence: " evidence {verdict}\n'
            "evidence ::= [^#\\n]{1,700}\n"
            f"score ::= {_score_rule(scale, integer)}\n"
        )

    def json_schema(self, n: int, *, reasoning: bool) -> dict:
        properties = {"evaluation": {"type": "string"}} if reasoning else {}
        properties |= self.verdict_schema(n)
        return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}

    def max_tokens(self, n: int) -> int:
        """Tokens a verdict without reasoning needs at most."""
        return VERDICT_TOKENS * self.shown(n) + 8

    def parse(self, text: str, n: int, scale: int, *, marker: str | None = None, quoted: tuple[str, ...] = ()) -> Judgment:
        return parse_judgment(text, strategy=self.name, scale=scale, n=self.shown(n), marker=marker, quoted=quoted)

    def expected(self, text: str, tokens: tuple[TokenLogprob, ...], n: int, scale: int, *,
                 marker: str | None = None, quoted: tuple[str, ...] = ()) -> Judgment:
        """The verdict from token probabilities: the expected score at each score, or the
        probability-weighted pick. The text verdict must be readable first (it says where the judge's
        own scores are)."""
        written = self.parse(text, n, scale, marker=marker, quoted=quoted)
        if not written.ok:
            return written
        return expected_scores(self.score_places(self.shown(n)), written, tokens, scale=scale, marker=marker, quoted=quoted)

    def score_places(self, n: int) -> list[re.Pattern]:
        """Per response, where the judge's own score starts (group `v`): its verdict line, or JSON field."""
        raise NotImplementedError


def _no_leading_newline(verdict: str) -> str:
    r"""`"\n### Score ..." score ...` -> `"### Score ..." score ...`: the first verdict line opens the answer."""
    return verdict.replace('"\\n', '"', 1)


class Direct(Strategy):
    name = "direct"
    system_placeholders = frozenset({"answer_format"})

    def groups(self, candidates: list) -> list[tuple]:
        return [(a, b) for i, a in enumerate(candidates) for b in candidates[i + 1:]]

    def shown(self, n: int) -> int:
        return 2

    def system_values(self, n: int, scale: int, reasoning: bool) -> dict:
        return {"answer_format": self.answer_format(n, scale)}

    def answer_format(self, n: int, scale: int) -> str:
        return "### Answer: A or B or C"

    def verdict_rule(self, n: int, scale: int, integer: bool) -> str:
        return '"\\n### Answer: " [ABC]'

    def verdict_schema(self, n: int) -> dict:
        return {"answer": {"type": "string", "enum": ["A", "B", "C"]}}

    PICK = re.compile(r'(?im)(?:^[ \t#*_]*(?:final\s+)?answer\s*:[ \t*_\[]*|"answer"\s*:\s*")(?P<v>[ABC])\b')

    def expected(self, text: str, tokens: tuple[TokenLogprob, ...], n: int, scale: int, *,
                 marker: str | None = None, quoted: tuple[str, ...] = ()) -> Judgment:
        """P(A), P(B) and P(C) where the judge wrote its pick: A scores P(A) + P(C)/2, B P(B) + P(C)/2."""
        written = self.parse(text, n, scale, marker=marker, quoted=quoted)
        return expected_pick(self.PICK, written, tokens, marker=marker, quoted=quoted) if written.ok else written


class Independent(Strategy):
    name = "independent"
    system_placeholders = frozenset({"scale", "answer_format"})

    def groups(self, candidates: list) -> list[tuple]:
        return [(c,) for c in candidates]

    def shown(self, n: int) -> int:
        return 1

    def system_values(self, n: int, scale: int, reasoning: bool) -> dict:
        return {"scale": scale, "answer_format": self.answer_format(n, scale)}

    names = ["Assistant"]

    def answer_format(self, n: int, scale: int) -> str:
        return f"### Overall Score: X/{scale}"

    def verdict_rule(self, n: int, scale: int, integer: bool) -> str:
        return f'"\\n### Overall Score: " score "/{scale}"'

    def verdict_schema(self, n: int) -> dict:
        return {"score": {"type": "number"}}

    def score_places(self, n: int) -> list[re.Pattern]:
        return [re.compile(r'(?im)(?:^[ \t#*_]*(?:overall\s+)?score[ \t*_]*:[ \t*_]*|"score"\s*:\s*"?)(?P<v>\d)')]


class Combined(Strategy):
    name = "combined"
    system_placeholders = frozenset({"n", "scale", "score_format", "answer_format"})

    def groups(self, candidates: list) -> list[tuple]:
        # one candidate alone has nothing to be compared with (a single-answer contender in `compare`)
        return [tuple(candidates)] if len(candidates) > 1 else []

    def system_values(self, n: int, scale: int, reasoning: bool) -> dict:
        return {"n": count_word(n), "scale": scale, "score_format": score_format(n, scale),
                "answer_format": self.answer_format(n, scale)}

    def answer_format(self, n: int, scale: int) -> str:
        return score_format(n, scale)

    def verdict_rule(self, n: int, scale: int, integer: bool) -> str:
        return " ".join(f'"\\n### Score Assistant {letter(i)}: " score "/{scale}"' for i in range(n))

    def verdict_schema(self, n: int) -> dict:
        letters = [letter(i) for i in range(n)]
        return {"scores": {"type": "object", "properties": {a: {"type": "number"} for a in letters},
                           "required": letters, "additionalProperties": False}}

    def score_places(self, n: int) -> list[re.Pattern]:
        return [re.compile(rf'(?im)(?:^[ \t#*_]*score\s+(?:for\s+)?assistant\s+{a}\b[ \t*_]*:[ \t*_]*|"{a}"\s*:\s*"?)(?P<v>\d)')
                for a in LETTER_NAMES[:n]]


STRATEGIES: dict[str, Strategy] = {s.name: s for s in (Direct(), Independent(), Combined())}

ORDERS = ("rotations", "reverse", "single")


def presentation_orders(group: tuple, orders: str) -> list[tuple]:
    """The orders one group is shown in: `rotations` puts every candidate once in every position
    (for two, the paper's swap), `reverse` adds the reversed order, `single` keeps the one order."""
    if len(group) < 2 or orders == "single":
        return [group]
    if orders == "reverse":
        return [group, tuple(reversed(group))]
    return [group[k:] + group[:k] for k in range(len(group))]


@dataclass(frozen=True)
class JudgeSpec:
    """How a panel judges, as values: what a judge call is made of and how it is read."""

    strategy: Strategy
    scale: int
    reasoning: bool = True
    score_mode: str = "text"  # `text`: the written score; `expected`: the mean of its token distribution
    structured: bool = False
    orders: str = "rotations"

    @classmethod
    def of(cls, panel) -> "JudgeSpec":
        """From a recipe's `judge.panel` (debate referees give their final scores by combined scoring)."""
        strategy = STRATEGIES["combined" if panel.debate else panel.strategy]
        return cls(strategy, panel.scale, panel.reasoning, panel.score_mode, panel.structured, panel.orders)

    @property
    def expected(self) -> bool:
        return self.score_mode == "expected"

    def output_format(self, n: int) -> OutputFormat:
        """The answer's constraints: the format's grammar (where grammars are supported), a JSON schema
        with `structured`, token probabilities with `expected`."""
        k = self.strategy.shown(n)
        return OutputFormat(
            # whole scores without reasoning (text or expected: the same answer, so either reads the other's cache)
            grammar=self.strategy.grammar(k, self.scale, reasoning=self.reasoning, integer=self.expected or not self.reasoning),
            json_schema=self.strategy.json_schema(k, reasoning=self.reasoning) if self.structured else None,
            top_logprobs=TOP_LOGPROBS if self.expected else None,
        )

    def max_tokens(self, n: int) -> int | None:
        """The cap on a verdict without reasoning (None: the model's own `max_tokens`)."""
        return None if self.reasoning else self.strategy.max_tokens(n)

    def read(self, text: str, tokens: tuple[TokenLogprob, ...] | None, n: int, *, marker: str | None,
             quoted: tuple[str, ...]) -> Judgment:
        if self.expected:
            return self.strategy.expected(text, tokens or (), n, self.scale, marker=marker, quoted=quoted)
        return self.strategy.parse(text, n, self.scale, marker=marker, quoted=quoted)

    def reask(self, n: int) -> dict:
        """The follow-up sent once when a judge's answer cannot be read (as the paper does)."""
        return {"role": "user", "content": "Your verdict could not be read. Reply again with only the verdict, "
                "exactly in this format:\n" + self.strategy.answer_format(self.strategy.shown(n), self.scale)}

    def describe(self) -> str:
        """`combined, scale 10, rotations, scores only, expected`."""
        parts = [self.strategy.name, f"scale {self.scale}", f"orders {self.orders}"]
        return ", ".join(parts + (["scores only"] if not self.reasoning else []) + (["expected score"] if self.expected else []))
