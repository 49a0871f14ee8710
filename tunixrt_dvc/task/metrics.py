"""Aggregating scored items: one model's summary, the eval stage's DVC metrics and plot rows.

Definitions of the per-item scores are in `tunixrt_dvc.task.scoring` (and docs/eval-loop.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tunixrt_dvc.task.scoring import ScoredItem


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
