"""One command at a time writes a recipe's tables: `build`, `meta-eval` and `publish` hold the
recipe's lock (`data/<recipe>/.lock`, an operating-system file lock through `filelock`) while they
run. A second command on the same recipe and data folder is refused at once, in one line; the
lock goes with the process that holds it, so a killed build never leaves it held.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from builders.errors import BuildError

LOCK_NAME = ".lock"


@contextmanager
def recipe_lock(data_dir: Path, recipe: str) -> Iterator[None]:
    """Hold `recipe`'s lock in `data_dir` (its tables' folder), or raise BuildError if another
    process holds it."""
    path = Path(data_dir) / LOCK_NAME
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(path, timeout=0)
        lock.acquire()
    except Timeout:
        raise BuildError(
            f"{path}: another fellowship command is writing recipe '{recipe}' in {data_dir}; "
            "wait for it to finish and run this one again"
        ) from None
    except OSError as e:
        raise BuildError(f"{path}: cannot take the recipe's lock ({e.strerror}); check that {data_dir} is writable") from None
    try:
        yield
    finally:
        lock.release()
