"""What the last run of each stage did, per recipe: `data/<recipe>/build_log.json`.

`fellowship build` (and so `dvc repro`) prints each stage's wall time, rows, calls, cache hits,
retries, tokens and cost; this keeps the same figures, per stage and per model, for the report.
The tables themselves record each row's tokens, cost and latency as when the call was made (the
same whether the cache answered or not); only this log says what a run paid and how long it took.
It is a side file, not a DVC output: a stage re-run rewrites its own entry, and a checkout whose
tables came from `dvc pull` has none (the report says so). Written atomically, like the tables.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from builders.tables import json_number, write_json

NAME = "build_log.json"


def _usage(u) -> dict:
    return {
        "calls": u.calls, "cached": u.cached, "retries": u.retries, "tokens_in": u.tokens_in,
        "tokens_out": u.tokens_out, "cost_usd": json_number(u.cost_usd), "cached_cost_usd": json_number(u.cached_cost_usd),
    }


def record(data_dir: Path, stage: str, wall_s: float, rows: dict[str, int], engine=None) -> None:
    """Replace `stage`'s entry with this run's figures (`engine`: the stage's, for an LLM stage)."""
    entries = read(data_dir)
    entries[stage] = {
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "wall_s": json_number(wall_s),
        "rows": rows,
        **(_usage(engine.usage) if engine else {}),
        "models": {name: _usage(u) for name, u in sorted(engine.by_model.items())} if engine else {},
    }
    write_json(data_dir / NAME, entries)


def read(data_dir: Path) -> dict[str, dict]:
    """stage -> its last run's entry ({} when nothing was recorded)."""
    path = data_dir / NAME
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
