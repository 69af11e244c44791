"""The `fellowship` command line. One module per command; errors a user can act on print one line
per problem and exit 1, with no traceback. Whatever it prints on stderr (errors, log lines, and the
traceback of a bug) passes through `builders.redact` first."""

from __future__ import annotations

import gc
import importlib
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


# name -> (module defining it, the first paragraph of its help). A command's module is imported only
# when the command runs (or shows its own help), so `fellowship --help` loads none of the pipeline;
# tests/test_cli.py checks these lines against the commands' own help.
COMMANDS: dict[str, tuple[str, str]] = {
    "build": ("builders.cli.build", "Build RECIPE's tables under data/<recipe>/: items, candidates, labels, debates, scores, "
              "verdicts, dpo, kto, dpo_feedback, kto_feedback (preferences over the reviewer's feedback); for a benchmark "
              "recipe, then its meta-evaluation (see `fellowship meta-eval`)."),
    "meta-eval": ("builders.cli.meta_eval", "Measure benchmark RECIPES' judges against the human labels (no LLM calls)."),
    "plan": ("builders.cli.plan", "Calls, tokens, cost and hours of building RECIPE, per stage and model, before any call is made."),
    "publish": ("builders.cli.publish", "Push RECIPE's dpo and kto tables (and dpo_feedback, kto_feedback when a feedback "
                "loop gave them rows) to the Hugging Face Hub as configs of one dataset, in TRL's export.format, with a "
                "dataset card (README.md) that tells how they were made."),
    "report": ("builders.cli.report", "Write RECIPE's report, data/<recipe>/report.html: one self-contained page (no network needed)."),
    "sql": ("builders.cli.sql", "Run a DuckDB QUERY over the tables; each table is a view with an extra `recipe` column."),
    "tables": ("builders.cli.tables", "Describe the tables: grain, primary key and every column (all tables, or NAMES)."),
    "validate": ("builders.cli.validate", "Check RECIPES (names or paths) without calling any model."),
}


class LazyGroup(click.Group):
    """A group whose commands are imported when used (`COMMANDS`)."""

    freeze_imports = False  # `main` sets it (see there); a test's CliRunner leaves the collector alone

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *self.commands})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.commands and name in COMMANDS:
            importlib.import_module(COMMANDS[name][0])  # its decorator registers it on `cli`
            if self.freeze_imports:
                gc.freeze()
        return self.commands.get(name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list from `COMMANDS`, without importing any command."""
        shown = {name: self.commands.get(name) or click.Command(name, help=COMMANDS[name][1])
                 for name in self.list_commands(ctx)}
        if shown:
            limit = formatter.width - 6 - max(map(len, shown))
            with formatter.section("Commands"):
                formatter.write_dl([(name, cmd.get_short_help_str(limit)) for name, cmd in shown.items()])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
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
    """The console script. Two calls keep Python's cycle collector off the objects that live until
    the process ends: once the command's modules are imported (their classes, schemas and tables,
    hundreds of thousands of objects), and when the command is done. Every full collection during
    a build would walk them again, and the interpreter's collections at exit walk them all (about
    0.4 s of a build's start-up and exit; benchmarks/README.md, "Whole commands")."""
    cli.freeze_imports = True
    try:
        _run()
    finally:
        gc.freeze()


def _run() -> None:
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
