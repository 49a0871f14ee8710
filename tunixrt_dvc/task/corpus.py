"""The built-in corpus: seeded "show your work" arithmetic word problems.

The work is done the way it is on paper: first the calculation with its operands aligned in
three columns (`347 + 085`, the only step that is not an equation), then one checkable equation
per column, ones first, carries and borrows written out (`4 + 8 + 1 = 13`, `3 - 1 + 10 - 8 = 4`;
a multiplication's carry gets a step of its own: `4 × 6 = 24`, `24 + 4 = 28`), then the whole
result (`347 + 85 = 432`). Copying the operands once, in reading order, and aligning them makes
every later token depend on a few tokens at fixed distances, and every equation is one small
fact: that is what makes multi-digit arithmetic learnable for a small model.

Problems are split by their *numbers*: a fixed hash of (operation, operands) reserves one key in
eight for evaluation, so no eval problem, in any wording, can be among the training traces.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from tunixrt_dvc.traces.schemas import ReasoningTrace, StoredTrace, TraceStep

GENERATOR = "arith_v1"
CATEGORIES = ("add", "sub", "mul", "two_step")
EVAL_SHARE = 8  # one operand key in EVAL_SHARE is reserved for eval sets
_NAMESPACE = uuid.UUID("6f1d3a52-3c7e-4b8e-9a51-1e0f7c2d9b10")
_EPOCH = datetime(2025, 1, 1, tzinfo=UTC)

NAMES = ("Mia", "Leo", "Ava", "Noah", "Zoe", "Omar", "Lena", "Ravi", "Iris", "Theo", "Nina", "Sam")
ITEMS = ("apples", "marbles", "stickers", "coins", "books", "cards", "shells", "pencils", "stamps")


@dataclass(frozen=True)
class Problem:
    category: str
    difficulty: str
    prompt: str
    steps: tuple[str, ...]
    answer: int
    key: str  # the operation and operands, independent of the wording


def _digits(n: int) -> list[int]:
    """Digits, ones first."""
    return [int(c) for c in reversed(str(n))]


WIDTH = 3  # columns of the written work: operands are aligned (zero-padded) to three digits


def add_steps(a: int, b: int) -> tuple[list[str], int]:
    """Column addition; returns the steps and the number of carries."""
    da, db = _digits(a), _digits(b)
    steps, carry, carries = [f"{a:0{WIDTH}d} + {b:0{WIDTH}d}"], 0, 0
    for k in range(max(WIDTH, len(da), len(db))):
        x = da[k] if k < len(da) else 0
        y = db[k] if k < len(db) else 0
        terms = [x, y] + ([carry] if carry else [])
        s = sum(terms)
        steps.append(" + ".join(map(str, terms)) + f" = {s}")
        carry = s // 10
        carries += carry
    steps.append(f"{a} + {b} = {a + b}")
    return steps, carries


def sub_steps(a: int, b: int) -> tuple[list[str], int]:
    """Column subtraction (a >= b); returns the steps and the number of borrows."""
    da, db = _digits(a), _digits(b)
    steps, borrow, borrows = [f"{a:0{WIDTH}d} - {b:0{WIDTH}d}"], 0, 0
    for k in range(max(WIDTH, len(da))):
        x = da[k] if k < len(da) else 0
        y = db[k] if k < len(db) else 0
        expr = str(x) + (" - 1" if borrow else "")
        need = x - borrow < y
        expr += (" + 10" if need else "") + f" - {y}"
        steps.append(f"{expr} = {x - borrow + 10 * need - y}")
        borrow = int(need)
        borrows += borrow
    steps.append(f"{a} - {b} = {a - b}")
    return steps, borrows


def mul_steps(a: int, b: int) -> tuple[list[str], int]:
    """Two-digit by one-digit multiplication; returns the steps and the regroupings.

    The carry is added in a step of its own (`4 × 6 = 24`, `24 + 4 = 28`): two small facts are
    far easier to learn than one that multiplies and adds at once.
    """
    ones, tens = a % 10, a // 10
    low = ones * b
    high = tens * b + low // 10
    steps = [f"{a} × {b}", f"{ones} × {b} = {low}", f"{tens} × {b} = {tens * b}"]
    if low >= 10:
        steps.append(f"{tens * b} + {low // 10} = {high}")
    steps.append(f"{a} × {b} = {a * b}")
    return steps, int(low >= 10) + int(high >= 10)


def _difficulty(regroupings: int) -> str:
    return "easy" if regroupings == 0 else "medium" if regroupings == 1 else "hard"


def _is_eval_key(key: str) -> bool:
    return int(hashlib.sha256(key.encode()).hexdigest(), 16) % EVAL_SHARE == 0


def _make(rng: random.Random, category: str) -> Problem:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    if category == "add":
        a, b = rng.randint(10, 999), rng.randint(10, 999)
        steps, r = add_steps(a, b)
        prompt = rng.choice(
            (
                f"{name} has {a} {item}. {name} finds {b} more. "
                f"How many {item} does {name} have now?",
                f"A shop had {a} {item} and got {b} more. How many {item} does the shop have now?",
                f"{name} collected {a} {item} on Monday and {b} on Tuesday. "
                f"How many {item} is that in all?",
            )
        )
        return Problem(category, _difficulty(r), prompt, tuple(steps), a + b, f"add:{a}:{b}")
    if category == "sub":
        a, b = sorted((rng.randint(10, 999), rng.randint(10, 999)), reverse=True)
        steps, r = sub_steps(a, b)
        prompt = rng.choice(
            (
                f"{name} had {a} {item} and gave away {b}. How many {item} are left?",
                f"A box held {a} {item}. {b} were taken out. How many {item} are still in the box?",
                f"{name} needs {a} {item} and already has {b}. "
                f"How many more {item} does {name} need?",
            )
        )
        return Problem(category, _difficulty(r), prompt, tuple(steps), a - b, f"sub:{a}:{b}")
    if category == "mul":
        a, b = rng.randint(10, 99), rng.randint(2, 9)
        steps, r = mul_steps(a, b)
        prompt = rng.choice(
            (
                f"{name} buys {b} bags with {a} {item} in each bag. How many {item} is that?",
                f"There are {a} {item} in a pack. How many {item} are in {b} packs?",
                f"{name} puts {a} {item} on each of {b} shelves. "
                f"How many {item} are on the shelves?",
            )
        )
        return Problem(category, _difficulty(r), prompt, tuple(steps), a * b, f"mul:{a}:{b}")
    # two_step: a multiplication or an addition, then an addition or a subtraction.
    kind = rng.choice(("add_sub", "sub_add", "mul_add", "mul_sub"))
    if kind.startswith("mul"):
        a, b = rng.randint(10, 99), rng.randint(2, 9)
        s1, r1 = mul_steps(a, b)
        mid = a * b
        text1 = f"{name} bought {b} packs of {a} {item}"
    elif kind == "add_sub":
        a, b = rng.randint(10, 599), rng.randint(10, 399)
        s1, r1 = add_steps(a, b)
        mid = a + b
        text1 = f"{name} had {a} {item} and found {b} more"
    else:
        a, b = sorted((rng.randint(10, 999), rng.randint(10, 999)), reverse=True)
        s1, r1 = sub_steps(a, b)
        mid = a - b
        text1 = f"{name} had {a} {item} and gave away {b}"
    if kind.endswith("add"):
        c = rng.randint(10, max(10, 999 - mid))
        s2, r2 = add_steps(mid, c)
        answer = mid + c
        text2 = f"then got {c} more"
    else:
        c = rng.randint(1, mid) if mid >= 1 else 0
        s2, r2 = sub_steps(mid, c)
        answer = mid - c
        text2 = f"then gave {c} to a friend"
    prompt = f"{text1}, {text2}. How many {item} does {name} have now?"
    return Problem(
        category, _difficulty(r1 + r2 + 1), prompt, tuple(s1 + s2), answer, f"{kind}:{a}:{b}:{c}"
    )


def problems(*, seed: int, split: str) -> Iterator[Problem]:
    """An endless, seeded stream of one split's problems ("train" or "eval"), categories in turn."""
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', not {split!r}")
    rng = random.Random(f"{GENERATOR}:{split}:{seed}")
    want_eval = split == "eval"
    k = 0
    while True:
        p = _make(rng, CATEGORIES[k % len(CATEGORIES)])
        if _is_eval_key(p.key) == want_eval:
            k += 1
            yield p


