from __future__ import annotations

import click

from builders.cli import cli
from builders.tables import TABLES


@cli.command()
@click.argument("names", nargs=-1)
def tables(names: tuple[str, ...]) -> None:
    """Describe the tables: grain, primary key and every column (all tables, or NAMES)."""
    for name in names or TABLES:
        if name not in TABLES:
            raise click.BadParameter(f"unknown table '{name}' (known: {', '.join(TABLES)})", param_hint="NAMES")
        t = TABLES[name]
        click.echo(f"{t.name}: {t.grain}; key ({', '.join(t.primary_key)})")
        for c in t.columns:
            null = ", nullable" if c.nullable else ""
            click.echo(f"  {c.name:<18} {str(c.dtype):<14} {c.doc}{null}")
        click.echo()
