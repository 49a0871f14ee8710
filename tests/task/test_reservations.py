"""No eval computation is ever worked in training: not by the generator, not through the export."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from tunixrt_dvc.task import corpus
from tunixrt_dvc.task.evalsets import load_evalset
from tunixrt_dvc.task.reservations import load_reservations, work_computations
from tunixrt_dvc.traces.export import export
from tunixrt_dvc.traces.schemas import ReasoningTrace, StoredTrace, TraceStep, dumps

EVALSETS = Path(__file__).resolve().parents[2] / "evalsets"


@pytest.fixture(scope="module")
def reserved():
    return load_reservations(EVALSETS)


def test_every_eval_v1_item_is_read_back_into_its_computations(reserved):
    items = load_evalset(EVALSETS / "eval_v1.jsonl")
    parsed = [corpus.prompt_computations(it.prompt) for it in items]
    assert all(p is not None for p in parsed)
    two_step = [p for p, it in zip(parsed, items, strict=True) if it.category == "two_step"]
    assert two_step and all(len(p) == 2 for p in two_step)
    assert reserved.computations == {c for p in parsed for c in p}


def test_the_default_corpus_works_no_eval_computation(reserved):
    mul_items = {
        c for it in load_evalset(EVALSETS / "eval_v1.jsonl") if it.category == "mul"
        for c in corpus.prompt_computations(it.prompt)
    }  # fmt: skip
    for t in corpus.traces(n=20000, seed=0, reserved=reserved.computations):
        found = work_computations(s.content for s in t.trace.steps)
        assert found  # the check reads the work: every trace computes something
        assert not found & reserved.computations, t.trace.prompt
    # Without the reservation the same stream works out almost every eval multiplication.
    leaked = set()
    for p in itertools.islice(corpus.problems(seed=0, split="train"), 20000):
        leaked |= set(p.computations) & mul_items
    assert len(leaked) >= 0.9 * len(mul_items)


def test_work_computations_read_binary_equations_only():
    steps = ["347 + 085", "7 + 5 = 12", "4 + 8 + 1 = 13", "Tens: 23 × 4 = 92.", "92 \u2212 7 = 85"]
    steps += ["12 x 3 = 36", "the answer is 5 = 5"]
    assert work_computations(steps) == {"add:7:5", "mul:23:4", "sub:92:7", "mul:12:3"}


def _stored(k: int, prompt: str, steps: list[str], answer: str) -> StoredTrace:
    return StoredTrace(
        id=f"00000000-0000-4000-8000-{k:012d}",
        created_at="2025-01-01T00:00:00Z",
        trace=ReasoningTrace(
            trace_version="1.0",
            prompt=prompt,
            final_answer=answer,
            steps=[TraceStep(i=i, type="step", content=s) for i, s in enumerate(steps)],
        ),
    )


def test_the_export_drops_traces_that_work_an_eval_computation(tmp_path, reserved):
    item = next(it for it in load_evalset(EVALSETS / "eval_v1.jsonl") if it.category == "two_step")
    first, second = corpus.prompt_computations(item.prompt)
    op, x, y = first.split(":")
    sign = {"add": "+", "sub": "-", "mul": "×"}[op]
    result = {"add": int(x) + int(y), "sub": int(x) - int(y), "mul": int(x) * int(y)}[op]
    traces = [
        _stored(1, item.prompt, ["1 + 1 = 2"], "2"),  # the eval prompt itself
        # Another wording, but the work computes the eval problem's first operation.
        _stored(2, "Some other question?", [f"{x} {sign} {y} = {result}", "done"], str(result)),
        _stored(3, "A clean question?", ["11 + 22 = 33"], "33"),
    ]
    src = tmp_path / "t.jsonl"
    src.write_text("".join(dumps(t) + "\n" for t in traces))
    out = tmp_path / "examples.jsonl"
    report = export(str(src), out, reserved=load_reservations(EVALSETS))
    assert (report.written, report.dropped_contaminated) == (1, 2)
    assert [json.loads(line)["prompt"] for line in out.read_text().splitlines()] == [
        "A clean question?"
    ]
