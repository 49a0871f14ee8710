"""The project's own import graph, read from the source (nothing is imported).

A stage's code is the import closure of its entry module: every project module it imports, at the
top or inside a function, and the packages that contain them (their `__init__` runs too). The train
stage hashes its closure into its fingerprint, and each stage's code `deps` in dvc.yaml are exactly
its closure (`stage_code_deps`; a directory stands for all of its files when all are in it):
`python -m tunixrt_dvc.codegraph` rewrites them in dvc.yaml, and a test checks they agree.

The library's layers are its packages (each subpackage, each top-level module): `package_graph`
is what they import of each other, and it has no cycle.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("tunixrt_dvc", "stages")


def module_file(name: str, root: Path = ROOT) -> Path | None:
    """The source file of a project module (`a.b` -> a/b.py or a/b/__init__.py), or None."""
    if name.split(".")[0] not in PACKAGES:
        return None
    base = root.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(tree: ast.AST) -> Iterable[ast.AST]:
    """Every node that can run: `if TYPE_CHECKING:` bodies are left out (their else kept)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def imported_modules(name: str, root: Path = ROOT) -> set[str]:
    """The project modules that module `name` imports anywhere in its code."""
    path = module_file(name, root)
    if path is None:
        return set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            found.add(target)
            # `from pkg import mod` imports the module pkg.mod.
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return {m for m in found if module_file(m, root) is not None}


def _with_packages(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:k]) for k in range(1, len(parts) + 1)]


def import_closure(entries: Iterable[str], root: Path = ROOT) -> list[str]:
    """Every project module that running `entries` can import, packages included, sorted."""
    seen: set[str] = set()
    todo = [p for e in entries for p in _with_packages(e)]
    while todo:
        name = todo.pop()
        if name in seen or module_file(name, root) is None:
            continue
        seen.add(name)
        for m in imported_modules(name, root):
            todo.extend(_with_packages(m))
    return sorted(seen)


def closure_files(entries: Iterable[str], root: Path = ROOT) -> list[Path]:
    """The source files of `import_closure(entries)`."""
    return [p for m in import_closure(entries, root) if (p := module_file(m, root)) is not None]


def stage_entries(stage: str) -> list[str]:
    """What `tunixrt <stage>` runs: the command line and the stage's module."""
    return ["tunixrt_dvc.cli", f"stages.{stage}"]


def project_modules(root: Path = ROOT) -> list[str]:
    """Every module of the project's packages, by name."""
    out = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            out.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return out


def package_of(name: str, root: Path = ROOT) -> str | None:
    """The layer a module belongs to: `stages`, a subpackage of the library (`tunixrt_dvc.sft`)
    or a top-level module of it (`tunixrt_dvc.params`); None for the library's own `__init__`."""
    parts = name.split(".")
    if parts[0] == "stages":
        return "stages"
    if len(parts) == 1:
        return None
    return ".".join(parts[:2])


def package_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Which layers each layer imports (`package_of`), itself left out."""
    graph: dict[str, set[str]] = {}
    for name in project_modules(root):
        if (a := package_of(name, root)) is None:
            continue
        graph.setdefault(a, set())
        for imported in imported_modules(name, root):
            b = package_of(imported, root)
            if b is not None and b != a:
                graph[a].add(b)
    return graph


def layers(graph: dict[str, set[str]]) -> list[list[str]]:
    """The layers in order, lowest first: each imports only layers before it.

    Raises ValueError naming the layers of a cycle if there is one.
    """
    done: set[str] = set()
    out: list[list[str]] = []
    while len(done) < len(graph):
        ready = sorted(n for n in graph if n not in done and graph[n] <= done)
        if not ready:
            raise ValueError(f"import cycle among {sorted(set(graph) - done)}")
        out.append(ready)
        done.update(ready)
    return out


def stage_code_deps(stage: str, root: Path = ROOT) -> list[str]:
    """A stage's code deps for dvc.yaml: the files of its closure, a directory instead of its
    files where the closure holds every file in it (compiled caches aside)."""
    files = {p.relative_to(root).as_posix() for p in closure_files(stage_entries(stage), root)}
    out: set[str] = set()
    for f in sorted(files):
        parts = f.split("/")
        dep = f
        # The outermost subpackage directory all of whose files the stage runs.
        for k in range(2, len(parts)):
            d = "/".join(parts[:k])
            inside = {
                p.relative_to(root).as_posix()
                for p in (root / d).rglob("*")
                if p.is_file() and "__pycache__" not in p.parts
            }
            if inside <= files:
                dep = d
                break
        out.add(dep)
    return sorted(out)


_CODE_DEP = re.compile(r"^(\s+)- ((?:\.\./)*)(?:stages|tunixrt_dvc)/\S*\s*$")
_STAGE = re.compile(r"^  (\w+):\s*$")


def dvc_files(root: Path = ROOT) -> list[Path]:
    """The project's pipelines: dvc.yaml at the top and in the folders beside it."""
    return [root / "dvc.yaml", *sorted(root.glob("*/dvc.yaml"))]


def rewrite_code_deps(text: str, root: Path = ROOT) -> str:
    """A dvc.yaml's text with each stage's code deps replaced by `stage_code_deps` (after its
    other deps; comments and everything else kept). In a pipeline in a folder below the root,
    they are written relative to it (`../tunixrt_dvc/...`), as its other paths are."""
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    stage = None
    i = 0
    while i < len(lines):
        line = lines[i]
        if m := _STAGE.match(line):
            stage = m[1]
        if (m := _CODE_DEP.match(line)) and stage is not None:
            indent, up = m[1], m[2]
            while i < len(lines) and _CODE_DEP.match(lines[i]):
                i += 1
            out.extend(f"{indent}- {up}{d}\n" for d in stage_code_deps(stage, root))
            continue
        out.append(line)
        i += 1
    return "".join(out)


@click.command()
@click.argument("targets", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
def main(targets: tuple[Path, ...]) -> None:
    """Write every stage's code deps (the modules its entry imports, transitively) into the
    project's pipelines, dvc.yaml and gemma/dvc.yaml, or into the TARGETS given."""
    for target in targets or dvc_files():
        target.write_text(rewrite_code_deps(target.read_text(encoding="utf-8")), encoding="utf-8")


if __name__ == "__main__":
    main()
