"""The chat format: how a TrainingExample becomes Gemma turns, and how later stages learn it.

The format stage renders with a recipe and an instruction and records both in its `stats.json`;
the eval and RL stages read them back here, without importing the format stage itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from tunixrt_dvc.errors import InvalidInput, Problem
from tunixrt_dvc.io import read_json_object
from tunixrt_dvc.text.chat import render_prompt
from tunixrt_dvc.text.recipes import render_completion
from tunixrt_dvc.traces.schemas import TrainingExample


def render_example(ex: TrainingExample, *, recipe: str, instruction: str) -> tuple[str, str]:
    """(prompt text, completion text) of an example, as training and evaluation see them."""
    prompt = render_prompt(ex.prompt, instruction=instruction)
    return prompt, render_completion(ex.response, recipe=recipe)


@dataclass(frozen=True)
class ChatFormat:
    """How the examples were rendered, read back from `stats.json` by later stages."""

    recipe: str
    instruction: str


def read_chat_format(stats_file: str | os.PathLike[str]) -> ChatFormat:
    """The recipe and instruction the format stage rendered with, from its `stats.json`."""
    stats = read_json_object(stats_file, what="format stats")
    try:
        return ChatFormat(recipe=stats["recipe"], instruction=stats["instruction"])
    except KeyError as e:
        raise InvalidInput([Problem(str(stats_file), None, e.args[0], "missing")]) from None
