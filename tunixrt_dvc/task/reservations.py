"""What the eval sets reserve: their prompts, and every computation their problems work out.

A training trace that repeats an eval prompt, or that works out one of an eval problem's
computations anywhere in its steps (a two-step problem contains a whole worked multiplication),
would teach the model an eval answer. The generator never makes such a trace and the export
drops any that a trace store holds.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tunixrt_dvc.errors import InvalidInput, Problem
from tunixrt_dvc.task.corpus import computation, prompt_computations
from tunixrt_dvc.task.evalsets import load_evalset, normalize_prompt

# A step that works out one operation on two whole numbers, `347 + 85 = 432` (a short label
# before a colon and a final full stop allowed, as the scorer allows them).
_BINARY = re.compile(
    r"(?:[^:=]{0,40}:)?\s*(?P<x>\d+)\s*(?P<op>[+\-\u2212×xX*·])\s*(?P<y>\d+)\s*=\s*\d+\s*\.?\s*"
)
_OPS = {"+": "add", "-": "sub", "\u2212": "sub", "×": "mul", "x": "mul", "X": "mul"}
_OPS |= {"*": "mul", "·": "mul"}


def work_computations(steps: Iterable[str]) -> set[str]:
    """The computations a trace's steps work out (`task.corpus.computation` keys)."""
    out = set()
    for step in steps:
        if m := _BINARY.fullmatch(step):
            out.add(computation(_OPS[m["op"]], int(m["x"]), int(m["y"])))
    return out


@dataclass(frozen=True)
class Reservations:
    prompts: frozenset[str]  # normalized (`evalsets.normalize_prompt`)
    computations: frozenset[str]

    def conflict(self, prompt: str, steps: Iterable[str]) -> str | None:
        """Why a training trace would leak an eval problem, or None."""
        if normalize_prompt(prompt) in self.prompts:
            return "its prompt is an eval-set prompt"
        if found := self.computations.intersection(work_computations(steps)):
            return f"its work computes {sorted(found)[0]}, an eval problem's computation"
        return None


def load_reservations(directory: str | Path) -> Reservations:
    """The prompts of every eval set (*.jsonl, recursively) under `directory`, and the
    computations of those that are built-in problems (read back from their wording)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise InvalidInput([Problem(str(directory), None, "<dir>", "no such directory")])
    prompts: set[str] = set()
    computations: set[str] = set()
    for path in sorted(directory.rglob("*.jsonl")):
        for item in load_evalset(path):
            prompts.add(normalize_prompt(item.prompt))
            computations.update(prompt_computations(item.prompt) or ())
    return Reservations(frozenset(prompts), frozenset(computations))
