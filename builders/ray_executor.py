"""The Ray executor: an LLM stage's items split into blocks, each block answered by a Ray task
running our own engine, the parts committed into the table as the local executor writes it.

`fellowship build RECIPE --executor ray [--address ADDR]`, or `stages.<stage>.executor: ray` in the
recipe, runs `candidates`, `debates` and `scores` this way (compare's `picks` and `matches` run in
the driver). For one stage:

1. The driver connects to the cluster (`ray.init`; ADDR, else `RAY_ADDRESS`, else a Ray instance
   started on this machine) and checks that every node sees the cache folder, the data folder and
   the recipe's folder: they must be on storage the whole cluster shares (NFS, a shared volume).
2. Parts a killed driver left in the cache (`builders.llm.cache`) are merged into it.
3. The items table is cut into blocks of consecutive rows (in the table's order), and each block is
   a Ray task (`ray.remote`, one CPU), with at most T tasks in flight (Ray's pattern of `ray.wait`
   on the tasks submitted). A task reads its rows from the row groups of the items table that hold
   them, builds an `Engine` from the stage's `EngineConfig` (the same providers, limiter, retries,
   budget accounting and cache keys as the local executor), runs the stage's own per-item code over
   its block (`<stage module>.block_rows`), and writes the rows to a Parquet part,
   `data/<recipe>/.parts/<stage>/<first row>.parquet`, atomically.
4. The driver merges the tasks' cache parts into the response cache, then commits the parts in item
   order through the stage's own writer (`<stage module>.commit`): the table is the local one.

Plain Ray tasks, not Ray Data: `ray.data.read_parquet` of a one-file items table gave one read task,
whose fused `map_batches` answered every block in one worker, one after another (two tasks never ran
at once), and each stage started and ended worker processes for Ray Data's own tasks (about 2 ms of
CPU a call at 2,000 calls; benchmarks/README.md). A task here is one block, its worker is reused.

Limits across tasks:
- a model's `concurrency` is a cluster-wide ceiling: with T tasks in flight, each task's engine gets
  concurrency // T of it (at least 1; T is at most the smallest concurrency of the stage's models);
- the budget: each block may use the share of what the budget has left (after the recipe's other
  stages) that its items are of the stage's items. A block that would pass its share stops there,
  blocks not yet started do nothing, and the stage fails with one line after merging every answer
  into the cache: a clean stop, as with the local executor; raising `budget.usd` goes on from the cache.

Faults: Ray runs the task of a worker that died again (TASK_RETRIES times); the retry finds the
answers the dead attempt stored (its cache part) and makes only the calls it had not finished. A task
that fails otherwise, or dies too often, ends the stage with one line naming the recipe and stage,
after the tasks still running have ended and every answer is merged. A killed driver leaves its
tasks' cache parts; the next run merges them first, so it too pays only for what was not finished.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import socket
import sys
import uuid
from dataclasses import asdict, fields
from pathlib import Path

from builders.errors import BuildError
from builders.llm.cache import PARTS, ResponseCache
from builders.llm.engine import Engine, Usage
from builders.recipe import RAY_STAGES, Recipe
from builders.tables import ITEMS, open_parquet, scan_table

log = logging.getLogger(__name__)
MAX_BLOCK_ITEMS = 2000  # items a task answers at once (a retried task redoes at most this many, from the cache)
ENV_PREFIXES = ("FELLOWSHIP_",)  # settings the tasks read from the environment, passed to them


class RayUnavailable(BuildError):
    """Ray is not installed, or the cluster cannot be reached or used."""


def _import_ray():
    try:
        import ray
    except ImportError:
        raise RayUnavailable("--executor ray needs Ray: install the extra with `pip install -e '.[ray]'` "
                             "(or `pip install ray`)") from None
    return ray


def _reachable(address: str) -> None:
    """One line when nothing listens at `address` (host:port, or ray://host:port), before Ray tries for a minute."""
    target = address.split("://", 1)[-1]
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise RayUnavailable(f"--address {address}: give the Ray cluster's head as HOST:PORT (such as 127.0.0.1:6379)")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as e:
        raise RayUnavailable(f"cannot reach the Ray cluster at {address} ({e.strerror or e}): start it with "
                             "`ray start --head`, or give the head's address with --address") from None


def task_env(recipe: Recipe, models: list[str]) -> dict[str, str]:
    """The settings the tasks' workers need from this environment: FELLOWSHIP_* and PYTHONPATH
    (Ray's runtime_env; Ray writes it into its own logs, so no key goes this way: `task_keys`)."""
    names = {"PYTHONPATH"} | {n for n in os.environ if n.startswith(ENV_PREFIXES)}
    keys = set(task_keys(recipe, models))
    return {n: os.environ[n] for n in sorted(names - keys) if n in os.environ}


def task_keys(recipe: Recipe, models: list[str]) -> dict[str, str]:
    """The models' API-key variables, handed to each task as an argument (in the cluster's memory,
    never in a log, a table or the recipe) and set in the task's environment for its providers."""
    from builders.llm.registry import key_variable

    names = {key_variable(recipe.models[m]) for m in models}
    return {n: os.environ[n] for n in sorted(n for n in names if n and n in os.environ)}


def connect(address: str | None, env: dict[str, str]):
    """ray, connected to the cluster (quietly: Ray's own logs stay out of stderr)."""
    ray = _import_ray()
    _quiet_ray_logs()
    if ray.is_initialized():
        return ray
    if address and address != "auto":
        _reachable(address)
    try:
        ray.init(address=address, runtime_env={"env_vars": env}, logging_level=logging.ERROR, log_to_driver=False,
                 include_dashboard=False, configure_logging=True)
    except Exception as e:  # Ray raises ConnectionError, RuntimeError, ValueError ... for an unusable cluster
        raise RayUnavailable(f"cannot connect to the Ray cluster at {address or 'a new local instance'}: "
                             f"{str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}") from None
    return ray


def _sees(paths: dict[str, str], token: str) -> str | None:
    """(on a node) The first of `paths` this node does not see as the driver does, or None."""
    probe = Path(paths["probe"])
    try:
        if probe.read_text() != token:
            return f"cache folder {probe.parent.parent}"
    except OSError:
        return f"cache folder {probe.parent.parent}"
    for what in ("data folder", "recipe"):
        if not Path(paths[what]).exists():
            return f"{what} {paths[what]}"
    return None


_checked: set[tuple[str, str, str]] = set()


def _existing(path: Path) -> Path:
    """`path`, or its nearest folder that exists (the data folder of a first build is made later)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def prepare(recipe: Recipe, data_dir: Path, *, address: str | None = None, cache_dir: Path | None = None) -> None:
    """Before any stage runs: Ray installed, the cluster reachable, the storage shared (one line otherwise)."""
    from builders.llm.cache import default_cache_dir
    from builders.llm.registry import used_models

    ray = connect(address, task_env(recipe, used_models(recipe)))
    check_shared_storage(ray, Path(cache_dir or default_cache_dir()).resolve(), data_dir.resolve(), recipe)


def check_shared_storage(ray, cache_dir: Path, data_dir: Path, recipe: Recipe) -> None:
    """Every alive node must see the cache folder (a probe file written here), the data folder and the recipe."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    key = (str(cache_dir), str(data_dir), str(recipe.path.resolve()))
    if key in _checked:
        return

    probe_dir = cache_dir / PARTS
    probe_dir.mkdir(parents=True, exist_ok=True)
    probe = probe_dir / f"probe-{uuid.uuid4().hex}"
    token = uuid.uuid4().hex
    probe.write_text(token)
    paths = {"probe": str(probe), "data folder": str(_existing(data_dir)), "recipe": str(recipe.path.resolve())}
    look = ray.remote(num_cpus=0, max_retries=0)(_sees)
    try:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        checks = [(n, look.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(paths, token))
                  for n in nodes]
        for node, ref in checks:
            missing = ray.get(ref, timeout=120)
            if missing:
                raise RayUnavailable(
                    f"the Ray executor needs the cache folder, the data folder and the recipe on storage every node "
                    f"sees: node {node.get('NodeManagerAddress', node['NodeID'])} does not see the {missing} "
                    "(mount it on every node at the same path, or set FELLOWSHIP_CACHE_DIR and --data-dir to such a folder)")
    finally:
        probe.unlink(missing_ok=True)
    _checked.add(key)


def _add(into: Usage, data: dict) -> None:
    for f in fields(Usage):
        setattr(into, f.name, getattr(into, f.name) + data[f.name])


def _stage_module(stage: str):
    import importlib

    return importlib.import_module(f"builders.{stage}")


def _block_items(items_path: str, start: int, stop: int) -> list[dict]:
    """Rows `start` to `stop` of the items table, read from the row groups that hold them (not the
    whole file)."""
    import pyarrow as pa

    file = open_parquet(items_path)
    groups, first, offset = [], None, 0
    for g in range(file.metadata.num_row_groups):
        rows = file.metadata.row_group(g).num_rows
        if offset + rows > start and offset < stop:
            groups.append(g)
            first = offset if first is None else first
        offset += rows
    if not groups:
        return []
    table = file.read_row_groups(groups) if len(groups) > 1 else file.read_row_group(groups[0])
    return pa.Table.to_pylist(table.slice(start - first, stop - start))


def _answer_block(start: int, stop: int, job: dict) -> dict:
    """(a Ray task) Answer the items `start` to `stop` of the items table; write their rows as a part;
    return what it did (and the CPU seconds of its phases)."""
    import time

    cpu = {"started": time.process_time()}
    os.environ.update(job["keys"])

    from builders.tables import TABLES as tables, frame, replace_atomically

    stage, recipe, parts_dir = job["stage"], job["recipe"], Path(job["parts_dir"])
    block = f"{start:012d}"
    result = {"block": start, "items": stop - start, "rows": 0, "error": None, "usage": None, "by_model": None, "cpu": None}
    if (parts_dir / "STOP").exists():  # another block failed: start nothing new
        result["error"] = "stopped"
        return result
    config = job["config"]
    if job["budget_left"] is not None:
        config = config.replace(budget_usd=max(0.0, job["budget_left"]) * (stop - start) / job["items_total"], spent_usd=0.0)
    items = _block_items(job["items_path"], start, stop)
    cache = ResponseCache(config.cache_dir, part=(job["cache_group"], block))
    engine = Engine(config, cache=cache, progress=False)
    module = _stage_module(stage)
    cpu["setup"] = time.process_time()
    try:
        rows = module.block_rows(recipe, Path(job["data_dir"]), engine, items)
        cpu["calls"] = time.process_time()
        table = tables[module.WRITES[0]]
        replace_atomically(parts_dir / f"{block}.parquet", frame(table, rows).write_parquet)
        result["rows"] = len(rows)
    except BuildError as e:
        result["error"] = str(e)
        (parts_dir / "STOP").write_text(str(e))
    finally:
        cache.close()
    cpu["done"] = time.process_time()
    result["usage"] = asdict(engine.usage)
    result["by_model"] = {m: asdict(u) for m, u in engine.by_model.items()}
    result["cpu"] = {"setup_s": cpu["setup"] - cpu["started"], "calls_s": cpu.get("calls", cpu["done"]) - cpu["setup"],
                     "part_s": cpu["done"] - cpu.get("calls", cpu["done"]), "before_s": cpu["started"]}
    return result


def run(recipe: Recipe, stage: str, data_dir: Path, engine: Engine, *, address: str | None = None,
        progress: bool = True, tasks: int | None = None, block_items: int | None = None) -> None:
    """Build `stage` for `recipe` on a Ray cluster; `engine` is the driver's (its config is the
    tasks'; the tasks' usage is added to its counters)."""
    if stage not in RAY_STAGES:
        raise BuildError(f"the Ray executor runs only {', '.join(RAY_STAGES)}, not {stage}")
    module = _stage_module(stage)
    models = module.models(recipe)
    if stage == "candidates" and recipe.generation.workflow == "import" or not models:
        module.build(recipe, data_dir, engine=engine)  # no calls to spread
        return
    ray = connect(address, task_env(recipe, models))
    cache_dir = engine.cache.directory.resolve()
    config = engine.config.replace(cache_dir=cache_dir)
    data_dir = data_dir.resolve()
    recipe = _absolute(recipe)
    scan_table(ITEMS, data_dir)  # a missing items table: one line naming the command that builds it
    check_shared_storage(ray, cache_dir, data_dir, recipe)
    group = f"{recipe.name}/{stage}"
    engine.cache.merge_parts(group)  # what a killed driver's tasks stored
    parts_dir = data_dir / ".parts" / stage
    shutil.rmtree(parts_dir, ignore_errors=True)
    parts_dir.mkdir(parents=True)
    try:
        _run(ray, recipe, stage, module, models, config, engine, data_dir, parts_dir, group,
             progress=progress, tasks=tasks, block_items=block_items)
    finally:
        shutil.rmtree(parts_dir, ignore_errors=True)
        try:
            parts_dir.parent.rmdir()
        except OSError:
            pass


TASK_RETRIES = 3  # Ray runs a block again this many times when its worker process dies


def _run(ray, recipe, stage, module, models, config, engine, data_dir, parts_dir, group, *,
         progress, tasks, block_items) -> None:
    import pyarrow.parquet as pq
    from tqdm import tqdm

    items_path = ITEMS.path(data_dir)
    total = pq.ParquetFile(items_path).metadata.num_rows
    if total == 0:
        module.commit(recipe, data_dir, [])
        return
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    ceiling = min(config.spec(m).concurrency for m in models)
    tasks = max(1, min(tasks or cpus, ceiling))
    block_items = block_items or min(MAX_BLOCK_ITEMS, max(1, math.ceil(total / (2 * tasks))))
    blocks = [(start, min(start + block_items, total)) for start in range(0, total, block_items)]
    tasks = min(tasks, len(blocks))
    budget_left = None
    if engine.budget is not None:
        budget_left = engine.budget.limit_usd - engine.budget.earlier_usd
    # what every task is given, put in the object store once
    job = ray.put({"stage": stage, "recipe": recipe, "config": config.with_concurrency(1 / tasks),
                   "items_path": str(items_path), "data_dir": str(data_dir), "parts_dir": str(parts_dir),
                   "cache_group": group, "items_total": total, "budget_left": budget_left, "keys": task_keys(recipe, models)})
    answer = ray.remote(_answer_block).options(num_cpus=1, max_retries=TASK_RETRIES, retry_exceptions=False)
    done, failure = [], None
    bar = tqdm(total=total, desc=stage, file=sys.stderr, disable=not progress, unit="item", leave=True)
    pending: list = []
    try:
        # Ray's pattern for a bounded number of tasks in flight: submit the next block when one is done
        for start, stop in blocks:
            if failure is None and len(pending) >= tasks:
                failure = _collect(ray, pending, done, bar, parts_dir)
            if failure is not None:
                break
            pending.append(answer.remote(start, stop, job))
        while pending:
            failure = _collect(ray, pending, done, bar, parts_dir) or failure
    finally:
        bar.close()
        if not pending:  # every task has ended: what they stored goes into the cache, whatever happened
            engine.cache.merge_parts(group)  # (else, interrupted, the next run merges it)
    for row in done:
        _add(engine.usage, row["usage"] or asdict(Usage()))
        for model, data in (row["by_model"] or {}).items():
            _add(engine.by_model.setdefault(model, Usage()), data)
    cpu = {k: sum(row["cpu"][k] for row in done if row["cpu"]) for k in ("setup_s", "calls_s", "part_s")}
    log.debug("%s: %d blocks of %d items, %d tasks in flight; tasks' CPU: %s", stage, len(blocks), block_items, tasks,
              ", ".join(f"{k} {v:.3f}" for k, v in cpu.items()), extra={"task_cpu": cpu, "blocks": len(blocks)})
    if failure is not None:
        raise BuildError(f"{recipe.name}: {stage}: a Ray task failed: {_ray_error(failure)}")
    errors = [row["error"] for row in sorted(done, key=lambda r: r["block"]) if row["error"] and row["error"] != "stopped"]
    if errors:
        raise BuildError(errors[0])
    module.commit(recipe, data_dir, [parts_dir / f"{row['block']:012d}.parquet" for row in sorted(done, key=lambda r: r["block"])])


def _collect(ray, pending: list, done: list, bar, parts_dir: Path) -> BaseException | None:
    """Wait for one of the `pending` tasks; its result goes to `done` (and the bar). The error of a
    task that failed is returned, after a STOP for the blocks not yet started."""
    ready, rest = ray.wait(pending, num_returns=1)
    pending[:] = rest
    failure = None
    for ref in ready:
        try:
            row = ray.get(ref)
        except Exception as e:  # the task raised what is not a BuildError, or its worker died TASK_RETRIES + 1 times
            failure = failure or e
            (parts_dir / "STOP").write_text(_ray_error(e))
            continue
        done.append(row)
        bar.update(row["items"])
    return failure


def _absolute(recipe: Recipe) -> Recipe:
    """`recipe` with its file's path absolute: tasks run in other folders (its templates are read
    relative to it)."""
    copy = recipe.model_copy()
    copy._path = recipe.path.resolve()
    return copy


def _ray_error(e: BaseException) -> str:
    """The innermost error of a failed Ray task, as one line."""
    seen = set()
    while id(e) not in seen:
        seen.add(id(e))
        inner = getattr(e, "cause", None) or e.__cause__
        if not isinstance(inner, BaseException):
            break
        e = inner
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[-1][:300]}" if text else type(e).__name__


def _quiet_ray_logs() -> None:
    """Ray's and Ray Data's own log lines and warnings stay out of stderr (their logs are in Ray's
    session folder); a failed task is reported as one line by `run`."""
    import warnings

    warnings.filterwarnings("ignore", module=r"ray(\.|$)")
    for name in ("ray",):
        logging.getLogger(name).setLevel(logging.CRITICAL)
