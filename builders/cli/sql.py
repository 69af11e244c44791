from __future__ import annotations

import sys
from pathlib import Path

import click

from builders.cli import cli
from builders.errors import BuildError
from builders.stages import default_data_root
from builders.tables import TABLES


def connect(data_root: Path, recipe: str | None = None):
    """An in-memory DuckDB with one view per table over every recipe's Parquet file (column `recipe`)."""
    import duckdb

    con = duckdb.connect()
    pattern = recipe or "*"
    for name in TABLES:
        files = sorted(data_root.glob(f"{pattern}/{name}.parquet"))
        if not files:
            continue
        paths = ", ".join("'" + str(f).replace("'", "''") + "'" for f in files)
        con.execute(
            f"create view {name} as select * exclude (filename), "
            f"regexp_extract(filename, '([^/\\\\]+)[/\\\\][^/\\\\]+$', 1) as recipe "
            f"from read_parquet([{paths}], filename = true, union_by_name = true)"
        )
    return con


@cli.command()
@click.argument("query")
@click.option("--recipe", default=None, help="Only this recipe's tables.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, help="Root of the tables (default: data).")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
def sql(query: str, recipe: str | None, data_dir: str | None, fmt: str) -> None:
    """Run a DuckDB QUERY over the tables; each table is a view with an extra `recipe` column.

    Example: fellowship sql "select judge, avg(score) from scores group by 1"
    """
    import duckdb
    import polars as pl

    root = Path(data_dir) if data_dir else default_data_root()
    if recipe and not (root / recipe).is_dir():
        raise BuildError(f"--recipe: no tables for recipe '{recipe}' under {root}/ (run `fellowship build {recipe}`)")
    if not any(root.glob(f"{recipe or '*'}/*.parquet")):
        raise BuildError(f"sql: no tables under {root}/ (run `dvc repro` or `fellowship build RECIPE` first)")
    con = connect(root, recipe)
    try:
        statements = con.extract_statements(query)
        if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
            raise BuildError("sql: give exactly one read-only query (SELECT, WITH ..., FROM ...); the tables are not edited here")
        df = con.sql(query).pl()
    except duckdb.Error as e:
        raise BuildError(f"sql: {str(e).splitlines()[0]}") from None
    if fmt == "csv":
        sys.stdout.write(df.write_csv())
    elif fmt == "json":
        sys.stdout.write(df.write_ndjson())
    else:
        with pl.Config(tbl_rows=-1, tbl_cols=-1, fmt_str_lengths=60, tbl_hide_dataframe_shape=True):
            click.echo(df)
