"""A persistent, content-addressed response cache (SQLite).

The key is a hash of everything that changes what a model writes: the model's identity (provider and
model id; the bundled local model by its sha256; an openai-compatible model with its server URL),
messages, sampling parameters, output format (grammar, JSON schema) and sample index. Timeouts, retries, concurrency and
prices are left out, so changing them never invalidates a finished call. Each answer is committed
as soon as it arrives: a killed build loses no paid call (a Ray task's part commits its answers in
small groups, see below).

A cache that cannot be used (a damaged file, a full disk, a folder that is not writable) is one
line naming the file and what to do, never a traceback.

Across machines (the Ray executor, `builders.ray_executor`), the cache folder is on storage every
node sees. A Ray task never writes `responses.sqlite`: it writes a part of its own,
`parts/<recipe>/<stage>/<block>-<attempt>.sqlite` (SQLite's rollback journal, not WAL, so a network
file system serves it; one writer per part), and looks a call up in `responses.sqlite` (read-only),
then in its own part (only for keys it stored), then in the parts earlier attempts at the same block
left (a task retried after its worker died finds what the dead attempt stored). The driver merges
the parts into `responses.sqlite` when the stage commits, and at the start of the next run after a
driver was killed. A part is opened read-write even to be read (`query_only` for a retry's lookups,
an attached database for the merge): a writer killed in the middle of a commit leaves a hot journal,
which only a read-write connection rolls back (a read-only one fails with "attempt to write a
readonly database"); a writer still committing is waited for (BUSY_TIMEOUT_S).

A part commits its answers in groups: when GROUP_ANSWERS answers are waiting, when the oldest has
waited GROUP_SECONDS (checked at each lookup and store), before a batch-journal write, and on close,
with `synchronous=normal`. A commit in rollback-journal mode creates, syncs and deletes a journal
file (milliseconds on the task's event loop); in groups that cost is shared. A killed task loses
only the answers not yet committed (at most GROUP_ANSWERS): they are asked again, never stored half.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path

from builders.errors import BuildError, first_line
from builders.llm.types import Completion, Message, OutputFormat

DEFAULT_DIR = Path(".cache") / "llm"
GROUP_ANSWERS = 32  # a cache part commits once this many answers wait ...
GROUP_SECONDS = 0.5  # ... or once the oldest has waited this long
BUSY_TIMEOUT_S = 30.0  # how long a connection waits for another's lock (a part's writer committing)


def default_cache_dir() -> Path:
    return Path(os.environ.get("FELLOWSHIP_CACHE_DIR", DEFAULT_DIR))


def cache_key(
    *, model: dict, messages: list[Message], sampling: dict, output: OutputFormat | None, sample_index: int
) -> str:
    """`model` is the registry's identity of the model (provider, model id, and endpoint where it matters)."""
    payload = {
        "model": model,
        "messages": messages,
        "sampling": sampling,
        "grammar": output.grammar if output else None,
        "sample_index": sample_index,
    }
    if output and output.json_schema is not None:
        payload["json_schema"] = output.json_schema
    if output and output.top_logprobs is not None:
        payload["top_logprobs"] = output.top_logprobs
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


class CacheError(BuildError):
    """The response cache cannot be read or written."""


def _advice(e: Exception) -> str:
    text = str(e).lower()
    if "full" in text:
        return "free some disk space and run it again"
    if "locked" in text or "busy" in text:
        return "another process holds it; wait for it to finish"
    if "readonly" in text or "read-only" in text or "unable to open" in text or isinstance(e, OSError):
        return "check that its folder exists and is writable (or set FELLOWSHIP_CACHE_DIR)"
    return ("the file is damaged: move it away (its answers will be paid for again) or restore it from a backup, "
            "or point FELLOWSHIP_CACHE_DIR at another folder")


PARTS = "parts"


