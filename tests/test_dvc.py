"""The DVC pipeline: dvc.yaml agrees with the builders, and `dvc repro` re-runs only what changed."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import yaml

from builders.stages import STAGES
from builders.tables import TABLES
from conftest import ROOT, tiny_recipe


def test_dvc_yaml_matches_each_builders_reads_and_writes():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert list(stages) == list(STAGES)
    for name, module in STAGES.items():
        do = stages[name]["do"]
        assert do["cmd"] == f"fellowship build ${{item}} --stage {name}"
        outs = {str(TABLES[t].path("data/${item}")) for t in module.WRITES}
        assert set(do["outs"]) == outs
        data_deps = {d for d in do["deps"] if d.startswith("data/")}
        assert data_deps == {str(TABLES[t].path("data/${item}")) for t in module.READS}
        assert f"builders/{name}.py" in do["deps"]
        (params,) = do["params"]
        assert list(params) == ["recipes/${item}.yaml"]


def _run(cmd, cwd, env):
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def test_repro_skips_unchanged_stages_and_export_edits_rerun_only_exports(project, tmp_path):
    repo = project
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy(ROOT / name, repo / name)
    shutil.copytree(ROOT / "builders", repo / "builders", ignore=shutil.ignore_patterns("__pycache__"))
    (repo / "params.yaml").write_text("recipes:\n  - tiny\n")
    recipe = tiny_recipe(project)
    env = {**os.environ, "FELLOWSHIP_DATA_DIR": "data", "FELLOWSHIP_CACHE_DIR": str(tmp_path / "cache")}
    _run(["git", "init", "-q"], repo, env)
    _run(["dvc", "init", "-q"], repo, env)

    first = _run(["dvc", "repro"], repo, env)
    ran = re.findall(r"Running stage '(\w+)@tiny'", first)
    assert ran == list(STAGES)
    assert (repo / "data" / "tiny" / "dpo.parquet").exists()

    second = _run(["dvc", "repro"], repo, env)
    assert "Running stage" not in second

    recipe.write_text(recipe.read_text().replace("min_margin: 0", "min_margin: 3"))
    third = _run(["dvc", "repro"], repo, env)
    assert re.findall(r"Running stage '(\w+)@tiny'", third) == ["dpo", "kto"]
    assert " calls" not in third  # only LLM stages report calls; none ran

    # the jury's settings belong to the pure verdicts stage: no judge is called again
    recipe.write_text(recipe.read_text().replace("tie_policy: later_iteration", "tie_policy: earlier_iteration\n  rule: mean"))
    fourth = _run(["dvc", "repro"], repo, env)
    ran = re.findall(r"Running stage '(\w+)@tiny'", fourth)
    assert ran[0] == "verdicts" and not {"items", "candidates", "scores"} & set(ran)
    assert " calls" not in fourth
