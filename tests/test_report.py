"""`fellowship report`: the page is built from the tables, refuses tables not built, and renders in
headless Chromium (Debian's package) with its charts and its pair list, offline and without errors."""

from __future__ import annotations

import json
import re

import polars as pl
import pytest

import browser
from builders.errors import BuildError
from builders.loader import load_recipe
from builders.report import build, render
from builders.stages import STAGES, run_stage
from builders.tables import TABLES, read_table
from conftest import ROOT, fellowship, tiny_recipe, write_recipe

needs_chromium = pytest.mark.skipif(
    not browser.available(),
    reason="Chromium is not installed (/usr/bin/chromium): `apt-get install -y chromium`; .ci/run installs it",
)

DUEL = (ROOT / "tests" / "test_dvc.py").read_text().split('DUEL = """\\\n', 1)[1].split('"""', 1)[0]


def _data(page_html: str) -> dict:
    blob = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', page_html, re.S).group(1)
    return json.loads(blob)


def _nonblank(png) -> None:
    from PIL import Image

    image = Image.open(png).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 22)
    inked = sum(n for n, c in colours if sum(c) < 3 * 235)
    assert len(colours) > 100 and inked / (image.width * image.height) > 0.05, (len(colours), inked)


def _set(page, name: str, value) -> None:
    """Set a filter of the pair list as a user would, and let the page react."""
    field = "checked" if isinstance(value, bool) else "value"
    page.evaluate(f"(() => {{ const f = document.querySelector('#pair-filters [name={name}]'); "
                  f"f.{field} = {json.dumps(value)}; f.form.dispatchEvent(new Event('input')); }})()")


def test_report_holds_every_prompt_with_its_calls_verdict_and_exports(project):
    recipe = load_recipe(tiny_recipe(project))
    for stage in STAGES:
        run_stage(recipe, stage, progress=False)
    data_dir = project.parent / "data" / "tiny"
    page = render(recipe, data_dir)
    data = _data(page)
    items = data["items"]
    verdicts = read_table(TABLES["verdicts"], data_dir)
    assert items["total"] == items["shown"] == verdicts.height == 4
    scores = read_table(TABLES["scores"], data_dir)
    dpo, kto = read_table(TABLES["dpo"], data_dir), read_table(TABLES["kto"], data_dir)
    for item in items["items"]:
        v = verdicts.filter(item_id=item["id"]).row(0, named=True)
        assert item["status"] == v["status"] and item["chosen_id"] == v["chosen_id"]
        calls = scores.filter(item_id=item["id"]).unique("call_id")
        assert len(item["judging"]) == calls.height == 3  # three candidates, three rotations
        assert {c["raw"] for c in item["judging"]} == set(calls["raw"])
        assert sorted(map(sorted, (c["shown"] for c in item["judging"]))) == [sorted(c["id"] for c in item["candidates"])] * 3
        assert len(item["exports"]["dpo"]) == dpo.filter(item_id=item["id"]).height
        assert len(item["exports"]["kto"]) == kto.filter(item_id=item["id"]).height
        chosen = [c for c in item["candidates"] if c["chosen"]]
        assert len(chosen) == (v["status"] == "ok") and item["why"]
        for c in item["candidates"]:  # a candidate is in an export, or says why not
            assert (c["kto"] is not None) != (c["dropped"] is not None)
    assert {"build", "judges", "data"} <= {m for m in re.findall(r'<section id="([\w-]+)"', page)}
    assert {"wall_time", "tokens", "positions", "scores", "iterations", "statuses", "margins"} <= set(data["charts"])
    assert "Self-preference risk" in page and "https://" not in page.split('id="report-data"')[0].replace(
        "https://vega.github.io/schema", "")


