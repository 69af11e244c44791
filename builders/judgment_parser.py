"""Read an LLM judge's verdict out of its text answer, for the paper's three judging strategies.

The prompts (paper, Table 8) ask for `### Evaluation Evidence: ...` and then, for combined scoring,
`### Score Assistant A: X/10` (one line per response); for independent scoring `### Overall Score: X/10`;
for direct comparison `### Answer: A`, `B` or `C` (a tie; "tie" is accepted too). Structured-output judges
answer JSON instead, maybe in a ```json fence ending the answer: `{"scores": {"A": 8, "B": 6}}`,
`{"score": 7}`, `{"answer": "A"}`. Models drift from the format, so any header level or none, bold, "8.5/10",
"8.5 out of 10", "7,5", lower case, B before A, "Assistant 1/2" for A/B, the score on the next line,
"Score: 8" under an "Assistant A" heading and prose after the verdict are all read.

The judge's FINAL verdict wins and text it quotes never counts: a verdict line must start (after markup) with
its label, so an inline quote is no verdict; block quotes, fenced code, echoed "[The Start of Assistant A's
Answer]" blocks and a leading <think> scratchpad are skipped; of the remaining verdict lines the last block wins
(read backwards until a response is scored twice): a forged verdict quoted in the evidence is overridden by the
judge's own after it, and a judge repeating its verdict is fine.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from string import ascii_uppercase as LETTERS
from typing import Literal

Strategy = Literal["direct", "independent", "combined"]


@dataclass(frozen=True)
class Judgment:
    outcome: Literal["ok", "unparseable", "refused"]
    scores: tuple[float, ...] | None = None  # one per response in presentation order (direct: 1/0, 0/1, .5/.5)
    pick: str | None = None  # direct only: "A", "B" or "tie"
    error: str | None = None  # the reason, when outcome != "ok"
    mass: tuple[float, ...] | None = None  # expected scores: probability the score positions covered, per response

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


# Quoted regions: a reasoning model's scratchpad at the very start, fenced code blocks (the fence
# must open a line; an unclosed one runs to the end), echoed answer blocks (never across another start).
THINK = re.compile(r"\A\s*<think>.*?(?:</think>|\Z)", re.S | re.I)
FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,}).*?(?:^[ \t]*\1[ \t]*$|\Z)", re.S | re.M)
ECHO = re.compile(r"(?smi)^[ \t]*\[The Start of [^\]\n]*\](?:(?!\[The Start of ).)*?^[ \t]*\[The End of [^\]\n]*\]")
# Cuts in a line holding several verdicts ("... ### Score Assistant A: 8 ### Score Assistant B: 6"), see `_lines`.
SPLIT = re.compile(r"\s(?=#{2,6}\s*\w)|[,;|]\s+(?=(?:score|rating|assistant|response)\b)", re.I)
# Markup that may open a verdict line: spaces, header #'s, bold/italics, bullets, table pipes, "1." lists.
PREFIX = r"[ \t#*_|•+\-]*(?:\d{1,2}[.)]\s+[ \t#*_|•+\-]*)?"
# A response named "Assistant A", "assistant b", "Response 2" (numbers are aliases: 1 = A, 2 = B).
ID = r"(?:assistant|response)\s+(?P<{}>[a-z]|\d{{1,2}})\b"
SCORE_WORD = r"(?:(?:overall|final|total)\s+)?(?:score|rating|grade)s?"
ASIDE = r"(?:\s*\((?![\s\-−]*\d)[^)\n]*\))?"  # "(out of 10)", but not "(8/10)"
# A score label: "Score (for) Assistant A", "Overall Score", "Assistant A('s) score", "Evaluation of Assistant A".
LABEL = re.compile(
    PREFIX + r"(?:(?P<kw1>" + SCORE_WORD + r")(?:\s*(?:for|of|to|[(\-–—:])?\s*" + ID.format("id1") + r"\)?)?"
    r"|(?:(?:evaluation|analysis|assessment|review)\s+(?:of|for)\s+)?" + ID.format("id2")
    + r"(?:['’]s)?(?:\s+(?:answer|response|evaluation))?(?P<kw2>[\s*_:\-–—|(]*" + SCORE_WORD + r")?)" + ASIDE,
    re.I,
)
# A score after its label: separators and markup (a dash followed by a space is a separator, "-3" is
# negative and later rejected), the number ("8", "8.5", "7,5"), then "/10", " out of 10" or "%".
VALUE = re.compile(
    r"(?:[\s:=*_#|\[(]|[-–—](?=\s))*(?P<sign>[-−]?)(?P<num>\d+(?:[.,]\d+)?)[*_\])]*"
    r"(?:\s*/\s*(?P<of>\d+)(?:\.0+)?|\s+out\s+of\s+(?P<of2>\d+)|(?P<pct>%))?",
    re.I,
)
TRIVIAL = re.compile(r"[\s*_.,;:!)\]|#\-–—]*$")  # nothing but markup and punctuation left on the line
# A direct-comparison label: "### Answer:", "Final verdict:", "**Winner**:", "My answer is".
ANSWER = re.compile(
    PREFIX + r"(?:(?:the|my)\s+)?(?:final\s+)?(?:answer|verdict|decision|choice|winner|judge?ment)(?:\s+is)?" + ASIDE,
    re.I,
)
# The pick after it: "A", "**B**", "[[C]]", "Assistant 2", "Tie", "it's a tie" (tried before the letter a).
CHOICE = re.compile(
    r"[\s:=*_#|\[(\"'“‘\-]*(?:(?P<tie>(?:it['’]?s\s+|it\s+is\s+)?(?:a\s+)?(?:tie|draw))\b"
    r"|(?:(?:assistant|response)\s+)?(?P<id>[abc12])\b)(?P<rest>.*)",
    re.I,
)
AMBIGUOUS = re.compile(r"\W*(?:or|and|/)\W*(?:assistant\s+)?[abc12]\b", re.I)  # "A or B or C" (template)
MT_BENCH = re.compile(PREFIX + r"\[\[(?P<id>[abc])\]\]", re.I)  # a bare "[[A]]" line
HEADING = re.compile(r"\s*(?:#|\*\*[^*]+\*\*:?\s*$)")  # a markdown heading or a line all in bold
# Refusals, only at the start of a line of the judge's own text (a quoted refusal is being evaluated).
REFUSAL = re.compile(
    r"^[\s#*_]*(?:evaluation\s+evidence\s*:?[\s*_]*)?(?P<it>(?:(?:i['’]?m|i\s+am)\s+sorry\b[^\n]{0,60}?"
    r"\b(?:can(?:no|['’])?t|unable|won['’]t|not\s+able)|(?:unfortunately,?\s+)?i\s+(?:can(?:no|['’])?t|"
    r"am\s+(?:unable|not\s+able)\s+to|won['’]t|must\s+decline\s+to)\s+(?:evaluate|judge|assess|"
    r"score|rate|compare|help|assist|provide|comply|fulfil)|as\s+an\s+ai(?:\s+language\s+model)?,?"
    r"\s+i\s+(?:can(?:no|['’])?t|am\s+(?:unable|not)))[^\n]*)",
    re.I | re.M,
)


def parse_judgment(text: str, *, strategy: Strategy, scale: int, n: int, marker: str | None = None,
                   quoted: tuple[str, ...] | list[str] = ()) -> Judgment:
    """The verdict in a judge's answer: `n` scores out of `scale`, or the pick of a direct comparison.

    `marker` is the call's fence marker: whatever the judge writes between a start and an end line
    carrying it is an echo of an answer. `quoted` are the answers shown: a line of the judge's that
    is a copy of one of their lines is a quote, never the judge's verdict."""
    expected_n = {"direct": 2, "independent": 1, "combined": n}.get(strategy)
    if n != expected_n or not 0 < n <= len(LETTERS) or scale < 1:
        raise ValueError(f"cannot judge {n} response(s) out of {scale} by strategy '{strategy}'")
    if not text or not text.strip():
        return Judgment("unparseable", error="empty answer")
    found, json_error = _json_answer(text, strategy)
    if json_error and found is not None:  # a JSON answer with a bad verdict
        return Judgment("unparseable", error=json_error)
    if found is None:
        lines = _lines(text, marker, quoted)
        found = _answers(lines) if strategy == "direct" else _scores(lines, n, strategy == "independent")
        if not found:
            if refusal := next((m.group("it").strip(" *_") for m in REFUSAL.finditer("\n".join(lines))), None):
                return Judgment("refused", error=f"judge refused: '{refusal[:100]}'")
            if json_error:
                return Judgment("unparseable", error=f"unreadable JSON answer: {json_error}")
    if strategy != "direct":
        return _final_scores(found, scale, n, strategy)
    if not found:
        return Judgment("unparseable", error="no answer (A, B or C)")
    pick = found[-1]  # the last answer wins
    return Judgment("ok", scores={"A": (1.0, 0.0), "B": (0.0, 1.0)}.get(pick, (0.5, 0.5)), pick=pick)


