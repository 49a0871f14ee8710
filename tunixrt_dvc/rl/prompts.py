"""The prompts RL samples from: the training split's, with the answers its completions give."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tunixrt_dvc.errors import InvalidInput, Problem
from tunixrt_dvc.text.recipes import get_recipe


@dataclass(frozen=True)
class RLPrompt:
    """A rendered generation prompt and the answer its training completion gives (the scorer's
    `EvalItemLike`: RL scores samples exactly as the eval scores generations)."""

    id: str
    prompt: str
    expected_answer: str
    category: str = "train"
    difficulty: str = "train"


def load_prompts(path: Path, *, recipe: str) -> list[RLPrompt]:
    """Every record of the format stage's train.jsonl whose completion the recipe parses to an
    answer; a record without one is an error naming its line (RL would have nothing to reward)."""
    parse = get_recipe(recipe).parse
    out, problems = [], []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            r = json.loads(line)
            answer = parse(r["completion"]).answer
            if answer is None:
                problems.append(Problem(str(path), n, "completion", f"no answer ({recipe})"))
            else:
                out.append(RLPrompt(id=r["id"], prompt=r["prompt"], expected_answer=answer))
    if problems:
        raise InvalidInput(problems)
    return out


def prompt_batches(
    prompts: Sequence[RLPrompt], *, per_step: int, seed: int
) -> Iterator[dict[str, np.ndarray]]:
    """Endless batches of `per_step` prompts, shuffled per epoch by (seed, epoch).

    Arrays, not lists: Tunix repeats every leaf of a batch G times, and a list's leaves are its
    strings. A resumed run gets the stream from the start: Tunix skips the steps it has done.
    """
    if len(prompts) < per_step:
        raise ValueError(f"{len(prompts)} prompts do not fill one step of {per_step}")
    epoch = 0
    while True:
        order = np.random.default_rng([seed, epoch]).permutation(len(prompts))
        for b in range(len(prompts) // per_step):
            chosen = [prompts[i] for i in order[b * per_step : (b + 1) * per_step]]
            yield {
                "prompts": np.array([p.prompt for p in chosen]),
                "expected_answer": np.array([p.expected_answer for p in chosen]),
            }
        epoch += 1
