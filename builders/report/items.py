"""The report's pair list: one record per prompt, with what the page's filters and views need.

A record holds the prompt, its verdict and why, flags for the filters (an inconsistent verdict, a
tie, the margin between the chosen candidate and the next, candidates left out of the exports),
and one entry per view in `ITEM_SECTIONS`: the candidates, the judge's calls in every order (its
reasoning verbatim and its scores), the debate if any, and the DPO pairs and KTO labels it gave.

The seam for more views: add a function `(context, item) -> JSON-able value` to `ITEM_SECTIONS`
and a renderer of the same name to `VIEWS` in `builders/report_assets/report.js`. The
conversational view of the feedback loop (generator answer, reviews, revisions) is to come in as
`ITEM_SECTIONS["conversation"]`; nothing here builds conversations yet.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Callable

import polars as pl

from builders.report.sections import Context


@dataclass
class Item:
    """One prompt's rows, gathered once for every section function."""

    item_id: str
    prompt: str
    earlier: list[dict]  # the conversation before the last user turn (system message, earlier turns)
    reference: str | None  # the reference answer the judges saw beside the candidates
    verdict: dict
    candidates: list[dict]
    scores: list[dict]
    turns: list[dict]
    dpo: list[dict]
    kto: list[dict]
    label: dict | None


def _candidates(c: Context, item: Item) -> list[dict]:
    v, exported = item.verdict, {k["candidate_id"]: k["label"] for k in item.kto}
    mean = dict(zip(v["ranking"], v["ranking_scores"]))
    in_pairs = {d["chosen_id"] for d in item.dpo} | {d["rejected_id"] for d in item.dpo}
    out = []
    for cand in sorted(item.candidates, key=lambda x: (x["iteration"], x["candidate_id"])):
        cid = cand["candidate_id"]
        out.append({
            "id": cid,
            "iteration": cand["iteration"],
            "workflow": cand["workflow"],
            "generator": cand["generator"],
            "reviewers": list(cand["reviewers"]),
            "response": cand["response"],
            "problem": cand["problem"],
            "finish_reason": cand["finish_reason"],
            "review_score": cand["review_score"],
            "score": mean.get(cid),
            "rank": v["ranking"].index(cid) + 1 if cid in v["ranking"] else None,
            "chosen": cid == v["chosen_id"],
            "kto": exported.get(cid),
            "in_dpo": cid in in_pairs,
            "dropped": None if cid in exported or cid in in_pairs else _why_dropped(c, item, cand, mean),
        })
    return out


def _why_dropped(c: Context, item: Item, cand: dict, mean: dict) -> str:
    v = item.verdict
    if cand["problem"]:
        return f"no answer ({cand['problem']}): never judged or exported"
    if v["status"] != "ok":
        return f"the verdict is `{v['status']}`: the prompt gave no pair"
    cid, chosen = cand["candidate_id"], v["chosen_id"]
    if cid not in mean:
        return "no readable score"
    if cid == chosen:
        return "chosen, but there was no answer to pair it with"
    if mean[cid] >= mean[chosen]:
        return "scored as high as the chosen answer (a tie is never rejected)"
    if mean[chosen] - mean[cid] < c.recipe.export.min_margin:
        return f"within export.min_margin ({c.recipe.export.min_margin}) of the chosen answer"
    return "same text as the chosen answer"


def _judging(c: Context, item: Item) -> list[dict]:
    """Each judge call in order: who judged, what it showed in which order, its scores and its text."""
    calls: dict[str, list[dict]] = defaultdict(list)
    for s in item.scores:
        calls[s["call_id"]].append(s)
    out = []
    for rows in calls.values():
        rows.sort(key=lambda r: r["position"])
        first = rows[0]
        out.append({
            "judge": first["judge"],
            "judge_model": first["judge_model"],
            "presentation": first["presentation"],
            "shown": [r["candidate_id"] for r in rows],
            "scores": [r["score"] for r in rows],
            "scale": first["scale"],
            "score_mode": first["score_mode"],
            "outcome": first["outcome"],
            "parse_error": first["parse_error"],
            "attempts": first["attempts"],
            "raw": first["raw"],
        })
    out.sort(key=lambda x: (x["judge"], x["shown"] != sorted(x["shown"]), x["presentation"], x["shown"]))
    return out


def _debate(c: Context, item: Item) -> list[dict]:
    return [{"presentation": t["presentation"], "round": t["round"], "role": t["role"], "referee": t["referee_model"],
             "message": t["message"]} for t in sorted(item.turns, key=lambda t: (t["debate_id"], t["turn"]))]


def _exports(c: Context, item: Item) -> dict:
    return {
        "dpo": [{"chosen_id": d["chosen_id"], "rejected_id": d["rejected_id"], "chosen_score": d["chosen_score"],
                 "rejected_score": d["rejected_score"], "margin": d["margin"]} for d in item.dpo],
        "kto": [{"candidate_id": k["candidate_id"], "label": k["label"], "score": k["score"]} for k in item.kto],
    }


