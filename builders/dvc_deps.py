"""Each DVC stage's code dependencies, derived from the code: the Python modules under `builders/`
and `metrics/` that the stage's command can run, found by reading their `import` statements.

    python -m builders.dvc_deps --check    # exit 1, naming each stage and module, when dvc.yaml differs
    python -m builders.dvc_deps --write    # rewrite the code entries of every stage's `deps` in dvc.yaml

Run `--write` after adding, removing or re-wiring a module; `tests/test_dvc.py` runs `--check`.

What a stage runs: `fellowship build <recipe> --stage S` loads the recipe (`builders.loader`) and
runs the stage through `builders.stages` with S's builder; `fellowship meta-eval <recipe>` loads the
recipe and runs `builders.meta_eval`. From those modules, every import counts, wherever it is
written (a function's late import too), as do the packages' `__init__` modules and the registry's
lazy factories (`"builders.llm.sdk:OpenAIProvider"`). Two edges are left out, as dispatch rather
than dependency: the command-line layer (`builders/cli/`, which parses arguments and calls the
above), and `builders.stages`' table of every builder (a stage depends on its own builder).
Other files a stage reads (prompts, sources, vendored benchmarks, tables) stay hand-written in
dvc.yaml; only entries naming a `.py` file, or a folder of them, are code entries.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("builders", "metrics")
RUNNER = "builders.stages"
CLI = "builders.cli"
LOADER = "builders.loader"
FACTORY = re.compile(r"^((?:builders|metrics)(?:\.\w+)+):\w+$")  # "module:attribute", imported lazily


def module_file(module: str, root: Path = ROOT) -> Path | None:
    """The file of `module` under `root`, if it is one of ours."""
    base = root.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def imports(module: str, root: Path = ROOT) -> set[str]:
    """Our modules that `module` imports, anywhere in its file; with each one's parent packages."""
    path = module_file(module, root)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and FACTORY.match(node.value):
            names = [FACTORY.match(node.value).group(1)]
        for name in names:
            if name.split(".")[0] in PACKAGES and module_file(name, root):
                found.add(name)
    for name in list(found):  # importing a.b.c runs a/__init__ and a/b/__init__ first
        parts = name.split(".")
        found.update(".".join(parts[:i]) for i in range(1, len(parts)))
    found.discard(module)
    return found


def closure(roots: list[str], root: Path = ROOT, *, skip: dict[str, set[str]] | None = None) -> set[str]:
    """Every module reachable from `roots` by imports, without the command-line layer and without
    the edges in `skip` (module -> modules it imports that do not count)."""
    skip = skip or {}
    seen, todo = set(), list(roots)
    while todo:
        module = todo.pop()
        if module in seen or module == CLI or module.startswith(CLI + "."):
            continue
        seen.add(module)
        todo.extend(imports(module, root) - skip.get(module, set()))
    return seen


def stage_modules(root: Path = ROOT) -> dict[str, str]:
    """Stage name -> its builder module, from `builders.stages`' table (`BUILDERS`, module names)."""
    tree = ast.parse(module_file(RUNNER, root).read_text(encoding="utf-8"))
    table = next(n for n in ast.walk(tree) if isinstance(n, ast.AnnAssign) and getattr(n.target, "id", "") == "BUILDERS")
    return {key.value: value.value for key, value in zip(table.value.keys, table.value.values)}


def roots_of(command: str, root: Path = ROOT) -> list[str]:
    """The modules a stage's `cmd` runs (see the module docstring)."""
    found = re.fullmatch(r"fellowship build \S+ --stage (\w+)", command)
    if found:
        return [stage_modules(root)[found.group(1)], RUNNER, LOADER]
    if re.fullmatch(r"fellowship meta-eval \S+", command):
        return ["builders.meta_eval", LOADER]
    if re.fullmatch(r"fellowship report \S+", command):
        return ["builders.report", LOADER]
    raise ValueError(f"dvc.yaml: no rule for the command {command!r} (add one to builders/dvc_deps.py)")


