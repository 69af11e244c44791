"""Every kind of bad recipe input gives one line per problem naming the file and field, exit status 1,
no traceback, and writes nothing."""

from __future__ import annotations

import subprocess

import pytest

from builders.errors import RecipeError
from builders.loader import load_recipe
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


def test_a_recipe_that_is_not_utf8_is_one_line(project):
    path = tiny_recipe(project)
    path.write_bytes(path.read_bytes().replace(b"schema_version: 1", b"description: caf\xe9\nschema_version: 1"))
    assert_one_line_error(project, path, "not UTF-8 text (byte 0xe9 at offset 16)", "save the recipe as UTF-8")


def test_yaml_merge_keys_are_read_and_own_keys_win(project):
    path = tiny_recipe(project)
    replace(path, "  writer: {provider: fake, model: auto}", "  writer: &base {provider: fake, model: auto, temperature: 0.5}")
    replace(path, "  reviewer: {provider: fake, model: auto}", "  reviewer: {<<: *base, temperature: 0.2}")
    replace(path, "  judge: {provider: fake, model: auto}", "  judge:\n    <<: *base")
    recipe = load_recipe(path)
    assert recipe.models["reviewer"].temperature == 0.2 and recipe.models["judge"].temperature == 0.5
    assert recipe.models["reviewer"].provider == "fake"
    # a key written twice in the mapping itself is still refused, merged or not
    replace(path, "{<<: *base, temperature: 0.2}", "{<<: *base, temperature: 0.2, temperature: 0.3}")
    assert_one_line_error(project, path, "duplicate key 'temperature'", "line", command="validate")


def test_a_yaml_alias_bomb_is_refused_quickly(project):
    path = tiny_recipe(project)
    levels = ["  tags: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"  more{k}: &l{k} [{', '.join([f'*l{k - 1}'] * 10)}]" for k in range(1, 9)]
    replace(path, "export:\n", "export:\n" + "\n".join(levels) + "\n")
    assert_one_line_error(project, path, "more than 100,000 values once YAML aliases are expanded", command="validate")


WRITER = "writer: {provider: fake, model: auto}"


@pytest.mark.parametrize("old, new, where", [
    ("iterations: 3", "iterations: 1000000000", "generation.iterations: Input should be less than or equal to 26"),
    (WRITER, "model: auto, max_tokens: 1000000000}", "models.writer.max_tokens: Input should be less than or equal to 131072"),
    (WRITER, "model: auto, max_retries: 100000}", "models.writer.max_retries: Input should be less than or equal to 50"),
    (WRITER, "model: auto, concurrency: 100000000}", "models.writer.concurrency: Input should be less than or equal to 1024"),
    (WRITER, "model: auto, price: {input: .inf}}", "models.writer.price.input: Input should be a finite number"),
    (WRITER, "model: auto, temperature: .nan}", "models.writer.temperature: Input should be a finite number"),
    (WRITER, "model: auto, timeout_s: .inf}", "models.writer.timeout_s: Input should be a finite number"),
    ("seed: 1", "seed: -1", "source.seed: Input should be greater than or equal to 0"),
    ("sample: 4", "sample: 1000000000000", "source.sample: Input should be less than or equal to 100000000"),
    ("min_margin: 0", "min_margin: .inf", "export.min_margin: Input should be a finite number"),
    ("min_margin: 0", "min_margin: 0\n  max_length: 0", "export.max_length: Input should be greater than or equal to 1"),
    ("min_margin: 0", "min_margin: 0\n  seed: -1", "export.seed: Input should be greater than or equal to 0"),
    ("min_margin: 0", "min_margin: 0\n  format: chatml", "export.format: Input should be 'conversational' or 'standard'"),
])
def test_numbers_without_a_sane_bound_are_refused(project, old, new, where):
    path = tiny_recipe(project)
    replace(path, old, new if old != WRITER else "writer: {provider: fake, " + new)
    assert_one_line_error(project, path, where, command="validate")


def test_absurd_fan_outs_fail_plan_and_build_at_once(project):
    path = tiny_recipe(project)
    replace(path, "iterations: 3", "iterations: 1000000000")
    for command in ("plan", "build"):
        result = subprocess.run(["fellowship", command, str(path)], cwd=project, capture_output=True, text=True, timeout=60)
        assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "generation.iterations" in result.stderr
    debate = tiny_recipe(project, "debate")
    replace(debate, "  panel:\n    models: [judge]\n",
            "  panel:\n    debate: {referees: {critic: judge}, rounds: 1000000000}\n  mode: debate\n")
    result = subprocess.run(["fellowship", "plan", str(debate)], cwd=project, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "judge.panel.debate.rounds: Input should be less than or equal to 10" in result.stderr


@pytest.mark.parametrize("field", ["{question:{evil}}", "{question:d}", "{question!z}", "{question:>2000000000}",
                                   "{question[0]}", "{question.upper}", "{}", "{0}"])
def test_template_fields_other_than_plain_names_are_refused(project, field):
    template = project / "recipes" / "prompts" / "reviewer" / "user.txt"
    template.write_text(f"Question: {field}\nResponse: {{response}}\n")
    path = tiny_recipe(project)
    line = assert_one_line_error(project, path, "generation.reviewer_user_prompt: template", "is not a plain placeholder",
                                 command="validate")
    assert field in line and str(template) in line


def test_template_errors_stop_a_build_before_anything_is_written(project):
    template = project / "recipes" / "prompts" / "judge" / "combined_user.txt"
    template.write_text("[User Question]\n{question:>2000000000}\n\n{responses}\n")
    assert_one_line_error(project, tiny_recipe(project), "judge.panel.user_prompt", "not a plain placeholder")
    template.write_bytes(b"[User Question]\n{question}\n\n\xff{responses}\n")
    assert_one_line_error(project, tiny_recipe(project), "judge.panel.user_prompt", "is not UTF-8 text")


@pytest.mark.parametrize("url", ["https://user:sk-live-0123456789abcdef@api.example.com/v1",
                                 "https://api.example.com/v1?api-key=sk-live-0123456789abcdef",
                                 "http://127.0.0.1:8000/v1?x=1&token=sk-live-0123456789abcdef"])
def test_a_base_url_carrying_a_credential_is_refused_without_echoing_it(project, url):
    path = tiny_recipe(project)
    replace(path, "  writer: {provider: fake, model: auto}", f"  writer: {{provider: openai-compatible, model: m, base_url: '{url}'}}")
    line = assert_one_line_error(project, path, "models.writer.base_url: the URL carries a credential", "api_key_env",
                                 command="validate")
    assert "sk-live" not in line


def test_api_key_env_names_a_variable_not_the_key(project):
    path = tiny_recipe(project)
    replace(path, "  writer: {provider: fake, model: auto}", "  writer: {provider: openai, model: m, api_key_env: sk-proj-0123456789abcdef}")
    line = assert_one_line_error(project, path, "models.writer.api_key_env", "not the key", command="validate")
    assert "sk-proj" not in line
