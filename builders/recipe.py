"""The recipe's schema: a pydantic model tree with unknown keys forbidden and every number bounded.

This module is the schema only; `builders.loader` reads a recipe file, validates it against this
schema, checks each section against the others and the files the recipe names. Paths inside a recipe
are relative to the recipe file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from builders.redact import url_credentials

SLUG = re.compile(r"^[a-z0-9][a-z0-9-]*$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_CANDIDATES = 26  # answers a judge is shown for one prompt, named A to Z
MAX_SEED = 2**31 - 1


class Strict(BaseModel):
    # allow_inf_nan=False: `.inf` and `.nan` are no price, timeout or margin
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class Price(Strict):
    input: float = Field(0.0, ge=0, le=10_000, description="US dollars per million prompt tokens")
    output: float = Field(0.0, ge=0, le=10_000, description="US dollars per million completion tokens")
    batch: float = Field(0.5, ge=0, le=1, description="share of the price paid for answers from the provider's batch API")


class ModelSpec(Strict):
    provider: str = Field(description="registry name: openai, together, openai-compatible, local or fake")
    model: str = Field(description="the provider's model id; for `local`, `default` or a path to a GGUF file")
    base_url: str | None = Field(None, description="endpoint for openai-compatible servers (or to override openai/together)")
    api_key_env: str | None = Field(None, description="environment variable holding the key, if not the provider's default")
    temperature: float = Field(0.0, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int = Field(512, ge=1, le=131_072)
    seed: int | None = Field(0, ge=0, le=MAX_SEED, description="sampling seed, where the provider supports one")
    concurrency: int = Field(8, ge=1, le=1024, description="calls in flight at once for this model")
    timeout_s: float = Field(120.0, gt=0, le=86_400)
    max_retries: int = Field(6, ge=0, le=50, description="retries on 429, 5xx, timeouts, dropped connections and broken bodies")
    context_tokens: int = Field(4096, ge=256, le=131_072, description="`local` only: the model's context window")
    price: Price = Price()

    @field_validator("base_url")
    @classmethod
    def _no_credential_in_url(cls, v: str | None) -> str | None:
        """The URL is recorded (cache identity, dvc.lock, the card): a key in it would be too."""
        found = url_credentials(v) if v else None
        if found:
            raise ValueError(
                f"the URL carries a credential ({found}); keys come only from the environment: "
                "put it in a variable and name that variable with api_key_env"
            )
        return v

    @field_validator("api_key_env")
    @classmethod
    def _variable_name(cls, v: str | None) -> str | None:
        if v is not None and not ENV_NAME.match(v):
            raise ValueError("give the name of the environment variable that holds the key (such as MY_API_KEY), not the key")
        return v

    def sampling(self) -> dict:
        """The parameters that change what the model writes (and so key the cache)."""
        return {"temperature": self.temperature, "top_p": self.top_p, "max_tokens": self.max_tokens, "seed": self.seed}


BENCHMARKS = ("fair-eval", "pandalm-eval", "mt-bench")  # vendored in builders/benchmarks/
BENCHMARK_COLUMNS = {"prompt_column": "question", "id_column": "item_id", "label_column": "human_winner"}
BENCHMARK_ANSWERS = (  # a labelled pair's two responses, in the order the labels name them
    {"column": "response_a", "model_column": "model_a"},
    {"column": "response_b", "model_column": "model_b"},
)


class Source(Strict):
    path: str | None = Field(None, description="local Parquet, JSONL, CSV file or `save_to_disk` folder")
    dataset: str | None = Field(None, description="Hugging Face Hub dataset id (instead of `path`)")
    benchmark: Literal["fair-eval", "pandalm-eval", "mt-bench"] | None = Field(
        None,
        description="a human-labelled pairwise benchmark: the vendored copy, or the same columns from `dataset`; "
        "sets prompt_column, id_column and label_column unless given",
    )
    config: str | None = Field(None, description="Hub dataset configuration")
    split: str = "train"
    prompt_column: str = Field("prompt", description="column with the prompt: text, or chat messages")
    id_column: str | None = Field(None, description="column with the source's own row id")
    label_column: str | None = Field(
        None, description="column with a human winner per row (`model_a`, `model_b` or `tie`): a benchmark; every row is an item"
    )
    reference_column: str | None = Field(
        None, description="column with a reference answer per row (human-written where the source has one), shown "
        "to judges beside the answers, never a candidate; the prompt column itself when its conversations end with "
        "the reference assistant turn (No Robots' `messages`)",
    )
    turns: Literal["first", "all"] | None = Field(
        None, description="a multi-turn benchmark (MT-Bench's `turn` and `turns` columns, answers to turn k in "
        "`<column>_turn<k>`): `first` judges every row on the first turn (the paper's judges); `all` judges a later "
        "turn's answers after the whole conversation before them, each model's own earlier answers included",
    )
    sample: int | None = Field(None, ge=1, le=100_000_000, description="take this many prompts (seeded); all when unset")
    seed: int = Field(0, ge=0, le=MAX_SEED)

    @model_validator(mode="before")
    @classmethod
    def _benchmark_columns(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("benchmark") is not None:
            return {**BENCHMARK_COLUMNS, **data}
        return data

    @property
    def labelled(self) -> bool:
        return self.label_column is not None

    def where(self) -> str:
        """How the source is named in messages."""
        return self.path or self.dataset or f"benchmark {self.benchmark}"


class ImportedAnswer(Strict):
    """Answers that already exist in the source: one column of text, and who wrote it."""

    column: str = Field(description="source column with the answers; `col.field` reads a field of a struct column")
    model: str | None = Field(None, description="name of the model that wrote every answer in the column")
    model_column: str | None = Field(None, description="source column naming the model of each row's answer")

    @model_validator(mode="after")
    def _one_writer(self) -> "ImportedAnswer":
        if (self.model is None) == (self.model_column is None):
            raise ValueError("give exactly one of `model` or `model_column`")
        return self


class Generation(Strict):
    workflow: Literal["single", "feedback", "import"] = Field(
        description="single: one model answers; feedback: generator + reviewers; import: answers already in the source"
    )
    generator: str | None = Field(None, description="single and feedback: the model that writes the answers")
    reviewers: list[str] = []
    answers: list[ImportedAnswer] = Field(
        [], max_length=MAX_CANDIDATES, description="import: the source columns holding answers, one candidate each"
    )
    iterations: int = Field(
        3, ge=1, le=MAX_CANDIDATES, description="feedback: answers written (first + revisions); single: samples"
    )
    drop_truncated: bool = Field(False, description="a response cut off by the generator's max_tokens is no answer: "
                                 "kept with problem `truncated`, never judged or exported")
    system_prompt: str | None = Field(None, description="template file for the generator's system prompt")
    revise_prompt: str = "prompts/generator/revise_single.txt"
    revise_multi_prompt: str = "prompts/generator/revise_multi.txt"
    reviewer_system_prompt: str = "prompts/reviewer/system.txt"
    reviewer_user_prompt: str = "prompts/reviewer/user.txt"
    reviewer_multi_turn_user_prompt: str = Field(
        "prompts/reviewer/multi_turn_user.txt", description="the reviewer's user message when the prompt is a "
        "conversation (a system message or earlier turns): the conversation, then the response to its last turn")


ROLES = ("general_public", "psychologist", "critic")  # the paper's referees, in speaking order


class Debate(Strict):
    """ChatEval-style debate (the paper's Tables 9-10): referees discuss, then each scores."""

    referees: dict[Literal["general_public", "psychologist", "critic"], str] = Field(
        min_length=1, description="role -> model; roles speak in the order general_public, psychologist, critic"
    )
    rounds: int = Field(2, ge=1, le=10, description="times every referee speaks before the final scores")
    system_prompt: str = "prompts/debate/system.txt"
    user_prompt: str = "prompts/debate/user.txt"
    multi_turn_user_prompt: str = Field("prompts/debate/user_multi_turn.txt", description="for an item whose prompt "
                                        "is a conversation: each assistant's conversation with the user, then the discussion")
    reference_user_prompt: str = Field("prompts/debate/user_reference.txt",
                                       description="for an item with a reference answer (source.reference_column)")
    multi_turn_reference_user_prompt: str = Field("prompts/debate/user_multi_turn_reference.txt",
                                                  description="a conversation with a reference answer")
    final_prompt: str = "prompts/debate/final.txt"
    role_prompts: str = Field("prompts/debate", description="folder holding <role>.txt for each referee")

    def roles(self) -> list[str]:
        return [r for r in ROLES if r in self.referees]


class Panel(Strict):
    """Who judges and how: everything the LLM-calling `debates` and `scores` stages depend on."""

    models: list[str] = Field([], description="every judge whose scores are collected (not with `debate`)")
    debate: Debate | None = Field(None, description="referees debate, then each gives final scores (mode `debate`)")
    strategy: Literal["direct", "independent", "combined"] = Field(
        "combined",
        description="direct: pick A, B or tie per pair; independent: each response alone; combined: all responses in one conversation",
    )
    scale: Literal[5, 10, 100] = Field(10, description="maximum score (independent and combined)")
    orders: Literal["rotations", "reverse", "single"] = Field(
        "rotations",
        description="presentation orders of a pair or list (direct and combined): rotations shows every candidate once "
        "in every position (for two, both orders); reverse adds the reversed order; single shows one order",
    )
    score_mode: Literal["text", "expected"] = Field(
        "text", description="text: the score the judge wrote; expected: the mean of its token probabilities over the scores "
        "(direct: of A, B and C)",
    )
    reasoning: bool = Field(True, description="the judge writes its evaluation before the verdict (the paper's prompts); "
                            "false: the verdict only, in a few tokens")
    swap: None = Field(None, description="replaced by `orders`")
    system_prompt: str | None = Field(None, description="template file; default prompts/judge/<strategy>_system.txt "
                                      "(<strategy>_no_reasoning_system.txt without reasoning)")
    user_prompt: str | None = Field(None, description="template file; default prompts/judge/<strategy>_user.txt")
    multi_turn_system_prompt: str | None = Field(None, description="for an item whose prompt is a conversation (a system "
                                                 "message or earlier turns): default prompts/judge/<strategy>_multi_turn[_no_reasoning]_system.txt")
    multi_turn_user_prompt: str | None = Field(None, description="default prompts/judge/<strategy>_multi_turn_user.txt "
                                               "(each assistant's conversation with the user, MT-Bench's layout)")
    reference_system_prompt: str | None = Field(None, description="for an item with a reference answer "
                                                "(source.reference_column): default prompts/judge/<strategy>_reference[_no_reasoning]_system.txt")
    reference_user_prompt: str | None = Field(None, description="default prompts/judge/<strategy>_reference_user.txt")
    multi_turn_reference_system_prompt: str | None = Field(None, description="a conversation with a reference answer: "
                                                           "default prompts/judge/<strategy>_multi_turn_reference[_no_reasoning]_system.txt")
    multi_turn_reference_user_prompt: str | None = Field(None, description="default prompts/judge/<strategy>_multi_turn_reference_user.txt")
    max_parse_failure_rate: float = Field(0.1, ge=0, le=1, description="share of failed judge calls that fails the stage")
    structured: bool = Field(False, description="ask for a JSON verdict where the provider supports structured output")

    @field_validator("swap", mode="before")
    @classmethod
    def _swap_replaced(cls, v: object) -> None:
        raise ValueError("replaced by judge.panel.orders: rotations (the default: every candidate in every position), "
                         "reverse (the old `swap: true`) or single (`swap: false`)")

    def template(self, role: str, variant: str = "") -> str:
        """The template file of `role` (system or user) for a `variant` of the prompts: "" (the paper's
        Table 8, single-turn items), `multi_turn`, `reference` or `multi_turn_reference`."""
        given = getattr(self, f"{variant}_{role}_prompt" if variant else f"{role}_prompt")
        parts = (self.strategy, variant, "no_reasoning" if role == "system" and not self.reasoning else "", role)
        return given or "prompts/judge/" + "_".join(p for p in parts if p) + ".txt"


class Judge(Strict):
    """The panel's calls, then how their scores become a verdict (the pure `verdicts` stage)."""

    panel: Panel
    mode: Literal["judge", "jury", "debate"] = Field(
        "judge", description="judge: one member decides; jury: members vote; debate: the referees vote after debating"
    )
    members: list[str] | None = Field(
        None, description="panel models (debate: referee roles) whose verdicts count (default: all)"
    )
    rule: Literal["majority", "mean"] = Field(
        "majority", description="jury: each member votes for its best candidate (majority), or mean score across members"
    )
    tie_policy: Literal["drop", "later_iteration", "earlier_iteration"] = Field(
        "drop", description="when candidates tie (best score or votes): drop the item, or prefer the later/earlier one"
    )
    min_scored: int = Field(2, ge=2, le=MAX_CANDIDATES, description="an item needs this many scored candidates for a verdict")
    min_order_agreement: float | None = Field(
        None, gt=0, le=1, description="share of a judge's presentation orders that must agree with its winner, else its "
        "verdict is inconsistent (default: more than half)",
    )

    def orders_agree(self, agreeing: int, orders: int) -> bool:
        """Whether `agreeing` of a judge's `orders` presentation orders are enough."""
        if self.min_order_agreement is None:
            return agreeing * 2 > orders
        return agreeing >= self.min_order_agreement * orders - 1e-9

    @property
    def judges(self) -> list[str]:
        """Names in the `judge` column of `scores`: panel models, or referee roles in a debate."""
        return self.panel.debate.roles() if self.panel.debate else list(self.panel.models)

    @property
    def voters(self) -> list[str]:
        return list(self.members) if self.members is not None else self.judges


class Gate(Strict):
    """The judge configuration must have reached this agreement with humans on a benchmark recipe."""

    benchmark: str = Field(description="name of a benchmark recipe that measured this same judge configuration")
    min_kappa: float = Field(ge=-1, le=1, description="the lowest Cohen's kappa against the human labels that may export")
    bound: Literal["estimate", "lower"] = Field(
        "estimate", description="compare min_kappa with the kappa itself, or with its bootstrap 95% interval's lower bound"
    )


class Export(Strict):
    pairing: Literal["best_vs_rejected", "best_vs_worst"] = "best_vs_rejected"
    gate: Gate | None = Field(None, description="refuse to export unless the judge reached `min_kappa` on a benchmark")
    min_margin: float = Field(0.0, ge=0, le=100, description="a pair needs chosen - rejected score above or at this margin")
    hub_repo: str | None = Field(None, description="Hub dataset id `fellowship publish` pushes to (or --repo)")
    license: str = Field("other", description="licence id for the dataset card (the answers are model outputs under their providers' terms)")
    tags: list[str] = Field([], description="extra Hub tags for the dataset card")
    format: Literal["conversational", "standard"] = Field(
        "conversational", description="TRL's dataset format of what is published: `conversational` (prompt and answers "
        "as lists of {role, content} messages, TRL's recommendation) or `standard` (plain text)")
    max_length: int = Field(1024, ge=1, le=1_000_000, description="token length (TRL's `max_length`, default 1024) the "
                            "card counts the longer pairs and examples against, since TRL truncates them")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="seed of the KTO order (desirable and undesirable rows, and prompts, alternate)")


