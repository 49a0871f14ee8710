"""Eval sets: fixed, versioned JSONL files of questions with their expected answers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tunixrt_dvc.errors import InvalidInput, Problem
from tunixrt_dvc.sources import validation_problems


class EvalItem(BaseModel):
    """One eval question; `expected_answer` is compared with the answer a generation gives."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Annotated[str, Field(min_length=1, max_length=256)]
    prompt: Annotated[str, Field(min_length=1, max_length=50_000)]
    expected_answer: Annotated[str, Field(min_length=1, max_length=50_000)]
    category: Annotated[str, Field(min_length=1, max_length=64)]
    difficulty: Annotated[str, Field(min_length=1, max_length=64)]


def normalize_prompt(text: str) -> str:
    """The form prompts are compared in: case-folded, whitespace runs collapsed to one space."""
    return " ".join(text.casefold().split())


def load_evalset(path: str | Path) -> list[EvalItem]:
    """Every item of an eval set, or InvalidInput naming each bad line, repeated id or prompt."""
    path = Path(path)
    file = str(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InvalidInput([Problem(file, None, "<file>", e.strerror or str(e))]) from None
    items: list[EvalItem] = []
    problems: list[Problem] = []
    id_line: dict[str, int] = {}
    prompt_line: dict[str, int] = {}
    for line, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            problems.append(
                Problem(file, line, "<encoding>", f"invalid UTF-8 (byte {e.start + 1} of the line)")
            )
            continue
        try:
            item = EvalItem.model_validate_json(text)
        except ValidationError as e:
            problems.extend(validation_problems(e, file=file, line=line))
            continue
        if item.id in id_line:
            msg = f"duplicate id {item.id!r} (first on line {id_line[item.id]})"
            problems.append(Problem(file, line, "id", msg))
        id_line.setdefault(item.id, line)
        key = normalize_prompt(item.prompt)
        if key in prompt_line:
            msg = f"duplicate prompt (first on line {prompt_line[key]})"
            problems.append(Problem(file, line, "prompt", msg))
        prompt_line.setdefault(key, line)
        items.append(item)
    if not items and not problems:
        problems.append(Problem(file, None, "<file>", "no eval items"))
    if problems:
        raise InvalidInput(problems)
    return items


def eval_prompts(directory: str | Path) -> set[str]:
    """Normalized prompts of every eval set (*.jsonl, recursively) under `directory`."""
    directory = Path(directory)
    if not directory.is_dir():
        raise InvalidInput([Problem(str(directory), None, "<dir>", "no such directory")])
    out: set[str] = set()
    for path in sorted(directory.rglob("*.jsonl")):
        out.update(normalize_prompt(item.prompt) for item in load_evalset(path))
    return out
