"""dvc.yaml: every stage depends on all the code it runs, and the code has one direction."""

from __future__ import annotations

from pathlib import Path

import yaml

from tunixrt_dvc.codegraph import (
    ROOT,
    closure_files,
    import_closure,
    imported_modules,
    stage_entries,
)


def _covered(path: str, deps: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


def test_every_stage_depends_on_all_the_code_it_runs():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    uncovered = {}
    for name, stage in stages.items():
        assert stage["cmd"].startswith(f"tunixrt {name}"), stage["cmd"]
        files = [p.relative_to(ROOT).as_posix() for p in closure_files(stage_entries(name))]
        assert f"stages/{name}.py" in files and "tunixrt_dvc/cli.py" in files
        if missing := [f for f in files if not _covered(f, stage["deps"])]:
            uncovered[name] = missing
    assert uncovered == {}


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_the_closure_follows_function_level_and_relative_imports_not_type_checking(tmp_path):
    _write(
        tmp_path,
        {
            "stages/__init__.py": "",
            "stages/x.py": "def main():\n    from tunixrt_dvc.a import f\n",
            "tunixrt_dvc/__init__.py": "",
            "tunixrt_dvc/cli.py": "",
            "tunixrt_dvc/a/__init__.py": "",
            "tunixrt_dvc/a/f.py": "from . import g\nfrom .h import thing\n",
            "tunixrt_dvc/a/g.py": "",
            "tunixrt_dvc/a/h.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from tunixrt_dvc import typing_only\n"
                "else:\n    import tunixrt_dvc.runtime\n"
            ),
            "tunixrt_dvc/typing_only.py": "",
            "tunixrt_dvc/runtime.py": "",
            "tunixrt_dvc/unused.py": "",
        },
    )
    assert import_closure(stage_entries("x"), tmp_path) == [
        "stages",
        "stages.x",
        "tunixrt_dvc",
        "tunixrt_dvc.a",
        "tunixrt_dvc.a.f",
        "tunixrt_dvc.a.g",
        "tunixrt_dvc.a.h",
        "tunixrt_dvc.cli",
        "tunixrt_dvc.runtime",
    ]


def _modules() -> list[str]:
    out = []
    for path in sorted((ROOT / "tunixrt_dvc").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return out


def test_the_package_imports_form_no_cycle():
    graph = {m: imported_modules(m) for m in _modules()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph.get(m, set())):
            if state.get(n) == 1:
                cycles.append(path[path.index(n) :] + [n])
            elif n not in state:
                visit(n, path + [n])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [m])
    assert cycles == []


def test_nothing_in_the_pipeline_imports_the_benchmarks():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name in stages:
        bench = [
            m for m in import_closure(stage_entries(name)) if m.startswith("tunixrt_dvc.bench")
        ]
        assert bench == [], name