class Compare(Strict):
    """The paper's generation study in one recipe: several generation workflows over the recipe's
    prompts, each workflow's answer per prompt picked by the judge among its candidates, and every
    workflow's picks judged pairwise (both orders) against every baseline's."""

    workflows: dict[str, Generation] = Field(
        min_length=1, description="name -> a generation workflow (single, feedback or import) whose picks compete"
    )
    baselines: dict[str, Generation] = Field(
        min_length=1, description="name -> the workflow each competitor is measured against (often `import` of existing answers)"
    )
    ties: Literal["half", "exclude", "loss"] = Field(
        "half", description="a tie counts as half a win, is left out, or counts as a loss"
    )
    resamples: int = Field(1000, ge=100, le=10_000, description="bootstrap resamples for the 95% intervals")

    def entries(self) -> dict[str, tuple[str, Generation]]:
        """name -> (`workflows` or `baselines`, its workflow), competitors first."""
        return {**{n: ("workflows", g) for n, g in self.workflows.items()},
                **{n: ("baselines", g) for n, g in self.baselines.items()}}


LLM_STAGES = ("candidates", "debates", "scores", "picks", "matches")


class Spending(Strict):
    usd: float = Field(gt=0, le=1_000_000, description="the most the recipe's answers may cost, over all stages, cached ones included")


