"""The project's own import graph, read from the source (nothing is imported).

A stage's code is the import closure of its entry module: every project module it imports, at the
top or inside a function, and the packages that contain them (their `__init__` runs too). The train
stage hashes its closure into its fingerprint, and a test checks each stage's closure against its
`deps` in dvc.yaml.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

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
