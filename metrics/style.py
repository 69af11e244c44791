"""Markdown density: how much of an answer is formatting, the style covariate of a style-controlled win rate.

Arena-Hard's style control regresses a judge's verdicts on the answers' differences in length and
in markdown (headers, bold, lists) as well as on which model wrote them, and reads the win rate
with the style terms at zero. Here an answer's markdown density is its markdown elements per 1,000
characters: header lines (`# ...`), list items (`- ...`, `* ...`, `1. ...`), bold spans
(`**...**`, `__...__`), code fences and table rows (`| ... |`).
"""

from __future__ import annotations

import re

import numpy as np

ELEMENTS = re.compile(
    r"^[ \t]{0,3}#{1,6}[ \t]"  # header
    r"|^[ \t]*(?:[-*+]|\d{1,3}[.)])[ \t]+\S"  # list item
    r"|\*\*[^*\n]+\*\*|__[^_\n]+__"  # bold
    r"|^[ \t]*(?:```|~~~)"  # code fence
    r"|^[ \t]*\|.*\|[ \t]*$",  # table row
    re.MULTILINE,
)


def markdown_elements(text: str) -> int:
    return len(ELEMENTS.findall(text))


def markdown_density(text: str) -> float:
    """Markdown elements per 1,000 characters (0 for an empty text)."""
    return 1000.0 * markdown_elements(text) / len(text) if text else 0.0


def densities(texts: list[str]) -> np.ndarray:
    return np.array([markdown_density(t) for t in texts], dtype=np.float64)