def code_deps(command: str, root: Path = ROOT) -> list[str]:
    """The files of the modules a stage's command runs, as dvc.yaml lists them: a subpackage's
    folder stands for its files when the stage runs every one of them (and it holds nothing else)."""
    dispatch = {RUNNER: set(stage_modules(root).values())}
    files = {module_file(m, root).relative_to(root) for m in closure(roots_of(command, root), root, skip=dispatch)}
    for folder in sorted({f.parent for f in files if len(f.parts) > 2}, key=lambda p: len(p.parts)):
        inside = [p.relative_to(root) for p in (root / folder).rglob("*") if p.is_file() and "__pycache__" not in p.parts]
        if inside and all(p in files for p in inside):
            files = {f for f in files if folder not in f.parents} | {folder}
    return sorted(str(f) for f in files)


def is_code(entry: str, root: Path = ROOT) -> bool:
    """A dvc.yaml dep naming a Python file, or a folder holding some."""
    path = root / entry
    return entry.endswith(".py") or (path.is_dir() and any(path.rglob("*.py")))


def _stages(root: Path) -> dict[str, dict]:
    return yaml.safe_load((root / "dvc.yaml").read_text(encoding="utf-8"))["stages"]


def problems(root: Path = ROOT) -> list[str]:
    """One line per stage whose code deps in dvc.yaml differ from the code's, naming the modules."""
    out = []
    for name, stage in _stages(root).items():
        do = stage.get("do", stage)
        listed = {d for d in do.get("deps", []) if is_code(d, root)}
        wanted = set(code_deps(do["cmd"], root))
        missing, extra = sorted(wanted - listed), sorted(listed - wanted)
        if missing:
            out.append(f"dvc.yaml: stage {name}: deps miss {', '.join(missing)}, which its code imports")
        if extra:
            out.append(f"dvc.yaml: stage {name}: deps list {', '.join(extra)}, which its code does not import")
    if out:
        out.append("run `python -m builders.dvc_deps --write` to derive them again")
    return out


def _entry(dep: str) -> str:
    return f'"{dep}"' if re.search(r"[${}\[\]:,#&*!|>'\"%@`]", dep) else dep


def write(root: Path = ROOT) -> bool:
    """Rewrite every stage's deps in dvc.yaml: the code entries derived, the others kept in order
    (as a block list, one entry a line). Returns whether the file changed."""
    path = root / "dvc.yaml"
    lines = path.read_text(encoding="utf-8").splitlines()
    stages = _stages(root)
    current = None
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        heading = re.fullmatch(r"  ([\w-]+):\s*", line)
        if heading and heading.group(1) in stages:
            current = heading.group(1)
        deps = re.fullmatch(r"(\s+)deps:(.*)", line)
        if not (deps and current):
            out.append(line)
            i += 1
            continue
        indent, rest = deps.group(1), deps.group(2).strip()
        i += 1
        if not rest:  # a block list: the lines below, indented further, starting with "- "
            while i < len(lines) and re.match(rf"{indent}\s+- ", lines[i]):
                i += 1
        do = stages[current].get("do", stages[current])
        code = code_deps(do["cmd"], root)
        others = [d for d in do["deps"] if not is_code(d, root)]
        out.append(f"{indent}deps:")
        out.extend(f"{indent}  - {_entry(d)}" for d in [*code, *others])
        current = None
    text = "\n".join(out) + "\n"
    changed = text != path.read_text(encoding="utf-8")
    path.write_text(text, encoding="utf-8")
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m builders.dvc_deps", description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--check", action="store_true", help="exit 1 when dvc.yaml's code deps differ from the code's")
    group.add_argument("--write", action="store_true", help="rewrite the code deps in dvc.yaml")
    args = parser.parse_args(argv)
    if args.write:
        print("dvc.yaml: rewritten" if write() else "dvc.yaml: already up to date")
        return 0
    found = problems()
    for line in found:
        print(line, file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
