"""Loading a recipe: its YAML, the schema (`builders.recipe`), one check per section of what the
schema alone cannot see (model references, how sections fit together), then what the recipe names
outside itself: providers, prompt templates, the source, the gate's benchmark recipe and API keys.

Every problem is reported at once, one line each, as `recipes/x.yaml: judge.models[1]: ...`, before
any table is read or any LLM is called. This module sits above the schema and the modules that check
files (prompts, sources, the provider registry), which import only the schema.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import yaml
from pydantic import ValidationError

from builders import prompts, sources
from builders.errors import RecipeError
from builders.llm.registry import key_problems, key_variable, logprob_problems, provider_problems
from builders.recipe import Recipe
from builders.redact import register_key_variable

MAX_VALUES = 100_000  # values in a recipe once YAML aliases are expanded: more is no recipe


class _RecipeYAMLLoader(yaml.SafeLoader):
    """Safe YAML that refuses a key given twice in one mapping (plain YAML keeps the last one) and
    reads merge keys (`<<: *base`) as YAML 1.1 does: the mapping's own keys win over merged ones."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=deep)
                try:
                    repeated = key in seen
                except TypeError:  # an unhashable key: the base class says so
                    break
                if repeated:
                    raise yaml.constructor.ConstructorError(None, None, f"duplicate key '{key}'", key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _values(data: object, limit: int) -> int:
    """How many values `data` holds, counting a value reached through several aliases each time;
    stops counting past `limit` (so alias bombs and self-referencing aliases end quickly)."""
    count, stack = 0, [data]
    while stack and count <= limit:
        value = stack.pop()
        count += 1
        if isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return count


def read_yaml(path: Path) -> dict:
    """The recipe file as a mapping; RecipeError (one line) when it cannot be one."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise RecipeError(f"{path}: cannot read recipe ({e.strerror})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise RecipeError(
            f"{path}: not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start}); save the recipe as UTF-8"
        ) from None
    try:
        data = yaml.load(text, Loader=_RecipeYAMLLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise RecipeError(f"{path}: {where}malformed YAML ({problem})") from None
    except RecursionError:
        raise RecipeError(f"{path}: malformed YAML (nested too deeply)") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe is a YAML mapping of sections (source, models, generation, judge, export)")
    if _values(data, MAX_VALUES) > MAX_VALUES:
        raise RecipeError(f"{path}: more than {MAX_VALUES:,} values once YAML aliases are expanded; write the recipe out plainly")
    return data


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _pydantic_problems(err: ValidationError) -> list[str]:
    problems = []
    for e in err.errors():
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        msg = msg.removeprefix("Value error, ")
        loc = e["loc"]
        if loc and loc[-1] == "[key]":  # a mapping's key, not its value, is wrong: name the key
            loc, msg = loc[:-1], msg.replace("Input should be", "key should be", 1)
        problems.append(f"{_loc(loc)}: {msg}")
    return problems


# One check per section, each across the sections it refers to. Each returns its problems.

def _unknown_model(recipe: Recipe, where: str, name: str | None) -> list[str]:
    if name is None or name in recipe.models:
        return []
    return [f"{where}: unknown model '{name}' (known: {', '.join(recipe.models)})"]


def _source_problems(recipe: Recipe) -> list[str]:
    s, problems = recipe.source, []
    if s.benchmark is not None and s.path is not None:
        problems.append("source.path: a benchmark is read from its vendored copy, or from `dataset` on the Hub; drop `path`")
    elif s.benchmark is None and (s.path is None) == (s.dataset is None):
        problems.append("source: give exactly one of `path` (local file), `dataset` (Hub id) or `benchmark`")
    if s.labelled and s.id_column is None:
        problems.append("source.id_column: a labelled source keeps one item per row and needs the rows' ids")
    if s.turns == "all" and recipe.generation.workflow != "import":
        problems.append("source.turns: `all` judges each imported answer after its own model's earlier answers; "
                        "only the import workflow has them (use `first`, or a chat prompt column to generate)")
    return problems


def _workflow_problems(recipe: Recipe, g, where: str, *, alone: bool) -> list[str]:
    """A generation workflow `g` (the recipe's, or a compare entry's) at `where`; `alone`: its
    candidates must make verdicts by themselves (not a compare entry, which may have one)."""
    problems = _unknown_model(recipe, f"{where}.generator", g.generator)
    for i, r in enumerate(g.reviewers):
        problems += _unknown_model(recipe, f"{where}.reviewers[{i}]", r)
    min_scored = recipe.judge.min_scored
    if g.workflow == "import":
        if g.generator is not None or g.reviewers:
            problems.append(f"{where}.generator: the import workflow generates nothing; drop generator and reviewers")
        if not g.answers:
            problems.append(f"{where}.answers: name the source columns that hold the answers to import")
        elif len(g.answers) < min_scored and alone:
            problems.append(
                f"{where}.answers: {len(g.answers)} answer(s) per prompt can never make a verdict (judge.min_scored is {min_scored})"
            )
        return problems
    if g.answers:
        problems.append(f"{where}.answers: only the import workflow reads answers; `{g.workflow}` writes them")
    if g.generator is None:
        problems.append(f"{where}.generator: the {g.workflow} workflow needs a generator model")
    if g.workflow == "feedback" and not g.reviewers:
        problems.append(f"{where}.reviewers: the feedback workflow needs at least one reviewer")
    if g.workflow == "single" and g.reviewers:
        problems.append(f"{where}.reviewers: the single workflow takes no reviewers")
    gen = recipe.models.get(g.generator) if g.generator else None
    if g.workflow == "single" and g.iterations > 1 and gen is not None and gen.temperature == 0:
        problems.append(
            f"{where}.iterations: {g.iterations} samples at temperature 0 would be identical; "
            f"set models.{g.generator}.temperature above 0 or iterations to 1"
        )
    if g.iterations < min_scored and alone:
        problems.append(
            f"{where}.iterations: {g.iterations} candidate(s) per prompt can never make a verdict (judge.min_scored is {min_scored})"
        )
    if g.workflow == "feedback" and g.iterations < 2:
        problems.append(f"{where}.iterations: the feedback workflow needs at least 2 (an answer and a revision)")
    return problems


def _generation_problems(recipe: Recipe) -> list[str]:
    g = recipe.generation
    problems = _workflow_problems(recipe, g, "generation", alone=recipe.compare is None)
    if recipe.source.labelled and (g.workflow != "import" or len(g.answers) != 2):
        problems.append(
            "generation: a labelled source's human winner compares two imported answers; "
            "use workflow `import` with two `answers` (model_a's column first)"
        )
    return problems


def _judge_problems(recipe: Recipe) -> list[str]:
    j, problems = recipe.judge, []
    for i, m in enumerate(j.panel.models):
        problems += _unknown_model(recipe, f"judge.panel.models[{i}]", m)
    debate = j.panel.debate
    for role, m in (debate.referees.items() if debate else []):
        problems += _unknown_model(recipe, f"judge.panel.debate.referees.{role}", m)
    if (j.mode == "debate") != (debate is not None):
        problems.append("judge.mode: `debate` goes with judge.panel.debate (referees and rounds), and only with it")
    elif debate and j.panel.models:
        problems.append("judge.panel.models: a debate's judges are its referees; leave models out")
    elif not debate and not j.panel.models:
        problems.append("judge.panel.models: name at least one judge model")
    if debate and j.panel.strategy != "combined":
        problems.append("judge.panel.strategy: referees give their final scores by combined scoring")
    for i, m in enumerate(j.members or []):
        if m not in j.judges:
            problems.append(f"judge.members[{i}]: '{m}' is not on the panel ({', '.join(j.judges)})")
    if j.mode == "judge" and len(j.voters) != 1:
        problems.append(
            f"judge.mode: `judge` takes one member, the panel has {len(j.voters)}; "
            "set judge.members to one model or use mode `jury`"
        )
    return problems


def _compare_problems(recipe: Recipe) -> list[str]:
    c = recipe.compare
    if c is None:
        return []
    problems = [f"compare.baselines.{name}: '{name}' is also a workflow; give each entry its own name"
                for name in sorted(set(c.workflows) & set(c.baselines))]
    for name, (kind, entry) in c.entries().items():
        problems += _workflow_problems(recipe, entry, f"compare.{kind}.{name}", alone=False)
    panel = recipe.judge.panel
    if panel.debate or panel.strategy == "independent":
        problems.append("compare: answers are compared two at a time in one conversation; "
                        "use judge.panel.strategy combined or direct, without a debate")
    if recipe.source.labelled:
        problems.append("compare: a benchmark recipe measures judges; compare workflows in a recipe of their own")
    return problems


SECTION_CHECKS: tuple[Callable[[Recipe], list[str]], ...] = (
    _source_problems, _generation_problems, _judge_problems, _compare_problems,
)


def parse_recipe(path: Path) -> Recipe:
    """The schema and each section's checks only (no file but the recipe is opened)."""
    data = read_yaml(path)
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as err:
        raise RecipeError("\n".join(f"{path}: {p}" for p in _pydantic_problems(err))) from None
    recipe._path = path
    problems = [p for check in SECTION_CHECKS for p in check(recipe)]
    if recipe.name != path.stem:
        problems.append(f"name: '{recipe.name}' must equal the file name '{path.stem}'")
    if problems:
        raise RecipeError("\n".join(f"{path}: {p}" for p in problems))
    return recipe


def load_recipe(path: Path | str, *, check_keys: bool = False, check_source: bool = True) -> Recipe:
    """Load and check a recipe: schema, sections, providers, prompt templates, the gate's benchmark
    recipe, optionally the source (read whole: `build` leaves that to the items stage, which reads it
    anyway) and API keys. The keys' variables are secrets to redact from then on."""
    path = Path(path)
    recipe = parse_recipe(path)
    for spec in recipe.models.values():
        register_key_variable(key_variable(spec))
    problems = provider_problems(recipe) + logprob_problems(recipe) + prompts.template_problems(recipe)
    if check_source:
        problems += sources.source_problems(recipe)
    if check_keys:
        problems += key_problems(recipe)
    problems += _gate_problems(recipe)
    if problems:
        raise RecipeError("\n".join(f"{path}: {p}" for p in problems))
    return recipe


def _gate_problems(recipe: Recipe) -> list[str]:
    gate = recipe.export.gate
    if gate is None:
        return []
    path = recipe.path.parent / f"{gate.benchmark}.yaml"
    if gate.benchmark == recipe.name:
        return ["export.gate.benchmark: a recipe cannot gate itself; name a benchmark recipe"]
    if not path.is_file():
        return [f"export.gate.benchmark: no benchmark recipe '{gate.benchmark}' ({path} does not exist)"]
    try:
        benchmark = parse_recipe(path)
    except RecipeError:
        return [f"export.gate.benchmark: recipe '{gate.benchmark}' is not valid (run `fellowship validate {gate.benchmark}`)"]
    if not benchmark.source.labelled:
        return [f"export.gate.benchmark: recipe '{gate.benchmark}' has no human labels (source.benchmark or label_column)"]
    return []
