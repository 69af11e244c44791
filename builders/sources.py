"""Reading a recipe's source: local Parquet/JSONL/CSV files, `save_to_disk` folders, or Hub datasets."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from builders.errors import RecipeError, first_line
from builders.recipe import Recipe

SUFFIXES = (".parquet", ".jsonl", ".ndjson", ".json", ".csv")


def _is_saved_dataset(path: Path) -> bool:
    return (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists() or (path / "state.json").exists()


def _read_file(path: Path) -> pl.DataFrame:
    if path.stat().st_size == 0:
        return pl.DataFrame()
    try:
        return _read_by_suffix(path)
    except RecipeError:
        raise
    except Exception as e:  # polars, pyarrow and OS errors all mean: this file cannot be read
        raise RecipeError(f"source.path: cannot read {path}: {first_line(e)}") from None


def _read_by_suffix(path: Path) -> pl.DataFrame:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return pl.read_parquet(path)
    if suffix in (".jsonl", ".ndjson"):
        return pl.read_ndjson(path, infer_schema_length=None)
    if suffix == ".json":
        return pl.read_json(path, infer_schema_length=None)
    if suffix == ".csv":
        return pl.read_csv(path, infer_schema_length=None)
    raise RecipeError(f"source.path: cannot read {path} (expected one of {', '.join(SUFFIXES)} or a save_to_disk folder)")


def _read_saved(path: Path, split: str) -> pl.DataFrame:
    """A `save_to_disk` folder (one dataset, or a dict of splits)."""
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise RecipeError(f"source.split: '{split}' not in {path} (splits: {', '.join(ds)})")
            ds = ds[split]
        return ds.to_polars()
    except RecipeError:
        raise
    except Exception as e:  # datasets, pyarrow and OS errors all mean: this folder cannot be read
        raise RecipeError(f"source.path: cannot read the saved dataset {path}: {first_line(e)}") from None


def _read_local(recipe: Recipe) -> pl.DataFrame:
    path = recipe.resolve(recipe.source.path)
    if path.is_file():
        return _read_file(path)
    if path.is_dir():
        if _is_saved_dataset(path):
            return _read_saved(path, recipe.source.split)
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in SUFFIXES)
        if not files:
            raise RecipeError(f"source.path: folder {path} holds no {', '.join(SUFFIXES)} files")
        return pl.concat([_read_file(p) for p in files], how="diagonal_relaxed")
    raise RecipeError(f"source.path: {path} does not exist")


def _read_hub(recipe: Recipe) -> pl.DataFrame:
    import datasets

    s = recipe.source
    try:
        ds = datasets.load_dataset(s.dataset, s.config, split=s.split)
    except Exception as e:  # the Hub client raises many types; all mean the same to the user
        raise RecipeError(f"source.dataset: cannot load '{s.dataset}' split '{s.split}': {e}".splitlines()[0]) from None
    return ds.to_polars()


BENCHMARK_DIR = Path(__file__).parent / "benchmarks"


def benchmark_path(name: str) -> Path:
    """The vendored copy of a human-labelled benchmark (see builders/benchmarks/README.md)."""
    return BENCHMARK_DIR / f"{name}.parquet"


def column(df: pl.DataFrame, name: str) -> pl.Series | None:
    """A column by name, or `col.field` for a field of a struct column; None when absent."""
    if name in df.columns:
        return df[name]
    head, _, field = name.partition(".")
    if field and head in df.columns and isinstance(df.schema[head], pl.Struct):
        if field in [f.name for f in df.schema[head].fields]:
            return df[head].struct.field(field).alias(name)
    return None


def read_source(recipe: Recipe) -> pl.DataFrame:
    """The whole source table, checked to hold the prompt (and id) columns and at least one row."""
    try:
        return _checked_source(recipe)
    except RecipeError as e:
        raise RecipeError(f"{recipe.path}: {e}") from None


def _checked_source(recipe: Recipe) -> pl.DataFrame:
    s = recipe.source
    if s.path is not None:
        df = _read_local(recipe)
    elif s.dataset is not None:
        df = _read_hub(recipe)
    else:
        df = pl.read_parquet(benchmark_path(s.benchmark))
    where = s.where()
    wanted = {f"source.{key}": getattr(s, key) for key in ("prompt_column", "id_column", "label_column", "reference_column")}
    for i, answer in enumerate(recipe.generation.answers):
        wanted[f"generation.answers[{i}].column"] = answer.column
        wanted[f"generation.answers[{i}].model_column"] = answer.model_column
    for name, (kind, entry) in (recipe.compare.entries().items() if recipe.compare else []):
        for i, answer in enumerate(entry.answers):
            wanted[f"compare.{kind}.{name}.answers[{i}].column"] = answer.column
            wanted[f"compare.{kind}.{name}.answers[{i}].model_column"] = answer.model_column
    for key, col in wanted.items():
        if col is not None and column(df, col) is None:
            raise RecipeError(f"{key}: column '{col}' not in {where} (columns: {', '.join(df.columns)})")
    if df.height == 0:
        raise RecipeError(f"source: {where} has no rows")
    if s.turns is not None:
        _check_turns(recipe, df)
    return df


def turn_column(column_name: str, turn: int) -> str:
    """The source column with an answer column's answers to `turn` (MT-Bench: `response_a_turn2`)."""
    return column_name if turn == 1 else f"{column_name}_turn{turn}"


def _check_turns(recipe: Recipe, df: pl.DataFrame) -> None:
    s, where = recipe.source, recipe.source.where()
    for name, dtype in (("turn", "the turn each row judges"), ("turns", "the user turns")):
        if name not in df.columns:
            raise RecipeError(f"source.turns: column '{name}' ({dtype}) not in {where}: it has no turns (columns: {', '.join(df.columns)})")
    if s.turns == "all":
        for i, answer in enumerate(recipe.generation.answers):
            for k in range(2, int(df["turn"].max() or 1) + 1):
                if column(df, turn_column(answer.column, k)) is None:
                    raise RecipeError(
                        f"source.turns: column '{turn_column(answer.column, k)}' (generation.answers[{i}] at turn {k}) "
                        f"not in {where}"
                    )


def source_problems(recipe: Recipe) -> list[str]:
    """Problems visible without reading a Hub dataset: a missing or unreadable file, column, or no rows."""
    if recipe.source.dataset is not None:
        return []
    try:
        _checked_source(recipe)
    except RecipeError as e:
        return [str(e)]
    return []
