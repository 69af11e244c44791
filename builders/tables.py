"""Every table's schema, grain, primary key and column docs, and the only code that reads or writes them.

Schemas are declared here, never inferred from data. `write_table` checks a frame against its
schema and primary key and replaces the file atomically, so a killed build never leaves half a table.
Every file is written to a hidden temporary file of its own writer (`temp_path`) that only that
writer removes; a failed write (a full disk) is one line naming the file, and leaves nothing behind.
A table that cannot be read (a damaged file) is one line naming it and the command that rebuilds it.
Tables are sorted by primary key, except `items` (in the source's order) and those a stage streams
(`TableWriter`: `candidates` of a generating workflow), which are in their items' order.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from builders.conversation import MESSAGES
from builders.errors import TableError, first_line
from builders.memory import release_free_memory


@dataclass(frozen=True)
class Column:
    name: str
    dtype: pl.DataType
    doc: str
    nullable: bool = False


@dataclass(frozen=True)
class Table:
    name: str
    grain: str
    primary_key: tuple[str, ...]
    columns: tuple[Column, ...]
    order_by: tuple[str, ...] = ()  # how `write_table` sorts the rows (the primary key unless given)
    # Rows are kept in the items' order (each item's rows together, the items as in the items table),
    # as the stage that writes them gives them: later stages read such tables an item at a time
    # (`builders.by_item`), so no stage needs a whole table in memory or a sort. Such a table's
    # primary key is made from its item (a content id over the item's id or its candidates' ids).
    in_items_order: bool = False

    @property
    def schema(self) -> pl.Schema:
        return pl.Schema({c.name: c.dtype for c in self.columns})

    def path(self, data_dir: Path | str) -> Path:
        return Path(data_dir) / f"{self.name}.parquet"


def _usage(what: str) -> tuple[Column, ...]:
    return (
        Column("tokens_in", pl.Int64, f"prompt tokens of {what}"),
        Column("tokens_out", pl.Int64, f"completion tokens of {what}"),
        Column("cost_usd", pl.Float64, f"cost of {what} in US dollars, from the recipe's model prices"),
        Column("latency_s", pl.Float64, f"wall time of {what} when it was made, in seconds"),
    )


ITEMS = Table(
    "items",
    "one row per source prompt (duplicates dropped)",
    ("item_id",),
    (
        Column("item_id", pl.String, "content hash of the prompt; a labelled benchmark's own row id"),
        Column("prompt", pl.String, "the user's last turn, as text: the whole prompt of a text source, the final user "
               "message of a chat source (the turn the answers reply to)"),
        Column("messages", MESSAGES, "the conversation the answers follow, as {role, content} messages: the source's "
               "system message and earlier turns, then `prompt` as the last user turn (one user message for a text "
               "source); null where each answer follows its own model's earlier answers (source.turns: all on a later "
               "turn: see candidates.context)", nullable=True),
        Column("reference", pl.String, "the reference answer (source.reference_column), shown to the judges beside "
               "the answers; never a candidate, never exported (null when the source has none for the row)", nullable=True),
        Column("source_row", pl.Int64, "0-based row number in the source"),
        Column("source_id", pl.String, "the source's own id (`source.id_column`), if any", nullable=True),
    ),
    order_by=("source_row",),  # the source's order: stages send their calls in it (a retried prompt is not left to the end)
)

CANDIDATES = Table(
    "candidates",
    "one row per generated response: item x workflow x iteration",
    ("candidate_id",),
    (
        Column("candidate_id", pl.String, "hash of item, workflow, generator, reviewers and iteration"),
        Column("item_id", pl.String, "the prompt this answers"),
        Column("workflow", pl.String, "`single`, `feedback` or `import` (an answer taken from the source)"),
        Column("generator", pl.String, "recipe name of the generating model (import: the writer the source names)"),
        Column("generator_model", pl.String, "provider/model id of the generator (import: the writer the source names)"),
        Column("reviewers", pl.List(pl.String), "recipe names of the reviewers (empty for `single`)"),
        Column("iteration", pl.Int64, "1 for the first answer, k for the (k-1)th revision (import: k-th imported column)"),
        Column("response", pl.String, "the generated response"),
        Column("context", MESSAGES, "the conversation this response answers when it is its own, not the item's "
               "`messages`: an imported answer to a later turn, after its model's own earlier answers "
               "(source.turns: all); null otherwise", nullable=True),
        Column("problem", pl.String, "why the response is no answer (`empty`, `whitespace`, `refused`, `truncated`): never "
               "judged, chosen or exported; null for an answer", nullable=True),
        Column("finish_reason", pl.String, "why the generator stopped (`stop`, `length`, ...; null for imported answers)", nullable=True),
        Column("feedback", pl.String, "the reviewers' feedback that led to this revision (null for iteration 1)", nullable=True),
        Column("review", pl.String, "the reviewers' full reviews of this response (null when not reviewed)", nullable=True),
        Column("review_score", pl.Float64, "mean reviewer score of this response out of 10 (null when not reviewed or unparseable)", nullable=True),
        *_usage("the generator call"),
        Column("review_tokens_in", pl.Int64, "prompt tokens of the reviewer calls on this response"),
        Column("review_tokens_out", pl.Int64, "completion tokens of the reviewer calls on this response"),
        Column("review_cost_usd", pl.Float64, "cost of the reviewer calls on this response"),
    ),
    in_items_order=True,
)

HUMAN_WINNERS = ("model_a", "model_b", "tie")

LABELS = Table(
    "labels",
    "one row per human-labelled item of a benchmark (empty unless source.label_column is set)",
    ("item_id",),
    (
        Column("item_id", pl.String, "the benchmark row"),
        Column("candidate_a", pl.String, "candidate id of the first answer (model_a's)"),
        Column("candidate_b", pl.String, "candidate id of the second answer (model_b's)"),
        Column("model_a", pl.String, "who wrote the first answer"),
        Column("model_b", pl.String, "who wrote the second answer"),
        Column("human_winner", pl.String, "the human label: `model_a`, `model_b` or `tie`"),
    ),
    in_items_order=True,
)

DEBATES = Table(
    "debates",
    "one row per referee turn in a debate (empty unless judge.mode is debate)",
    ("turn_id",),
    (
        Column("turn_id", pl.String, "hash of the debate (item, candidates in order) and the turn"),
        Column("debate_id", pl.String, "the debate: one per item and presentation order"),
        Column("item_id", pl.String, "the prompt"),
        Column("candidate_ids", pl.List(pl.String), "the candidates debated, in presentation order (A, B, ...)"),
        Column("presentation", pl.Int64, "the order the candidates are shown in (see `scores.presentation`)"),
        Column("round", pl.Int64, "1-based round"),
        Column("turn", pl.Int64, "0-based place of the turn in the whole debate"),
        Column("role", pl.String, "`general_public`, `psychologist` or `critic`"),
        Column("referee_model", pl.String, "recipe name of the model playing the role"),
        Column("message", pl.String, "what the referee said"),
        *_usage("the turn's call"),
    ),
    in_items_order=True,
)

SCORES = Table(
    "scores",
    "one row per judge call outcome for one candidate in one presentation order",
    ("score_id",),
    (
        Column("score_id", pl.String, "hash of call_id and candidate"),
        Column("call_id", pl.String, "the judge call (one call scores all candidates it shows); usage columns repeat per call"),
        Column("item_id", pl.String, "the prompt"),
        Column("candidate_id", pl.String, "the candidate scored"),
        Column("judge", pl.String, "recipe name of the judge model, or the referee role in a debate"),
        Column("judge_model", pl.String, "provider/model id of the judge"),
        Column("strategy", pl.String, "`direct` (pick per pair), `independent` (one response a call), `combined` (all in one call) or `debate` (a referee's final scores)"),
        Column("scale", pl.Int64, "maximum score (5, 10 or 100); direct picks score 1 (win), 0.5 (tie), 0 (loss)"),
        Column("presentation", pl.Int64, "the order shown: 0 for the first; with `orders: rotations`, k for the list rotated by k "
               "(so every candidate is once in every position); with `reverse`, 1 for the reversed list"),
        Column("is_swapped", pl.Boolean, "true for every presentation but the first (position-bias control)"),
        Column("position", pl.Int64, "0-based place of the candidate in the judge's prompt (0 = Assistant A)"),
        Column("score", pl.Float64, "the score, null unless `outcome` is ok", nullable=True),
        Column("score_mode", pl.String, "how the score was read: `text` (as written) or `expected` (mean over its token probabilities)"),
        Column("score_mass", pl.Float64, "`expected`: probability the scores (or A, B, C) took at the score's place, before "
               "renormalizing (null for `text`)", nullable=True),
        Column("pick", pl.String, "direct only: the judge's answer, `A`, `B` or `tie` (`expected`: the most likely)", nullable=True),
        Column("outcome", pl.String, "`ok`, `unparseable`, `refused` or `api_error`"),
        Column("raw", pl.String, "the judge's last answer, verbatim (empty after an api_error)"),
        Column("parse_error", pl.String, "why no score could be read (null when ok)", nullable=True),
        Column("attempts", pl.Int64, "answers received: 1, or 2 when the judge was asked once more for the format"),
        *_usage("the judge call (all attempts)"),
    ),
    in_items_order=True,
)

VERDICTS = Table(
    "verdicts",
    "one row per item after aggregating its scores",
    ("item_id",),
    (
        Column("item_id", pl.String, "the prompt"),
        Column("n_candidates", pl.Int64, "candidates generated for the item"),
        Column("n_scored", pl.Int64, "candidates with at least one parsed score"),
        Column("ranking", pl.List(pl.String), "scored candidate ids: the chosen one first, then by mean score"),
        Column("ranking_scores", pl.List(pl.Float64), "mean score across member judges of each candidate in `ranking`"),
        Column("chosen_id", pl.String, "the chosen (best) candidate, null when no choice could be made", nullable=True),
        Column("chosen_score", pl.Float64, "aggregate score of the chosen candidate", nullable=True),
        Column("is_tie", pl.Boolean, "true when several candidates tie for best (score or votes)"),
        Column("n_votes", pl.Int64, "member judges that voted (a judge whose verdict flipped with the order, or tied under `drop`, does not)"),
        Column("agreement", pl.Float64, "share of the votes that went to the chosen candidate", nullable=True),
        Column("n_inconsistent", pl.Int64, "member judges whose winner changed with the presentation order (too few orders agreed)"),
        Column("n_orders", pl.Int64, "presentation orders in which the voting judges saw the chosen candidate's group"),
        Column("n_orders_agreeing", pl.Int64, "of those, orders whose own best candidate was the chosen one"),
        Column("status", pl.String, "`ok`, `tie_dropped`, `inconsistent`, `no_votes` or `too_few_scored`"),
    ),
    in_items_order=True,
)

def _side(side: str) -> tuple[Column, ...]:
    return (
        Column(f"{side}_generator", pl.String, f"model that wrote `{side}` (recipe name, or the writer an import names)"),
        Column(f"{side}_reviewers", pl.List(pl.String), f"reviewers whose feedback led to `{side}`"),
        Column(f"{side}_iteration", pl.Int64, f"iteration of the workflow that wrote `{side}`"),
    )


def _lineage() -> tuple[Column, ...]:
    return (
        Column("judge", pl.String, "the verdict's judge configuration (mode, members, strategy, scale)"),
        Column("judge_models", pl.List(pl.String), "provider/model of each judge (or referee) whose verdict counts"),
        Column("template_hash", pl.String, "hash of every prompt template the recipe used"),
        Column("recipe_hash", pl.String, "hash of the recipe's source, models, generation, judge and export sections"),
    )


DPO = Table(
    "dpo",
    "one row per preference pair (TRL's explicit-prompt preference format)",
    ("pair_id",),
    (
        Column("pair_id", pl.String, "hash of the chosen and rejected candidate ids"),
        Column("item_id", pl.String, "the prompt's item"),
        Column("prompt", pl.String, "the prompt: the user's last turn, as text"),
        Column("messages", MESSAGES, "the whole conversation the answers follow (system message, earlier turns, "
               "`prompt` last); TRL's conversational format publishes it as `prompt`"),
        Column("chosen", pl.String, "the preferred response"),
        Column("rejected", pl.String, "the dispreferred response"),
        Column("chosen_id", pl.String, "candidate id of `chosen`"),
        Column("rejected_id", pl.String, "candidate id of `rejected`"),
        Column("chosen_score", pl.Float64, "aggregate judge score of `chosen`"),
        Column("rejected_score", pl.Float64, "aggregate judge score of `rejected`"),
        Column("margin", pl.Float64, "chosen_score - rejected_score (TRL's RewardTrainer reads `margin` per row)"),
        *_side("chosen"),
        *_side("rejected"),
        *_lineage(),
    ),
    in_items_order=True,
)

KTO = Table(
    "kto",
    "one row per labelled completion (TRL's unpaired preference format), in the order TRL reads them",
    ("example_id",),
    (
        Column("position", pl.Int64, "0-based place of the row: desirable and undesirable rows, and different "
               "prompts, alternate (seeded by export.seed); TRL's KTOTrainer reads rows in order and takes its KL "
               "term from the other rows of a batch"),
        Column("example_id", pl.String, "hash of the candidate id"),
        Column("item_id", pl.String, "the prompt's item"),
        Column("prompt", pl.String, "the prompt: the user's last turn, as text"),
        Column("messages", MESSAGES, "the whole conversation the answer follows (system message, earlier turns, "
               "`prompt` last); TRL's conversational format publishes it as `prompt`"),
        Column("completion", pl.String, "the response"),
        Column("label", pl.Boolean, "true for the chosen response, false for a rejected one"),
        Column("candidate_id", pl.String, "candidate id of `completion`"),
        Column("score", pl.Float64, "aggregate judge score of `completion`"),
        Column("generator", pl.String, "model that wrote `completion` (recipe name, or the writer an import names)"),
        Column("reviewers", pl.List(pl.String), "reviewers whose feedback led to `completion`"),
        Column("iteration", pl.Int64, "iteration of the workflow that wrote `completion`"),
        *_lineage(),
    ),
    order_by=("position",),
)

def _feedback_prompt() -> tuple[Column, ...]:
    return (
        Column("item_id", pl.String, "the question's item"),
        Column("system", pl.String, "the reviewer's system prompt (the paper's Table 12); published as the prompt's "
               "system message (conversational) or ahead of it (standard)"),
    )


DPO_FEEDBACK = Table(
    "dpo_feedback",
    "one row per preference pair over the reviewer's feedback: prompt and rejected iteration (empty unless "
    "generation is a feedback loop with one reviewer)",
    ("pair_id",),
    (
        Column("pair_id", pl.String, "hash of the chosen and rejected reviews' candidate ids"),
        *_feedback_prompt(),
        Column("prompt", pl.String, "the reviewer's user message for the chosen review: the question and the answer it reviewed"),
        Column("chosen", pl.String, "the review whose revision the judge ranked first"),
        Column("rejected", pl.String, "a review whose revision the judge scored lower"),
        Column("rejected_prompt", pl.String, "the reviewer's user message the rejected review answered (an earlier or later answer)"),
        Column("chosen_reviewed_id", pl.String, "candidate id of the answer the chosen review reviewed"),
        Column("rejected_reviewed_id", pl.String, "candidate id of the answer the rejected review reviewed"),
        Column("chosen_revision_id", pl.String, "candidate id of the revision the chosen review led to"),
        Column("rejected_revision_id", pl.String, "candidate id of the revision the rejected review led to"),
        Column("chosen_iteration", pl.Int64, "iteration of the answer the chosen review reviewed"),
        Column("rejected_iteration", pl.Int64, "iteration of the answer the rejected review reviewed"),
        Column("chosen_score", pl.Float64, "aggregate judge score of the chosen review's revision"),
        Column("rejected_score", pl.Float64, "aggregate judge score of the rejected review's revision"),
        Column("margin", pl.Float64, "chosen_score - rejected_score (TRL's RewardTrainer reads `margin` per row)"),
        Column("reviewer", pl.String, "recipe name of the reviewer that wrote both reviews"),
        *_lineage(),
    ),
    in_items_order=True,
)

KTO_FEEDBACK = Table(
    "kto_feedback",
    "one row per labelled review (empty unless generation is a feedback loop with one reviewer), in the order TRL reads them",
    ("example_id",),
    (
        Column("position", pl.Int64, "0-based place of the row: labels and prompts alternate (seeded by export.seed)"),
        Column("example_id", pl.String, "hash of the reviewed answer's candidate id"),
        *_feedback_prompt(),
        Column("prompt", pl.String, "the reviewer's user message: the question and the answer it reviewed"),
        Column("completion", pl.String, "the review"),
        Column("label", pl.Boolean, "true for the review whose revision the judge ranked first, false for one whose revision scored lower"),
        Column("reviewed_id", pl.String, "candidate id of the answer reviewed"),
        Column("revision_id", pl.String, "candidate id of the revision the review led to"),
        Column("iteration", pl.Int64, "iteration of the answer reviewed"),
        Column("score", pl.Float64, "aggregate judge score of the revision"),
        Column("reviewer", pl.String, "recipe name of the reviewer"),
        *_lineage(),
    ),
    order_by=("position",),
)


def _estimate(name: str, doc: str) -> tuple[Column, ...]:
    return (
        Column(name, pl.Float64, f"{doc} (null when undefined)", nullable=True),
        Column(f"{name}_low", pl.Float64, f"lower bound of the bootstrap 95% interval of {name}", nullable=True),
        Column(f"{name}_high", pl.Float64, f"upper bound of the bootstrap 95% interval of {name}", nullable=True),
    )


AGREEMENT = Table(
    "agreement",
    "one row per evaluator (every combination of the panel's judges) measured against a benchmark's human labels",
    ("evaluator",),
    (
        Column("evaluator", pl.String, "the members joined by `+` (one name: a single judge)"),
        Column("members", pl.List(pl.String), "panel judges (or debate referee roles) whose labels are combined"),
        Column("size", pl.Int64, "number of members"),
        Column("rule", pl.String, "how members' labels combine: `majority` or `mean` (the recipe's judge.rule)"),
        Column("configured", pl.Boolean, "true for the recipe's own verdict configuration (judge.members and rule)"),
        Column("rank", pl.Int64, "1 for the highest kappa"),
        Column("n_items", pl.Int64, "labelled items"),
        Column("n_missing", pl.Int64, "items where no member gave a usable verdict (counted as tie)"),
        Column("n_ties", pl.Int64, "items the evaluator called a tie (including flips and missing verdicts)"),
        *_estimate("kappa", "Cohen's kappa with the human winner over model_a, model_b and tie"),
        *_estimate("accuracy", "share of items where the evaluator's label equals the human one"),
        *_estimate("flip_rate", "share of items judged in both orders whose label changed with the order"),
        *_estimate("position_bias", "mean score of the answer shown first minus the answer shown second, as a share of "
                   "the scale (0: the order does not sway the judge; +1: first always full marks, second none)"),
        *_estimate("longer_wins", "share of the evaluator's non-tie verdicts that went to the longer answer"),
        *_estimate("n_eff", "independent votes the members are worth: Kish's k / (1 + (k - 1) * error_correlation), "
                   "at most k (1 for a single judge; metrics.neff)"),
        *_estimate("error_correlation", "mean over pairs of members of the correlation of their errors (1 where a "
                   "member's label is not the human one, else 0); pairs where a member never or always errs are left out"),
        *_estimate("alpha", "Krippendorff's alpha (nominal: model_a, model_b, tie) among the members' labels, a missing "
                   "label left out (null for a single judge)"),
        Column("fingerprint", pl.String, "the judge configuration's fingerprint, looked up by export gates"),
    ),
)

MODEL_AGREEMENT = Table(
    "model_agreement",
    "one row per evaluator and benchmark model: the paper's per-model agreement and bias score "
    "(single judges, the configured evaluator and the best jury of each size)",
    ("evaluator", "model"),
    (
        Column("evaluator", pl.String, "as in `agreement`"),
        Column("model", pl.String, "a model whose answers the benchmark holds"),
        Column("n_human_prefers", pl.Int64, "items where humans preferred this model's answer"),
        *_estimate("agreement", "share of those items where the evaluator also preferred it"),
        *_estimate("bias", "agreement minus the same share for its opponents' human wins; > 0 leans towards the model"),
        Column("family", pl.String, "closest relation of a member judge's model to this model: `same_model`, "
               "`same_family`, `same_maker`, `different` or `unknown` (metrics.families; self-preference shows as bias)"),
    ),
)

PICKS = Table(
    "picks",
    "one row per comparison entry (workflow or baseline) and prompt: the answer it puts forward (empty without `compare`)",
    ("pick_id",),
    (
        Column("pick_id", pl.String, "hash of entry and prompt"),
        Column("entry", pl.String, "the workflow's or baseline's name in `compare`"),
        Column("role", pl.String, "`workflow` (competes) or `baseline` (measured against)"),
        Column("item_id", pl.String, "the prompt"),
        Column("candidate_id", pl.String, "the picked candidate (its rows are under data/<recipe>/compare/<entry>/)"),
        Column("response", pl.String, "the picked answer"),
        Column("generator", pl.String, "who wrote it"),
        Column("iteration", pl.Int64, "its iteration in the entry's workflow"),
        Column("n_candidates", pl.Int64, "candidates the entry wrote for the prompt"),
        Column("how", pl.String, "`judge`: the judge's verdict chose it; `only`: the entry's single candidate"),
    ),
    in_items_order=True,
)

MATCHES = Table(
    "matches",
    "one row per judge call comparing a workflow's pick for a prompt with a baseline's, in one order",
    ("match_call_id",),
    (
        Column("match_call_id", pl.String, "hash of judge, pair and presentation"),
        Column("pair_id", pl.String, "hash of the prompt, the workflow and the baseline"),
        Column("item_id", pl.String, "the prompt"),
        Column("workflow", pl.String, "the competing workflow"),
        Column("baseline", pl.String, "the baseline it is measured against"),
        Column("candidate_id", pl.String, "the workflow's picked answer"),
        Column("baseline_candidate_id", pl.String, "the baseline's picked answer"),
        Column("judge", pl.String, "recipe name of the judge model"),
        Column("judge_model", pl.String, "provider/model id of the judge"),
        Column("presentation", pl.Int64, "0: the workflow's answer shown first (Assistant A); 1: the baseline's first"),
        Column("candidate_score", pl.Float64, "score of the workflow's answer (null unless outcome is ok)", nullable=True),
        Column("baseline_score", pl.Float64, "score of the baseline's answer (null unless outcome is ok)", nullable=True),
        Column("outcome", pl.String, "`ok`, `unparseable`, `refused` or `api_error`"),
        Column("raw", pl.String, "the judge's last answer, verbatim"),
        Column("parse_error", pl.String, "why no score could be read (null when ok)", nullable=True),
        Column("attempts", pl.Int64, "answers received: 1, or 2 after a re-ask for the format"),
        *_usage("the judge call (all attempts)"),
    ),
    in_items_order=True,
)

WIN_RATES = Table(
    "win_rates",
    "one row per workflow and baseline: how often the workflow's picks beat the baseline's (empty without `compare`)",
    ("workflow", "baseline"),
    (
        Column("workflow", pl.String, "the competing workflow"),
        Column("baseline", pl.String, "the baseline"),
        Column("ties_rule", pl.String, "how ties count: `half`, `exclude` or `loss` (compare.ties)"),
        Column("n_prompts", pl.Int64, "prompts where both put an answer forward"),
        Column("n_unpicked", pl.Int64, "prompts left out: the judge could not pick one of the two entries' answers"),
        Column("wins", pl.Int64, "pairs the judges gave to the workflow"),
        Column("losses", pl.Int64, "pairs the judges gave to the baseline"),
        Column("ties", pl.Int64, "pairs judged even (including inconsistent and unjudged pairs)"),
        Column("inconsistent", pl.Int64, "pairs where a voting judge's verdict flipped with the order (its vote is a tie)"),
        Column("unjudged", pl.Int64, "pairs without any readable verdict (counted as ties)"),
        *_estimate("win_rate", "share of pairs won, ties counted as `ties_rule` says"),
        *_estimate("lc_win_rate", "length-controlled win rate: the win rate a logistic model predicts at equal lengths"),
        *_estimate("sc_win_rate", "style-controlled win rate: the win rate a logistic model of length and markdown "
                   "density predicts at equal length and equal density (Arena-Hard's style control)"),
        Column("candidate_chars", pl.Float64, "mean length of the workflow's answers, in characters"),
        Column("baseline_chars", pl.Float64, "mean length of the baseline's answers, in characters"),
        Column("candidate_markdown", pl.Float64, "mean markdown density of the workflow's answers (elements per 1,000 characters)"),
        Column("baseline_markdown", pl.Float64, "mean markdown density of the baseline's answers"),
    ),
)

TABLES: dict[str, Table] = {
    t.name: t
    for t in (ITEMS, CANDIDATES, LABELS, DEBATES, SCORES, VERDICTS, DPO, KTO, DPO_FEEDBACK, KTO_FEEDBACK, PICKS,
              MATCHES, WIN_RATES,
              AGREEMENT, MODEL_AGREEMENT)
}


def content_id(*parts: object) -> str:
    """A stable 16-hex-digit id from any JSON-serialisable parts."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def frame(table: Table, rows: list[dict]) -> pl.DataFrame:
    """Rows as a frame with the table's declared schema (never inferred)."""
    return pl.DataFrame(rows, schema=table.schema, orient="row") if rows else pl.DataFrame(schema=table.schema)


