"""The recipes: named ways to write a `Response` as the model turn's text, each with its parser.

Every recipe owns its inverse (`parse`), which the eval stage uses on generations. `RECIPES` is
the registry (it imports no JAX: params.yaml is validated against it).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from tunixrt_dvc.text.chat import end_turn, turn_text
from tunixrt_dvc.traces.schemas import Response

REASONING_OPEN, REASONING_CLOSE = "<reasoning>", "</reasoning>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
# Markup that a trained tokenizer keeps as single pieces (cheaper, and never split differently).
RECIPE_TAGS = (REASONING_OPEN, REASONING_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)


def render_completion(response: Response, *, recipe: str) -> str:
    """The model turn: the recipe's rendering, then `<end_of_turn>` (the model learns to stop)."""
    return end_turn(get_recipe(recipe).render(response))


# --- recipes -------------------------------------------------------------------------------


class ParsedResponse(BaseModel):
    """Steps and answer read back from a generation.

    `well_formed` is true only when the generation is exactly what the recipe renders for these
    steps and answer; otherwise the fields hold what could be salvaged (stripped, maybe empty).
    """

    model_config = ConfigDict(frozen=True)

    steps: list[str]
    answer: str | None
    well_formed: bool


def _lines_of(text: str) -> list[str]:
    """The non-blank lines of `text`, stripped."""
    lines = [line.strip() for line in text.split("\n")]
    return [line for line in lines if line]


class Recipe(ABC):
    """A named way to write a `Response` as the model turn's text, and to read it back."""

    name: ClassVar[str]
    has_steps: ClassVar[bool] = True

    def steps_of(self, response: Response) -> list[str]:
        """The steps as this recipe writes them (and as a well-formed parse returns them)."""
        return [s.strip() for s in response.steps] if self.has_steps else []

    @abstractmethod
    def render(self, response: Response) -> str: ...

    @abstractmethod
    def _exact(self, text: str) -> tuple[list[str], str] | None:
        """Steps and answer if `text` follows the recipe's grammar, else None."""

    @abstractmethod
    def _salvage(self, text: str) -> ParsedResponse:
        """What can be read from text that does not follow the grammar (well_formed=False)."""

    def parse(self, generation: str) -> ParsedResponse:
        text = turn_text(generation)
        exact = self._exact(text)
        if exact is not None:
            steps, answer = exact
            # Well formed means canonical: re-rendering the pieces gives back the same text.
            if answer and self.render(Response(steps=steps, final_answer=answer)) == text:
                return ParsedResponse(steps=steps, answer=answer, well_formed=True)
        return self._salvage(text)

    def represents(self, response: Response) -> bool:
        """Whether parse(render(response)) is well formed and gives back its steps and answer."""
        # The grammar recovering exactly what render() wrote implies the text is canonical.
        exact = self._exact(self.render(response))
        answer = response.final_answer.strip()
        return bool(answer) and exact == (self.steps_of(response), answer)


