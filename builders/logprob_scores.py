"""Scores from token probabilities (`judge.panel.score_mode: expected`).

At the place where the judge wrote each score, the provider's most likely tokens give a distribution
over the scores it could have written; the score is its mean, sum of p(s) * s (G-Eval; the mean of
the judgment distribution beats the greedy score in most settings). For a direct comparison the
probabilities of A, B and C give the expected preference: A scores p(A) + p(C)/2, B p(B) + p(C)/2.

Numbers split over several tokens ("1" then "0" for 10, as Qwen's and Gemma's tokenizers write them)
are followed token by token: along the written path through the next position's distribution, off
it through what the provider says the model would write next (`TokenLogprob.after`, given by the
local provider). Probability this cannot place (tokens outside the top ones, continuations nobody
reported, text that is no score) is left out and renormalized, and the share that was placed is
recorded (`mass`), so a thin distribution shows.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_right
from collections import defaultdict

from builders.judgment_parser import Judgment, normalized, outside_fences, quoted_lines
from builders.llm.types import TokenLogprob

LETTER_NAMES = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _own(text: str, marker: str | None, quoted: tuple[str, ...]) -> list[tuple[int, int]]:
    """Character spans of the judge's own lines (outside answer fences, not copies of answer lines)."""
    lines = text.split("\n")
    copies = quoted_lines(quoted)
    spans, start = [], 0
    for line, outside in zip(lines, outside_fences(lines, marker)):
        if outside and normalized(line) not in copies and not line.lstrip().startswith(">"):
            spans.append((start, start + len(line)))
        start += len(line) + 1
    return spans


def _next_top(tokens: tuple[TokenLogprob, ...], j: int, path: list[str]) -> tuple[tuple[str, float], ...] | None:
    """The distribution after writing the tokens `path` from position j: the answer's own next
    position while the path follows what was written, else the provider's `after` for the rest."""
    for d, token in enumerate(path):
        if j + d >= len(tokens):
            return None
        if tokens[j + d].token != token:
            return (tokens[j + d].after or {}).get("".join(path[d:]))
    return tokens[j + len(path)].top if j + len(path) < len(tokens) else None


def _number_distribution(tokens: tuple[TokenLogprob, ...], j: int, prefix: str, scale: int) -> dict[int, float]:
    """score -> probability that the number starting inside token j (after `prefix`) is that score."""
    dist: dict[int, float] = defaultdict(float)

    def walk(path: list[str], digits: str, p: float) -> None:
        value = int(digits)
        if value > scale:
            return
        if value == 0 or value * 10 > scale:  # no longer score starts with these digits
            dist[value] += p
            return
        following = _next_top(tokens, j, path)
        for token, logprob in following or ():  # None: nobody said what follows; left out
            q = p * math.exp(logprob)
            more = re.match(r"\d+", token)
            if more and more.end() == len(token):
                walk([*path, token], digits + token, q)
            elif more:
                if int(digits + more.group()) <= scale:
                    dist[int(digits + more.group())] += q
            else:
                dist[value] += q

    for token, logprob in tokens[j].top:
        rest = _after_prefix(token, prefix)
        m = re.match(r"(\d+)(.*)", rest or "", re.S)
        if not m:
            continue
        digits, tail = m.groups()
        if tail:
            if int(digits) <= scale:
                dist[int(digits)] += math.exp(logprob)
        else:
            walk([token], digits, math.exp(logprob))
    return dist


def _after_prefix(token: str, prefix: str) -> str | None:
    """What an alternative token says after the text the written token had before the score."""
    if token.startswith(prefix):
        return token[len(prefix):].lstrip(" ")  # "  8" after "Score: " is still an 8
    return token.lstrip(" ") if not prefix.strip() else None


def _letter_distribution(tokens: tuple[TokenLogprob, ...], j: int, prefix: str) -> dict[str, float]:
    dist: dict[str, float] = defaultdict(float)
    for token, logprob in tokens[j].top:
        rest = _after_prefix(token, prefix)
        if rest and rest[0] in "ABC" and (len(rest) == 1 or not rest[1].isalnum()):
            dist[rest[0]] += math.exp(logprob)
    return dist


def _find(pattern: re.Pattern, text: str, own: list[tuple[int, int]], fits) -> int | None:
    """The start of the last match of `pattern` on one of the judge's own lines whose value `fits`
    the written verdict."""
    starts = [s for s, _ in own]
    for m in reversed(list(pattern.finditer(text))):
        k = bisect_right(starts, m.start("v")) - 1
        if k >= 0 and own[k][0] <= m.start("v") <= own[k][1] and fits(m, text):
            return m.start("v")
    return None


def _setup(tokens: tuple[TokenLogprob, ...], marker: str | None, quoted: tuple[str, ...]):
    joined = "".join(t.token for t in tokens)
    offsets = [0]
    for t in tokens:
        offsets.append(offsets[-1] + len(t.token))
    return joined, offsets, _own(joined, marker, quoted)


def expected_pick(pattern: re.Pattern, written: Judgment, tokens: tuple[TokenLogprob, ...], *,
                  marker: str | None, quoted: tuple[str, ...]) -> Judgment:
    """A direct comparison's expected preference, at the place `pattern` (group `v`) finds the pick."""
    if not tokens:
        return Judgment("unparseable", error="the answer came without token log probabilities")
    joined, offsets, own = _setup(tokens, marker, quoted)
    letter = {"A": "A", "B": "B", "tie": "C"}[written.pick]
    pos = _find(pattern, joined, own, lambda m, _: m.group("v") == letter)
    if pos is None:
        return Judgment("unparseable", error="no token probabilities at the answer's place")
    j = bisect_right(offsets, pos) - 1
    dist = _letter_distribution(tokens, j, joined[offsets[j]:pos])
    mass = sum(dist.values())
    if mass <= 0:
        return Judgment("unparseable", error="no probability on A, B or C at the answer's place")
    p = {k: dist.get(k, 0.0) / mass for k in "ABC"}
    pick = {"A": "A", "B": "B", "C": "tie"}[max("ABC", key=lambda k: (p[k], k == letter))]
    return Judgment("ok", scores=(p["A"] + p["C"] / 2, p["B"] + p["C"] / 2), pick=pick, mass=(mass, mass))


def expected_scores(patterns: list[re.Pattern], written: Judgment, tokens: tuple[TokenLogprob, ...], *, scale: int,
                    marker: str | None, quoted: tuple[str, ...]) -> Judgment:
    """Each response's expected score, at the place its pattern (group `v`) finds the written score."""
    if not tokens:
        return Judgment("unparseable", error="the answer came without token log probabilities")
    joined, offsets, own = _setup(tokens, marker, quoted)
    scores, masses = [], []
    for i, pattern in enumerate(patterns):
        whose = f" for Assistant {LETTER_NAMES[i]}" if len(patterns) > 1 else ""
        value = int(written.scores[i])
        pos = _find(pattern, joined, own, lambda m, t: int(re.match(r"\d+", t[m.start("v"):]).group()) == value)
        if pos is None:
            return Judgment("unparseable", error=f"no token probabilities at the score{whose}")
        j = bisect_right(offsets, pos) - 1
        dist = _number_distribution(tokens, j, joined[offsets[j]:pos], scale)
        mass = sum(dist.values())
        if mass <= 0:
            return Judgment("unparseable", error=f"no probability on any score 0..{scale} at the score{whose}")
        scores.append(sum(v * p for v, p in dist.items()) / mass)
        masses.append(mass)
    return Judgment("ok", scores=tuple(scores), mass=tuple(masses))
