"""Errors that point at the offending input: `file:line: field: message`."""

from __future__ import annotations

from dataclasses import dataclass

import click
from pydantic import ValidationError


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one input record."""

    file: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.field}: {self.message}"


def problems_from_validation(
    err: ValidationError, *, file: str, line: int | None, prefix: str = ""
) -> list[Problem]:
    """Turn a pydantic error into one `Problem` per failing field."""
    out = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "<record>"
        out.append(Problem(file, line, f"{prefix}{loc}", e["msg"]))
    return out


class InvalidInput(click.ClickException):
    """Bad input: lists every problem, exits non-zero (click prints it to stderr)."""

    exit_code = 1

    def __init__(self, problems: list[Problem], *, limit: int = 50):
        self.problems = problems
        shown = [str(p) for p in problems[:limit]]
        if len(problems) > limit:
            shown.append(f"... and {len(problems) - limit} more problems")
        super().__init__(f"{len(problems)} invalid input problem(s):\n" + "\n".join(shown))
