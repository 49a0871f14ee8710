"""Scoring eval generations: extracted answers, checked equations, summaries and DVC metrics.

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

import re
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from tunixrt_dvc.io import read_jsonl

# --- numbers -------------------------------------------------------------------------------

# An optional sign, digits with well-formed thousands separators or none, an optional fraction.
_NUMBER_RE = re.compile(r"[+\-\u2212]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")


def _to_decimal(text: str) -> Decimal | None:
    s = text.strip()
    if not _NUMBER_RE.fullmatch(s):
        return None
    try:
        return Decimal(s.replace(",", "").replace("\u2212", "-"))
    except InvalidOperation:  # pragma: no cover - the regex admits only valid literals
        return None


def _canonical(value: Decimal | Fraction) -> str | None:
    """`42`, `-7`, `2.5`: no exponent, trailing zeros or negative zero; None if not terminating."""
    if isinstance(value, Fraction):
        if value.denominator == 1:
            return str(value.numerator)
        # Terminating decimals only (denominator 2^a 5^b); 1/3 has no exact decimal form.
        d = value.denominator
        for p in (2, 5):
            while d % p == 0:
                d //= p
        if d != 1:
            return None
        value = Decimal(value.numerator) / Decimal(value.denominator)
    if value == 0:
        return "0"
    text = format(value.normalize(), "f")
    return text


def normalize_number(text: str) -> str | None:
    """Canonical text of a number (`1,000` -> `1000`, `42.0` -> `42`, ` -7 ` -> `-7`), or None.

    Accepted: optional sign, digits (thousands separators only in groups of three), optional
    decimal part. Rejected: units, words, exponents, empty text, `1,00`, `4 2`.
    """
    value = _to_decimal(text)
    return None if value is None else _canonical(value)


# --- equations -----------------------------------------------------------------------------

MAX_EQUATION_CHARS = 1_000  # a step longer than this is prose, not a checkable equation
_MAX_DEPTH = 32  # parentheses nesting; keeps the recursive parser far from Python's limit

_TOKEN_RE = re.compile(
    r"\s*(?:(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)|(?P<op>[+\-\u2212*×xX·/÷()]))"
)
_OPS = {"\u2212": "-", "×": "*", "x": "*", "X": "*", "·": "*", "÷": "/"}


class _NotAnExpression(Exception):
    pass


def _tokenize(text: str) -> list[str | Fraction]:
    tokens: list[str | Fraction] = []
    pos, end = 0, len(text.rstrip())
    while pos < end:
        m = _TOKEN_RE.match(text, pos)
        if not m:
            raise _NotAnExpression
        if m.group("num") is not None:
            tokens.append(Fraction(m.group("num").replace(",", "")))
        else:
            op = m.group("op")
            tokens.append(_OPS.get(op, op))
        pos = m.end()
    if not tokens:
        raise _NotAnExpression
    return tokens


class _Parser:
    """Recursive descent over + - * / ( ) and numbers, usual precedence, exact arithmetic."""

    def __init__(self, tokens: list[str | Fraction]):
        self.tokens, self.pos = tokens, 0

    def _peek(self) -> str | Fraction | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def parse(self) -> Fraction | None:
        value = self._expr(0)
        if self.pos != len(self.tokens):
            raise _NotAnExpression
        return value

    # None propagates a division by zero: still an expression, but it has no value.
    def _expr(self, depth: int) -> Fraction | None:
        value = self._term(depth)
        while self._peek() in ("+", "-"):
            op = self.tokens[self.pos]
            self.pos += 1
            rhs = self._term(depth)
            if value is not None and rhs is not None:
                value = value + rhs if op == "+" else value - rhs
            else:
                value = None
        return value

    def _term(self, depth: int) -> Fraction | None:
        value = self._factor(depth)
        while self._peek() in ("*", "/"):
            op = self.tokens[self.pos]
            self.pos += 1
            rhs = self._factor(depth)
            if value is None or rhs is None or (op == "/" and rhs == 0):
                value = None
            else:
                value = value * rhs if op == "*" else value / rhs
        return value

    def _factor(self, depth: int) -> Fraction | None:
        tok = self._peek()
        if tok is None:
            raise _NotAnExpression
        self.pos += 1
        if isinstance(tok, Fraction):
            return tok
        if tok in ("-", "+"):
            value = self._factor(depth)
            return None if value is None else (-value if tok == "-" else value)
        if tok == "(":
            if depth >= _MAX_DEPTH:
                raise _NotAnExpression
            value = self._expr(depth + 1)
            if self._peek() != ")":
                raise _NotAnExpression
            self.pos += 1
            return value
        raise _NotAnExpression


def _evaluate(text: str) -> Fraction | None:
    """Value of an arithmetic expression; raises _NotAnExpression; None on division by zero."""
    return _Parser(_tokenize(text)).parse()


def _equation_sides(step: str) -> list[Fraction | None] | None:
    """Values of each side of `a = b [= c ...]`, or None if the step is not such an equation.

    A short label before a colon is ignored (`Ones: 7 + 5 = 12`), as is one trailing full stop.
    """
    s = step.strip()
    if len(s) > MAX_EQUATION_CHARS or "=" not in s:
        return None
    if s.endswith("."):
        s = s[:-1]
    parts = s.split("=")
    if ":" in parts[0]:
        parts[0] = parts[0].rsplit(":", 1)[1]
    try:
        return [_evaluate(p) for p in parts]
    except _NotAnExpression:
        return None


def check_equation(step: str) -> bool | None:
    """True if every side of the equation has the same value, False if not, None if no equation.

    The sides are parsed by a small exact-arithmetic parser (integers and decimals, thousands
    separators, + - − × * x / ÷ and parentheses, usual precedence); nothing is passed to eval().
    A division by zero makes the equation false.
    """
    sides = _equation_sides(step)
    if sides is None:
        return None
    first = sides[0]
    return first is not None and all(v == first for v in sides[1:])


def equation_result(step: str) -> Fraction | None:
    """The value of the right-most side of an equation step (None if not an equation)."""
    sides = _equation_sides(step)
    return None if sides is None else sides[-1]


# --- items ---------------------------------------------------------------------------------


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
        answer_value = _to_decimal(parsed.answer)
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


# --- summaries and metrics -----------------------------------------------------------------


def _share(num: int, den: int) -> float:
    return num / den if den else 0.0


def _accuracy_by(scored: Sequence[ScoredItem], key: str) -> dict[str, float]:
    groups: dict[str, list[bool]] = {}
    for s in scored:
        groups.setdefault(getattr(s, key), []).append(s.correct)
    return {k: _share(sum(v), len(v)) for k, v in sorted(groups.items())}


def summarize(scored: Sequence[ScoredItem]) -> dict[str, Any]:
    """Aggregate one model's scores; step_accuracy pools equation steps of all items (0 if none)."""
    if not scored:
        raise ValueError("summarize: no scored items")
    n = len(scored)
    total_steps = sum(s.steps_total for s in scored)
    return {
        "n": n,
        "accuracy": _share(sum(s.correct for s in scored), n),
        "format_compliance": _share(sum(s.well_formed for s in scored), n),
        "step_accuracy": _share(sum(s.steps_correct for s in scored), total_steps),
        "answer_follows_rate": _share(sum(s.answer_follows for s in scored), n),
        "mean_equation_steps": total_steps / n,
        "mean_gen_tokens": sum(s.gen_tokens for s in scored) / n,
        "accuracy_by_category": _accuracy_by(scored, "category"),
        "accuracy_by_difficulty": _accuracy_by(scored, "difficulty"),
    }