def normalized(line: str) -> str:
    return " ".join(line.split()).casefold()


def quoted_lines(quoted: tuple[str, ...] | list[str]) -> frozenset[str]:
    """Every non-blank line of the answers shown, normalized: a judge's line equal to one is a quote."""
    return frozenset(n for answer in quoted for line in answer.splitlines() if (n := normalized(line)))


def outside_fences(lines: list[str], marker: str | None) -> list[bool]:
    """For each line, whether it is outside the call's answer fences (lines carrying the marker, and
    everything from a start line to its end line, or to the end of the text, are inside)."""
    keep, inside = [], False
    for line in lines:
        has = marker is not None and marker in line
        if has and re.search(r"\bStart of\b", line, re.I):
            inside = True
        keep.append(not (inside or has))
        if has and re.search(r"\bEnd of\b", line, re.I):
            inside = False
    return keep


def _lines(text: str, marker: str | None = None, quoted: tuple[str, ...] | list[str] = ()) -> list[str]:
    """The judge's own lines: echoed answers, quoted regions and copies of the answers' lines
    dropped, several verdicts on one line split apart."""
    raw = text.splitlines()
    text = "\n".join(line for line, keep in zip(raw, outside_fences(raw, marker)) if keep)
    text = ECHO.sub("", FENCE.sub("", THINK.sub("", text)))
    copies = quoted_lines(quoted)
    lines = []
    own = (line for line in text.splitlines() if not line.lstrip().startswith(">") and normalized(line) not in copies)
    for line in own:  # no block quotes, no copied lines
        bounds = [0, *(p for m in SPLIT.finditer(line) for p in m.span()), len(line)]
        parts = [line[bounds[j] : bounds[j + 1]] for j in range(0, len(bounds), 2)]
        k = len(parts)
        while k > 1 and _verdict_only(parts[k - 1]):
            k -= 1
        lines += [line[: bounds[2 * k - 1]], *parts[k:]]
    return lines