class ReasoningTags(Recipe):
    """`<reasoning>step\\nstep</reasoning><answer>X</answer>`: compact, one step per line.

    A multi-line step is written as several steps (its lines, stripped, without blank ones).
    """

    name = "reasoning_tags"

    def steps_of(self, response: Response) -> list[str]:
        return _lines_of("\n".join(response.steps))

    def render(self, response: Response) -> str:
        steps = "\n".join(self.steps_of(response))
        answer = response.final_answer.strip()
        return f"{REASONING_OPEN}{steps}{REASONING_CLOSE}{ANSWER_OPEN}{answer}{ANSWER_CLOSE}"

    def _exact(self, text: str) -> tuple[list[str], str] | None:
        if not (text.startswith(REASONING_OPEN) and text.endswith(ANSWER_CLOSE)):
            return None
        body = text[len(REASONING_OPEN) : -len(ANSWER_CLOSE)]
        steps, sep, answer = body.partition(REASONING_CLOSE + ANSWER_OPEN)
        if not sep or any(tag in steps or tag in answer for tag in RECIPE_TAGS):
            return None
        return (steps.split("\n") if steps else []), answer

    def _salvage(self, text: str) -> ParsedResponse:
        steps: list[str] = []
        start = text.find(REASONING_OPEN)
        if start >= 0:
            body = text[start + len(REASONING_OPEN) :]
            # An unclosed block ends where the answer starts (or at the end).
            for stop in (REASONING_CLOSE, ANSWER_OPEN):
                if (at := body.find(stop)) >= 0:
                    body = body[:at]
                    break
            steps = _lines_of(body)
        close = text.find(ANSWER_CLOSE)
        if close >= 0:  # the innermost <answer> before the first </answer>
            start = text.rfind(ANSWER_OPEN, 0, close)
            rest = text[start + len(ANSWER_OPEN) : close] if start >= 0 else ""
        elif (start := text.find(ANSWER_OPEN)) >= 0:  # unclosed: the rest of its line
            rest = re.split(r"[\n<]", text[start + len(ANSWER_OPEN) :], maxsplit=1)[0]
        else:
            rest = ""
        answer = rest.strip() or None
        return ParsedResponse(steps=steps, answer=answer, well_formed=False)


_NUMBERED = re.compile(r"(\d+)\. (.*)", re.DOTALL)
_NUMBERED_LOOSE = re.compile(r"\s*\d+\s*[.)]\s*(.*)")
_ANSWER_LINE = re.compile(r"\s*answer\s*:(.*)", re.IGNORECASE)


class TunixRt(Recipe):
    """tunix-rt's rendering: `Reasoning:\\n1. ...\\n2. ...\\nAnswer: X` (single-line answer)."""

    name = "tunix_rt"

    def render(self, response: Response) -> str:
        lines = ["Reasoning:"]
        lines += [f"{i}. {s}" for i, s in enumerate(self.steps_of(response), start=1)]
        lines.append(f"Answer: {response.final_answer.strip()}")
        return "\n".join(lines)

    def _exact(self, text: str) -> tuple[list[str], str] | None:
        lines = text.split("\n")
        if len(lines) < 2 or lines[0] != "Reasoning:" or not lines[-1].startswith("Answer: "):
            return None
        steps: list[str] = []
        for line in lines[1:-1]:
            m = _NUMBERED.fullmatch(line)
            if m and int(m[1]) == len(steps) + 1:
                steps.append(m[2])
            elif steps and not m and not line.startswith("Answer:"):
                steps[-1] += "\n" + line  # a multi-line step
            else:
                return None
        return steps, lines[-1][len("Answer: ") :]

    def _salvage(self, text: str) -> ParsedResponse:
        steps: list[str] = []
        answer = None
        for line in text.split("\n"):
            if m := _ANSWER_LINE.match(line):
                answer = m[1].strip() or None
                break  # what follows the answer line is junk
            if m := _NUMBERED_LOOSE.fullmatch(line):
                steps.append(m[1].strip())
            elif steps and line.strip():
                steps[-1] += "\n" + line.strip()
        return ParsedResponse(steps=[s for s in steps if s], answer=answer, well_formed=False)


class AnswerOnly(Recipe):
    """The final answer alone (an ablation baseline); a single line."""

    name = "answer_only"
    has_steps = False

    def render(self, response: Response) -> str:
        return response.final_answer.strip()

    def _exact(self, text: str) -> tuple[list[str], str] | None:
        return None if "\n" in text else ([], text)

    def _salvage(self, text: str) -> ParsedResponse:
        lines = _lines_of(text)
        return ParsedResponse(steps=[], answer=lines[0] if lines else None, well_formed=False)


RECIPES: dict[str, Recipe] = {r.name: r for r in (ReasoningTags(), TunixRt(), AnswerOnly())}


def get_recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise ValueError(f"unknown recipe {name!r}; known: {', '.join(sorted(RECIPES))}") from None