RAY_STAGES = ("candidates", "debates", "scores")  # the stages the Ray executor can run (compare's run in the driver)


class StageOptions(Strict):
    batch: bool = Field(False, description="send the stage's calls through the providers' batch APIs (OpenAI, Together)")
    poll_s: float = Field(30.0, ge=0.01, le=3600, description="seconds between checks of a running batch job")
    executor: Literal["local", "ray"] = Field(
        "local", description="local: this process makes the calls; ray: tasks on a Ray cluster do "
        "(candidates, debates and scores; `fellowship build --executor` overrides it)")


class Recipe(Strict):
    schema_version: Literal[1] = 1
    name: str
    description: str = ""
    source: Source
    models: dict[str, ModelSpec] = Field(min_length=1)
    # Every section is written out (`export: {}` at least): each DVC stage depends on its own ones.
    generation: Generation = Field(description="for a benchmark, `workflow: import` takes its two responses")
    judge: Judge
    export: Export
    compare: Compare | None = Field(None, description="win rates of this recipe's answers against baselines")
    # How the calls are made, not what they answer: no stage depends on these two.
    budget: Spending | None = Field(None, description="stop the build before its answers cost more than this")
    stages: dict[Literal["candidates", "debates", "scores", "picks", "matches"], StageOptions] = Field(
        {}, description="per LLM stage: `batch: true` to use the providers' batch APIs; `executor: ray` to run it on a Ray cluster"
    )

    _path: Path = PrivateAttr(default=Path("recipe.yaml"))

    @model_validator(mode="before")
    @classmethod
    def _benchmark_answers(cls, data: object) -> object:
        """A benchmark recipe's `workflow: import` takes the benchmark's two responses unless it names others."""
        if not isinstance(data, dict) or not isinstance(data.get("source"), dict) or not data["source"].get("benchmark"):
            return data
        generation = data.get("generation")
        if isinstance(generation, dict) and generation.get("workflow") == "import" and "answers" not in generation:
            generation = {**generation, "answers": [dict(a) for a in BENCHMARK_ANSWERS]}
        return {**data, "generation": generation}

    @field_validator("stages")
    @classmethod
    def _ray_stages(cls, v: dict) -> dict:
        for stage, options in v.items():
            if options.executor == "ray" and stage not in RAY_STAGES:
                raise ValueError(f"{stage}: executor `ray` runs only {', '.join(RAY_STAGES)}; "
                                 f"{stage} runs in the driver (executor `local`)")
        return v

    @field_validator("name")
    @classmethod
    def _slug(cls, v: str) -> str:
        if not SLUG.match(v):
            raise ValueError(f"'{v}' is not a slug of lower-case letters, digits and dashes")
        return v

    @property
    def path(self) -> Path:
        return self._path

    def resolve(self, relative: str) -> Path:
        """A path written in the recipe, relative to the recipe file's folder."""
        return (self._path.parent / relative).resolve()
