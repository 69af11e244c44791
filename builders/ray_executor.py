"""The Ray executor: an LLM stage's items split into blocks of a Ray Dataset, each block answered by
a Ray task running our own engine, the parts committed into the table as the local executor writes it.

`fellowship build RECIPE --executor ray [--address ADDR]`, or `stages.<stage>.executor: ray` in the
recipe, runs `candidates`, `debates` and `scores` this way (compare's `picks` and `matches` run in
the driver). For one stage:

1. The driver connects to the cluster (`ray.init`; ADDR, else `RAY_ADDRESS`, else a Ray instance
   started on this machine) and checks that every node sees the cache folder, the data folder and
   the recipe's folder: they must be on storage the whole cluster shares (NFS, a shared volume).
2. Parts a killed driver left in the cache (`builders.llm.cache`) are merged into it.
3. `ray.data.read_parquet` reads the items table; `map_batches` hands each task a block of items (in
   the table's order). A task builds an `Engine` from the stage's `EngineConfig` (the same
   providers, limiter, retries, budget accounting and cache keys as the local executor), runs the
   stage's own per-item code over its block (`<stage module>.block_rows`), and writes the rows to a
   Parquet part, `data/<recipe>/.parts/<stage>/<first source row>.parquet`, atomically.
4. The driver merges the tasks' cache parts into the response cache, then commits the parts in item
   order through the stage's own writer (`<stage module>.commit`): the table is the local one.

Limits across tasks:
- a model's `concurrency` is a cluster-wide ceiling: with T tasks in flight, each task's engine gets
  concurrency // T of it (at least 1; T is at most the smallest concurrency of the stage's models);
- the budget: each block may use the share of what the budget has left (after the recipe's other
  stages) that its items are of the stage's items. A block that would pass its share stops there,
  blocks not yet started do nothing, and the stage fails with one line after merging every answer
  into the cache: a clean stop, as with the local executor; raising `budget.usd` goes on from the cache.

Faults: Ray retries the task of a worker that died; the retry finds the answers the dead attempt
stored (its cache part) and makes only the calls it had not finished. A killed driver leaves its
tasks' cache parts; the next run merges them first, so it too pays only for what was not finished.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import socket
import uuid
from dataclasses import asdict, fields
from pathlib import Path

from builders.errors import BuildError
from builders.llm.cache import PARTS, ResponseCache
from builders.llm.config import EngineConfig
from builders.llm.engine import Engine, Usage
from builders.recipe import RAY_STAGES, Recipe
from builders.tables import ITEMS, TABLES, scan_table

log = logging.getLogger(__name__)
MAX_BLOCK_ITEMS = 2000  # items a task answers at once (a retried task redoes at most this many, from the cache)
ENV_PREFIXES = ("FELLOWSHIP_",)  # settings the tasks read from the environment, passed to them


class RayUnavailable(BuildError):
    """Ray is not installed, or the cluster cannot be reached or used."""


def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise RayUnavailable("--executor ray needs Ray: install the extra with `pip install -e '.[ray]'` "
                             "(or `pip install 'ray[data]'`)") from None
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


def _usage_dict(u: Usage) -> dict:
    return asdict(u)


def _add(into: Usage, data: dict) -> None:
    for f in fields(Usage):
        setattr(into, f.name, getattr(into, f.name) + data[f.name])


def _stage_module(stage: str):
    import importlib

    return importlib.import_module(f"builders.{stage}")


def _answer_block(batch, *, stage: str, recipe: Recipe, config: EngineConfig, data_dir: str, parts_dir: str,
                  cache_group: str, items_total: int, budget_left: float | None, keys: dict[str, str]):
    """(a Ray task) Answer one block of items; write its rows as a part; return what it did."""
    import pyarrow as pa

    os.environ.update(keys)

    from builders.tables import TABLES as tables, frame, replace_atomically

    items = batch.to_pylist()
    first = items[0]["source_row"] if items else -1
    block = f"{first:012d}"
    stop = Path(parts_dir) / "STOP"
    result = {"block": first, "rows": 0, "error": None, "usage": None, "by_model": None}
    if stop.exists():  # another block failed: start nothing new
        result["error"] = "stopped"
        return pa.table({k: [json.dumps(v) if k in ("usage", "by_model") else v] for k, v in result.items()})
    if budget_left is not None:
        config = config.replace(budget_usd=max(0.0, budget_left) * len(items) / items_total, spent_usd=0.0)
    cache = ResponseCache(config.cache_dir, part=(cache_group, block))
    engine = Engine(config, cache=cache, progress=False)
    module = _stage_module(stage)
    try:
        rows = module.block_rows(recipe, Path(data_dir), engine, items)
        table = tables[module.WRITES[0]]
        replace_atomically(Path(parts_dir) / f"{block}.parquet", frame(table, rows).write_parquet)
        result["rows"] = len(rows)
    except BuildError as e:
        result["error"] = str(e)
        stop.write_text(str(e))
    finally:
        cache.close()
    result["usage"] = _usage_dict(engine.usage)
    result["by_model"] = {m: _usage_dict(u) for m, u in engine.by_model.items()}
    return pa.table({k: [json.dumps(v) if k in ("usage", "by_model") else v] for k, v in result.items()})


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
        _run(ray, recipe, stage, module, models, config, engine, cache_dir, data_dir, parts_dir, group,
             progress=progress, tasks=tasks, block_items=block_items)
    finally:
        shutil.rmtree(parts_dir, ignore_errors=True)
        try:
            parts_dir.parent.rmdir()
        except OSError:
            pass


def _run(ray, recipe, stage, module, models, config, engine, cache_dir, data_dir, parts_dir, group, *,
         progress, tasks, block_items) -> None:
    import pyarrow.parquet as pq
    from ray.data import DataContext

    _quiet_ray_logs()
    context = DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = progress
    context.print_on_execution_start = False
    items_path = ITEMS.path(data_dir)
    total = pq.ParquetFile(items_path).metadata.num_rows
    if total == 0:
        module.commit(recipe, data_dir, [])
        return
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    ceiling = min(config.spec(m).concurrency for m in models)
    tasks = max(1, min(tasks or cpus, ceiling))
    block_items = block_items or min(MAX_BLOCK_ITEMS, max(1, math.ceil(total / (2 * tasks))))
    budget_left = None
    if engine.budget is not None:
        budget_left = engine.budget.limit_usd - engine.budget.earlier_usd
    task_config = config.with_concurrency(1 / tasks)
    dataset = ray.data.read_parquet(str(items_path), override_num_blocks=math.ceil(total / block_items))
    results = dataset.map_batches(
        _answer_block, batch_size=block_items, batch_format="pyarrow", compute=ray.data.TaskPoolStrategy(size=tasks),
        num_cpus=1,
        fn_kwargs={"stage": stage, "recipe": recipe, "config": task_config, "data_dir": str(data_dir),
                   "parts_dir": str(parts_dir), "cache_group": group, "items_total": total, "budget_left": budget_left,
                   "keys": task_keys(recipe, models)},
    )
    try:
        done = results.take_all()
    except Exception as e:
        engine.cache.merge_parts(group)  # keep every answer the tasks stored
        raise BuildError(f"{recipe.name}: {stage}: the Ray tasks failed: {_ray_error(e)}") from None
    engine.cache.merge_parts(group)
    for row in done:
        _add(engine.usage, json.loads(row["usage"]) if row["usage"] != "null" else asdict(Usage()))
        for model, data in (json.loads(row["by_model"]) or {}).items():
            _add(engine.by_model.setdefault(model, Usage()), data)
    errors = [row["error"] for row in sorted(done, key=lambda r: r["block"]) if row["error"] and row["error"] != "stopped"]
    if errors:
        raise BuildError(errors[0])
    blocks = sorted(row["block"] for row in done)
    module.commit(recipe, data_dir, [parts_dir / f"{b:012d}.parquet" for b in blocks])
    written = TABLES[module.WRITES[0]].path(data_dir)
    log.debug("%s: %d blocks of %d items from %d tasks into %s", stage, len(blocks), block_items, tasks, written)


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
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
