"""The recipe's spending cap (`budget.usd`) and the token estimates it and `fellowship plan` rely on.

What counts: the cost of every answer the recipe's stages use, at the recipe's prices, whether it
was paid in this build or earlier (a cached answer counts at its price). So re-running a build that
stopped at its budget stops at the same place, and raising `budget.usd` lets it go on, paying only
for calls never made. Each stage records what it used in a ledger beside the response cache
(`spend/<recipe>.json`), so a stage knows what the stages before it used, in this process or in
earlier ones (DVC runs each stage in a process of its own).

Before each call, its worst case (estimated prompt tokens, `max_tokens` completion tokens) is
reserved: a call that could take the total past the cap waits for the calls in flight to settle,
and is not made if it still could; calls already in flight finish and are cached, then the stage
fails with one line and writes no table. A re-run with the same cap may make a few more calls (the
answers of the first are now known to cost less than their worst case), never passing the cap.
"""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

from builders.errors import BuildError, first_line
from builders.llm.types import Message
from builders.tables import replace_atomically

CHARS_PER_TOKEN = 4  # the usual rule of thumb for English text with BPE tokenizers
TOKENS_PER_MESSAGE = 4  # role and separators


def estimate_tokens(messages: list[Message]) -> int:
    """Prompt tokens of `messages`, estimated from their length (no tokenizer is loaded)."""
    return 3 + sum(TOKENS_PER_MESSAGE + -(-len(m["content"]) // CHARS_PER_TOKEN) for m in messages)


class BudgetReached(BuildError):
    """The next call could take the recipe past `budget.usd`."""


class Ledger:
    """What each stage of one recipe used, in US dollars: `<cache dir>/spend/<recipe>.json`, a JSON
    object of stage name -> dollars. A missing ledger means nothing was spent; one that cannot be
    read as such is an error (read as $0, it would lift the budget)."""

    def __init__(self, cache_dir: Path, recipe: str):
        self.path = Path(cache_dir) / "spend" / f"{recipe}.json"
        self.recipe = recipe

    def _invalid(self, why: str) -> BuildError:
        return BuildError(
            f"spend ledger {self.path}: {why}; it records what each stage of recipe '{self.recipe}' spent "
            "(a JSON object of stage name -> US dollars): fix it, or delete it to forget that spending"
        )

    def read(self) -> dict[str, float]:
        try:
            data = json.loads(self.path.read_bytes().decode("utf-8"))
        except FileNotFoundError:
            return {}
        except OSError as e:
            raise self._invalid(f"cannot read it ({e.strerror})") from None
        except ValueError as e:  # not UTF-8, or not JSON
            raise self._invalid(f"not JSON ({first_line(e)})") from None
        if not isinstance(data, dict):
            raise self._invalid(f"holds a JSON {type(data).__name__}, not an object")
        for stage, usd in data.items():
            if isinstance(usd, bool) or not isinstance(usd, (int, float)) or not math.isfinite(usd) or usd < 0:
                raise self._invalid(f"stage '{stage}' has {json.dumps(usd)}, not a number of dollars of at least 0")
        return {stage: float(usd) for stage, usd in data.items()}

    def record(self, stage: str, usd: float) -> None:
        spent = {**self.read(), stage: round(usd, 8)}
        text = json.dumps(spent, indent=1, sort_keys=True) + "\n"
        replace_atomically(self.path, lambda tmp: tmp.write_text(text))


class Budget:
    def __init__(self, limit_usd: float, *, earlier_usd: float = 0.0):
        self.limit_usd = limit_usd
        self.earlier_usd = earlier_usd  # what the recipe's other stages used
        self.used_usd = 0.0  # what this stage used: answers paid now or earlier
        self.reserved_usd = 0.0  # worst cases of the calls in flight

    async def reserve(self, worst_usd: float) -> None:
        """Hold `worst_usd` for a call, waiting for calls in flight to settle (they usually cost far
        less than their worst case) before deciding that it does not fit."""
        while True:
            total = self.earlier_usd + self.used_usd + self.reserved_usd + worst_usd
            if total <= self.limit_usd:
                self.reserved_usd += worst_usd
                return
            if self.reserved_usd <= 1e-12:
                break
            await asyncio.sleep(0.01)
        total = self.earlier_usd + self.used_usd + worst_usd
        raise BudgetReached(
                f"budget reached: the next call could bring the recipe to ${total:.4f}, over budget.usd "
                f"${self.limit_usd:g} (used: ${self.earlier_usd:.4f} by earlier stages, ${self.used_usd:.4f} by this one); "
                "every finished call is cached: raise budget.usd and build again to go on"
            )

    def settle(self, worst_usd: float, actual_usd: float) -> None:
        self.reserved_usd -= worst_usd
        self.used_usd += actual_usd

    def count(self, usd: float) -> None:
        """An answer this stage uses without a call (cached)."""
        self.used_usd += usd
