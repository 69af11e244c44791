"""`fellowship sql` is read-only and reads only the data folder: no file elsewhere on the machine,
no URL, no extension; its errors are one line; CSV writes list and struct columns as JSON text; a
damaged table breaks only the queries that read it."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil

import pytest

from conftest import ROOT, assert_one_line, fellowship, tiny_recipe

MARKER = "fellowship-sql-test-marker-0123456789"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A data folder holding the tiny recipe's tables (built once), and a file beside it."""
    root = tmp_path_factory.mktemp("sql")
    shutil.copytree(ROOT / "recipes", root / "project" / "recipes")
    tiny_recipe(root / "project")
    env = {**os.environ, "FELLOWSHIP_DATA_DIR": str(root / "data"), "FELLOWSHIP_CACHE_DIR": str(root / "cache"),
           "PYTHONPATH": str(ROOT)}
    import subprocess

    subprocess.run(["fellowship", "build", "tiny", "--no-progress"], cwd=root / "project", env=env, check=True,
                   capture_output=True)
    (root / "outside.txt").write_text(f"{MARKER}\n")
    return root / "data"


def sql(data, query, *args, check=False):
    return fellowship("sql", query, "--data-dir", str(data), *args, cwd=data.parent, check=check)


@pytest.mark.parametrize("query", [
    "select content from read_text('/proc/self/environ')",
    "select * from read_csv('/etc/passwd')",
    "select * from read_blob('/etc/hostname')",
    "select * from glob('/root/*')",
    "select * from read_text('{data}/../outside.txt')",
    "select * from read_text('{data}/tiny/leak.txt')",
    "select * from read_parquet('https://example.com/tables/x.parquet')",
    "select * from read_json('http://127.0.0.1:9/x.json')",
    "select * from read_csv_auto('file:///etc/passwd')",
    "select * from parquet_metadata('/etc/passwd')",
])
def test_no_query_reads_outside_the_data_folder_or_the_network(data, query, monkeypatch):
    leak = data / "tiny" / "leak.txt"
    if not leak.is_symlink():
        leak.symlink_to(data.parent / "outside.txt")  # a link inside the folder to a file outside it
    monkeypatch.setenv("SQL_TEST_MARKER", MARKER)
    result = sql(data, query.format(data=data))
    assert_one_line(result, "sql:", "Permission Error")
    assert MARKER not in result.stdout and "root:" not in result.stdout


@pytest.mark.parametrize("query", ["install httpfs", "load httpfs", "set enable_external_access = true",
                                   "attach '/tmp/other.duckdb'", "copy scores to '/tmp/scores.csv'",
                                   "select 1; select content from read_text('/etc/passwd')"])
def test_statements_other_than_one_select_are_refused(data, query):
    assert_one_line(sql(data, query), "sql:", "read-only query")


def test_the_data_folder_itself_can_be_read(data):
    out = sql(data, f"select count(*) n from read_parquet('{data}/tiny/dpo.parquet')", "--format", "json", check=True)
    assert json.loads(out.stdout)["n"] > 0


@pytest.mark.parametrize("table", ["dpo", "kto", "candidates", "verdicts", "debates", "scores"])
def test_csv_writes_list_and_struct_columns_as_json_text(data, table):
    out = sql(data, f"select * from {table}", "--format", "csv", check=True).stdout
    rows = list(csv.DictReader(io.StringIO(out)))
    if table == "verdicts":
        assert all(isinstance(json.loads(r["ranking"]), list) for r in rows) and rows
    if table == "candidates":
        assert all(json.loads(r["reviewers"]) == ["reviewer"] for r in rows) and rows
    structs = sql(data, "select {'n': 1, 'names': ['a', 'b']} s, map {'k': 2} m", "--format", "csv", check=True).stdout
    assert list(csv.reader(io.StringIO(structs)))[1] == ['{"n": 1, "names": ["a", "b"]}', '{"k": 2}']


def test_types_polars_cannot_hold_are_still_shown(data):
    for fmt in ("table", "csv", "json"):
        result = sql(data, "select interval 1 day i, 'ab'::blob b, union_value(n := 2) u, 1 x, 2 x", "--format", fmt)
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr


def test_a_damaged_table_breaks_only_the_queries_that_read_it(data, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(data, copy, symlinks=True)
    scores = copy / "tiny" / "scores.parquet"
    scores.write_bytes(scores.read_bytes()[:300])
    assert int(sql(copy, "select count(*) n from dpo", "--format", "csv", check=True).stdout.split()[1]) > 0
    line = assert_one_line(sql(copy, "select judge, avg(score) from scores group by 1"), str(scores))
    assert "cannot read the scores table" in line and "fellowship build tiny --stage scores" in line


def test_a_table_linked_from_outside_the_folder_is_read(data, tmp_path):
    """DVC may link outputs to its cache (cache.type symlink): the link's target is readable."""
    copy = tmp_path / "data"
    shutil.copytree(data, copy, symlinks=True)
    store = tmp_path / "dvc-cache" / "items.parquet"
    store.parent.mkdir()
    shutil.move(copy / "tiny" / "items.parquet", store)
    (copy / "tiny" / "items.parquet").symlink_to(store)
    out = sql(copy, "select count(*) n from items", "--format", "csv", check=True).stdout
    assert out.split()[1] == "4"
