"""Publishing: the folder that would be uploaded loads back with `datasets`, the Hub client is called
as the real one expects, stale or gated outputs are refused, and no token reaches any file."""

from __future__ import annotations

import shutil
from unittest.mock import create_autospec

import datasets
import polars as pl
import pytest
import yaml
from huggingface_hub import HfApi

from builders import publish
from builders.export_checks import dpo_problems, kto_balance, kto_problems
from builders.loader import load_recipe
from builders.tables import TABLES, read_table
from builders.trl_format import trl_frame
from conftest import ROOT, dvc_repo, run, tiny_recipe
from hub_server import FakeHub

TOKEN = "hf_sentinelTOKEN0123456789abcdef"


@pytest.fixture(scope="module")
def built_once(tmp_path_factory):
    """A DVC project whose `tiny` recipe (with a hub_repo) is built and current (built once)."""
    root = tmp_path_factory.mktemp("publish")
    project = root / "project"
    shutil.copytree(ROOT / "recipes", project / "recipes")
    recipe = tiny_recipe(project)
    recipe.write_text(recipe.read_text().replace("export:\n", "export:\n  hub_repo: someone/tiny-prefs\n"))
    env = dvc_repo(project, root, ["tiny"])
    env["HF_HOME"] = str(root / "hf-home")  # no cached login from this machine
    env.pop("HF_TOKEN", None)
    run(["dvc", "repro"], project, env)
    return project, env


@pytest.fixture
def built(built_once, tmp_path):
    """A fresh copy of that project, free to edit."""
    project, env = built_once
    copy = tmp_path / "project"
    shutil.copytree(project, copy, symlinks=True)
    return copy, env


def _publish(project, env, *args, check=True):
    return run(["fellowship", "publish", "tiny", *args], project, env, check=check)


def _rows(df: pl.DataFrame, key: str) -> list[dict]:
    return sorted(df.to_dicts(), key=lambda r: r[key])


def test_the_folder_to_upload_loads_back_into_identical_rows(built):
    project, env = built
    result = _publish(project, env, "--dry-run")
    assert "would upload" in result.stdout and "someone/tiny-prefs (private)" in result.stdout
    kto = read_table(TABLES["kto"], project / "data" / "tiny")
    assert f"kto: {int(kto['label'].sum())} desirable, {int((~kto['label']).sum())} undesirable" in result.stdout
    folder = project / "data" / "tiny" / "hub"
    for name, key in (("dpo", "pair_id"), ("kto", "example_id"), ("dpo_feedback", "pair_id"), ("kto_feedback", "example_id")):
        loaded = datasets.load_dataset(str(folder), name, split="train").to_polars()
        table = read_table(TABLES[name], project / "data" / "tiny")
        assert loaded.height == table.height > 0
        assert _rows(loaded, key) == _rows(trl_frame(name, table, "conversational"), key)
    dpo = datasets.load_dataset(str(folder), "dpo", split="train")
    assert {"prompt", "chosen", "rejected", "margin"} <= set(dpo.column_names)
    assert {"chosen_generator", "rejected_iteration", "judge", "template_hash", "recipe_hash"} <= set(dpo.column_names)


def is_conversational(example: dict) -> bool:
    """TRL's `trl.data_utils.is_conversational` (TRL is not a dependency): the first of its keys
    found holds a list whose first element is a dict with `role` and `content`."""
    keys = [k for k in ("prompt", "chosen", "rejected", "completion", "messages") if k in example]
    first = example[keys[0]] if keys else None
    return isinstance(first, list) and bool(first) and isinstance(first[0], dict) and {"role", "content"} <= set(first[0])


