"""Scoring: number normalization, the equation checker, item scores, summaries and metrics."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest

from tunixrt_dvc.errors import InvalidInput
from tunixrt_dvc.task.scoring import (
    ScoredItem,
    accuracy_plot_rows,
    check_equation,
    eval_metrics,
    normalize_number,
    read_scored,
    score_item,
    summarize,
)
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


def _scored(
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


def test_summarize() -> None:
    items = [
        _scored(0, correct=True, category="add", difficulty="easy", tokens=10),
        _scored(1, correct=False, category="add", difficulty="hard", tokens=20),
        _scored(2, correct=True, category="mul", difficulty="hard", tokens=30),
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
    before = [_scored(i, correct=False) for i in range(3)]
    after = [_scored(0, correct=True), _scored(1, correct=True), _scored(2, correct=False)]
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
    before = [_scored(0, correct=False, category="mul"), _scored(1, correct=False, category="add")]
    after = [_scored(0, correct=True, category="mul"), _scored(1, correct=False, category="add")]
    assert accuracy_plot_rows(before, after) == [
        {"category": "add", "model": "before", "accuracy": 0.0},
        {"category": "add", "model": "after", "accuracy": 0.0},
        {"category": "mul", "model": "before", "accuracy": 0.0},
        {"category": "mul", "model": "after", "accuracy": 1.0},
    ]


def test_read_scored_round_trip_and_errors(tmp_path) -> None:
    items = [_scored(0, correct=True), _scored(1, correct=False)]
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
