"""Reading a Parquet file a batch at a time: how pyarrow's read options move the reader's memory.

The stages read their input tables, and `items` its Parquet source, a batch at a time
(`builders.tables.open_parquet`). With pyarrow's defaults (`pre_buffer=True`), the resident memory of
a loop that only iterates the batches grows with the rows read, because the pre-buffered ranges are
kept until the file is closed. Each variant runs in a fresh process over the same file and prints its
RSS at each tenth of the file and its peak (`VmHWM`).

    python benchmarks/parquet_reads.py --rows 1000000     # about 2 minutes, most of it writing the file

Results are printed as Markdown and merged into benchmarks/results/parquet_reads.json.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # benchmark this checkout's code, whatever copy is installed

import click  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "parquet_reads.json"
ROW_GROUP_ROWS = 125_000  # as polars writes a file of this many rows of prompts
BATCH_ROWS = 2048

VARIANTS = {
    "pyarrow defaults, mimalloc pool": ("default_pool", {}),
    "pyarrow defaults, system pool": ("system_pool", {}),
    "pre_buffer=False, system pool": ("system_pool", {"pre_buffer": False}),
    "pre_buffer=False, 1 MB buffer, system pool (open_parquet)": ("system_pool", {"pre_buffer": False, "buffer_size": 1 << 20}),
    "memory_map=True, system pool": ("system_pool", {"memory_map": True}),
}


def write_source(path: Path, rows: int) -> None:
    """`rows` prompts of 30 to 60 words (about 350 bytes each), in row groups of ROW_GROUP_ROWS."""
    import numpy as np
    import polars as pl

    words = np.array("the of and to in is that for it as was with be by on not he this are or".split())
    rng = np.random.default_rng(0)
    lengths = rng.integers(30, 61, rows)
    picked = words[rng.integers(0, len(words), int(lengths.sum()))]
    prompts, start = [], 0
    for i, n in enumerate(lengths):
        prompts.append(f"Question {i}: " + " ".join(picked[start:start + n]) + "?")
        start += n
    pl.DataFrame({"prompt": prompts}).write_parquet(path, row_group_size=ROW_GROUP_ROWS)


def child(path: str, variant: str) -> None:
    """Iterate the file's batches under one variant; print the RSS series and the peak as JSON."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pool, options = VARIANTS[variant]
    if pool == "system_pool":
        pa.set_memory_pool(pa.system_memory_pool())
    file = pq.ParquetFile(path, **options)
    batches = -(-file.metadata.num_rows // BATCH_ROWS)
    series = []
    for i, _ in enumerate(file.iter_batches(batch_size=BATCH_ROWS)):
        if i % max(1, batches // 10) == 0:
            series.append(_status("VmRSS"))
    print(json.dumps({"series_mb": series, "end_mb": _status("VmRSS"), "peak_mb": _status("VmHWM")}))


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) // 1024 for line in f if line.startswith(field + ":"))


@click.command()
@click.option("--rows", default=1_000_000, show_default=True, help="Rows of the Parquet file.")
@click.option("--workdir", type=click.Path(file_okay=False), default="benchmarks/.work", show_default=True)
@click.option("--child", "child_args", nargs=2, hidden=True)
def main(rows: int, workdir: str, child_args: tuple[str, str] | None) -> None:
    if child_args:
        child(*child_args)
        return
    folder = Path(workdir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"prompts-{rows}.parquet"
    if not path.exists():
        write_source(path, rows)
    results = {}
    for variant in VARIANTS:
        out = subprocess.run([sys.executable, __file__, "--child", str(path), variant], capture_output=True, text=True, check=True)
        results[variant] = json.loads(out.stdout)
    print(f"Iterating {rows:,} rows ({path.stat().st_size / 1e6:.0f} MB, row groups of {ROW_GROUP_ROWS:,}) "
          f"{BATCH_ROWS:,} rows at a time:\n")
    print("| reader | RSS at each tenth (MB) | peak MB |")
    print("| --- | --- | --- |")
    for variant, r in results.items():
        print(f"| {variant} | {' '.join(map(str, r['series_mb']))} | {r['peak_mb']} |")
    saved = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    saved[str(rows)] = {"variants": results, "commit": commit, "load_average": [round(x, 2) for x in os.getloadavg()],
                        "recorded_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(saved, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
