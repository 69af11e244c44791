"""Vega-Lite specs for the report (drawn in the page by the vendored vega-embed). Each function
takes plain rows and returns a spec with its data inline, so the page loads nothing."""

from __future__ import annotations

SCHEMA = "https://vega.github.io/schema/vega-lite/v6.json"  # an identifier: never fetched
WIDTH = 520


def _spec(rows: list[dict], **body) -> dict:
    return {"$schema": SCHEMA, "width": WIDTH, "data": {"values": rows}, **body}


def interval(rows: list[dict], category: str, value: str, *, title: str, domain: list[float] | None = None,
             color: str | None = None) -> dict:
    """A point per category with its 95% interval (`<value>_low`, `<value>_high`) as a rule."""
    scale = {"domain": domain} if domain else {"zero": False}
    x = {"field": value, "type": "quantitative", "title": title, "scale": scale}
    y = {"field": category, "type": "nominal", "title": None, "sort": None}
    layers = [
        {"mark": {"type": "rule", "strokeWidth": 2},
         "encoding": {"y": y, "x": {**x, "field": f"{value}_low"}, "x2": {"field": f"{value}_high"}}},
        {"mark": {"type": "point", "filled": True, "size": 70},
         "encoding": {"y": y, "x": x, **({"color": {"field": color, "type": "nominal"}} if color else {}),
                      "tooltip": [{"field": category}, {"field": value, "format": ".3f"},
                                  {"field": f"{value}_low", "format": ".3f"}, {"field": f"{value}_high", "format": ".3f"}]}},
    ]
    return _spec(rows, height={"step": 22}, layer=layers)


def stacked_bars(rows: list[dict], category: str, value: str, stack: str, *, title: str) -> dict:
    return _spec(rows, height={"step": 24}, mark="bar", encoding={
        "y": {"field": category, "type": "nominal", "title": None, "sort": None},
        "x": {"field": value, "type": "quantitative", "title": title, "aggregate": "sum"},
        "color": {"field": stack, "type": "nominal", "title": None},
        "tooltip": [{"field": category}, {"field": stack}, {"field": value, "aggregate": "sum", "title": title}],
    })


def histogram(rows: list[dict], *, title: str, facet: str | None = None) -> dict:
    """Pre-binned counts (`bin`, `bin_end`, `count`), coloured by `facet`."""
    encoding = {
        "x": {"field": "bin", "type": "quantitative", "bin": {"binned": True, "step": 0.05}, "title": title,
              "scale": {"domain": [0, 1]}},
        "x2": {"field": "bin_end"},
        "y": {"field": "count", "type": "quantitative", "title": "count", "stack": True},
        "tooltip": [{"field": "bin", "title": "from"}, {"field": "bin_end", "title": "to"}, {"field": "count"}],
    }
    if facet:
        encoding["color"] = {"field": facet, "type": "nominal", "title": None}
        encoding["tooltip"].insert(0, {"field": facet})
    return _spec(rows, height=180, mark="bar", encoding=encoding)


def quartiles(rows: list[dict], x: str, *, title: str, color: str) -> dict:
    """Median point, interquartile rule and mean tick per `x`, one colour per `color`."""
    base = {"x": {"field": x, "type": "ordinal", "title": x}, "color": {"field": color, "type": "nominal", "title": None},
            "xOffset": {"field": color}}
    y = {"type": "quantitative", "title": title, "scale": {"domain": [0, 1]}}
    return _spec(rows, height=200, layer=[
        {"mark": {"type": "rule", "strokeWidth": 3}, "encoding": {**base, "y": {**y, "field": "q1"}, "y2": {"field": "q3"}}},
        {"mark": {"type": "point", "filled": True, "size": 60},
         "encoding": {**base, "y": {**y, "field": "median"},
                      "tooltip": [{"field": color}, {"field": x}, {"field": "n"}, {"field": "mean", "format": ".3f"},
                                  {"field": "q1", "format": ".3f"}, {"field": "median", "format": ".3f"},
                                  {"field": "q3", "format": ".3f"}]}},
        {"mark": {"type": "tick", "thickness": 2, "size": 14}, "encoding": {**base, "y": {**y, "field": "mean"}}},
    ])


def grouped_bars(rows: list[dict], x: str, value: str, color: str, *, title: str, domain: list[float] | None = None) -> dict:
    return _spec(rows, height=180, mark="bar", encoding={
        "x": {"field": x, "type": "ordinal", "title": x},
        "xOffset": {"field": color},
        "y": {"field": value, "type": "quantitative", "title": title, **({"scale": {"domain": domain}} if domain else {})},
        "color": {"field": color, "type": "nominal", "title": None},
        "tooltip": [{"field": color}, {"field": x}, {"field": value, "format": ".3f"}],
    })


def scatter(rows: list[dict], x: str, y: str, *, color: str | None, label: str, titles: tuple[str, str, str]) -> dict:
    encoding = {
        "x": {"field": x, "type": "quantitative", "title": titles[0], "scale": {"zero": False}},
        "y": {"field": y, "type": "quantitative", "title": titles[1], "scale": {"zero": False}},
        "tooltip": [{"field": label}, {"field": x}, {"field": y, "format": ".3f"}],
    }
    if color:
        encoding["color"] = {"field": color, "type": "quantitative", "title": titles[2], "scale": {"scheme": "viridis"}}
        encoding["tooltip"].append({"field": color, "format": ".2f"})
    return _spec(rows, height=220, mark={"type": "circle", "size": 80, "opacity": 0.8}, encoding=encoding)


def heatmap(rows: list[dict], *, title: str) -> dict:
    """Workflow x baseline matrix of `win_rate`, each cell labelled with its value."""
    base = {"x": {"field": "baseline", "type": "nominal", "title": "baseline"},
            "y": {"field": "workflow", "type": "nominal", "title": "workflow"}}
    return _spec(rows, height={"step": 40}, width={"step": 110}, layer=[
        {"mark": "rect", "encoding": {**base, "color": {"field": "win_rate", "type": "quantitative", "title": title,
                                                         "scale": {"domain": [0, 1], "scheme": "redblue"}},
                                      "tooltip": [{"field": "workflow"}, {"field": "baseline"},
                                                  {"field": "label", "title": "win rate [95%]"}]}},
        {"mark": {"type": "text", "fontSize": 12}, "encoding": {**base, "text": {"field": "label"}}},
    ])


def bars(rows: list[dict], category: str, value: str, *, title: str, by_value: bool = True) -> dict:
    return _spec(rows, height={"step": 22}, mark="bar", encoding={
        "y": {"field": category, "type": "nominal", "title": None, "sort": "-x" if by_value else None},
        "x": {"field": value, "type": "quantitative", "title": title},
        "tooltip": [{"field": category}, {"field": value}],
    })
