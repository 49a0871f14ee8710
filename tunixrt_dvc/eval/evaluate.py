"""Evaluate a model on an eval set: generate, parse with the recipe, score (the task's scorer)."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from flax import nnx
from jax.sharding import Mesh

from tunixrt_dvc.errors import InvalidInput, Problem
from tunixrt_dvc.eval.sampling import generate
from tunixrt_dvc.model.config import ModelConfig
from tunixrt_dvc.task.evalsets import EvalItem
from tunixrt_dvc.task.scoring import ScoredItem, score_item
from tunixrt_dvc.text.chat import render_prompt
from tunixrt_dvc.text.injection import find_control_tokens
from tunixrt_dvc.text.recipes import get_recipe
from tunixrt_dvc.text.tokenizer import Tokenizer


def eval_prompts(
    items: Sequence[EvalItem], tokenizer: Tokenizer, *, instruction: str, file: str
) -> list[str]:
    """The generation prompts of the items, through the same turn template as training.

    Prompts that contain control tokens are refused (InvalidInput naming the item's line): they
    could open or close a turn.
    """
    hostile = [
        Problem(file, n, "prompt", f"contains control token(s) {', '.join(found)}")
        for n, it in enumerate(items, start=1)
        if (found := find_control_tokens(it.prompt, tokenizer.control_pieces))
    ]
    if hostile:
        raise InvalidInput(hostile)
    return [render_prompt(it.prompt, instruction=instruction) for it in items]


def evaluate(
    model: nnx.Module,
    config: ModelConfig,
    tokenizer: Tokenizer,
    items: Sequence[EvalItem],
    prompts: Sequence[str],
    *,
    recipe: str,
    max_new_tokens: int,
    batch_size: int,
    desc: str = "eval",
    mesh: Mesh | None = None,
) -> list[ScoredItem]:
    """Greedy generation for each prompt, parsed by the recipe and scored against its item
    (on `mesh`, if the model is placed on one)."""
    parse = get_recipe(recipe).parse
    with mesh or contextlib.nullcontext():
        gens = generate(
            model,
            tokenizer,
            prompts,
            config=config,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            desc=desc,
        )
    return [
        score_item(item=it, generation=g.text, parsed=parse(g.text), gen_tokens=g.n_tokens)
        for it, g in zip(items, gens, strict=True)
    ]
