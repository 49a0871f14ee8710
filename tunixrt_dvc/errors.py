"""The library's exceptions: plain Python errors that point at the offending input.

The command line (`tunixrt_dvc.cli`) turns them into click errors, in one place; a notebook or
another trainer catches them as ordinary exceptions.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one input record: `file:line: field: message`."""

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
    """One `Problem` per failing field of a pydantic error (`prefix` is put before the field)."""
    out = []
    for e in err.errors():
        if e["type"] == "json_invalid":
            out.append(Problem(file, line, "<json>", e["msg"].removeprefix("Invalid JSON: ")))
            continue
        loc = ".".join(str(p) for p in e["loc"])
        field = f"{prefix}{loc}" if loc else (prefix.rstrip(".") or "<record>")
        out.append(Problem(file, line, field, e["msg"]))
    return out


class TunixrtError(Exception):
    """Base of the library's errors; `exit_code` is the status the command line exits with."""

    exit_code = 1

    @property
    def message(self) -> str:
        return str(self)


class InvalidInput(TunixrtError, ValueError):
    """Bad input: lists every problem (the first `limit` of them in the message)."""

    def __init__(self, problems: list[Problem], *, limit: int = 50):
        self.problems = problems
        shown = [str(p) for p in problems[:limit]]
        if len(problems) > limit:
            shown.append(f"... and {len(problems) - limit} more problems")
        super().__init__(f"{len(problems)} invalid input problem(s):\n" + "\n".join(shown))


class MissingDependency(TunixrtError, ImportError):
    """An optional package a feature needs is not installed (exit status 2)."""

    exit_code = 2


class ResourceError(TunixrtError, RuntimeError):
    """Something outside the input failed: a database refused a connection, a server an upload."""
