"""The report's sections as data: paragraphs, tables and Vega-Lite charts (rendered by `page`).

- Build: every stage's last run (`build_log.json`: wall time, rows, calls, cache hits, retries,
  tokens, cost, per model) and the usage the tables record per stage and model.
- Judges: the configuration, the family check, agreement with humans (a benchmark recipe's own
  `agreement`, or the benchmark that measured this configuration, found through `data/_gates`),
  each jury's n_eff and alpha, and what the recipe's own scores say (`judges`).
- Win rates (comparison recipes): the workflow x baseline matrix, raw, length- and style-controlled.
- Data: verdict statuses and DPO margins (the pair list itself is `items`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from builders import build_log, family_check
from builders.card import measured_agreement
from builders.preferences import judge_description
from builders.recipe import Recipe
from builders.report import charts, judges
from builders.stages import STAGES
from builders.tables import TABLES, read_table
from metrics import families


@dataclass
class Context:
    recipe: Recipe
    data_dir: Path
    tables: dict[str, pl.DataFrame]
    log: dict[str, dict]

    @classmethod
    def load(cls, recipe: Recipe, data_dir: Path) -> "Context":
        from builders.report import needed

        tables = {name: read_table(TABLES[name], data_dir) for name in needed(recipe)}
        return cls(recipe, data_dir, tables, build_log.read(data_dir))

    def __getitem__(self, name: str) -> pl.DataFrame:
        return self.tables[name]


@dataclass
class Section:
    id: str
    title: str
    blocks: list[tuple] = field(default_factory=list)
    charts: dict[str, dict] = field(default_factory=dict)

    def para(self, text: str, kind: str = "p") -> None:
        self.blocks.append((kind, text))

    def table(self, caption: str, headers: list[str], rows: list[list]) -> None:
        self.blocks.append(("table", caption, headers, rows))

    def chart(self, name: str, caption: str, spec: dict) -> None:
        self.charts[name] = spec
        self.blocks.append(("chart", name, caption))


def fmt(x: object, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and x != x):
        return "—"
    if isinstance(x, float):
        return f"{x:,.{digits}f}"
    if isinstance(x, int) and not isinstance(x, bool):
        return f"{x:,}"
    return str(x)


def est(value: object, low: object, high: object, digits: int = 3) -> str:
    if value is None:
        return "—"
    if low is None or high is None:
        return fmt(value, digits)
    return f"{fmt(value, digits)} [{fmt(low, digits)}, {fmt(high, digits)}]"


# --- build -------------------------------------------------------------------------------------

def table_usage(c: Context) -> list[dict]:
    """Per stage and model, what the rows record: calls, tokens, cost, summed call latency."""
    models = {name: f"{spec.provider}/{spec.model}" for name, spec in c.recipe.models.items()}  # as the tables name them

    def group(frame: pl.DataFrame, stage: str, by: pl.Expr, prefix: str = "", names: bool = False) -> list[dict]:
        if frame.height == 0:
            return []
        agg = frame.group_by(by.alias("model")).agg(
            pl.len().alias("calls"), pl.col(f"{prefix}tokens_in").sum().alias("tokens_in"),
            pl.col(f"{prefix}tokens_out").sum().alias("tokens_out"), pl.col(f"{prefix}cost_usd").sum().alias("cost_usd"),
            (pl.lit(None, pl.Float64) if prefix else pl.col("latency_s").sum()).alias("latency_s"),
        ).sort("model")
        rows = agg.to_dicts()
        for r in rows if names else ():  # recipe model names -> provider model ids
            r["model"] = "+".join(models.get(m, m) for m in r["model"].split("+"))
        return [{"stage": stage, **r} for r in rows]

    def candidates_and_scores(where: Path, stage: str) -> list[dict]:
        cands = read_table(TABLES["candidates"], where)
        out = group(cands.filter(pl.col("workflow") != "import"), stage, pl.col("generator_model"))
        out += group(cands.filter(pl.col("review").is_not_null()), f"{stage} (reviews)",
                     pl.col("reviewers").list.join("+"), prefix="review_", names=True)
        if TABLES["scores"].path(where).exists():
            scored = read_table(TABLES["scores"], where).unique("call_id")
            out += group(scored, "scores" if stage == "candidates" else f"{stage} (judging)", pl.col("judge_model"))
        return out

    rows = candidates_and_scores(c.data_dir, "candidates")
    rows += group(c["debates"], "debates", pl.col("referee_model"), names=True)
    if c.recipe.compare:
        for entry in sorted(p for p in (c.data_dir / "compare").glob("*") if p.is_dir()):
            rows += candidates_and_scores(entry, f"picks: {entry.name}")
        rows += group(c["matches"].unique("match_call_id"), "matches", pl.col("judge_model"))
    return rows


def build_section(c: Context) -> Section:
    s = Section("build", "The build")
    order = [*STAGES, "meta-eval"]
    logged = sorted(c.log.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order))
    if logged:
        s.para("Each stage's last run, as `fellowship build` or `dvc repro` ran it (data/<recipe>/build_log.json): "
               "calls made, calls the response cache answered, and what this run paid.")
        s.table("Stages", ["stage", "rows written", "wall time (s)", "calls", "cache hits", "retries", "tokens in",
                           "tokens out", "cost (USD)", "finished"], [
            [stage, ", ".join(f"{t} {n:,}" for t, n in e.get("rows", {}).items()), fmt(e.get("wall_s"), 2),
             fmt(e.get("calls")), fmt(e.get("cached")), fmt(e.get("retries")), fmt(e.get("tokens_in")),
             fmt(e.get("tokens_out")), fmt(e.get("cost_usd"), 4), e.get("finished_at", "")]
            for stage, e in logged
        ])
        per_model = [[stage, model, fmt(u["calls"]), fmt(u["cached"]), fmt(u["tokens_in"]), fmt(u["tokens_out"]),
                      fmt(u["cost_usd"], 4)] for stage, e in logged for model, u in e.get("models", {}).items()]
        if per_model:
            s.table("Calls per stage and model (last run)", ["stage", "model", "calls", "cache hits", "tokens in",
                                                               "tokens out", "cost (USD)"], per_model)
        s.chart("wall_time", "Wall time of each stage's last run",
                charts.bars([{"stage": st, "seconds": e.get("wall_s") or 0} for st, e in logged], "stage", "seconds",
                            title="seconds", by_value=False))
    else:
        s.para("No build log: these tables were not built in this checkout (e.g. `dvc pull`), so wall times and cache "
               "hits are not known. Tokens and cost below are as each row recorded them.", "note")
    usage = table_usage(c)
    s.table("Tokens and cost per stage and model, as the rows record them (cached answers count what they cost when made)",
            ["stage", "model", "calls", "tokens in", "tokens out", "cost (USD)", "call time (s)"],
            [[u["stage"], u["model"], fmt(u["calls"]), fmt(u["tokens_in"]), fmt(u["tokens_out"]), fmt(u["cost_usd"], 4),
              fmt(u["latency_s"], 2)] for u in usage])
    if usage:
        s.chart("tokens", "Tokens (in + out) per stage, by model",
                charts.stacked_bars([{"stage": u["stage"], "model": u["model"], "tokens": u["tokens_in"] + u["tokens_out"]}
                                     for u in usage], "stage", "tokens", "model", title="tokens"))
    return s


# --- judges ------------------------------------------------------------------------------------

AGREEMENT_HEADERS = ["evaluator", "size", "kappa [95%]", "accuracy", "flip rate", "position bias", "longer wins",
                     "n_eff [95%]", "alpha [95%]"]


def _agreement_row(r: dict) -> list:
    return [r["evaluator"], r["size"], est(r["kappa"], r["kappa_low"], r["kappa_high"]),
            est(r["accuracy"], r["accuracy_low"], r["accuracy_high"]), est(r["flip_rate"], r["flip_rate_low"], r["flip_rate_high"]),
            est(r["position_bias"], r["position_bias_low"], r["position_bias_high"]),
            est(r["longer_wins"], r["longer_wins_low"], r["longer_wins_high"]),
            est(r.get("n_eff"), r.get("n_eff_low"), r.get("n_eff_high"), 2), est(r.get("alpha"), r.get("alpha_low"), r.get("alpha_high"))]


def shown_evaluators(agreement: pl.DataFrame) -> list[dict]:
    """Single judges, the configured evaluator and the best jury of each size (the table's rows, ranked)."""
    rows = agreement.sort("rank").to_dicts()
    best: dict[int, str] = {}
    for r in rows:
        best.setdefault(r["size"], r["evaluator"])
    keep = {r["evaluator"] for r in rows if r["size"] == 1 or r["configured"]} | set(best.values())
    return [r for r in rows if r["evaluator"] in keep]


def _benchmark(s: Section, c: Context) -> None:
    agreement = c["agreement"]
    shown = shown_evaluators(agreement)
    s.para(f"Measured against the benchmark's human labels over {agreement['n_items'][0]:,} items: every combination of "
           "the panel's judges (a jury votes by the recipe's rule). n_eff is how many independent votes a jury is worth "
           "(Kish, from its members' error correlation); alpha is Krippendorff's alpha among its members.")
    s.table("Judges and juries (single judges, the configured one, the best of each size)", AGREEMENT_HEADERS,
            [_agreement_row(r) for r in shown])
    metrics_path = c.data_dir / "metrics.json"
    panel = json.loads(metrics_path.read_text()).get("panel") if metrics_path.exists() else None
    if panel and panel.get("judges", 1) > 1:
        s.para(f"The whole panel of {panel['judges']} judges is worth {est(panel['n_eff'], panel['n_eff_low'], panel['n_eff_high'], 2)} "
               f"independent votes (mean error correlation {fmt(panel['error_correlation'])}); Krippendorff's alpha among "
               f"them {est(panel['alpha'], panel['alpha_low'], panel['alpha_high'])}.")
    s.chart("kappa", "Cohen's kappa with the human labels (95% bootstrap interval)",
            charts.interval([{k: r[k] for k in ("evaluator", "kappa", "kappa_low", "kappa_high")} for r in shown
                             if r["kappa"] is not None], "evaluator", "kappa", title="Cohen's kappa", domain=[-1, 1]))
    if agreement["size"].max() > 1:
        s.chart("juries", "Every jury: size against kappa, coloured by n_eff",
                charts.scatter(agreement.select("evaluator", "size", "kappa", "n_eff").filter(pl.col("kappa").is_not_null()).to_dicts(),
                               "size", "kappa", color="n_eff", label="evaluator", titles=("jury size", "kappa", "n_eff")))
        s.chart("n_eff", "Independent votes (n_eff) of every jury of two or more, with its interval",
                charts.interval(agreement.filter(pl.col("size") > 1, pl.col("n_eff").is_not_null()).sort("size", "evaluator")
                                .select("evaluator", "n_eff", "n_eff_low", "n_eff_high").to_dicts(),
                                "evaluator", "n_eff", title="n_eff (votes)"))
    per_model = c["model_agreement"]
    s.table("Per-model agreement and bias score (the paper's Table 4), with the closest family relation of a member",
            ["evaluator", "model", "humans prefer it", "agreement [95%]", "bias [95%]", "family"],
            [[r["evaluator"], r["model"], fmt(r["n_human_prefers"]), est(r["agreement"], r["agreement_low"], r["agreement_high"]),
              est(r["bias"], r["bias_low"], r["bias_high"]), r["family"]] for r in per_model.to_dicts()])


def _gated(s: Section, c: Context) -> None:
    found = measured_agreement(c.recipe, c.data_dir.parent)
    if not found:
        s.para("No benchmark recipe measured this judge configuration against human labels (see `fellowship meta-eval`); "
               "the figures below come from this recipe's own scores.", "note")
        return
    rows = []
    for f in found:
        path = TABLES["agreement"].path(c.data_dir.parent / f["benchmark_recipe"])
        full = pl.read_parquet(path).filter(pl.col("fingerprint") == f["fingerprint"]).to_dicts() if path.exists() else []
        rows += [[f["benchmark_recipe"], *_agreement_row(r)] for r in full] or [
            [f["benchmark_recipe"], f["evaluator"], "", est(f["kappa"], f["kappa_low"], f["kappa_high"]), *[""] * 6]]
    s.para("This judge configuration was measured against human labels by a benchmark recipe (its gate file):")
    s.table("Agreement with humans of this configuration", ["benchmark recipe", *AGREEMENT_HEADERS], rows)


def judges_section(c: Context) -> Section:
    s = Section("judges", "The judges")
    r = c.recipe
    s.para(f"Verdicts by {judge_description(r)}; mode `{r.judge.mode}`, rule `{r.judge.rule}`, tie policy "
           f"`{r.judge.tie_policy}`.")
    rows = family_check.rows(r, family_check.table_writers(r, c["candidates"]))
    flagged = families.warning(rows)
    if flagged:
        s.para(f"Self-preference risk: {flagged}.", "warn")
    s.table("Model families: every judge against every model that wrote a candidate",
            ["judge", "judge model", "judge family", "writer", "writer family", "relation"],
            [[x["judge"], x["judge_model"], x["judge_family"] or "?", x["writer"], x["writer_family"] or "?", x["relation"]]
             for x in rows])
    if r.source.labelled:
        _benchmark(s, c)
    else:
        _gated(s, c)
    own = judges.figures(r, c["candidates"], c["scores"])
    s.table("From this recipe's own scores (no human labels): 95% bootstrap intervals over items",
            ["judge", "model", "calls", "failed", "flip rate", "position bias", "longer-answer win rate"],
            [[f["judge"], f["judge_model"] or "—", fmt(f["calls"]), fmt(f["failed"]), est(*f["flip_rate"]),
              est(*f["position_bias"]), est(*f["longer_wins"])] for f in own])
    positions = [{"judge": f["judge"], "position": chr(65 + p["position"]), "mean score": p["mean"]}
                 for f in own for p in f["by_position"]]
    if positions:
        s.chart("positions", "Mean score (share of the scale) by the position a candidate was shown in",
                charts.grouped_bars(positions, "position", "mean score", "judge", title="mean score / scale", domain=[0, 1]))
    bins = judges.score_bins(c["scores"])
    if bins:
        s.chart("scores", "Score distribution per judge (score / scale)", charts.histogram(bins, title="score / scale", facet="judge"))
    iterations = judges.by_iteration(c["candidates"], c["scores"])
    if iterations and len({x["iteration"] for x in iterations}) > 1:
        s.chart("iterations", "Scores per candidate iteration: median and interquartile range (tick: mean)",
                charts.quartiles(iterations, "iteration", title="score / scale", color="judge"))
    return s


# --- win rates ---------------------------------------------------------------------------------

def win_rates_section(c: Context) -> Section | None:
    if not c.recipe.compare:
        return None
    s = Section("win-rates", "Win rates")
    rows = c["win_rates"].to_dicts()
    s.para(f"Each workflow's picked answer against each baseline's, judged in both orders (a flip is a tie); ties count "
           f"as `{c.recipe.compare.ties}`. Length-controlled: AlpacaEval's regression on the length difference, read at "
           "equal lengths; style-controlled: the same with markdown density added, read at equal length and density.")
    s.table("Workflow x baseline", ["workflow", "baseline", "prompts", "wins", "losses", "ties", "inconsistent",
                                    "win rate [95%]", "length-controlled [95%]", "style-controlled [95%]"],
            [[r["workflow"], r["baseline"], fmt(r["n_prompts"]), fmt(r["wins"]), fmt(r["losses"]), fmt(r["ties"]),
              fmt(r["inconsistent"]), est(r["win_rate"], r["win_rate_low"], r["win_rate_high"]),
              est(r["lc_win_rate"], r["lc_win_rate_low"], r["lc_win_rate_high"]),
              est(r["sc_win_rate"], r["sc_win_rate_low"], r["sc_win_rate_high"])] for r in rows])
    if rows:
        s.chart("win_matrix", "Win rate matrix", charts.heatmap(
            [{"workflow": r["workflow"], "baseline": r["baseline"], "win_rate": r["win_rate"],
              "label": est(r["win_rate"], r["win_rate_low"], r["win_rate_high"], 2)} for r in rows], title="win rate"))
        points = [{"pair": f"{r['workflow']} vs {r['baseline']} ({kind})", "kind": kind, "win_rate": r[f"{p}win_rate"],
                   "win_rate_low": r[f"{p}win_rate_low"], "win_rate_high": r[f"{p}win_rate_high"]}
                  for r in rows for p, kind in (("", "raw"), ("lc_", "length-controlled"), ("sc_", "style-controlled"))
                  if r[f"{p}win_rate"] is not None]
        s.chart("win_intervals", "Win rates with 95% bootstrap intervals: raw, length- and style-controlled",
                charts.interval(points, "pair", "win_rate", title="win rate", domain=[0, 1], color="kind"))
    return s


# --- data --------------------------------------------------------------------------------------

def data_section(c: Context) -> Section:
    s = Section("data", "The data")
    v, dpo, kto = c["verdicts"], c["dpo"], c["kto"]
    problems = c["candidates"]["problem"].drop_nulls()
    s.para(f"{v.height:,} prompts, {c['candidates'].height:,} candidates ({problems.len():,} no answer), "
           f"{dpo.height:,} DPO pairs, {kto.height:,} KTO examples ({int(kto['label'].sum()):,} desirable).")
    statuses = v["status"].value_counts(sort=True).rename({"count": "prompts"}).to_dicts()
    s.chart("statuses", "Verdicts by status", charts.bars(statuses, "status", "prompts", title="prompts"))
    if dpo.height:
        scale = c.recipe.judge.panel.scale
        bins = (dpo.with_columns(bin=((pl.col("margin") / scale * 20).floor().clip(0, 19) / 20).round(4))
                .group_by("bin").agg(pl.len().alias("count")).sort("bin").to_dicts())
        s.chart("margins", "DPO pairs by score margin (chosen - rejected, share of the scale)",
                charts.histogram([{**b, "bin_end": round(b["bin"] + 0.05, 4)} for b in bins], title="margin / scale"))
    return s


def all_sections(c: Context) -> list[Section]:
    return [x for x in (build_section(c), judges_section(c), win_rates_section(c), data_section(c)) if x is not None]
