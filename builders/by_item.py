"""Reading several tables an item at a time, in memory that does not grow with the tables.

Every table with one or more rows per item is kept in the items' order (`Table.in_items_order`):
an item's rows come together, and the items come as in the items table. A stage that needs, say,
an item's candidates and its scores together walks the items table and each input table side by
side, a batch of rows at a time, and takes from each table the rows of the current item: a merge
of sorted inputs, with no index, no sort and no whole table in memory.

A table whose rows are not in that order (written by an older version, or edited by hand) cannot be
walked so: its rows of an item come after the walk has passed the item, and are left over at the
end. That is an error naming the table and the command that writes it again, never rows silently
dropped.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from builders.errors import TableError
from builders.tables import ITEMS, Table, read_rows_of, rebuild_command, scan_table


@dataclass(frozen=True)
class Input:
    """A table read item by item: which columns (all when None), from which folder (the stage's own
    when None; a compare entry's tables are in a folder of their own)."""

    table: Table
    columns: list[str] | None = None
    data_dir: Path | None = None


class _Walk:
    """One input table, read a batch at a time, with the row the walk has not yet given out."""

    def __init__(self, given: Input, data_dir: Path):
        self.table = given.table
        self.path = given.table.path(given.data_dir or data_dir)
        columns = given.columns
        if columns is not None and "item_id" not in columns:
            columns = ["item_id", *columns]
        self.rows = scan_table(given.table, given.data_dir or data_dir, columns)[1]
        self.next = next(self.rows, None)

    def take(self, item_id: str) -> list[dict]:
        taken = []
        while self.next is not None and self.next["item_id"] == item_id:
            taken.append(self.next)
            self.next = next(self.rows, None)
        return taken

    def check_done(self) -> None:
        if self.next is not None:
            raise TableError(
                f"{self.path}: the rows of item {self.next['item_id']} are not in the items' order (or their item "
                f"is not in the items table); rebuild it with `{rebuild_command(self.table, self.path)}`"
            )


def count_items(data_dir: Path) -> int:
    return scan_table(ITEMS, data_dir, ["item_id"])[0]


def by_item(data_dir: Path, item_columns: list[str] | None = None, **inputs: Input | Table) -> Iterator[tuple[dict, dict[str, list[dict]]]]:
    """(item row, {input name: that item's rows of the input}) for every item of the items table, in
    its order. An item with no rows in an input gets an empty list there."""
    walks = {name: _Walk(i if isinstance(i, Input) else Input(i), data_dir) for name, i in inputs.items()}
    columns = item_columns if item_columns is None or "item_id" in item_columns else ["item_id", *item_columns]
    _, items = scan_table(ITEMS, data_dir, columns)
    for item in items:
        yield item, {name: walk.take(item["item_id"]) for name, walk in walks.items()}
    for walk in walks.values():
        walk.check_done()


def rows_of_items(table: Table, data_dir: Path, item_ids: list[str], columns: list[str] | None = None) -> dict[str, list[dict]]:
    """item -> its rows of `table`, for a block of items (a Ray task's, which reads only its own)."""
    df = read_rows_of(table, data_dir, item_ids)
    return df.select(columns or df.columns).rows_by_key("item_id", named=True, unique=False, include_key=True)
