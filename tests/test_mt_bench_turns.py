"""benchmarks/mt_bench_turns.py on small fixtures with the fake judge: MT-Bench turn-2 rows with the
first turn vs both, and a labelled file with and without its reference answers (the vendored
benchmarks have none)."""

from __future__ import annotations

import importlib.util
import json

import polars as pl

from builders.sources import benchmark_path
from builders.tables import TABLES, read_table
from conftest import ROOT

FAKE = "{provider: fake, model: auto}"


def _script():
    spec = importlib.util.spec_from_file_location("mt_bench_turns", ROOT / "benchmarks" / "mt_bench_turns.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(tmp_path, *args):
    script = _script()
    common = ["--judge", FAKE, "--work", str(tmp_path / "work"), "--answers", str(tmp_path / "answers.jsonl.gz"),
              "--results", str(tmp_path / "results.json"), *args]
    script.main(["run", *common])
    script.main(["report", *common])
    return json.loads((tmp_path / "results.json").read_text())


def test_turns_first_and_all_cover_the_same_turn_two_rows(tmp_path):
    results = _run(tmp_path, "--rows", "6", "--chunk", "4")
    difference = results.pop("difference")
    assert set(results) == {"turns-first", "turns-all"} and difference["of"] == "turns-all - turns-first"
    assert abs(difference["kappa"] - (results["turns-all"]["kappa"] - results["turns-first"]["kappa"])) < 1e-5  # the table rounds to 6 places
    assert difference["kappa_low"] <= difference["kappa"] <= difference["kappa_high"]
    assert results["turns-first"]["item_ids"] == results["turns-all"]["item_ids"]
    turn2 = set(pl.read_parquet(benchmark_path("mt-bench")).filter(pl.col("turn") == 2)["item_id"])
    assert len(results["turns-all"]["item_ids"]) == 6 and set(results["turns-all"]["item_ids"]) <= turn2
    for r in results.values():
        assert r["calls"] == 12 and r["kappa_low"] <= r["kappa"] <= r["kappa_high"]
    first = read_table(TABLES["items"], tmp_path / "work" / "data" / "turns-first")
    both = read_table(TABLES["items"], tmp_path / "work" / "data" / "turns-all")
    assert set(first["prompt"]).isdisjoint(both["prompt"])  # the first turn's question vs the second's


def test_a_judge_with_and_without_references(tmp_path):
    rows = pl.DataFrame({
        "item_id": [f"r{i}" for i in range(4)],
        "question": ["What is 2+2?", "Capital of France?", "Boiling point of water in C?", "Largest planet?"],
        "response_a": ["4", "Paris", "100", "Jupiter"],
        "response_b": ["5", "Lyon", "90", "Saturn"],
        "model_a": ["m1"] * 4,
        "model_b": ["m2"] * 4,
        "human_winner": ["model_a"] * 4,
        "answer": ["4", "Paris", "100 degrees", "Jupiter"],
    })
    rows.write_parquet(tmp_path / "refs.parquet")
    results = _run(tmp_path, "--source", str(tmp_path / "refs.parquet"), "--reference-column", "answer", "--chunk", "2")
    assert results.pop("difference")["of"] == "with-reference - without-reference"
    assert set(results) == {"without-reference", "with-reference"}
    assert all(r["items"] == 4 for r in results.values())
    data = tmp_path / "work" / "data"
    assert read_table(TABLES["items"], data / "with-reference")["reference"].to_list() == rows["answer"].to_list()
    assert read_table(TABLES["items"], data / "without-reference")["reference"].null_count() == 4
    # the reference-guided prompt is another prompt: the fake judge's answers (a function of it) differ
    raw = {n: sorted(read_table(TABLES["scores"], data / n)["raw"]) for n in results}
    assert raw["with-reference"] != raw["without-reference"]
    candidates = read_table(TABLES["candidates"], data / "with-reference")
    assert set(candidates["response"]) == set(rows["response_a"]) | set(rows["response_b"])  # never a candidate
