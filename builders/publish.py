"""Publishing a recipe's `dpo` and `kto` tables (and its feedback datasets, `dpo_feedback` and
`kto_feedback`, when it has them) as configs of one Hugging Face Hub dataset.

`prepare` writes the folder that would be uploaded (`README.md` card, `dpo/train-*.parquet`,
`kto/train-*.parquet`, and `dpo_feedback/`, `kto_feedback/` when a feedback loop gave them rows), after checking that the outputs are current (`dvc status` clean for the
recipe's export stages and everything upstream), that the judge passes its gate, and that the exports,
in the recipe's TRL format (`export.format`, see builders/trl_format.py), keep TRL's column contracts.
`upload` sends it with `huggingface_hub`. The token comes from `HF_TOKEN` or the standard Hub login,
and is never written or printed.
"""

from __future__ import annotations

from pathlib import Path

from builders.card import card
from builders.errors import BuildError, first_line
from builders.export_checks import dpo_problems, kto_balance, kto_problems, standard_problems
from builders.gate import gate_problem
from builders.recipe import Recipe
from builders.tables import DPO, DPO_FEEDBACK, KTO, KTO_FEEDBACK, read_table, replace_atomically
from builders.trl_format import trl_frame

EXPORTS = {
    "dpo": (DPO, dpo_problems),
    "kto": (KTO, kto_problems),
    "dpo_feedback": (DPO_FEEDBACK, lambda df: dpo_problems(df, "dpo_feedback")),
    "kto_feedback": (KTO_FEEDBACK, lambda df: kto_problems(df, "kto_feedback")),
}
OPTIONAL = ("dpo_feedback", "kto_feedback")  # published when they have rows (a feedback loop with one reviewer)


def published(recipe: Recipe, data_dir: Path) -> dict:
    """Config name -> the frame published for it: the stored table in the recipe's TRL format; the
    feedback tables only when they have rows."""
    tables = {name: read_table(table, data_dir) for name, (table, _) in EXPORTS.items()}
    return {name: trl_frame(name, df, recipe.export.format) for name, df in tables.items()
            if df.height or name not in OPTIONAL}


def stale_stages(recipe: Recipe, repo_root: Path) -> list[str]:
    """DVC stages of this recipe's exports (and their upstream) whose outputs are not current."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    targets = [f"{name}@{recipe.name}" for name in EXPORTS]
    try:
        with Repo(str(repo_root)) as repo:
            return sorted(repo.status(targets=targets, with_deps=True))
    except DvcException as e:
        reason = first_line(e)
        raise BuildError(
            f"{recipe.path}: publish: cannot tell whether the exports are current ({reason}); "
            f"list '{recipe.name}' under `recipes` in params.yaml and run `dvc repro`"
        ) from None


def check(recipe: Recipe, data_dir: Path, repo_root: Path) -> None:
    """Raise BuildError (one line) when the exports may not be published."""
    where = f"{recipe.path}: publish"
    problem = gate_problem(recipe, data_dir)
    if problem:
        raise BuildError(problem)
    stale = stale_stages(recipe, repo_root)
    if stale:
        raise BuildError(f"{where}: outputs are stale against the recipe or code ({', '.join(stale)}); run `dvc repro` first")
    if recipe.export.format == "standard":
        for name, (table, _) in EXPORTS.items():
            problems = standard_problems(name, read_table(table, data_dir))
            if problems:
                raise BuildError(f"{where}: {problems[0]}")
    for name, df in published(recipe, data_dir).items():
        problems_of = EXPORTS[name][1]
        if df.height == 0:
            raise BuildError(f"{where}: the {name} table is empty; nothing to publish")
        problems = problems_of(df)
        if problems:
            raise BuildError(f"{where}: {problems[0]}")


def prepare(recipe: Recipe, data_dir: Path, repo_id: str, out: Path) -> Path:
    """Write the folder to upload at `out` (replaced whole), from tables already checked."""
    tables = published(recipe, data_dir)
    readme = card(recipe, data_dir, repo_id, configs=list(tables))

    def write(tmp: Path) -> None:
        for name, df in tables.items():
            (tmp / name).mkdir(parents=True)
            df.write_parquet(tmp / name / "train-00000-of-00001.parquet")
        (tmp / "README.md").write_text(readme)

    return replace_atomically(out, write)


def summary(data_dir: Path) -> str:
    """One line on what is about to leave: pair and example counts, and the KTO balance."""
    dpo, kto = read_table(DPO, data_dir), read_table(KTO, data_dir)
    b = kto_balance(kto)
    weight = f"; KTOTrainer undesirable_weight={b['undesirable_weight']} balances them" if b["undesirable_weight"] else ""
    line = f"dpo: {dpo.height} pairs; kto: {b['desirable']} desirable, {b['undesirable']} undesirable{weight}"
    pairs, reviews = read_table(DPO_FEEDBACK, data_dir), read_table(KTO_FEEDBACK, data_dir)
    if pairs.height or reviews.height:
        fb = kto_balance(reviews)
        line += f"; dpo_feedback: {pairs.height} pairs; kto_feedback: {fb['desirable']} desirable, {fb['undesirable']} undesirable"
    return line


def hub_token() -> str:
    """The Hub token from HF_TOKEN or the standard login; a one-line error when there is none."""
    from huggingface_hub import get_token

    token = get_token()
    if not token:
        raise BuildError("publish: no Hugging Face token: set HF_TOKEN or run `hf auth login`")
    return token


def upload(folder: Path, repo_id: str, *, private: bool, revision: str | None, message: str, api=None):
    """Create the dataset repo (private unless told otherwise) and the branch if needed, then upload
    the folder in one commit. Returns the commit info."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = api if api is not None else HfApi(token=hub_token())
    try:
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        if revision:
            api.create_branch(repo_id, repo_type="dataset", branch=revision, exist_ok=True)
        return api.upload_folder(repo_id=repo_id, repo_type="dataset", folder_path=str(folder),
                                 revision=revision, commit_message=message)
    except HfHubHTTPError as e:
        raise BuildError(f"publish: the Hub refused {repo_id}: {first_line(e)}") from None
