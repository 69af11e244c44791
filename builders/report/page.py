"""The report as one self-contained HTML file: static sections escaped here, the charts' specs and
the pair list as one JSON block, and the vendored vega, vega-lite and vega-embed bundles and the
page's own script and style inlined (`builders/report_assets/`, with their licences)."""

from __future__ import annotations

import html
import json
import math
from datetime import datetime, timezone
from importlib import resources

from builders.recipe import Recipe
from builders.report.sections import Section

BUNDLES = ("vega.min.js", "vega-lite.min.js", "vega-embed.min.js")  # in load order
STATUSES = ("ok", "inconsistent", "tie_dropped", "too_few_scored", "no_votes")


def asset(name: str) -> str:
    text = resources.files("builders").joinpath("report_assets", name).read_text(encoding="utf-8")
    return text.replace("</script", "<\\/script")  # never ends the inline script early


def _clean(x: object) -> object:
    """NaN and infinities (undefined figures) as null, as the tables store them."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


def _json(data: object) -> str:
    """JSON safe inside a <script> element: no `<`, `>` or `&` survives unescaped."""
    text = json.dumps(_clean(data), ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=str)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _cell(value: object) -> str:
    text = html.escape(str(value))
    numeric = text[:1].isdigit() or text[:1] in "-—" and text[1:2].isdigit()
    return f'<td class="num">{text}</td>' if numeric else f"<td>{text}</td>"


def _block(block: tuple) -> str:
    kind = block[0]
    if kind in ("p", "note", "warn"):
        return f'<p class="{kind}">{html.escape(block[1])}</p>'
    if kind == "table":
        _, caption, headers, rows = block
        head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
        body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
        if not rows:
            body = f'<tr><td colspan="{len(headers)}" class="muted">none</td></tr>'
        return (f'<div class="table-wrap"><table><caption>{html.escape(caption)}</caption><thead><tr>{head}</tr></thead>'
                f"<tbody>{body}</tbody></table></div>")
    if kind == "chart":
        _, name, caption = block
        return (f'<figure><figcaption>{html.escape(caption)}</figcaption>'
                f'<div class="chart" data-chart="{html.escape(name)}"></div></figure>')
    raise ValueError(f"unknown block {kind!r}")


def _section(s: Section, extra: str = "") -> str:
    return f'<section id="{s.id}"><h2>{html.escape(s.title)}</h2>{"".join(_block(b) for b in s.blocks)}{extra}</section>'


PAIRS = """
<h3>Every prompt</h3>
<form id="pair-filters">
  <label><input type="checkbox" name="inconsistent"> inconsistent verdicts</label>
  <label><input type="checkbox" name="split"> orders split</label>
  <label><input type="checkbox" name="tie"> ties</label>
  <label><input type="checkbox" name="small_margin"> margin at most <input type="number" name="margin_max" value="0.1"
    min="0" max="1" step="0.05"> of the scale</label>
  <label><input type="checkbox" name="dropped"> dropped candidates</label>
  <label>status <select name="status"><option value="">any</option>{options}</select></label>
  <label>search <input type="search" name="search" placeholder="prompt text or id"></label>
</form>
<div id="pair-count"></div>
<div class="pager"><button type="button" id="page-prev">previous</button><span id="page-info"></span>
<button type="button" id="page-next">next</button></div>
<div id="pair-list"></div>
"""


def html_page(recipe: Recipe, sections: list[Section], items: dict) -> str:
    charts = {name: spec for s in sections for name, spec in s.charts.items()}
    nav = "".join(f'<a href="#{s.id}">{html.escape(s.title)}</a>' for s in sections)
    options = "".join(f'<option value="{s}">{s}</option>' for s in STATUSES)
    body = "".join(_section(s, PAIRS.format(options=options) if s.id == "data" else "") for s in sections)
    scripts = "".join(f"<script>{asset(name)}</script>" for name in (*BUNDLES, "report.js"))
    made = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Fellowship report: {html.escape(recipe.name)}</title><style>{asset("report.css")}</style></head>
<body data-ready="0">
<header><h1>{html.escape(recipe.name)}</h1><p>{html.escape(recipe.description or "")}</p>
<p class="meta">Fellowship report of recipes/{html.escape(recipe.path.name)}, written {made} from data/{html.escape(recipe.name)}/.</p>
<nav>{nav}</nav></header>
<main>{body}</main>
<script type="application/json" id="report-data">{_json({"recipe": recipe.name, "charts": charts, "items": items})}</script>
{scripts}
</body></html>
"""

