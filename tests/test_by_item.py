"""Reading tables an item at a time (builders/by_item.py): each item's rows together, in the items'
order, and a table in another order refused rather than read wrong."""

from __future__ import annotations

import pytest

from builders.by_item import Input, by_item
from builders.errors import TableError
from builders.tables import CANDIDATES, ITEMS, frame, write_table


def _item(item_id: str, row: int) -> dict:
    return {"item_id": item_id, "prompt": f"prompt {item_id}", "messages": [{"role": "user", "content": f"prompt {item_id}"}],
            "reference": None, "source_row": row, "source_id": None}


def _candidate(item_id: str, iteration: int) -> dict:
    return {"candidate_id": f"{item_id}-{iteration}", "item_id": item_id, "workflow": "single", "generator": "w",
            "generator_model": "fake/w", "reviewers": [], "iteration": iteration, "response": f"answer {iteration}",
            "context": None, "problem": None, "finish_reason": "stop", "feedback": None, "review": None,
            "review_score": None, "tokens_in": 1, "tokens_out": 1, "cost_usd": 0.0, "latency_s": 0.0,
            "review_tokens_in": 0, "review_tokens_out": 0, "review_cost_usd": 0.0}


@pytest.fixture
def data_dir(tmp_path):
    folder = tmp_path / "data" / "demo"
    # the items' order is the source's, not their ids'
    write_table(ITEMS, frame(ITEMS, [_item("zz", 0), _item("aa", 1), _item("mm", 2)]), folder)
    return folder


def test_each_item_gets_its_own_rows_in_the_tables_order(data_dir):
    rows = [_candidate("zz", 1), _candidate("zz", 2), _candidate("mm", 1)]  # "aa" has none
    write_table(CANDIDATES, frame(CANDIDATES, rows), data_dir)
    seen = [(item["item_id"], [c["candidate_id"] for c in got["candidates"]])
            for item, got in by_item(data_dir, ["item_id"], candidates=Input(CANDIDATES, ["candidate_id"]))]
    assert seen == [("zz", ["zz-1", "zz-2"]), ("aa", []), ("mm", ["mm-1"])]


def test_a_table_in_another_order_is_refused_naming_the_command_that_rebuilds_it(data_dir):
    rows = [_candidate("mm", 1), _candidate("zz", 1)]  # sorted by id, as tables once were
    write_table(CANDIDATES, frame(CANDIDATES, rows), data_dir)
    with pytest.raises(TableError) as e:
        list(by_item(data_dir, ["item_id"], candidates=CANDIDATES))
    assert str(e.value) == (f"{CANDIDATES.path(data_dir)}: the rows of item zz are not in the items' order (or their "
                            "item is not in the items table); rebuild it with `fellowship build demo --stage candidates`")


def test_rows_of_an_item_the_items_table_lacks_are_refused(data_dir):
    write_table(CANDIDATES, frame(CANDIDATES, [_candidate("zz", 1), _candidate("gone", 1)]), data_dir)
    with pytest.raises(TableError, match="the rows of item gone are not in the items' order"):
        list(by_item(data_dir, candidates=CANDIDATES))


def test_a_writer_in_items_order_refuses_an_items_rows_apart_and_a_repeated_key(tmp_path):
    from builders.tables import TableWriter

    with pytest.raises(TableError, match=r"table candidates: the rows of item zz do not come together"):
        with TableWriter(CANDIDATES, tmp_path) as out:
            out.write([_candidate("zz", 1), _candidate("aa", 1)])
            out.write([_candidate("zz", 2)])
    with pytest.raises(TableError, match=r"table candidates: duplicate primary key \{'candidate_id': 'aa-1'\}"):
        with TableWriter(CANDIDATES, tmp_path) as out:
            out.write([_candidate("aa", 1), _candidate("aa", 2), _candidate("aa", 1)])
    assert list(tmp_path.iterdir()) == []  # nothing written, not even half