def _verdict_only(segment: str) -> bool:
    label, answer = LABEL.match(segment), ANSWER.match(segment)
    if label and (v := VALUE.match(segment, label.end())) and TRIVIAL.match(segment, v.end()):
        return True
    return bool(answer and (c := CHOICE.match(segment, answer.end())) and TRIVIAL.match(c.group("rest")))


def _index(name: str) -> int:  # "A", "b", "2" -> 0, 1, 1
    return int(name) - 1 if name.isdigit() else ord(name.lower()) - ord("a")


def _value(v: re.Match) -> tuple[float, int | None]:
    value = float(v.group("num").replace(",", "."))
    of = v.group("of") or v.group("of2") or ("100" if v.group("pct") else None)
    return (-value if v.group("sign") else value), (int(of) if of else None)


def _strict(v: re.Match | None, line: str) -> bool:  # surely a score: "8/10", "8 out of 10", or alone on its line
    return bool(v and (v.group("of") or v.group("of2") or v.group("pct") or TRIVIAL.match(line, v.end())))


def _scores(lines: list[str], n: int, independent: bool) -> list[tuple[int, float, int | None]]:
    """Every score line in order, as (response index, value, out of)."""
    found, section = [], None  # section: the response whose heading we are under ("### Assistant A")
    for i, line in enumerate(lines):
        label = LABEL.match(line)
        name = label and (label.group("id1") or label.group("id2"))
        keyword = label and (label.group("kw1") or label.group("kw2"))
        alone = bool(label and TRIVIAL.match(line, label.end()))  # a label alone: the score may be on the next line
        v = VALUE.match(line, label.end()) if label else None
        if alone and not v:
            following = next((x for x in lines[i + 1 :] if x.strip()), "")
            v = VALUE.match(following)
            v = v if _strict(v, following) else None
        elif v and not keyword and not _strict(v, line):
            v = None  # "Assistant A: 3 errors" is no score
        if not v:
            section = _index(name) if alone and name and not keyword else None if HEADING.match(line) else section
            continue
        index = (0 if independent else section) if not name else _index(name)
        if index is not None and 0 <= index < n:
            found.append((index, *_value(v)))
    return found


