"""Gemma's chat template: the one place that writes turn tokens.

Training and evaluation both render through here (prompts with `render_prompt`, the model turn
with `recipes.render_completion`), so the text a model is trained on and the prompt it is
evaluated with agree byte for byte.
"""

from __future__ import annotations

# Gemma's reserved pieces. Nothing outside this module may concatenate them into text.
START_OF_TURN = "<start_of_turn>"
END_OF_TURN = "<end_of_turn>"
BOS = "<bos>"
EOS = "<eos>"
PAD = "<pad>"
UNK = "<unk>"
TURN_TOKENS = (START_OF_TURN, END_OF_TURN)
USER_ROLE = "user"
MODEL_ROLE = "model"

# The end of every generation prompt; training puts the completion right after it.
PROMPT_SUFFIX = f"{END_OF_TURN}\n{START_OF_TURN}{MODEL_ROLE}\n"


def render_prompt(question: str, *, instruction: str) -> str:
    """The generation prompt: one user turn (instruction, blank line, question), then the model's.

    Gemma has no system role, so the instruction goes at the top of the user turn.
    """
    question, instruction = question.strip(), instruction.strip()
    content = f"{instruction}\n\n{question}" if instruction else question
    return f"{START_OF_TURN}{USER_ROLE}\n{content}{PROMPT_SUFFIX}"


def end_turn(text: str) -> str:
    """The model turn's text closed with `<end_of_turn>` (so that the model learns to stop)."""
    return text + END_OF_TURN


def turn_text(generation: str) -> str:
    """The text of the turn a generation opens: it ends at the first `<end_of_turn>`."""
    return generation.split(END_OF_TURN, 1)[0]
