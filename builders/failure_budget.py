"""A stage's failure budget (`judge.panel.max_parse_failure_rate`): of the calls it made, at most
that share may have failed (an answer that could not be read, a refusal, a provider error after its
retries), else the stage fails, writing nothing. Calls are counted as their rows are written
(`Tally`), so the check needs no table in memory."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

from builders.errors import BuildError
from builders.recipe import Recipe
from builders.tables import Table, TableWriter


class Tally:
    """What a stage's closing checks need of its calls, counted as they come (memory does not grow
    with the calls): outcomes, the first failed items, the commonest reasons, and each judge's
    scores by position."""

    REASONS = 1000  # distinct failure reasons counted (they are a handful of kinds)

    def __init__(self) -> None:
        self.calls = 0
        self.outcomes: Counter[str] = Counter()
        self.failed_items: list[str] = []
        self.reasons: Counter[str] = Counter()
        self.positions: dict[tuple[str, int], list[float]] = defaultdict(lambda: [0.0, 0])

    def add(self, outcome: str, item_id: str, reason: str | None) -> None:
        """One call."""
        self.calls += 1
        self.outcomes[outcome] += 1
        if outcome != "ok":
            if len(self.failed_items) < 3 and item_id not in self.failed_items:
                self.failed_items.append(item_id)
            if reason in self.reasons or len(self.reasons) < self.REASONS:
                self.reasons[reason] += 1

    def add_rows(self, rows: list[dict]) -> None:
        """Rows of a table with one row per call."""
        for row in rows:
            self.add(row["outcome"], row["item_id"], row["parse_error"])

    def add_scores(self, rows: list[dict]) -> None:
        """Score rows, one or more calls' worth (each call's rows together)."""
        for i, row in enumerate(rows):
            if i == 0 or row["call_id"] != rows[i - 1]["call_id"]:
                self.add(row["outcome"], row["item_id"], row["parse_error"])
            if row["outcome"] == "ok" and row["strategy"] != "independent":
                sums = self.positions[(row["judge"], row["position"])]
                sums[0] += row["score"] / row["scale"]
                sums[1] += 1

    @property
    def failed(self) -> int:
        return self.calls - self.outcomes["ok"]

    def position_means(self) -> dict[str, list[float]]:
        """judge -> its mean score (as a share of the scale) in each position (`position_means`)."""
        means: dict[str, list[float]] = defaultdict(list)
        for (judge, _), (total, n) in sorted(self.positions.items()):
            means[judge].append(total / n)
        return dict(means)


def check_failure_budget(recipe: Recipe, tally: Tally, what: str = "judge calls") -> None:
    """Fail, naming counts, outcomes, items and reasons, when more than the recipe's share of the
    calls counted in `tally` failed."""
    budget = recipe.judge.panel.max_parse_failure_rate
    if tally.calls and tally.failed / tally.calls > budget:
        outcomes = ", ".join(f"{o} {n}" for o, n in tally.outcomes.most_common() if o != "ok")
        reasons = [r for r, _ in tally.reasons.most_common(3)]
        raise BuildError(
            f"{recipe.path}: judge.panel.max_parse_failure_rate: {tally.failed} of {tally.calls} {what} failed "
            f"({outcomes}; > {budget:.0%}); items {', '.join(tally.failed_items)}; reasons: {'; '.join(map(str, reasons))}"
        )


class BudgetedWriter(TableWriter):
    """A table of judge calls' rows (`scores`, `matches`), written as its rows come, with the
    failure budget checked over all its calls before it replaces the table (a stage over the budget
    writes nothing). `count` adds some rows to the tally."""

    def __init__(self, table: Table, recipe: Recipe, data_dir: Path, *, what: str,
                 count: Callable[[Tally, list[dict]], None]):
        super().__init__(table, data_dir)
        self.recipe, self.what, self.count, self.tally = recipe, what, count, Tally()

    def write(self, rows: list[dict]) -> None:
        self.count(self.tally, rows)
        super().write(rows)

    def close(self) -> Path:
        check_failure_budget(self.recipe, self.tally, self.what)
        return super().close()
