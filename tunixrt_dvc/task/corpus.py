"""The built-in corpus: seeded "show your work" arithmetic word problems.

The work is done the way it is on paper, in lines of fixed width: first the calculation with its
operands aligned in three columns (`347+085`, a setup line, not an equation), then one checkable
equation per column, ones first, with the carry or borrow always written, even when it is 0
(`7+5+0=12`, `4+8+1=13`; `5-0-8+10=7`), then the whole result (`347+085=432`). A two-step problem
starts with a plan line that holds all three of its numbers (`347+085-123`), then works both
operations (`347+085`, ..., `432-123`, ...). Every line of a kind has the same length, so every
digit a line needs sits at the same distance from it whatever the numbers are, and every equation
is one small fact: that is what makes multi-digit arithmetic learnable for a small model, and
learnable reliably from any seed (docs/benchmarks.md has the seed table).

Problems are split by their *numbers*: a fixed hash of (operation, operands) reserves one key in
eight for evaluation, so no eval problem, in any wording, can be among the training traces.
"""

from __future__ import annotations

import hashlib
import random
import re
import string
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
    computations: tuple[str, ...]  # every operation the work carries out (`computation` keys)


def _digits(n: int) -> list[int]:
    """Digits, ones first."""
    return [int(c) for c in reversed(str(n))]


WIDTH = 3  # columns of the written work: operands are aligned (zero-padded) to three digits


def add_steps(a: int, b: int) -> tuple[list[str], int]:
    """Column addition; returns the steps and the number of carries.

    `347+085`, then one line per column, ones first, `x+y+c=ss` (the carry in and the two-digit
    sum always written), then `347+085=432`.
    """
    da, db = _digits(a), _digits(b)
    steps, carry, carries = [f"{a:0{WIDTH}d}+{b:0{WIDTH}d}"], 0, 0
    for k in range(max(WIDTH, len(da), len(db))):
        x = da[k] if k < len(da) else 0
        y = db[k] if k < len(db) else 0
        s = x + y + carry
        steps.append(f"{x}+{y}+{carry}={s:02d}")
        carry = s // 10
        carries += carry
    steps.append(f"{a:0{WIDTH}d}+{b:0{WIDTH}d}={a + b}")
    return steps, carries


def sub_steps(a: int, b: int) -> tuple[list[str], int]:
    """Column subtraction (a >= b); returns the steps and the number of borrows.

    `305-298`, then per column `x-b-y+tt=r`: the borrow in (0 or 1) and the borrow out (00 or
    10) always written, then the whole result, `305-298=7`.
    """
    da, db = _digits(a), _digits(b)
    steps, borrow, borrows = [f"{a:0{WIDTH}d}-{b:0{WIDTH}d}"], 0, 0
    for k in range(max(WIDTH, len(da))):
        x = da[k] if k < len(da) else 0
        y = db[k] if k < len(db) else 0
        need = x - borrow < y
        steps.append(f"{x}-{borrow}-{y}+{10 * need:02d}={x - borrow + 10 * need - y}")
        borrow = int(need)
        borrows += borrow
    steps.append(f"{a:0{WIDTH}d}-{b:0{WIDTH}d}={a - b}")
    return steps, borrows


def mul_steps(a: int, b: int) -> tuple[list[str], int]:
    """Two-digit by one-digit multiplication; returns the steps and the regroupings.

    Always four lines: `o×b=pp` and `t×b=qq` (two-digit products), then the ones digit of qq
    plus the carry of pp, and its tens digit plus the carry of that, each `d+c=ss`.
    """
    ones, tens = a % 10, a // 10
    low, t = ones * b, tens * b
    s1 = t % 10 + low // 10
    s2 = t // 10 + s1 // 10
    steps = [
        f"{a}×{b}",
        f"{ones}×{b}={low:02d}",
        f"{tens}×{b}={t:02d}",
        f"{t % 10}+{low // 10}={s1:02d}",
        f"{t // 10}+{s1 // 10}={s2:02d}",
        f"{a}×{b}={a * b}",
    ]
    high = t + low // 10
    return steps, int(low >= 10) + int(high >= 10)