def test_conversational_exports_load_with_datasets_in_trls_shapes(built):
    project, env = built
    _publish(project, env, "--dry-run")
    folder = project / "data" / "tiny" / "hub"
    dpo = datasets.load_dataset(str(folder), "dpo", split="train")
    kto = datasets.load_dataset(str(folder), "kto", split="train")
    for row in dpo:
        assert is_conversational(row)
        assert [m["role"] for m in row["prompt"]] == ["user"]
        assert [m["role"] for m in row["chosen"]] == [m["role"] for m in row["rejected"]] == ["assistant"]
        assert row["chosen"][0]["content"] and row["chosen"] != row["rejected"]
    for row in kto:
        assert is_conversational(row) and [m["role"] for m in row["completion"]] == ["assistant"]
        assert isinstance(row["label"], bool)
    assert [r["position"] for r in kto] == list(range(len(kto)))  # published in the order TRL reads them
    readme = (folder / "README.md").read_text()
    assert "TRL's conversational format" in readme and "`export.format: conversational`" in readme
    assert "`export.max_length` = 1024 tokens" in readme and "an estimate, not a tokenizer's count" in readme


def test_the_standard_format_publishes_text(built):
    project, env = built
    recipe = project / "recipes" / "tiny.yaml"
    recipe.write_text(recipe.read_text().replace("export:\n", "export:\n  format: standard\n  max_length: 20\n"))
    run(["dvc", "repro"], project, env)
    _publish(project, env, "--dry-run")
    folder = project / "data" / "tiny" / "hub"
    dpo = datasets.load_dataset(str(folder), "dpo", split="train")
    assert not is_conversational(dpo[0]) and isinstance(dpo[0]["prompt"], str)
    readme = (folder / "README.md").read_text()
    assert f"- Length: {dpo.num_rows} of {dpo.num_rows} pairs" in readme and "`export.max_length` = 20 tokens" in readme


def test_the_card_has_hub_metadata_and_tells_how_the_data_was_made(built):
    project, env = built
    _publish(project, env, "--dry-run")
    text = (project / "data" / "tiny" / "hub" / "README.md").read_text()
    _, header, body = text.split("---\n", 2)
    meta = yaml.safe_load(header)
    assert [c["config_name"] for c in meta["configs"]] == ["dpo", "kto", "dpo_feedback", "kto_feedback"]
    assert meta["configs"][0]["data_files"] == [{"split": "train", "path": "dpo/train-*.parquet"}]
    assert meta["license"] == "other" and meta["size_categories"] == ["n<1K"]
    assert "text-generation" in meta["task_categories"] and "dpo" in meta["tags"]
    dpo = read_table(TABLES["dpo"], project / "data" / "tiny")
    kto = read_table(TABLES["kto"], project / "data" / "tiny")
    assert f"`dpo`: {dpo.height} pairs" in body and f"`kto`: {kto.height} examples" in body
    assert "| writer | fake/auto | generator |" in body and "| judge | fake/auto | judge |" in body
    assert "Feedback Loop" in body and 'load_dataset("someone/tiny-prefs", "kto", split="train")' in body
    assert "DPOTrainer" in body and "Not measured against human labels" in body


def test_upload_creates_a_private_repo_and_branch_then_uploads_the_folder(built):
    project, env = built
    _publish(project, env, "--dry-run")
    folder = project / "data" / "tiny" / "hub"
    api = create_autospec(HfApi, instance=True)  # fails on any argument the real client does not take
    publish.upload(folder, "someone/tiny-prefs", private=True, revision="v1", message="first cut", api=api)
    api.create_repo.assert_called_once_with("someone/tiny-prefs", repo_type="dataset", private=True, exist_ok=True)
    api.create_branch.assert_called_once_with("someone/tiny-prefs", repo_type="dataset", branch="v1", exist_ok=True)
    api.upload_folder.assert_called_once_with(repo_id="someone/tiny-prefs", repo_type="dataset",
                                              folder_path=str(folder), revision="v1", commit_message="first cut")


@pytest.fixture
def hub():
    server = FakeHub()
    yield server
    server.close()


