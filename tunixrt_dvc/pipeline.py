"""The dvc.yaml stage a command runs as, when DVC runs it: files that params name must be deps.

A checkpoint or tokenizer named in params.yaml is only a string to DVC: unless the stage lists it
among its deps (`- ${model.checkpoint}`), new weights at the same path change nothing DVC sees and
`dvc repro` keeps stale results. DVC tells a command which stage it runs (`DVC_ROOT`,
`DVC_STAGE`), so the command can refuse to run unhashed inputs.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from tunixrt_dvc.errors import InvalidInput, Problem


def check_deps_hash(files: dict[str, str | None]) -> None:
    """Under DVC, refuse when a path that params name (`{"model.checkpoint": path}`; None:
    unset) is not a dep of the running stage, as `${key}` or as itself."""
    stage, root = os.environ.get("DVC_STAGE"), os.environ.get("DVC_ROOT")
    named = {k: v for k, v in files.items() if v}
    if not stage or not root or not named:
        return
    dvcfile, _, name = stage.rpartition(":")
    path = Path(root) / (dvcfile or "dvc.yaml")
    node = yaml.compose(path.read_text(encoding="utf-8"))
    deps, line = _deps_of(node, name)
    problems = [
        Problem(
            str(path),
            line,
            f"stages.{name}.deps",
            f"does not list ${{{key}}} ({value}): DVC would not see it change and would keep "
            f"stale results; add `- ${{{key}}}`",
        )
        for key, value in named.items()
        if f"${{{key}}}" not in deps and value not in deps
    ]
    if problems:
        raise InvalidInput(problems)


def _deps_of(node: yaml.Node, stage: str) -> tuple[list[str], int | None]:
    """The deps of `stage` in a dvc.yaml node tree (as written) and the line of the stage."""

    def child(n: yaml.Node | None, key: str) -> tuple[yaml.Node | None, int | None]:
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                if k.value == key:
                    return v, k.start_mark.line + 1
        return None, None

    stages, _ = child(node, "stages")
    entry, line = child(stages, stage)
    deps, _ = child(entry, "deps")
    if not isinstance(deps, yaml.SequenceNode):
        return [], line
    return [d.value for d in deps.value if isinstance(d, yaml.ScalarNode)], line
