"""The dataset card published with a recipe's `dpo` and `kto` configs (and `dpo_feedback`,
`kto_feedback` when it has them): Hub metadata (configs and data
files, licence, task categories, size category, tags) and a body that tells how the data was made
(source, models and roles, workflow, judge and its measured agreement with humans), what is in it
(counts, score margins, ties, KTO balance), what it cost, and how to load and train on it.

Everything here comes from the recipe and the built tables. Only the models the recipe uses are
named, and the whole card passes through `builders.redact`: no key, bearer token, URL user info or
key-like query parameter reaches it (recipes only name the variables that hold keys, and the card
does not print even those).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import yaml

from builders import family_check
from builders.export_checks import kto_balance
from builders.gate import GATES_DIR, fingerprint, read_gate
from builders.llm.budget import CHARS_PER_TOKEN, estimate_tokens
from builders.llm.registry import used_models
from builders.preferences import judge_description
from builders.recipe import Recipe
from builders.redact import redact
from builders.tables import CANDIDATES, DEBATES, DPO, DPO_FEEDBACK, KTO, KTO_FEEDBACK, SCORES, VERDICTS, read_table
from metrics import families

SIZES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"))


def size_category(n: int) -> str:
    return next((label for limit, label in SIZES if n < limit), "1M<n<10M")


def metadata(recipe: Recipe, n_rows: int, configs: tuple[str, ...] | list[str] = ("dpo", "kto")) -> dict:
    """The card's YAML header, in the Hub's dataset-card schema."""
    return {
        "license": recipe.export.license,
        "task_categories": ["text-generation"],
        "tags": ["dpo", "kto", "preference", "synthetic", "llm-as-a-judge", "fellowship", *recipe.export.tags],
        "size_categories": [size_category(n_rows)],
        "pretty_name": recipe.name,
        "configs": [
            {"config_name": name, "data_files": [{"split": "train", "path": f"{name}/train-*.parquet"}]}
            for name in configs
        ],
    }


def roles(recipe: Recipe) -> dict[str, list[str]]:
    """Recipe model name -> what it does in this recipe."""
    out: dict[str, list[str]] = {}
    g, panel = recipe.generation, recipe.judge.panel
    if g.generator:
        out.setdefault(g.generator, []).append("generator")
    for r in g.reviewers:
        out.setdefault(r, []).append("reviewer")
    for m in panel.models:
        out.setdefault(m, []).append("judge" + ("" if m in recipe.judge.voters else " (not voting)"))
    for role, m in (panel.debate.referees.items() if panel.debate else []):
        out.setdefault(m, []).append(f"debate referee ({role.replace('_', ' ')})")
    return out


def measured_agreement(recipe: Recipe, data_root: Path) -> list[dict]:
    """Every benchmark measurement of exactly this judge configuration (see builders/gate.py)."""
    mine = fingerprint(recipe, recipe.judge.voters)
    found = []
    for path in sorted((data_root / GATES_DIR).glob("*.json")):
        for e in read_gate(path):
            if e["fingerprint"] == mine:
                found.append({"benchmark_recipe": path.stem, **e})
    return found


def usage(data_dir: Path) -> list[tuple[str, int, int, int, float]]:
    """(stage, calls, tokens in, tokens out, cost) as recorded when each row was written."""
    c = read_table(CANDIDATES, data_dir)
    d = read_table(DEBATES, data_dir)
    s = read_table(SCORES, data_dir).unique("call_id")  # usage repeats per candidate of a call
    rows = [
        ("generation", int((c["workflow"] != "import").sum()), int(c["tokens_in"].sum()), int(c["tokens_out"].sum()),
         float(c["cost_usd"].sum())),
        ("reviews", int(c["review"].is_not_null().sum()), int(c["review_tokens_in"].sum()),
         int(c["review_tokens_out"].sum()), float(c["review_cost_usd"].sum())),
        ("debates", d.height, int(d["tokens_in"].sum()), int(d["tokens_out"].sum()), float(d["cost_usd"].sum())),
        ("judging", s.height, int(s["tokens_in"].sum()), int(s["tokens_out"].sum()), float(s["cost_usd"].sum())),
    ]
    return [r for r in rows if r[1]]


def family_line(recipe: Recipe, candidates: pl.DataFrame) -> str:
    """The card's line on self-preference: judges that share a model or family with the answers' writers."""
    rows = family_check.rows(recipe, family_check.table_writers(recipe, candidates))
    flagged = families.warning(rows)
    if flagged:
        return f"- **Self-preference risk:** {flagged}."
    makers = sorted({f"`{r['judge']}` and {r['writer']}" for r in rows if r["relation"] == "same_maker"})
    unknown = sorted({r["writer"] for r in rows if r["relation"] == "unknown"} | {
        r["judge_model"] for r in rows if r["relation"] == "unknown" and r["judge_family"] is None})
    line = "- Model families: no judge shares a model or family with the writers of the answers"
    line += f"; same maker: {', '.join(makers)}" if makers else ""
    line += f"; family not known for {', '.join(unknown)}" if unknown else ""
    return line + "."


def _tokens(messages: list[dict], answer: str) -> int:
    """Estimated tokens of a conversation and its answer (`estimate_tokens`)."""
    return estimate_tokens([*messages, {"role": "assistant", "content": answer}])


def length_line(recipe: Recipe, dpo: pl.DataFrame, kto: pl.DataFrame) -> str:
    """How many pairs and examples are longer than `export.max_length` tokens, estimated."""
    limit = recipe.export.max_length
    pairs = sum(max(_tokens(m, c), _tokens(m, r)) > limit for m, c, r in dpo.select("messages", "chosen", "rejected").iter_rows())
    examples = sum(_tokens(m, c) > limit for m, c in kto.select("messages", "completion").iter_rows())
    return (f"- Length: {pairs} of {dpo.height} pairs and {examples} of {kto.height} KTO examples are longer than "
            f"`export.max_length` = {limit} tokens (prompt and answer together; for a pair, the longer answer). "
            f"Tokens are an estimate, not a tokenizer's count: {CHARS_PER_TOKEN} characters a token plus a few per "
            f"message (Fellowship bundles no tokenizer of the model you will train). Set TRL's `max_length` to "
            f"your value: TRL truncates longer examples and drops those whose answer does not survive it.")


FORMATS = {
    "conversational": "TRL's conversational format: `prompt` is a list of `{role, content}` messages ending with the "
                      "user's turn, and each answer is a list holding the assistant's turn",
    "standard": "TRL's standard format: `prompt` and each answer are plain text",
}


def _table(header: tuple[str, ...], rows: list[tuple]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(str(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)


def _stats(values: pl.Series) -> str:
    if values.is_empty():
        return "none"
    return (f"mean {values.mean():.2f}, median {values.median():.2f}, min {values.min():.2f}, "
            f"max {values.max():.2f}")


def feedback_section(recipe: Recipe, pairs: pl.DataFrame, reviews: pl.DataFrame, repo_id: str) -> str:
    """What the card says of the workflow-improvement configs (the paper's second kind of dataset)."""
    balance = kto_balance(reviews)
    return f"""
## Feedback datasets (improving the workflow)

The paper's second kind of PO dataset, "to improve ... multi-model capabilities including better
communication and improved feedback": preferences over the reviewer's feedback. Each `prompt` is the
reviewer's own (the paper's Table 12: its system prompt and the user message with the question and
the answer it reviewed); each answer is a review the reviewer wrote. A review is judged by the
revision it led to: for each prompt, the review whose revision the judge ranked first is `chosen`,
each review whose revision scored lower (by at least {recipe.export.min_margin}) is `rejected`.
The reviews of one prompt were written on different answers of the loop, so a pair's `prompt` is the
chosen review's and `rejected_prompt` keeps the one the rejected review answered. Both configs are in
the same format as `dpo` and `kto`, with the reviewer's system prompt in the prompt.

- `dpo_feedback`: {pairs.height} pairs; margin {_stats(pairs["margin"])}.
- `kto_feedback`: {reviews.height} reviews, {balance["desirable"]} desirable and {balance["undesirable"]} undesirable, interleaved like `kto`.

```python
dpo_feedback = load_dataset("{repo_id}", "dpo_feedback", split="train")
kto_feedback = load_dataset("{repo_id}", "kto_feedback", split="train")
```
"""


def card(recipe: Recipe, data_dir: Path, repo_id: str, configs: list[str] | None = None) -> str:
    dpo, kto = read_table(DPO, data_dir), read_table(KTO, data_dir)
    pairs, reviews = read_table(DPO_FEEDBACK, data_dir), read_table(KTO_FEEDBACK, data_dir)
    configs = configs or ["dpo", "kto"] + [n for n, df in (("dpo_feedback", pairs), ("kto_feedback", reviews)) if df.height]
    verdicts = read_table(VERDICTS, data_dir)
    g, j, s = recipe.generation, recipe.judge, recipe.source
    header = yaml.safe_dump(metadata(recipe, max(dpo.height, kto.height), configs), sort_keys=False, allow_unicode=True)
    specs = recipe.models
    models = _table(("name", "provider/model", "role", "temperature", "max tokens"), [
        (name, f"{specs[name].provider}/{specs[name].model}", ", ".join(r), specs[name].temperature, specs[name].max_tokens)
        for name, r in roles(recipe).items()
    ])
    if g.workflow == "feedback":
        workflow = (f"the paper's LLM Feedback Loop: `{g.generator}` answers, {', '.join(f'`{r}`' for r in g.reviewers)} "
                    f"review{'s' if len(g.reviewers) == 1 else ''} (evaluation, score out of 10, feedback), the generator "
                    f"revises; {g.iterations} answers per prompt, each a candidate")
    elif g.workflow == "single":
        workflow = f"`{g.generator}` answers each prompt {g.iterations} time(s); each answer is a candidate"
    else:
        workflow = "answers imported from the source: " + ", ".join(f"`{a.column}`" for a in g.answers)
    candidates = read_table(CANDIDATES, data_dir)
    agreement = measured_agreement(recipe, data_dir.parent)
    if agreement:
        measured = "\n".join(
            f"- Cohen's kappa with human labels on benchmark recipe `{a['benchmark_recipe']}`: **{a['kappa']:.3f}** "
            f"(95% bootstrap interval {a['kappa_low']:.3f} to {a['kappa_high']:.3f}; {a['n_items']} items)"
            for a in agreement if a["kappa"] is not None
        )
    else:
        measured = "- Not measured against human labels (no benchmark recipe measured this judge configuration)."
    gate = recipe.export.gate
    gate_line = (f"- Export gate: kappa ({gate.bound}) at least {gate.min_kappa} on `{gate.benchmark}`.\n"
                 if gate else "")
    status = ", ".join(f"{k} {n}" for k, n in verdicts["status"].value_counts(sort=True).iter_rows())
    problems = candidates["problem"].drop_nulls().value_counts(sort=True)
    no_answer = (f"{problems['count'].sum()} of {candidates.height} candidates were no answer ("
                 + ", ".join(f"{k} {n}" for k, n in problems.iter_rows()) + ") and were never judged or exported"
                 if problems.height else f"all {candidates.height} candidates were answers (none empty, blank, refused or cut off)")
    balance = kto_balance(kto)
    spend = _table(("stage", "calls", "tokens in", "tokens out", "cost (USD)"),
                   [(st, n, f"{ti:,}", f"{to:,}", f"{cost:.4f}") for st, n, ti, to, cost in usage(data_dir)])
    recipe_text = recipe_section(recipe)
    text = f"""---
{header}---

# {recipe.name}

{recipe.description or "A preference-optimization dataset built with Fellowship."}

Two main configurations of one dataset, `dpo` (pairs: `prompt`, `chosen`, `rejected`) and `kto` (single
answers: `prompt`, `completion`, `label`), in the column formats TRL's `DPOTrainer` and `KTOTrainer`
read, in {FORMATS[recipe.export.format]} (`export.format: {recipe.export.format}`).
Built with Fellowship from the recipe below, following "The Fellowship of the LLMs" (Arif et
al., 2024): an LLM workflow writes several answers per prompt, LLM judges score them, the best is
chosen and the others rejected.

## How it was made

- Source: {s.benchmark or s.dataset or s.path}: {verdicts.height} prompts{f" (a seeded sample, seed {s.seed})" if s.sample else ""}.
- Generation: {workflow}.
- Judge: {judge_description(recipe)}; mode `{j.mode}`, tie policy `{j.tie_policy}`. A judge whose winner changes with the order the candidates are shown in decides nothing.
{family_line(recipe, candidates)}
{measured}
{gate_line}
{models}

## What is in it

- `dpo`: {dpo.height} pairs ({recipe.export.pairing.replace('_', ' ')}, minimum margin {recipe.export.min_margin}); score margin {_stats(dpo["margin"])}.
- `kto`: {kto.height} examples, {balance["desirable"]} desirable and {balance["undesirable"]} undesirable{f"; with KTOTrainer, `undesirable_weight={balance['undesirable_weight']}` balances them" if balance["undesirable_weight"] else ""}. Rows are in the order KTOTrainer reads them, one after another (`position`): desirable and undesirable rows, and different prompts, alternate (seed {recipe.export.seed}), since KTO's KL term comes from the other rows of a batch.
- `dpo` `margin` (chosen score minus rejected score) is the per-row margin TRL's `RewardTrainer` reads.
{length_line(recipe, dpo, kto)}
- Verdicts: {status}; {int(verdicts["is_tie"].sum())} of {verdicts.height} items had a tie for the best answer (a tied answer is never rejected).
- Candidates: {no_answer}.

Every row carries its lineage: the writer (`generator`, `reviewers`, `iteration`, per side in `dpo`), the
`judge` and `judge_models`, and hashes of the prompt templates (`template_hash`) and of the recipe
(`recipe_hash`).

## Cost

{spend}

## Use

```python
from datasets import load_dataset

dpo = load_dataset("{repo_id}", "dpo", split="train")
kto = load_dataset("{repo_id}", "kto", split="train")
```

```python
from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer

DPOTrainer(model=model, args=DPOConfig(output_dir="dpo"), train_dataset=dpo, processing_class=tokenizer).train()
KTOTrainer(model=model, args=KTOConfig(output_dir="kto"{f", undesirable_weight={balance['undesirable_weight']}" if balance["undesirable_weight"] else ""}),
           train_dataset=kto, processing_class=tokenizer).train()
```

{feedback_section(recipe, pairs, reviews, repo_id) if "dpo_feedback" in configs else ""}
## Recipe

```yaml
{recipe_text}```

The answers are model outputs, under the terms of the providers that served them.
"""
    return redact(text)


def recipe_section(recipe: Recipe) -> str:
    """The recipe as the card shows it: its sections, with only the models it uses (and no api_key_env)."""
    sections = recipe.model_dump(mode="json", include={"source", "models", "generation", "judge", "export"})
    used = used_models(recipe)
    sections["models"] = {name: {k: v for k, v in spec.items() if k != "api_key_env"}
                          for name, spec in sections["models"].items() if name in used}
    return yaml.safe_dump(sections, sort_keys=False, allow_unicode=True)
