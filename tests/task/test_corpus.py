"""The built-in corpus: checkable work, honest difficulty, and no eval problem among the traces."""

import itertools
import json
from pathlib import Path

from tunixrt_dvc.task import corpus
from tunixrt_dvc.task.arithmetic import check_equation, equation_result
from tunixrt_dvc.task.evalsets import load_evalset, normalize_prompt

EVALSET = Path(__file__).resolve().parents[2] / "evalsets" / "eval_v1.jsonl"


def test_every_equation_step_is_correct_and_the_last_gives_the_answer():
    for p in itertools.islice(corpus.problems(seed=3, split="train"), 4000):
        equations = [s for s in p.steps if check_equation(s) is not None]
        assert all(check_equation(s) for s in equations), p
        assert equation_result(equations[-1]) == p.answer, p
        # Only the setup lines (the aligned operands) are not equations.
        assert all("=" not in s for s in p.steps if check_equation(s) is None), p


def test_column_steps_write_out_carries_and_borrows_in_lines_of_fixed_width():
    steps, carries = corpus.add_steps(347, 85)
    assert steps == ["347+085", "7+5+0=12", "4+8+1=13", "3+0+1=04", "347+085=432"]
    assert carries == 2
    steps, borrows = corpus.sub_steps(305, 298)
    assert steps == ["305-298", "5-0-8+10=7", "0-1-9+10=0", "3-1-2+00=0", "305-298=7"]
    assert borrows == 2
    steps, regroupings = corpus.mul_steps(47, 6)
    assert steps == ["47×6", "7×6=42", "4×6=24", "4+4=08", "2+0=02", "47×6=282"]
    assert regroupings == 2
    assert corpus.mul_steps(23, 3) == (
        ["23×3", "3×3=09", "2×3=06", "6+0=06", "0+0=00", "23×3=69"],
        0,
    )
    # Every column line of an operation has one length, whatever the digits and carries.
    for a, b in ((999, 999), (100, 11), (10, 10)):
        for lines in (corpus.add_steps(a, b)[0][1:-1], corpus.sub_steps(a, b)[0][1:-1]):
            assert len({len(line) for line in lines}) == 1, lines


def test_difficulty_follows_the_regroupings():
    for p in itertools.islice(corpus.problems(seed=0, split="train"), 2000):
        if p.category == "add":
            a, b = map(int, p.key.split(":")[1:])
            carries = corpus.add_steps(a, b)[1]
            want = "easy" if carries == 0 else "medium" if carries == 1 else "hard"
            assert p.difficulty == want
        if p.category == "two_step":
            assert p.difficulty in ("medium", "hard")


def test_operands_stay_within_the_task():
    for p in itertools.islice(corpus.problems(seed=1, split="train"), 4000):
        nums = [int(x) for x in p.key.split(":")[1:]]
        assert all(0 <= n <= 999 for n in nums), p
        if p.category == "mul":
            assert 10 <= nums[0] <= 99 and 2 <= nums[1] <= 9
        assert 0 <= p.answer <= 1998


def test_streams_are_deterministic_and_splits_disjoint():
    a = list(itertools.islice(corpus.problems(seed=0, split="train"), 500))
    b = list(itertools.islice(corpus.problems(seed=0, split="train"), 500))
    assert a == b
    train_keys = {p.key for p in itertools.islice(corpus.problems(seed=0, split="train"), 20000)}
    eval_keys = {p.key for p in itertools.islice(corpus.problems(seed=0, split="eval"), 2000)}
    assert not train_keys & eval_keys


def test_traces_have_stable_ids_and_times():
    t1 = list(corpus.traces(n=50, seed=0))
    t2 = list(corpus.traces(n=50, seed=0))
    assert t1 == t2
    assert len({t.id for t in t1}) == 50
    assert [t.created_at for t in t1] == sorted(t.created_at for t in t1)
    assert t1[0].trace.meta["tags"][0] in corpus.CATEGORIES


def test_committed_eval_set_is_valid_and_reproducible():
    items = load_evalset(EVALSET)
    assert len(items) >= 200
    assert {i.category for i in items} == set(corpus.CATEGORIES)
    assert {i.difficulty for i in items} >= {"easy", "medium", "hard"}
    regenerated = corpus.eval_items(n=len(items), seed=0)
    assert [json.loads(line) for line in EVALSET.read_text().splitlines()] == regenerated


def test_no_eval_prompt_among_the_default_training_traces():
    eval_prompts = {normalize_prompt(i.prompt) for i in load_evalset(EVALSET)}
    for t in corpus.traces(n=20000, seed=0):
        assert normalize_prompt(t.trace.prompt) not in eval_prompts
