"""Eval sets: fixed, versioned JSONL files of questions with their expected answers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from tunixrt_dvc.errors import Problem
from tunixrt_dvc.io import read_jsonl


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
    prompt_line: dict[str, int] = {}

    def repeated_prompt(item: EvalItem, line: int) -> list[Problem]:
        key = normalize_prompt(item.prompt)
        if key in prompt_line:
            msg = f"duplicate prompt (first on line {prompt_line[key]})"
            return [Problem(str(path), line, "prompt", msg)]
        prompt_line[key] = line
        return []

    return read_jsonl(path, EvalItem, what="eval items", check=repeated_prompt)
