"""Scored eval items for tests of what reads them (metrics, per-item files)."""

from __future__ import annotations

from tunixrt_dvc.task.scoring import ScoredItem


def scored_item(
    i: int, *, correct: bool, category: str = "add", difficulty: str = "easy", tokens: int = 10
) -> ScoredItem:
    return ScoredItem(
        id=f"e{i}",
        prompt=f"p{i}",
        category=category,
        difficulty=difficulty,
        expected_answer="1",
        generation="g",
        steps=["1 = 1"],
        answer="1" if correct else "2",
        correct=correct,
        well_formed=correct,
        steps_total=2,
        steps_correct=2 if correct else 1,
        answer_follows=correct,
        gen_tokens=tokens,
    )