def check(table: Table, df: pl.DataFrame) -> None:
    """Raise TableError unless `df` has exactly the table's columns, dtypes, nulls and a unique key."""
    expected, actual = table.schema, df.schema
    if list(actual) != list(expected):
        missing = [c for c in expected if c not in actual]
        extra = [c for c in actual if c not in expected]
        raise TableError(f"table {table.name}: columns differ from its schema (missing {missing}, extra {extra})")
    for name, dtype in expected.items():
        if actual[name] != dtype:
            raise TableError(f"table {table.name}: column {name} is {actual[name]}, expected {dtype}")
    for col in table.columns:
        if not col.nullable and df[col.name].null_count():
            raise TableError(f"table {table.name}: column {col.name} has {df[col.name].null_count()} null values")
    dupes = df.select(table.primary_key).is_duplicated()
    if dupes.any():
        first = df.filter(dupes).row(0, named=True)
        key = {k: first[k] for k in table.primary_key}
        raise TableError(f"table {table.name}: duplicate primary key {key}")


def temp_path(path: Path) -> Path:
    """A hidden file beside `path` for one writer: the process id and a random part make it its own,
    so a writer never touches another's file (another build of the same table, in another process)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")


def _os_failure(e: BaseException) -> str | None:
    """The operating system's reason when `e` is a failed read or write (polars reports it as text)."""
    if isinstance(e, OSError):
        reason = e.strerror or str(e)
        return f"{reason} (errno {e.errno})" if e.errno and f"errno {e.errno}" not in reason else reason
    if isinstance(e, pl.exceptions.PolarsError):
        found = re.search(r"([^:]*) \(os error (\d+)\)", str(e))
        if found:
            return f"{found.group(1).strip()} (errno {found.group(2)})"
    return None


