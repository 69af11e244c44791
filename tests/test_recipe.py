"""Every kind of bad recipe input gives one line per problem naming the file and field, exit status 1,
no traceback, and writes nothing."""

from __future__ import annotations

import subprocess

import pytest

from builders.errors import RecipeError
from builders.recipe import load_recipe
from conftest import ROOT, tiny_recipe, write_recipe


def run_cli(*args, cwd):
    return subprocess.run(["fellowship", *args], cwd=cwd, capture_output=True, text=True)


def assert_one_line_error(project, recipe_path, *fragments, command="build"):
    result = run_cli(command, str(recipe_path), cwd=project)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert str(recipe_path) in lines[0] or recipe_path.name in lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    data_root = project.parent / "data"
    assert not data_root.exists() or not any(data_root.rglob("*.parquet"))
    return lines[0]


def replace(path, old, new):
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def test_every_shipped_recipe_validates():
    for path in sorted((ROOT / "recipes").glob("*.yaml")):
        assert load_recipe(path).name == path.stem


def test_malformed_yaml(project):
    path = write_recipe(project, "bad", "name: bad\nsource: [unclosed\n")
    assert_one_line_error(project, path, "malformed YAML", "line")


def test_unknown_key(project):
    path = tiny_recipe(project)
    replace(path, "  iterations: 3", "  iterations: 3\n  iteratoins: 2")
    assert_one_line_error(project, path, "generation.iteratoins: unknown key")


def test_wrong_type(project):
    path = tiny_recipe(project)
    replace(path, "iterations: 3", "iterations: three")
    assert_one_line_error(project, path, "generation.iterations", "integer")


def test_undefined_model(project):
    path = tiny_recipe(project)
    replace(path, "models: [judge]", "models: [gtp-4o]")
    line = assert_one_line_error(project, path, "judge.panel.models[0]: unknown model 'gtp-4o'", "known: writer, reviewer, judge")
    assert line.startswith(str(path))


def test_unknown_provider(project):
    path = tiny_recipe(project)
    replace(path, "judge: {provider: fake", "judge: {provider: opena")
    assert_one_line_error(project, path, "models.judge.provider: unknown provider 'opena'")


def test_missing_environment_key_names_the_variable(project):
    path = tiny_recipe(project)
    replace(path, "judge: {provider: fake, model: auto}", "judge: {provider: together, model: meta-llama/Llama-3-8b}")
    assert_one_line_error(project, path, "models.judge", "TOGETHER_API_KEY")


def test_missing_source_file(project):
    path = tiny_recipe(project)
    replace(path, "sources/capybara-demo.jsonl", "sources/nope.jsonl")
    assert_one_line_error(project, path, "source.path", "nope.jsonl", "does not exist")


def test_missing_source_column(project):
    path = tiny_recipe(project)
    replace(path, "prompt_column: prompt", "prompt_column: question")
    assert_one_line_error(project, path, "source.prompt_column: column 'question' not in", "columns: prompt_id, prompt")


def test_empty_source(project):
    (project / "recipes" / "sources" / "empty.csv").write_text("prompt_id,prompt\n")
    path = tiny_recipe(project)
    replace(path, "sources/capybara-demo.jsonl", "sources/empty.csv")
    assert_one_line_error(project, path, "source:", "has no rows")


def test_template_with_unknown_placeholder(project):
    template = project / "recipes" / "prompts" / "judge" / "combined_user.txt"
    template.write_text("[User Question]\n{question}\n\n{answers}\n")
    path = tiny_recipe(project)
    assert_one_line_error(project, path, "judge.panel.user_prompt", "unknown placeholder {answers}", "known: question, responses")


def test_prompt_row_without_text_names_the_row(project):
    (project / "recipes" / "sources" / "holes.jsonl").write_text('{"prompt": "fine"}\n{"prompt": null}\n')
    path = tiny_recipe(project)
    replace(path, "sources/capybara-demo.jsonl", "sources/holes.jsonl")
    replace(path, "  id_column: prompt_id\n", "")
    line = assert_one_line_error(project, path, "source row 1", "no prompt text")
    assert "column 'prompt'" in line


def test_several_problems_are_all_reported(project):
    path = tiny_recipe(project)
    replace(path, "models: [judge]", "models: [nobody]")
    replace(path, "generator: writer", "generator: ghost")
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    lines = str(err.value).splitlines()
    assert len(lines) == 2
    assert any("generation.generator: unknown model 'ghost'" in line for line in lines)
    assert any("judge.panel.models[0]: unknown model 'nobody'" in line for line in lines)


