"""Comparing workflows: this recipe's picked answers against baseline answers, judged pairwise in
both orders, as win rates with bootstrap intervals and a length-controlled variant."""

from __future__ import annotations

import hashlib
import json
import re

import numpy as np
import pytest

from builders.errors import RecipeError
from builders.llm.fake import FakeProvider
from builders.loader import load_recipe
from builders.stages import STAGES, run_stage
from builders.tables import TABLES, read_table
from conftest import tiny_recipe, write_recipe
from metrics.agreement import A, B, TIE
from metrics.bootstrap import weights
from metrics.win_rate import length_controlled, win_rate

COMPARE = """\
name: {name}
source: {{path: sources/pairs.jsonl, prompt_column: prompt, id_column: id}}
models:
  judge: {{provider: fake, model: auto}}
  writer: {{provider: fake, model: scripted}}
generation:
  workflow: import
  answers: [{{column: mine, model: contender}}]
judge:
  panel: {{models: [judge]}}
export: {{}}
compare:
  workflows:
    mine: {{workflow: single, generator: writer, iterations: 1}}
  baselines:
    base: {{workflow: import, answers: [{{column: theirs, model: base}}]}}
  ties: {ties}
  resamples: 400
"""


def _unit(text: str) -> float:
    """A number in [0, 1) fixed by the text."""
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 2**32


