"""The DVC pipeline: dvc.yaml agrees with the builders, and `dvc repro` re-runs only what changed."""

from __future__ import annotations

import os
import re
import shutil
import sys

import yaml

from builders import meta_eval
from builders.stages import STAGES
from builders.tables import TABLES
from conftest import ROOT, dvc_repo, run, tiny_recipe, write_recipe

DUEL = """\
name: duel
source: {path: sources/capybara-demo.jsonl, prompt_column: prompt, sample: 3}
models:
  judge: {provider: fake, model: auto}
generation: {workflow: import, answers: [{column: responses.gemma-2-9b-it, model: gemma}]}
judge:
  panel: {models: [judge]}
export: {}
compare:
  workflows:
    gemma: {workflow: import, answers: [{column: responses.gemma-2-9b-it, model: gemma}]}
  baselines:
    gpt-4o: {workflow: import, answers: [{column: responses.gpt-4o, model: gpt-4o}]}
  resamples: 200
"""

BENCH = """\
name: bench
source: {benchmark: pandalm-eval, sample: 4}
models:
  judge: {provider: fake, model: auto}
generation: {workflow: import}
judge:
  panel: {models: [judge]}
export: {}
"""


def test_dvc_yaml_matches_each_builders_reads_and_writes():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert set(stages) == {*STAGES, "meta-eval", "report"}
    builders = {**STAGES, "meta-eval": meta_eval}
    for name, module in builders.items():
        lists = {"meta-eval": "${benchmarks}", "picks": "${comparisons}", "matches": "${comparisons}",
                 "win_rates": "${comparisons}"}
        assert stages[name]["foreach"] == lists.get(name, "${recipes}")
        do = stages[name]["do"]
        command = "fellowship meta-eval ${item}" if name == "meta-eval" else f"fellowship build ${{item}} --stage {name}"
        assert do["cmd"] == command
        outs = {str(TABLES[t].path("data/${item}")) for t in module.WRITES}
        assert outs <= set(do["outs"])
        data_deps = {d for d in do["deps"] if d.startswith("data/${item}")}
        assert data_deps == {str(TABLES[t].path("data/${item}")) for t in module.READS}
        assert f"builders/{module.__name__.rsplit('.', 1)[1]}.py" in do["deps"]
        (params,) = do["params"]
        assert list(params) == ["recipes/${item}.yaml"]
    # every export waits for (and re-runs after) the judges measured by the benchmark recipes
    assert "data/_gates/${item}.json" in stages["meta-eval"]["do"]["outs"]
    for name in ("dpo", "kto", "dpo_feedback", "kto_feedback"):
        assert "data/_gates" in stages[name]["do"]["deps"]
    # the report reads every table a recipe has, and waits for what benchmarks and comparisons measured
    report = stages["report"]["do"]
    assert stages["report"]["foreach"] == "${recipes}" and report["cmd"] == "fellowship report ${item}"
    from builders.report import ALWAYS

    assert {d for d in report["deps"] if d.startswith("data/${item}")} == {str(TABLES[t].path("data/${item}")) for t in ALWAYS}
    assert {"data/_gates", "data/_win_rates", "builders/report"} <= set(report["deps"])
    assert "metrics/families.py" in report["deps"]  # the family checks it shows
    assert "data/_win_rates/${item}.json" in stages["win_rates"]["do"]["outs"]


def _run(cmd, cwd, env):
    result = run(cmd, cwd, env)
    return result.stdout + result.stderr


def test_repro_skips_unchanged_stages_and_export_edits_rerun_only_exports(project, tmp_path):
    repo = project
    recipe = tiny_recipe(project)
    write_recipe(project, "bench", BENCH)
    write_recipe(project, "duel", DUEL)
    env = dvc_repo(repo, tmp_path, ["tiny", "bench", "duel"], ["bench"], ["duel"])

    first = _run(["dvc", "repro"], repo, env)
    ran = re.findall(r"Running stage '(\w+)@tiny'", first)
    assert ran == [s for s in STAGES if s not in ("picks", "matches", "win_rates")] + ["report"]
    assert (repo / "data" / "tiny" / "dpo.parquet").exists()
    assert re.findall(r"Running stage '(\w+)@duel'", first)[-4:] == ["picks", "matches", "win_rates", "report"]
    for name in ("tiny", "bench", "duel"):
        assert (repo / "data" / name / "report.html").stat().st_size > 100_000
    # the benchmark recipe is measured before any export, which may be gated on it
    order = re.findall(r"Running stage '([\w-]+)@(\w+)'", first)
    assert order.index(("meta-eval", "bench")) < order.index(("dpo", "tiny"))
    shown = _run(["dvc", "metrics", "show", "--json"], repo, env)
    assert '"kappa"' in shown and "data/bench/metrics.json" in shown
    assert "data/duel/metrics.json" in shown and '"win_rate"' in shown
    plots = _run(["dvc", "plots", "show", "--json"], repo, env)
    assert "data/bench/plots/kappa.json" in plots and "kappa_low" in plots

    second = _run(["dvc", "repro"], repo, env)
    assert "Running stage" not in second

    recipe.write_text(recipe.read_text().replace("min_margin: 0", "min_margin: 3"))
    third = _run(["dvc", "repro"], repo, env)
    assert re.findall(r"Running stage '(\w+)@tiny'", third) == ["dpo", "kto", "dpo_feedback", "kto_feedback", "report"]
    assert " calls" not in third  # only LLM stages report calls; none ran

    # the jury's settings belong to the pure verdicts stage: no judge is called again
    recipe.write_text(recipe.read_text().replace("tie_policy: later_iteration", "tie_policy: earlier_iteration\n  rule: mean"))
    fourth = _run(["dvc", "repro"], repo, env)
    ran = re.findall(r"Running stage '(\w+)@tiny'", fourth)
    assert ran[0] == "verdicts" and not {"items", "candidates", "scores"} & set(ran)
    assert " calls" not in fourth


