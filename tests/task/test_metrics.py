"""Aggregation: summaries, the eval metrics and the accuracy plot rows."""

from __future__ import annotations

import json

import pytest
from support.scored import scored_item

from tunixrt_dvc.task.metrics import accuracy_plot_rows, eval_metrics, summarize


def test_summarize() -> None:
    items = [
        scored_item(0, correct=True, category="add", difficulty="easy", tokens=10),
        scored_item(1, correct=False, category="add", difficulty="hard", tokens=20),
        scored_item(2, correct=True, category="mul", difficulty="hard", tokens=30),
    ]
    s = summarize(items)
    assert s["n"] == 3
    assert s["accuracy"] == pytest.approx(2 / 3)
    assert s["format_compliance"] == pytest.approx(2 / 3)
    assert s["step_accuracy"] == pytest.approx(5 / 6)  # pooled over all equation steps
    assert s["answer_follows_rate"] == pytest.approx(2 / 3)
    assert s["mean_gen_tokens"] == pytest.approx(20.0)
    assert s["mean_equation_steps"] == pytest.approx(2.0)
    assert s["accuracy_by_category"] == {"add": 0.5, "mul": 1.0}
    assert s["accuracy_by_difficulty"] == {"easy": 1.0, "hard": 0.5}
    with pytest.raises(ValueError):
        summarize([])


def test_eval_metrics_shape_rounding_and_delta() -> None:
    before = [scored_item(i, correct=False) for i in range(3)]
    after = [
        scored_item(0, correct=True),
        scored_item(1, correct=True),
        scored_item(2, correct=False),
    ]
    m = eval_metrics(before, after)
    assert set(m) == {"before", "after", "delta"}
    assert m["after"]["accuracy"] == 0.6667  # rounded to 4 decimals
    assert m["delta"]["accuracy"] == 0.6667
    assert m["delta"]["accuracy_by_category"] == {"add": 0.6667}
    assert "n" not in m["delta"] and m["before"]["n"] == 3
    # Summaries are accepted too, and the JSON is stable.
    assert eval_metrics(summarize(before), summarize(after)) == m
    assert json.dumps(m, sort_keys=True) == json.dumps(eval_metrics(before, after), sort_keys=True)


def test_accuracy_plot_rows() -> None:
    before = [
        scored_item(0, correct=False, category="mul"),
        scored_item(1, correct=False, category="add"),
    ]
    after = [
        scored_item(0, correct=True, category="mul"),
        scored_item(1, correct=False, category="add"),
    ]
    assert accuracy_plot_rows(before, after) == [
        {"category": "add", "model": "before", "accuracy": 0.0},
        {"category": "add", "model": "after", "accuracy": 0.0},
        {"category": "mul", "model": "before", "accuracy": 0.0},
        {"category": "mul", "model": "after", "accuracy": 1.0},
    ]