def _source(project, n, length_of):
    rows = []
    for i in range(n):
        mine_len, theirs_len = length_of(i)
        WRITTEN[i] = f"mine{i} " + "x" * mine_len
        rows.append({"id": f"q{i}", "prompt": f"question {i}", "mine": WRITTEN[i], "theirs": f"base{i} " + "y" * theirs_len})
    (project / "recipes" / "sources" / "pairs.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def _judge(prefers):
    """A scripted judge: `prefers(mine, theirs)` says who wins; scores follow in whatever order shown."""
    def answer(messages):
        text = messages[-1]["content"]
        mine = text[text.index("mine"):].split("\n")[0]
        theirs = text[text.index("base"):].split("\n")[0]
        winner = prefers(mine, theirs)
        mine_first = text.index("mine") < text.index("base")
        score = {"mine": (8, 3), "base": (3, 8), "tie": (5, 5)}[winner]
        first, second = score if mine_first else score[::-1]
        return f"### Evaluation Evidence: scripted.\n### Score Assistant A: {first}/10\n### Score Assistant B: {second}/10"
    return answer


def _writer(messages):
    """A scripted generator: it answers `question i` with the source's `mine` text for prompt i."""
    i = int(messages[-1]["content"].split()[-1])
    return WRITTEN[i]


WRITTEN: dict[int, str] = {}


def _build(project, name, judge, ties="half"):
    recipe = load_recipe(write_recipe(project, name, COMPARE.format(name=name, ties=ties)))
    providers = {"judge": FakeProvider(recipe.models["judge"], script=[judge] * 2000),
                 "writer": FakeProvider(recipe.models["writer"], script=[_writer] * 2000)}
    for stage in STAGES:
        run_stage(recipe, stage, providers=providers, progress=False)
    return read_table(TABLES["win_rates"], project.parent / "data" / name).to_dicts()


def test_a_known_win_rate_is_measured_and_its_interval_covers_it(project):
    _source(project, 300, lambda i: (40, 40))
    # the contender truly wins 70% of prompts (fixed per prompt, the same in both orders)
    (rate,) = _build(project, "known", _judge(lambda m, t: "mine" if _unit(m.split()[0]) < 0.7 else "base"))
    wins = sum(_unit(f"mine{i}") < 0.7 for i in range(300))
    assert rate["wins"] == wins and rate["losses"] == 300 - wins and rate["ties"] == 0
    assert rate["win_rate"] == pytest.approx(wins / 300)
    assert rate["win_rate_low"] < 0.7 < rate["win_rate_high"]
    assert rate["inconsistent"] == 0 and rate["n_prompts"] == 300 and rate["n_unpicked"] == 0


def test_length_control_removes_a_pure_length_effect(project):
    # The judge prefers the longer answer on 85% of prompts and the shorter on 15%, whoever wrote it;
    # the contender is longer on 70% of prompts. Raw win rate: 0.7 * 0.85 + 0.3 * 0.15 = 0.64; with
    # length held equal the two are even (0.5).
    _source(project, 400, lambda i: (60, 30) if i % 10 < 7 else (30, 60))
    noisy = {f"mine{i}" for i in range(400) if (i // 10) % 20 < 3}

    def judge(mine, theirs):
        longer = "mine" if len(mine) > len(theirs) else "base"
        return longer if mine.split()[0] not in noisy else {"mine": "base", "base": "mine"}[longer]

    (rate,) = _build(project, "lengthy", _judge(judge))
    assert rate["win_rate"] == pytest.approx(0.64, abs=0.01) and rate["win_rate_low"] > 0.55
    assert rate["lc_win_rate"] == pytest.approx(0.5, abs=0.02)
    assert rate["lc_win_rate_low"] < 0.5 < rate["lc_win_rate_high"]
    assert rate["candidate_chars"] > rate["baseline_chars"]


def test_a_judge_swayed_by_order_gives_inconsistent_pairs_counted_as_ties(project):
    _source(project, 40, lambda i: (20, 20))

    def first_shown(messages):  # always prefers Assistant A
        return "### Evaluation Evidence: x.\n### Score Assistant A: 9/10\n### Score Assistant B: 2/10"

    (rate,) = _build(project, "swayed", first_shown, ties="half")
    assert rate["inconsistent"] == 40 and rate["ties"] == 40 and rate["wins"] == rate["losses"] == 0
    assert rate["win_rate"] == 0.5
    (excluded,) = _build(project, "swayed-x", first_shown, ties="exclude")
    assert excluded["win_rate"] is None


LOOPS = """\
compare:
  workflows:
    loop: {workflow: feedback, generator: writer, reviewers: [reviewer], iterations: 3}
    two-reviewers: {workflow: feedback, generator: writer, reviewers: [reviewer, judge], iterations: 2}
  baselines:
    fresh: {workflow: single, generator: reviewer, iterations: 1}
    base: {workflow: import, answers: [{column: theirs, model: base}]}
  resamples: 200
"""


def test_several_workflows_meet_generated_and_imported_baselines(project):
    """Each workflow's pick (the judge's choice among its iterations) meets each baseline: a matrix."""
    rows = [{"prompt_id": f"p{i}", "prompt": f"Explain idea {i}.", "theirs": f"A baseline answer {i}."} for i in range(4)]
    (project / "recipes" / "sources" / "loop.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    path = tiny_recipe(project, "loops")
    text = path.read_text().replace("path: sources/capybara-demo.jsonl", "path: sources/loop.jsonl")
    text = text.replace("    models: [judge]\n", "    models: [judge]\n    orders: single\n")  # fake scores flip at random
    path.write_text(text + LOOPS)
    recipe = load_recipe(path)
    for stage in STAGES:
        run_stage(recipe, stage, progress=False)
    data = project.parent / "data" / "loops"
    picks = read_table(TABLES["picks"], data)
    loop_verdicts = read_table(TABLES["verdicts"], data / "compare" / "loop").filter(status="ok")
    loop_picks = picks.filter(entry="loop")
    assert set(loop_picks["candidate_id"]) == set(loop_verdicts["chosen_id"]) and set(loop_picks["how"]) == {"judge"}
    assert set(picks.filter(entry="fresh")["how"]) == {"only"} and picks.filter(entry="fresh").height == 4
    assert set(picks.filter(entry="fresh")["generator"]) == {"reviewer"}
    rates = read_table(TABLES["win_rates"], data).sort("workflow", "baseline")
    assert rates.select("workflow", "baseline").rows() == [
        ("loop", "base"), ("loop", "fresh"), ("two-reviewers", "base"), ("two-reviewers", "fresh")]
    for r in rates.to_dicts():
        assert r["n_prompts"] + r["n_unpicked"] == 4
        assert r["wins"] + r["losses"] + r["ties"] == r["n_prompts"]
    matches = read_table(TABLES["matches"], data)
    assert set(matches["candidate_id"]) <= set(picks.filter(role="workflow")["candidate_id"])
    metrics = json.loads((data / "metrics.json").read_text())
    assert set(metrics["win_rates"]) == {"loop", "two-reviewers"}
    assert set(metrics["win_rates"]["loop"]) == {"base", "fresh"}


def test_win_rate_ties_rules_by_hand():
    labels = np.array([A, A, A, B, TIE, TIE], dtype=np.int8)
    assert win_rate(labels, "half") == pytest.approx((3 + 1) / 6)
    assert win_rate(labels, "exclude") == pytest.approx(3 / 4)
    assert win_rate(labels, "loss") == pytest.approx(3 / 6)


def test_length_controlled_equals_the_raw_rate_without_length_differences():
    rng = np.random.default_rng(0)
    labels = np.where(rng.random(200) < 0.6, A, B).astype(np.int8)
    lc, low, high = length_controlled(labels, np.zeros(200), "half", weights(200, 200))
    assert lc == pytest.approx(win_rate(labels, "half"), abs=1e-3) and low < lc < high


@pytest.mark.parametrize("entries, message", [
    ("  workflows: {a: {workflow: import, answers: [{column: nope, model: b}]}}\n  baselines: {b: {workflow: single, generator: writer, iterations: 1}}\n",
     "compare.workflows.a.answers[0].column: column 'nope' not in sources/loop.jsonl"),
    ("  workflows: {a: {workflow: single, generator: ghost, iterations: 1}}\n  baselines: {b: {workflow: single, generator: writer, iterations: 1}}\n",
     "compare.workflows.a.generator: unknown model 'ghost'"),
    ("  workflows: {a: {workflow: feedback, generator: writer, iterations: 2}}\n  baselines: {b: {workflow: single, generator: writer, iterations: 1}}\n",
     "compare.workflows.a.reviewers: the feedback workflow needs at least one reviewer"),
    ("  workflows: {a: {workflow: single, generator: writer, iterations: 1}}\n  baselines: {a: {workflow: single, generator: writer, iterations: 1}}\n",
     "compare.baselines.a: 'a' is also a workflow"),
])
def test_compare_errors(project, entries, message):
    rows = [{"prompt_id": "p0", "prompt": "q", "theirs": "a"}]
    (project / "recipes" / "sources" / "loop.jsonl").write_text(json.dumps(rows[0]) + "\n")
    path = tiny_recipe(project, "bad")
    path.write_text(path.read_text().replace("path: sources/capybara-demo.jsonl", "path: sources/loop.jsonl")
                    + "compare:\n" + entries)
    with pytest.raises(RecipeError, match=re.escape(message)):
        load_recipe(path)
