"""The `fellowship` command line: build, sql over every recipe's tables, tables, validate, help."""

from __future__ import annotations

import json
import sys

import pytest

from builders.stages import BUILT_TABLES
from builders.tables import TABLES
from conftest import ROOT, fellowship, run, tiny_recipe


@pytest.fixture
def two_recipes(project):
    tiny_recipe(project, "alpha")
    tiny_recipe(project, "beta")
    for name in ("alpha", "beta"):
        fellowship("build", name, "--no-progress", cwd=project)
    return project


def test_build_writes_every_table_and_reports_calls(project):
    tiny_recipe(project)
    result = fellowship("build", "tiny", "--no-progress", cwd=project)
    data = project.parent / "data" / "tiny"
    assert sorted(p.stem for p in data.glob("*.parquet")) == sorted(BUILT_TABLES)
    assert "tiny: candidates: wrote candidates (12 rows)" in result.stderr
    assert "20 calls, 0 cached" in result.stderr
    again = fellowship("build", "tiny", "--stage", "scores", "--no-progress", cwd=project)
    assert "0 calls, 12 cached" in again.stderr


def test_sql_sees_every_recipe_and_can_narrow(two_recipes):
    out = fellowship("sql", "select recipe, judge, count(*) n, avg(score) s from scores group by all order by 1",
                     "--format", "json", cwd=two_recipes).stdout
    rows = [json.loads(line) for line in out.splitlines()]
    assert [(r["recipe"], r["judge"], r["n"]) for r in rows] == [("alpha", "judge", 36), ("beta", "judge", 36)]
    assert 1 <= rows[0]["s"] <= 10
    narrowed = fellowship("sql", "select distinct recipe from dpo", "--recipe", "beta", "--format", "csv", cwd=two_recipes)
    assert narrowed.stdout.split() == ["recipe", "beta"]


def test_sql_joins_tables(two_recipes):
    out = fellowship(
        "sql",
        "select count(*) n from dpo join candidates c on dpo.chosen_id = c.candidate_id and dpo.recipe = c.recipe",
        "--format", "csv", cwd=two_recipes,
    ).stdout
    dpo_rows = fellowship("sql", "select count(*) n from dpo", "--format", "csv", cwd=two_recipes).stdout
    assert out == dpo_rows and int(out.split()[1]) > 0


def test_sql_errors_are_one_line(two_recipes):
    result = fellowship("sql", "select nope from scores", cwd=two_recipes, check=False)
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    assert "nope" in result.stderr and "Traceback" not in result.stderr
    missing = fellowship("sql", "select 1", "--recipe", "gamma", cwd=two_recipes, check=False)
    assert missing.returncode == 1 and "no tables for recipe 'gamma'" in missing.stderr


def test_tables_describes_every_column():
    out = fellowship("tables", cwd=ROOT).stdout
    for table in TABLES.values():
        assert f"{table.name}: {table.grain}" in out
        for column in table.columns:
            assert column.name in out
    assert fellowship("tables", "nope", cwd=ROOT, check=False).returncode == 2


def test_every_command_has_help_and_is_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    top = fellowship("--help", cwd=ROOT).stdout
    listed = top.split("Commands:")[1].splitlines()
    commands = [line.split()[0] for line in listed if line.startswith("  ")]
    assert {"build", "meta-eval", "publish", "sql", "tables", "validate"} <= set(commands)
    for command in commands:
        assert len(fellowship(command, "--help", cwd=ROOT).stdout) > 100
        assert f"fellowship {command}" in readme


def test_validate_reports_ok(project):
    tiny_recipe(project)
    assert "tiny.yaml: ok" in fellowship("validate", "tiny", cwd=project).stdout


def test_sql_refuses_statements_that_write(two_recipes, tmp_path):
    for query in ("create table x as select 1", f"copy (select 1) to '{tmp_path / 'out.csv'}'", "select 1; select 2", " "):
        result = fellowship("sql", query, cwd=two_recipes, check=False)
        assert result.returncode == 1 and "Traceback" not in result.stderr, query
        assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out.csv").exists()


def test_sql_without_tables_says_what_to_run(tmp_path):
    result = fellowship("sql", "select 1", "--data-dir", str(tmp_path / "empty"), cwd=tmp_path, check=False)
    assert result.returncode == 1 and "no tables under" in result.stderr and "fellowship build" in result.stderr


def test_the_command_list_matches_each_commands_own_help_and_loads_no_command():
    import importlib

    import click

    from builders.cli import COMMANDS, cli

    for name, (module, first_paragraph) in COMMANDS.items():
        importlib.import_module(module)
        own = cli.commands[name].get_short_help_str(limit=1000)
        assert click.Command(name, help=first_paragraph).get_short_help_str(limit=1000) == own, name
    probe = ("import sys; from builders.cli import main; sys.argv = ['fellowship', '--help']\n"
             "try:\n    main()\nfinally:\n"
             "    print(sorted(m for m in sys.modules if m.startswith(('builders.', 'polars', 'pydantic', 'openai'))))")
    out = run([sys.executable, "-c", probe], cwd=ROOT).stdout
    assert "Commands:" in out and out.strip().splitlines()[-1] == "['builders.cli', 'builders.errors', 'builders.redact']"
