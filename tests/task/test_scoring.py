"""Scoring: item scores against their eval items, and the per-item files."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest
from support.scored import scored_item

from tunixrt_dvc.errors import InvalidInput
from tunixrt_dvc.task.scoring import read_scored, score_item
from tunixrt_dvc.traces.schemas import dumps


@dataclass
class Item:
    id: str
    prompt: str
    expected_answer: str
    category: str = "add"
    difficulty: str = "easy"


@dataclass
class Parsed:
    """The shape of formatting.ParsedResponse."""

    steps: list[str] = field(default_factory=list)
    answer: str | None = None
    well_formed: bool = True


def test_score_item_full_marks() -> None:
    item = Item("e1", "Mia has 347 coins and finds 285. How many now?", "632")
    parsed = Parsed(
        steps=["7 + 5 = 12", "4 + 8 + 1 = 13", "3 + 2 + 1 = 6", "347 + 285 = 632"], answer="632"
    )
    s = score_item(item=item, generation="<reasoning>...</reasoning>", parsed=parsed, gen_tokens=40)
    assert (s.correct, s.well_formed, s.answer_follows) == (True, True, True)
    assert (s.steps_total, s.steps_correct, s.gen_tokens) == (4, 4, 40)
    assert s.expected_answer == "632" and s.answer == "632"


def test_score_item_normalizes_answer_and_expected() -> None:
    item = Item("e1", "p", "1000")
    s = score_item(
        item=item, generation="", parsed=Parsed(["999 + 1 = 1,000"], "1,000.0"), gen_tokens=1
    )
    assert s.correct and s.answer_follows


def test_score_item_integer_expected_answer() -> None:
    item = Item("e1", "p", 42)  # an eval set may hold integers
    s = score_item(item=item, generation="", parsed=Parsed(["6 × 7 = 42"], "42"), gen_tokens=1)
    assert s.correct and s.expected_answer == "42"


def test_answer_follows_requires_correct_work_ending_in_the_answer() -> None:
    item = Item("e1", "p", "28")

    def follows(steps: list[str], answer: str | None) -> bool:
        return score_item(
            item=item, generation="", parsed=Parsed(steps, answer), gen_tokens=1
        ).answer_follows

    assert follows(["4 × 6 = 24", "24 + 4 = 28"], "28")
    assert not follows(["4 × 6 = 25", "25 + 3 = 28"], "28")  # a wrong step
    assert not follows(["4 × 6 = 24", "24 + 4 = 28"], "24")  # answer is not the last result
    assert not follows([], "28")  # no work at all
    assert not follows(["4 × 6 = 24", "24 + 4 = 28"], None)
    # Prose steps are ignored; the last *equation* carries the result.
    assert follows(["4 × 6 = 24", "24 + 4 = 28", "so that is the total"], "28")
    # Work can be consistent but wrong: answer_follows without correct.
    wrong = score_item(
        item=Item("e2", "p", "30"), generation="", parsed=Parsed(["4 + 4 = 8"], "8"), gen_tokens=1
    )
    assert wrong.answer_follows and not wrong.correct


def test_score_item_counts_only_equations() -> None:
    s = score_item(
        item=Item("e1", "p", "13"),
        generation="",
        parsed=Parsed(["first the ones", "7 + 5 = 12", "1 + 0 = 2", "12"], "2", False),
        gen_tokens=9,
    )
    assert (s.steps_total, s.steps_correct) == (2, 1)
    # The answer is the last equation's result, but that equation is wrong.
    assert not s.correct and not s.well_formed and not s.answer_follows


def test_no_answer_is_wrong_not_an_error() -> None:
    s = score_item(
        item=Item("e1", "p", "5"), generation="??", parsed=Parsed([], None, False), gen_tokens=3
    )
    assert not s.correct and s.answer is None and s.steps_total == 0


def test_read_scored_round_trip_and_errors(tmp_path) -> None:
    items = [scored_item(0, correct=True), scored_item(1, correct=False)]
    good = tmp_path / "after.jsonl"
    good.write_text("".join(dumps(s) + "\n" for s in items), encoding="utf-8")
    assert read_scored(good) == items

    bad = tmp_path / "bad.jsonl"
    record = json.loads(dumps(items[0]))
    del record["correct"]
    bad.write_text(
        dumps(items[0]) + "\n{oops\n" + json.dumps(record) + "\n" + dumps(items[0]) + "\n"
    )
    with pytest.raises(InvalidInput) as e:
        read_scored(bad)
    msg = str(e.value.message)
    assert f"{bad}:2: <json>:" in msg
    assert f"{bad}:3: correct: Field required" in msg
    assert f"{bad}:4: id: duplicate id 'e0' (first on line 1)" in msg

    with pytest.raises(InvalidInput, match="not found"):
        read_scored(tmp_path / "missing.jsonl")


@pytest.mark.parametrize("recipe", ["reasoning_tags", "tunix_rt", "answer_only"])
def test_real_recipes_on_the_built_in_task(recipe: str) -> None:
    """The corpus's own work, rendered and parsed by each recipe, scores full marks."""
    import itertools

    from tunixrt_dvc.task.corpus import problems
    from tunixrt_dvc.text.recipes import get_recipe
    from tunixrt_dvc.traces.schemas import Response

    r = get_recipe(recipe)
    for k, p in enumerate(itertools.islice(problems(seed=0, split="eval"), 200)):
        text = r.render(Response(steps=list(p.steps), final_answer=str(p.answer)))
        item = Item(f"e{k}", p.prompt, str(p.answer), p.category, p.difficulty)
        s = score_item(item=item, generation=text, parsed=r.parse(text), gen_tokens=1)
        assert s.correct and s.well_formed, (recipe, text)
        if recipe == "answer_only":
            assert s.steps_total == 0 and not s.answer_follows
        else:
            n_eq = sum("=" in step for step in p.steps)  # the corpus may also restate the sum
            assert n_eq >= 2 and s.steps_total == s.steps_correct == n_eq and s.answer_follows
        # One wrong digit in the last column step is caught, and the answer no longer follows.
        if recipe != "answer_only":
            bad = list(p.steps)
            lhs, rhs = bad[-1].rsplit("=", 1)
            bad[-1] = f"{lhs}={int(rhs) + 1}"
            text = r.render(Response(steps=bad, final_answer=str(p.answer)))
            s = score_item(item=item, generation=text, parsed=r.parse(text), gen_tokens=1)
            assert s.correct and s.steps_correct == n_eq - 1 and not s.answer_follows