def test_report_of_a_recipe_not_built_names_the_stage_and_writes_nothing(project):
    tiny_recipe(project)
    result = fellowship("report", "tiny", cwd=project, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "items.parquet is not built: build the `items` stage first (`fellowship build tiny --stage items`" in line
    data_dir = project.parent / "data" / "tiny"
    fellowship("build", "tiny", "--no-progress", cwd=project)
    TABLES["verdicts"].path(data_dir).unlink()
    result = fellowship("report", "tiny", cwd=project, check=False)
    assert result.returncode == 1 and "build the `verdicts` stage first" in result.stderr
    assert not (data_dir / "report.html").exists() and not list(data_dir.glob(".report*"))


def test_report_of_a_benchmark_needs_its_meta_eval(project):
    from test_judge_analytics import noisy_jury

    recipe, data_dir = noisy_jury(project)
    with pytest.raises(BuildError, match=r"agreement.parquet is not built: build the `meta-eval` stage first "
                                         r"\(`fellowship meta-eval jury-slice`"):
        build(recipe, data_dir)
    assert not (data_dir / "report.html").exists()


@needs_chromium
def test_the_demo_report_renders_in_headless_chromium(project, tmp_path):
    # a prompt that tries to break out of the page: it must show as text, run nothing, load nothing
    hostile = '</script><img src="http://127.0.0.1:9/x.png" onerror="document.title=\'pwned\'"><b>bold?</b>'
    rows = [{"prompt_id": "h1", "prompt": hostile}, {"prompt_id": "n1", "prompt": "Name three rivers."},
            {"prompt_id": "n2", "prompt": "Explain tides."}, {"prompt_id": "n3", "prompt": "What is a prime?"}]
    (project / "recipes" / "sources" / "hostile.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = tiny_recipe(project)
    path.write_text(path.read_text().replace("capybara-demo.jsonl", "hostile.jsonl"))
    fellowship("build", "tiny", "--no-progress", cwd=project)
    result = fellowship("report", "tiny", cwd=project)
    report = project.parent / "data" / "tiny" / "report.html"
    assert f"wrote {report}" in result.stderr
    charts = len(_data(report.read_text())["charts"])
    verdicts = read_table(TABLES["verdicts"], report.parent)
    with browser.Page() as page:
        page.open(report)
        assert page.errors() == [] and page.network() == []
        assert page.count("[data-chart]") == charts >= 7
        assert page.evaluate("document.body.dataset.charts") == str(charts)  # every chart drawn, as SVG
        assert page.count("[data-chart] svg") == charts and page.count("[data-chart] svg .mark-rect path, "
                                                                         "[data-chart] svg .mark-symbol path") > 20
        assert page.count("#pair-list .pair") == 4
        assert page.evaluate("document.getElementById('pair-count').textContent") == "4 of 4 prompts"
        # filters: each shows exactly the prompts the verdicts say
        for name, expected in (("inconsistent", verdicts.filter(pl.col("status") == "inconsistent").height),
                               ("tie", verdicts.filter(pl.col("is_tie") | (pl.col("status") == "tie_dropped")).height)):
            _set(page, name, True)
            assert page.count("#pair-list .pair") == expected, name
            _set(page, name, False)
        _set(page, "status", "ok")
        assert page.count("#pair-list .pair") == verdicts.filter(status="ok").height
        _set(page, "status", "")
        _set(page, "search", "onerror")
        assert page.count("#pair-list .pair") == 1
        page.evaluate("document.querySelector('#pair-list .pair details').open = true")
        assert page.count("#pair-list .candidate") == 3 and page.count("#pair-list .call") == 3
        shown = page.evaluate("document.querySelector('#pair-list .pair-body').textContent")
        assert hostile in shown and ("DPO" in shown or "no DPO pair" in shown)
        assert page.count("#pair-list img") == 0 and page.count("#pair-list b") == 0
        assert page.evaluate("document.title") == "Fellowship report: tiny"
        assert page.errors() == [] and page.network() == []
        page.screenshot(tmp_path / "tiny.png")
    _nonblank(tmp_path / "tiny.png")


@needs_chromium
def test_benchmark_and_comparison_reports_render_in_headless_chromium(project, tmp_path):
    from builders import meta_eval
    from test_judge_analytics import noisy_jury

    recipe, bench_dir = noisy_jury(project)
    meta_eval.build(recipe, bench_dir, resamples=200)
    bench = build(recipe, bench_dir)
    write_recipe(project, "duel", DUEL)
    fellowship("build", "duel", "--no-progress", cwd=project)
    fellowship("report", "duel", cwd=project)
    duel = project.parent / "data" / "duel" / "report.html"
    assert json.loads((project.parent / "data" / "_win_rates" / "duel.json").read_text())["win_rates"]["gemma"]["gpt-4o"]
    bench_charts = _data(bench.read_text())["charts"]
    assert {"kappa", "juries", "n_eff"} <= set(bench_charts)
    assert {"win_matrix", "win_intervals"} <= set(_data(duel.read_text())["charts"])
    with browser.Page() as page:
        for report, name in ((bench, "bench"), (duel, "duel")):
            page.open(report)
            assert page.errors() == [] and page.network() == [], name
            assert page.evaluate("document.body.dataset.charts") == str(page.count("[data-chart]")), name
            page.screenshot(tmp_path / f"{name}.png")
            _nonblank(tmp_path / f"{name}.png")
        page.open(bench)
        text = page.evaluate("document.getElementById('judges').textContent")
        assert "independent votes" in text and "Krippendorff" in text and "same_family" in text
        assert page.count("#judges [data-chart=n_eff] svg") == 1
        assert page.count("#pair-list .pair") == 16
        page.open(duel)
        assert "style-controlled" in page.evaluate("document.getElementById('win-rates').textContent")
        assert page.count("#win-rates [data-chart=win_matrix] svg") == 1