def _step_type(step: str, *, last: bool) -> str:
    return "setup" if "=" not in step else "result" if last else "column"


def to_trace(p: Problem) -> ReasoningTrace:
    n = len(p.steps)
    return ReasoningTrace(
        trace_version="1.0",
        prompt=p.prompt,
        final_answer=str(p.answer),
        steps=[
            TraceStep(i=i, type=_step_type(s, last=i == n - 1), content=s)
            for i, s in enumerate(p.steps)
        ],
        meta={
            "generator": GENERATOR,
            "category": p.category,
            "difficulty": p.difficulty,
            "tags": [p.category, p.difficulty],
        },
    )


def traces(*, n: int, seed: int) -> Iterator[StoredTrace]:
    """`n` training traces with deterministic ids (uuid5) and creation times (one second apart)."""
    for i, p in zip(range(n), problems(seed=seed, split="train"), strict=False):
        yield StoredTrace(
            id=str(uuid.uuid5(_NAMESPACE, f"{GENERATOR}:{seed}:{i}")),
            created_at=_EPOCH + timedelta(seconds=i),
            trace=to_trace(p),
        )


def eval_items(*, n: int, seed: int) -> list[dict]:
    """`n` eval items with distinct prompts, balanced over the categories."""
    out, seen = [], set()
    for p in problems(seed=seed, split="eval"):
        if p.prompt in seen:
            continue
        seen.add(p.prompt)
        out.append(
            {
                "id": f"eval_v1-{len(out):04d}",
                "prompt": p.prompt,
                "expected_answer": str(p.answer),
                "category": p.category,
                "difficulty": p.difficulty,
            }
        )
        if len(out) == n:
            return out
    raise AssertionError("unreachable: the problem stream is endless")