def write_error(path: Path, reason: str) -> TableError:
    full = f"errno {errno.ENOSPC}" in reason
    hint = "free some disk space and run it again" if full else "check that its folder exists and is writable"
    return TableError(f"cannot write {path}: {reason}; {hint} (nothing was left half-written)")


def _discard(tmp: Path) -> None:
    if tmp.is_dir() and not tmp.is_symlink():
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.unlink(missing_ok=True)


def replace_atomically(path: Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp)` to write a file (or folder) at a temporary path of its own, then put it at
    `path` in one step. On any failure the temporary file is removed; an operating-system failure
    (a full disk, a read-only folder) becomes a one-line TableError naming `path`."""
    tmp = temp_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        if tmp.is_dir() and path.is_dir():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException as e:
        _discard(tmp)
        reason = _os_failure(e)
        if reason is not None:
            raise write_error(path, reason) from None
        raise
    return path


def write_table(table: Table, df: pl.DataFrame, data_dir: Path | str) -> Path:
    """Check `df` and write it to `data_dir/<table>.parquet`, atomically: in the order given for a
    table kept in the items' order, else sorted by `order_by` (the primary key unless the table
    names another order)."""
    check(table, df)
    ordered = df if table.in_items_order else df.sort(table.order_by or table.primary_key)
    return replace_atomically(table.path(data_dir), ordered.write_parquet)


class TableWriter:
    """Write a table as its rows come, in memory that does not grow with the table: rows become
    columns 1,000 at a time and go to a hidden file a row group (about 4 MB) at a time, in the
    order given (a stage gives them in its items' order, so the file is the same from one build to
    the next); `close` replaces the table atomically. A repeated primary key is refused as its row
    comes. The keys are remembered as 64-bit hashes (`KeySet`, 8 bytes a row); in a table kept in
    the items' order only the item ids are (8 bytes an item), with each item's own keys while its
    rows come: such a table's keys are made from their item, so two items never share one, and the
    writer checks that each item's rows come together. Leaving the `with` block on an error
    removes the hidden file, so a failed stage never leaves half a table; a killed one may leave its
    hidden file (`.<table>.parquet.tmp-<pid>-<random>`), which no other writer touches: another build
    of the same table may be writing its own beside it."""

    CHUNK_ROWS = 1000  # rows held as dicts before they become columns
    ROW_GROUP_BYTES = 4 << 20  # columns held before they go out as one Parquet row group

    def __init__(self, table: Table, data_dir: Path | str):
        from builders.key_set import KeySet

        self.table = table
        self.path = table.path(data_dir)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = temp_path(self.path)
        self._rows: list[dict] = []
        self._chunks: list = []  # pyarrow tables of the row group being gathered
        self._chunk_bytes = 0
        self._keys = KeySet()  # every key; in items order: every item id
        self._item: object = None  # in items order: the item whose rows are coming, and their keys
        self._item_keys: set[tuple] = set()
        self._writer = None
        self.rows = 0

    def _check_key(self, row: dict) -> None:
        key = tuple(row[k] for k in self.table.primary_key)
        if self.table.in_items_order:
            if row["item_id"] != self._item:
                if not self._keys.add(row["item_id"]):
                    raise TableError(f"table {self.table.name}: the rows of item {row['item_id']} do not come together "
                                     "(the table is kept in the items' order)")
                self._item, self._item_keys = row["item_id"], set()
            new = key not in self._item_keys
            self._item_keys.add(key)
        else:
            new = self._keys.add(key)
        if not new:
            raise TableError(f"table {self.table.name}: duplicate primary key {dict(zip(self.table.primary_key, key))}")

    def write(self, rows: list[dict]) -> None:
        for row in rows:
            self._check_key(row)
        self._rows.extend(rows)
        if len(self._rows) >= self.CHUNK_ROWS:
            self._to_columns()
            if self._chunk_bytes >= self.ROW_GROUP_BYTES:
                self._write_group()

    def _to_columns(self) -> None:
        """The rows held, checked against the schema, as a columnar chunk of the next row group."""
        chunk = frame(self.table, self._rows)
        check(self.table, chunk)
        self._chunks.append(chunk.to_arrow())
        self._chunk_bytes += self._chunks[-1].nbytes
        self.rows += len(self._rows)
        self._rows = []

    def _write_group(self) -> None:
        """The chunks held, as one row group (a few large groups keep the file's footer, and the
        writer's memory, small, and suit DuckDB's and polars' parallel scans)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        group = pa.concat_tables(self._chunks) if self._chunks else frame(self.table, []).to_arrow()
        if self._writer is None:
            self._writer = pq.ParquetWriter(self._tmp, group.schema, compression="zstd")
        self._writer.write_table(group, row_group_size=max(1, group.num_rows))
        self._chunks, self._chunk_bytes = [], 0
        del group
        release_free_memory()  # what the group freed, so memory stays flat in the rows

    def close(self) -> Path:
        if self._rows:
            self._to_columns()
        if self._chunks or self._writer is None:
            self._write_group()
        self._writer.close()
        os.replace(self._tmp, self.path)
        return self.path

    def __enter__(self) -> "TableWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        error = exc
        if error is None:
            try:
                self.close()
                return
            except BaseException as e:
                error = e
        if self._writer is not None:
            try:
                self._writer.close()
            except Exception:  # the hidden file goes anyway
                pass
        self._tmp.unlink(missing_ok=True)
        reason = _os_failure(error)
        if reason is not None:
            raise write_error(self.path, reason) from None
        if error is not exc:
            raise error


def rebuild_command(table: Table, path: Path) -> str:
    """The command that writes `path` again."""
    data_dir = path.parent
    if data_dir.parent.name == "compare":  # a compare entry's tables: data/<recipe>/compare/<entry>/
        return f"fellowship build {data_dir.parent.parent.name} --stage picks"
    if table.name in ("agreement", "model_agreement"):
        return f"fellowship meta-eval {data_dir.name}"
    return f"fellowship build {data_dir.name} --stage {table.name}"


def _unreadable(table: Table, path: Path, e: BaseException) -> TableError:
    return TableError(f"{path}: cannot read the {table.name} table ({first_line(e)}); rebuild it with `{rebuild_command(table, path)}`")


def open_parquet(path: Path):
    """A Parquet file to read a batch at a time, in memory that does not grow with the file: without
    pyarrow's default `pre_buffer`, which keeps every range it has read until the file is closed
    (RSS then grows with the rows read: 102 to 158 MB over a million prompts, against 78 to 86 MB
    read through a 1 MB buffer; benchmarks/README.md). Its batches are read without threads
    (`use_threads=False`), whose buffers add about 20 MB to a walk and nothing to its speed here."""
    import pyarrow.parquet as pq

    return pq.ParquetFile(path, pre_buffer=False, buffer_size=READ_BUFFER_BYTES)


READ_BUFFER_BYTES = 1 << 20


def scan_table(table: Table, data_dir: Path | str, columns: list[str] | None = None, batch_rows: int = 1024):
    """(number of rows, an iterator over its rows as dicts) of a table, read a batch at a time."""
    path = table.path(data_dir)
    if not path.exists():
        raise TableError(f"{path} does not exist: run `{rebuild_command(table, path)}` first")
    try:
        schema = pl.read_parquet_schema(path)
        file = open_parquet(path)
    except Exception as e:  # polars, pyarrow and OS errors all mean: this file is damaged
        raise _unreadable(table, path, e) from None
    if dict(schema) != dict(table.schema):
        raise TableError(f"{path}: does not match the {table.name} table's schema; rebuild it with `{rebuild_command(table, path)}`")

    def rows():
        try:
            for batch in file.iter_batches(batch_size=batch_rows, columns=columns, use_threads=False):
                yield from batch.to_pylist()
        except Exception as e:
            raise _unreadable(table, path, e) from None

    return file.metadata.num_rows, rows()


def read_rows_of(table: Table, data_dir: Path | str, item_ids: list[str]) -> pl.DataFrame:
    """The rows of `table` whose `item_id` is one of `item_ids`, in the table's order (a Ray task
    reads only its block's rows of a table the whole stage depends on)."""
    path = table.path(data_dir)
    if not path.exists():
        raise TableError(f"{path} does not exist: run `{rebuild_command(table, path)}` first")
    try:
        df = pl.scan_parquet(path).filter(pl.col("item_id").is_in(item_ids)).collect()
    except Exception as e:
        raise _unreadable(table, path, e) from None
    check(table, df)
    return df


def read_part(table: Table, path: Path) -> pl.DataFrame:
    """A part of `table` a Ray task wrote (builders.ray_executor), checked against the table's schema."""
    try:
        df = pl.read_parquet(path)
    except Exception as e:
        raise TableError(f"{path}: a part of the {table.name} table that cannot be read ({first_line(e)}); build the stage again") from None
    check(table, df)
    return df


def read_table(table: Table, data_dir: Path | str) -> pl.DataFrame:
    """Read a table written by an earlier stage; a missing or damaged one names the command to run."""
    path = table.path(data_dir)
    if not path.exists():
        raise TableError(f"{path} does not exist: run `{rebuild_command(table, path)}` first")
    try:
        df = pl.read_parquet(path)
    except Exception as e:  # polars, pyarrow and OS errors all mean: this file is damaged
        raise _unreadable(table, path, e) from None
    try:
        check(table, df)
    except TableError as e:
        raise TableError(f"{path}: {e}; rebuild it with `{rebuild_command(table, path)}`") from None
    return df


def json_number(x: float | None) -> float | None:
    """A float for a JSON file or a nullable column: rounded to 6 places, None when undefined."""
    import math

    return None if x is None or not math.isfinite(x) else round(float(x), 6)


def write_json(path: Path, data: object) -> None:
    """Write a JSON side file (metrics, plots, gates) atomically, like the tables."""
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    replace_atomically(path, lambda tmp: tmp.write_text(text))
