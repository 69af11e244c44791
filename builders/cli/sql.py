"""`fellowship sql`: one read-only DuckDB query over every recipe's tables.

The connection is a sandbox: DuckDB's external access is off except for the data folder (and the
files its tables resolve to), extensions are neither installed nor loaded on demand, and the
configuration is locked, so no query reads a file outside the data folder or reaches the network.
Only a single SELECT-like statement runs. A damaged table file breaks only the queries that read it.
"""

from __future__ import annotations

import base64
import csv
import datetime
import decimal
import json
import math
import re
import sys
import tempfile
from pathlib import Path

import click

from builders.cli import cli
from builders.errors import BuildError, first_line
from builders.recipe import SLUG
from builders.stages import default_data_root
from builders.tables import TABLES


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _sandbox(con, root: Path, files: list[Path], temp_dir: str) -> None:
    """Lock `con` to reading under `root` (and the files there, wherever their links point)."""
    targets = sorted({str(f.resolve()) for f in files} - {str(f.absolute()) for f in files})
    con.execute(f"set temp_directory = {_quote(temp_dir)}")
    con.execute(f"set allowed_directories = [{_quote(str(root.resolve()) + '/')}]")
    if targets:
        con.execute(f"set allowed_paths = [{', '.join(_quote(t) for t in targets)}]")
    con.execute("set enable_external_access = false")
    con.execute("set lock_configuration = true")


def connect(data_root: Path, recipe: str | None, temp_dir: str):
    """(an in-memory DuckDB with one view per table over every recipe's Parquet file, column
    `recipe`; table name -> why it has no view: a file of it that cannot be read). `temp_dir` is a
    private folder DuckDB may spill to (it may read there too)."""
    import duckdb

    con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    pattern = recipe or "*"
    by_table = {name: sorted(data_root.glob(f"{pattern}/{name}.parquet")) for name in TABLES}
    _sandbox(con, data_root, [f for files in by_table.values() for f in files], temp_dir)
    broken: dict[str, str] = {}
    for name, files in by_table.items():
        if not files:
            continue
        try:
            paths = ", ".join(_quote(str(f)) for f in files)
            con.execute(
                f"create view {name} as select * exclude (filename), "
                f"regexp_extract(filename, '([^/\\\\]+)[/\\\\][^/\\\\]+$', 1) as recipe "
                f"from read_parquet([{paths}], filename = true, union_by_name = true)"
            )
        except duckdb.Error:
            broken[name] = _damaged(con, name, files)
    return con, broken


def _damaged(con, table: str, files: list[Path]) -> str:
    """The first file of `table` DuckDB cannot read, and what to do about it."""
    import duckdb

    for f in files:
        try:
            con.execute(f"select * from read_parquet({_quote(str(f))}) limit 0")
        except duckdb.Error as e:
            reason = first_line(e)
            return (f"{f}: cannot read the {table} table ({reason}); "
                    f"rebuild it with `fellowship build {f.parent.name} --stage {table}`")
    return f"table {table}: its files do not read as one table; rebuild them with `dvc repro`"


@cli.command()
@click.argument("query")
@click.option("--recipe", default=None, help="Only this recipe's tables.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, help="Root of the tables (default: data).")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True,
              help="table, CSV (list and struct columns as JSON text) or JSON lines.")
def sql(query: str, recipe: str | None, data_dir: str | None, fmt: str) -> None:
    """Run a DuckDB QUERY over the tables; each table is a view with an extra `recipe` column.

    Read-only: one SELECT (or WITH, FROM, ...) statement, which can read only the tables under the
    data folder: other files, URLs and extensions are refused.

    Example: fellowship sql "select judge, avg(score) from scores group by 1"
    """
    import duckdb

    root = Path(data_dir) if data_dir else default_data_root()
    if recipe and not SLUG.match(recipe):
        raise BuildError(f"--recipe: '{recipe}' is not a recipe name (lower-case letters, digits and dashes)")
    if recipe and not (root / recipe).is_dir():
        raise BuildError(f"--recipe: no tables for recipe '{recipe}' under {root}/ (run `fellowship build {recipe}`)")
    if not any(root.glob(f"{recipe or '*'}/*.parquet")):
        raise BuildError(f"sql: no tables under {root}/ (run `dvc repro` or `fellowship build RECIPE` first)")
    with tempfile.TemporaryDirectory(prefix="fellowship-sql-") as temp_dir:
        con, broken = connect(root, recipe, temp_dir)
        try:
            statements = con.extract_statements(query)
            if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
                raise BuildError("sql: give exactly one read-only query (SELECT, WITH ..., FROM ...); the tables are not edited here")
            result = con.sql(query).to_arrow_table()
        except duckdb.Error as e:
            raise BuildError(_query_error(e, broken)) from None
        finally:
            con.close()
    _write(result, fmt)


def _query_error(e: Exception, broken: dict[str, str]) -> str:
    import duckdb

    message = first_line(e)
    if isinstance(e, duckdb.CatalogException):
        for table, why in broken.items():
            if re.search(rf"\b{table}\b", message):
                return f"sql: {why}"
    if isinstance(e, duckdb.PermissionException):
        return f"sql: {message} (queries read only the tables under the data folder)"
    return f"sql: {message}"


def _plain(value: object) -> object:
    """A query value as plain JSON data: nested values kept, the rest as JSON numbers or text."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if type(value).__name__ == "MonthDayNano":  # pyarrow's interval
        return {"months": value.months, "days": value.days, "nanoseconds": value.nanoseconds}
    if isinstance(value, list) and value and all(isinstance(p, tuple) and len(p) == 2 for p in value):
        return {str(k): _plain(v) for k, v in value}  # pyarrow gives a MAP as (key, value) pairs
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return str(value)  # UUID, timedelta, ...


def _text(value: object) -> str | None:
    """A query value as one CSV cell: nested values (lists, structs, maps) as JSON text."""
    plain = _plain(value)
    if plain is None:
        return None
    return json.dumps(plain, ensure_ascii=False) if isinstance(plain, (dict, list)) else str(plain)


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        n = seen.get(name, 0)
        seen[name] = n + 1
        out.append(name if n == 0 else f"{name}_{n}")
    return out


def _write(result, fmt: str) -> None:
    """Print a pyarrow table as a table, CSV or JSON lines."""
    names = _unique(result.column_names)
    columns = [result.column(i).to_pylist() for i in range(result.num_columns)]
    rows = list(zip(*columns))
    if fmt == "csv":
        out = csv.writer(sys.stdout, lineterminator="\n")
        out.writerow(result.column_names)
        out.writerows([_text(v) for v in row] for row in rows)
    elif fmt == "json":
        for row in rows:
            sys.stdout.write(json.dumps(dict(zip(names, map(_plain, row))), ensure_ascii=False) + "\n")
    else:
        import polars as pl

        try:
            df = pl.from_arrow(result.rename_columns(names))
        except Exception:  # a DuckDB type polars cannot hold (interval, union): show it as text
            df = pl.DataFrame({n: [_text(v) for v in col] for n, col in zip(names, columns)},
                              schema={n: pl.String for n in names})
        with pl.Config(tbl_rows=-1, tbl_cols=-1, fmt_str_lengths=60, tbl_hide_dataframe_shape=True):
            click.echo(df)
