"""The RL reward reads the eval's scorer: what the eval counts is what RL is paid for."""

from __future__ import annotations

import pytest

from tunixrt_dvc.params import RewardWeights
from tunixrt_dvc.rl.prompts import RLPrompt
from tunixrt_dvc.task.corpus import add_steps
from tunixrt_dvc.task.reward import COMPONENTS, reward_components, weighted_reward
from tunixrt_dvc.task.scoring import score_item
from tunixrt_dvc.text.chat import END_OF_TURN
from tunixrt_dvc.text.recipes import get_recipe
from tunixrt_dvc.traces.schemas import Response

WEIGHTS = {"correct": 1.0, "well_formed": 0.25, "steps": 0.5}


def _reward(generation: str, expected: str) -> dict[str, float]:
    parse = get_recipe("reasoning_tags").parse
    item = RLPrompt(id="x", prompt="p", expected_answer=expected)
    scored = score_item(item=item, generation=generation, parsed=parse(generation), gen_tokens=0)
    return reward_components(scored, stopped=generation.endswith(END_OF_TURN))


def _render(steps: list[str], answer: str) -> str:
    return get_recipe("reasoning_tags").render(Response(steps=steps, final_answer=answer))


def test_a_right_well_formed_stopped_answer_gets_every_component():
    steps, result = add_steps(347, 85)
    got = _reward(_render(steps, str(result)) + END_OF_TURN, str(result))
    assert got == {"correct": 1.0, "well_formed": 1.0, "steps": 1.0}
    assert weighted_reward(got, WEIGHTS) == pytest.approx(1.75)


def test_each_fault_costs_its_own_component():
    steps, result = add_steps(347, 85)
    right = _render(steps, str(result))
    # The answer is wrong but the work is right.
    assert _reward(_render(steps, str(result + 1)) + END_OF_TURN, str(result)) == {
        "correct": 0.0,
        "well_formed": 1.0,
        "steps": 1.0,
    }
    # Cut off at the length limit: no stop token, so not well formed (still correct).
    assert _reward(right, str(result))["well_formed"] == 0.0
    # One false equation of the column work.
    wrong = [steps[0], steps[1].replace("=", "=1", 1), *steps[2:]]
    got = _reward(_render(wrong, str(result)) + END_OF_TURN, str(result))
    n = sum(1 for s in steps if "=" in s)
    assert got["steps"] == pytest.approx((n - 1) / n) and got["correct"] == 1.0
    # Not the recipe's form at all: nothing but what can be salvaged.
    assert _reward("the answer is 432" + END_OF_TURN, "432") == {
        "correct": 0.0,
        "well_formed": 0.0,
        "steps": 0.0,
    }


def test_weights_cover_every_component():
    assert set(WEIGHTS) == set(COMPONENTS) == set(RewardWeights.model_fields)
    assert weighted_reward(dict.fromkeys(COMPONENTS, 0.0), WEIGHTS) == 0.0
