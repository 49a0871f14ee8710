"""Arithmetic in generations: number normalization and the equation checker."""

from __future__ import annotations

import pytest

from tunixrt_dvc.task.arithmetic import check_equation, normalize_number


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("1,000", "1000"),
        ("1000", "1000"),
        ("42.0", "42"),
        ("42.50", "42.5"),
        ("-7", "-7"),
        ("\u22127", "-7"),
        ("+5", "5"),
        (" 12 ", "12"),
        ("007", "7"),
        ("-0", "0"),
        ("12,345,678", "12345678"),
    ],
)
def test_normalize_number_accepts(text: str, want: str) -> None:
    assert normalize_number(text) == want


@pytest.mark.parametrize(
    "text", ["", " ", "abc", "1,00", "10,0000", "1e5", "4 2", "42 apples", "$5", "1.", ".5", "--1"]
)
def test_normalize_number_rejects_garbage(text: str) -> None:
    assert normalize_number(text) is None


@pytest.mark.parametrize(
    "step",
    [
        "7 + 5 = 12",
        "4 + 8 + 1 = 13",
        "3 - 1 + 10 - 8 = 4",
        "7 × 6 = 42",
        "4 × 6 + 4 = 28",
        "347 + 285 = 632",
        "7 * 6 = 42",
        "7 x 6 = 42",
        "84 / 7 = 12",
        "2 + 3 × 4 = 14",  # precedence: not 20
        "10 - 4 - 3 = 3",  # left associative: not 9
        "(2 + 3) × 4 = 20",
        "-3 + 5 = 2",
        "1,000 + 1 = 1,001",
        "6 / 4 = 1.5",
        "Ones: 7 + 5 = 12",
        "7 + 5 = 12.",
        "4 × 6 + 4 = 24 + 4 = 28",
    ],
)
def test_check_equation_true(step: str) -> None:
    assert check_equation(step) is True


@pytest.mark.parametrize(
    "step",
    ["7 + 5 = 13", "2 + 3 × 4 = 20", "10 - 4 - 3 = 9", "347 + 285 = 622", "5 / 0 = 0", "1 = 1 = 2"],
)
def test_check_equation_false(step: str) -> None:
    assert check_equation(step) is False


@pytest.mark.parametrize(
    "step",
    [
        "",
        "Add the ones column",
        "12",
        "= 12",
        "7 + = 12",
        "7 + 5 =",
        "a + 5 = 12",
        "7 + 5 = twelve",
        "7 5 = 75",
        "(7 + 5 = 12",
        "__import__('os').system('true') = 0",
        "2 ** 3 = 8",
        "7 + 5 = 1 2",
        "(" * 40 + "1" + ")" * 40 + " = 1",
        "1 + " * 600 + "1 = 601",  # longer than any real step
    ],
)
def test_check_equation_none_for_non_equations(step: str) -> None:
    assert check_equation(step) is None