def test_publish_uploads_both_configs_to_a_hub_stand_in(built, hub, tmp_path):
    """The real client, over HTTP, against a stand-in for the Hub API: what lands there loads back."""
    project, env = built
    env = {**env, "HF_ENDPOINT": hub.url, "HF_TOKEN": TOKEN}
    result = _publish(project, env, "--revision", "v1", "--message", "First cut")
    assert "published to someone/tiny-prefs (private)" in result.stdout
    assert hub.repos["someone/tiny-prefs"]["private"] is True
    (commit,) = hub.commits
    assert commit["revision"] == "v1" and commit["summary"] == "First cut"
    assert set(commit["files"]) == {"README.md", *(f"{n}/train-00000-of-00001.parquet" for n in publish.EXPORTS)}
    assert set(hub.authorizations) == {f"Bearer {TOKEN}"}  # the token travels in the header only
    clone = hub.checkout("someone/tiny-prefs", "v1", tmp_path / "clone")
    for name, key in (("dpo", "pair_id"), ("kto", "example_id")):
        loaded = datasets.load_dataset(str(clone), name, split="train").to_polars()
        table = read_table(TABLES[name], project / "data" / "tiny")
        assert _rows(loaded, key) == _rows(trl_frame(name, table, "conversational"), key)
    assert TOKEN not in result.stdout + result.stderr


