"""Which items improved or regressed between two models, largest change first."""

from __future__ import annotations

from collections.abc import Sequence

from tunixrt_dvc.task.scoring import ScoredItem


def _quality(s: ScoredItem) -> tuple[float, ...]:
    """What an item is worth, most important first: the answer, then the work, then the format."""
    step_share = s.steps_correct / s.steps_total if s.steps_total else 0.0
    return (float(s.correct), float(s.answer_follows), step_share, float(s.well_formed))


def changes(
    pairs: Sequence[tuple[ScoredItem, ScoredItem]],
) -> tuple[list[tuple[ScoredItem, ScoredItem]], list[tuple[ScoredItem, ScoredItem]]]:
    """(improvements, regressions), largest change first, ties by id.

    Items are compared lexicographically on (correct, answer_follows, share of equation steps
    correct, well_formed).
    """
    ups, downs = [], []
    for b, a in pairs:
        diff = tuple(x - y for x, y in zip(_quality(a), _quality(b), strict=True))
        if _quality(a) > _quality(b):
            ups.append((diff, b.id, (b, a)))
        elif _quality(a) < _quality(b):
            downs.append((diff, b.id, (b, a)))
    ups.sort(key=lambda t: (tuple(-x for x in t[0]), t[1]))
    downs.sort(key=lambda t: (t[0], t[1]))
    return [p for *_, p in ups], [p for *_, p in downs]