def test_name_must_match_file(project):
    path = tiny_recipe(project)
    replace(path, "name: tiny", "name: other")
    assert_one_line_error(project, path, "name: 'other' must equal the file name 'tiny'", command="validate")


def test_feedback_workflow_needs_a_reviewer(project):
    path = tiny_recipe(project)
    replace(path, "  reviewers: [reviewer]\n", "")
    assert_one_line_error(project, path, "generation.reviewers: the feedback workflow needs at least one reviewer")


def test_identical_samples_are_refused(project):
    path = tiny_recipe(project)
    replace(path, "workflow: feedback", "workflow: single")
    replace(path, "  reviewers: [reviewer]\n", "")
    assert_one_line_error(project, path, "generation.iterations", "temperature 0 would be identical")


def test_duplicate_key_is_refused_with_its_line(project):
    path = tiny_recipe(project)
    replace(path, "  tie_policy: later_iteration", "  tie_policy: later_iteration\n  tie_policy: drop")
    assert_one_line_error(project, path, "duplicate key 'tie_policy'", "line")


def test_strings_are_not_quietly_numbers(project):
    path = tiny_recipe(project)
    replace(path, "iterations: 3", 'iterations: "3"')
    assert_one_line_error(project, path, "generation.iterations", "integer")


def test_unreadable_source_file(project):
    (project / "recipes" / "sources" / "broken.jsonl").write_text('{"prompt": "fine"}\n{"prompt": \n')
    path = tiny_recipe(project)
    replace(path, "sources/capybara-demo.jsonl", "sources/broken.jsonl")
    assert_one_line_error(project, path, "source.path: cannot read", "broken.jsonl", command="validate")


def test_unknown_fake_model_and_missing_local_file(project):
    path = tiny_recipe(project)
    replace(path, "writer: {provider: fake, model: auto}", "writer: {provider: fake, model: autoo}")
    replace(path, "judge: {provider: fake, model: auto}", "judge: {provider: local, model: /nope.gguf}")
    result = run_cli("validate", str(path), cwd=project)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert any("models.writer.model: unknown fake model 'autoo'" in line for line in lines)
    assert any("models.judge.model: local model file /nope.gguf does not exist" in line for line in lines)


def test_settings_that_can_never_make_a_pair(project):
    path = tiny_recipe(project)
    replace(path, "iterations: 3", "iterations: 2")
    replace(path, "  tie_policy: later_iteration", "  tie_policy: later_iteration\n  min_scored: 3")
    assert_one_line_error(project, path, "generation.iterations: 2 candidate(s) per prompt can never make a verdict")


def test_jury_settings_are_checked(project):
    path = tiny_recipe(project)
    replace(path, "models: [judge]", "models: [judge, writer]")
    assert_one_line_error(project, path, "judge.mode: `judge` takes one member, the panel has 2", command="validate")
    replace(path, "  tie_policy: later_iteration", "  tie_policy: later_iteration\n  mode: jury\n  members: [judge, reviewer]")
    assert_one_line_error(project, path, "judge.members[1]: 'reviewer' is not on the panel", command="validate")
    replace(path, "members: [judge, reviewer]", "members: [judge, writer]")
    replace(path, "mode: jury", "mode: debate")
    assert_one_line_error(project, path, "judge.mode: `debate` goes with judge.panel.debate", command="validate")


def test_budget_and_stage_options_are_checked(project):
    path = tiny_recipe(project)
    text = path.read_text()
    path.write_text(text + "budget: {usd: -1}\n")
    assert_one_line_error(project, path, "budget.usd: Input should be greater than 0", command="validate")
    path.write_text(text + "budget: {usd: 5, dollars: 5}\n")
    assert_one_line_error(project, path, "budget.dollars: unknown key", command="validate")
    path.write_text(text + "stages: {verdicts: {batch: true}}\n")
    assert_one_line_error(project, path, "stages.verdicts: key should be 'candidates', 'debates', 'scores'", command="validate")
    path.write_text(text + "stages: {scores: {batch: true, poll: 5}}\n")
    assert_one_line_error(project, path, "stages.scores.poll: unknown key", command="validate")
    path.write_text(text + "stages: {scores: {batch: yes please}}\n")
    assert_one_line_error(project, path, "stages.scores.batch", "boolean", command="validate")
    path.write_text(text + "budget: {usd: 5}\nstages: {candidates: {batch: true, poll_s: 1}}\n")
    assert run_cli("validate", str(path), cwd=project).returncode == 0
