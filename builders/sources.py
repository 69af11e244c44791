"""Reading a recipe's source: local Parquet/JSONL/CSV files, `save_to_disk` folders, or Hub datasets."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import polars as pl

from builders.errors import RecipeError, first_line
from builders.recipe import Recipe
from builders.tables import open_parquet

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


def _saved_dataset(path: Path, split: str):
    """A `save_to_disk` folder (one dataset, or a dict of splits), as a `datasets.Dataset`."""
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise RecipeError(f"source.split: '{split}' not in {path} (splits: {', '.join(ds)})")
            ds = ds[split]
        return ds
    except RecipeError:
        raise
    except Exception as e:  # datasets, pyarrow and OS errors all mean: this folder cannot be read
        raise RecipeError(f"source.path: cannot read the saved dataset {path}: {first_line(e)}") from None


def _read_saved(path: Path, split: str) -> pl.DataFrame:
    return _saved_dataset(path, split).to_polars()


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


def _hub_dataset(recipe: Recipe):
    import datasets

    s = recipe.source
    try:
        return datasets.load_dataset(s.dataset, s.config, split=s.split)
    except Exception as e:  # the Hub client raises many types; all mean the same to the user
        raise RecipeError(f"source.dataset: cannot load '{s.dataset}' split '{s.split}': {e}".splitlines()[0]) from None


def _read_hub(recipe: Recipe) -> pl.DataFrame:
    return _hub_dataset(recipe).to_polars()


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


def _wanted_columns(recipe: Recipe) -> dict[str, str]:
    """recipe field -> the source column it names."""
    s = recipe.source
    wanted = {f"source.{key}": getattr(s, key) for key in ("prompt_column", "id_column", "label_column", "reference_column")}
    for i, answer in enumerate(recipe.generation.answers):
        wanted[f"generation.answers[{i}].column"] = answer.column
        wanted[f"generation.answers[{i}].model_column"] = answer.model_column
    for name, (kind, entry) in (recipe.compare.entries().items() if recipe.compare else []):
        for i, answer in enumerate(entry.answers):
            wanted[f"compare.{kind}.{name}.answers[{i}].column"] = answer.column
            wanted[f"compare.{kind}.{name}.answers[{i}].model_column"] = answer.model_column
    return {key: col for key, col in wanted.items() if col is not None}


def _check_columns(recipe: Recipe, df: pl.DataFrame) -> None:
    """`df` (the source, or its first rows) holds every column the recipe names."""
    for key, col in _wanted_columns(recipe).items():
        if column(df, col) is None:
            raise RecipeError(f"{key}: column '{col}' not in {recipe.source.where()} (columns: {', '.join(df.columns)})")


def _checked_source(recipe: Recipe) -> pl.DataFrame:
    s = recipe.source
    if s.path is not None:
        df = _read_local(recipe)
    elif s.dataset is not None:
        df = _read_hub(recipe)
    else:
        df = pl.read_parquet(benchmark_path(s.benchmark))
    _check_columns(recipe, df)
    if df.height == 0:
        raise RecipeError(f"source: {s.where()} has no rows")
    if s.turns is not None:
        _check_turns(recipe, df)
    return df


BATCH_ROWS = 2048  # source rows read at once by `source_batches`


def _parquet_files(recipe: Recipe) -> list[Path] | None:
    """The source's Parquet files, when it is one Parquet file or a folder of them only."""
    if recipe.source.benchmark is not None:
        return [benchmark_path(recipe.source.benchmark)]
    if recipe.source.path is None:
        return None
    path = recipe.resolve(recipe.source.path)
    if path.is_file():
        files = [path]
    elif path.is_dir() and not _is_saved_dataset(path):
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in SUFFIXES)
    else:
        return None
    return files if files and all(p.suffix.lower() == ".parquet" and p.stat().st_size for p in files) else None


def _parquet_batches(files: list[Path]) -> tuple[int, Iterator[pl.DataFrame]]:
    try:
        opened = [(p, open_parquet(p)) for p in files]
        schemas = {str(f.schema_arrow) for _, f in opened}
    except Exception as e:  # pyarrow and OS errors all mean: this file cannot be read
        raise RecipeError(f"source.path: cannot read {files[0] if len(files) == 1 else files[0].parent}: {first_line(e)}") from None
    if len(schemas) > 1:
        return -1, iter(())  # files with different columns: read whole, as `read_source` joins them

    def batches() -> Iterator[pl.DataFrame]:
        for path, file in opened:
            try:
                for batch in file.iter_batches(batch_size=BATCH_ROWS, use_threads=False):
                    yield pl.from_arrow(batch)
            except Exception as e:
                raise RecipeError(f"source.path: cannot read {path}: {first_line(e)}") from None

    return sum(f.metadata.num_rows for _, f in opened), batches()


def _dataset_batches(ds) -> tuple[int, Iterator[pl.DataFrame]]:
    """An Arrow dataset (the Hub's, a save_to_disk folder's), memory-mapped, a batch at a time."""
    return ds.num_rows, (pl.from_arrow(t) for t in ds.with_format("arrow").iter(batch_size=BATCH_ROWS))


def open_source(recipe: Recipe) -> tuple[int, Iterator[pl.DataFrame]]:
    """(rows, the source a batch of rows at a time, each with its `source_row`), checked as
    `read_source` checks it. Parquet files and Arrow datasets (the Hub's, save_to_disk folders) are
    read a batch at a time, so memory does not grow with the source; JSONL, JSON and CSV files are
    read whole, since their column types are inferred from every row (convert a large one to
    Parquet first), as is a multi-turn benchmark (its checks look at every row)."""
    try:
        height, batches = _open(recipe)
    except RecipeError as e:
        raise RecipeError(f"{recipe.path}: {e}") from None
    return height, _numbered(recipe, batches)


def _open(recipe: Recipe) -> tuple[int, Iterator[pl.DataFrame]]:
    s = recipe.source
    height, batches = -1, iter(())
    if (files := _parquet_files(recipe)) is not None:
        height, batches = _parquet_batches(files)
    elif s.dataset is not None or (s.path is not None and _is_saved_dataset(recipe.resolve(s.path))):
        height, batches = _dataset_batches(_hub_dataset(recipe) if s.dataset is not None else _saved_dataset(recipe.resolve(s.path), s.split))
    if height < 0 or s.turns is not None:
        df = _checked_source(recipe)
        return df.height, iter([df])
    if height == 0:
        raise RecipeError(f"source: {s.where()} has no rows")
    return height, batches


def _numbered(recipe: Recipe, batches: Iterator[pl.DataFrame]) -> Iterator[pl.DataFrame]:
    start = 0
    try:
        for batch in batches:
            if start == 0:
                _check_columns(recipe, batch)
            yield batch.with_row_index("source_row", offset=start).with_columns(pl.col("source_row").cast(pl.Int64))
            start += batch.height
    except RecipeError as e:
        raise RecipeError(f"{recipe.path}: {e}") from None


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
