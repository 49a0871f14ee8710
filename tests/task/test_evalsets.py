"""Eval-set validation, prompt normalization, and the committed eval sets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunixrt_dvc.errors import InvalidInput
from tunixrt_dvc.task.evalsets import EvalItem, load_evalset, normalize_prompt
from tunixrt_dvc.task.reservations import load_reservations

REPO = Path(__file__).resolve().parents[2]


def item(i: int, **kw) -> dict:
    base = {
        "id": f"e{i}",
        "prompt": f"What is {i} + 1?",
        "expected_answer": str(i + 1),
        "category": "add",
        "difficulty": "easy",
    }
    return {**base, **kw}


def write(path: Path, lines: list) -> Path:
    raw = [
        x if isinstance(x, bytes) else (x if isinstance(x, str) else json.dumps(x)).encode()
        for x in lines
    ]
    path.write_bytes(b"\n".join(raw) + b"\n")
    return path


def test_normalize_prompt():
    assert normalize_prompt("  What IS\t3 +\n 4?  ") == "what is 3 + 4?"
    assert normalize_prompt("Straße") == normalize_prompt("STRASSE")  # casefold, not lower
    assert normalize_prompt("a\u00a0\u2003b") == "a b"  # unicode whitespace too


def test_load_valid_evalset(tmp_path):
    items = load_evalset(write(tmp_path / "e.jsonl", [item(1), "", item(2)]))
    assert items == [EvalItem(**item(1)), EvalItem(**item(2))]


def test_every_problem_is_named(tmp_path):
    path = write(
        tmp_path / "e.jsonl",
        [
            item(1),
            "{not json",
            {k: v for k, v in item(3).items() if k != "expected_answer"},
            item(4, id="e1"),
            item(5, prompt="  what is 1 +   1? "),
            item(6, extra=True),
            b'{"id": "\xff"}',
            item(8, category=""),
            item(9, difficulty=3),
        ],
    )
    with pytest.raises(InvalidInput) as e:
        load_evalset(path)
    got = [str(p) for p in e.value.problems]
    f = str(path)
    assert got == [
        f"{f}:2: <json>: key must be a string at line 1 column 2",
        f"{f}:3: expected_answer: Field required",
        f"{f}:4: id: duplicate id 'e1' (first on line 1)",
        f"{f}:5: prompt: duplicate prompt (first on line 1)",
        f"{f}:6: extra: Extra inputs are not permitted",
        f"{f}:7: <encoding>: invalid UTF-8 (byte 9 of the line)",
        f"{f}:8: category: String should have at least 1 character",
        f"{f}:9: difficulty: Input should be a valid string",
    ]


def test_empty_and_missing(tmp_path):
    with pytest.raises(InvalidInput, match="no eval items"):
        load_evalset(write(tmp_path / "e.jsonl", [""]))
    with pytest.raises(InvalidInput, match="No such file"):
        load_evalset(tmp_path / "none.jsonl")


def test_reservations_read_every_jsonl_below(tmp_path):
    write(tmp_path / "a.jsonl", [item(1)])
    (tmp_path / "v2").mkdir()
    write(tmp_path / "v2" / "b.jsonl", [item(2, prompt="  SAME  question ")])
    (tmp_path / "notes.txt").write_text("not an eval set")
    assert load_reservations(tmp_path).prompts == {"what is 1 + 1?", "same question"}
    write(tmp_path / "v2" / "bad.jsonl", ["{"])
    with pytest.raises(InvalidInput, match="bad.jsonl:1"):
        load_reservations(tmp_path)


def test_committed_evalsets_are_valid():
    files = sorted((REPO / "evalsets").glob("*.jsonl"))
    assert files, "evalsets/ must hold the pipeline's eval set"
    for path in files:
        items = load_evalset(path)
        assert len(items) >= 200
        assert {i.category for i in items} >= {"add", "sub", "mul"}