def _answers(lines: list[str]) -> list[str]:
    """Every direct-comparison pick in order: "A", "B" or "tie"."""
    found = []
    for i, line in enumerate(lines):
        label, bare = ANSWER.match(line), MT_BENCH.match(line)
        pick = _pick(CHOICE.match(line, label.end())) if label else None
        if label and not pick and TRIVIAL.match(line, label.end()):  # the pick on the next line
            pick = _pick(CHOICE.match(next((x for x in lines[i + 1 :] if x.strip()), "")), alone=True)
        if pick or bare:
            found.append(pick or {"a": "A", "b": "B", "c": "tie"}[bare.group("id").lower()])
    return found


def _pick(c: re.Match | None, alone: bool = False) -> str | None:
    """The pick a CHOICE match names; None for "A or B or C", "a better one", or (alone) any text after it."""
    if not c or AMBIGUOUS.match(rest := c.group("rest")) or (alone and not TRIVIAL.match(rest)):
        return None
    if (name := c.group("id")) and name.islower() and re.match(r"\s+[a-z]", rest):
        return None
    return "tie" if c.group("tie") or name.lower() == "c" else LETTERS[_index(name)]


def _final_scores(found: list[tuple[int, float, int | None]], scale: int, n: int, strategy: str) -> Judgment:
    """The last block of scores: read backwards until a response is scored twice."""
    block: dict[int, tuple[float, int | None]] = {}
    for index, value, of in reversed(found):
        if index in block:
            break
        block[index] = (value, of)
    missing = [LETTERS[i] for i in range(n) if i not in block]
    if missing:
        return Judgment("unparseable", error="no score" + (f" for Assistant {', '.join(missing)}" if n > 1 else ""))
    for i in range(n):
        (value, of), whose = block[i], "" if strategy == "independent" else f" for Assistant {LETTERS[i]}"
        if of is not None and of != scale:
            return Judgment("unparseable", error=f"score out of {of}, expected {scale}{whose}")
        if not 0 <= value <= scale:
            return Judgment("unparseable", error=f"score{whose} is outside 0..{scale}")
    return Judgment("ok", scores=tuple(block[i][0] for i in range(n)))


def _json_answer(text: str, strategy: str) -> tuple[list | None, str | None]:
    """Verdicts from a JSON answer (whole, or fenced at the end) and a reason if bad; (None, why) if none."""
    body = text.strip()
    if body.endswith("```") and (start := body.rfind("```", 0, len(body) - 3)) >= 0:
        body = re.sub(r"^json\b", "", body[start + 3 : -3].strip(), flags=re.I).strip()
    try:
        data = json.loads(body) if body.startswith("{") else None
    except ValueError as e:
        return None, str(e)
    if not isinstance(data, dict):
        return None, None
    fields = {re.sub(r"[^a-z]", "", str(k).lower()): v for k, v in data.items()}
    key = {"direct": ("answer", "verdict", "winner", "choice"), "independent": ("score", "overallscore", "rating")}
    value = next((fields[k] for k in key.get(strategy, ("scores", "score", "ratings")) if k in fields), None)
    if strategy == "direct":
        if pick := _pick(CHOICE.match(value) if isinstance(value, str) else None, alone=True):
            return [pick], None
        return [], (f"answer {value!r} is not A, B or C" if value not in (None, "") else "no answer (A, B or C)")
    if isinstance(value, list):
        value = {str(i + 1): v for i, v in enumerate(value)}
    found = []
    for k, v in ({"a": value} if strategy == "independent" else value if isinstance(value, dict) else {}).items():
        name = re.sub(r"^(?:assistant|response|score)[ _]*", "", str(k).strip().lower())
        if not re.fullmatch(r"[a-z]|\d{1,2}", name):
            continue
        if isinstance(v, str) and (m := VALUE.fullmatch(v.strip())):
            found.append((_index(name), *_value(m)))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            found.append((_index(name), float(v), None))
    return found, None
