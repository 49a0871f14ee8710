"""dvc.yaml: every stage depends on exactly the code it runs, and the code has one direction."""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tunixrt_dvc.codegraph import (
    ROOT,
    closure_files,
    dvc_files,
    import_closure,
    layers,
    package_graph,
    rewrite_code_deps,
    stage_code_deps,
    stage_entries,
)
from tunixrt_dvc.params import load_params

PIPELINES = {
    f.relative_to(ROOT).as_posix(): yaml.safe_load(f.read_text())["stages"] for f in dvc_files()
}
STAGES = PIPELINES["dvc.yaml"]


def _code(deps: list[str]) -> list[str]:
    code = (d.lstrip("./") for d in deps if d.lstrip("./").startswith(("stages/", "tunixrt_dvc/")))
    return sorted(code)


@pytest.mark.parametrize(
    ("pipeline", "name"), [(f, s) for f, stages in PIPELINES.items() for s in stages]
)
def test_every_stage_depends_on_exactly_the_code_it_runs(pipeline, name):
    stage = PIPELINES[pipeline][name]
    assert stage["cmd"].startswith(f"tunixrt {name}"), stage["cmd"]
    files = [p.relative_to(ROOT).as_posix() for p in closure_files(stage_entries(name))]
    assert f"stages/{name}.py" in files and "tunixrt_dvc/cli.py" in files
    assert _code(stage["deps"]) == stage_code_deps(name), (
        "run `python -m tunixrt_dvc.codegraph` to write the stages' code deps into dvc.yaml"
    )


def test_the_real_checkpoint_pipeline_is_a_folder_beside_the_default():
    assert "gemma/dvc.yaml" in PIPELINES


@pytest.mark.parametrize("pipeline", sorted(PIPELINES))
def test_the_dvc_yaml_writer_keeps_everything_else(pipeline):
    text = (ROOT / pipeline).read_text()
    assert rewrite_code_deps(text) == text
    up = "../" * pipeline.count("/")
    shuffled = text.replace(
        f"      - {up}stages/train.py\n", f"      - {up}tunixrt_dvc/bench/cli.py\n"
    )
    assert shuffled != text and rewrite_code_deps(shuffled) == text


@pytest.mark.parametrize(
    ("pipeline", "name"),
    [(f, s) for f, stages in PIPELINES.items() for s in ("train", "grpo") if s in stages],
)
def test_a_training_fingerprint_holds_the_params_its_stage_reads(pipeline, name):
    stage = importlib.import_module(f"stages.{name}")
    assert list(stage.PARAMS) == PIPELINES[pipeline][name]["params"]


# Which stages read the paths params name (a stage that reads one must depend on it).
READERS = {
    "evalsets_dir": ("corpus", "export"),
    "corpus.store": (),
    "export.source": ("export",),
    "format.tokenizer": ("format",),
    "model.checkpoint": ("train", "grpo", "eval"),
    "eval.evalset": ("eval",),
    "report.seed_sweep": ("report",),
}


@pytest.mark.parametrize("pipeline", sorted(PIPELINES))
def test_paths_that_params_name_are_templated_deps_of_their_readers(pipeline):
    params = load_params((ROOT / pipeline).parent / "params.yaml")
    stages = PIPELINES[pipeline]
    for key, readers in READERS.items():
        section, _, field = key.partition(".")
        value = getattr(getattr(params, section), field) if field else getattr(params, key)
        for name, stage in stages.items():
            listed = [e if isinstance(e, str) else next(iter(e)) for e in stage.get("deps", [])]
            listed += [e if isinstance(e, str) else next(iter(e)) for e in stage.get("outs", [])]
            assert value is None or value not in listed, f"{name}: write ${{{key}}}, not {value}"
            if value is not None and name in readers:
                assert f"${{{key}}}" in listed, f"{pipeline}: {name} reads {key}"


def _edit(root: Path, files: list[str]) -> None:
    for f in files:
        with open(root / f, "a") as fh:
            fh.write("\n# an edit\n")


def test_editing_a_benchmark_or_the_plan_command_changes_no_stage(tmp_path):
    # (sft/plan.py is train's: the stage refuses a run that will not fit with its bounds.)
    untouched = ["tunixrt_dvc/bench/train.py", "tunixrt_dvc/sft/cli.py"]
    for f in untouched:
        for stages in PIPELINES.values():
            assert not any(
                f == d or f.startswith(d + "/") for s in stages.values() for d in _code(s["deps"])
            ), f
    # And as DVC sees it: the same status before and after the edit.
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    work = tmp_path / "repo"
    for f in files:
        if (ROOT / f).is_file():
            (work / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, work / f)
    subprocess.run(["git", "init", "-q"], cwd=work, check=True)
    dvc = [sys.executable, "-m", "dvc", "status", "--json"]

    def status() -> dict:
        out = subprocess.run(dvc, cwd=work, capture_output=True, text=True, check=True).stdout
        return json.loads(out)

    before = status()
    _edit(work, untouched)
    assert status() == before


def test_the_packages_form_layers_with_no_cycle():
    graph = package_graph()
    order = layers(graph)  # raises on a cycle
    rank = {p: i for i, layer in enumerate(order) for p in layer}
    assert all(rank[b] < rank[a] for a, deps in graph.items() for b in deps)
    # params sits below every package that reads it; commands never import the command table.
    assert rank["tunixrt_dvc.params"] < min(rank["tunixrt_dvc.model"], rank["tunixrt_dvc.text"])
    assert not any("tunixrt_dvc.cli" in deps for deps in graph.values())


def test_a_cycle_is_found_and_named():
    with pytest.raises(ValueError, match=r"\['a', 'b'\]"):
        layers({"a": {"b"}, "b": {"a"}, "c": set()})


def test_docs_architecture_shows_the_layers_as_they_are():
    doc = (ROOT / "docs" / "architecture.md").read_text()
    for i, layer in enumerate(layers(package_graph())):
        names = ", ".join(f"`{p.removeprefix('tunixrt_dvc.')}`" for p in layer)
        assert f"| {i} | {names} |" in doc, f"layer {i}: {names}"


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
    # The whole of `a` runs: one directory dep; of the top level, only what runs.
    assert stage_code_deps("x", tmp_path) == [
        "stages/__init__.py",
        "stages/x.py",
        "tunixrt_dvc/__init__.py",
        "tunixrt_dvc/a",
        "tunixrt_dvc/cli.py",
        "tunixrt_dvc/runtime.py",
    ]
    (tmp_path / "tunixrt_dvc/a/extra.py").write_text("")
    assert "tunixrt_dvc/a/f.py" in stage_code_deps("x", tmp_path)


def test_nothing_in_the_pipeline_imports_the_benchmarks():
    for name in STAGES:
        bench = [
            m for m in import_closure(stage_entries(name)) if m.startswith("tunixrt_dvc.bench")
        ]
        assert bench == [], name
