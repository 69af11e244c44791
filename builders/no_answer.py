"""Responses that are no answer: empty, only white space, a refusal, or cut off by `max_tokens`.

Such a candidate is kept in `candidates` with its reason (`problem`), so it can be counted and
queried, but it is never shown to a judge, never chosen and never exported: an empty answer must not
become a desirable KTO example, nor a refusal the chosen side of a DPO pair.
"""

from __future__ import annotations

import re

# A whole-answer refusal: a short answer that opens by declining (a long one that opens with an
# apology and then answers is an answer).
REFUSAL = re.compile(
    r"\A\W*(?:(?:i['’]?m|i\s+am)\s+(?:really\s+|very\s+)?sorry\b[^\n]{0,80}?\b(?:can(?:no|['’])?t|unable|won['’]t|not\s+able)"
    r"|(?:unfortunately,?\s+)?i\s+(?:can(?:no|['’])?t|won['’]t|am\s+(?:unable|not\s+able)\s+to|must\s+decline\s+to)\s+"
    r"(?:help|assist|provide|comply|fulfil+|do\s+that|answer|share|write|create|generate)"
    r"|as\s+an\s+ai(?:\s+language\s+model)?,?\s+i\s+(?:can(?:no|['’])?t|am\s+(?:unable|not\s+able)|don['’]t|do\s+not))",
    re.I,
)
SHORT = 300  # characters: longer answers that open with a refusal go on to answer


def problem(text: str, finish_reason: str | None = None, *, drop_truncated: bool = False) -> str | None:
    """Why `text` is no answer (`empty`, `whitespace`, `refused`, `truncated`), or None."""
    if text == "":
        return "empty"
    if not text.strip():
        return "whitespace"
    if len(text.strip()) < SHORT and REFUSAL.match(text.strip()):
        return "refused"
    if drop_truncated and finish_reason == "length":
        return "truncated"
    return None
