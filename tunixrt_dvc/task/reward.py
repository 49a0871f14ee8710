"""The RL reward: the eval's scorer, read as numbers (nanochat's pattern: one scorer for both).

`evaluate` scores a generation into a `ScoredItem`; the reward weighs three of its judgements,
each in [0, 1], so a policy is rewarded for exactly what the eval counts.
"""

from __future__ import annotations

from collections.abc import Mapping

from tunixrt_dvc.task.scoring import ScoredItem

COMPONENTS = ("correct", "well_formed", "steps")


def reward_components(scored: ScoredItem, *, stopped: bool) -> dict[str, float]:
    """`correct`: the answer is right; `well_formed`: the recipe's exact form and the turn ended
    with the stop token (a generation cut off at the length limit is not); `steps`: the share of
    the equation steps that are true (0 without any)."""
    steps = scored.steps_correct / scored.steps_total if scored.steps_total else 0.0
    return {
        "correct": float(scored.correct),
        "well_formed": float(scored.well_formed and stopped),
        "steps": steps,
    }


def weighted_reward(components: Mapping[str, float], weights: Mapping[str, float]) -> float:
    return sum(weights[name] * components[name] for name in COMPONENTS)
