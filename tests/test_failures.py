"""Damaged files and full disks, as a user meets them: one line naming the file and what to do,
exit status 1, no traceback, and nothing half-written."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import polars as pl
import pytest

from builders.errors import BuildError
from builders.gate import read_gate
from conftest import assert_one_line, fellowship, tiny_recipe


def hidden_files(folder) -> list[str]:
    return [p.name for p in folder.rglob(".*.tmp-*")]


def test_a_damaged_response_cache_is_assert_one_line(project, tmp_path):
    tiny_recipe(project)
    cache = tmp_path / "cache" / "responses.sqlite"
    cache.parent.mkdir()
    cache.write_bytes(b"this is no sqlite database " * 100)
    for command in ("build", "plan"):
        line = assert_one_line(fellowship(command, "tiny", cwd=project, check=False), str(cache), "file is not a database")
        assert "move it away" in line
    data = tmp_path / "data" / "tiny"
    assert not (data / "candidates.parquet").exists() and hidden_files(tmp_path) == []


@pytest.mark.parametrize("damage", ["truncated", "garbage", "other schema"])
def test_a_damaged_input_table_names_the_file_and_the_stage_that_rebuilds_it(project, tmp_path, damage):
    tiny_recipe(project)
    fellowship("build", "tiny", "--no-progress", cwd=project)
    data = tmp_path / "data" / "tiny"
    candidates, scores = data / "candidates.parquet", data / "scores.parquet"
    before = scores.read_bytes()
    if damage == "truncated":
        candidates.write_bytes(candidates.read_bytes()[: candidates.stat().st_size // 2])
    elif damage == "garbage":
        candidates.write_bytes(b"PAR1" + bytes(range(256)) * 4)
    else:
        pl.read_parquet(data / "items.parquet").write_parquet(candidates)
    result = fellowship("build", "tiny", "--stage", "scores", "--no-progress", cwd=project, check=False)
    assert_one_line(result, str(candidates), "rebuild it with `fellowship build tiny --stage candidates`")
    assert scores.read_bytes() == before and hidden_files(tmp_path) == []
    fellowship("build", "tiny", "--stage", "candidates", "--no-progress", cwd=project)
    fellowship("build", "tiny", "--stage", "scores", "--no-progress", cwd=project)
    assert scores.read_bytes() == before


@pytest.mark.parametrize("ledger", [b"not json", b'["candidates"]', b'{"candidates": "lots"}',
                                    b'{"candidates": -5}', b'{"candidates": NaN}', b'{"candidates": 1e999}',
                                    b"\xff\xfe{}"])
def test_a_spend_ledger_that_is_not_one_stops_before_any_call(project, tmp_path, ledger):
    path = tiny_recipe(project)
    path.write_text(path.read_text() + "budget: {usd: 5}\n")
    spend = tmp_path / "cache" / "spend" / "tiny.json"
    spend.parent.mkdir(parents=True)
    spend.write_bytes(ledger)
    line = assert_one_line(fellowship("build", "tiny", "--no-progress", cwd=project, check=False), f"spend ledger {spend}")
    assert "fix it, or delete it" in line
    assert not (tmp_path / "data" / "tiny" / "candidates.parquet").exists()
    assert spend.read_bytes() == ledger  # what the user must look at is left as it was


def test_a_damaged_gate_file_names_the_command_that_rewrites_it(tmp_path):
    gate = tmp_path / "_gates" / "bench.json"
    gate.parent.mkdir()
    for text in (b"{", b'{"evaluators": 3}', b'{"other": []}', b"\xff"):
        gate.write_bytes(text)
        with pytest.raises(BuildError, match=r"bench.json: not a gate file written by meta-eval .*fellowship meta-eval bench"):
            read_gate(gate)


def test_a_full_disk_while_writing_a_table_is_one_line_and_leaves_nothing(project, tmp_path, monkeypatch, capsys):
    """The write fails as polars (a whole table) or pyarrow (a table written as its rows come)
    reports ENOSPC, after part of the file went out."""
    import pyarrow.parquet as pq

    from builders.cli import main

    def full_disk(self, file, *args, **kwargs):
        with open(file, "wb") as out:
            out.write(b"PAR1 half a table")
        raise pl.exceptions.ComputeError("parquet: File out of specification: underlying IO error: "
                                         "No space left on device (os error 28)")

    def full_disk_in_pyarrow(self, *args, **kwargs):
        with open(self.where, "ab") as out:
            out.write(b"half a row group")
        raise OSError(28, "No space left on device")

    tiny_recipe(project)
    monkeypatch.chdir(project)
    monkeypatch.setattr(pl.DataFrame, "write_parquet", full_disk)
    monkeypatch.setattr(pq.ParquetWriter, "write_table", full_disk_in_pyarrow)
    monkeypatch.setattr(sys, "argv", ["fellowship", "build", "tiny", "--no-progress"])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 1
    lines = capsys.readouterr().err.strip().splitlines()
    data = tmp_path / "data" / "tiny"
    assert lines == [f"cannot write {data / 'items.parquet'}: No space left on device (errno 28); "
                     "free some disk space and run it again (nothing was left half-written)"]
    assert [p.name for p in data.iterdir() if not p.name.startswith(".lock")] == []


@pytest.fixture
def full_disk(tmp_path):
    """A 1 MB file system, filled up (needs root, to mount a tmpfs)."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip("mounting a tmpfs needs root")
    try:
        (mount / "data").mkdir()
        (mount / "cache").mkdir()
        fd = os.open(mount / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            while True:
                os.write(fd, b"x" * 4096)
        except OSError:  # full
            pass
        finally:
            os.close(fd)
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_really_full_disk_is_assert_one_line(project, full_disk, monkeypatch):
    tiny_recipe(project)
    monkeypatch.setenv("FELLOWSHIP_DATA_DIR", str(full_disk / "data"))
    line = assert_one_line(fellowship("build", "tiny", "--no-progress", cwd=project, check=False),
                    f"cannot write {full_disk / 'data' / 'tiny' / 'items.parquet'}", "No space left on device")
    assert "free some disk space" in line and hidden_files(full_disk) == []
    monkeypatch.setenv("FELLOWSHIP_DATA_DIR", str(project.parent / "data"))
    monkeypatch.setenv("FELLOWSHIP_CACHE_DIR", str(full_disk / "cache" / uuid.uuid4().hex))
    line = assert_one_line(fellowship("build", "tiny", "--no-progress", cwd=project, check=False), "responses.sqlite")
    assert "free some disk space" in line or "writable" in line
