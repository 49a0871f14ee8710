"""Injection safety: no text a trace contributes may open or close a turn.

Gemma's control tokens are reserved. Records whose fields contain one are refused, and the
encoded example is checked to hold control ids exactly where the chat template puts them.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from typing import TYPE_CHECKING

from tunixrt_dvc.text.chat import PROMPT_SUFFIX
from tunixrt_dvc.text.recipes import get_recipe
from tunixrt_dvc.traces.schemas import Response

if TYPE_CHECKING:
    from tunixrt_dvc.text.tokenizer import Tokenizer


class ControlScanner:
    """Finds reserved pieces in text; fast when the text has none of their first characters."""

    def __init__(self, pieces: Iterable[str]):
        by_first: dict[str, set[str]] = {}
        for p in pieces:
            if p:
                by_first.setdefault(p[0], set()).add(p)
        # Longest first, so `<end_of_turn>` wins over a hypothetical `<end>` at the same place.
        self._index = {
            c: (ps, sorted({len(p) for p in ps}, reverse=True)) for c, ps in by_first.items()
        }

    def find(self, text: str) -> list[str]:
        """The reserved pieces in `text`, in order of appearance (with repeats)."""
        hits: list[tuple[int, str]] = []
        for first, (pieces, lengths) in self._index.items():
            i = text.find(first)
            while i >= 0:
                for n in lengths:
                    if text[i : i + n] in pieces:
                        hits.append((i, text[i : i + n]))
                        break
                i = text.find(first, i + 1)
        return [p for _, p in sorted(hits)]


@lru_cache(maxsize=8)
def _scanner(pieces: frozenset[str]) -> ControlScanner:
    return ControlScanner(pieces)


def find_control_tokens(text: str, control_pieces: Iterable[str]) -> list[str]:
    """The control pieces (e.g. `Tokenizer.control_pieces`) that occur in `text`, in order."""
    return _scanner(frozenset(control_pieces)).find(text)


def response_fields(prompt: str, response: Response) -> Iterable[tuple[str, str]]:
    """(field name, text) of everything an example puts into a rendering."""
    yield "prompt", prompt
    for i, step in enumerate(response.steps):
        yield f"response.steps.{i}", step
    yield "response.final_answer", response.final_answer


def example_problems(
    prompt: str, response: Response, *, recipe: str, control_pieces: Iterable[str]
) -> list[tuple[str, str]]:
    """(field, message) for every reason an example cannot be rendered safely and faithfully.

    Refused: empty fields, any control piece in any field (it could open or close a turn), and
    responses the recipe cannot render unambiguously (its parser would read back something else).
    """
    rec = get_recipe(recipe)
    scanner = _scanner(frozenset(control_pieces))
    problems = []
    fields = list(response_fields(prompt, response))
    # One scan of everything first: the usual record has no control piece at all.
    suspect = bool(scanner.find("\0".join(text for _, text in fields)))
    for field, text in fields:
        if not text.strip():
            problems.append((field, "empty"))
        if suspect and (found := scanner.find(text)):
            shown = ", ".join(repr(p) for p in dict.fromkeys(found))
            problems.append((field, f"contains reserved control token(s) {shown}"))
    if problems or rec.represents(response):
        return problems
    # Name the part that breaks the recipe's structure (checked alone, beside a neutral rest).
    parts = [(f"response.steps.{i}", [s], "0") for i, s in enumerate(response.steps)]
    parts.append(("response.final_answer", [], response.final_answer))
    for field, steps, answer in parts if rec.has_steps else parts[-1:]:
        part = Response(steps=steps, final_answer=answer)
        if not rec.represents(part):
            back = rec.parse(rec.render(part))
            got = back.steps if steps else back.answer
            problems.append((field, f"recipe {rec.name!r} would read this back as {got!r:.80}"))
    return problems or [("response", f"recipe {rec.name!r} cannot render this unambiguously")]


def control_layout_ok(
    tok: Tokenizer, ids: list[int], n_prompt: int, *, suffix: list[int] | None = None
) -> bool:
    """Whether the control ids of an encoded example are exactly the chat template's.

    BOS at 0, `<start_of_turn>` at 1, the prompt's closing `<end_of_turn>\\n<start_of_turn>model\\n`
    and the final `<end_of_turn>`, nowhere else: nothing a field contributed opens or closes a turn.
    """
    suffix = tok.encode(PROMPT_SUFFIX) if suffix is None else suffix
    at = n_prompt - len(suffix)
    if not (
        ids[0] == tok.bos_id
        and ids[1] == tok.start_of_turn_id
        and ids[at:n_prompt] == suffix
        and ids[-1] == tok.end_of_turn_id
    ):
        return False
    expected = 3 + sum(t in tok.control_ids for t in suffix)
    return sum(ids.count(t) for t in tok.control_ids.intersection(ids)) == expected