def _difficulty(regroupings: int) -> str:
    return "easy" if regroupings == 0 else "medium" if regroupings == 1 else "hard"


def _is_eval_key(key: str) -> bool:
    return int(hashlib.sha256(key.encode()).hexdigest(), 16) % EVAL_SHARE == 0


# The wordings, as str.format templates over {name}, {item} and the operands {a}, {b}, {c}.
TEMPLATES = {
    "add": (
        "{name} has {a} {item}. {name} finds {b} more. How many {item} does {name} have now?",
        "A shop had {a} {item} and got {b} more. How many {item} does the shop have now?",
        "{name} collected {a} {item} on Monday and {b} on Tuesday. How many {item} is that in all?",
    ),
    "sub": (
        "{name} had {a} {item} and gave away {b}. How many {item} are left?",
        "A box held {a} {item}. {b} were taken out. How many {item} are still in the box?",
        "{name} needs {a} {item} and already has {b}. How many more {item} does {name} need?",
    ),
    "mul": (
        "{name} buys {b} bags with {a} {item} in each bag. How many {item} is that?",
        "There are {a} {item} in a pack. How many {item} are in {b} packs?",
        "{name} puts {a} {item} on each of {b} shelves. How many {item} are on the shelves?",
    ),
}
# two_step: a first operation, then an addition or a subtraction, in one sentence.
TWO_STEP_KINDS = ("add_sub", "sub_add", "mul_add", "mul_sub")
FIRST = {
    "mul": "{name} bought {b} packs of {a} {item}",
    "add": "{name} had {a} {item} and found {b} more",
    "sub": "{name} had {a} {item} and gave away {b}",
}
SECOND = {"add": "then got {c} more", "sub": "then gave {c} to a friend"}
TWO_STEP = "{first}, {second}. How many {item} does {name} have now?"
_APPLY = {"add": lambda x, y: x + y, "sub": lambda x, y: x - y, "mul": lambda x, y: x * y}
_SYMBOL = {"add": "+", "sub": "-"}
_STEPS = {"add": lambda x, y: add_steps(x, y), "sub": lambda x, y: sub_steps(x, y)}


def computation(op: str, x: int, y: int) -> str:
    """The key of one operation on two numbers, as traces of any wording work it out."""
    return f"{op}:{x}:{y}"


def _make(rng: random.Random, category: str) -> Problem:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    if category in ("add", "sub", "mul"):
        if category == "add":
            a, b = rng.randint(10, 999), rng.randint(10, 999)
        elif category == "sub":
            a, b = sorted((rng.randint(10, 999), rng.randint(10, 999)), reverse=True)
        else:
            a, b = rng.randint(10, 99), rng.randint(2, 9)
        steps, r = {**_STEPS, "mul": mul_steps}[category](a, b)
        prompt = rng.choice(TEMPLATES[category]).format(name=name, item=item, a=a, b=b)
        key = computation(category, a, b)
        answer = _APPLY[category](a, b)
        return Problem(category, _difficulty(r), prompt, tuple(steps), answer, key, (key,))
    kind = rng.choice(TWO_STEP_KINDS)
    op1 = "mul" if kind.startswith("mul") else kind.split("_")[0]
    op2 = kind.split("_")[1]
    if op1 == "mul":
        a, b = rng.randint(10, 99), rng.randint(2, 9)
        s1, r1 = mul_steps(a, b)
    elif op1 == "add":
        a, b = rng.randint(10, 599), rng.randint(10, 399)
        s1, r1 = add_steps(a, b)
    else:
        a, b = sorted((rng.randint(10, 999), rng.randint(10, 999)), reverse=True)
        s1, r1 = sub_steps(a, b)
    mid = _APPLY[op1](a, b)
    if op2 == "add":
        c = rng.randint(10, max(10, 999 - mid))
    else:
        c = rng.randint(1, mid) if mid >= 1 else 0
    s2, r2 = _STEPS[op2](mid, c)
    # The plan line copies all three numbers out of the prompt at the start, where a and b are
    # copied for every problem; the second setup then takes c from the work, not from the prompt.
    plan = f"{s1[0]}{_SYMBOL[op2]}{c:0{WIDTH}d}"
    prompt = TWO_STEP.format(
        first=FIRST[op1].format(name=name, item=item, a=a, b=b),
        second=SECOND[op2].format(c=c),
        item=item,
        name=name,
    )
    return Problem(
        category,
        _difficulty(r1 + r2 + 1),
        prompt,
        (plan, *s1, *s2),
        _APPLY[op2](mid, c),
        f"{kind}:{a}:{b}:{c}",
        (computation(op1, a, b), computation(op2, mid, c)),
    )


