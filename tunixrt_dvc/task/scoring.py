"""Scoring eval generations: extracted answers and checked equations, one item at a time.

Definitions (also in docs/eval-loop.md):
- correct: the recipe's parser found an answer and it equals the expected answer after number
  normalization (`1,000` = `1000`, `42.0` = `42`); a non-numeric expected answer is compared as
  whitespace-collapsed text.
- an equation step is a step that `check_equation` can check (not None); steps_total counts them,
  steps_correct counts the true ones.
- answer_follows: the item has at least one equation step, every equation step is correct, and the
  answer equals the value of the last equation step (its right-most side). It is False when the
  answer is missing, when there are no equation steps, or when any equation step is wrong.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from tunixrt_dvc.io import read_jsonl
from tunixrt_dvc.task.arithmetic import (
    check_equation,
    equation_result,
    normalize_number,
    to_decimal,
)


class ParsedLike(Protocol):
    """What a recipe's parser returns (tunixrt_dvc.text.recipes.ParsedResponse)."""

    steps: list[str]
    answer: str | None
    well_formed: bool


class EvalItemLike(Protocol):
    id: str
    prompt: str
    expected_answer: Any
    category: str
    difficulty: str


class ScoredItem(BaseModel):
    """One eval item, its generation and scores: a line of eval/before.jsonl or eval/after.jsonl."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    prompt: str
    category: str
    difficulty: str
    expected_answer: str
    generation: str
    steps: list[str]
    answer: str | None
    correct: bool
    well_formed: bool
    steps_total: Annotated[int, Field(ge=0)]
    steps_correct: Annotated[int, Field(ge=0)]
    answer_follows: bool
    gen_tokens: Annotated[int, Field(ge=0)]


def answers_match(answer: str | None, expected: str) -> bool:
    """Numbers compare after normalization; a non-numeric expected answer compares as text."""
    if answer is None:
        return False
    want = normalize_number(expected)
    if want is not None:
        return normalize_number(answer) == want
    return " ".join(answer.split()) == " ".join(expected.split())


def score_item(
    *, item: EvalItemLike, generation: str, parsed: ParsedLike, gen_tokens: int
) -> ScoredItem:
    """Score one generation against its eval item (see the module docstring for definitions)."""
    expected = str(item.expected_answer)
    steps = list(parsed.steps)
    checks = [check_equation(s) for s in steps]
    equations = [(s, ok) for s, ok in zip(steps, checks, strict=True) if ok is not None]
    steps_correct = sum(1 for _, ok in equations if ok)
    follows = False
    if equations and steps_correct == len(equations) and parsed.answer is not None:
        answer_value = to_decimal(parsed.answer)
        last = equation_result(equations[-1][0])
        follows = answer_value is not None and last is not None and Fraction(answer_value) == last
    return ScoredItem(
        id=item.id,
        prompt=item.prompt,
        category=item.category,
        difficulty=item.difficulty,
        expected_answer=expected,
        generation=generation,
        steps=steps,
        answer=parsed.answer,
        correct=answers_match(parsed.answer, expected),
        well_formed=bool(parsed.well_formed),
        steps_total=len(equations),
        steps_correct=steps_correct,
        answer_follows=follows,
        gen_tokens=gen_tokens,
    )


def read_scored(path: str | Path) -> list[ScoredItem]:
    """Read a per-item JSONL file; every bad line is reported as `file:line: field: message`."""
    return read_jsonl(path, ScoredItem, what="scored items")
