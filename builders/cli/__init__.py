"""The `fellowship` command line. One module per command; errors a user can act on print one line
per problem and exit 1, with no traceback. Whatever it prints on stderr (errors, log lines, and the
traceback of a bug) passes through `builders.redact` first."""

from __future__ import annotations

import logging
import os
import sys
import traceback
from pathlib import Path

import click

from builders.errors import BuildError
from builders.redact import redact


def resolve_recipe_path(recipe: str) -> Path:
    """`demo` or `recipes/demo.yaml` -> the recipe file."""
    path = Path(recipe)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    return Path("recipes") / f"{recipe}.yaml"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Debug logging on stderr.")
@click.version_option(package_name="fellowship")
def cli(verbose: bool) -> None:
    """Fellowship builds preference-optimization datasets (DPO, KTO) with multi-model LLM workflows.

    Recipes (recipes/<name>.yaml) describe a source, a generation workflow, a judge and an export;
    each stage writes a Parquet table under data/<name>/ that `fellowship sql` can query.
    """
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(_redact_record)


def _redact_record(record: logging.LogRecord) -> bool:
    """A log line as it will be printed, redacted (libraries log URLs and response bodies)."""
    record.msg, record.args = redact(record.getMessage()), None
    return True


def main() -> None:
    from builders.cli import build, meta_eval, plan, publish, report, sql, tables, validate  # noqa: F401  (registers the commands)

    try:
        cli(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except BuildError as e:
        click.echo(redact(str(e)), err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except BrokenPipeError:  # the reader of stdout went away (`fellowship sql ... | head`): nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    except OSError as e:  # the system refused a file operation: name the file (when known) and the reason
        where = f"{e.filename}: " if e.filename else ""
        click.echo(redact(f"{where}{e.strerror or e} (errno {e.errno})"), err=True)
        sys.exit(1)
    except Exception:  # a bug: its traceback, without credentials
        click.echo(redact(traceback.format_exc()).rstrip(), err=True)
        sys.exit(1)
