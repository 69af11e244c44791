"""recipes/no-robots.yaml end to end, on a local folder standing in for HuggingFaceH4/no_robots (the
Hub cannot be reached here): `dvc repro` builds both kinds of dataset from its conversations, and
`fellowship publish --dry-run` checks and writes all four configs in TRL's conversational format."""

from __future__ import annotations

import re
import shutil

import datasets
import polars as pl

from builders.loader import load_recipe
from builders.tables import TABLES, read_table
from conftest import ROOT, dvc_repo, run

# No Robots' columns (prompt, prompt_id, messages, category); each conversation ends with the
# human-written answer, the recipe's reference
ROWS = [
    {"prompt": "Write a haiku about rain.", "prompt_id": "nr-1", "category": "Generation", "messages": [
        {"role": "user", "content": "Write a haiku about rain."},
        {"role": "assistant", "content": "Soft rain on the roof\nthe garden drinks in silence\nclouds move on at dusk"}]},
    {"prompt": "Is a tomato a fruit?", "prompt_id": "nr-2", "category": "Chat", "messages": [
        {"role": "system", "content": "You are Tomi, a cheerful gardening bot."},
        {"role": "user", "content": "What should I plant in spring?"},
        {"role": "assistant", "content": "Peas, lettuce and radishes love cool spring soil!"},
        {"role": "user", "content": "Is a tomato a fruit?"},
        {"role": "assistant", "content": "Yes! Botanically a tomato is a fruit, though we cook it like a vegetable."}]},
    {"prompt": "Summarize: The cat sat on the mat all day.", "prompt_id": "nr-3", "category": "Summarize", "messages": [
        {"role": "system", "content": "Reply in one sentence."},
        {"role": "user", "content": "Summarize: The cat sat on the mat all day."},
        {"role": "assistant", "content": "A cat spent its whole day on a mat."}]},
]


def test_no_robots_builds_both_kinds_and_publishes_its_configs(tmp_path):
    project = tmp_path / "project"
    shutil.copytree(ROOT / "recipes", project / "recipes")
    recipe = project / "recipes" / "no-robots.yaml"
    text = re.sub(r"provider: local, model: default[^}]*", "provider: fake, model: auto", recipe.read_text())
    recipe.write_text(text.replace("orders: rotations", "orders: single"))  # the fake judge's verdicts hold in one order
    stand_in = project / "HuggingFaceH4" / "no_robots" / "data"  # load_dataset reads a local folder of that name first
    stand_in.mkdir(parents=True)
    datasets.Dataset.from_list(ROWS).to_parquet(str(stand_in / "train-00000-of-00001.parquet"))
    env = dvc_repo(project, tmp_path, ["no-robots"])
    run(["dvc", "repro"], project, env)
    data = project / "data" / "no-robots"
    items = read_table(TABLES["items"], data).sort("source_id")
    assert items["source_id"].to_list() == ["nr-1", "nr-2", "nr-3"]
    assert items["messages"][1].to_list() == ROWS[1]["messages"][:-1]  # the conversation before the human answer
    assert items["reference"].to_list() == [r["messages"][-1]["content"] for r in ROWS]
    references = set(items["reference"])
    for name in ("dpo", "kto", "dpo_feedback", "kto_feedback"):
        assert read_table(TABLES[name], data).height > 0, name
    dpo = read_table(TABLES["dpo"], data)
    assert not (set(dpo["chosen"]) | set(dpo["rejected"])) & references

    result = run(["fellowship", "publish", "no-robots", "--repo", "someone/no-robots-prefs", "--dry-run"], project, env)
    assert "configs: dpo, dpo_feedback, kto, kto_feedback" in result.stdout
    hub = data / "hub"
    readme = (hub / "README.md").read_text()
    for name in ("dpo", "kto", "dpo_feedback", "kto_feedback"):
        assert f"config_name: {name}" in readme
    pairs = datasets.load_dataset(str(hub), "dpo", split="train").to_polars()
    conversations = dict(items.select("item_id", "messages").iter_rows())
    for row in pairs.to_dicts():
        assert row["prompt"] == conversations[row["item_id"]]
        assert [m["role"] for m in row["chosen"]] == ["assistant"]
    examples = datasets.load_dataset(str(hub), "kto", split="train").to_polars()
    assert all(row["prompt"] == conversations[row["item_id"]] for row in examples.to_dicts())
    assert examples.filter(pl.col("prompt").list.len() > 1).height  # system messages and earlier turns reach the export
    assert load_recipe(ROOT / "recipes" / "no-robots.yaml", check_source=False).source.dataset == "HuggingFaceH4/no_robots"
