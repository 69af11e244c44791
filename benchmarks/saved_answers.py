"""The judges' raw answers of a benchmark, kept in the repository beside its table.

A local-model benchmark takes hours; its answers are saved as gzipped JSON lines (`save_answers`)
and put back into a response cache (`load_answers`), so its table can be reproduced, or its run
continued, from a fresh clone. `interval` prints a figure with its bootstrap 95% interval.
"""

from __future__ import annotations

import gzip
import json
import os
import sqlite3
from pathlib import Path


def load_answers(cache_dir: Path, answers: Path) -> int:
    """Put the saved answers the cache lacks into it; how many were added."""
    from builders.llm.cache import ResponseCache
    from builders.llm.types import Completion

    if not answers.exists():
        return 0
    cache, added = ResponseCache(cache_dir), 0
    with gzip.open(answers, "rt", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if cache.get(row["key"]) is None:
                cache.put(row["key"], Completion.from_stored(row["completion"]), row["latency_s"])
                added += 1
    cache.close()
    return added


def save_answers(cache_dir: Path, answers: Path) -> int:
    """Every cached answer, sorted by key, into `answers` (written whole, then moved into place)."""
    db = sqlite3.connect(cache_dir / "responses.sqlite")
    rows = db.execute("select key, completion, latency_s from responses order by key").fetchall()
    db.close()
    tmp = answers.with_name(answers.name + ".tmp")
    with gzip.open(tmp, "wt", encoding="utf-8") as f:
        for key, completion, latency in rows:
            f.write(json.dumps({"key": key, "completion": json.loads(completion), "latency_s": latency}) + "\n")
    os.replace(tmp, answers)
    return len(rows)


def interval(r: dict, name: str) -> str:
    """`r[name]` with its interval `r[name_low]`..`r[name_high]`, or n/a."""
    v, lo, hi = r.get(name), r.get(f"{name}_low"), r.get(f"{name}_high")
    return "n/a" if v is None else f"{v:.3f} [{lo:.3f}, {hi:.3f}]"