def _as_summary(x: Sequence[ScoredItem] | Mapping[str, Any]) -> Mapping[str, Any]:
    return x if isinstance(x, Mapping) else summarize(x)


def _rounded(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _rounded(v) for k, v in sorted(value.items())}
    if isinstance(value, bool) or isinstance(value, int):
        return value
    return round(float(value), 4)


def _delta(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in sorted(set(before) & set(after)):
        b, a = before[key], after[key]
        if key == "n":
            continue  # the same eval set on both sides; a count has no meaningful delta
        if isinstance(b, Mapping) and isinstance(a, Mapping):
            out[key] = _delta(b, a)
        elif isinstance(b, int | float) and isinstance(a, int | float):
            out[key] = round(a - b, 4)
    return out


def eval_metrics(
    before: Sequence[ScoredItem] | Mapping[str, Any],
    after: Sequence[ScoredItem] | Mapping[str, Any],
    rl: Sequence[ScoredItem] | Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """`{"before": {...}, "after": {...}, "delta": {...}}`, floats rounded to 4 decimals; with
    `rl` (the model after the RL stage) also `"rl"` and `"delta_rl"` (rl minus after).

    Takes scored items or `summarize` outputs. A delta is the difference of the rounded values,
    so it matches what a reader subtracts; `dvc metrics diff` shows every leaf.
    """
    b, a = _rounded(_as_summary(before)), _rounded(_as_summary(after))
    out = {"before": b, "after": a, "delta": _delta(b, a)}
    if rl is not None:
        r = _rounded(_as_summary(rl))
        out |= {"rl": r, "delta_rl": _delta(a, r)}
    return out


def accuracy_plot_rows(
    before: Sequence[ScoredItem] | Mapping[str, Any],
    after: Sequence[ScoredItem] | Mapping[str, Any],
    rl: Sequence[ScoredItem] | Mapping[str, Any] | None = None,
    *,
    by: str = "category",
) -> list[dict[str, Any]]:
    """Rows `{by, "model", "accuracy"}` for a bar plot of accuracy by category (or difficulty):
    models before, after and (given) rl."""
    sides = [("before", _as_summary(before)), ("after", _as_summary(after))]
    if rl is not None:
        sides.append(("rl", _as_summary(rl)))
    key = f"accuracy_by_{by}"
    groups = sorted(set().union(*(s[key] for _, s in sides)))
    rows = []
    for group in groups:
        for model, summary in sides:
            acc = summary[key].get(group)
            if acc is not None:
                rows.append({by: group, "model": model, "accuracy": round(acc, 4)})
    return rows
