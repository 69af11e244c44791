"""Sources: every supported format becomes the same `items` table; chat messages give the user turn."""

from __future__ import annotations

import json

import datasets
import polars as pl
import pytest

from builders.loader import load_recipe
from builders.stages import run_stage
from builders.tables import ITEMS, read_table
from conftest import tiny_recipe

PROMPTS = ["Why is the sea salty?", "Name a prime number.", "Why is the sea salty?", "Define entropy."]


def _build_items(project, source_yaml: str):
    path = tiny_recipe(project)
    text = path.read_text()
    start, end = text.index("source:"), text.index("models:")
    path.write_text(text[:start] + source_yaml + text[end:])
    recipe = load_recipe(path)
    run_stage(recipe, "items", progress=False)
    return read_table(ITEMS, project.parent / "data" / "tiny")


def _frame():
    return pl.DataFrame({"id": [f"p{i}" for i in range(4)], "text": PROMPTS})


@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "csv"])
def test_local_files(project, fmt):
    target = project / "recipes" / "sources" / f"p.{fmt}"
    df = _frame()
    {"parquet": df.write_parquet, "jsonl": df.write_ndjson, "csv": df.write_csv}[fmt](target)
    items = _build_items(project, f"source:\n  path: sources/p.{fmt}\n  prompt_column: text\n  id_column: id\n")
    assert items.sort("source_row")["prompt"].to_list() == ["Why is the sea salty?", "Name a prime number.", "Define entropy."]
    assert items.sort("source_row")["source_id"].to_list() == ["p0", "p1", "p3"]  # the repeated prompt is dropped


def test_save_to_disk_folder_with_chat_messages(project):
    """The whole conversation is kept; its final assistant turn is the reference when the recipe says so."""
    messages = [[{"role": "system", "content": "Be kind."}, {"role": "user", "content": p},
                 {"role": "assistant", "content": f"About {p}"}] for p in PROMPTS]
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"messages": messages})}).save_to_disk(
        str(project / "recipes" / "sources" / "saved"))
    items = _build_items(project, "source:\n  path: sources/saved\n  split: train\n  prompt_column: messages\n"
                         "  reference_column: messages\n")
    assert sorted(items["prompt"]) == sorted(set(PROMPTS))
    row = items.sort("source_row").row(0, named=True)
    assert row["messages"] == [{"role": "system", "content": "Be kind."}, {"role": "user", "content": PROMPTS[0]}]
    assert row["reference"] == f"About {PROMPTS[0]}"


def test_hub_style_dataset_id(project, tmp_path):
    folder = tmp_path / "hub-dataset"
    folder.mkdir()
    _frame().write_parquet(folder / "train.parquet")
    items = _build_items(project, f"source:\n  dataset: {folder}\n  split: train\n  prompt_column: text\n")
    assert items.height == 3


def test_seeded_sample_is_stable(project):
    rows = [{"prompt": f"Question number {i}?"} for i in range(50)]
    (project / "recipes" / "sources" / "many.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    source = "source:\n  path: sources/many.jsonl\n  sample: 5\n  seed: 3\n"
    first = _build_items(project, source)["item_id"].to_list()
    assert len(first) == 5 and _build_items(project, source)["item_id"].to_list() == first
    other = _build_items(project, source.replace("seed: 3", "seed: 4"))["item_id"].to_list()
    assert other != first


def test_a_streamed_table_is_written_whole_or_not_at_all(tmp_path):
    from builders.errors import TableError
    from builders.tables import ITEMS, TableWriter

    row = {"item_id": "a", "prompt": "p", "source_row": 0, "source_id": None}
    other = tmp_path / ".items.parquet.tmp-99999-0a0b0c0d"
    other.write_text("another build's table in progress")
    with pytest.raises(TableError, match=r"duplicate primary key \{'item_id': 'a'\}"):
        with TableWriter(ITEMS, tmp_path) as out:
            out.write([row] * 1)
            out.write([row | {"prompt": "q"}])
    # no table and no hidden file of its own; another writer's file is not this writer's to remove
    assert list(tmp_path.iterdir()) == [other]
    with TableWriter(ITEMS, tmp_path) as out:
        out.write([row | {"item_id": f"i{k}", "source_row": k} for k in range(2500)])
    import polars as pl
    assert pl.read_parquet(tmp_path / "items.parquet")["source_row"].to_list() == list(range(2500))


def test_a_large_source_is_read_a_batch_at_a_time_with_the_same_items(project, monkeypatch):
    """Parquet is read a batch at a time (a small batch here, so that repeats fall in other batches,
    and a small merge, so that the remembered prompts go through the sorted array): the items are
    those of reading it whole, in the source's order, a sample included."""
    from builders import sources
    from builders.key_set import KeySet

    monkeypatch.setattr(sources, "BATCH_ROWS", 7)
    monkeypatch.setattr(KeySet, "MERGE", 5)
    prompts = [f"Question {i % 40}?" for i in range(100)]  # 40 distinct, each repeated in later batches
    pl.DataFrame({"id": [f"p{i}" for i in range(100)], "text": prompts}).write_parquet(
        project / "recipes" / "sources" / "big.parquet", row_group_size=16)
    items = _build_items(project, "source:\n  path: sources/big.parquet\n  prompt_column: text\n  id_column: id\n")
    assert items["source_row"].to_list() == list(range(40))  # the first of each prompt, in order
    assert items["prompt"].to_list() == [f"Question {i}?" for i in range(40)]

    whole = pl.DataFrame({"text": prompts}).with_row_index("source_row").sample(n=30, seed=3, shuffle=False)
    first_rows = whole.sort("source_row").unique("text", keep="first", maintain_order=True)["source_row"].to_list()
    sampled = _build_items(project, "source:\n  path: sources/big.parquet\n  prompt_column: text\n  id_column: id\n"
                           "  sample: 30\n  seed: 3\n")
    assert sampled["source_row"].to_list() == first_rows