def _template_regex(template: str, **fields: str) -> re.Pattern[str]:
    """A template as a regex: {name} and {item} from their lists, numbers as groups."""
    out, seen = "", set()
    for text, field, _, _ in string.Formatter().parse(template):
        out += re.escape(text)
        if field is None:
            continue
        if field in seen:
            out += f"(?P={field})"
        else:
            seen.add(field)
            out += f"(?P<{field}>{fields.get(field, r'[0-9]+')})"
    return re.compile(out)


def _prompt_patterns() -> list[tuple[str, str, re.Pattern[str]]]:
    words = {
        "name": "|".join(map(re.escape, NAMES)),
        "item": "|".join(map(re.escape, ITEMS)),
    }
    out = [(c, c, _template_regex(t, **words)) for c, ts in TEMPLATES.items() for t in ts]
    for kind in TWO_STEP_KINDS:
        op1 = "mul" if kind.startswith("mul") else kind.split("_")[0]
        op2 = kind.split("_")[1]
        template = TWO_STEP.format(
            first=FIRST[op1], second=SECOND[op2], item="{item}", name="{name}"
        )
        out.append(("two_step", kind, _template_regex(template, **words)))
    return out


_PATTERNS = _prompt_patterns()


def prompt_computations(prompt: str) -> tuple[str, ...] | None:
    """The computations a built-in problem's work carries out, read back from its prompt;
    None if the prompt is not in one of the generator's wordings."""
    for category, kind, pattern in _PATTERNS:
        if m := pattern.fullmatch(prompt.strip()):
            a, b = int(m["a"]), int(m["b"])
            if category != "two_step":
                return (computation(category, a, b),)
            op1 = "mul" if kind.startswith("mul") else kind.split("_")[0]
            op2 = kind.split("_")[1]
            mid = _APPLY[op1](a, b)
            return computation(op1, a, b), computation(op2, mid, int(m["c"]))
    return None


def problems(*, seed: int, split: str, reserved: frozenset[str] = frozenset()) -> Iterator[Problem]:
    """An endless, seeded stream of one split's problems ("train" or "eval"), categories in turn.

    Training problems that work out any of the `reserved` computations (those of the eval sets,
    `task.reservations`) are left out, so that no eval computation is ever worked in training.
    """
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', not {split!r}")
    rng = random.Random(f"{GENERATOR}:{split}:{seed}")
    want_eval = split == "eval"
    k = 0
    while True:
        p = _make(rng, CATEGORIES[k % len(CATEGORIES)])
        if _is_eval_key(p.key) != want_eval:
            continue
        if not want_eval and reserved.intersection(p.computations):
            continue
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


def traces(*, n: int, seed: int, reserved: frozenset[str] = frozenset()) -> Iterator[StoredTrace]:
    """`n` training traces with deterministic ids (uuid5) and creation times (one second apart),
    none working out a `reserved` computation."""
    stream = problems(seed=seed, split="train", reserved=reserved)
    for i, p in zip(range(n), stream, strict=False):
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
