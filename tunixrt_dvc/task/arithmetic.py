"""Numbers and equations in generated text, with exact arithmetic and no eval().

`normalize_number` gives a number literal's canonical text (`1,000` = `1000`, `42.0` = `42`);
`check_equation` and `equation_result` read `a = b [= c ...]` steps with a small parser.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from fractions import Fraction

# --- numbers -------------------------------------------------------------------------------

# An optional sign, digits with well-formed thousands separators or none, an optional fraction.
_NUMBER_RE = re.compile(r"[+\-\u2212]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")


def to_decimal(text: str) -> Decimal | None:
    """The exact value of a number literal that `normalize_number` accepts, or None."""
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
    value = to_decimal(text)
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