def test_publishing_without_a_token_names_the_fix(built):
    project, env = built
    result = _publish(project, env, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == "publish: no Hugging Face token: set HF_TOKEN or run `hf auth login`"


def test_stale_outputs_are_refused(built):
    project, env = built
    recipe = project / "recipes" / "tiny.yaml"
    recipe.write_text(recipe.read_text().replace("min_margin: 0", "min_margin: 2"))
    result = _publish(project, env, "--dry-run", check=False)
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    assert "outputs are stale against the recipe or code (dpo@tiny, dpo_feedback@tiny, kto@tiny, kto_feedback@tiny); run `dvc repro` first" in result.stderr
    assert not (project / "data" / "tiny" / "hub").exists()


def test_a_recipe_outside_the_pipeline_is_refused(built):
    project, env = built
    tiny_recipe(project, "loose")
    run(["fellowship", "build", "loose", "--no-progress"], project, env)
    result = run(["fellowship", "publish", "loose", "--repo", "me/x", "--dry-run"], project, env, check=False)
    assert result.returncode == 1 and "list 'loose' under `recipes` in params.yaml" in result.stderr


def test_a_judge_failing_its_gate_is_refused(built):
    project, env = built
    bench = project / "recipes" / "bench.yaml"
    bench.write_text("name: bench\nsource: {benchmark: fair-eval, sample: 4}\nmodels:\n  judge: {provider: fake, model: auto}\n"
                     "generation: {workflow: import}\njudge:\n  panel: {models: [judge]}\nexport: {}\n")
    recipe = project / "recipes" / "tiny.yaml"
    recipe.write_text(recipe.read_text().replace("export:\n", "export:\n  gate: {benchmark: bench, min_kappa: 0.2}\n"))
    result = _publish(project, env, "--dry-run", check=False)
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    assert "export.gate: no judge has been measured on benchmark recipe 'bench'" in result.stderr


def test_no_token_reaches_any_written_file(built, hub):
    project, env = built
    env = {**env, "HF_TOKEN": TOKEN, "HF_ENDPOINT": hub.url}
    _publish(project, env)
    assert hub.commits and not [f for c in hub.commits for f, data in c["files"].items() if TOKEN.encode() in data]
    written = [p for p in project.rglob("*") if p.is_file() and ".git" not in p.parts]
    assert written and not [p for p in written if TOKEN.encode() in p.read_bytes()]


def test_missing_repo_id_is_one_line(project, tmp_path):
    tiny_recipe(project)
    result = run(["fellowship", "publish", "tiny"], project, check=False)
    assert result.returncode == 1 and "export.hub_repo: name the Hub dataset (or pass --repo)" in result.stderr


def test_a_dry_run_without_a_hub_id_previews_under_a_placeholder(built):
    project, env = built
    recipe = project / "recipes" / "tiny.yaml"
    recipe.write_text(recipe.read_text().replace("  hub_repo: someone/tiny-prefs\n", ""))
    run(["dvc", "repro"], project, env)  # the recipe changed, so its stages are stale until rebuilt
    result = _publish(project, env, "--dry-run")
    assert "would upload" in result.stdout and "your-hf-user/tiny (private)" in result.stdout
    assert "your-hf-user/tiny is a placeholder; set export.hub_repo or pass --repo to publish" in result.stdout
    card = (project / "data" / "tiny" / "hub" / "README.md").read_text()
    assert 'load_dataset("your-hf-user/tiny", "dpo", split="train")' in card
    pushed = _publish(project, {**env, "HF_TOKEN": TOKEN}, check=False)
    assert pushed.returncode == 1 and "export.hub_repo: name the Hub dataset (or pass --repo)" in pushed.stderr


def _dpo(**overrides):
    row = {"prompt": "Name a colour.", "chosen": "Blue.", "rejected": "Seven."}
    return pl.DataFrame([{**row, **overrides}])


@pytest.mark.parametrize("row, problem", [
    ({}, None),
    ({"rejected": "Blue."}, "dpo: row 0: `chosen` and `rejected` are the same text (1 rows in all)"),
    ({"chosen": "Name a colour. Blue."}, "dpo: row 0: `chosen` starts with the prompt; TRL adds the prompt itself"),
    ({"rejected": "  "}, "dpo: row 0 has an empty `rejected` (1 rows in all)"),
])
def test_dpo_contract(row, problem):
    problems = dpo_problems(_dpo(**row))
    assert (problems[0].startswith(problem) if problem else problems == [])


def _conversation(**overrides):
    return trl_frame("dpo", _dpo(), "conversational").with_columns(
        pl.Series(k, [v], dtype=pl.List(pl.Struct({"role": pl.String, "content": pl.String}))) for k, v in overrides.items())


@pytest.mark.parametrize("row, problem", [
    ({}, None),
    ({"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}]}, None),
    ({"prompt": []}, "dpo: row 0 has an empty `prompt` (no messages)"),
    ({"prompt": [{"role": "assistant", "content": "Name a colour."}]}, "dpo: row 0 `prompt` ends with a assistant turn"),
    ({"prompt": [{"role": "human", "content": "Name a colour."}]}, "dpo: row 0 `prompt` message 0 has role 'human'"),
    ({"chosen": [{"role": "assistant", "content": " "}]}, "dpo: row 0 `chosen` message 0 has an empty content"),
    ({"rejected": [{"role": "user", "content": "Seven."}]}, "dpo: row 0 `rejected` must be one assistant turn"),
    ({"rejected": [{"role": "assistant", "content": "Blue."}]}, "dpo: row 0: `chosen` and `rejected` are the same text"),
])
def test_conversational_dpo_contract(row, problem):
    problems = dpo_problems(_conversation(**row))
    assert (problems[0].startswith(problem) if problem else problems == []), problems


def test_a_frame_mixing_formats_is_refused():
    mixed = _dpo().with_columns(trl_frame("dpo", _dpo(), "conversational")["prompt"])
    assert dpo_problems(mixed)[0].startswith("dpo: columns `prompt`, `chosen`, `rejected` mix TRL's conversational")


def test_kto_interleaving_alternates_labels_and_prompts_under_a_seed():
    from builders.preferences import interleave

    rows = [{"example_id": f"{item}{k}", "item_id": item, "label": k == 0} for item in "abcde" for k in range(3)]
    out = interleave(rows, seed=0)
    assert [r["position"] for r in out] == list(range(15))
    assert sorted(r["example_id"] for r in out) == sorted(r["example_id"] for r in rows)
    labels = [r["label"] for r in out]
    assert labels[:10] == [True, False] * 5 and not any(labels[10:])  # alternate while both labels last
    assert all(a["item_id"] != b["item_id"] for a, b in zip(out, out[1:]))  # neighbours answer different prompts
    assert interleave(rows, seed=0) == out and interleave(list(reversed(rows)), seed=0) == out
    assert [r["example_id"] for r in interleave(rows, seed=1)] != [r["example_id"] for r in out]


def test_kto_rows_streamed_are_interleaved_a_window_at_a_time():
    """A stream of KTO rows (in the items' order) is interleaved a window at a time: within a window
    exactly as `interleave` orders a whole table, and positions count over the whole stream."""
    from builders.preferences import interleave, interleaved

    rows = [{"example_id": f"{item}{k}", "item_id": item, "label": k == 0} for item in "abcdefgh" for k in range(3)]
    assert list(interleaved(rows, seed=0, window=len(rows))) == interleave(rows, seed=0)
    out = list(interleaved(rows, seed=0, window=12))
    assert [r["position"] for r in out] == list(range(24))
    for window in (out[:12], out[12:]):  # 4 prompts each: their desirable and undesirable rows alternate
        labels = [r["label"] for r in window]
        assert labels[:8] == [True, False] * 4 and not any(labels[8:])
        assert {r["item_id"] for r in window} in ({*"abcd"}, {*"efgh"})
    assert list(interleaved(iter(rows), seed=0, window=12)) == out


def test_kto_table_is_written_in_its_interleaved_order(project):
    from builders.stages import STAGES, run_stage

    recipe = load_recipe(tiny_recipe(project))
    for stage in ("items", "candidates", "labels", "debates", "scores", "verdicts", "kto"):
        run_stage(recipe, stage, progress=False)
    kto = read_table(TABLES["kto"], project.parent / "data" / "tiny")
    assert kto["position"].to_list() == list(range(kto.height))
    labels = kto["label"].to_list()
    n = 2 * min(sum(labels), labels.count(False))
    assert labels[:n] == [True, False] * (n // 2)


def test_kto_contract_and_balance():
    kto = pl.DataFrame({"prompt": ["p", "p", "p"], "completion": ["a", "b", "c"], "label": [True, False, False]})
    assert kto_problems(kto) == []
    assert kto_balance(kto) == {"desirable": 1, "undesirable": 2, "ratio": 0.5, "undesirable_weight": 0.5}
    bad = kto.with_columns(pl.col("label").cast(pl.Int64))
    assert kto_problems(bad) == ["kto: column `label` must be boolean (TRL's column contract)"]
    assert kto_balance(kto.filter("label"))["undesirable_weight"] is None


def test_lineage_columns_name_each_sides_writer(project):
    from builders.stages import STAGES, run_stage

    recipe = load_recipe(tiny_recipe(project))
    for stage in STAGES:
        run_stage(recipe, stage, progress=False)
    data = project.parent / "data" / "tiny"
    dpo = read_table(TABLES["dpo"], data)
    candidates = read_table(TABLES["candidates"], data)
    joined = dpo.join(candidates, left_on="chosen_id", right_on="candidate_id")
    assert (joined["chosen_iteration"] == joined["iteration"]).all()
    assert (joined["chosen_generator"] == "writer").all() and joined["chosen_reviewers"].to_list()[0] == ["reviewer"]
    assert set(dpo["judge"]) == {"judge (combined, scale 10, orders rotations)"} and dpo["judge_models"].to_list()[0] == ["fake/auto"]
    assert dpo["recipe_hash"].n_unique() == dpo["template_hash"].n_unique() == 1
    kto = read_table(TABLES["kto"], data)
    assert set(kto["recipe_hash"]) == set(dpo["recipe_hash"])