def test_outputs_push_to_and_pull_from_the_configured_local_remote(project, tmp_path):
    tiny_recipe(project)
    env = dvc_repo(project, tmp_path, ["tiny"])
    _run(["dvc", "repro"], project, env)
    assert "local" in _run(["dvc", "remote", "list"], project, env)
    _run(["dvc", "push"], project, env)
    assert any((project / ".dvc-remote").rglob("*")), "nothing pushed"
    dpo = project / "data" / "tiny" / "dpo.parquet"
    before = dpo.read_bytes()
    for out in (project / "data" / "tiny").glob("*.parquet"):
        out.unlink()
    shutil.rmtree(project / ".dvc" / "cache")
    _run(["dvc", "pull"], project, env)
    assert dpo.read_bytes() == before
    assert "Data and pipelines are up to date" in _run(["dvc", "status"], project, env)


def test_each_stages_code_deps_are_its_import_closure():
    from builders import dvc_deps

    assert dvc_deps.problems() == [], "\n".join(dvc_deps.problems())
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name in ("scores", "picks", "matches", "debates"):  # judging.py imports the parser
        assert "builders/judgment_parser.py" in stages[name]["do"]["deps"], name


def _code_copy(tmp_path):
    root = tmp_path / "checkout"
    for folder in ("builders", "metrics"):
        shutil.copytree(ROOT / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "dvc.yaml", root / "dvc.yaml")
    return root


def test_a_module_missing_from_dvc_yaml_is_named_with_its_stage(tmp_path):
    from builders import dvc_deps

    root = _code_copy(tmp_path)
    dvc = root / "dvc.yaml"
    before, debates = dvc.read_text().split("\n  debates:\n", 1)
    dvc.write_text(before + "\n  debates:\n" + debates.replace("        - builders/judgment_parser.py\n", "", 1))
    # a module a merge brings in, imported by the judging code
    (root / "builders" / "verdict_audit.py").write_text('"""Audits of verdicts."""\n')
    judging = root / "builders" / "judging.py"
    judging.write_text(judging.read_text().replace("from builders.judgment_parser import",
                                                   "import builders.verdict_audit  # noqa: F401\nfrom builders.judgment_parser import", 1))
    found = dvc_deps.problems(root)
    assert "dvc.yaml: stage debates: deps miss builders/judgment_parser.py, builders/verdict_audit.py, which its code imports" in found
    assert "dvc.yaml: stage scores: deps miss builders/verdict_audit.py, which its code imports" in found
    assert found[-1] == "run `python -m builders.dvc_deps --write` to derive them again"
    assert dvc_deps.write(root) and dvc_deps.problems(root) == []
    assert not dvc_deps.write(root)  # derived again: nothing changes
    assert yaml.safe_load(dvc.read_text())["stages"]["debates"]["do"]["outs"] == ["data/${item}/debates.parquet"]
    check = run([sys.executable, "-m", "builders.dvc_deps", "--check"], ROOT, {**os.environ, "PYTHONPATH": str(ROOT)})
    assert check.returncode == 0


def test_editing_the_judgment_parser_makes_scores_stale(project, tmp_path):
    recipe = tiny_recipe(project)
    recipe.write_text(recipe.read_text().replace("export:\n", "export:\n  hub_repo: someone/tiny\n"))
    env = dvc_repo(project, tmp_path, ["tiny"])
    _run(["dvc", "repro"], project, env)
    assert "up to date" in _run(["dvc", "status"], project, env)
    parser = project / "builders" / "judgment_parser.py"
    parser.write_text(parser.read_text() + "\n# a change to how verdicts are read\n")
    status = _run(["dvc", "status"], project, env)
    assert "scores@tiny" in status and "debates@tiny" in status
    refused = run(["fellowship", "publish", "tiny", "--dry-run"], project, env, check=False)
    assert refused.returncode == 1 and "outputs are stale" in refused.stderr and "scores@tiny" in refused.stderr
    second = _run(["dvc", "repro"], project, env)
    assert "Running stage 'scores@tiny'" in second
