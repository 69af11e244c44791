"""LLM Debate: referees speak in turn for the recipe's rounds with the history passed on, every turn
is a row, each referee's final scores are scores rows, and the referees' votes decide."""

from __future__ import annotations

import polars as pl
import pytest

from builders.errors import RecipeError
from builders.llm.fake import FakeProvider
from builders.loader import load_recipe
from builders.stages import STAGES, run_stage
from builders.tables import TABLES, read_table
from conftest import tiny_recipe

DEBATE = """\
  panel:
    debate:
      rounds: 2
      referees: {general_public: judge, psychologist: writer, critic: reviewer}
  mode: debate
"""


def _debate_recipe(project, orders="rotations"):
    path = tiny_recipe(project)
    text = path.read_text().replace("  panel:\n    models: [judge]\n", DEBATE)
    text = text.replace("    debate:\n", f"    orders: {orders}\n    debate:\n")
    path.write_text(text)
    return load_recipe(path)


def test_referees_debate_in_order_with_the_history_then_vote(project):
    recipe = _debate_recipe(project)
    for stage in STAGES:
        run_stage(recipe, stage, progress=False)
    data = project.parent / "data" / "tiny"
    turns = read_table(TABLES["debates"], data)
    assert turns.height == 4 * 3 * 2 * 3  # items x orders (rotations of 3 candidates) x rounds x referees
    one = turns.filter(pl.col("debate_id") == turns["debate_id"][0]).sort("turn")
    assert one["role"].to_list() == ["general_public", "psychologist", "critic"] * 2
    assert one["round"].to_list() == [1, 1, 1, 2, 2, 2]
    assert one["referee_model"].to_list()[:3] == ["judge", "writer", "reviewer"]
    scores = read_table(TABLES["scores"], data)
    assert set(scores["strategy"]) == {"debate"} and set(scores["judge"]) == {"general_public", "psychologist", "critic"}
    assert scores["call_id"].n_unique() == 12 * 3
    verdicts = read_table(TABLES["verdicts"], data)
    assert verdicts["n_votes"].max() <= 3 and verdicts.filter(status="ok").height > 0


def test_each_referee_sees_the_discussion_so_far(project):
    recipe = _debate_recipe(project, orders="single")
    path = recipe.path
    path.write_text(path.read_text().replace("sample: 4", "sample: 1"))
    recipe = load_recipe(path)
    said = iter(f"remark {k}" for k in range(100))
    referees = {name: FakeProvider(recipe.models[name], script=[lambda m: next(said)] * 10)
                for name in ("judge", "writer", "reviewer")}
    for stage in ("items", "candidates"):
        run_stage(recipe, stage, progress=False)
    run_stage(recipe, "debates", providers=referees, progress=False)
    critic_round_2 = referees["reviewer"].calls[1]["messages"][1]["content"]
    for k, role in enumerate(["General Public", "Psychologist", "Critic", "General Public", "Psychologist"]):
        assert f"[{role}]: remark {k}" in critic_round_2
    assert critic_round_2.rstrip().endswith("**Critic**:")
    assert "< Start of User Question >" in critic_round_2
    assert "discussion history:\n(none yet)" in referees["judge"].calls[0]["messages"][1]["content"]


def test_debate_settings_are_checked(project):
    path = tiny_recipe(project)
    path.write_text(path.read_text().replace("  panel:\n    models: [judge]\n", DEBATE.replace("critic: reviewer", "critic: nobody")))
    with pytest.raises(RecipeError, match=r"judge.panel.debate.referees.critic: unknown model 'nobody'"):
        load_recipe(path)
    path.write_text(path.read_text().replace("critic: nobody", "critic: judge").replace("  mode: debate\n", ""))
    with pytest.raises(RecipeError, match=r"judge.mode: `debate` goes with judge.panel.debate"):
        load_recipe(path)
