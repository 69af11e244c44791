"""Shared fixtures: every test gets its own cache and data folders, no API keys and no retry waits."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
KEY_VARIABLES = ("OPENAI_API_KEY", "TOGETHER_API_KEY", "HF_TOKEN")


def pytest_addoption(parser):
    parser.addoption("--update-golden", action="store_true", help="rewrite tests/golden/ from the current output")


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("FELLOWSHIP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("FELLOWSHIP_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FELLOWSHIP_RETRY_BASE_S", "0")
    # `fellowship` run as a command imports this checkout, wherever the package is installed from
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    # the datasets library caches what it loads by folder name: a test must never read another's
    import datasets.config

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-datasets")
    for variable in KEY_VARIABLES:
        monkeypatch.delenv(variable, raising=False)


@pytest.fixture
def project(tmp_path) -> Path:
    """A copy of the recipes folder (prompts, sources, recipes) to edit freely."""
    dest = tmp_path / "project"
    shutil.copytree(ROOT / "recipes", dest / "recipes")
    return dest


def write_recipe(project: Path, name: str, text: str) -> Path:
    path = project / "recipes" / f"{name}.yaml"
    path.write_text(text)
    return path


TINY = """\
schema_version: 1
name: {name}
source:
  path: sources/capybara-demo.jsonl
  prompt_column: prompt
  id_column: prompt_id
  sample: 4
  seed: 1
models:
  writer: {{provider: {provider}, model: {model}{extra}}}
  reviewer: {{provider: {provider}, model: {model}{extra}}}
  judge: {{provider: {provider}, model: {model}{extra}}}
generation:
  workflow: feedback
  generator: writer
  reviewers: [reviewer]
  iterations: 3
judge:
  panel:
    models: [judge]
  tie_policy: later_iteration
export:
  min_margin: 0
"""


def tiny_recipe(project: Path, name: str = "tiny", *, provider: str = "fake", model: str = "auto", extra: str = "") -> Path:
    """A 4-prompt feedback-loop recipe in `project`, every role on one provider/model."""
    return write_recipe(project, name, TINY.format(name=name, provider=provider, model=model, extra=extra))


def fellowship(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """Run the installed `fellowship` command; with `check`, fail the test on a non-zero exit."""
    result = subprocess.run(["fellowship", *args], cwd=cwd, capture_output=True, text=True)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def assert_one_line(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """A command that failed as promised: exit status 1 and one line on stderr (after the lines of
    the stages that finished), with no traceback, holding every fragment. Returns the line."""
    assert result.returncode == 1, result.stdout + result.stderr
    lines = [ln for ln in result.stderr.strip().splitlines() if not re.match(r"\S+: \w+: wrote ", ln)]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def run(cmd: list[str], cwd: Path, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def dvc_repo(project: Path, tmp_path: Path, recipes: list[str], benchmarks: list[str] = (),
             comparisons: list[str] = ()) -> dict:
    """Make `project` a git + DVC repository with this checkout's pipeline (code, dvc.yaml, plot
    templates, DVC remote config) over `recipes`; returns the environment to run it in."""
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy(ROOT / name, project / name)
    for folder in ("builders", "metrics"):
        shutil.copytree(ROOT / folder, project / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for shared in ("_gates", "_win_rates"):  # folders other recipes' stages read, kept in git
        (project / "data" / shared).mkdir(parents=True, exist_ok=True)
        (project / "data" / shared / "README.md").write_text(f"{shared}\n")
    listed = lambda names: "".join(f"  - {n}\n" for n in names) or "  []\n"
    params = f"recipes:\n{listed(recipes)}benchmarks:\n{listed(benchmarks)}comparisons:\n{listed(comparisons)}"
    (project / "params.yaml").write_text(params.replace(":\n  []", ": []"))
    env = {**os.environ, "FELLOWSHIP_DATA_DIR": "data", "FELLOWSHIP_CACHE_DIR": str(tmp_path / "cache")}
    run(["git", "init", "-q"], project, env)
    run(["dvc", "init", "-q"], project, env)
    shutil.copytree(ROOT / ".dvc" / "plots", project / ".dvc" / "plots")
    shutil.copy(ROOT / ".dvc" / "config", project / ".dvc" / "config")
    return env