ITEM_SECTIONS: dict[str, Callable[[Context, Item], object]] = {
    "candidates": _candidates,
    "judging": _judging,
    "debate": _debate,
    "exports": _exports,
}


def why(c: Context, item: Item) -> str:
    """The verdict in one sentence."""
    v, j = item.verdict, c.recipe.judge
    iteration = {x["candidate_id"]: x["iteration"] for x in item.candidates}
    scale = j.panel.scale
    if v["status"] == "ok":
        cid = v["chosen_id"]
        orders = f"; {v['n_orders_agreeing']} of {v['n_orders']} presentation orders put it first" if v["n_orders"] else ""
        votes = f"; {round((v['agreement'] or 0) * v['n_votes'])} of {v['n_votes']} votes" if v["n_votes"] > 1 else ""
        tie = f"; tied for best, settled by tie_policy `{j.tie_policy}`" if v["is_tie"] else ""
        return (f"Chose iteration {iteration.get(cid)} ({cid[:8]}), mean score {v['chosen_score']:.2f} of {scale}"
                f"{orders}{votes}{tie}.")
    return {
        "inconsistent": f"No verdict: the judges' best answer changed with the presentation order ({v['n_inconsistent']} "
                        "judge(s) inconsistent), so their calls count for nothing.",
        "tie_dropped": "No verdict: candidates tied for best and tie_policy is `drop`.",
        "too_few_scored": f"No verdict: {v['n_scored']} of {v['n_candidates']} candidates have a readable score "
                          f"(judge.min_scored is {j.min_scored}).",
        "no_votes": "No verdict: no judge voted.",
    }.get(v["status"], f"No verdict: {v['status']}.")


def _items(c: Context) -> list[Item]:
    group = lambda df: defaultdict(list, {k: g.to_dicts() for (k,), g in df.group_by("item_id", maintain_order=True)})
    candidates, scores = group(c["candidates"]), group(c["scores"])
    turns, dpo, kto = group(c["debates"]), group(c["dpo"]), group(c["kto"])
    labels = {r["item_id"]: r for r in c["labels"].to_dicts()}
    verdicts = {r["item_id"]: r for r in c["verdicts"].to_dicts()}
    out = []
    items = c["items"].sort("source_row")
    columns = [n for n in ("messages", "reference") if n in items.columns]
    for row in items.select("item_id", "prompt", *columns).iter_rows(named=True):
        item_id = row["item_id"]
        if item_id in verdicts:
            out.append(Item(item_id, row["prompt"], (row.get("messages") or [])[:-1], row.get("reference"),
                            verdicts[item_id], candidates[item_id], scores[item_id], turns[item_id],
                            dpo[item_id], kto[item_id], labels.get(item_id)))
    return out


def item_records(c: Context, max_items: int) -> dict:
    """{"items": [...], "total": n, "shown": k} for the page; at most `max_items`, in source order."""
    all_items = _items(c)
    scale = c.recipe.judge.panel.scale
    records = []
    for item in all_items[:max_items]:
        v = item.verdict
        scores = v["ranking_scores"]
        margin = (scores[0] - scores[1]) / scale if v["status"] == "ok" and len(scores) > 1 else None
        record = {
            "id": item.item_id,
            "prompt": item.prompt,
            "earlier": item.earlier,
            "reference": item.reference,
            "status": v["status"],
            "chosen_id": v["chosen_id"],
            "is_tie": v["is_tie"],
            "n_votes": v["n_votes"],
            "n_inconsistent": v["n_inconsistent"],
            "n_orders": v["n_orders"],
            "n_orders_agreeing": v["n_orders_agreeing"],
            "margin": margin,
            "why": why(c, item),
            "human": {k: item.label[k] for k in ("human_winner", "model_a", "model_b", "candidate_a", "candidate_b")}
            if item.label else None,
            **{name: section(c, item) for name, section in ITEM_SECTIONS.items()},
        }
        record["flags"] = {
            "inconsistent": v["status"] == "inconsistent" or v["n_inconsistent"] > 0,
            "split": v["n_orders_agreeing"] < v["n_orders"],
            "tie": bool(v["is_tie"]) or v["status"] == "tie_dropped",
            "dropped": any(x["dropped"] for x in record["candidates"]),
        }
        records.append(record)
    return {"items": records, "total": len(all_items), "shown": len(records), "scale": scale}


def frame_of(records: dict) -> pl.DataFrame:
    """The records' filter fields as a frame (for tests and for counting)."""
    return pl.DataFrame([{"id": r["id"], "status": r["status"], **r["flags"], "margin": r["margin"]} for r in records["items"]])