def _create_tables(db: sqlite3.Connection) -> None:
    db.execute("create table if not exists responses (key text primary key, completion text not null, latency_s real not null)")
    db.execute(
        "create table if not exists batch_jobs (file_id text primary key, endpoint text not null, "
        "job_id text, keys text not null, state text not null)"
    )


class ResponseCache:
    def __init__(self, directory: Path | str | None = None, *, part: tuple[str, str] | None = None):
        """The cache in `directory`; with `part` = (group, block), a Ray task's view of it: its writes
        go to a new part of `block` in `parts/<group>/`, its lookups see the shared cache and the
        parts of `block` already there."""
        directory = Path(directory) if directory is not None else default_cache_dir()
        self.directory = directory
        self.path = directory / "responses.sqlite"
        self.writes = self.path  # the file this cache writes: responses.sqlite, or a Ray task's part
        self._readers: list[tuple[Path, sqlite3.Connection]] = []
        self._waiting = 0  # a part's answers not yet committed
        self._mine: set[str] = set()  # the keys a part stored (its other lookups need not read it)
        self._oldest = 0.0  # when the first of them was stored (time.monotonic)
        with self._guard(directory):
            directory.mkdir(parents=True, exist_ok=True)
        if part is None:
            with self._guard():
                self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_S)
                self._db.execute("pragma journal_mode=wal")
                self._db.execute("pragma synchronous=normal")
                _create_tables(self._db)
            return
        group, block = part
        folder = directory / PARTS / group
        with self._guard(folder):
            folder.mkdir(parents=True, exist_ok=True)
            earlier = sorted(folder.glob(f"{block}-*.sqlite"))
            self.writes = folder / f"{block}-{os.getpid()}-{os.urandom(4).hex()}.sqlite"
        with self._guard(self.writes):
            self._db = sqlite3.connect(self.writes, isolation_level=None, check_same_thread=False)
            self._db.execute("pragma journal_mode=delete")
            self._db.execute("pragma synchronous=normal")
            _create_tables(self._db)
        if self.path.exists():
            with self._guard(self.path):
                self._readers.append((self.path, sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None,
                                                                 check_same_thread=False)))
        for path in earlier:  # read-write: SQLite rolls back what a killed attempt left half-committed (below)
            with self._guard(path):
                reader = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_S)
                reader.execute("pragma query_only=on")
            self._readers.append((path, reader))

    @property
    def is_part(self) -> bool:
        return self.writes != self.path

    @contextmanager
    def _guard(self, path: Path | None = None):
        """sqlite, OS and decoding errors as one line naming the file that failed (by default the one
        this cache writes: `responses.sqlite`, or a Ray task's part)."""
        try:
            yield
        except (sqlite3.Error, OSError, ValueError, TypeError) as e:
            raise CacheError(f"response cache {path or self.writes}: {first_line(e)}; {_advice(e)}") from None

    def _query(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self._guard():
            return self._db.execute(sql, params).fetchall()

    def flush(self) -> None:
        """Commit the answers a part holds back (a no-op for `responses.sqlite`, which commits each)."""
        if self._waiting:
            with self._guard():
                self._db.execute("commit")
            self._waiting = 0

    def _flush_if_due(self) -> None:
        if self._waiting and (self._waiting >= GROUP_ANSWERS or time.monotonic() - self._oldest >= GROUP_SECONDS):
            self.flush()

    def get(self, key: str) -> tuple[Completion, float] | None:
        self._flush_if_due()
        rows = []
        if not self.is_part or key in self._mine:
            rows = self._query("select completion, latency_s from responses where key = ?", (key,))
        source = self.writes
        for path, reader in self._readers:
            if rows:
                break
            source = path
            with self._guard(path):
                try:
                    rows = reader.execute("select completion, latency_s from responses where key = ?", (key,)).fetchall()
                except sqlite3.OperationalError as e:  # a part a killed attempt left before creating its table
                    if "no such table" not in str(e):
                        raise
        if not rows:
            return None
        with self._guard(source):
            return Completion.from_stored(json.loads(rows[0][0])), float(rows[0][1])

    def put(self, key: str, completion: Completion, latency_s: float) -> None:
        blob = json.dumps(completion.stored(), ensure_ascii=False)
        if not self.is_part:
            self._query("insert or replace into responses values (?, ?, ?)", (key, blob, latency_s))
            return
        with self._guard():
            if not self._waiting:
                self._db.execute("begin")
                self._oldest = time.monotonic()
            self._db.execute("insert or replace into responses values (?, ?, ?)", (key, blob, latency_s))
            self._waiting += 1
            self._mine.add(key)
        self._flush_if_due()

    # The batch journal: one row per uploaded request file, written before its job is started, so a
    # restart finds the job (or, after a crash between the two, the file it was started on) instead
    # of submitting the same requests again. state: uploaded -> submitted -> done.

    def journal_upload(self, file_id: str, endpoint: str, keys: list[str]) -> None:
        self.flush()  # a journal row is committed before its job is started
        self._query("insert into batch_jobs values (?, ?, null, ?, 'uploaded')", (file_id, endpoint, json.dumps(keys)))

    def journal_submit(self, file_id: str, job_id: str) -> None:
        self.flush()
        self._query("update batch_jobs set job_id = ?, state = 'submitted' where file_id = ?", (job_id, file_id))

    def journal_done(self, file_id: str) -> None:
        self.flush()
        self._query("update batch_jobs set state = 'done' where file_id = ?", (file_id,))

    def journal_open(self, endpoint: str) -> list[tuple[str, str | None, list[str]]]:
        """(file id, job id or None, request keys) of the unfinished jobs on `endpoint`."""
        rows = self._query(
            "select file_id, job_id, keys from batch_jobs where endpoint = ? and state != 'done' order by rowid", (endpoint,)
        )
        with self._guard():
            return [(f, j, json.loads(k)) for f, j, k in rows]

    def __len__(self) -> int:
        return self._query("select count(*) from responses")[0][0]

    def merge_parts(self, group: str) -> int:
        """Move every part in `parts/<group>/` into this cache (answers a part holds that this cache
        has too are the same answer); returns the answers added. Parts that cannot be read are
        left where they are, named in the error."""
        folder = self.directory / PARTS / group
        added = 0
        for path in sorted(folder.glob("*.sqlite")) if folder.exists() else []:
            before = len(self)
            with self._guard(path):
                # read-write, so that SQLite rolls back a commit its killed writer left half done
                # (a hot journal: a read-only connection fails on it with "attempt to write a readonly
                # database"); a writer still committing is waited for (busy timeout)
                self._db.execute("attach database ? as part", (str(path),))
            try:
                with self._guard(path):
                    tables = {r[0] for r in self._db.execute("select name from part.sqlite_master where type = 'table'")}
                # copying reads the part and writes this cache: an error names both
                with self._guard(f"{self.path} (merging {path})"):
                    self._db.execute("begin")
                    if "responses" in tables:
                        self._db.execute("insert or ignore into responses select key, completion, latency_s from part.responses")
                    if "batch_jobs" in tables:
                        self._db.execute("insert or replace into batch_jobs select * from part.batch_jobs")
                    self._db.execute("commit")
            finally:
                with self._guard(path):
                    if self._db.in_transaction:
                        self._db.execute("rollback")
                    self._db.execute("detach database part")
            added += len(self) - before
            for leftover in (path, path.with_name(path.name + "-journal")):
                leftover.unlink(missing_ok=True)
        if added:
            with self._guard():  # the merged answers into the file itself: tasks on other machines read it
                self._db.execute("pragma wal_checkpoint(truncate)")
        return added

    def close(self) -> None:
        """Commit what a part holds back, then close every connection."""
        try:
            self.flush()
        finally:
            with self._guard():
                self._db.close()
            for path, reader in self._readers:
                with self._guard(path):
                    reader.close()
